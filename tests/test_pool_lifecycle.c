/*
 * test_pool_lifecycle.c - concur/pool.h lifecycle: broken pools (initializer / finalizer
 * failure), closed pools, shutdown (drain, cancel, timeout), join, calls that would
 * deadlock from a worker, concur_pool_test, and pools left open at program exit.
 *
 * The exit tests re-execute this binary with CONCUR_TEST_EXIT_CHILD=<mode>; main() below
 * runs the child scenario instead of Criterion then, and returns from main (or calls exit)
 * with the pool still open.
 *
 * Built twice (see testutil.h): test_pool_lifecycle on the thread engine and
 * test_pool_lifecycle_proc on the process engine, where the calls a task makes on its own
 * pool do not apply (a worker process has only a copy of it).
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

TestSuite(lifecycle, .timeout = TU_TIMEOUT, .fini = tu_fini);

static void release_all(concur_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        concur_future_release(fs[i]);
}

/* ---- broken by a failing initializer ------------------------------------------------ */

static int init_fail(concur_task *t, void *arg)
{
    tu_gate *g = arg; /* when given: fail only once the test has queued its tasks */
    if (g)
        tu_gate_pass(g);
    return concur_task_fail(t, -EIO, "init boom %d", 7);
}

static tu_gate *g_init_gate;

static void cb_count(concur_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 1);
}

static concur_pool *broken_pool(const char *name, concur_future **fs, int n, atomic_int *ran,
                                atomic_int *cbs)
{
    g_init_gate = tu_gate_new();
    concur_pool_opts o = {.engine = TU_ENGINE,
                          .max_workers = 1,
                          .name = name,
                          .initializer = init_fail,
                          .init_arg = g_init_gate};
    concur_pool *p = tu_pool_opts(&o);
    for (int i = 0; i < n; i++) {
        fs[i] = tu_submit(p, tu_task_count, TU_PTR_IN(ran));
        if (cbs)
            cr_assert_eq(concur_future_add_callback(fs[i], cb_count, cbs), 0);
    }
    cr_assert(tu_gate_await(g_init_gate, 1, TU_SAFETY), "no worker started");
    tu_gate_open(g_init_gate);
    cr_assert_eq(concur_wait_all(fs, (size_t)n, TU_SAFETY), 0,
                 "pending tasks of a broken pool must be cancelled");
    return p;
}

/* Destroys a pool made by broken_pool() and its initializer gate. */
static void broken_pool_destroy(concur_pool *p)
{
    concur_pool_destroy(p);
    tu_gate_destroy(g_init_gate);
}

Test(lifecycle, initializer_failure_breaks_pool)
{
    concur_future *fs[3];
    atomic_int *ran = TU_SHARED(atomic_int);
    atomic_int cbs = 0;
    concur_pool *p = broken_pool("brk", fs, 3, ran, &cbs);
    cr_assert(concur_pool_is_broken(p));
    cr_assert_not(concur_pool_is_closed(p));
    cr_assert_eq(concur_pool_check(p), CONCUR_EINITIALIZER);
    cr_assert_eq(concur_pool_check(p), CONCUR_EINITIALIZER, "the same code every time");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(concur_future_state(fs[i]), CONCUR_CANCELLED, "task %d", i);
        cr_assert_eq(concur_future_collect(fs[i], 0, NULL, NULL), CONCUR_ECANCELED);
    }
    cr_assert_eq(atomic_load(ran), 0);
    broken_pool_destroy(p); /* the worker that cancelled them is joined: callbacks are over */
    cr_assert_eq(atomic_load(&cbs), 3, "callbacks of cancelled tasks must run exactly once");
    release_all(fs, 3);
}

Test(lifecycle, initializer_failure_lists_cancelled_in_queue_order)
{
    concur_future *fs[3];
    atomic_int *ran = TU_SHARED(atomic_int);
    concur_pool *p = broken_pool("brk", fs, 3, ran, NULL);
    cr_assert_eq(concur_pool_cancelled(p, 99, NULL), 3);
    for (size_t i = 0; i < 3; i++) {
        concur_future *c = NULL;
        cr_assert_eq(concur_pool_cancelled(p, i, &c), 3);
        cr_assert_eq(c, fs[i], "cancelled[%zu]", i);
    }
    concur_future *keep = NULL;
    concur_pool_cancelled(p, 0, &keep);
    concur_future_retain(keep);
    broken_pool_destroy(p);
    cr_assert_eq(concur_future_state(keep), CONCUR_CANCELLED, "a retained one outlives the pool");
    concur_future_release(keep);
    release_all(fs, 3);
}

