/*
 * test_sets.c - concur/future.h sets of futures: wait_all, wait_any, collect_all, the
 * completion-order queue (fqueue), the as_done iterator and deadlines.
 *
 * Built twice (see testutil.h): test_sets on the thread engine, and test_sets_proc, which
 * runs the tests that wait on a pool's futures on the process engine.
 */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>

TestSuite(sets, .timeout = TU_TIMEOUT, .fini = tu_fini);

static concur_future *new_future(void)
{
    concur_future *f = NULL;
    cr_assert_eq(concur_future_create(&f), 0);
    cr_assert_not_null(f);
    return f;
}

static void new_futures(concur_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fs[i] = new_future();
}

static void release_all(concur_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        concur_future_release(fs[i]);
}

/* ---- wait_all ------------------------------------------------------------------------ */

Test(sets, wait_all_empty_returns_zero_at_once, TU_NO_ENGINE)
{
    concur_future *none[1] = {NULL};
    double t0 = tu_now();
    cr_assert_eq(concur_wait_all(none, 0, CONCUR_FOREVER), 0);
    cr_assert_eq(concur_wait_all(none, 0, 0), 0);
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.0));
}

static void submit_two_sleeps(concur_pool *p, concur_future **fs)
{
    double s = 0.1;
    fs[0] = tu_submit(p, tu_task_sleep, &s, sizeof s);
    fs[1] = tu_submit(p, tu_task_sleep, &s, sizeof s);
}

Test(sets, wait_all_times_out_one_worker_two_tasks)
{
    concur_pool *p = tu_pool(1);
    concur_future *fs[2];
    double t0 = tu_now();
    submit_two_sleeps(p, fs);
    cr_assert_eq(concur_wait_all(fs, 2, 0.1), CONCUR_ETIMEDOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.1 - TU_EPS);
    cr_assert_lt(el, TU_LOOSE(0.1));
    if (el < 0.2) /* a loaded machine may return late; then the 2nd may be done too */
        cr_assert_not(concur_future_is_done(fs[1]), "2nd task cannot be done after %.3f s", el);
    release_all(fs, 2);
    concur_pool_destroy(p);
}

Test(sets, wait_all_succeeds_with_enough_time)
{
    concur_pool *p = tu_pool(1);
    concur_future *fs[2];
    double t0 = tu_now();
    submit_two_sleeps(p, fs);
    cr_assert_eq(concur_wait_all(fs, 2, 5.0 * TU_SLOW), 0);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.2 - TU_EPS, "two 0.1 s tasks on one worker");
    cr_assert_eq(concur_future_state(fs[0]), CONCUR_DONE);
    cr_assert_eq(concur_future_state(fs[1]), CONCUR_DONE);
    release_all(fs, 2);
    concur_pool_destroy(p);
}

Test(sets, wait_all_zero_timeout_on_terminal_set, TU_NO_ENGINE)
{
    concur_future *fs[3];
    new_futures(fs, 3);
    cr_assert_eq(concur_future_set_result(fs[0], NULL, 0), 0);
    cr_assert_eq(concur_future_set_error(fs[1], -EIO, NULL), 0);
    cr_assert(concur_future_cancel(fs[2]));
    cr_assert_eq(concur_wait_all(fs, 3, 0), 0);
    release_all(fs, 3);
}

Test(sets, wait_all_zero_timeout_with_one_pending, TU_NO_ENGINE)
{
    concur_future *fs[2];
    new_futures(fs, 2);
    cr_assert_eq(concur_future_set_result(fs[0], NULL, 0), 0);
    cr_assert_eq(concur_wait_all(fs, 2, 0), CONCUR_ETIMEDOUT);
    cr_assert_eq(concur_future_set_result(fs[1], NULL, 0), 0);
    cr_assert_eq(concur_wait_all(fs, 2, 0), 0);
    release_all(fs, 2);
}

/* ---- wait_any ------------------------------------------------------------------------ */

