/*
 * test_errors.c - concur/error.h codes, names and messages, and bad input everywhere in
 * future.h and pool.h: each call returns its documented code and never crashes.
 */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>

TestSuite(errors, .timeout = TU_TIMEOUT, .fini = tu_fini);

typedef struct code_row {
    int code;
    const char *name;
    const char *msg;
} code_row;

static const code_row rows[] = {
#define ROW_(name, value, msg) {CONCUR_##name, #name, msg},
    CONCUR_ERRNO_MAP(ROW_)
#undef ROW_
};
#define NROWS (sizeof rows / sizeof rows[0])

/* ---- codes -------------------------------------------------------------------------- */

Test(errors, errno_codes_are_negated_errno)
{
    cr_assert_eq(CONCUR_EINVAL, -EINVAL);
    cr_assert_eq(CONCUR_ENOMEM, -ENOMEM);
    cr_assert_eq(CONCUR_EAGAIN, -EAGAIN);
    cr_assert_eq(CONCUR_EBUSY, -EBUSY);
    cr_assert_eq(CONCUR_EDEADLK, -EDEADLK);
    cr_assert_eq(CONCUR_ETIMEDOUT, -ETIMEDOUT);
    cr_assert_eq(CONCUR_ECANCELED, -ECANCELED);
    cr_assert_eq(CONCUR_ENOENT, -ENOENT);
    cr_assert_eq(CONCUR_EACCES, -EACCES);
    cr_assert_eq(CONCUR_EPIPE, -EPIPE);
    cr_assert_eq(CONCUR_ENOSPC, -ENOSPC);
    cr_assert_eq(CONCUR_EIO, -EIO);
    cr_assert_eq(CONCUR_EINTR, -EINTR);
}

Test(errors, concur_codes_below_errno_max)
{
    int own[] = {CONCUR_ECLOSED,    CONCUR_EBROKEN, CONCUR_EINITIALIZER,
                 CONCUR_EFINALIZER, CONCUR_EFULL,   CONCUR_ETASKTIMEOUT,
                 CONCUR_ESTATE,     CONCUR_ETASK,   CONCUR_ECRASHED};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        cr_assert_lt(own[i], CONCUR_ERRNO_MAX, "code %d", own[i]);
}

Test(errors, every_code_has_its_message)
{
    for (size_t i = 0; i < NROWS; i++) {
        const char *m = concur_strerror(rows[i].code);
        cr_assert_not_null(m, "%s", rows[i].name);
        cr_assert_str_eq(m, rows[i].msg, "concur_strerror(CONCUR_%s)", rows[i].name);
    }
}

Test(errors, every_code_has_its_distinct_name)
{
    for (size_t i = 0; i < NROWS; i++) {
        const char *n = concur_err_name(rows[i].code);
        cr_assert_not_null(n);
        cr_assert_str_eq(n, rows[i].name);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(n, concur_err_name(rows[j].code));
        cr_assert_str_neq(n, "UNKNOWN");
    }
}

Test(errors, codes_are_distinct)
{
    for (size_t i = 0; i < NROWS; i++)
        for (size_t j = 0; j < i; j++)
            cr_assert_neq(rows[i].code, rows[j].code, "%s vs %s", rows[i].name, rows[j].name);
}

Test(errors, plain_errno_gives_strerror_text)
{
    int plain[] = {ERANGE, EEXIST, ENOTDIR, EMFILE, ECHILD};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        char want[256];
        snprintf(want, sizeof want, "%s", strerror(plain[i]));
        const char *m = concur_strerror(-plain[i]);
        cr_assert_not_null(m);
        cr_assert_str_eq(m, want, "errno %d", plain[i]);
        cr_assert_not_null(concur_err_name(-plain[i]));
    }
}

Test(errors, unknown_codes)
{
    int unknown[] = {-10050, -12345, -99999, -2000000000};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        cr_assert_str_eq(concur_strerror(unknown[i]), "unknown error", "code %d", unknown[i]);
        cr_assert_str_eq(concur_err_name(unknown[i]), "UNKNOWN", "code %d", unknown[i]);
    }
}

Test(errors, positive_and_zero_codes_do_not_crash)
{
    cr_assert_not_null(concur_strerror(0));
    cr_assert_not_null(concur_err_name(0));
    cr_assert_not_null(concur_strerror(5));
    cr_assert_not_null(concur_err_name(5));
    cr_assert_not_null(concur_strerror(-2147483647 - 1));
    cr_assert_not_null(concur_err_name(-2147483647 - 1));
}