Test(lifecycle, initializer_failure_message_names_worker_and_cause)
{
    concur_future *fs[1];
    atomic_int *ran = TU_SHARED(atomic_int);
    concur_pool *p = broken_pool("brk", fs, 1, ran, NULL);
    const char *msg = concur_pool_error_message(p);
    cr_assert_not_null(msg);
    cr_assert_not_null(strstr(msg, TU_WORKER_NAME("brk", 1)), "message: %s", msg);
    cr_assert_not_null(strstr(msg, "init boom 7"), "message: %s", msg);
    broken_pool_destroy(p);
    release_all(fs, 1);
}

Test(lifecycle, broken_pool_refuses_work_with_stored_error)
{
    concur_future *fs[1];
    atomic_int *ran = TU_SHARED(atomic_int);
    concur_pool *p = broken_pool("brk", fs, 1, ran, NULL);
    concur_future *f = (concur_future *)0x1;
    cr_assert_eq(concur_pool_submit(p, tu_task_noop, NULL, 0, &f), CONCUR_EINITIALIZER);
    cr_assert_eq(f, (concur_future *)0x1);
    concur_input in = {NULL, 0};
    cr_assert_eq(concur_pool_submit_batch(p, tu_task_noop, &in, 1, NULL), CONCUR_EINITIALIZER);
    cr_assert_eq(concur_pool_run(p, tu_task_noop, NULL, 0, 1.0, NULL), CONCUR_EINITIALIZER);
    cr_assert_eq(concur_pool_spawn_workers(p, 1), CONCUR_EINITIALIZER);
    cr_assert_eq(concur_pool_check(p), CONCUR_EINITIALIZER);
    cr_assert_eq(concur_pool_test(p), CONCUR_EBROKEN);
    cr_assert_eq(atomic_load(ran), 0);
    broken_pool_destroy(p);
    release_all(fs, 1);
}

/* ---- broken by a failing finalizer ---------------------------------------------------- */

static int final_fail(concur_task *t, void *arg)
{
    (void)arg;
    return concur_task_fail(t, -EPIPE, "final boom");
}

Test(lifecycle, finalizer_failure_breaks_pool_results_stay_valid)
{
    concur_pool_opts o = {.engine = TU_ENGINE,
                          .max_workers = 1,
                          .name = "fin",
                          .max_tasks_per_worker = 1,
                          .finalizer = final_fail};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = tu_submit(p, tu_task_echo, "abc", 3);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), 0);
    bool ok;
    TU_POLL_UNTIL(ok, concur_pool_is_broken(p), TU_LOOSE(0.0));
    cr_assert(ok, "the worker exited after 1 task: its finalizer failed");
    cr_assert_eq(concur_pool_check(p), CONCUR_EFINALIZER);
    cr_assert_eq(concur_pool_check(p), CONCUR_EFINALIZER);
    cr_assert_eq(concur_pool_submit(p, tu_task_noop, NULL, 0, NULL), CONCUR_EFINALIZER);
    const char *msg = concur_pool_error_message(p);
    cr_assert_not_null(msg);
    cr_assert_not_null(strstr(msg, TU_WORKER_NAME("fin", 1)), "message: %s", msg);
    cr_assert_not_null(strstr(msg, "final boom"), "message: %s", msg);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_result(f, &data, &len), 0);
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    cr_assert_eq(len, 3);
    cr_assert_arr_eq(data, "abc", 3);
    cr_assert_eq(concur_pool_shutdown(p, 0, TU_SAFETY), 0, "shutdown of a broken pool is OK");
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(lifecycle, finalizer_failure_at_shutdown_does_not_fail_shutdown)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 2, .finalizer = final_fail};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = tu_submit(p, tu_task_echo, "xyz", 3);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), 0);
    cr_assert_eq(concur_pool_shutdown(p, 0, TU_SAFETY), 0);
    cr_assert_eq(concur_pool_check(p), CONCUR_ECLOSED);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_result(f, &data, &len), 0);
    cr_assert_arr_eq(data, "xyz", 3);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(lifecycle, closed_beats_broken)
{
    concur_future *fs[1];
    atomic_int *ran = TU_SHARED(atomic_int);
    concur_pool *p = broken_pool("brk", fs, 1, ran, NULL);
    cr_assert_eq(concur_pool_check(p), CONCUR_EINITIALIZER);
    cr_assert_eq(concur_pool_shutdown(p, 0, TU_SAFETY), 0);
    cr_assert(concur_pool_is_closed(p));
    cr_assert_eq(concur_pool_check(p), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_submit(p, tu_task_noop, NULL, 0, NULL), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_spawn_workers(p, 1), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_test(p), CONCUR_ECLOSED);
    broken_pool_destroy(p);
    release_all(fs, 1);
}

