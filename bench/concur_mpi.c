/* concur's side of the mpi_* benchmarks (the MPI engine). Run by bench/mpi.sh as
 * `mpirun -n 3 concur_mpi BENCH`: rank 0 measures, ranks 1 and 2 serve the tasks (one
 * worker slot per CPU of theirs, each rank's tasks in its local process pool: crash
 * isolation on). The tasks are the thread and process benches' (concur_bench.h).
 *   mpi_throughput  20,000 tiny tasks submitted one by one, then each awaited and checked;
 *                   a warm-up of 2,000, then the median of 3 passes
 *   mpi_map         concur_map of 2x+1 over 10,000,000 ints in chunks of 250,000
 *                   (3 warm-up passes, the median of 9)
 *   mpi_latency     submit -> result of one tiny task, back to back: 200 warm-up round
 *                   trips, then the median of 2,000 */
#include "concur_bench.h"

#include <sys/resource.h>

static concur_pool *mpi_pool(void)
{
    return cb_pool(CONCUR_ENGINE_MPI, 0);
}

static void mpi_throughput(void)
{
    concur_pool *p = mpi_pool();
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    cb_throughput(p, "mpi_throughput", 20000);
    getrusage(RUSAGE_SELF, &r1);
    /* The coordinator's cost: rank 0's CPU time (all its threads) per task, warm-up
     * included (22,000 + 3 x 20,000 tasks). */
    double cpu_us = ((double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) +
                     (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec)) * 1e6 +
                    (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) +
                    (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
    printf("NOTE mpi_throughput concur: rank 0 used %.1f us of CPU per task (%d slots)\n",
           cpu_us / 62000.0, concur_pool_max_workers(p));
    concur_pool_destroy(p);
}

static void mpi_map(void)
{
    const size_t n = 10000000;
    concur_pool *p = mpi_pool();
    double ns = cb_median_map_ns(p, n, 250000);
    bench_result("mpi_map", CB_SYSTEM, "elements_per_s", n / (ns / 1e9), "elements/s");
    concur_pool_destroy(p);
}

static void mpi_latency(void)
{
    concur_pool *p = mpi_pool();
    bench_result("mpi_latency", CB_SYSTEM, "median_us", cb_median_round_trip_us(p, 200, 2000, NULL),
                 "us");
    concur_pool_destroy(p);
}

int main(int argc, char **argv)
{
    int rc = concur_mpi_init(&argc, &argv);
    if (rc)
        cb_die("concur_mpi_init", rc);
    if (argc != 2) {
        fprintf(stderr, "usage: mpirun -n 3 concur_mpi mpi_throughput|mpi_map|mpi_latency\n");
        return 2;
    }
    if (concur_mpi_size() < 2)
        printf("NOTE %s concur: one rank (no mpirun): the pool runs locally\n", argv[1]);
    if (!strcmp(argv[1], "mpi_throughput"))
        mpi_throughput();
    else if (!strcmp(argv[1], "mpi_map"))
        mpi_map();
    else if (!strcmp(argv[1], "mpi_latency"))
        mpi_latency();
    else {
        fprintf(stderr, "concur_mpi: unknown bench %s\n", argv[1]);
        return 2;
    }
    return concur_mpi_finalize() ? 1 : 0;
}
