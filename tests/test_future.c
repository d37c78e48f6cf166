/*
 * test_future.c - concur/future.h: standalone futures (promises), states, waits, collect,
 * task errors, cancellation, callbacks, durations and the task context.
 */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

TestSuite(future, .timeout = TU_TIMEOUT, .fini = tu_fini);

static concur_future *new_future(void)
{
    concur_future *f = NULL;
    int rc = concur_future_create(&f);
    cr_assert_eq(rc, 0, "concur_future_create: %s", concur_err_name(rc));
    cr_assert_not_null(f);
    return f;
}

/* ---- standalone futures ------------------------------------------------------------ */

Test(future, standalone_starts_pending)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_state(f), CONCUR_PENDING);
    cr_assert_not(concur_future_is_done(f));
    cr_assert_eq(concur_future_id(f), 0);
    cr_assert_eq(concur_future_error(f), 0);
    cr_assert_null(concur_future_error_message(f));
    cr_assert_not(concur_future_cancel_requested(f));
    double pend = -1, run = -1;
    concur_future_durations(f, &pend, &run);
    cr_assert_eq(pend, 0.0);
    cr_assert_eq(run, 0.0);
    const void *data = (const void *)0x1;
    size_t len = 77;
    cr_assert_eq(concur_future_result(f, &data, &len), CONCUR_EAGAIN);
    cr_assert_eq(data, (const void *)0x1, "result() must not touch *data when unfinished");
    cr_assert_eq(len, 77);
    concur_future_release(f);
}

Test(future, set_result_completes_done)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_set_result(f, "hello", 5), 0);
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    cr_assert(concur_future_is_done(f));
    cr_assert_eq(concur_future_error(f), 0);
    cr_assert_null(concur_future_error_message(f));
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, 0, &data, &len), 0);
    cr_assert_eq(len, 5);
    cr_assert_arr_eq(data, "hello", 5);
    data = NULL;
    len = 0;
    cr_assert_eq(concur_future_result(f, &data, &len), 0);
    cr_assert_eq(len, 5);
    cr_assert_arr_eq(data, "hello", 5);
    concur_future_release(f);
}

Test(future, set_result_copies_the_bytes)
{
    concur_future *f = new_future();
    char buf[8] = "abcdefg";
    cr_assert_eq(concur_future_set_result(f, buf, 7), 0);
    memset(buf, 'x', sizeof buf);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, 0, &data, &len), 0);
    cr_assert_eq(len, 7);
    cr_assert_arr_eq(data, "abcdefg", 7);
    concur_future_release(f);
}

Test(future, set_error_completes_failed_with_message)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_set_error(f, -EIO, "disk on fire"), 0);
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    cr_assert(concur_future_is_done(f));
    cr_assert_eq(concur_future_error(f), -EIO);
    cr_assert_str_eq(concur_future_error_message(f), "disk on fire");
    const void *data = (const void *)0x1;
    size_t len = 99;
    cr_assert_eq(concur_future_collect(f, 0, &data, &len), -EIO);
    cr_assert_eq(concur_future_result(f, NULL, NULL), -EIO);
    concur_future_release(f);
}

Test(future, set_error_without_message_uses_code_text)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_set_error(f, CONCUR_EPIPE, NULL), 0);
    cr_assert_eq(concur_future_error(f), CONCUR_EPIPE);
    cr_assert_not_null(concur_future_error_message(f));
    cr_assert_str_eq(concur_future_error_message(f), concur_strerror(CONCUR_EPIPE));
    concur_future_release(f);
}

Test(future, set_error_nonnegative_code_becomes_etask)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_set_error(f, 5, "positive"), 0);
    cr_assert_eq(concur_future_error(f), CONCUR_ETASK);
    cr_assert_eq(concur_future_collect(f, 0, NULL, NULL), CONCUR_ETASK);
    concur_future *g = new_future();
    cr_assert_eq(concur_future_set_error(g, 0, NULL), 0);
    cr_assert_eq(concur_future_state(g), CONCUR_FAILED);
    cr_assert_eq(concur_future_error(g), CONCUR_ETASK);
    concur_future_release(f);
    concur_future_release(g);
}

Test(future, second_set_result_is_estate_and_keeps_first)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_set_result(f, "one", 3), 0);
    cr_assert_eq(concur_future_set_result(f, "two!", 4), CONCUR_ESTATE);
    cr_assert_eq(concur_future_set_error(f, -EIO, "late"), CONCUR_ESTATE);
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_result(f, &data, &len), 0);
    cr_assert_eq(len, 3);
    cr_assert_arr_eq(data, "one", 3);
    concur_future_release(f);
}