/* ---- closed --------------------------------------------------------------------------- */

Test(lifecycle, after_shutdown_everything_is_eclosed)
{
    concur_pool *p = tu_pool(2);
    concur_future *f = tu_submit(p, tu_task_echo, "x", 1);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    cr_assert_eq(concur_pool_shutdown(p, 0, TU_SAFETY), 0);
    cr_assert(concur_pool_is_closed(p));
    cr_assert_not(concur_pool_is_broken(p));
    concur_pool_counts c = tu_counts(p);
    cr_assert_eq(c.workers, 0);
    cr_assert_eq(c.busy, 0);
    cr_assert_eq(c.free, 0);
    cr_assert_eq(c.pending, 0);
    concur_future *out = (concur_future *)0x1;
    cr_assert_eq(concur_pool_submit(p, tu_task_noop, NULL, 0, &out), CONCUR_ECLOSED);
    cr_assert_eq(out, (concur_future *)0x1);
    concur_input in = {"a", 1};
    cr_assert_eq(concur_pool_submit_batch(p, tu_task_noop, &in, 1, NULL), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_run(p, tu_task_noop, NULL, 0, 1.0, NULL), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_check(p), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_spawn_workers(p, 1), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_test(p), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_join(p, 1.0), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_shutdown(p, 0, TU_SAFETY), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_shutdown(p, CONCUR_SHUTDOWN_CANCEL, 0), CONCUR_ECLOSED);
    c = tu_counts(p);
    cr_assert_eq(c.workers, 0);
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(lifecycle, shutdown_of_never_used_pool)
{
    concur_pool *p = tu_pool(2);
    cr_assert_eq(concur_pool_shutdown(p, 0, 0), 0, "no workers: nothing to wait for");
    cr_assert_eq(concur_pool_shutdown(p, 0, 0), CONCUR_ECLOSED);
    concur_pool_destroy(p);
}

/* ---- shutdown ------------------------------------------------------------------------- */

typedef struct sd_ctx {
    tu_gate gate;
    atomic_int saw_stop;
} sd_ctx;

static int task_gate_then_stop(concur_task *t, const void *in, size_t len)
{
    sd_ctx *c = tu_in_ptr(in, len);
    tu_gate_pass(&c->gate);
    double dl = tu_now() + TU_SAFETY;
    while (!concur_task_should_stop(t) && tu_now() < dl)
        tu_nap();
    atomic_store(&c->saw_stop, concur_task_should_stop(t));
    return concur_task_return(t, "A", 1);
}

typedef struct sd_thread {
    concur_pool *p;
    int flags;
    double timeout;
    int rc;
} sd_thread;

static void *shutdown_thread(void *arg)
{
    sd_thread *s = arg;
    s->rc = concur_pool_shutdown(s->p, s->flags, s->timeout);
    return NULL;
}

Test(lifecycle, shutdown_cancel_cancels_queued_and_running_completes)
{
    concur_pool *p = tu_pool(1);
    sd_ctx *c = TU_SHARED(sd_ctx);
    tu_gate_init(&c->gate);
    atomic_int *ran = TU_SHARED(atomic_int);
    atomic_int cbs = 0;
    concur_future *a = tu_submit(p, task_gate_then_stop, TU_PTR_IN(c));
    cr_assert(tu_gate_await(&c->gate, 1, TU_SAFETY));
    concur_future *q[3];
    for (int i = 0; i < 3; i++) {
        q[i] = tu_submit(p, tu_task_count, TU_PTR_IN(ran));
        cr_assert_eq(concur_future_add_callback(q[i], cb_count, &cbs), 0);
    }
    sd_thread s = {.p = p, .flags = CONCUR_SHUTDOWN_CANCEL, .timeout = CONCUR_FOREVER, .rc = 1};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, shutdown_thread, &s), 0);
    /* the queued ones are cancelled while the running one is still held by the gate */
    cr_assert_eq(concur_wait_all(q, 3, TU_SAFETY), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(concur_future_state(q[i]), CONCUR_CANCELLED, "queued task %d", i);
    cr_assert_eq(concur_future_state(a), CONCUR_RUNNING);
    cr_assert(concur_pool_is_closed(p));
    tu_gate_open(&c->gate);
    pthread_join(th, NULL); /* the cancelling thread: its callbacks are over */
    cr_assert_eq(s.rc, 0);
    cr_assert_eq(atomic_load(&cbs), 3);
    cr_assert_eq(concur_future_state(a), CONCUR_DONE, "the running task completes");
    cr_assert_eq(atomic_load(&c->saw_stop), 1, "running tasks see should_stop");
    cr_assert_eq(atomic_load(ran), 0);
    cr_assert_eq(concur_pool_cancelled(p, 99, NULL), 3);
    for (size_t i = 0; i < 3; i++) {
        concur_future *f = NULL;
        concur_pool_cancelled(p, i, &f);
        cr_assert_eq(f, q[i], "cancelled[%zu] not in queue order", i);
    }
    concur_pool_counts cnt = tu_counts(p);
    cr_assert_eq(cnt.workers, 0);
    cr_assert_eq(cnt.pending, 0);
    concur_pool_destroy(p);
    release_all(q, 3);
    concur_future_release(a);
    tu_gate_destroy(&c->gate);
}

