/*
 * test_map.c - concur/map.h: ordered, unordered, chunked, lazy (bounded look-ahead) and eager
 * maps, zip (starmap) and generator sources, errors at an item, timeouts, closed pools, the
 * chunk helpers (get_chunks / split_map_task) and the eager map into an array.
 *
 * Built twice (see testutil.h): test_map on the thread engine, test_map_proc on the process
 * engine.
 */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

TestSuite(map, .timeout = TU_TIMEOUT);

/* ---- item functions ---------------------------------------------------------------- */

/* int -> int: 2x + 1. */
static int fn_lin(concur_task *t, const void *in, void *out)
{
    (void)t;
    int x;
    memcpy(&x, in, sizeof x);
    x = x * 2 + 1;
    memcpy(out, &x, sizeof x);
    return 0;
}

/* int -> int: 2x + 1, but item value 5 (and only it) fails with a message. */
static int fn_fail5(concur_task *t, const void *in, void *out)
{
    int x;
    memcpy(&x, in, sizeof x);
    if (x == 5)
        return concur_task_fail(t, -EIO, "bad item %d", x);
    x = x * 2 + 1;
    memcpy(out, &x, sizeof x);
    return 0;
}

/* int -> uint64: the id of the chunk task that ran the item. */
static int fn_task_id(concur_task *t, const void *in, void *out)
{
    (void)in;
    uint64_t id = concur_task_id(t);
    memcpy(out, &id, sizeof id);
    return 0;
}

typedef struct sleep_item {
    double secs;
    int value;
} sleep_item;

/* sleep_item -> int: sleeps (the workload), returns value squared. */
static int fn_sleep_square(concur_task *t, const void *in, void *out)
{
    (void)t;
    sleep_item it;
    memcpy(&it, in, sizeof it);
    tu_sleep(it.secs);
    int sq = it.value * it.value;
    memcpy(out, &sq, sizeof sq);
    return 0;
}

static int *ints(size_t n)
{
    int *a = malloc(n * sizeof *a);
    cr_assert_not_null(a);
    for (size_t i = 0; i < n; i++)
        a[i] = (int)i;
    return a;
}

static concur_map_opts int_opts(size_t chunk, size_t buffer)
{
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = sizeof(int);
    o.out_size = sizeof(int);
    o.chunk_size = chunk;
    o.buffer_size = buffer;
    return o;
}

/* Drains a map of fn_lin over 0..n-1 and checks every output against the serial map. In
 * order: indexes must be 0, 1, 2...; unordered: each index exactly once. */
static void check_lin(concur_map_iter *m, size_t n, bool ordered)
{
    bool *seen = calloc(n ? n : 1, 1);
    cr_assert_not_null(seen);
    size_t got = 0;
    for (;;) {
        const void *out = NULL;
        size_t idx = SIZE_MAX;
        int rc = concur_map_next(m, &out, &idx);
        if (rc == 0)
            break;
        cr_assert_eq(rc, 1, "next: %s", concur_err_name(rc));
        cr_assert_lt(idx, n);
        if (ordered)
            cr_assert_eq(idx, got, "ordered map gave index %zu at position %zu", idx, got);
        cr_assert_not(seen[idx], "index %zu delivered twice", idx);
        seen[idx] = true;
        int v;
        memcpy(&v, out, sizeof v);
        cr_assert_eq(v, (int)idx * 2 + 1, "item %zu: got %d", idx, v);
        got++;
    }
    cr_assert_eq(got, n);
    cr_assert_eq(concur_map_next(m, NULL, NULL), 0, "the end is sticky");
    free(seen);
}

/* ---- results equal a serial map -------------------------------------------------------- */

Test(map, ordered_lazy_equals_serial)
{
    concur_pool *p = tu_pool(4);
    size_t n = 1003;
    int *a = ints(n);
    size_t chunks[] = {1, 7, 1000, 5000};
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
        concur_map_opts o = int_opts(chunks[c], 4);
        concur_map_iter *m = NULL;
        cr_assert_eq(concur_map_start(&m, p, fn_lin, &o, a, n), 0);
        check_lin(m, n, true);
        concur_map_destroy(m);
    }
    free(a);
    concur_pool_destroy(p);
}

Test(map, eager_and_unordered_equal_serial)
{
    concur_pool *p = tu_pool(4);
    size_t n = 2000;
    int *a = ints(n);
    for (int mode = 0; mode < 4; mode++) {
        concur_map_opts o = int_opts(13, 3);
        o.eager = mode & 1;
        o.unordered = mode & 2;
        concur_map_iter *m = NULL;
        cr_assert_eq(concur_map_start(&m, p, fn_lin, &o, a, n), 0, "mode %d", mode);
        check_lin(m, n, !o.unordered);
        concur_map_destroy(m);
    }
    free(a);
    concur_pool_destroy(p);
}

Test(map, empty_input_ends_at_once)
{
    concur_pool *p = tu_pool(2);
    concur_map_opts o = int_opts(3, 1);
    for (int mode = 0; mode < 4; mode++) {
        o.eager = mode & 1;
        o.unordered = mode & 2;
        concur_map_iter *m = NULL;
        cr_assert_eq(concur_map_start(&m, p, fn_lin, &o, NULL, 0), 0);
        cr_assert_eq(concur_map_next(m, NULL, NULL), 0);
        cr_assert_null(concur_map_error_message(m));
        concur_map_destroy(m);
    }
    concur_pool_destroy(p);
}

Test(map, invalid_arguments)
{
    concur_pool *p = tu_pool(1);
    int a[3] = {0, 1, 2};
    int out[3];
    concur_map_iter *m = NULL;
    concur_map_opts o = int_opts(0, 1); /* chunk_size 0 */
    cr_assert_eq(concur_map_start(&m, p, fn_lin, &o, a, 3), CONCUR_EINVAL);
    cr_assert_null(m);
    cr_assert_eq(concur_map(p, fn_lin, &o, a, 3, out, NULL), CONCUR_EINVAL);
    concur_future *fs[3];
    cr_assert_eq(concur_map_submit_chunks(p, fn_lin, &o, a, 3, fs), CONCUR_EINVAL);
    o = int_opts(1, 1);
    cr_assert_eq(concur_map_start(&m, p, NULL, &o, a, 3), CONCUR_EINVAL);
    cr_assert_eq(concur_map_start(&m, p, fn_lin, NULL, a, 3), CONCUR_EINVAL);
    cr_assert_eq(concur_map_start(&m, p, fn_lin, &o, NULL, 3), CONCUR_EINVAL);
    cr_assert_eq(concur_map_start(NULL, p, fn_lin, &o, a, 3), CONCUR_EINVAL);
    o.eager = true;
    cr_assert_eq(concur_map_start_gen(&m, p, fn_lin, &o, NULL, NULL), CONCUR_EINVAL);
    concur_map_destroy(NULL);
    cr_assert_null(concur_map_error_message(NULL));
    concur_pool_destroy(p);
}