Test(sets, wait_any_returns_index_of_finished_task)
{
    concur_pool *p = tu_pool(3);
    tu_gate *g = tu_shared_alloc(3 * sizeof *g);
    concur_future *fs[3];
    for (int i = 0; i < 3; i++) {
        tu_gate_init(&g[i]);
        fs[i] = tu_submit_gate(p, &g[i]);
    }
    for (int i = 0; i < 3; i++)
        cr_assert(tu_gate_await(&g[i], 1, TU_SAFETY));
    tu_gate_open(&g[2]);
    size_t idx = 99;
    cr_assert_eq(concur_wait_any(fs, 3, TU_SAFETY, &idx), 0);
    cr_assert_eq(idx, 2);
    cr_assert(concur_future_is_done(fs[2]));
    tu_gate_open(&g[0]);
    tu_gate_open(&g[1]);
    release_all(fs, 3);
    concur_pool_destroy(p);
    for (int i = 0; i < 3; i++)
        tu_gate_destroy(&g[i]);
}

Test(sets, wait_any_lowest_index_among_terminal, TU_NO_ENGINE)
{
    concur_future *fs[4];
    new_futures(fs, 4);
    cr_assert_eq(concur_future_set_result(fs[3], NULL, 0), 0);
    cr_assert_eq(concur_future_set_error(fs[1], -EIO, NULL), 0);
    size_t idx = 99;
    cr_assert_eq(concur_wait_any(fs, 4, 0, &idx), 0);
    cr_assert_eq(idx, 1);
    idx = 99;
    cr_assert_eq(concur_wait_any(fs, 4, CONCUR_FOREVER, &idx), 0);
    cr_assert_eq(idx, 1);
    cr_assert(concur_future_cancel(fs[0]));
    cr_assert(concur_future_cancel(fs[2]));
    release_all(fs, 4);
}

static void *complete_from_thread(void *arg)
{
    concur_future_set_result(arg, "t", 1);
    return NULL;
}

Test(sets, wait_any_blocks_until_one_completes, TU_NO_ENGINE)
{
    concur_future *fs[3];
    new_futures(fs, 3);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, complete_from_thread, fs[1]), 0);
    size_t idx = 99;
    cr_assert_eq(concur_wait_any(fs, 3, CONCUR_FOREVER, &idx), 0);
    cr_assert_eq(idx, 1);
    pthread_join(th, NULL);
    concur_future_cancel(fs[0]);
    concur_future_cancel(fs[2]);
    release_all(fs, 3);
}

Test(sets, wait_any_times_out, TU_NO_ENGINE)
{
    concur_future *fs[2];
    new_futures(fs, 2);
    size_t idx = 99;
    double t0 = tu_now();
    cr_assert_eq(concur_wait_any(fs, 2, 0.1, &idx), CONCUR_ETIMEDOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.1 - TU_EPS);
    cr_assert_lt(el, TU_LOOSE(0.1));
    cr_assert_eq(concur_wait_any(fs, 2, 0, &idx), CONCUR_ETIMEDOUT);
    release_all(fs, 2);
}

Test(sets, wait_any_empty_is_einval, TU_NO_ENGINE)
{
    concur_future *none[1] = {NULL};
    size_t idx = 0;
    cr_assert_eq(concur_wait_any(none, 0, 0, &idx), CONCUR_EINVAL);
    cr_assert_eq(concur_wait_any(none, 0, CONCUR_FOREVER, &idx), CONCUR_EINVAL);
}

Test(sets, null_entries_are_einval, TU_NO_ENGINE)
{
    concur_future *fs[2] = {new_future(), NULL};
    size_t idx = 0;
    cr_assert_eq(concur_wait_all(fs, 2, 0), CONCUR_EINVAL);
    cr_assert_eq(concur_wait_any(fs, 2, 0, &idx), CONCUR_EINVAL);
    cr_assert_eq(concur_collect_all(fs, 2, 0, &idx), CONCUR_EINVAL);
    concur_as_done *it = NULL;
    cr_assert_eq(concur_as_done_create(&it, fs, 2, false, 0), CONCUR_EINVAL);
    concur_future_release(fs[0]);
}

/* ---- collect_all ----------------------------------------------------------------------- */

