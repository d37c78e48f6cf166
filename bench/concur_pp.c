/* concur's side of the pp_* benchmarks (the process pool). Usage: concur_pp BENCH
 * Every pool is CONCUR_ENGINE_PROCESSES with BENCH_WORKERS worker processes; every task goes
 * through a future, as a concur user writes it. Sizes, warm-ups and pass counts are in
 * README.md; the Python peers (peer_python_pp.py) do the same work at the sizes noted there.
 * The task functions are in this executable, so the forked workers have them at the same
 * addresses. */
#include <concur.h>

#include "bench_util.h"

static const char *const SYSTEM = "concur";

static void die(const char *what, int rc)
{
    fprintf(stderr, "%s: %s\n", what, concur_strerror(rc));
    exit(1);
}

static concur_pool *pp_pool(void)
{
    concur_pool *p;
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES, .max_workers = BENCH_WORKERS};
    int rc = concur_pool_create(&p, &o);
    if (rc)
        die("concur_pool_create", rc);
    return p;
}

/* The tiny task of every bench but pp_map: int x -> 2x+1. */
static int twice_plus_one(concur_task *t, const void *in, size_t len)
{
    int x;
    if (len != sizeof(x))
        return CONCUR_EINVAL;
    memcpy(&x, in, sizeof(x));
    x = x * 2 + 1;
    return concur_task_return(t, &x, sizeof(x));
}

/* Submits twice_plus_one(i) and waits for its result; returns the elapsed ns. */
static uint64_t round_trip(concur_pool *p, int i)
{
    concur_future *f;
    const void *data;
    size_t len = 0;
    uint64_t t0 = bench_now_ns();
    int rc = concur_pool_submit(p, twice_plus_one, &i, sizeof(i), &f);
    if (!rc)
        rc = concur_future_collect(f, CONCUR_FOREVER, &data, &len);
    uint64_t dt = bench_now_ns() - t0;
    if (rc || len != sizeof(int) || *(const int *)data != i * 2 + 1)
        die("round trip: wrong result", rc ? rc : CONCUR_ETASK);
    concur_future_release(f);
    return dt;
}

/* pp_throughput: 100,000 tiny tasks submitted one by one, each with its future, then every
 * future waited, checked and released. A warm-up pass of 10,000, then the median of 3. */
static void submit_wait(concur_pool *p, concur_future **fs, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = concur_pool_submit(p, twice_plus_one, &i, sizeof(i), &fs[i]);
        if (rc)
            die("submit", rc);
    }
    for (int i = 0; i < n; i++) {
        const void *data;
        size_t len = 0;
        int rc = concur_future_collect(fs[i], CONCUR_FOREVER, &data, &len);
        if (rc || len != sizeof(int) || *(const int *)data != i * 2 + 1)
            die("pp_throughput: wrong result", rc ? rc : CONCUR_ETASK);
        concur_future_release(fs[i]);
    }
}

static void pp_throughput(void)
{
    const int n = 100000;
    concur_pool *p = pp_pool();
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
    bench_result("pp_throughput", SYSTEM, "tasks_per_s", n / (bench_median_u64(t, 3) / 1e9),
                 "tasks/s");
    free(fs);
    concur_pool_destroy(p);
}

/* pp_map: out[i] = in[i]*2+1 over 10,000,000 ints with concur_map, chunks of 250,000 items
 * (40 chunk tasks of 1 MB in, 1 MB out). 3 warm-up passes, then the median of 9. */
static int map_fn(concur_task *t, const void *in, void *out)
{
    (void)t;
    int x;
    memcpy(&x, in, sizeof(x)); /* items are packed in the chunk: maybe unaligned */
    x = x * 2 + 1;
    memcpy(out, &x, sizeof(x));
    return 0;
}