Test(map, buffer_size_zero_acts_as_one)
{
    concur_pool *p = tu_pool(2);
    size_t n = 50;
    int *a = ints(n);
    concur_map_opts o = int_opts(4, 0);
    concur_map_iter *m = NULL;
    cr_assert_eq(concur_map_start(&m, p, fn_lin, &o, a, n), 0);
    check_lin(m, n, true);
    concur_map_destroy(m);
    free(a);
    concur_pool_destroy(p);
}

/* ---- unordered delivery ---------------------------------------------------------------- */

/* SPEC D.86 (sleeps 0.1 / 0.06 / 0.02 -> squares of items 2, 1, 0), with the gaps between
 * the sleeps widened from 40 ms to 250 ms: in a full test run on 2 CPUs a worker once
 * started its item more than 40 ms late. The three workers are started beforehand so that
 * thread creation is not part of the timing. (unordered_follows_completion_not_input
 * checks the same property without timing.) */
Test(map, unordered_yields_completion_order)
{
    concur_pool *p = tu_pool(3);
    cr_assert_eq(concur_pool_spawn_workers(p, 3), 3);
    /* Every worker up and through a task (a process engine's worker processes forked). */
    tu_gate *g = tu_gate_new();
    concur_future *warm[3];
    for (int i = 0; i < 3; i++)
        warm[i] = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, TU_ENGINE == CONCUR_ENGINE_COROUTINES ? 1 : 3, TU_SAFETY));
    tu_gate_open(g);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(concur_future_wait(warm[i], TU_SAFETY), 0);
        concur_future_release(warm[i]);
    }
    tu_gate_destroy(g);
    sleep_item items[3] = {{0.52, 0}, {0.27, 1}, {0.02, 2}};
    for (int eager = 0; eager < 2; eager++) {
        concur_map_opts o = CONCUR_MAP_OPTS_INIT;
        o.in_size = sizeof(sleep_item);
        o.out_size = sizeof(int);
        o.buffer_size = 3;
        o.unordered = true;
        o.eager = eager;
        concur_map_iter *m = NULL;
        cr_assert_eq(concur_map_start(&m, p, fn_sleep_square, &o, items, 3), 0);
        size_t want[3] = {2, 1, 0};
        for (int k = 0; k < 3; k++) {
            const void *out;
            size_t idx;
            cr_assert_eq(concur_map_next(m, &out, &idx), 1);
            cr_assert_eq(idx, want[k], "eager %d position %d: item %zu", eager, k, idx);
            int v;
            memcpy(&v, out, sizeof v);
            cr_assert_eq(v, (int)(want[k] * want[k]));
        }
        cr_assert_eq(concur_map_next(m, NULL, NULL), 0);
        concur_map_destroy(m);
    }
    concur_pool_destroy(p);
}

/* The same without timing: item i waits until the consumer has received item i + 1 (gate
 * i, opened then), so the only possible completion order is 3, 2, 1, 0. The gates are in
 * the shared arena, and the pointer is set before the pool exists (worker processes see the
 * globals as they were at pool creation). */
static tu_gate *g_relay;

static int fn_relay(concur_task *t, const void *in, void *out)
{
    (void)t;
    int x;
    memcpy(&x, in, sizeof x);
    if (x < 3)
        tu_gate_wait_open(&g_relay[x], TU_SAFETY);
    memcpy(out, &x, sizeof x);
    return 0;
}

Test(map, unordered_follows_completion_not_input)
{
    g_relay = tu_shared_alloc(3 * sizeof *g_relay);
    for (int i = 0; i < 3; i++)
        tu_gate_init(&g_relay[i]);
    concur_pool *p = tu_pool(4);
    int a[4] = {0, 1, 2, 3};
    concur_map_opts o = int_opts(1, 4);
    o.unordered = true;
    concur_map_iter *m = NULL;
    cr_assert_eq(concur_map_start(&m, p, fn_relay, &o, a, 4), 0);
    for (int want = 3; want >= 0; want--) {
        const void *out;
        size_t idx;
        cr_assert_eq(concur_map_next(m, &out, &idx), 1);
        cr_assert_eq(idx, (size_t)want);
        if (want > 0)
            tu_gate_open(&g_relay[want - 1]);
    }
    cr_assert_eq(concur_map_next(m, NULL, NULL), 0);
    concur_map_destroy(m);
    concur_pool_destroy(p);
    for (int i = 0; i < 3; i++)
        tu_gate_destroy(&g_relay[i]);
}

/* ---- chunking ------------------------------------------------------------------------ */

/* chunk_size k: k items per task. The task id of every item shows which task ran it. */
Test(map, chunk_size_groups_items_per_task)
{
    concur_pool *p = tu_pool(2);
    size_t n = 10;
    int *a = ints(n);
    size_t ks[] = {1, 2, 3, 5, 10, 11};
    for (size_t c = 0; c < sizeof ks / sizeof *ks; c++) {
        size_t k = ks[c];
        concur_map_opts o = int_opts(k, 2);
        o.out_size = sizeof(uint64_t);
        concur_map_iter *m = NULL;
        cr_assert_eq(concur_map_start(&m, p, fn_task_id, &o, a, n), 0);
        uint64_t ids[10];
        for (size_t i = 0; i < n; i++) {
            const void *out;
            cr_assert_eq(concur_map_next(m, &out, NULL), 1);
            memcpy(&ids[i], out, sizeof ids[i]);
        }
        cr_assert_eq(concur_map_next(m, NULL, NULL), 0);
        concur_map_destroy(m);
        size_t tasks = 0;
        for (size_t i = 0; i < n; i++) {
            bool first = i % k == 0;
            if (first) {
                tasks++;
                if (i)
                    cr_assert_neq(ids[i], ids[i - 1], "k=%zu: item %zu opens a task", k, i);
            } else {
                cr_assert_eq(ids[i], ids[i - 1], "k=%zu: item %zu shares its task", k, i);
            }
        }
        cr_assert_eq(tasks, concur_chunk_count(n, k));
    }
    free(a);
    concur_pool_destroy(p);
}

/* ---- zip (starmap) --------------------------------------------------------------------- */

/* Item = int followed by double (packed: read with memcpy). Output: a + b as double. */
static int fn_add_zip(concur_task *t, const void *in, void *out)
{
    (void)t;
    int a;
    double b;
    memcpy(&a, in, sizeof a);
    memcpy(&b, (const char *)in + sizeof a, sizeof b);
    double r = a + b;
    memcpy(out, &r, sizeof r);
    return 0;
}