Test(errors, version_and_cpu_count)
{
    cr_assert_str_eq(concur_version(), "0.1.0");
    cr_assert_geq(concur_cpu_count(), 1);
}

/* ---- bad input: pools ----------------------------------------------------------------- */

Test(errors, pool_create_null_out)
{
    cr_assert_eq(concur_pool_create(NULL, NULL), CONCUR_EINVAL);
    concur_pool_opts o = {.max_workers = 2};
    cr_assert_eq(concur_pool_create(NULL, &o), CONCUR_EINVAL);
}

Test(errors, pool_create_bad_options)
{
    concur_pool *p = NULL;
    concur_pool_opts o = {.max_workers = -3};
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    cr_assert_null(p);
    concur_pool_opts e = {.engine = (concur_engine)77};
    cr_assert_eq(concur_pool_create(&p, &e), CONCUR_EINVAL, "unknown engine");
    cr_assert_null(p);
}

Test(errors, null_pool_everywhere)
{
    concur_future *f = (concur_future *)0x1;
    cr_assert_eq(concur_pool_submit(NULL, tu_task_noop, NULL, 0, &f), CONCUR_EINVAL);
    cr_assert_eq(f, (concur_future *)0x1);
    concur_input in = {NULL, 0};
    cr_assert_eq(concur_pool_submit_batch(NULL, tu_task_noop, &in, 1, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_pool_run(NULL, tu_task_noop, NULL, 0, 0, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_pool_check(NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_pool_test(NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_pool_spawn_workers(NULL, 1), CONCUR_EINVAL);
    cr_assert_eq(concur_pool_join(NULL, 0), CONCUR_EINVAL);
    cr_assert_eq(concur_pool_shutdown(NULL, 0, 0), CONCUR_EINVAL);
    concur_pool_destroy(NULL);
    cr_assert_null(concur_pool_error_message(NULL));
    cr_assert_not(concur_pool_is_broken(NULL));
    cr_assert_eq(concur_pool_cancelled(NULL, 0, &f), 0);
}

Test(errors, submit_null_fn)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = (concur_future *)0x1;
    cr_assert_eq(concur_pool_submit(p, NULL, NULL, 0, &f), CONCUR_EINVAL);
    cr_assert_eq(f, (concur_future *)0x1);
    concur_input in = {"a", 1};
    cr_assert_eq(concur_pool_submit_batch(p, NULL, &in, 1, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_pool_run(p, NULL, NULL, 0, 0, NULL), CONCUR_EINVAL);
    cr_assert_eq(tu_counts(p).pending, 0);
    cr_assert_eq(concur_pool_check(p), 0, "bad input does not break the pool");
    concur_pool_destroy(p);
}

Test(errors, submit_null_input_with_length)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = (concur_future *)0x1;
    cr_assert_eq(concur_pool_submit(p, tu_task_noop, NULL, 4, &f), CONCUR_EINVAL);
    cr_assert_eq(f, (concur_future *)0x1);
    cr_assert_eq(concur_pool_run(p, tu_task_noop, NULL, 4, 0, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_pool_submit(p, tu_task_noop, NULL, 0, &f), 0, "NULL with len 0 is OK");
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(errors, submit_batch_bad_input_queues_nothing)
{
    concur_pool *p = tu_pool(1);
    tu_gate g;
    tu_gate_init(&g);
    atomic_int ran = 0;
    concur_future *a = tu_submit_gate(p, &g);
    cr_assert(tu_gate_await(&g, 1, TU_SAFETY));
    concur_input ins[3] = {{TU_PTR_IN(&ran)}, {NULL, 8}, {TU_PTR_IN(&ran)}};
    concur_future *sentinel = (concur_future *)0x1;
    concur_future *out[3] = {sentinel, sentinel, sentinel};
    cr_assert_eq(concur_pool_submit_batch(p, tu_task_count, ins, 3, out), CONCUR_EINVAL);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(out[i], sentinel);
    cr_assert_eq(concur_pool_submit_batch(p, tu_task_count, NULL, 2, out), CONCUR_EINVAL);
    cr_assert_eq(tu_counts(p).pending, 0);
    tu_gate_open(&g);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(&ran), 0, "a rejected batch must not run any task");
    concur_future_release(a);
    tu_gate_destroy(&g);
}

Test(errors, calls_after_shutdown_are_eclosed)
{
    concur_pool *p = tu_pool(1);
    cr_assert_eq(concur_pool_shutdown(p, CONCUR_SHUTDOWN_CANCEL, CONCUR_FOREVER), 0);
    cr_assert_eq(concur_pool_submit(p, tu_task_noop, NULL, 0, NULL), CONCUR_ECLOSED);
    concur_input in = {NULL, 0};
    cr_assert_eq(concur_pool_submit_batch(p, tu_task_noop, &in, 1, NULL), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_run(p, tu_task_noop, NULL, 0, 0, NULL), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_check(p), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_spawn_workers(p, 2), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_test(p), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_join(p, 0), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_shutdown(p, 0, 0), CONCUR_ECLOSED);
    cr_assert(concur_pool_is_closed(p));
    concur_pool_destroy(p);
}

/* ---- bad input: futures and sets ------------------------------------------------------- */

Test(errors, future_create_null_out)
{
    cr_assert_eq(concur_future_create(NULL), CONCUR_EINVAL);
}

Test(errors, future_add_callback_null_fn)
{
    concur_future *f = NULL;
    cr_assert_eq(concur_future_create(&f), 0);
    cr_assert_eq(concur_future_add_callback(f, NULL, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_future_set_result(f, NULL, 0), 0);
    cr_assert_eq(concur_future_add_callback(f, NULL, NULL), CONCUR_EINVAL,
                 "also when the future is already done");
    concur_future_release(f);
}

static int task_bad_return(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    int rc = concur_task_return(t, NULL, 5);
    return concur_task_return(t, &rc, sizeof rc);
}

Test(errors, task_return_null_with_length)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = tu_submit(p, task_bad_return, NULL, 0);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &data, &len), 0);
    cr_assert_eq(len, sizeof(int));
    int rc;
    memcpy(&rc, data, sizeof rc);
    cr_assert_eq(rc, CONCUR_EINVAL);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(errors, as_done_null_out)
{
    concur_future *f = NULL;
    cr_assert_eq(concur_future_create(&f), 0);
    concur_future *fs[1] = {f};
    cr_assert_eq(concur_as_done_create(NULL, fs, 1, false, 0), CONCUR_EINVAL);
    concur_future_release(f);
}

Test(errors, sets_with_null_entries)
{
    concur_future *fs[3] = {NULL, NULL, NULL};
    cr_assert_eq(concur_future_create(&fs[0]), 0);
    cr_assert_eq(concur_future_create(&fs[2]), 0);
    size_t idx = 0;
    cr_assert_eq(concur_wait_all(fs, 3, CONCUR_FOREVER), CONCUR_EINVAL);
    cr_assert_eq(concur_wait_any(fs, 3, CONCUR_FOREVER, &idx), CONCUR_EINVAL);
    cr_assert_eq(concur_collect_all(fs, 3, CONCUR_FOREVER, &idx), CONCUR_EINVAL);
    concur_as_done *it = NULL;
    cr_assert_eq(concur_as_done_create(&it, fs, 3, true, CONCUR_FOREVER), CONCUR_EINVAL);
    concur_future_release(fs[0]);
    concur_future_release(fs[2]);
}

Test(errors, destroy_functions_accept_null)
{
    concur_pool_destroy(NULL);
    concur_future_release(NULL);
    concur_fqueue_destroy(NULL);
    concur_as_done_destroy(NULL);
}

Test(errors, version_macros_and_runtime_version_agree)
{
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", CONCUR_VERSION_MAJOR, CONCUR_VERSION_MINOR,
             CONCUR_VERSION_PATCH);
    cr_assert_str_eq(CONCUR_VERSION_STRING, want);
    cr_assert_str_eq(concur_version(), want);
    cr_assert_eq(concur_version_number(), CONCUR_VERSION_NUMBER);
    cr_assert_eq(CONCUR_VERSION_NUMBER,
                 CONCUR_VERSION_MAJOR * 10000 + CONCUR_VERSION_MINOR * 100 + CONCUR_VERSION_PATCH);
#if CONCUR_VERSION_NUMBER < 100
#error "CONCUR_VERSION_NUMBER must be usable in #if"
#endif
}
