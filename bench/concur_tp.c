/* concur's side of the tp_* benchmarks. Usage: concur_tp BENCH
 * Same sizes, warm-ups and pass counts as the peers (see README.md); BENCH_WORKERS worker
 * threads, one for tp_memory. Every task goes through a future, as a concur user writes it. */
#include <concur.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/resource.h>

#include "bench_util.h"

static const char *const SYSTEM = "concur";

static void die(const char *what, int rc)
{
    fprintf(stderr, "%s: %s\n", what, concur_strerror(rc));
    exit(1);
}

static concur_pool *pool_of(int workers)
{
    concur_pool *p;
    concur_pool_opts o = {.max_workers = workers};
    int rc = concur_pool_create(&p, &o);
    if (rc)
        die("concur_pool_create", rc);
    return p;
}

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
            die("submit", rc);
    }
    for (int i = 0; i < n; i++) {
        if (concur_future_wait(fs[i], CONCUR_FOREVER) || concur_future_state(fs[i]) != CONCUR_DONE)
            die("wait", CONCUR_ETASK);
        concur_future_release(fs[i]);
    }
}

static void tp_throughput(void)
{
    const int n = 1000000;
    concur_pool *p = pool_of(BENCH_WORKERS);
    concur_future **fs = malloc(sizeof(*fs) * (size_t)n);
    if (!fs)
        die("malloc", CONCUR_ENOMEM);
    submit_wait(p, fs, n / 10);
    uint64_t t[3];
    for (int k = 0; k < 3; k++) {
        uint64_t t0 = bench_now_ns();
        submit_wait(p, fs, n);
        t[k] = bench_now_ns() - t0;
    }
    bench_result("tp_throughput", SYSTEM, "ns_per_task", bench_median_u64(t, 3) / n, "ns");
    free(fs);
    concur_pool_destroy(p);
}

/* tp_map: out[i] = in[i]*2+1 over 10,000,000 ints with concur_map, 64 Ki items per chunk.
 * 3 warm-up passes, then the median of 9. */
static int map_fn(concur_task *t, const void *in, void *out)
{
    (void)t;
    *(int *)out = *(const int *)in * 2 + 1;
    return 0;
}

static void tp_map(void)
{
    const size_t n = 10000000;
    concur_pool *p = pool_of(BENCH_WORKERS);
    int *in = malloc(n * sizeof(int)), *out = malloc(n * sizeof(int));
    if (!in || !out)
        die("malloc", CONCUR_ENOMEM);
    for (size_t i = 0; i < n; i++)
        in[i] = (int)i;
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = o.out_size = sizeof(int);
    o.chunk_size = 65536;
    uint64_t t[9];
    for (int k = -3; k < 9; k++) {
        uint64_t t0 = bench_now_ns();
        int rc = concur_map(p, map_fn, &o, in, n, out, NULL);
        if (rc)
            die("concur_map", rc);
        if (k >= 0)
            t[k] = bench_now_ns() - t0;
    }
    for (size_t i = 0; i < n; i += 9973)
        if (out[i] != (int)i * 2 + 1)
            die("tp_map: wrong result", CONCUR_ETASK);
    bench_result("tp_map", SYSTEM, "ns_per_element", bench_median_u64(t, 9) / (double)n, "ns");
    free(in);
    free(out);
    concur_pool_destroy(p);
}

/* tp_latency: submit one task (input i, result i*2+1) and collect it, on a pool kept active by
 * the round trips themselves. 1,000 warm-up round trips, then the median of 10,000. Then the
 * CPU time the process burns over 1 s with the pool idle (workers park after a short spin). */
static int twice_plus_one(concur_task *t, const void *in, size_t len)
{
    int x;
    if (len != sizeof(x))
        return CONCUR_EINVAL;
    memcpy(&x, in, sizeof(x));
    x = x * 2 + 1;
    return concur_task_return(t, &x, sizeof(x));
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void tp_latency(void)
{
    const int warm = 1000, n = 10000;
    concur_pool *p = pool_of(BENCH_WORKERS);
    uint64_t *t = malloc(sizeof(*t) * (size_t)n);
    if (!t)
        die("malloc", CONCUR_ENOMEM);
    for (int i = -warm; i < n; i++) {
        concur_future *f;
        const void *data;
        size_t len;
        uint64_t t0 = bench_now_ns();
        int rc = concur_pool_submit(p, twice_plus_one, &i, sizeof(i), &f);
        if (!rc)
            rc = concur_future_collect(f, CONCUR_FOREVER, &data, &len);
        uint64_t dt = bench_now_ns() - t0;
        if (rc || len != sizeof(int) || *(const int *)data != i * 2 + 1)
            die("tp_latency: wrong result", rc ? rc : CONCUR_ETASK);
        concur_future_release(f);
        if (i >= 0)
            t[i] = dt;
    }
    bench_result("tp_latency", SYSTEM, "median_us", bench_median_u64(t, (size_t)n) / 1000.0, "us");
    struct timespec ms = {0, 50 * 1000000}; /* let the spinning worker park */
    nanosleep(&ms, NULL);
    double c0 = cpu_seconds();
    struct timespec one = {1, 0};
    nanosleep(&one, NULL);
    bench_result("tp_latency_idle", SYSTEM, "cpu_ms_per_s", (cpu_seconds() - c0) * 1000, "ms");
    free(t);
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
    concur_pool *p = pool_of(1);
    concur_future *g;
    int rc = concur_pool_submit(p, gate_task, NULL, 0, &g);
    if (rc)
        die("submit", rc);
    while (!atomic_load(&started))
        sched_yield();
    long rss0 = bench_rss_bytes();
    for (long i = 0; i < n; i++)
        if ((rc = concur_pool_submit(p, empty_task, NULL, 0, NULL)))
            die("submit", rc);
    long rss1 = bench_rss_bytes();
    concur_pool_counts c;
    concur_pool_counts_get(p, &c);
    if (c.pending != (size_t)n)
        die("tp_memory: tasks not pending", CONCUR_ETASK);
    atomic_store_explicit(&gate, 1, memory_order_release);
    concur_future_release(g);
    if ((rc = concur_pool_join(p, CONCUR_FOREVER)))
        die("join", rc);
    bench_result("tp_memory", SYSTEM, "bytes_per_pending", (double)(rss1 - rss0) / n, "bytes");
    concur_pool_destroy(p);
}

int main(int argc, char **argv)
{
    const char *b = argc > 1 ? argv[1] : "";
    if (!strcmp(b, "tp_throughput"))
        tp_throughput();
    else if (!strcmp(b, "tp_map"))
        tp_map();
    else if (!strcmp(b, "tp_latency"))
        tp_latency();
    else if (!strcmp(b, "tp_memory"))
        tp_memory();
    else {
        bench_usage(argv[0], "tp_throughput tp_map tp_latency tp_memory");
        return 2;
    }
    return 0;
}