Test(map, zip_stops_at_the_shortest)
{
    concur_pool *p = tu_pool(2);
    int xs[5] = {1, 2, 3, 4, 5};
    double ys[3] = {0.5, 0.25, 0.125};
    const void *arrays[2] = {xs, ys};
    size_t sizes[2] = {sizeof(int), sizeof(double)};
    size_t n = 5 < 3 ? 5 : 3;
    for (int eager = 0; eager < 2; eager++) {
        concur_map_opts o = CONCUR_MAP_OPTS_INIT;
        o.in_size = 999; /* ignored: the sum of sizes */
        o.out_size = sizeof(double);
        o.chunk_size = 2;
        o.eager = eager;
        concur_map_iter *m = NULL;
        cr_assert_eq(concur_map_start_zip(&m, p, fn_add_zip, &o, arrays, sizes, 2, n), 0);
        for (size_t i = 0; i < n; i++) {
            const void *out;
            size_t idx;
            cr_assert_eq(concur_map_next(m, &out, &idx), 1);
            cr_assert_eq(idx, i);
            double r;
            memcpy(&r, out, sizeof r);
            cr_assert_float_eq(r, xs[i] + ys[i], 1e-12);
        }
        cr_assert_eq(concur_map_next(m, NULL, NULL), 0, "stops after the shortest array");
        concur_map_destroy(m);
    }
    concur_pool_destroy(p);
}

/* ---- generators ---------------------------------------------------------------------------- */

typedef struct counter_gen {
    size_t pulled; /* items handed out so far */
    size_t limit;  /* SIZE_MAX: endless */
    size_t fail_at;
} counter_gen;

static int gen_count(void *arg, void *item)
{
    counter_gen *g = arg;
    if (g->pulled == g->fail_at)
        return -EIO;
    if (g->pulled == g->limit)
        return 0;
    int v = (int)g->pulled++;
    memcpy(item, &v, sizeof v);
    return 1;
}

/* buffer_size 2, chunk 4: the generator is never more than 2 chunks + 1 chunk being built
 * ahead of the consumer, even though it never ends. */
Test(map, generator_look_ahead_is_bounded)
{
    concur_pool *p = tu_pool(4);
    const size_t k = 4, buffer = 2, take = 300;
    for (int unordered = 0; unordered < 2; unordered++) {
        counter_gen g = {.pulled = 0, .limit = SIZE_MAX, .fail_at = SIZE_MAX};
        concur_map_opts o = int_opts(k, buffer);
        o.unordered = unordered;
        concur_map_iter *m = NULL;
        cr_assert_eq(concur_map_start_gen(&m, p, fn_lin, &o, gen_count, &g), 0);
        cr_assert_leq(g.pulled, (buffer + 1) * k, "after start: pulled %zu", g.pulled);
        size_t max_ahead = 0;
        for (size_t consumed = 0; consumed < take; consumed++) {
            const void *out;
            size_t idx;
            cr_assert_eq(concur_map_next(m, &out, &idx), 1);
            if (!unordered)
                cr_assert_eq(idx, consumed);
            int v;
            memcpy(&v, out, sizeof v);
            cr_assert_eq(v, (int)idx * 2 + 1);
            size_t ahead = g.pulled - (consumed + 1);
            if (ahead > max_ahead)
                max_ahead = ahead;
            cr_assert_leq(ahead, (buffer + 1) * k, "consumed %zu, pulled %zu", consumed + 1,
                          g.pulled);
        }
        cr_assert_geq(g.pulled, take);
        concur_map_destroy(m); /* cancels the chunks in flight of the endless map */
    }
    concur_pool_destroy(p);
}

Test(map, finite_generator_equals_serial)
{
    concur_pool *p = tu_pool(3);
    for (size_t n = 0; n < 30; n += 7) {
        counter_gen g = {.pulled = 0, .limit = n, .fail_at = SIZE_MAX};
        concur_map_opts o = int_opts(3, 2);
        concur_map_iter *m = NULL;
        cr_assert_eq(concur_map_start_gen(&m, p, fn_lin, &o, gen_count, &g), 0);
        check_lin(m, n, true);
        concur_map_destroy(m);
    }
    concur_pool_destroy(p);
}

Test(map, generator_error_surfaces_at_its_position)
{
    concur_pool *p = tu_pool(2);
    counter_gen g = {.pulled = 0, .limit = SIZE_MAX, .fail_at = 7};
    concur_map_opts o = int_opts(3, 2);
    concur_map_iter *m = NULL;
    cr_assert_eq(concur_map_start_gen(&m, p, fn_lin, &o, gen_count, &g), 0);
    for (size_t i = 0; i < 7; i++) {
        const void *out;
        size_t idx;
        cr_assert_eq(concur_map_next(m, &out, &idx), 1, "item %zu", i);
        cr_assert_eq(idx, i);
    }
    size_t idx = 0;
    cr_assert_eq(concur_map_next(m, NULL, &idx), -EIO);
    cr_assert_eq(idx, 7);
    cr_assert_not_null(concur_map_error_message(m));
    cr_assert_eq(concur_map_next(m, NULL, NULL), -EIO, "the error is sticky");
    concur_map_destroy(m);
    concur_pool_destroy(p);
}

/* ---- errors ------------------------------------------------------------------------------ */

/* SPEC D.89: the error of item 5 comes after items 0..4, with its message. */
Test(map, item_error_after_earlier_results)
{
    concur_pool *p = tu_pool(3);
    size_t n = 12;
    int *a = ints(n);
    size_t ks[] = {1, 3, 4, 12};
    for (int mode = 0; mode < 2; mode++) {
        for (size_t c = 0; c < sizeof ks / sizeof *ks; c++) {
            concur_map_opts o = int_opts(ks[c], 2);
            o.eager = mode;
            concur_map_iter *m = NULL;
            cr_assert_eq(concur_map_start(&m, p, fn_fail5, &o, a, n), 0);
            for (size_t i = 0; i < 5; i++) {
                const void *out;
                size_t idx;
                cr_assert_eq(concur_map_next(m, &out, &idx), 1, "k=%zu item %zu", ks[c], i);
                cr_assert_eq(idx, i);
                int v;
                memcpy(&v, out, sizeof v);
                cr_assert_eq(v, (int)i * 2 + 1);
            }
            size_t idx = 0;
            cr_assert_eq(concur_map_next(m, NULL, &idx), -EIO, "k=%zu", ks[c]);
            cr_assert_eq(idx, 5);
            cr_assert_str_eq(concur_map_error_message(m), "bad item 5");
            idx = 0;
            cr_assert_eq(concur_map_next(m, NULL, &idx), -EIO, "the error is sticky");
            cr_assert_eq(idx, 5);
            concur_map_destroy(m);
        }
    }
    free(a);
    concur_pool_destroy(p);
}