/* The rule documented at CONCUR_SHUTDOWN_CANCEL: a task submitted just before a cancelling
 * shutdown either ran (DONE, not listed) or was cancelled (CANCELLED, listed once), never
 * anything else; and a task seen RUNNING before the shutdown always completes. */
Test(lifecycle, submit_then_shutdown_cancel_runs_or_lists_each_task)
{
    int ran_n = 0, cancelled_n = 0;
    for (int i = 0; i < (TU_SANITIZED ? 20 : 100); i++) {
        concur_pool *p = tu_pool(2);
        concur_future *f = tu_submit(p, tu_task_noop, NULL, 0);
        cr_assert_eq(concur_pool_shutdown(p, CONCUR_SHUTDOWN_CANCEL, TU_SAFETY), 0);
        cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
        concur_state st = concur_future_state(f);
        concur_future *listed = NULL;
        size_t n = concur_pool_cancelled(p, 0, &listed);
        if (st == CONCUR_CANCELLED) {
            cr_assert_eq(n, 1);
            cr_assert_eq(listed, f);
            cancelled_n++;
        } else {
            cr_assert_eq(st, CONCUR_DONE, "run %d: state %d", i, (int)st);
            cr_assert_eq(n, 0);
            ran_n++;
        }
        concur_future_release(f);
        concur_pool_destroy(p);
    }
    cr_assert_eq(ran_n + cancelled_n, TU_SANITIZED ? 20 : 100);

    /* RUNNING before the shutdown: it completes. */
    concur_pool *p = tu_pool(1);
    tu_gate *g = tu_gate_new();
    concur_future *a = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 1, TU_SAFETY));
    cr_assert_eq(concur_future_state(a), CONCUR_RUNNING);
    cr_assert_eq(concur_pool_shutdown(p, CONCUR_SHUTDOWN_CANCEL, 0), CONCUR_ETIMEDOUT);
    tu_gate_open(g);
    cr_assert_eq(concur_future_wait(a, TU_SAFETY), 0);
    cr_assert_eq(concur_future_state(a), CONCUR_DONE);
    cr_assert_eq(concur_pool_cancelled(p, 0, NULL), 0);
    concur_future_release(a);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

Test(lifecycle, shutdown_drain_runs_all_queued)
{
    concur_pool *p = tu_pool(1);
    tu_gate *g = tu_gate_new();
    atomic_int *ran = TU_SHARED(atomic_int);
    concur_future *a = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 1, TU_SAFETY));
    concur_future *q[5];
    for (int i = 0; i < 5; i++)
        q[i] = tu_submit(p, tu_task_count, TU_PTR_IN(ran));
    sd_thread s = {.p = p, .flags = 0, .timeout = CONCUR_FOREVER, .rc = 1};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, shutdown_thread, &s), 0);
    bool ok;
    TU_POLL_UNTIL(ok, concur_pool_is_closed(p), TU_SAFETY);
    cr_assert(ok);
    cr_assert_eq(concur_pool_submit(p, tu_task_noop, NULL, 0, NULL), CONCUR_ECLOSED);
    tu_gate_open(g);
    pthread_join(th, NULL);
    cr_assert_eq(s.rc, 0);
    cr_assert_eq(atomic_load(ran), 5, "drain must run every queued task before returning");
    for (int i = 0; i < 5; i++)
        cr_assert_eq(concur_future_state(q[i]), CONCUR_DONE);
    cr_assert_eq(concur_pool_cancelled(p, 0, NULL), 0);
    cr_assert_eq(tu_counts(p).workers, 0);
    concur_pool_destroy(p);
    release_all(q, 5);
    concur_future_release(a);
    tu_gate_destroy(g);
}