Test(future, set_after_error_is_estate_and_keeps_error)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_set_error(f, -EIO, "first"), 0);
    cr_assert_eq(concur_future_set_result(f, "x", 1), CONCUR_ESTATE);
    cr_assert_eq(concur_future_set_error(f, -EPIPE, "second"), CONCUR_ESTATE);
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    cr_assert_eq(concur_future_error(f), -EIO);
    cr_assert_str_eq(concur_future_error_message(f), "first");
    concur_future_release(f);
}

Test(future, cancel_standalone_then_set_is_estate)
{
    concur_future *f = new_future();
    cr_assert(concur_future_cancel(f));
    cr_assert_eq(concur_future_state(f), CONCUR_CANCELLED);
    cr_assert(concur_future_cancel_requested(f));
    cr_assert_eq(concur_future_set_result(f, "x", 1), CONCUR_ESTATE);
    cr_assert_eq(concur_future_set_error(f, -EIO, NULL), CONCUR_ESTATE);
    cr_assert_eq(concur_future_state(f), CONCUR_CANCELLED);
    cr_assert_eq(concur_future_error(f), CONCUR_ECANCELED);
    cr_assert_eq(concur_future_collect(f, 0, NULL, NULL), CONCUR_ECANCELED);
    concur_future_release(f);
}

Test(future, cancel_terminal_returns_false)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_set_result(f, NULL, 0), 0);
    cr_assert_not(concur_future_cancel(f));
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    concur_future_release(f);
}

Test(future, state_names)
{
    cr_assert_str_eq(concur_state_name(CONCUR_PENDING), "pending");
    cr_assert_str_eq(concur_state_name(CONCUR_RUNNING), "running");
    cr_assert_str_eq(concur_state_name(CONCUR_DONE), "done");
    cr_assert_str_eq(concur_state_name(CONCUR_FAILED), "failed");
    cr_assert_str_eq(concur_state_name(CONCUR_CANCELLED), "cancelled");
}

Test(future, retain_returns_same_and_balances)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_retain(f), f);
    concur_future_release(f);
    /* still alive: one reference left */
    cr_assert_eq(concur_future_set_result(f, "ok", 2), 0);
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    concur_future_release(f);
    concur_future_release(NULL);
}

/* ---- waits --------------------------------------------------------------------------- */

Test(future, wait_zero_on_pending_times_out_at_once)
{
    concur_future *f = new_future();
    double t0 = tu_now();
    cr_assert_eq(concur_future_wait(f, 0), CONCUR_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.0));
    cr_assert_eq(concur_future_state(f), CONCUR_PENDING);
    concur_future_release(f);
}

Test(future, wait_positive_times_out_after_timeout)
{
    concur_future *f = new_future();
    double t0 = tu_now();
    cr_assert_eq(concur_future_wait(f, 0.1), CONCUR_ETIMEDOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.1 - TU_EPS);
    cr_assert_lt(el, TU_LOOSE(0.1));
    concur_future_release(f);
}

Test(future, collect_zero_on_pending_times_out_untouched)
{
    concur_future *f = new_future();
    const void *data = (const void *)0x1;
    size_t len = 42;
    cr_assert_eq(concur_future_collect(f, 0, &data, &len), CONCUR_ETIMEDOUT);
    cr_assert_eq(data, (const void *)0x1);
    cr_assert_eq(len, 42);
    concur_future_release(f);
}

Test(future, wait_on_terminal_returns_zero_at_once)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_set_error(f, -EIO, NULL), 0);
    cr_assert_eq(concur_future_wait(f, 0), 0);
    cr_assert_eq(concur_future_wait(f, CONCUR_FOREVER), 0);
    concur_future_release(f);
}

static void *complete_later(void *arg)
{
    /* The delay is the point: the waiter must block across it. */
    tu_sleep(0.1);
    concur_future_set_result(arg, "late", 4);
    return NULL;
}

Test(future, negative_wait_blocks_until_completed_by_other_thread)
{
    concur_future *f = new_future();
    pthread_t th;
    double t0 = tu_now();
    cr_assert_eq(pthread_create(&th, NULL, complete_later, f), 0);
    cr_assert_eq(concur_future_wait(f, -1.0), 0);
    double el = tu_now() - t0;
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    cr_assert_geq(el, 0.1 - TU_EPS);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, CONCUR_FOREVER, &data, &len), 0);
    cr_assert_eq(len, 4);
    cr_assert_arr_eq(data, "late", 4);
    pthread_join(th, NULL);
    concur_future_release(f);
}

/* ---- collect on pool tasks ------------------------------------------------------------ */

static concur_future *run_one(concur_pool *p, concur_fn fn, const void *in, size_t len)
{
    concur_future *f = tu_submit(p, fn, in, len);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    return f;
}