Test(sets, collect_all_results_in_input_order)
{
    concur_pool *p = tu_pool(3);
    tu_gate *g = tu_shared_alloc(3 * sizeof *g);
    concur_future *block[3], *fs[3];
    for (int i = 0; i < 3; i++)
        tu_gate_init(&g[i]);
    /* 3 echo tasks, each chained after its own gate task via a 3-worker pool:
     * release the gates in reverse order so they complete 2, 1, 0. */
    for (int i = 0; i < 3; i++)
        block[i] = tu_submit_gate(p, &g[i]);
    for (int i = 0; i < 3; i++)
        cr_assert(tu_gate_await(&g[i], 1, TU_SAFETY));
    for (int i = 0; i < 3; i++) {
        char c = (char)('a' + i);
        fs[i] = tu_submit(p, tu_task_echo, &c, 1);
    }
    for (int i = 2; i >= 0; i--)
        tu_gate_open(&g[i]);
    size_t fi = 77;
    cr_assert_eq(concur_collect_all(fs, 3, TU_SAFETY, &fi), 0);
    for (int i = 0; i < 3; i++) {
        const void *data = NULL;
        size_t len = 0;
        cr_assert_eq(concur_future_result(fs[i], &data, &len), 0);
        cr_assert_eq(len, 1);
        cr_assert_eq(*(const char *)data, 'a' + i);
    }
    release_all(fs, 3);
    release_all(block, 3);
    concur_pool_destroy(p);
    for (int i = 0; i < 3; i++)
        tu_gate_destroy(&g[i]);
}

Test(sets, collect_all_first_error_in_input_order, TU_NO_ENGINE)
{
    concur_future *fs[4];
    new_futures(fs, 4);
    /* completed in reverse order: the report must still follow input order */
    cr_assert_eq(concur_future_set_error(fs[3], -EPIPE, "later"), 0);
    cr_assert_eq(concur_future_set_error(fs[2], -ENOSPC, "third"), 0);
    cr_assert_eq(concur_future_set_error(fs[1], -EIO, "second"), 0);
    cr_assert_eq(concur_future_set_result(fs[0], "ok", 2), 0);
    size_t fi = 77;
    cr_assert_eq(concur_collect_all(fs, 4, TU_SAFETY, &fi), -EIO);
    cr_assert_eq(fi, 1);
    cr_assert_eq(concur_collect_all(fs, 4, 0, NULL), -EIO);
    release_all(fs, 4);
}

Test(sets, collect_all_cancelled_is_ecanceled, TU_NO_ENGINE)
{
    concur_future *fs[3];
    new_futures(fs, 3);
    cr_assert_eq(concur_future_set_error(fs[2], -EIO, NULL), 0);
    cr_assert(concur_future_cancel(fs[1]));
    cr_assert_eq(concur_future_set_result(fs[0], NULL, 0), 0);
    size_t fi = 77;
    cr_assert_eq(concur_collect_all(fs, 3, 0, &fi), CONCUR_ECANCELED);
    cr_assert_eq(fi, 1);
    release_all(fs, 3);
}

Test(sets, collect_all_times_out, TU_NO_ENGINE)
{
    concur_future *fs[2];
    new_futures(fs, 2);
    cr_assert_eq(concur_future_set_result(fs[0], NULL, 0), 0);
    size_t fi = 77;
    double t0 = tu_now();
    cr_assert_eq(concur_collect_all(fs, 2, 0.1, &fi), CONCUR_ETIMEDOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.1 - TU_EPS);
    cr_assert_lt(el, TU_LOOSE(0.1));
    cr_assert_eq(concur_collect_all(fs, 2, 0, &fi), CONCUR_ETIMEDOUT);
    concur_future_cancel(fs[1]);
    release_all(fs, 2);
}

Test(sets, collect_all_empty_returns_zero, TU_NO_ENGINE)
{
    concur_future *none[1] = {NULL};
    cr_assert_eq(concur_collect_all(none, 0, 0, NULL), 0);
}

/* ---- fqueue -------------------------------------------------------------------------- */

static concur_fqueue *new_queue(void)
{
    concur_fqueue *q = NULL;
    cr_assert_eq(concur_fqueue_create(&q), 0);
    cr_assert_not_null(q);
    return q;
}

