/* concur's side of the tp_* benchmarks. Usage: concur_tp BENCH
 * Same sizes, warm-ups and pass counts as the peers (see README.md); BENCH_WORKERS worker
 * threads, one for tp_memory. Every task goes through a future, as a concur user writes it.
 * The tasks and the measuring code are shared with the process-pool benches (concur_bench.h). */
#include <sched.h>
#include <stdatomic.h>
#include <sys/resource.h>

#include "concur_bench.h"

static concur_pool *tp_pool(void) { return cb_pool(CONCUR_ENGINE_THREADS, BENCH_WORKERS); }

static int empty_task(concur_task *t, const void *in, size_t len)
{
    (void)t;
    (void)in;
    (void)len;
    return 0;
}

/* tp_throughput: 1,000,000 empty tasks submitted one by one, each with its future, then every
 * future waited and released. One warm-up pass of 100,000, then the median of 3 passes. */
static void submit_wait(concur_pool *p, concur_future **fs, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = concur_pool_submit(p, empty_task, NULL, 0, &fs[i]);
        if (rc)
            cb_die("submit", rc);
    }
    for (int i = 0; i < n; i++) {
        if (concur_future_wait(fs[i], CONCUR_FOREVER) || concur_future_state(fs[i]) != CONCUR_DONE)
            cb_die("wait", CONCUR_ETASK);
        concur_future_release(fs[i]);
    }
}

static void tp_throughput(void)
{
    const int n = 1000000;
    concur_pool *p = tp_pool();
    concur_future **fs = cb_malloc(sizeof(*fs) * (size_t)n);
    submit_wait(p, fs, n / 10);
    uint64_t t[3];
    for (int k = 0; k < 3; k++) {
        uint64_t t0 = bench_now_ns();
        submit_wait(p, fs, n);
        t[k] = bench_now_ns() - t0;
    }
    bench_result("tp_throughput", CB_SYSTEM, "ns_per_task", bench_median_u64(t, 3) / n, "ns");
    free(fs);
    concur_pool_destroy(p);
}

/* tp_map: out[i] = in[i]*2+1 over 10,000,000 ints with concur_parallel_for, 64 Ki indexes
 * per chunk, the loop written in the body as the peers write it. 3 warm-up passes, then the
 * median of 9; every pass is checked. */
typedef struct twice_arg {
    const int *in;
    int *out;
} twice_arg;

static int twice_range(concur_task *t, size_t begin, size_t end, void *arg)
{
    (void)t;
    const twice_arg *a = arg;
    for (size_t i = begin; i < end; i++)
        a->out[i] = a->in[i] * 2 + 1;
    return 0;
}

static int parallel_for_pass(concur_pool *p, const int *in, int *out, size_t n, size_t grain)
{
    twice_arg a = {in, out};
    return concur_parallel_for(p, 0, n, grain, twice_range, &a, CONCUR_FOREVER, NULL);
}

static void tp_map(void)
{
    const size_t n = 10000000;
    concur_pool *p = tp_pool();
    double ns = cb_median_pass_ns(p, n, 65536, parallel_for_pass);
    bench_result("tp_map", CB_SYSTEM, "ns_per_element", ns / (double)n, "ns");
    concur_pool_destroy(p);
}

/* tp_map_fn: the same map with concur_map and a per-item function (cb_map_fn), 64 Ki items
 * per chunk: what the element-function form costs next to the range form. */
static void tp_map_fn(void)
{
    const size_t n = 10000000;
    concur_pool *p = tp_pool();
    double ns = cb_median_map_ns(p, n, 65536);
    bench_result("tp_map_fn", CB_SYSTEM, "ns_per_element", ns / (double)n, "ns");
    concur_pool_destroy(p);
}

/* tp_latency: submit one task (input i, result i*2+1) and collect it, on a pool kept active by
 * the round trips themselves. 1,000 warm-up round trips, then the median of 10,000. Then the
 * CPU time the process burns over 1 s with the pool idle (workers park after a short spin). */
static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void tp_latency(void)
{
    concur_pool *p = tp_pool();
    bench_result("tp_latency", CB_SYSTEM, "median_us",
                 cb_median_round_trip_us(p, 1000, 10000, NULL), "us");
    struct timespec ms = {0, 50 * 1000000}; /* let the spinning worker park */
    nanosleep(&ms, NULL);
    double c0 = cpu_seconds();
    struct timespec one = {1, 0};
    nanosleep(&one, NULL);
    bench_result("tp_latency_idle", CB_SYSTEM, "cpu_ms_per_s", (cpu_seconds() - c0) * 1000, "ms");
    concur_pool_destroy(p);
}

/* tp_memory: one worker blocked in a first task on a gate, then 1,000,000 empty tasks
 * submitted (the caller keeps no future: the queued record is the whole cost). RSS growth
 * divided by 1,000,000. */
static atomic_int gate, started;

static int gate_task(concur_task *t, const void *in, size_t len)
{
    (void)t;
    (void)in;
    (void)len;
    atomic_store(&started, 1);
    while (!atomic_load_explicit(&gate, memory_order_acquire))
        sched_yield();
    return 0;
}

static void tp_memory(void)
{
    const long n = 1000000;
    concur_pool *p = cb_pool(CONCUR_ENGINE_THREADS, 1);
    concur_future *g;
    int rc = concur_pool_submit(p, gate_task, NULL, 0, &g);
    if (rc)
        cb_die("submit", rc);
    while (!atomic_load(&started))
        sched_yield();
    long rss0 = bench_rss_bytes();
    for (long i = 0; i < n; i++)
        if ((rc = concur_pool_submit(p, empty_task, NULL, 0, NULL)))
            cb_die("submit", rc);
    long rss1 = bench_rss_bytes();
    concur_pool_counts c;
    concur_pool_counts_get(p, &c);
    if (c.pending != (size_t)n)
        cb_die("tp_memory: tasks not pending", CONCUR_ETASK);
    atomic_store_explicit(&gate, 1, memory_order_release);
    concur_future_release(g);
    if ((rc = concur_pool_join(p, CONCUR_FOREVER)))
        cb_die("join", rc);
    bench_result("tp_memory", CB_SYSTEM, "bytes_per_pending", (double)(rss1 - rss0) / n, "bytes");
    concur_pool_destroy(p);
}

int main(int argc, char **argv)
{
    static const cb_bench benches[] = {{"tp_throughput", tp_throughput},
                                       {"tp_map", tp_map},
                                       {"tp_map_fn", tp_map_fn},
                                       {"tp_latency", tp_latency},
                                       {"tp_memory", tp_memory},
                                       {NULL, NULL}};
    return cb_main(argc, argv, benches);
}