Test(map, unordered_item_error_after_its_chunk_prefix)
{
    concur_pool *p = tu_pool(2);
    size_t n = 8;
    int *a = ints(n);
    concur_map_opts o = int_opts(8, 1); /* one chunk: completion order is input order */
    o.unordered = true;
    concur_map_iter *m = NULL;
    cr_assert_eq(concur_map_start(&m, p, fn_fail5, &o, a, n), 0);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(concur_map_next(m, NULL, NULL), 1);
    size_t idx = 0;
    cr_assert_eq(concur_map_next(m, NULL, &idx), -EIO);
    cr_assert_eq(idx, 5);
    cr_assert_str_eq(concur_map_error_message(m), "bad item 5");
    concur_map_destroy(m);
    free(a);
    concur_pool_destroy(p);
}

/* SPEC D.88: five 0.02 s tasks with a 0.01 s timeout for the whole iteration. */
Test(map, timeout_covers_the_iteration)
{
    concur_pool *p = tu_pool(2);
    sleep_item items[5];
    for (int i = 0; i < 5; i++)
        items[i] = (sleep_item){0.02, i};
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = sizeof(sleep_item);
    o.out_size = sizeof(int);
    o.timeout = 0.01;
    concur_map_iter *m = NULL;
    double t0 = tu_now();
    cr_assert_eq(concur_map_start(&m, p, fn_sleep_square, &o, items, 5), 0);
    int rc;
    while ((rc = concur_map_next(m, NULL, NULL)) == 1)
        ;
    double dt = tu_now() - t0;
    cr_assert_eq(rc, CONCUR_ETIMEDOUT, "got %s", concur_err_name(rc));
    cr_assert_geq(dt, 0.01 - TU_EPS);
    cr_assert_lt(dt, TU_LOOSE(0.01));
    cr_assert_eq(concur_map_next(m, NULL, NULL), CONCUR_ETIMEDOUT, "sticky");
    concur_map_destroy(m);
    concur_pool_destroy(p);
}

/* SPEC D.91: a lazy map whose pool was shut down fails; it never restarts workers. */
Test(map, closed_pool_fails_lazy_map)
{
    concur_pool *p = tu_pool(2);
    size_t n = 6;
    int *a = ints(n);
    concur_map_opts o = int_opts(1, 1);
    concur_map_iter *m = NULL;
    cr_assert_eq(concur_map_start(&m, p, fn_lin, &o, a, n), 0);
    const void *out;
    size_t idx;
    cr_assert_eq(concur_map_next(m, &out, &idx), 1);
    cr_assert_eq(idx, 0);
    cr_assert_eq(concur_pool_shutdown(p, 0, CONCUR_FOREVER), 0);
    idx = 0;
    cr_assert_eq(concur_map_next(m, &out, &idx), CONCUR_ECLOSED);
    cr_assert_eq(idx, 1);
    cr_assert_eq(concur_map_next(m, &out, &idx), CONCUR_ECLOSED);
    cr_assert_eq(tu_counts(p).workers, 0, "the pool was not resurrected");
    concur_map_destroy(m);

    /* Starting a map, or the eager map, on a closed pool is refused at once. */
    cr_assert_eq(concur_map_start(&m, p, fn_lin, &o, a, n), CONCUR_ECLOSED);
    cr_assert_null(m);
    o.eager = true;
    cr_assert_eq(concur_map_start(&m, p, fn_lin, &o, a, n), CONCUR_ECLOSED);
    counter_gen g = {.pulled = 0, .limit = SIZE_MAX, .fail_at = SIZE_MAX};
    o.eager = false;
    cr_assert_eq(concur_map_start_gen(&m, p, fn_lin, &o, gen_count, &g), CONCUR_ECLOSED);
    int out_arr[6];
    size_t ei = 99;
    cr_assert_eq(concur_map(p, fn_lin, &o, a, n, out_arr, &ei), CONCUR_ECLOSED);
    cr_assert_eq(ei, 0);
    free(a);
    concur_pool_destroy(p);
}

/* ---- eager maps and destroy ------------------------------------------------------------ */

/* In the shared arena, and set before the pool is created: worker processes see the
 * globals as they were at pool creation. */
static tu_gate *g_gate;

static int fn_gate(concur_task *t, const void *in, void *out)
{
    (void)t;
    tu_gate_pass(g_gate);
    memcpy(out, in, sizeof(int));
    return 0;
}

/* SPEC D.90: map_all submits every task during the call, so all workers are busy before
 * the first result is asked for. */
Test(map, eager_map_makes_all_workers_busy)
{
    g_gate = tu_gate_new();
    concur_pool *p = tu_pool(4);
    int a[4] = {0, 1, 2, 3};
    concur_map_opts o = int_opts(1, 1);
    o.eager = true;
    concur_map_iter *m = NULL;
    cr_assert_eq(concur_map_start(&m, p, fn_gate, &o, a, 4), 0);
    cr_assert(tu_gate_await(g_gate, 4, TU_SAFETY), "all four chunks run at once");
    concur_pool_counts c = tu_counts(p);
    cr_assert_eq(c.busy, 4);
    cr_assert_eq(c.workers, 4);
    tu_gate_open(g_gate);
    for (size_t i = 0; i < 4; i++) {
        size_t idx;
        cr_assert_eq(concur_map_next(m, NULL, &idx), 1);
        cr_assert_eq(idx, i);
    }
    cr_assert_eq(concur_map_next(m, NULL, NULL), 0);
    concur_map_destroy(m);
    concur_pool_destroy(p);
    tu_gate_destroy(g_gate);
}

/* A lazy map keeps buffer_size chunks in flight: with 3, exactly 3 items start. The pool has
 * 3 workers, all blocked at the gate once 3 items arrived, so a 4th chunk submitted ahead
 * would stay visible as pending. */