Test(sets, fqueue_get_on_empty_is_eagain_at_once_even_blocking, TU_NO_ENGINE)
{
    concur_fqueue *q = new_queue();
    concur_future *out = (concur_future *)0x1;
    double t0 = tu_now();
    cr_assert_eq(concur_fqueue_get(q, CONCUR_FOREVER, &out), CONCUR_EAGAIN);
    cr_assert_eq(concur_fqueue_get(q, 5.0, &out), CONCUR_EAGAIN);
    cr_assert_eq(concur_fqueue_get(q, 0, &out), CONCUR_EAGAIN);
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.0));
    cr_assert_eq(concur_fqueue_size(q), 0);
    concur_fqueue_destroy(q);
}

Test(sets, fqueue_gives_completion_order, TU_NO_ENGINE)
{
    concur_fqueue *q = new_queue();
    concur_future *fs[3];
    new_futures(fs, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(concur_fqueue_put(q, fs[i]), 0);
    cr_assert_eq(concur_fqueue_size(q), 3);
    cr_assert_eq(concur_future_set_result(fs[2], NULL, 0), 0);
    cr_assert_eq(concur_future_set_error(fs[0], -EIO, NULL), 0);
    cr_assert(concur_future_cancel(fs[1]));
    int want[3] = {2, 0, 1};
    for (int k = 0; k < 3; k++) {
        concur_future *out = NULL;
        cr_assert_eq(concur_fqueue_get(q, 0, &out), 0);
        cr_assert_eq(out, fs[want[k]], "get #%d", k);
        cr_assert_eq(concur_fqueue_size(q), (size_t)(2 - k));
        concur_future_release(out); /* the queue's reference, now ours */
    }
    concur_future *out = NULL;
    cr_assert_eq(concur_fqueue_get(q, CONCUR_FOREVER, &out), CONCUR_EAGAIN);
    release_all(fs, 3);
    concur_fqueue_destroy(q);
}

Test(sets, fqueue_blocking_get_follows_gates)
{
    concur_pool *p = tu_pool(3);
    concur_fqueue *q = new_queue();
    tu_gate *g = tu_shared_alloc(3 * sizeof *g);
    concur_future *fs[3];
    for (int i = 0; i < 3; i++) {
        tu_gate_init(&g[i]);
        fs[i] = tu_submit_gate(p, &g[i]);
        cr_assert_eq(concur_fqueue_put(q, fs[i]), 0);
    }
    int order[3] = {1, 2, 0};
    for (int k = 0; k < 3; k++) {
        tu_gate_open(&g[order[k]]);
        concur_future *out = NULL;
        cr_assert_eq(concur_fqueue_get(q, TU_SAFETY, &out), 0);
        cr_assert_eq(out, fs[order[k]], "get #%d", k);
        concur_future_release(out);
    }
    cr_assert_eq(concur_fqueue_size(q), 0);
    release_all(fs, 3);
    concur_fqueue_destroy(q);
    concur_pool_destroy(p);
    for (int i = 0; i < 3; i++)
        tu_gate_destroy(&g[i]);
}

Test(sets, fqueue_nonblocking_get_while_nothing_done, TU_NO_ENGINE)
{
    concur_fqueue *q = new_queue();
    concur_future *f = new_future();
    cr_assert_eq(concur_fqueue_put(q, f), 0);
    concur_future *out = (concur_future *)0x1;
    double t0 = tu_now();
    cr_assert_eq(concur_fqueue_get(q, 0, &out), CONCUR_ETIMEDOUT, "an expired wait");
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.0));
    cr_assert_eq(concur_fqueue_size(q), 1);
    concur_fqueue_destroy(q); /* releases its reference, does not cancel */
    cr_assert_eq(concur_future_state(f), CONCUR_PENDING);
    concur_future_release(f);
}

Test(sets, fqueue_blocking_get_times_out, TU_NO_ENGINE)
{
    concur_fqueue *q = new_queue();
    concur_future *f = new_future();
    cr_assert_eq(concur_fqueue_put(q, f), 0);
    concur_future *out = (concur_future *)0x1;
    double t0 = tu_now();
    cr_assert_eq(concur_fqueue_get(q, 0.1, &out), CONCUR_ETIMEDOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.1 - TU_EPS);
    cr_assert_lt(el, TU_LOOSE(0.1));
    cr_assert_eq(concur_fqueue_size(q), 1);
    cr_assert_eq(concur_future_set_result(f, NULL, 0), 0);
    cr_assert_eq(concur_fqueue_get(q, 0, &out), 0);
    cr_assert_eq(out, f);
    concur_future_release(out);
    concur_future_release(f);
    concur_fqueue_destroy(q);
}