Test(lifecycle, shutdown_times_out_while_task_blocked)
{
    concur_pool *p = tu_pool(1);
    tu_gate *g = tu_gate_new();
    atomic_int *ran = TU_SHARED(atomic_int);
    concur_future *a = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 1, TU_SAFETY));
    concur_future *b = tu_submit(p, tu_task_count, TU_PTR_IN(ran));
    double t0 = tu_now();
    cr_assert_eq(concur_pool_shutdown(p, 0, 0.1), CONCUR_ETIMEDOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.1 - TU_EPS);
    cr_assert_lt(el, TU_LOOSE(0.1));
    cr_assert(concur_pool_is_closed(p));
    cr_assert_eq(concur_pool_check(p), CONCUR_ECLOSED);
    cr_assert_eq(concur_pool_shutdown(p, 0, 0), CONCUR_ECLOSED);
    cr_assert_eq(concur_future_state(a), CONCUR_RUNNING);
    tu_gate_open(g);
    concur_pool_destroy(p); /* waits for the worker */
    cr_assert_eq(concur_future_state(a), CONCUR_DONE);
    cr_assert_eq(concur_future_state(b), CONCUR_DONE, "drain: the queued task still runs");
    cr_assert_eq(atomic_load(ran), 1);
    concur_future_release(a);
    concur_future_release(b);
    tu_gate_destroy(g);
}

Test(lifecycle, shutdown_zero_timeout_returns_at_once_when_busy)
{
    concur_pool *p = tu_pool(1);
    tu_gate *g = tu_gate_new();
    concur_future *a = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 1, TU_SAFETY));
    concur_future *b = tu_submit(p, tu_task_noop, NULL, 0);
    double t0 = tu_now();
    cr_assert_eq(concur_pool_shutdown(p, CONCUR_SHUTDOWN_CANCEL, 0), CONCUR_ETIMEDOUT);
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.0));
    cr_assert_eq(concur_future_state(b), CONCUR_CANCELLED);
    tu_gate_open(g);
    concur_pool_destroy(p);
    cr_assert_eq(concur_future_state(a), CONCUR_DONE);
    concur_future_release(a);
    concur_future_release(b);
    tu_gate_destroy(g);
}

/* ---- join ----------------------------------------------------------------------------- */

typedef struct join_thread_arg {
    concur_pool *p;
    double timeout;
    int rc;
} join_thread_arg;

static void *join_thread(void *arg)
{
    join_thread_arg *j = arg;
    j->rc = concur_pool_join(j->p, j->timeout);
    return NULL;
}

Test(lifecycle, join_finishes_queued_work_then_stops_workers)
{
    concur_pool *p = tu_pool(2);
    tu_gate *g = tu_gate_new();
    atomic_int *ran = TU_SHARED(atomic_int);
    concur_future *a = tu_submit_gate(p, g);
    concur_future *q[6];
    for (int i = 0; i < 6; i++)
        q[i] = tu_submit(p, tu_task_count, TU_PTR_IN(ran));
    join_thread_arg j = {.p = p, .timeout = CONCUR_FOREVER, .rc = 1};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, join_thread, &j), 0);
    tu_gate_open(g);
    pthread_join(th, NULL);
    cr_assert_eq(j.rc, 0);
    cr_assert_eq(atomic_load(ran), 6, "join returned before the queue was done");
    cr_assert_eq(concur_future_state(a), CONCUR_DONE);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(concur_future_state(q[i]), CONCUR_DONE);
    concur_pool_counts c = tu_counts(p);
    cr_assert_eq(c.workers, 0);
    cr_assert_eq(c.busy, 0);
    cr_assert_eq(c.pending, 0);
    cr_assert_not(concur_pool_is_closed(p));
    cr_assert_eq(concur_pool_check(p), 0);
    concur_pool_destroy(p);
    release_all(q, 6);
    concur_future_release(a);
    tu_gate_destroy(g);
}

Test(lifecycle, join_times_out_when_blocked_and_pool_stays_usable)
{
    concur_pool *p = tu_pool(2);
    tu_gate *g = tu_gate_new();
    concur_future *a = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 1, TU_SAFETY));
    double t0 = tu_now();
    cr_assert_eq(concur_pool_join(p, 0.1), CONCUR_ETIMEDOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.1 - TU_EPS);
    cr_assert_lt(el, TU_LOOSE(0.1));
    cr_assert_eq(concur_pool_check(p), 0);
    concur_future *b = NULL;
    cr_assert_eq(concur_pool_submit(p, tu_task_echo, "b", 1, &b), 0,
                 "no join in progress any more: submit must work");
    cr_assert_eq(concur_future_collect(b, TU_SAFETY, NULL, NULL), 0);
    tu_gate_open(g);
    cr_assert_eq(concur_pool_join(p, TU_SAFETY), 0);
    cr_assert_eq(concur_future_state(a), CONCUR_DONE);
    concur_future_release(a);
    concur_future_release(b);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