Test(map, lazy_map_keeps_buffer_size_in_flight)
{
    g_gate = tu_gate_new();
    concur_pool *p = tu_pool(3);
    int a[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    concur_map_opts o = int_opts(1, 3);
    concur_map_iter *m = NULL;
    cr_assert_eq(concur_map_start(&m, p, fn_gate, &o, a, 8), 0);
    cr_assert(tu_gate_await(g_gate, 3, TU_SAFETY));
    concur_pool_counts c = tu_counts(p);
    cr_assert_eq(c.pending, 0, "only buffer_size chunks were submitted (pending %zu)", c.pending);
    cr_assert_eq(c.busy, 3);
    tu_gate_open(g_gate);
    for (size_t i = 0; i < 8; i++)
        cr_assert_eq(concur_map_next(m, NULL, NULL), 1);
    cr_assert_eq(concur_map_next(m, NULL, NULL), 0);
    concur_map_destroy(m);
    concur_pool_destroy(p);
    tu_gate_destroy(g_gate);
}

static atomic_int *g_ran; /* shared, as g_gate */

/* Arrives at the gate, then runs until the map asks its task to stop. */
static int fn_until_stopped(concur_task *t, const void *in, void *out)
{
    atomic_fetch_add(g_ran, 1);
    tu_gate_arrive(g_gate);
    double dl = tu_now() + TU_SAFETY;
    while (!concur_task_should_stop(t) && tu_now() < dl)
        tu_nap();
    memcpy(out, in, sizeof(int));
    return 0;
}

/* Destroy cancels the chunks not started and waits for the running one. */
Test(map, destroy_cancels_pending_and_waits_running)
{
    g_gate = tu_gate_new();
    g_ran = TU_SHARED(atomic_int);
    concur_pool *p = tu_pool(1);
    int a[5] = {0, 1, 2, 3, 4};
    concur_map_opts o = int_opts(1, 1);
    o.eager = true;
    concur_map_iter *m = NULL;
    cr_assert_eq(concur_map_start(&m, p, fn_until_stopped, &o, a, 5), 0);
    cr_assert(tu_gate_await(g_gate, 1, TU_SAFETY));
    double t0 = tu_now();
    concur_map_destroy(m);
    cr_assert_lt(tu_now() - t0, TU_SAFETY / 2, "the running chunk was asked to stop");
    cr_assert_eq(concur_pool_join(p, TU_SAFETY), 0);
    if (TU_ENGINE == CONCUR_ENGINE_COROUTINES) /* admitted to the loop = running: each */
        cr_assert_leq(atomic_load(g_ran), 5); /* started, saw the stop and ended at once */
    else
        cr_assert_eq(atomic_load(g_ran), 1, "the pending chunks never ran");
    concur_pool_destroy(p);
    tu_gate_destroy(g_gate);
}

/* ---- chunk helpers (get_chunks / split_map_task) --------------------------------------- */

Test(map, chunk_count_and_bounds, TU_NO_ENGINE)
{
    cr_assert_eq(concur_chunk_count(3, 2), 2);
    size_t b = 99, e = 99;
    cr_assert_eq(concur_chunk_bounds(3, 2, 0, &b, &e), 0);
    cr_assert_eq(b, 0);
    cr_assert_eq(e, 2);
    cr_assert_eq(concur_chunk_bounds(3, 2, 1, &b, &e), 0);
    cr_assert_eq(b, 2);
    cr_assert_eq(e, 3);
    cr_assert_eq(concur_chunk_bounds(3, 2, 2, &b, &e), CONCUR_EINVAL);
    cr_assert_eq(concur_chunk_count(0, 2), 0);
    cr_assert_eq(concur_chunk_bounds(0, 2, 0, &b, &e), CONCUR_EINVAL);
    cr_assert_eq(concur_chunk_count(5, 0), 0);
    cr_assert_eq(concur_chunk_bounds(5, 0, 0, &b, &e), CONCUR_EINVAL);
    cr_assert_eq(concur_chunk_count(10, 1), 10);
    cr_assert_eq(concur_chunk_count(10, 5), 2);
    cr_assert_eq(concur_chunk_count(10, 100), 1);
    cr_assert_eq(concur_chunk_count(SIZE_MAX, SIZE_MAX / 2), 3);
}

/* SPEC D.97: 10 items -> 10 chunk tasks with k=1, 5 with k=2; concatenating their results
 * equals the plain map. */
Test(map, submit_chunks_concatenate_to_the_map)
{
    concur_pool *p = tu_pool(3);
    int *a = ints(10);
    size_t ks[] = {1, 2, 3};
    int want_n[] = {10, 5, 4};
    for (size_t c = 0; c < 3; c++) {
        concur_map_opts o = int_opts(ks[c], 1);
        concur_future *fs[10] = {0};
        int nf = concur_map_submit_chunks(p, fn_lin, &o, a, 10, fs);
        cr_assert_eq(nf, want_n[c]);
        int cat[10];
        size_t filled = 0;
        for (int i = 0; i < nf; i++) {
            cr_assert_eq(concur_future_wait(fs[i], TU_SAFETY), 0);
            const void *outs;
            size_t count;
            const char *msg = "x";
            cr_assert_eq(concur_map_chunk_result(fs[i], &outs, &count, &msg), 0);
            cr_assert_null(msg);
            memcpy(cat + filled, outs, count * sizeof(int));
            filled += count;
            concur_future_release(fs[i]);
        }
        cr_assert_eq(filled, 10);
        for (int i = 0; i < 10; i++)
            cr_assert_eq(cat[i], 2 * i + 1);
    }
    concur_map_opts o = int_opts(4, 1);
    cr_assert_eq(concur_map_submit_chunks(p, fn_lin, &o, a, 0, NULL), 0);
    free(a);
    concur_pool_destroy(p);
}

Test(map, chunk_result_reports_the_failed_item)
{
    concur_pool *p = tu_pool(2);
    int *a = ints(10);
    concur_map_opts o = int_opts(4, 1);
    concur_future *fs[3] = {0};
    cr_assert_eq(concur_map_submit_chunks(p, fn_fail5, &o, a, 10, fs), 3);
    cr_assert_eq(concur_future_wait(fs[1], TU_SAFETY), 0);
    const void *outs;
    size_t count = 99;
    const char *msg = NULL;
    cr_assert_eq(concur_map_chunk_result(fs[1], &outs, &count, &msg), -EIO);
    cr_assert_eq(count, 1, "item 4 succeeded, item 5 failed");
    int v;
    memcpy(&v, outs, sizeof v);
    cr_assert_eq(v, 9);
    cr_assert_str_eq(msg, "bad item 5");
    for (int i = 0; i < 3; i++)
        concur_future_release(fs[i]);

    /* A future that is not finished, and one that is not a chunk's. */
    g_gate = tu_gate_new();
    concur_future *f = tu_submit_gate(p, g_gate);
    cr_assert_eq(concur_map_chunk_result(f, &outs, &count, &msg), CONCUR_EAGAIN);
    tu_gate_open(g_gate);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    cr_assert_eq(concur_map_chunk_result(f, &outs, &count, &msg), CONCUR_EINVAL);
    concur_future_release(f);
    tu_gate_destroy(g_gate);
    free(a);
    concur_pool_destroy(p);
}

/* ---- concur_map(): eager into an array ------------------------------------------------ */

Test(map, map_into_array_equals_serial)
{
    concur_pool *p = tu_pool(4);
    size_t n = TU_SANITIZED ? 100003 : 1000003;
    int *a = ints(n);
    int *out = calloc(n, sizeof *out);
    cr_assert_not_null(out);
    size_t ks[] = {1000, 65536, n, 2 * n};
    for (size_t c = 0; c < sizeof ks / sizeof *ks; c++) {
        concur_map_opts o = int_opts(ks[c], 1);
        memset(out, 0, n * sizeof *out);
        cr_assert_eq(concur_map(p, fn_lin, &o, a, n, out, NULL), 0);
        for (size_t i = 0; i < n; i++)
            if (out[i] != (int)i * 2 + 1)
                cr_assert_fail("k=%zu: out[%zu] = %d", ks[c], i, out[i]);
    }
    /* Small chunks: many tasks. */
    concur_map_opts o = int_opts(1, 1);
    cr_assert_eq(concur_map(p, fn_lin, &o, a, 5000, out, NULL), 0);
    for (size_t i = 0; i < 5000; i++)
        cr_assert_eq(out[i], (int)i * 2 + 1);
    free(a);
    free(out);
    concur_pool_destroy(p);
}

Test(map, map_into_array_reports_the_failed_index)
{
    concur_pool *p = tu_pool(3);
    size_t n = 20;
    int *a = ints(n);
    size_t ks[] = {1, 3, 5, 20};
    for (size_t c = 0; c < sizeof ks / sizeof *ks; c++) {
        int out[20];
        memset(out, 0, sizeof out);
        concur_map_opts o = int_opts(ks[c], 1);
        size_t ei = 99;
        cr_assert_eq(concur_map(p, fn_fail5, &o, a, n, out, &ei), -EIO);
        cr_assert_eq(ei, 5, "k=%zu", ks[c]);
        for (int i = 0; i < 5; i++)
            cr_assert_eq(out[i], 2 * i + 1, "k=%zu: out[%d] written before the failure", ks[c], i);
    }
    int out[1];
    concur_map_opts o = int_opts(3, 1);
    cr_assert_eq(concur_map(p, fn_lin, &o, a, 0, out, NULL), 0);
    free(a);
    concur_pool_destroy(p);
}

/* Chunks of 4 MiB of input: concur_map keeps only a few in flight (a window of two per
 * worker) and submits the next ones as the first are collected. */
Test(map, map_into_array_in_a_sliding_window)
{
    concur_pool *p = tu_pool(1);
    size_t k = (size_t)1 << 20, n = 5 * k + 3;
    int *a = ints(n);
    int *out = calloc(n, sizeof *out);
    cr_assert_not_null(out);
    concur_map_opts o = int_opts(k, 1);
    cr_assert_eq(concur_map(p, fn_lin, &o, a, n, out, NULL), 0);
    for (size_t i = 0; i < n; i++)
        if (out[i] != (int)i * 2 + 1)
            cr_assert_fail("out[%zu] = %d", i, out[i]);
    a[3 * k + 7] = 5; /* the failing value, in the 4th chunk */
    size_t ei = 0;
    cr_assert_eq(concur_map(p, fn_fail5, &o, a, n, out, &ei), -EIO);
    cr_assert_eq(ei, 5, "item 5 fails first");
    a[5] = 4;
    cr_assert_eq(concur_map(p, fn_fail5, &o, a, n, out, &ei), -EIO);
    cr_assert_eq(ei, 3 * k + 7);
    free(a);
    free(out);
    concur_pool_destroy(p);
}

/* A pool with a queue_limit: concur_map submits what fits and collects to make room. */
Test(map, map_into_array_with_queue_limit)
{
    concur_pool_opts po = {.engine = TU_ENGINE};
    po.max_workers = 2;
    po.queue_limit = 3;
    concur_pool *p = tu_pool_opts(&po);
    size_t n = 1000;
    int *a = ints(n);
    int *out = calloc(n, sizeof *out);
    cr_assert_not_null(out);
    concur_map_opts o = int_opts(7, 1);
    cr_assert_eq(concur_map(p, fn_lin, &o, a, n, out, NULL), 0);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(out[i], (int)i * 2 + 1);
    /* The lazy map too: a full queue only delays the refill. */
    o.buffer_size = 8;
    concur_map_iter *m = NULL;
    cr_assert_eq(concur_map_start(&m, p, fn_lin, &o, a, n), 0);
    check_lin(m, n, true);
    concur_map_destroy(m);
    free(a);
    free(out);
    concur_pool_destroy(p);
}

/* ---- concur_parallel_for(): the range form ------------------------------------------- */

/* What a range body shares with the test: the arrays, and counters of its calls. Every
 * chunk writes only its own indexes, so the arrays need no lock. */
typedef struct range_ctx {
    const int *in;
    int *out;
    unsigned char *visits; /* per index: times the body ran on it */
    size_t base;           /* in[i - base] for index i (ranges that do not start at 0) */
    atomic_size_t calls;   /* chunks whose body ran */
    atomic_size_t max_len; /* the longest chunk seen */
    size_t fail_from;      /* chunks starting at or after these indexes fail... */
    size_t fail_to;        /* ...up to this one (exclusive); fail_from == fail_to: none */
    bool slow_after;       /* chunks after the failing ones take a millisecond */
} range_ctx;

static int body_lin(concur_task *t, size_t begin, size_t end, void *arg)
{
    range_ctx *c = arg;
    atomic_fetch_add(&c->calls, 1);
    size_t len = end - begin, m = atomic_load(&c->max_len);
    while (len > m && !atomic_compare_exchange_weak(&c->max_len, &m, len))
        ;
    if (begin < c->fail_to && end > c->fail_from)
        return concur_task_fail(t, -EIO, "bad range [%zu, %zu)", begin, end);
    if (c->slow_after && begin >= c->fail_to)
        tu_nap();
    for (size_t i = begin; i < end; i++) {
        c->out[i - c->base] = c->in[i - c->base] * 2 + 1;
        c->visits[i - c->base]++;
    }
    return 0;
}

static range_ctx *range_ctx_new(size_t n, size_t base)
{
    range_ctx *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    c->in = ints(n ? n : 1);
    c->out = calloc(n ? n : 1, sizeof *c->out);
    c->visits = calloc(n ? n : 1, 1);
    cr_assert(c->out && c->visits);
    c->base = base;
    return c;
}

static void range_ctx_free(range_ctx *c)
{
    free((void *)c->in);
    free(c->out);
    free(c->visits);
    free(c);
}

/* Every index of [base, base + n) visited exactly once, with the serial result. */
static void check_range(const range_ctx *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (c->visits[i] != 1)
            cr_assert_fail("index %zu visited %d times", i + c->base, c->visits[i]);
        if (c->out[i] != (int)i * 2 + 1)
            cr_assert_fail("index %zu: got %d", i + c->base, c->out[i]);
    }
}