Test(sets, fqueue_put_done_future_is_ready_at_once, TU_NO_ENGINE)
{
    concur_fqueue *q = new_queue();
    concur_future *f = new_future();
    cr_assert_eq(concur_future_set_result(f, NULL, 0), 0);
    cr_assert_eq(concur_fqueue_put(q, f), 0);
    concur_future *out = NULL;
    cr_assert_eq(concur_fqueue_get(q, 0, &out), 0);
    cr_assert_eq(out, f);
    concur_future_release(out);
    concur_future_release(f);
    concur_fqueue_destroy(q);
}

Test(sets, fqueue_keeps_its_own_reference)
{
    concur_pool *p = tu_pool(1);
    concur_fqueue *q = new_queue();
    concur_future *f = tu_submit(p, tu_task_echo, "keep", 4);
    cr_assert_eq(concur_fqueue_put(q, f), 0);
    concur_future_release(f); /* only the queue holds it now */
    concur_future *out = NULL;
    cr_assert_eq(concur_fqueue_get(q, TU_SAFETY, &out), 0);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(out, 0, &data, &len), 0);
    cr_assert_eq(len, 4);
    cr_assert_arr_eq(data, "keep", 4);
    concur_future_release(out);
    concur_fqueue_destroy(q);
    concur_pool_destroy(p);
}

Test(sets, fqueue_size_counts_finished_and_unfinished, TU_NO_ENGINE)
{
    concur_fqueue *q = new_queue();
    concur_future *fs[3];
    new_futures(fs, 3);
    cr_assert_eq(concur_fqueue_size(q), 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(concur_fqueue_put(q, fs[i]), 0);
        cr_assert_eq(concur_fqueue_size(q), (size_t)i + 1);
    }
    cr_assert_eq(concur_future_set_result(fs[1], NULL, 0), 0);
    cr_assert_eq(concur_fqueue_size(q), 3);
    concur_future *out = NULL;
    cr_assert_eq(concur_fqueue_get(q, 0, &out), 0);
    cr_assert_eq(concur_fqueue_size(q), 2);
    concur_future_release(out);
    concur_fqueue_destroy(q); /* two still inside: released */
    concur_future_cancel(fs[0]);
    concur_future_cancel(fs[2]);
    release_all(fs, 3);
}

/* ---- as_done ------------------------------------------------------------------------- */

/* Scratch outputs for as_done_next calls whose outputs are not inspected. */
static concur_future *f_;
static size_t i_;

static concur_as_done *new_as_done(concur_future **fs, size_t n, bool keep, double timeout)
{
    concur_as_done *it = NULL;
    cr_assert_eq(concur_as_done_create(&it, fs, n, keep, timeout), 0);
    cr_assert_not_null(it);
    return it;
}

Test(sets, as_done_completion_order_from_gates)
{
    concur_pool *p = tu_pool(3);
    tu_gate *g = tu_shared_alloc(3 * sizeof *g);
    concur_future *fs[3];
    for (int i = 0; i < 3; i++) {
        tu_gate_init(&g[i]);
        fs[i] = tu_submit_gate(p, &g[i]);
    }
    concur_as_done *it = new_as_done(fs, 3, false, CONCUR_FOREVER);
    for (int k = 2; k >= 0; k--) {
        tu_gate_open(&g[k]);
        concur_future *f = NULL;
        size_t idx = 99;
        cr_assert_eq(concur_as_done_next(it, &f, &idx), 1);
        cr_assert_eq(idx, (size_t)k);
        cr_assert_eq(f, fs[k]);
    }
    concur_future *f = NULL;
    size_t idx = 99;
    cr_assert_eq(concur_as_done_next(it, &f, &idx), 0);
    concur_as_done_destroy(it);
    release_all(fs, 3);
    concur_pool_destroy(p);
    for (int i = 0; i < 3; i++)
        tu_gate_destroy(&g[i]);
}