Test(future, collect_inline_result_16_bytes)
{
    concur_pool *p = tu_pool(1);
    const char sixteen[CONCUR_INLINE_BYTES] = "0123456789abcdef";
    concur_future *f = tu_submit(p, tu_task_echo, sixteen, sizeof sixteen);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, CONCUR_FOREVER, &data, &len), 0);
    cr_assert_eq(len, CONCUR_INLINE_BYTES);
    cr_assert_arr_eq(data, sixteen, sizeof sixteen);
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(future, collect_empty_result)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = run_one(p, tu_task_noop, NULL, 0);
    const void *data = NULL;
    size_t len = 1234;
    cr_assert_eq(concur_future_collect(f, 0, &data, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(concur_future_collect(f, 0, NULL, NULL), 0);
    concur_future_release(f);
    concur_pool_destroy(p);
}

#define MB (1024u * 1024u)

static int task_big_alloc(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    unsigned char *buf = concur_task_result_alloc(t, MB);
    if (!buf)
        return -ENOMEM;
    for (size_t i = 0; i < MB; i++)
        buf[i] = (unsigned char)(i * 7u + 3u);
    return 0;
}

static int task_big_return(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    unsigned char *buf = malloc(MB);
    if (!buf)
        return -ENOMEM;
    for (size_t i = 0; i < MB; i++)
        buf[i] = (unsigned char)(i * 7u + 3u);
    int rc = concur_task_return(t, buf, MB);
    memset(buf, 0, MB); /* the result is a copy */
    free(buf);
    return rc;
}

static void check_big(concur_future *f)
{
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, CONCUR_FOREVER, &data, &len), 0);
    cr_assert_eq(len, MB);
    const unsigned char *b = data;
    size_t bad = 0;
    for (size_t i = 0; i < MB; i++)
        if (b[i] != (unsigned char)(i * 7u + 3u))
            bad++;
    cr_assert_eq(bad, 0, "%zu bytes differ", bad);
}

Test(future, collect_large_result_alloc_1mb)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = tu_submit(p, task_big_alloc, NULL, 0);
    check_big(f);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(future, collect_large_result_return_1mb)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = tu_submit(p, task_big_return, NULL, 0);
    check_big(f);
    concur_future_release(f);
    concur_pool_destroy(p);
}

static int task_return_twice(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    int rc = concur_task_return(t, "first-result-long-enough-to-be-out-of-line", 42);
    if (rc)
        return rc;
    return concur_task_return(t, "2nd", 3);
}

Test(future, task_return_replaces_earlier_result)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = tu_submit(p, task_return_twice, NULL, 0);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, CONCUR_FOREVER, &data, &len), 0);
    cr_assert_eq(len, 3);
    cr_assert_arr_eq(data, "2nd", 3);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(future, input_bytes_are_copied_at_submit)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    concur_future *blocker = tu_submit_gate(p, &g);
    char in[40];
    memset(in, 'q', sizeof in);
    concur_future *f = tu_submit(p, tu_task_echo, in, sizeof in);
    memset(in, 0, sizeof in); /* the task has not started: it must see a copy */
    tu_gate_open(&g);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, CONCUR_FOREVER, &data, &len), 0);
    cr_assert_eq(len, sizeof in);
    char want[40];
    memset(want, 'q', sizeof want);
    cr_assert_arr_eq(data, want, sizeof want);
    concur_future_release(f);
    concur_future_release(blocker);
    concur_pool_destroy(p);
    tu_gate_destroy(&g);
}

/* ---- task errors --------------------------------------------------------------------- */

static int task_fail_fmt(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    return concur_task_fail(t, -EIO, "read %s: %d", "file.txt", 42);
}

Test(future, task_fail_gives_code_and_message)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = run_one(p, task_fail_fmt, NULL, 0);
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    cr_assert_eq(concur_future_collect(f, 0, NULL, NULL), -EIO);
    cr_assert_eq(concur_future_error(f), -EIO);
    cr_assert_str_eq(concur_future_error_message(f), "read file.txt: 42");
    concur_future_release(f);
    concur_pool_destroy(p);
}

static int task_fail_nonneg(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    return concur_task_fail(t, 3, "soft");
}

Test(future, task_fail_nonnegative_code_becomes_etask)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = run_one(p, task_fail_nonneg, NULL, 0);
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    cr_assert_eq(concur_future_error(f), CONCUR_ETASK);
    cr_assert_str_eq(concur_future_error_message(f), "soft");
    concur_future_release(f);
    concur_pool_destroy(p);
}

static int task_ret_neg(concur_task *t, const void *in, size_t len)
{
    (void)t;
    (void)in;
    (void)len;
    return -ENOSPC;
}

Test(future, task_negative_return_without_message_uses_code_text)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = run_one(p, task_ret_neg, NULL, 0);
    cr_assert_eq(concur_future_collect(f, 0, NULL, NULL), -ENOSPC);
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    cr_assert_str_eq(concur_future_error_message(f), concur_strerror(-ENOSPC));
    concur_future_release(f);
    concur_pool_destroy(p);
}

