/* concur's side of the pp_* benchmarks (the process pool). Usage: concur_pp BENCH
 * Every pool is CONCUR_ENGINE_PROCESSES with BENCH_WORKERS worker processes; every task goes
 * through a future, as a concur user writes it. Sizes, warm-ups and pass counts are in
 * README.md; the Python peers (peer_python_pp.py) do the same work at the sizes noted there.
 * The task functions are in this executable, so the forked workers have them at the same
 * addresses. The tasks and the measuring code are the thread benches' (concur_bench.h). */
#include "concur_bench.h"

static concur_pool *pp_pool(void) { return cb_pool(CONCUR_ENGINE_PROCESSES, BENCH_WORKERS); }

/* pp_throughput: 100,000 tiny tasks submitted one by one, each with its future, then every
 * future waited, checked and released. A warm-up pass of 10,000, then the median of 3. */
static void pp_throughput(void)
{
    concur_pool *p = pp_pool();
    cb_throughput(p, "pp_throughput", 100000);
    concur_pool_destroy(p);
}

/* pp_map: out[i] = in[i]*2+1 over 10,000,000 ints with concur_map, chunks of 250,000 items
 * (40 chunk tasks of 1 MB in, 1 MB out). 3 warm-up passes, then the median of 9. */
static void pp_map(void)
{
    const size_t n = 10000000;
    concur_pool *p = pp_pool();
    double ns = cb_median_map_ns(p, n, 250000);
    bench_result("pp_map", CB_SYSTEM, "elements_per_s", n / (ns / 1e9), "elements/s");
    concur_pool_destroy(p);
}

/* pp_latency: submit -> result on an idle pool: 2 ms of sleep before each round trip, so the
 * worker processes and their proxies are blocked when the task arrives. 100 warm-up round
 * trips, then the median of 1,000. */
static void sleep_2ms(void)
{
    struct timespec idle = {0, 2 * 1000000};
    nanosleep(&idle, NULL);
}

static void pp_latency(void)
{
    concur_pool *p = pp_pool();
    bench_result("pp_latency", CB_SYSTEM, "median_us",
                 cb_median_round_trip_us(p, 100, 1000, sleep_2ms), "us");
    concur_pool_destroy(p);
}

/* pp_latency_busy: the same round trip back to back, on a pool kept busy by the round trips
 * themselves. 1,000 warm-up round trips, then the median of 10,000. */
static void pp_latency_busy(void)
{
    concur_pool *p = pp_pool();
    bench_result("pp_latency_busy", CB_SYSTEM, "median_us",
                 cb_median_round_trip_us(p, 1000, 10000, NULL), "us");
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
        cb_round_trip(p, k);
        uint64_t dt = bench_now_ns() - t0;
        concur_pool_destroy(p);
        if (k >= 0)
            t[k] = dt;
    }
    bench_result("pp_startup", CB_SYSTEM, "first_result_ms",
                 bench_median_u64(t, (size_t)n) / 1e6, "ms");
}

int main(int argc, char **argv)
{
    static const cb_bench benches[] = {{"pp_throughput", pp_throughput},
                                       {"pp_map", pp_map},
                                       {"pp_latency", pp_latency},
                                       {"pp_latency_busy", pp_latency_busy},
                                       {"pp_startup", pp_startup},
                                       {NULL, NULL}};
    return cb_main(argc, argv, benches);
}