Test(sets, as_done_records_completion_order_between_calls, TU_NO_ENGINE)
{
    concur_future *fs[3];
    new_futures(fs, 3);
    concur_as_done *it = new_as_done(fs, 3, false, CONCUR_FOREVER);
    cr_assert_eq(concur_future_set_result(fs[2], NULL, 0), 0);
    cr_assert_eq(concur_future_set_result(fs[1], NULL, 0), 0);
    cr_assert_eq(concur_future_set_result(fs[0], NULL, 0), 0);
    size_t want[3] = {2, 1, 0};
    for (int k = 0; k < 3; k++) {
        concur_future *f = NULL;
        size_t idx = 99;
        cr_assert_eq(concur_as_done_next(it, &f, &idx), 1);
        cr_assert_eq(idx, want[k], "item %d", k);
        cr_assert_eq(f, fs[want[k]]);
    }
    cr_assert_eq(concur_as_done_next(it, &f_, &i_), 0);
    concur_as_done_destroy(it);
    release_all(fs, 3);
}

Test(sets, as_done_keep_order_gives_input_order, TU_NO_ENGINE)
{
    concur_future *fs[3];
    new_futures(fs, 3);
    concur_as_done *it = new_as_done(fs, 3, true, CONCUR_FOREVER);
    cr_assert_eq(concur_future_set_result(fs[2], NULL, 0), 0);
    cr_assert_eq(concur_future_set_result(fs[1], NULL, 0), 0);
    cr_assert_eq(concur_future_set_result(fs[0], NULL, 0), 0);
    for (size_t k = 0; k < 3; k++) {
        concur_future *f = NULL;
        size_t idx = 99;
        cr_assert_eq(concur_as_done_next(it, &f, &idx), 1);
        cr_assert_eq(idx, k);
        cr_assert_eq(f, fs[k]);
    }
    size_t idx = 99;
    cr_assert_eq(concur_as_done_next(it, &f_, &idx), 0);
    concur_as_done_destroy(it);
    release_all(fs, 3);
}

Test(sets, as_done_keep_order_waits_for_first)
{
    concur_pool *p = tu_pool(2);
    tu_gate *g = tu_shared_alloc(2 * sizeof *g);
    concur_future *fs[2];
    for (int i = 0; i < 2; i++) {
        tu_gate_init(&g[i]);
        fs[i] = tu_submit_gate(p, &g[i]);
    }
    tu_gate_open(&g[1]);
    cr_assert_eq(concur_future_wait(fs[1], TU_SAFETY), 0);
    concur_as_done *it = new_as_done(fs, 2, true, 0.1);
    concur_future *f = NULL;
    size_t idx = 99;
    cr_assert_eq(concur_as_done_next(it, &f, &idx), CONCUR_ETIMEDOUT,
                 "keep_order must not yield index 1 before index 0");
    concur_as_done_destroy(it);
    tu_gate_open(&g[0]);
    release_all(fs, 2);
    concur_pool_destroy(p);
    for (int i = 0; i < 2; i++)
        tu_gate_destroy(&g[i]);
}

Test(sets, as_done_total_timeout, TU_NO_ENGINE)
{
    concur_future *fs[2];
    new_futures(fs, 2);
    cr_assert_eq(concur_future_set_result(fs[0], NULL, 0), 0);
    double t0 = tu_now();
    concur_as_done *it = new_as_done(fs, 2, false, 0.1);
    concur_future *f = NULL;
    size_t idx = 99;
    cr_assert_eq(concur_as_done_next(it, &f, &idx), 1);
    cr_assert_eq(idx, 0);
    cr_assert_eq(concur_as_done_next(it, &f, &idx), CONCUR_ETIMEDOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.1 - TU_EPS);
    cr_assert_lt(el, TU_LOOSE(0.1));
    double t1 = tu_now();
    cr_assert_eq(concur_as_done_next(it, &f, &idx), CONCUR_ETIMEDOUT, "expiry is sticky");
    cr_assert_lt(tu_now() - t1, TU_LOOSE(0.0));
    concur_as_done_destroy(it);
    concur_future_cancel(fs[1]);
    release_all(fs, 2);
}