/* The range form needs workers that share the caller's memory. In the process-engine build
 * each range test checks that the pool refuses it, with nothing run, and stops there. */
static concur_pool *range_pool(int workers)
{
    concur_pool *p = tu_pool(workers);
    if (TU_PROC) {
        range_ctx *c = range_ctx_new(10, 0);
        concur_range_error e;
        int rc = concur_parallel_for(p, 0, 10, 2, body_lin, c, CONCUR_FOREVER, &e);
        cr_assert_eq(rc, CONCUR_ENOTSUP, "got %s", concur_err_name(rc));
        cr_assert_eq(atomic_load(&c->calls), 0);
        range_ctx_free(c);
        concur_pool_destroy(p);
        cr_skip_test("the range form needs a thread pool (checked: CONCUR_ENOTSUP)");
    }
    return p;
}

Test(map, range_results_over_sizes_around_the_grain)
{
    concur_pool *p = range_pool(3);
    const size_t g = 1000;
    size_t sizes[] = {0, 1, g - 1, g, g + 1, TU_SANITIZED ? 100003 : 1000003};
    size_t bases[] = {0, 17};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++)
        for (size_t b = 0; b < 2; b++) {
            size_t n = sizes[s], base = bases[b];
            range_ctx *c = range_ctx_new(n, base);
            int rc = concur_parallel_for(p, base, base + n, g, body_lin, c, CONCUR_FOREVER, NULL);
            cr_assert_eq(rc, 0, "n=%zu: %s", n, concur_err_name(rc));
            check_range(c, n);
            cr_assert_eq(atomic_load(&c->calls), concur_chunk_count(n, g), "n=%zu", n);
            cr_assert_leq(atomic_load(&c->max_len), g);
            range_ctx_free(c);
        }
    concur_pool_destroy(p);
}