static int task_ret_pos(concur_task *t, const void *in, size_t len)
{
    (void)t;
    (void)in;
    (void)len;
    return 7;
}

Test(future, task_positive_return_is_etask)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = run_one(p, task_ret_pos, NULL, 0);
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    cr_assert_eq(concur_future_collect(f, 0, NULL, NULL), CONCUR_ETASK);
    cr_assert_eq(concur_future_error(f), CONCUR_ETASK);
    concur_future_release(f);
    concur_pool_destroy(p);
}

static int task_fail_long(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    char big[5000];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    return concur_task_fail(t, -EIO, "%s", big);
}

Test(future, task_fail_message_truncated_to_1k)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = run_one(p, task_fail_long, NULL, 0);
    cr_assert_eq(concur_future_error(f), -EIO);
    const char *msg = concur_future_error_message(f);
    cr_assert_not_null(msg);
    size_t n = strlen(msg);
    cr_assert_leq(n, 1024);
    cr_assert_geq(n, 512, "message cut far below 1 KiB (%zu)", n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(msg[i], 'm');
    concur_future_release(f);
    concur_pool_destroy(p);
}

static int task_fail_after_return(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    concur_task_return(t, "partial", 7);
    return concur_task_fail(t, -EPIPE, "gave up");
}

Test(future, failed_task_has_no_result)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = run_one(p, task_fail_after_return, NULL, 0);
    const void *data = (const void *)0x1;
    size_t len = 5;
    cr_assert_eq(concur_future_collect(f, 0, &data, &len), -EPIPE);
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    cr_assert_str_eq(concur_future_error_message(f), "gave up");
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(future, task_error_fails_only_that_future)
{
    concur_pool *p = tu_pool(1);
    concur_future *bad = run_one(p, task_fail_fmt, NULL, 0);
    concur_future *good = run_one(p, tu_task_echo, "ok", 2);
    cr_assert_eq(concur_future_state(bad), CONCUR_FAILED);
    cr_assert_eq(concur_future_state(good), CONCUR_DONE);
    cr_assert_eq(concur_pool_check(p), 0);
    cr_assert_not(concur_pool_is_broken(p));
    concur_future_release(bad);
    concur_future_release(good);
    concur_pool_destroy(p);
}

/* ---- cancellation ------------------------------------------------------------------- */

Test(future, cancel_pending_never_runs)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    atomic_int ran = 0;
    concur_future *blocker = tu_submit_gate(p, &g);
    cr_assert(tu_gate_await(&g, 1, TU_SAFETY));
    concur_future *f = tu_submit(p, tu_task_count, TU_PTR_IN(&ran));
    cr_assert_eq(concur_future_state(f), CONCUR_PENDING);
    cr_assert(concur_future_cancel(f));
    cr_assert_eq(concur_future_state(f), CONCUR_CANCELLED);
    cr_assert(concur_future_cancel_requested(f));
    cr_assert_eq(concur_future_collect(f, 0, NULL, NULL), CONCUR_ECANCELED);
    cr_assert_eq(concur_future_error(f), CONCUR_ECANCELED);
    cr_assert_not(concur_future_cancel(f), "second cancel of a cancelled future");
    tu_gate_open(&g);
    concur_pool_destroy(p); /* drains the queue and joins the worker */
    cr_assert_eq(atomic_load(&ran), 0, "a cancelled task ran");
    cr_assert_eq(concur_future_state(f), CONCUR_CANCELLED);
    cr_assert_eq(concur_future_state(blocker), CONCUR_DONE);
    concur_future_release(f);
    concur_future_release(blocker);
    tu_gate_destroy(&g);
}

typedef struct stop_ctx {
    tu_gate started;
    atomic_int saw_stop;
    atomic_int before_cancel; /* should_stop at start */
} stop_ctx;

static int task_until_stop(concur_task *t, const void *in, size_t len)
{
    stop_ctx *c = tu_in_ptr(in, len);
    atomic_store(&c->before_cancel, concur_task_should_stop(t));
    tu_gate_arrive(&c->started);
    double dl = tu_now() + TU_SAFETY;
    while (!concur_task_should_stop(t) && tu_now() < dl)
        tu_nap();
    atomic_store(&c->saw_stop, concur_task_should_stop(t));
    return 0;
}

Test(future, cancel_running_flags_and_completes_done)
{
    concur_pool *p = tu_pool(1);
    stop_ctx c = {.saw_stop = 0, .before_cancel = 0};
    tu_gate_init(&c.started);
    concur_future *f = tu_submit(p, task_until_stop, TU_PTR_IN(&c));
    cr_assert(tu_gate_await(&c.started, 1, TU_SAFETY));
    cr_assert_eq(concur_future_state(f), CONCUR_RUNNING);
    cr_assert_not(concur_future_cancel(f), "cancel of a running task must return false");
    cr_assert(concur_future_cancel_requested(f));
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    cr_assert_eq(atomic_load(&c.before_cancel), 0);
    cr_assert_eq(atomic_load(&c.saw_stop), 1, "the task never saw should_stop");
    concur_future_release(f);
    concur_pool_destroy(p);
    tu_gate_destroy(&c.started);
}