static void pp_map(void)
{
    const size_t n = 10000000;
    concur_pool *p = pp_pool();
    int *in = malloc(n * sizeof(int)), *out = malloc(n * sizeof(int));
    if (!in || !out)
        die("malloc", CONCUR_ENOMEM);
    for (size_t i = 0; i < n; i++)
        in[i] = (int)i;
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = o.out_size = sizeof(int);
    o.chunk_size = 250000;
    uint64_t t[9];
    for (int k = -3; k < 9; k++) {
        memset(out, 0, n * sizeof(int));
        uint64_t t0 = bench_now_ns();
        int rc = concur_map(p, map_fn, &o, in, n, out, NULL);
        if (rc)
            die("concur_map", rc);
        if (k >= 0)
            t[k] = bench_now_ns() - t0;
        for (size_t i = 0; i < n; i += 9973)
            if (out[i] != (int)i * 2 + 1)
                die("pp_map: wrong result", CONCUR_ETASK);
    }
    bench_result("pp_map", SYSTEM, "elements_per_s", n / (bench_median_u64(t, 9) / 1e9),
                 "elements/s");
    free(in);
    free(out);
    concur_pool_destroy(p);
}

/* pp_latency: submit -> result on an idle pool: 2 ms of sleep before each round trip, so the
 * worker processes and their proxies are blocked when the task arrives. 100 warm-up round
 * trips, then the median of 1,000. */
static void pp_latency(void)
{
    const int warm = 100, n = 1000;
    concur_pool *p = pp_pool();
    uint64_t *t = malloc(sizeof(*t) * (size_t)n);
    if (!t)
        die("malloc", CONCUR_ENOMEM);
    struct timespec idle = {0, 2 * 1000000};
    for (int i = -warm; i < n; i++) {
        nanosleep(&idle, NULL);
        uint64_t dt = round_trip(p, i);
        if (i >= 0)
            t[i] = dt;
    }
    bench_result("pp_latency", SYSTEM, "median_us", bench_median_u64(t, (size_t)n) / 1000.0,
                 "us");
    free(t);
    concur_pool_destroy(p);
}

/* pp_latency_busy: the same round trip back to back, on a pool kept busy by the round trips
 * themselves. 1,000 warm-up round trips, then the median of 10,000. */
static void pp_latency_busy(void)
{
    const int warm = 1000, n = 10000;
    concur_pool *p = pp_pool();
    uint64_t *t = malloc(sizeof(*t) * (size_t)n);
    if (!t)
        die("malloc", CONCUR_ENOMEM);
    for (int i = -warm; i < n; i++) {
        uint64_t dt = round_trip(p, i);
        if (i >= 0)
            t[i] = dt;
    }
    bench_result("pp_latency_busy", SYSTEM, "median_us",
                 bench_median_u64(t, (size_t)n) / 1000.0, "us");
    free(t);
    concur_pool_destroy(p);
}

/* pp_startup: concur_pool_create() to the first task's result (fork server, first worker
 * process, its proxy thread, one round trip), on a fresh pool each time; the pool is then
 * destroyed (not timed). One warm-up pool, then the median of 20. */
static void pp_startup(void)
{
    const int n = 20;
    uint64_t t[20];
    for (int k = -1; k < n; k++) {
        uint64_t t0 = bench_now_ns();
        concur_pool *p = pp_pool();
        round_trip(p, k);
        uint64_t dt = bench_now_ns() - t0;
        concur_pool_destroy(p);
        if (k >= 0)
            t[k] = dt;
    }
    bench_result("pp_startup", SYSTEM, "first_result_ms", bench_median_u64(t, (size_t)n) / 1e6,
                 "ms");
}

int main(int argc, char **argv)
{
    const char *b = argc > 1 ? argv[1] : "";
    if (!strcmp(b, "pp_throughput"))
        pp_throughput();
    else if (!strcmp(b, "pp_map"))
        pp_map();
    else if (!strcmp(b, "pp_latency"))
        pp_latency();
    else if (!strcmp(b, "pp_latency_busy"))
        pp_latency_busy();
    else if (!strcmp(b, "pp_startup"))
        pp_startup();
    else {
        bench_usage(argv[0], "pp_throughput pp_map pp_latency pp_latency_busy pp_startup");
        return 2;
    }
    return 0;
}