Test(sets, as_done_timeout_is_for_the_whole_iteration)
{
    concur_pool *p = tu_pool(1);
    double s = 0.1;
    concur_future *fs[3];
    for (int i = 0; i < 3; i++)
        fs[i] = tu_submit(p, tu_task_sleep, &s, sizeof s);
    /* one worker: results at ~0.1, ~0.2, ~0.3 s; a 0.25 s total cannot cover all three,
     * though each single step is shorter than 0.25 s. */
    double t0 = tu_now();
    concur_as_done *it = new_as_done(fs, 3, false, 0.25);
    int got = 0, rc;
    while ((rc = concur_as_done_next(it, &f_, &i_)) == 1)
        got++;
    double el = tu_now() - t0;
    cr_assert_eq(rc, CONCUR_ETIMEDOUT);
    cr_assert_lt(got, 3);
    cr_assert_geq(el, 0.25 - TU_EPS);
    concur_as_done_destroy(it);
    release_all(fs, 3);
    concur_pool_destroy(p);
}

Test(sets, as_done_empty_ends_at_once, TU_NO_ENGINE)
{
    concur_future *none[1] = {NULL};
    double t0 = tu_now();
    concur_as_done *it = new_as_done(none, 0, false, CONCUR_FOREVER);
    cr_assert_eq(concur_as_done_next(it, &f_, &i_), 0);
    concur_as_done_destroy(it);
    it = new_as_done(none, 0, true, 0);
    cr_assert_eq(concur_as_done_next(it, &f_, &i_), 0);
    concur_as_done_destroy(it);
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.0));
    concur_as_done_destroy(NULL);
}

Test(sets, as_done_zero_timeout_yields_done_ones_without_blocking, TU_NO_ENGINE)
{
    concur_future *fs[3];
    new_futures(fs, 3);
    cr_assert_eq(concur_future_set_result(fs[1], NULL, 0), 0);
    concur_as_done *it = new_as_done(fs, 3, false, 0);
    size_t idx = 99;
    double t0 = tu_now();
    cr_assert_eq(concur_as_done_next(it, &f_, &idx), 1);
    cr_assert_eq(idx, 1);
    cr_assert_eq(concur_as_done_next(it, &f_, &idx), CONCUR_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.0));
    concur_as_done_destroy(it);
    concur_future_cancel(fs[0]);
    concur_future_cancel(fs[2]);
    release_all(fs, 3);
}

/* ---- deadlines ----------------------------------------------------------------------- */

Test(sets, now_is_monotonic_seconds, TU_NO_ENGINE)
{
    double a = concur_now();
    tu_sleep(0.02);
    double b = concur_now();
    cr_assert_geq(b - a, 0.02 - TU_EPS);
    cr_assert_lt(b - a, TU_LOOSE(0.02));
}

Test(sets, deadline_negative_is_none_and_remaining_forever, TU_NO_ENGINE)
{
    double d = concur_deadline(-1.0);
    cr_assert_lt(d, 0.0);
    cr_assert_eq(concur_remaining(d), CONCUR_FOREVER);
    cr_assert_eq(concur_remaining(-5.0), CONCUR_FOREVER);
    cr_assert_lt(concur_deadline(-0.5), 0.0);
}

Test(sets, deadline_zero_remaining_zero, TU_NO_ENGINE)
{
    cr_assert_eq(concur_remaining(concur_deadline(0.0)), 0.0);
}

Test(sets, deadline_expired_remaining_zero, TU_NO_ENGINE)
{
    double d = concur_deadline(0.01);
    tu_sleep(0.03); /* the expiry is the point */
    cr_assert_eq(concur_remaining(d), 0.0);
}

Test(sets, deadline_fresh_remaining_positive, TU_NO_ENGINE)
{
    double d = concur_deadline(10.0);
    double r = concur_remaining(d);
    cr_assert_gt(r, 0.0);
    cr_assert_leq(r, 10.0);
    cr_assert_gt(r, 10.0 - TU_LOOSE(0.0));
    double now = concur_now();
    cr_assert_geq(d, now);
    cr_assert_leq(d - now, 10.0);
}