Test(future, release_pending_does_not_cancel)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    atomic_int ran = 0;
    concur_future *blocker = tu_submit_gate(p, &g);
    cr_assert(tu_gate_await(&g, 1, TU_SAFETY));
    concur_future *f = tu_submit(p, tu_task_count, TU_PTR_IN(&ran));
    concur_future_release(f); /* the engine keeps its own reference */
    tu_gate_open(&g);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(&ran), 1);
    concur_future_release(blocker);
    tu_gate_destroy(&g);
}

/* ---- callbacks ----------------------------------------------------------------------- */

typedef struct cb_rec {
    atomic_int calls;
    atomic_int state_seen;
    pthread_t thread;
    atomic_int order[16];
    atomic_int norder;
} cb_rec;

static void cb_count(concur_future *f, void *arg)
{
    cb_rec *r = arg;
    atomic_store(&r->state_seen, (int)concur_future_state(f));
    r->thread = pthread_self();
    atomic_fetch_add(&r->calls, 1);
}

Test(future, callback_runs_exactly_once_on_pool_future)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    cb_rec r = {0};
    concur_future *f = tu_submit_gate(p, &g);
    cr_assert_eq(concur_future_add_callback(f, cb_count, &r), 0);
    cr_assert_eq(atomic_load(&r.calls), 0, "callback ran before completion");
    tu_gate_open(&g);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    concur_pool_destroy(p); /* joins the worker: its callbacks are over */
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert_eq(atomic_load(&r.state_seen), CONCUR_DONE);
    cr_assert_not(pthread_equal(r.thread, pthread_self()),
                  "ran in the test thread, not the worker");
    concur_future_release(f);
    tu_gate_destroy(&g);
}

typedef struct ord_arg {
    cb_rec *rec;
    int id;
} ord_arg;

static void cb_order(concur_future *f, void *arg)
{
    (void)f;
    ord_arg *a = arg;
    int i = atomic_fetch_add(&a->rec->norder, 1);
    if (i < 16)
        atomic_store(&a->rec->order[i], a->id);
}

Test(future, callbacks_run_in_insertion_order)
{
    concur_future *f = new_future();
    cb_rec r = {0};
    ord_arg args[6];
    for (int i = 0; i < 6; i++) {
        args[i] = (ord_arg){&r, i};
        cr_assert_eq(concur_future_add_callback(f, cb_order, &args[i]), 0);
    }
    cr_assert_eq(atomic_load(&r.norder), 0);
    cr_assert_eq(concur_future_set_result(f, NULL, 0), 0);
    cr_assert_eq(atomic_load(&r.norder), 6, "callbacks must have run in set_result's thread");
    for (int i = 0; i < 6; i++)
        cr_assert_eq(atomic_load(&r.order[i]), i, "position %d", i);
    concur_future_release(f);
}

Test(future, callback_on_done_future_runs_at_once_in_caller)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_set_error(f, -EIO, NULL), 0);
    cb_rec r = {0};
    cr_assert_eq(concur_future_add_callback(f, cb_count, &r), 0);
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert(pthread_equal(r.thread, pthread_self()));
    cr_assert_eq(atomic_load(&r.state_seen), CONCUR_FAILED);
    cr_assert_eq(concur_future_remove_callback(f, cb_count, &r), 0);
    concur_future_release(f);
}

Test(future, callback_runs_in_completing_thread)
{
    concur_future *f = new_future();
    cb_rec r = {0};
    cr_assert_eq(concur_future_add_callback(f, cb_count, &r), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, complete_later, f), 0);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert(pthread_equal(r.thread, th));
    cr_assert_eq(atomic_load(&r.state_seen), CONCUR_DONE);
    concur_future_release(f);
}

Test(future, callback_runs_on_cancel_in_cancelling_thread)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    concur_future *blocker = tu_submit_gate(p, &g);
    cr_assert(tu_gate_await(&g, 1, TU_SAFETY));
    concur_future *f = tu_submit(p, tu_task_noop, NULL, 0);
    cb_rec r = {0};
    cr_assert_eq(concur_future_add_callback(f, cb_count, &r), 0);
    cr_assert(concur_future_cancel(f));
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert(pthread_equal(r.thread, pthread_self()));
    cr_assert_eq(atomic_load(&r.state_seen), CONCUR_CANCELLED);
    tu_gate_open(&g);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(&r.calls), 1);
    concur_future_release(f);
    concur_future_release(blocker);
    tu_gate_destroy(&g);
}

static void cb_add(concur_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void cb_add100(concur_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 100);
}