Test(map, range_grain_zero_picks_a_quarter_per_worker)
{
    concur_pool *p = range_pool(4);
    /* (end - begin) / (4 * max_workers) indexes per chunk: 16 chunks of 625. */
    range_ctx *c = range_ctx_new(10000, 0);
    cr_assert_eq(concur_parallel_for(p, 0, 10000, 0, body_lin, c, CONCUR_FOREVER, NULL), 0);
    check_range(c, 10000);
    cr_assert_eq(atomic_load(&c->calls), 16);
    cr_assert_eq(atomic_load(&c->max_len), 625);
    range_ctx_free(c);
    /* Fewer indexes than 4 per worker: at least one per chunk. */
    c = range_ctx_new(3, 0);
    cr_assert_eq(concur_parallel_for(p, 0, 3, 0, body_lin, c, CONCUR_FOREVER, NULL), 0);
    check_range(c, 3);
    cr_assert_eq(atomic_load(&c->calls), 3);
    range_ctx_free(c);
    concur_pool_destroy(p);
}

/* Chunk 10 of 1000 fails: its error and message come back, with its bounds; chunks after
 * it that had not started are skipped, chunks before it all ran. The chunks after it take a
 * millisecond each, so the other worker gets through at most a few of them while chunk 10
 * is failing; without the skip they would take a second. */
Test(map, range_error_stops_the_loop_and_is_returned)
{
    concur_pool *p = range_pool(2);
    size_t n = 1000;
    range_ctx *c = range_ctx_new(n, 0);
    c->fail_from = 10;
    c->fail_to = 11;
    c->slow_after = true;
    concur_range_error e;
    int rc = concur_parallel_for(p, 0, n, 1, body_lin, c, CONCUR_FOREVER, &e);
    cr_assert_eq(rc, -EIO, "got %s", concur_err_name(rc));
    cr_assert_eq(e.begin, 10);
    cr_assert_eq(e.end, 11);
    cr_assert_str_eq(e.message, "bad range [10, 11)");
    for (size_t i = 0; i < 10; i++)
        cr_assert_eq(c->out[i], (int)i * 2 + 1, "index %zu before the failure", i);
    size_t calls = atomic_load(&c->calls);
    cr_assert_geq(calls, 11);
    cr_assert_lt(calls, 100, "%zu chunks ran their body", calls);
    range_ctx_free(c);
    concur_pool_destroy(p);
}

/* Two failing chunks: the lowest one is reported, every time; a positive return is
 * CONCUR_ETASK with the code's text. */
static int body_fail_at_5_and_50(concur_task *t, size_t begin, size_t end, void *arg)
{
    (void)end;
    (void)arg;
    if (begin == 50)
        return concur_task_fail(t, -ENOSPC, "late failure");
    if (begin == 5) {
        /* Let the later failure happen first when it can. */
        for (int i = 0; i < 20 && !concur_task_should_stop(t); i++)
            tu_nap();
        return 7;
    }
    return 0;
}

Test(map, range_reports_the_lowest_failing_chunk)
{
    concur_pool *p = range_pool(3);
    for (int k = 0; k < 3; k++) {
        concur_range_error e;
        int rc = concur_parallel_for(p, 0, 100, 5, body_fail_at_5_and_50, NULL, CONCUR_FOREVER,
                                     &e);
        cr_assert_eq(rc, CONCUR_ETASK, "got %s", concur_err_name(rc));
        cr_assert_eq(e.begin, 5);
        cr_assert_eq(e.end, 10);
        cr_assert_str_eq(e.message, concur_strerror(CONCUR_ETASK));
    }
    concur_pool_destroy(p);
}

/* A process pool refuses the range form in every build: its workers do not share the
 * caller's memory. */
Test(map, range_on_a_process_pool_is_not_supported)
{
    concur_pool_opts po = {.engine = CONCUR_ENGINE_PROCESSES, .max_workers = 1};
    concur_pool *p = NULL;
    cr_assert_eq(concur_pool_create(&p, &po), 0);
    range_ctx *c = range_ctx_new(10, 0);
    concur_range_error e;
    int rc = concur_parallel_for(p, 0, 10, 2, body_lin, c, CONCUR_FOREVER, &e);
    cr_assert_eq(rc, CONCUR_ENOTSUP, "got %s", concur_err_name(rc));
    cr_assert_str_eq(e.message, concur_strerror(CONCUR_ENOTSUP));
    cr_assert_eq(concur_parallel_for(p, 0, 0, 2, body_lin, c, CONCUR_FOREVER, NULL),
                 CONCUR_ENOTSUP, "even for an empty range");
    cr_assert_eq(atomic_load(&c->calls), 0);
    range_ctx_free(c);
    concur_pool_destroy(p);
}

