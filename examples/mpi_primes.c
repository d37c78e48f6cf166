/*
 * mpi_primes.c - the process pool's primes example on MPI ranks.
 *
 * pool_primes.c with one line changed, the engine: is_prime() over six large numbers with
 * concur_map(), now on the other ranks of an MPI job. Each rank runs its chunks in a
 * local process pool, so a crash would fail only its own items. Link libconcur_mpi
 * (pkg-config concur-mpi) and run it under a launcher:
 *
 *     mpirun -n 3 ./mpi_primes        rank 0 prints, ranks 1 and 2 compute
 *     ./mpi_primes                    one process: the pool runs locally
 *
 * Exit status: 0 when every number was checked, 1 on an error.
 */
#include <concur.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const uint64_t NUMBERS[] = {
    112272535095293ULL, 112582705942171ULL, 112272535095293ULL,
    115280095190773ULL, 115797848077099ULL, 1099726899285419ULL,
};

static int is_prime(concur_task *t, const void *in, void *out)
{
    uint64_t n;
    bool prime = true;
    memcpy(&n, in, sizeof n);
    if (n < 2 || (n != 2 && n % 2 == 0))
        prime = n == 2;
    for (uint64_t i = 3; prime && i <= n / i; i += 2) {
        if (n % i == 0)
            prime = false;
        else if ((i & 0xfffff) == 1 && concur_task_should_stop(t))
            return concur_task_fail(t, CONCUR_ECANCELED, "stopped at divisor %" PRIu64, i);
    }
    memcpy(out, &prime, sizeof prime);
    return 0;
}

int main(int argc, char **argv)
{
    /* Ranks other than 0 serve inside this call and exit when rank 0 is done. */
    int rc = concur_mpi_init(&argc, &argv);
    if (rc) {
        fprintf(stderr, "mpi_primes: %s\n", concur_strerror(rc));
        return 1;
    }
    enum { N = sizeof NUMBERS / sizeof NUMBERS[0] };
    concur_pool_opts o = {.engine = CONCUR_ENGINE_MPI};
    concur_pool *pool;
    if ((rc = concur_pool_create(&pool, &o)) != 0) {
        fprintf(stderr, "mpi_primes: %s\n", concur_strerror(rc));
        return 1;
    }
    concur_map_opts mo = CONCUR_MAP_OPTS_INIT;
    mo.in_size = sizeof(uint64_t);
    mo.out_size = sizeof(bool);
    mo.chunk_size = 1;
    bool prime[N];
    size_t bad = 0;
    rc = concur_map(pool, is_prime, &mo, NUMBERS, N, prime, &bad);
    concur_pool_destroy(pool);
    if (rc) {
        fprintf(stderr, "mpi_primes: item %zu: %s\n", bad, concur_strerror(rc));
        return 1;
    }
    for (size_t i = 0; i < N; i++)
        printf("%" PRIu64 " is prime: %s\n", NUMBERS[i], prime[i] ? "True" : "False");
    printf("(%d ranks)\n", concur_mpi_size());
    return concur_mpi_finalize() ? 1 : 0;
}