Test(future, remove_callback_removes_every_equal_entry)
{
    concur_future *f = new_future();
    atomic_int x = 0, y = 0;
    cr_assert_eq(concur_future_add_callback(f, cb_add, &x), 0);
    cr_assert_eq(concur_future_add_callback(f, cb_add, &y), 0);
    cr_assert_eq(concur_future_add_callback(f, cb_add, &x), 0);
    cr_assert_eq(concur_future_add_callback(f, cb_add100, &x), 0);
    cr_assert_eq(concur_future_add_callback(f, cb_add, &x), 0);
    cr_assert_eq(concur_future_remove_callback(f, cb_add, &x), 3);
    cr_assert_eq(concur_future_remove_callback(f, cb_add, &x), 0);
    cr_assert_eq(concur_future_remove_callback(f, cb_add100, &y), 0);
    cr_assert_eq(concur_future_set_result(f, NULL, 0), 0);
    cr_assert_eq(atomic_load(&x), 100, "only (cb_add100, &x) should have run on x");
    cr_assert_eq(atomic_load(&y), 1);
    concur_future_release(f);
}

Test(future, remove_callback_after_it_ran_returns_zero)
{
    concur_future *f = new_future();
    atomic_int x = 0;
    cr_assert_eq(concur_future_add_callback(f, cb_add, &x), 0);
    cr_assert_eq(concur_future_set_result(f, NULL, 0), 0);
    cr_assert_eq(atomic_load(&x), 1);
    cr_assert_eq(concur_future_remove_callback(f, cb_add, &x), 0);
    concur_future_release(f);
}

typedef struct chain_ctx {
    concur_pool *pool;
    concur_future *inner;
    int rc;
    pthread_t thread;
    tu_gate done;
} chain_ctx;

static void cb_submit_same_pool(concur_future *f, void *arg)
{
    (void)f;
    chain_ctx *c = arg;
    c->thread = pthread_self();
    c->rc = concur_pool_submit(c->pool, tu_task_echo, "chained", 7, &c->inner);
    tu_gate_open(&c->done);
}

Test(future, callback_may_submit_to_same_pool)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    chain_ctx c = {.pool = p, .inner = NULL, .rc = 1};
    tu_gate_init(&c.done);
    concur_future *f = tu_submit_gate(p, &g);
    cr_assert_eq(concur_future_add_callback(f, cb_submit_same_pool, &c), 0);
    tu_gate_open(&g);
    cr_assert(tu_gate_wait_open(&c.done, TU_SAFETY), "callback never ran");
    cr_assert_eq(c.rc, 0, "submit from callback: %s", concur_err_name(c.rc));
    cr_assert_not(pthread_equal(c.thread, pthread_self()));
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(c.inner, TU_SAFETY, &data, &len), 0);
    cr_assert_eq(len, 7);
    cr_assert_arr_eq(data, "chained", 7);
    concur_future_release(c.inner);
    concur_future_release(f);
    concur_pool_destroy(p);
    tu_gate_destroy(&g);
    tu_gate_destroy(&c.done);
}

static void cb_release(concur_future *f, void *arg)
{
    cb_rec *r = arg;
    atomic_store(&r->state_seen, (int)concur_future_state(f));
    concur_future_release(f);
    atomic_fetch_add(&r->calls, 1);
}

Test(future, callback_releases_last_reference_of_pool_future)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    cb_rec r = {0};
    concur_future *f = tu_submit_gate(p, &g);
    cr_assert_eq(concur_future_add_callback(f, cb_release, &r), 0);
    f = NULL; /* the callback owns our reference now */
    tu_gate_open(&g);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert_eq(atomic_load(&r.state_seen), CONCUR_DONE);
    tu_gate_destroy(&g);
}

Test(future, callback_releases_last_reference_of_standalone_future)
{
    concur_future *f = new_future();
    cb_rec r = {0};
    atomic_int after = 0;
    cr_assert_eq(concur_future_add_callback(f, cb_release, &r), 0);
    cr_assert_eq(concur_future_add_callback(f, cb_add, &after), 0);
    cr_assert_eq(concur_future_set_result(f, "x", 1), 0);
    cr_assert_eq(atomic_load(&r.calls), 1);
    cr_assert_eq(atomic_load(&after), 1, "callbacks after the releasing one must still run");
    cr_assert_eq(atomic_load(&r.state_seen), CONCUR_DONE);
}

static void cb_inner_add(concur_future *f, void *arg)
{
    /* registering on the same future from its own callback: it is done, so at once */
    atomic_int *x = arg;
    atomic_fetch_add(x, 1);
    if (atomic_load(x) == 1)
        concur_future_add_callback(f, cb_inner_add, x);
}