Test(map, range_invalid_arguments)
{
    concur_pool *p = range_pool(2);
    range_ctx *c = range_ctx_new(10, 0);
    concur_range_error e;
    cr_assert_eq(concur_parallel_for(NULL, 0, 10, 1, body_lin, c, CONCUR_FOREVER, &e),
                 CONCUR_EINVAL);
    cr_assert_str_eq(e.message, concur_strerror(CONCUR_EINVAL));
    cr_assert_eq(concur_parallel_for(p, 0, 10, 1, NULL, c, CONCUR_FOREVER, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_parallel_for(p, 10, 9, 1, body_lin, c, CONCUR_FOREVER, NULL),
                 CONCUR_EINVAL);
    cr_assert_eq(atomic_load(&c->calls), 0);
    /* An empty range is nothing to do; a closed pool fails the first chunk. */
    cr_assert_eq(concur_parallel_for(p, 5, 5, 1, body_lin, c, CONCUR_FOREVER, NULL), 0);
    cr_assert_eq(concur_pool_shutdown(p, 0, CONCUR_FOREVER), 0);
    cr_assert_eq(concur_parallel_for(p, 0, 10, 4, body_lin, c, CONCUR_FOREVER, &e),
                 CONCUR_ECLOSED);
    cr_assert_eq(e.begin, 0);
    cr_assert_eq(e.end, 4);
    cr_assert_eq(atomic_load(&c->calls), 0);
    range_ctx_free(c);
    concur_pool_destroy(p);
}

/* The first chunk runs until it is asked to stop; the others finish at once. The timeout
 * fails the loop at that chunk, which is asked to stop and awaited before the call returns. */
typedef struct stuck_ctx {
    atomic_int stopped; /* the stuck chunk saw concur_task_should_stop() */
    atomic_int running; /* chunks inside the body */
} stuck_ctx;

static int body_first_stuck(concur_task *t, size_t begin, size_t end, void *arg)
{
    (void)end;
    stuck_ctx *s = arg;
    atomic_fetch_add(&s->running, 1);
    int rc = 0;
    if (begin == 0) {
        double dl = tu_now() + TU_SAFETY;
        while (!concur_task_should_stop(t) && tu_now() < dl)
            tu_nap();
        atomic_store(&s->stopped, concur_task_should_stop(t));
        rc = CONCUR_ECANCELED;
    }
    atomic_fetch_sub(&s->running, 1);
    return rc;
}

Test(map, range_timeout_stops_and_awaits_running_chunks)
{
    concur_pool *p = range_pool(2);
    stuck_ctx s = {0};
    concur_range_error e;
    double t0 = tu_now();
    int rc = concur_parallel_for(p, 0, 8, 1, body_first_stuck, &s, 0.05, &e);
    double dt = tu_now() - t0;
    cr_assert_eq(rc, CONCUR_ETIMEDOUT, "got %s", concur_err_name(rc));
    cr_assert_eq(e.begin, 0);
    cr_assert_eq(e.end, 1);
    cr_assert_geq(dt, 0.05 - TU_EPS);
    cr_assert_lt(dt, TU_LOOSE(0.05));
    cr_assert(atomic_load(&s.stopped), "the running chunk was asked to stop");
    cr_assert_eq(atomic_load(&s.running), 0, "no body runs after the call returned");
    concur_pool_destroy(p);
}

/* Called from a task of the same pool: with another worker free the chunks run there; with
 * max_workers 1 they never could, and the call says so instead of waiting forever. */
typedef struct nested_ctx {
    concur_pool *p;
    range_ctx *c;
    int rc;
} nested_ctx;

static int task_nested_range(concur_task *t, const void *in, size_t len)
{
    (void)t;
    nested_ctx *x = tu_in_ptr(in, len);
    x->rc = concur_parallel_for(x->p, 0, 5000, 100, body_lin, x->c, CONCUR_FOREVER, NULL);
    return 0;
}

Test(map, range_from_a_worker_of_the_same_pool)
{
    for (int workers = 1; workers <= 2; workers++) {
        concur_pool *p = range_pool(workers);
        nested_ctx x = {.p = p, .c = range_ctx_new(5000, 0), .rc = 1};
        concur_future *f = tu_submit(p, task_nested_range, TU_PTR_IN(&x));
        cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0, "workers=%d: no deadlock", workers);
        concur_future_release(f);
        if (workers == 1) {
            cr_assert_eq(x.rc, CONCUR_EDEADLK, "got %s", concur_err_name(x.rc));
            cr_assert_eq(atomic_load(&x.c->calls), 0);
            /* From outside, the one worker runs every chunk. */
            cr_assert_eq(
                concur_parallel_for(p, 0, 5000, 100, body_lin, x.c, CONCUR_FOREVER, NULL), 0);
        } else {
            cr_assert_eq(x.rc, 0, "got %s", concur_err_name(x.rc));
        }
        check_range(x.c, 5000);
        range_ctx_free(x.c);
        concur_pool_destroy(p);
    }
}

/* More chunks than the window holds: they are submitted as earlier ones finish. */
Test(map, range_many_small_chunks)
{
    concur_pool *p = range_pool(2);
    size_t n = TU_SANITIZED ? 5000 : 20000;
    range_ctx *c = range_ctx_new(n, 0);
    cr_assert_eq(concur_parallel_for(p, 0, n, 1, body_lin, c, CONCUR_FOREVER, NULL), 0);
    check_range(c, n);
    cr_assert_eq(atomic_load(&c->calls), n);
    range_ctx_free(c);
    concur_pool_destroy(p);
}

/* ---- concur_map() in place on a thread pool ------------------------------------------- */

/* concur_map of @p fn (2x + 1) over @p items (0..n-1) into @p out (which may be @p items),
 * @p chunk items per chunk: it succeeds and out[i] == 2i + 1 for every i. */
static void map_lin_checked(concur_pool *p, concur_map_fn fn, int *items, int *out, size_t n,
                            size_t chunk)
{
    concur_map_opts o = int_opts(chunk, 1);
    cr_assert_eq(concur_map(p, fn, &o, items, n, out, NULL), 0);
    for (size_t i = 0; i < n; i++)
        if (out[i] != (int)i * 2 + 1)
            cr_assert_fail("out[%zu] = %d", i, out[i]);
}

static const int *g_items;
static size_t g_nitems;
static atomic_size_t g_outside; /* items the function saw outside the caller's array */

static int fn_lin_where(concur_task *t, const void *in, void *out)
{
    const int *x = in;
    if (x < g_items || x >= g_items + g_nitems)
        atomic_fetch_add(&g_outside, 1);
    return fn_lin(t, in, out);
}

Test(map, map_into_array_reads_items_in_place_on_threads)
{
    TU_SKIP_ON_PROCESSES("worker processes see copies of the items");
    concur_pool *p = tu_pool(2);
    size_t n = 10007;
    int *a = ints(n);
    int *out = calloc(n, sizeof *out);
    cr_assert_not_null(out);
    g_items = a;
    g_nitems = n;
    map_lin_checked(p, fn_lin_where, a, out, n, 100);
    cr_assert_eq(atomic_load(&g_outside), 0);
    free(a);
    free(out);
    concur_pool_destroy(p);
}

/* Outputs written over the items themselves (out == items): each item is read before its
 * own output replaces it, on every engine. */
Test(map, map_into_the_items_array_itself)
{
    concur_pool *p = tu_pool(2);
    int *a = ints(100003);
    map_lin_checked(p, fn_lin, a, a, 100003, 1000);
    free(a);
    concur_pool_destroy(p);
}
