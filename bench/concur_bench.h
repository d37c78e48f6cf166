/* What concur's own bench programs share (concur_tp.c for threads, concur_pp.c for
 * processes): the same tasks and the same measuring code on either engine, so the two
 * programs differ only where the benches do. Header-only, C17. */
#ifndef CONCUR_BENCH_H
#define CONCUR_BENCH_H

#include <concur.h>

#include "bench_util.h"

static const char *const CB_SYSTEM = "concur";

static inline void cb_die(const char *what, int rc)
{
    fprintf(stderr, "%s: %s\n", what, concur_strerror(rc));
    exit(1);
}

static inline concur_pool *cb_pool(concur_engine engine, int workers)
{
    concur_pool *p;
    concur_pool_opts o = {.engine = engine, .max_workers = workers};
    int rc = concur_pool_create(&p, &o);
    if (rc)
        cb_die("concur_pool_create", rc);
    return p;
}

static inline void *cb_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        cb_die("malloc", CONCUR_ENOMEM);
    return p;
}

/* The tiny task: int x -> 2x+1. */
static inline int cb_twice_plus_one(concur_task *t, const void *in, size_t len)
{
    int x;
    if (len != sizeof(x))
        return CONCUR_EINVAL;
    memcpy(&x, in, sizeof(x));
    x = x * 2 + 1;
    return concur_task_return(t, &x, sizeof(x));
}

/* The map's item function: the same 2x+1 (items are packed: copy, do not cast). */
static inline int cb_map_fn(concur_task *t, const void *in, void *out)
{
    (void)t;
    int x;
    memcpy(&x, in, sizeof(x));
    x = x * 2 + 1;
    memcpy(out, &x, sizeof(x));
    return 0;
}

/* Submits cb_twice_plus_one(i), collects and checks it; returns the elapsed ns. */
static inline uint64_t cb_round_trip(concur_pool *p, int i)
{
    concur_future *f;
    const void *data = NULL;
    size_t len = 0;
    uint64_t t0 = bench_now_ns();
    int rc = concur_pool_submit(p, cb_twice_plus_one, &i, sizeof(i), &f);
    if (!rc)
        rc = concur_future_collect(f, CONCUR_FOREVER, &data, &len);
    uint64_t dt = bench_now_ns() - t0;
    if (rc || len != sizeof(int) || *(const int *)data != i * 2 + 1)
        cb_die("round trip: wrong result", rc ? rc : CONCUR_ETASK);
    concur_future_release(f);
    return dt;
}

/* Submits cb_twice_plus_one(i) for each i < @n, one by one, each with its future in @fs,
 * then collects, checks and releases every future. */
static inline void cb_submit_wait(concur_pool *p, concur_future **fs, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = concur_pool_submit(p, cb_twice_plus_one, &i, sizeof(i), &fs[i]);
        if (rc)
            cb_die("submit", rc);
    }
    for (int i = 0; i < n; i++) {
        const void *data = NULL;
        size_t len = 0;
        int rc = concur_future_collect(fs[i], CONCUR_FOREVER, &data, &len);
        if (rc || len != sizeof(int) || *(const int *)data != i * 2 + 1)
            cb_die("throughput: wrong result", rc ? rc : CONCUR_ETASK);
        concur_future_release(fs[i]);
    }
}

/* A throughput bench: a warm-up pass of @n / 10 tasks, then 3 passes of @n; prints the
 * RESULT of @bench (tasks per second, from the median pass) and a NOTE with the spread. */
static inline void cb_throughput(concur_pool *p, const char *bench, int n)
{
    concur_future **fs = cb_malloc(sizeof(*fs) * (size_t)n);
    cb_submit_wait(p, fs, n / 10);
    uint64_t t[3];
    for (int k = 0; k < 3; k++) {
        uint64_t t0 = bench_now_ns();
        cb_submit_wait(p, fs, n);
        t[k] = bench_now_ns() - t0;
    }
    bench_result(bench, CB_SYSTEM, "tasks_per_s", n / (bench_median_u64(t, 3) / 1e9), "tasks/s");
    /* The spread of the passes: on 2 CPUs the caller and the workers share them, and a
     * pass's rate depends on how the scheduler places them. */
    uint64_t lo = t[0], hi = t[0];
    for (int k = 1; k < 3; k++) {
        lo = t[k] < lo ? t[k] : lo;
        hi = t[k] > hi ? t[k] : hi;
    }
    printf("NOTE %s concur passes: slowest %.0f, fastest %.0f tasks/s\n", bench, n / (hi / 1e9),
           n / (lo / 1e9));
    free(fs);
}

/* @warm round trips, then the median of @n, in microseconds; @pause (may be NULL) runs
 * before each one. */
static inline double cb_median_round_trip_us(concur_pool *p, int warm, int n,
                                             void (*pause)(void))
{
    uint64_t *t = cb_malloc(sizeof(*t) * (size_t)n);
    for (int i = -warm; i < n; i++) {
        if (pause)
            pause();
        uint64_t dt = cb_round_trip(p, i);
        if (i >= 0)
            t[i] = dt;
    }
    double us = bench_median_u64(t, (size_t)n) / 1000.0;
    free(t);
    return us;
}

/* One pass of a map of 2x+1 from @in to @out (@n ints) with @chunk items per chunk; returns 0
 * or the error. */
typedef int (*cb_map_pass)(concur_pool *p, const int *in, int *out, size_t n, size_t chunk);

/* @pass over @n ints in chunks of @chunk: 3 warm-up passes, then the median of 9 in ns per
 * pass; every pass is checked. */
static inline double cb_median_pass_ns(concur_pool *p, size_t n, size_t chunk, cb_map_pass pass)
{
    int *in = cb_malloc(n * sizeof(int)), *out = cb_malloc(n * sizeof(int));
    for (size_t i = 0; i < n; i++)
        in[i] = (int)i;
    uint64_t t[9];
    for (int k = -3; k < 9; k++) {
        memset(out, 0, n * sizeof(int));
        uint64_t t0 = bench_now_ns();
        int rc = pass(p, in, out, n, chunk);
        if (rc)
            cb_die("map pass", rc);
        if (k >= 0)
            t[k] = bench_now_ns() - t0;
        for (size_t i = 0; i < n; i += 9973)
            if (out[i] != (int)i * 2 + 1)
                cb_die("map: wrong result", CONCUR_ETASK);
    }
    free(in);
    free(out);
    return bench_median_u64(t, 9);
}

static inline int cb_concur_map_pass(concur_pool *p, const int *in, int *out, size_t n,
                                     size_t chunk)
{
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = o.out_size = sizeof(int);
    o.chunk_size = chunk;
    return concur_map(p, cb_map_fn, &o, in, n, out, NULL);
}

/* concur_map of cb_map_fn over @n ints in chunks of @chunk, as cb_median_pass_ns. */
static inline double cb_median_map_ns(concur_pool *p, size_t n, size_t chunk)
{
    return cb_median_pass_ns(p, n, chunk, cb_concur_map_pass);
}

/* main(): runs the bench named by argv[1] from @benches (a NULL-name-terminated table). */
typedef struct cb_bench {
    const char *name;
    void (*run)(void);
} cb_bench;

static inline int cb_main(int argc, char **argv, const cb_bench *benches)
{
    const char *b = argc > 1 ? argv[1] : "";
    char names[256] = "";
    for (const cb_bench *x = benches; x->name; x++) {
        if (!strcmp(b, x->name)) {
            x->run();
            return 0;
        }
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
                 names[0] ? " " : "", x->name);
    }
    bench_usage(argv[0], names);
    return 2;
}

#endif