Test(lifecycle, submit_during_join_is_ebusy)
{
    concur_pool *p = tu_pool(1);
    tu_gate *g = tu_gate_new();
    concur_future *a = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 1, TU_SAFETY));
    join_thread_arg j = {.p = p, .timeout = CONCUR_FOREVER, .rc = 1};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, join_thread, &j), 0);
    /* until the join has started, submits are accepted; keep them */
    concur_future *early[4096];
    size_t nearly = 0;
    int rc = 0;
    double dl = tu_now() + TU_SAFETY;
    while (tu_now() < dl && nearly < 4096) {
        concur_future *f = NULL;
        rc = concur_pool_submit(p, tu_task_noop, NULL, 0, &f);
        if (rc != 0)
            break;
        early[nearly++] = f;
        tu_nap();
    }
    cr_assert_eq(rc, CONCUR_EBUSY, "%s", concur_err_name(rc));
    concur_future *x = (concur_future *)0x1;
    cr_assert_eq(concur_pool_submit(p, tu_task_noop, NULL, 0, &x), CONCUR_EBUSY);
    cr_assert_eq(x, (concur_future *)0x1);
    concur_input in = {NULL, 0};
    cr_assert_eq(concur_pool_submit_batch(p, tu_task_noop, &in, 1, NULL), CONCUR_EBUSY);
    tu_gate_open(g);
    pthread_join(th, NULL);
    cr_assert_eq(j.rc, 0);
    for (size_t i = 0; i < nearly; i++)
        cr_assert_eq(concur_future_state(early[i]), CONCUR_DONE);
    /* usable after join: a submit starts a worker again */
    concur_future *b = NULL;
    cr_assert_eq(concur_pool_submit(p, tu_task_echo, "again", 5, &b), 0);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(b, TU_SAFETY, &data, &len), 0);
    cr_assert_arr_eq(data, "again", 5);
    concur_future_release(b);
    release_all(early, nearly);
    concur_future_release(a);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

Test(lifecycle, join_on_idle_pool_and_reuse)
{
    concur_pool *p = tu_pool(2);
    cr_assert_eq(concur_pool_join(p, 0), 0, "nothing queued, no workers");
    concur_future *f = tu_submit(p, tu_task_echo, "1", 1);
    cr_assert_eq(concur_pool_join(p, TU_SAFETY), 0);
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    cr_assert_eq(tu_counts(p).workers, 0);
    concur_future *g = tu_submit(p, tu_task_echo, "2", 1);
    cr_assert_eq(concur_future_collect(g, TU_SAFETY, NULL, NULL), 0);
    concur_future_release(f);
    concur_future_release(g);
    concur_pool_destroy(p);
}

/* ---- calls that would wait for themselves -------------------------------------------- */

enum { CALL_JOIN, CALL_SHUTDOWN, CALL_RUN };

typedef struct self_call {
    concur_pool *p;
    int which;
} self_call;

static int task_self_call(concur_task *t, const void *in, size_t len)
{
    self_call *s = tu_in_ptr(in, len);
    int rc;
    switch (s->which) {
    case CALL_JOIN:
        rc = concur_pool_join(s->p, CONCUR_FOREVER);
        break;
    case CALL_SHUTDOWN:
        rc = concur_pool_shutdown(s->p, 0, CONCUR_FOREVER);
        break;
    default:
        rc = concur_pool_run(s->p, tu_task_noop, NULL, 0, CONCUR_FOREVER, NULL);
        break;
    }
    return concur_task_return(t, &rc, sizeof rc);
}

static int self_call_rc(int max_workers, int which)
{
    TU_SKIP_ON_PROCESSES("a task in a worker process has only a copy of the caller's pool");
    concur_pool *p = tu_pool(max_workers);
    self_call s = {p, which};
    concur_future *f = tu_submit(p, task_self_call, TU_PTR_IN(&s));
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &data, &len), 0,
                 "the call from the worker hung or failed the task");
    cr_assert_eq(len, sizeof(int));
    int rc;
    memcpy(&rc, data, sizeof rc);
    concur_future_release(f);
    concur_pool_destroy(p);
    return rc;
}

Test(lifecycle, join_from_own_worker_is_edeadlk)
{
    cr_assert_eq(self_call_rc(2, CALL_JOIN), CONCUR_EDEADLK);
}

Test(lifecycle, shutdown_with_wait_from_own_worker_is_edeadlk)
{
    cr_assert_eq(self_call_rc(2, CALL_SHUTDOWN), CONCUR_EDEADLK);
}

Test(lifecycle, run_from_only_worker_is_edeadlk)
{
    cr_assert_eq(self_call_rc(1, CALL_RUN), CONCUR_EDEADLK);
}