Test(future, callback_may_add_callback_to_same_future)
{
    concur_future *f = new_future();
    atomic_int x = 0;
    cr_assert_eq(concur_future_add_callback(f, cb_inner_add, &x), 0);
    cr_assert_eq(concur_future_set_result(f, NULL, 0), 0);
    cr_assert_eq(atomic_load(&x), 2);
    concur_future_release(f);
}

Test(future, add_callback_null_fn_is_einval)
{
    concur_future *f = new_future();
    cr_assert_eq(concur_future_add_callback(f, NULL, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_future_set_result(f, NULL, 0), 0);
    concur_future_release(f);
}

/* ---- durations ----------------------------------------------------------------------- */

Test(future, durations_zero_until_terminal)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    concur_future *f = tu_submit_gate(p, &g);
    cr_assert(tu_gate_await(&g, 1, TU_SAFETY));
    double pend = -1, run = -1;
    concur_future_durations(f, &pend, &run);
    cr_assert_eq(pend, 0.0);
    cr_assert_eq(run, 0.0);
    concur_future_durations(f, NULL, NULL);
    tu_gate_open(&g);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    concur_future_release(f);
    concur_pool_destroy(p);
    tu_gate_destroy(&g);
}

Test(future, duration_pending_is_time_queued_behind_gate)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    concur_future *blocker = tu_submit_gate(p, &g);
    cr_assert(tu_gate_await(&g, 1, TU_SAFETY));
    concur_future *f = tu_submit(p, tu_task_noop, NULL, 0);
    tu_sleep(0.2); /* the queueing time is what is measured */
    tu_gate_open(&g);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    double pend = -1, run = -1;
    concur_future_durations(f, &pend, &run);
    cr_assert_geq(pend, 0.2 - TU_EPS);
    cr_assert_lt(pend, TU_LOOSE(0.2));
    cr_assert_geq(run, 0.0);
    cr_assert_lt(run, TU_LOOSE(0.0));
    concur_future_release(f);
    concur_future_release(blocker);
    concur_pool_destroy(p);
    tu_gate_destroy(&g);
}

Test(future, duration_running_is_task_time)
{
    concur_pool *p = tu_pool(1);
    double s = 0.15;
    concur_future *f = tu_submit(p, tu_task_sleep, &s, sizeof s);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    double pend = -1, run = -1;
    concur_future_durations(f, &pend, &run);
    cr_assert_geq(run, 0.15 - TU_EPS);
    cr_assert_lt(run, TU_LOOSE(0.15));
    cr_assert_geq(pend, 0.0);
    cr_assert_lt(pend, TU_LOOSE(0.0));
    double run_only = -1;
    concur_future_durations(f, NULL, &run_only);
    cr_assert_eq(run_only, run);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(future, duration_of_cancelled_task)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    concur_future *blocker = tu_submit_gate(p, &g);
    cr_assert(tu_gate_await(&g, 1, TU_SAFETY));
    concur_future *f = tu_submit(p, tu_task_noop, NULL, 0);
    tu_sleep(0.05); /* time spent queued before the cancel is what is measured */
    cr_assert(concur_future_cancel(f));
    double pend = -1, run = -1;
    concur_future_durations(f, &pend, &run);
    cr_assert_geq(pend, 0.05 - TU_EPS);
    cr_assert_lt(pend, TU_LOOSE(0.05));
    cr_assert_eq(run, 0.0);
    tu_gate_open(&g);
    concur_future_release(f);
    concur_future_release(blocker);
    concur_pool_destroy(p);
    tu_gate_destroy(&g);
}

/* ---- task context -------------------------------------------------------------------- */

static int task_id_result(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    uint64_t id = concur_task_id(t);
    return concur_task_return(t, &id, sizeof id);
}

static uint64_t result_u64(concur_future *f)
{
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &data, &len), 0);
    cr_assert_eq(len, sizeof(uint64_t));
    uint64_t v;
    memcpy(&v, data, sizeof v);
    return v;
}

Test(future, task_ids_count_from_one_per_pool)
{
    concur_pool *p = tu_pool(1);
    concur_pool *q = tu_pool(1);
    concur_future *f[3];
    for (int i = 0; i < 3; i++)
        f[i] = tu_submit(p, task_id_result, NULL, 0);
    concur_future *g = tu_submit(q, task_id_result, NULL, 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(concur_future_id(f[i]), (uint64_t)i + 1);
        cr_assert_eq(result_u64(f[i]), (uint64_t)i + 1, "concur_task_id in task %d", i);
    }
    cr_assert_eq(concur_future_id(g), 1);
    cr_assert_eq(result_u64(g), 1);
    for (int i = 0; i < 3; i++)
        concur_future_release(f[i]);
    concur_future_release(g);
    concur_pool_destroy(p);
    concur_pool_destroy(q);
}

