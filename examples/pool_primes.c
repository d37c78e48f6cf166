/*
 * pool_primes.c - which of six large numbers are prime, checked in parallel.
 *
 * The classic process pool example of Python's concurrent.futures, in C: is_prime() over
 * six 15/16-digit numbers with concur_map() on a process pool. Each number is one item; the map
 * hands items to the workers and writes each answer at the item's position, so the
 * output comes in input order whatever finishes first.
 *
 * Usage: pool_primes [N...]    (checks the numbers given, or the six below)
 * Exit status: 0 when every number was checked, 1 on an error, 2 on bad arguments.
 */
#include <concur.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint64_t PRIMES[] = {
    112272535095293ULL, 112582705942171ULL, 112272535095293ULL,
    115280095190773ULL, 115797848077099ULL, 1099726899285419ULL,
};

/* The per-item function of the map: reads one uint64_t, writes one bool. */
static int is_prime(concur_task *t, const void *in, void *out)
{
    uint64_t n;
    bool prime = true;

    memcpy(&n, in, sizeof n); /* items are bytes: copy instead of assuming alignment */
    if (n < 2)
        prime = false;
    else if (n != 2 && n % 2 == 0)
        prime = false;
    else {
        for (uint64_t i = 3; i <= n / i; i += 2) {
            if (n % i == 0) {
                prime = false;
                break;
            }
            /* A long task polls this now and then: it turns true when the task is
             * cancelled, runs past its timeout or the pool shuts down with cancellation. */
            if ((i & 0xfffff) == 1 && concur_task_should_stop(t))
                return concur_task_fail(t, CONCUR_ECANCELED, "stopped at divisor %" PRIu64, i);
        }
    }
    memcpy(out, &prime, sizeof prime);
    return 0;
}

static int parse_numbers(int argc, char **argv, uint64_t *nums)
{
    for (int i = 1; i < argc; i++) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(argv[i], &end, 10);
        if (errno || end == argv[i] || *end || argv[i][0] == '-') {
            fprintf(stderr, "pool_primes: not a number: '%s'\n", argv[i]);
            return -1;
        }
        nums[i - 1] = v;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const uint64_t *numbers = PRIMES;
    size_t n = sizeof PRIMES / sizeof PRIMES[0];
    uint64_t *given = NULL;

    if (argc > 1) {
        given = calloc((size_t)argc - 1, sizeof *given);
        if (!given || parse_numbers(argc, argv, given) < 0) {
            if (!given)
                fprintf(stderr, "pool_primes: out of memory\n");
            free(given);
            return given ? 2 : 1;
        }
        numbers = given;
        n = (size_t)argc - 1;
    }

    bool *prime = calloc(n, sizeof *prime);
    if (!prime) {
        fprintf(stderr, "pool_primes: out of memory\n");
        free(given);
        return 1;
    }

    /* A zeroed options struct means "defaults": one worker per CPU, started on demand.
     * The engine is one field: CPU-bound work goes to worker processes (as in Python's
     * ProcessPool example); CONCUR_ENGINE_THREADS runs this same code on threads. */
    concur_pool_opts opts = {0};
    opts.engine = CONCUR_ENGINE_PROCESSES;
    opts.name = "primes";

    concur_pool *pool = NULL;
    int rc = concur_pool_create(&pool, &opts);
    if (rc < 0) {
        fprintf(stderr, "pool_primes: cannot create the pool: %s\n", concur_strerror(rc));
        free(prime);
        free(given);
        return 1;
    }

    /* One item per task (chunk_size 1): six long tasks spread over the workers. */
    concur_map_opts mopts = CONCUR_MAP_OPTS_INIT;
    mopts.in_size = sizeof(uint64_t);
    mopts.out_size = sizeof(bool);

    double start = concur_now();
    size_t failed = 0;
    rc = concur_map(pool, is_prime, &mopts, numbers, n, prime, &failed);
    double elapsed = concur_now() - start;

    int status = 0;
    if (rc < 0) {
        fprintf(stderr, "pool_primes: checking %" PRIu64 " failed: %s\n", numbers[failed],
                concur_strerror(rc));
        status = 1;
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%llu is prime: %s\n", (unsigned long long)numbers[i],
                   prime[i] ? "true" : "false");
        /* Workers start on demand: never more than there were tasks to run at once. */
        concur_pool_counts c;
        concur_pool_counts_get(pool, &c);
        printf("checked %zu numbers in %.2f s with %zu worker processes (at most %d)\n", n,
               elapsed, c.workers, concur_pool_max_workers(pool));
    }

    concur_pool_destroy(pool); /* drains the queue, joins the workers, frees the pool */
    free(prime);
    free(given);
    return status;
}