typedef struct cb_join {
    concur_pool *p;
    atomic_int rc;
    atomic_int calls;
} cb_join;

static void cb_join_pool(concur_future *f, void *arg)
{
    (void)f;
    cb_join *c = arg;
    atomic_store(&c->rc, concur_pool_join(c->p, CONCUR_FOREVER));
    atomic_fetch_add(&c->calls, 1);
}

Test(lifecycle, join_from_callback_in_own_worker_is_edeadlk)
{
    concur_pool *p = tu_pool(1);
    tu_gate *g = tu_gate_new();
    cb_join c = {.p = p, .rc = 1, .calls = 0};
    concur_future *f = tu_submit_gate(p, g);
    cr_assert_eq(concur_future_add_callback(f, cb_join_pool, &c), 0);
    tu_gate_open(g);
    bool ok;
    TU_POLL_UNTIL(ok, atomic_load(&c.calls) == 1, TU_SAFETY);
    cr_assert(ok, "the callback hung");
    cr_assert_eq(atomic_load(&c.rc), CONCUR_EDEADLK);
    concur_future_release(f);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

static int task_join_other(concur_task *t, const void *in, size_t len)
{
    concur_pool *other = tu_in_ptr(in, len);
    int rc = concur_pool_join(other, TU_SAFETY);
    return concur_task_return(t, &rc, sizeof rc);
}

Test(lifecycle, join_of_other_pool_from_worker_is_allowed)
{
    TU_SKIP_ON_PROCESSES("a task in a worker process has only a copy of the caller's pools");
    concur_pool *p = tu_pool(1);
    concur_pool *q = tu_pool(1);
    concur_future *work = tu_submit(q, tu_task_noop, NULL, 0);
    concur_future *f = tu_submit(p, task_join_other, TU_PTR_IN(q));
    const void *data = NULL;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &data, NULL), 0);
    int rc;
    memcpy(&rc, data, sizeof rc);
    cr_assert_eq(rc, 0);
    cr_assert_eq(concur_future_state(work), CONCUR_DONE);
    concur_future_release(work);
    concur_future_release(f);
    concur_pool_destroy(p);
    concur_pool_destroy(q);
}

/* ---- concur_pool_test ----------------------------------------------------------------- */

Test(lifecycle, pool_test_good_pool)
{
    concur_pool *p = tu_pool(4);
    cr_assert_eq(concur_pool_test(p), 0);
    cr_assert_eq(tu_counts(p).workers, 0, "the test runs on a copy, not on this pool");
    cr_assert_eq(concur_pool_check(p), 0);
    concur_pool_destroy(p);
}

Test(lifecycle, pool_test_failing_initializer)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 2, .initializer = init_fail};
    concur_pool *p = tu_pool_opts(&o);
    cr_assert_eq(concur_pool_test(p), CONCUR_EINITIALIZER);
    cr_assert_not(concur_pool_is_broken(p), "only the copy broke");
    cr_assert_eq(concur_pool_check(p), 0);
    concur_pool_destroy(p);
}

Test(lifecycle, pool_test_failing_finalizer)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 2, .finalizer = final_fail};
    concur_pool *p = tu_pool_opts(&o);
    cr_assert_eq(concur_pool_test(p), CONCUR_EFINALIZER);
    cr_assert_eq(concur_pool_check(p), 0);
    concur_pool_destroy(p);
}

/* ---- pools left open at exit (child processes) ------------------------------------------ */

#define EXIT_CHILD_ENV "CONCUR_TEST_EXIT_CHILD"

static concur_pool *g_pool; /* globals: still reachable at exit (no leak reports) */
static concur_future *g_fs[4];
static tu_gate *g_started; /* in the shared arena: the running task arrives there */