static int task_worker_name(concur_task *t, const void *in, size_t len)
{
    const char *name = concur_task_worker_name(t);
    if (!name)
        return -EINVAL;
    tu_gate *g = tu_in_ptr(in, len);
    if (g)
        tu_gate_pass(g);
    return concur_task_return(t, name, strlen(name) + 1);
}

static void assert_result_str(concur_future *f, const char *want)
{
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &data, &len), 0);
    cr_assert_gt(len, 0);
    cr_assert_eq(((const char *)data)[len - 1], '\0');
    cr_assert_str_eq((const char *)data, want);
}

Test(future, worker_name_format)
{
    concur_pool_opts o = {.max_workers = 1, .name = "wn"};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = tu_submit(p, task_worker_name, NULL, 0);
    assert_result_str(f, "concur-wn-thread-worker-1");
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(future, worker_name_default_pool_name)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = tu_submit(p, task_worker_name, NULL, 0);
    assert_result_str(f, "concur-pool-thread-worker-1");
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(future, worker_names_numbered_per_worker)
{
    char name[] = "numbered";
    concur_pool_opts o = {.max_workers = 2, .name = name};
    concur_pool *p = tu_pool_opts(&o);
    memset(name, 'X', sizeof name - 1); /* the name is copied */
    tu_gate g;
    tu_gate_init(&g);
    concur_future *a = tu_submit(p, task_worker_name, TU_PTR_IN(&g));
    concur_future *b = tu_submit(p, task_worker_name, TU_PTR_IN(&g));
    cr_assert(tu_gate_await(&g, 2, TU_SAFETY), "both tasks must run at once on 2 workers");
    tu_gate_open(&g);
    const void *da = NULL, *db = NULL;
    cr_assert_eq(concur_future_collect(a, TU_SAFETY, &da, NULL), 0);
    cr_assert_eq(concur_future_collect(b, TU_SAFETY, &db, NULL), 0);
    const char *na = da, *nb = db;
    bool ok = (!strcmp(na, "concur-numbered-thread-worker-1") &&
               !strcmp(nb, "concur-numbered-thread-worker-2")) ||
              (!strcmp(na, "concur-numbered-thread-worker-2") &&
               !strcmp(nb, "concur-numbered-thread-worker-1"));
    cr_assert(ok, "names: '%s', '%s'", na, nb);
    concur_future_release(a);
    concur_future_release(b);
    concur_pool_destroy(p);
    tu_gate_destroy(&g);
}

static int task_user_ptr(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    void *u = concur_task_user(t);
    return concur_task_return(t, &u, sizeof u);
}

static void *result_ptr(concur_future *f)
{
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &data, &len), 0);
    cr_assert_eq(len, sizeof(void *));
    void *v;
    memcpy(&v, data, sizeof v);
    return v;
}

Test(future, task_user_is_pool_user_data)
{
    int marker = 0;
    concur_pool_opts o = {.max_workers = 1, .user = &marker};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = tu_submit(p, task_user_ptr, NULL, 0);
    cr_assert_eq(result_ptr(f), (void *)&marker);
    concur_future_release(f);
    concur_pool_destroy(p);

    p = tu_pool(1);
    f = tu_submit(p, task_user_ptr, NULL, 0);
    cr_assert_null(result_ptr(f));
    concur_future_release(f);
    concur_pool_destroy(p);
}

static int task_in_view(concur_task *t, const void *in, size_t len)
{
    unsigned char r[2] = {(unsigned char)(in == NULL), (unsigned char)len};
    return concur_task_return(t, r, sizeof r);
}

Test(future, empty_input_has_zero_len)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = tu_submit(p, task_in_view, NULL, 0);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &data, &len), 0);
    cr_assert_eq(len, 2);
    cr_assert_eq(((const unsigned char *)data)[1], 0);
    concur_future_release(f);
    concur_pool_destroy(p);
}

/* Only a pool completes its own futures: completing one by hand is refused and changes
 * nothing, whether the task is queued or running. */
Test(future, set_on_pool_future_is_einval)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    concur_future *running = tu_submit_gate(p, &g);
    cr_assert(tu_gate_await(&g, 1, TU_SAFETY));
    concur_future *queued = tu_submit(p, task_worker_name, NULL, 0);
    cr_assert_eq(concur_future_set_result(running, "x", 1), CONCUR_EINVAL);
    cr_assert_eq(concur_future_set_error(running, -EIO, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_future_set_result(queued, "x", 1), CONCUR_EINVAL);
    cr_assert_eq(concur_future_state(running), CONCUR_RUNNING);
    cr_assert_eq(concur_future_state(queued), CONCUR_PENDING);
    tu_gate_open(&g);
    cr_assert_eq(concur_future_collect(running, TU_SAFETY, NULL, NULL), 0);
    assert_result_str(queued, "concur-pool-thread-worker-1");
    concur_future_release(running);
    concur_future_release(queued);
    concur_pool_destroy(p);
    tu_gate_destroy(&g);
}