static void out_line(const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static int child_running_task(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    tu_gate_arrive(g_started);
    /* long enough that "prompt" fails clearly if the exit handler never asks it to stop */
    double dl = tu_now() + 3 * TU_LOOSE(1.0);
    while (!concur_task_should_stop(t) && tu_now() < dl)
        tu_nap();
    char buf[64];
    snprintf(buf, sizeof buf, "A stop=%d\n", (int)concur_task_should_stop(t));
    out_line(buf);
    return 0;
}

static void child_cb(concur_future *f, void *arg)
{
    char buf[64];
    snprintf(buf, sizeof buf, "cb %d %s\n", (int)(intptr_t)arg,
             concur_state_name(concur_future_state(f)));
    out_line(buf);
}

static int exit_child_main(const char *mode)
{
    g_started = tu_gate_new();
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 1, .name = "exit"};
    if (concur_pool_create(&g_pool, &o) != 0)
        return 10;
    if (!strcmp(mode, "idle")) {
        if (concur_pool_spawn_workers(g_pool, 1) != 1)
            return 11;
        if (concur_pool_run(g_pool, tu_task_noop, NULL, 0, CONCUR_FOREVER, &g_fs[0]) != 0)
            return 12;
        out_line("ready\n");
        return 0;
    }
    if (concur_pool_submit(g_pool, child_running_task, NULL, 0, &g_fs[0]) != 0)
        return 13;
    if (!tu_gate_await(g_started, 1, TU_SAFETY))
        return 14;
    concur_future_add_callback(g_fs[0], child_cb, (void *)(intptr_t)1);
    for (int i = 1; i <= 2; i++) {
        if (concur_pool_submit(g_pool, tu_task_noop, NULL, 0, &g_fs[i]) != 0)
            return 15;
        concur_future_add_callback(g_fs[i], child_cb, (void *)(intptr_t)(i + 1));
    }
    out_line("ready\n");
    if (!strcmp(mode, "exit"))
        exit(0);
    return 0; /* "return": leave main with the pool open */
}

typedef struct child_result {
    char out[4096];
    int status;
    double elapsed;
} child_result;

static void run_child(const char *mode, child_result *r)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    cr_assert_not_null(env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        /* BoxFort (Criterion's sandbox) marks its workers with BXFI_* variables; a child
         * that inherits them tries to act as a sandboxed worker and aborts. */
        if (strncmp(environ[i], EXIT_CHILD_ENV "=", strlen(EXIT_CHILD_ENV) + 1) != 0 &&
            strncmp(environ[i], "BXFI_", 5) != 0)
            env[k++] = environ[i];
    char var[64];
    snprintf(var, sizeof var, "%s=%s", EXIT_CHILD_ENV, mode);
    env[k++] = var;
    env[k] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    char *argv[] = {"test_pool_lifecycle-exit-child", NULL};
    pid_t pid;
    double t0 = tu_now();
    int rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    free(env);
    close(fds[1]);
    cr_assert_eq(rc, 0, "posix_spawn: %s", strerror(rc));

    size_t got = 0;
    for (;;) {
        ssize_t m = read(fds[0], r->out + got, sizeof r->out - 1 - got);
        if (m < 0 && errno == EINTR)
            continue;
        if (m <= 0)
            break;
        got += (size_t)m;
        if (got == sizeof r->out - 1)
            break;
    }
    r->out[got] = '\0';
    close(fds[0]);
    pid_t w;
    do
        w = waitpid(pid, &r->status, 0);
    while (w < 0 && errno == EINTR);
    r->elapsed = tu_now() - t0;
    cr_assert_eq(w, pid);
}

static void assert_clean_exit(const child_result *r)
{
    cr_assert(WIFEXITED(r->status), "child did not exit normally (status 0x%x); output:\n%s",
              r->status, r->out);
    cr_assert_eq(WEXITSTATUS(r->status), 0, "output:\n%s", r->out);
}

static void assert_queued_cancelled_at_exit(const char *mode)
{
    child_result r;
    run_child(mode, &r);
    assert_clean_exit(&r);
    cr_assert_not_null(strstr(r.out, "ready\n"), "output:\n%s", r.out);
    cr_assert_not_null(strstr(r.out, "cb 2 cancelled\n"), "output:\n%s", r.out);
    cr_assert_not_null(strstr(r.out, "cb 3 cancelled\n"), "output:\n%s", r.out);
    cr_assert_not_null(strstr(r.out, "A stop=1\n"), "running task not asked to stop:\n%s", r.out);
    cr_assert_not_null(strstr(r.out, "cb 1 done\n"), "output:\n%s", r.out);
    cr_assert_lt(r.elapsed, TU_LOOSE(1.0), "exit took %.2f s", r.elapsed);
}

Test(lifecycle, open_pool_at_return_from_main)
{
    assert_queued_cancelled_at_exit("return");
}

Test(lifecycle, open_pool_at_exit_call)
{
    assert_queued_cancelled_at_exit("exit");
}

Test(lifecycle, idle_workers_do_not_delay_exit)
{
    child_result r;
    run_child("idle", &r);
    assert_clean_exit(&r);
    cr_assert_str_eq(r.out, "ready\n");
    cr_assert_lt(r.elapsed, TU_LOOSE(0.5), "exit took %.2f s", r.elapsed);
}

int main(int argc, char *argv[])
{
    const char *mode = getenv(EXIT_CHILD_ENV);
    if (mode && *mode)
        return exit_child_main(mode);
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;
    if (criterion_handle_args(argc, argv, true))
        result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    return result;
}
