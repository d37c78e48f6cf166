/*
 * test_pool.c - concur/pool.h: options, lazy workers, counters, spawn_workers, idle timeout,
 * max_tasks_per_worker, initializer/finalizer hooks, queue_limit, submit_batch, run and
 * task_timeout. Broken/closed states, shutdown, join and exit are in test_pool_lifecycle.c.
 *
 * Built twice (see testutil.h): test_pool on the thread engine, test_pool_proc on the
 * process engine, where a timed-out task's worker is killed instead of left running.
 */
#include "testutil.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <stdio.h>

TestSuite(pool, .timeout = TU_TIMEOUT, .fini = tu_fini);

/* ---- options ------------------------------------------------------------------------- */

Test(pool, default_max_workers_is_cpu_count)
{
    TU_SKIP_ON_COROUTINES("the coroutine engine defaults to one loop thread (test_coro)");
    cr_assert_geq(concur_cpu_count(), 1);
    concur_pool *p = NULL;
    if (TU_ENGINE == CONCUR_ENGINE_THREADS) { /* NULL options: the default engine */
        cr_assert_eq(concur_pool_create(&p, NULL), 0);
        cr_assert_eq(concur_pool_max_workers(p), concur_cpu_count());
        concur_pool_destroy(p);
    }
    concur_pool_opts o = {.engine = TU_ENGINE};
    p = tu_pool_opts(&o);
    cr_assert_eq(concur_pool_max_workers(p), concur_cpu_count());
    concur_pool_destroy(p);
}

Test(pool, explicit_max_workers)
{
    concur_pool *p = tu_pool(3);
    cr_assert_eq(concur_pool_max_workers(p), 3);
    concur_pool_destroy(p);
}

Test(pool, negative_max_workers_is_einval)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = -1};
    concur_pool *p = NULL;
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    cr_assert_null(p);
    o.max_workers = -100;
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
}

Test(pool, fresh_pool_is_open_and_healthy)
{
    concur_pool *p = tu_pool(2);
    cr_assert_eq(concur_pool_check(p), 0);
    cr_assert_not(concur_pool_is_broken(p));
    cr_assert_not(concur_pool_is_closed(p));
    cr_assert_null(concur_pool_error_message(p));
    concur_future *f = NULL;
    cr_assert_eq(concur_pool_cancelled(p, 0, &f), 0);
    concur_pool_destroy(p);
}

/* ---- lazy workers and counters -------------------------------------------------------- */

Test(pool, new_pool_has_no_workers)
{
    concur_pool *p = tu_pool(4);
    concur_pool_counts c = tu_counts(p);
    cr_assert_eq(c.workers, 0);
    cr_assert_eq(c.busy, 0);
    cr_assert_eq(c.free, 0);
    cr_assert_eq(c.pending, 0);
    concur_pool_destroy(p);
}

Test(pool, one_submit_starts_one_worker)
{
    concur_pool *p = tu_pool(4);
    tu_gate *g = tu_gate_new();
    concur_future *f = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 1, TU_SAFETY));
    concur_pool_counts c = tu_counts(p);
    cr_assert_eq(c.workers, 1);
    cr_assert_eq(c.busy, 1);
    cr_assert_eq(c.free, 0);
    cr_assert_eq(c.pending, 0);
    tu_gate_open(g);
    concur_future_release(f);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

Test(pool, counters_track_busy_free_pending)
{
    concur_pool *p = tu_pool(4);
    tu_gate *g = tu_gate_new();
    concur_future *fs[6];
    for (int i = 0; i < 4; i++)
        fs[i] = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 4, TU_SAFETY), "4 tasks must run at once on a 4-worker pool");
    concur_pool_counts c = tu_counts(p);
    cr_assert_eq(c.workers, 4);
    cr_assert_eq(c.busy, 4);
    cr_assert_eq(c.free, 0);
    cr_assert_eq(c.pending, 0);
    fs[4] = tu_submit_gate(p, g);
    fs[5] = tu_submit_gate(p, g);
    c = tu_counts(p);
    cr_assert_eq(c.workers, 4, "never beyond max_workers");
    cr_assert_eq(c.busy, 4);
    cr_assert_eq(c.pending, 2);
    tu_gate_open(g);
    cr_assert_eq(concur_wait_all(fs, 6, TU_SAFETY), 0);
    bool ok;
    TU_POLL_UNTIL(ok, tu_counts(p).busy == 0, TU_SAFETY);
    c = tu_counts(p);
    cr_assert_eq(c.busy, 0);
    cr_assert_eq(c.pending, 0);
    cr_assert_eq(c.workers, 4, "idle_timeout 0: idle workers stay");
    cr_assert_eq(c.free, 4);
    for (int i = 0; i < 6; i++)
        concur_future_release(fs[i]);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

Test(pool, two_submits_start_two_workers)
{
    concur_pool *p = tu_pool(4);
    tu_gate *g = tu_gate_new();
    concur_future *a = tu_submit_gate(p, g);
    concur_future *b = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 2, TU_SAFETY));
    concur_pool_counts c = tu_counts(p);
    cr_assert_eq(c.workers, 2, "2 tasks need 2 workers, not more (max 4)");
    cr_assert_eq(c.busy, 2);
    cr_assert_eq(c.free, 0);
    tu_gate_open(g);
    concur_future_release(a);
    concur_future_release(b);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

Test(pool, free_worker_is_reused_not_spawned)
{
    concur_pool *p = tu_pool(4);
    cr_assert_eq(concur_pool_spawn_workers(p, 2), 2);
    bool ok;
    TU_POLL_UNTIL(ok, tu_counts(p).free == 2, TU_SAFETY);
    cr_assert(ok, "two idle workers expected");
    tu_gate *g = tu_gate_new();
    concur_future *a = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 1, TU_SAFETY));
    concur_pool_counts c = tu_counts(p);
    cr_assert_eq(c.workers, 2, "a free worker was there: no new one");
    cr_assert_eq(c.busy, 1);
    cr_assert_eq(c.free, 1);
    concur_future *b = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 2, TU_SAFETY));
    c = tu_counts(p);
    cr_assert_eq(c.workers, 2, "the second free worker takes it");
    cr_assert_eq(c.busy, 2);
    tu_gate_open(g);
    concur_future_release(a);
    concur_future_release(b);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

/* Sequential work needs one worker: a worker counts itself free before it completes its
 * last task, so a caller that submits again as soon as it has the result finds it free.
 * (Before: about one run in five started a second worker somewhere in 100 round trips.) */
Test(pool, sequential_submit_wait_keeps_one_worker)
{
    for (int run = 0; run < (TU_SANITIZED ? 5 : 20); run++) {
        concur_pool *p = tu_pool(8);
        for (int i = 0; i < 100; i++) {
            concur_future *f = tu_submit(p, tu_task_noop, NULL, 0);
            cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
            cr_assert_eq(concur_future_state(f), CONCUR_DONE);
            concur_future_release(f);
            concur_pool_counts c = tu_counts(p);
            cr_assert_eq(c.workers, 1, "run %d, round trip %d: %zu workers for sequential work",
                         run, i, c.workers);
        }
        concur_pool_destroy(p);
    }
}

Test(pool, spawn_workers_capped_at_max)
{
    concur_pool *p = tu_pool(2);
    cr_assert_eq(concur_pool_spawn_workers(p, 5), 2);
    bool ok;
    /* Started, and idle: a worker counts as busy until it reaches its idle wait. */
    TU_POLL_UNTIL(ok, tu_counts(p).workers == 2 && tu_counts(p).free == 2, TU_SAFETY);
    cr_assert(ok);
    cr_assert_eq(concur_pool_spawn_workers(p, 1), 0, "already at max_workers");
    concur_pool_counts c = tu_counts(p);
    cr_assert_eq(c.workers, 2);
    cr_assert_eq(c.busy, 0);
    cr_assert_eq(c.free, 2);
    concur_pool_destroy(p);
}

Test(pool, spawn_workers_exact_and_zero)
{
    concur_pool *p = tu_pool(4);
    cr_assert_eq(concur_pool_spawn_workers(p, 0), 0);
    cr_assert_eq(concur_pool_spawn_workers(p, 1), 1);
    cr_assert_eq(concur_pool_spawn_workers(p, 2), 2);
    bool ok;
    TU_POLL_UNTIL(ok, tu_counts(p).workers == 3, TU_SAFETY);
    cr_assert(ok);
    cr_assert_eq(concur_pool_spawn_workers(p, 9), 1);
    concur_pool_destroy(p);
}

static int task_name_out(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    const char *n = concur_task_worker_name(t);
    return concur_task_return(t, n, strlen(n) + 1);
}

Test(pool, spawned_workers_take_tasks)
{
    concur_pool *p = tu_pool(2);
    cr_assert_eq(concur_pool_spawn_workers(p, 2), 2);
    concur_future *f = tu_submit(p, tu_task_echo, "x", 1);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), 0);
    cr_assert_eq(tu_counts(p).workers, 2);
    concur_future_release(f);
    concur_pool_destroy(p);
}

/* ---- idle timeout -------------------------------------------------------------------- */

Test(pool, idle_timeout_zero_keeps_workers)
{
    concur_pool *p = tu_pool(2);
    concur_future *f = tu_submit(p, tu_task_noop, NULL, 0);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    tu_sleep(0.3); /* the absence of an exit over time is the point */
    cr_assert_eq(tu_counts(p).workers, 1);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(pool, idle_timeout_shrinks_to_zero)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 4, .idle_timeout = 0.2};
    concur_pool *p = tu_pool_opts(&o);
    tu_gate *g = tu_gate_new();
    concur_future *fs[4];
    for (int i = 0; i < 4; i++)
        fs[i] = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 4, TU_SAFETY));
    cr_assert_eq(tu_counts(p).workers, 4);
    double t0 = tu_now();
    tu_gate_open(g);
    bool ok;
    TU_POLL_UNTIL(ok, tu_counts(p).workers == 0, TU_LOOSE(0.6));
    double el = tu_now() - t0;
    cr_assert(ok, "workers left: %zu after %.2f s", tu_counts(p).workers, el);
    cr_assert_geq(el, 0.2 - TU_EPS, "workers exited before idle_timeout (%.3f s)", el);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(concur_future_state(fs[i]), CONCUR_DONE);
        concur_future_release(fs[i]);
    }
    /* the pool stays usable: a new submit starts a worker again */
    concur_future *f = tu_submit(p, tu_task_echo, "again", 5);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), 0);
    concur_future_release(f);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

Test(pool, negative_idle_timeout_exits_when_queue_empty)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 2, .idle_timeout = -1.0};
    concur_pool *p = tu_pool_opts(&o);
    atomic_int *n = TU_SHARED(atomic_int);
    concur_future *fs[4];
    for (int i = 0; i < 4; i++)
        fs[i] = tu_submit(p, tu_task_count, TU_PTR_IN(n));
    cr_assert_eq(concur_wait_all(fs, 4, TU_SAFETY), 0);
    bool ok;
    TU_POLL_UNTIL(ok, tu_counts(p).workers == 0, TU_LOOSE(0.0));
    cr_assert(ok, "workers left: %zu", tu_counts(p).workers);
    cr_assert_eq(atomic_load(n), 4);
    for (int i = 0; i < 4; i++)
        concur_future_release(fs[i]);
    concur_pool_destroy(p);
}

/* ---- max_tasks_per_worker ------------------------------------------------------------- */

static void collect_names(concur_future **fs, int n, char names[][64])
{
    for (int i = 0; i < n; i++) {
        const void *data = NULL;
        size_t len = 0;
        cr_assert_eq(concur_future_collect(fs[i], TU_SAFETY, &data, &len), 0);
        cr_assert_gt(len, 0);
        cr_assert_lt(len, 64);
        memcpy(names[i], data, len);
    }
}

Test(pool, max_tasks_three_runs_then_worker_exits)
{
    concur_pool_opts o = {
        .engine = TU_ENGINE, .max_workers = 1, .max_tasks_per_worker = 3, .name = "mt"};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *fs[3];
    for (int i = 0; i < 3; i++)
        fs[i] = tu_submit(p, task_name_out, NULL, 0);
    char names[3][64];
    collect_names(fs, 3, names);
    for (int i = 0; i < 3; i++)
        cr_assert_str_eq(names[i], TU_WORKER_NAME("mt", 1));
    bool ok;
    TU_POLL_UNTIL(ok, tu_counts(p).workers == 0, TU_LOOSE(0.0));
    cr_assert(ok, "the worker must exit after 3 tasks with nothing pending (workers=%zu)",
              tu_counts(p).workers);
    /* a replacement only when work arrives */
    concur_future *f = tu_submit(p, task_name_out, NULL, 0);
    collect_names(&f, 1, names);
    cr_assert_str_eq(names[0], TU_WORKER_NAME("mt", 2));
    concur_future_release(f);
    for (int i = 0; i < 3; i++)
        concur_future_release(fs[i]);
    concur_pool_destroy(p);
}

Test(pool, max_tasks_two_over_five_runs_uses_three_workers)
{
    concur_pool_opts o = {
        .engine = TU_ENGINE, .max_workers = 1, .max_tasks_per_worker = 2, .name = "m2"};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *fs[5];
    for (int i = 0; i < 5; i++)
        fs[i] = tu_submit(p, task_name_out, NULL, 0);
    char names[5][64];
    collect_names(fs, 5, names);
    int distinct = 0;
    for (int i = 0; i < 5; i++) {
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen = seen || !strcmp(names[i], names[j]);
        distinct += !seen;
    }
    cr_assert_eq(distinct, 3, "names: %s %s %s %s %s", names[0], names[1], names[2], names[3],
                 names[4]);
    /* one worker at a time, FIFO: pairs share a worker */
    cr_assert_str_eq(names[0], names[1]);
    cr_assert_str_eq(names[2], names[3]);
    cr_assert_str_neq(names[1], names[2]);
    cr_assert_str_neq(names[3], names[4]);
    for (int i = 0; i < 5; i++)
        concur_future_release(fs[i]);
    concur_pool_destroy(p);
}

/* ---- initializer and finalizer ---------------------------------------------------------- */

typedef struct hook_ctx {
    atomic_int inits;
    atomic_int finals;
    atomic_int final_same_thread;
    atomic_int bad_id;
    atomic_int bad_user;
    pthread_mutex_t mu;
    char name[64];
} hook_ctx;

static _Thread_local void *tl_init_arg;

static int init_hook(concur_task *t, void *arg)
{
    hook_ctx *c = arg;
    tl_init_arg = arg;
    atomic_fetch_add(&c->inits, 1);
    if (concur_task_id(t) != 0)
        atomic_fetch_add(&c->bad_id, 1);
    if (concur_task_user(t) != (void *)c)
        atomic_fetch_add(&c->bad_user, 1);
    pthread_mutex_lock(&c->mu);
    const char *n = concur_task_worker_name(t);
    snprintf(c->name, sizeof c->name, "%s", n ? n : "(null)");
    pthread_mutex_unlock(&c->mu);
    return 0;
}

static int final_hook(concur_task *t, void *arg)
{
    (void)t;
    hook_ctx *c = arg;
    if (tl_init_arg == arg)
        atomic_fetch_add(&c->final_same_thread, 1);
    atomic_fetch_add(&c->finals, 1);
    return 0;
}

static int task_saw_init(concur_task *t, const void *in, size_t len)
{
    tu_gate *g = tu_in_ptr(in, len);
    void *seen = tl_init_arg;
    if (g)
        tu_gate_pass(g);
    return concur_task_return(t, &seen, sizeof seen);
}

/* In the shared arena: the hooks of a process pool run in its worker processes. */
static hook_ctx *hook_ctx_new(void)
{
    hook_ctx *c = TU_SHARED(hook_ctx);
    tu_shared_mutex_init(&c->mu);
    return c;
}

Test(pool, initializer_runs_in_each_worker_with_its_arg)
{
    hook_ctx *c = hook_ctx_new();
    concur_pool_opts o = {
        .engine = TU_ENGINE, .max_workers = 3, .initializer = init_hook, .init_arg = c, .user = c};
    concur_pool *p = tu_pool_opts(&o);
    tu_gate *g = tu_gate_new();
    concur_future *fs[3];
    for (int i = 0; i < 3; i++)
        fs[i] = tu_submit(p, task_saw_init, TU_PTR_IN(g));
    cr_assert(tu_gate_await(g, 3, TU_SAFETY));
    cr_assert_eq(atomic_load(&c->inits), 3);
    tu_gate_open(g);
    for (int i = 0; i < 3; i++) {
        const void *data = NULL;
        size_t len = 0;
        cr_assert_eq(concur_future_collect(fs[i], TU_SAFETY, &data, &len), 0);
        cr_assert_eq(len, sizeof(void *));
        void *seen;
        memcpy(&seen, data, sizeof seen);
        cr_assert_eq(seen, (void *)c, "task %d ran in a thread whose initializer did not run", i);
        concur_future_release(fs[i]);
    }
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(&c->inits), 3);
    tu_gate_destroy(g);
    pthread_mutex_destroy(&c->mu);
}

Test(pool, initializer_context)
{
    hook_ctx *c = hook_ctx_new();
    concur_pool_opts o = {.engine = TU_ENGINE,
                          .max_workers = 1,
                          .name = "ctx",
                          .initializer = init_hook,
                          .init_arg = c,
                          .user = c};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = tu_submit(p, tu_task_noop, NULL, 0);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), 0);
    cr_assert_eq(atomic_load(&c->inits), 1);
    cr_assert_eq(atomic_load(&c->bad_id), 0, "concur_task_id in an initializer must be 0");
    cr_assert_eq(atomic_load(&c->bad_user), 0, "concur_task_user in an initializer");
    pthread_mutex_lock(&c->mu);
    cr_assert_str_eq(c->name, TU_WORKER_NAME("ctx", 1));
    pthread_mutex_unlock(&c->mu);
    concur_future_release(f);
    concur_pool_destroy(p);
    pthread_mutex_destroy(&c->mu);
}

Test(pool, finalizer_runs_at_each_worker_exit)
{
    hook_ctx *c = hook_ctx_new();
    concur_pool_opts o = {.engine = TU_ENGINE,
                          .max_workers = 2,
                          .initializer = init_hook,
                          .init_arg = c,
                          .finalizer = final_hook,
                          .final_arg = c,
                          .user = c};
    concur_pool *p = tu_pool_opts(&o);
    tu_gate *g = tu_gate_new();
    concur_future *a = tu_submit_gate(p, g);
    concur_future *b = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 2, TU_SAFETY));
    cr_assert_eq(atomic_load(&c->finals), 0);
    tu_gate_open(g);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(&c->inits), 2);
    cr_assert_eq(atomic_load(&c->finals), 2);
    cr_assert_eq(atomic_load(&c->final_same_thread), 2, "finalizer must run in the worker");
    concur_future_release(a);
    concur_future_release(b);
    tu_gate_destroy(g);
    pthread_mutex_destroy(&c->mu);
}

Test(pool, finalizer_runs_when_idle_worker_exits)
{
    hook_ctx *c = hook_ctx_new();
    concur_pool_opts o = {.engine = TU_ENGINE,
                          .max_workers = 1,
                          .idle_timeout = -1.0,
                          .finalizer = final_hook,
                          .final_arg = c};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = tu_submit(p, tu_task_noop, NULL, 0);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    bool ok;
    TU_POLL_UNTIL(ok, atomic_load(&c->finals) == 1, TU_LOOSE(0.0));
    cr_assert(ok, "finalizer did not run when the idle worker exited");
    concur_future_release(f);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(&c->finals), 1);
    pthread_mutex_destroy(&c->mu);
}

/* ---- queue_limit ---------------------------------------------------------------------- */

Test(pool, queue_limit_efull_then_accepted_once_drained)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 1, .queue_limit = 2};
    concur_pool *p = tu_pool_opts(&o);
    tu_gate *g = tu_gate_new();
    atomic_int *ran = TU_SHARED(atomic_int);
    concur_future *a = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 1, TU_SAFETY)); /* running, not pending */
    concur_future *b = tu_submit(p, tu_task_count, TU_PTR_IN(ran));
    concur_future *c = tu_submit(p, tu_task_count, TU_PTR_IN(ran));
    cr_assert_eq(tu_counts(p).pending, 2);
    concur_future *d = (concur_future *)0x1;
    cr_assert_eq(concur_pool_submit(p, tu_task_count, TU_PTR_IN(ran), &d), CONCUR_EFULL);
    cr_assert_eq(d, (concur_future *)0x1, "*out must be untouched on error");
    cr_assert_eq(concur_pool_submit(p, tu_task_count, TU_PTR_IN(ran), NULL), CONCUR_EFULL);
    cr_assert_eq(tu_counts(p).pending, 2);
    tu_gate_open(g);
    concur_future *bc[2] = {b, c};
    cr_assert_eq(concur_wait_all(bc, 2, TU_SAFETY), 0);
    d = tu_submit(p, tu_task_count, TU_PTR_IN(ran));
    cr_assert_eq(concur_future_wait(d, TU_SAFETY), 0);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(ran), 3, "refused submits must not run");
    concur_future_release(a);
    concur_future_release(b);
    concur_future_release(c);
    concur_future_release(d);
    tu_gate_destroy(g);
}

/* ---- submit and submit_batch ------------------------------------------------------------ */

Test(pool, submit_without_out_still_runs)
{
    concur_pool *p = tu_pool(2);
    atomic_int *ran = TU_SHARED(atomic_int);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(concur_pool_submit(p, tu_task_count, TU_PTR_IN(ran), NULL), 0);
    cr_assert_eq(concur_pool_join(p, TU_SAFETY), 0);
    cr_assert_eq(atomic_load(ran), 5);
    concur_pool_destroy(p);
}

Test(pool, destroy_drains_queued_tasks)
{
    concur_pool *p = tu_pool(1);
    tu_gate *g = tu_gate_new();
    atomic_int *ran = TU_SHARED(atomic_int);
    concur_future *a = tu_submit_gate(p, g);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(concur_pool_submit(p, tu_task_count, TU_PTR_IN(ran), NULL), 0);
    tu_gate_open(g);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(ran), 5);
    cr_assert_eq(concur_future_state(a), CONCUR_DONE);
    concur_future_release(a);
    tu_gate_destroy(g);
}

Test(pool, submit_batch_futures_and_ids_in_order)
{
    concur_pool *p = tu_pool(2);
    concur_future *first = tu_submit(p, tu_task_noop, NULL, 0);
    char bytes[5][20];
    concur_input ins[5];
    for (int i = 0; i < 5; i++) {
        memset(bytes[i], 'a' + i, sizeof bytes[i]);
        ins[i].data = bytes[i];
        ins[i].len = (size_t)(i * 4 + 1); /* inline and out-of-line sizes */
    }
    concur_future *out[5] = {0};
    cr_assert_eq(concur_pool_submit_batch(p, tu_task_echo, ins, 5, out), 0);
    memset(bytes, 0, sizeof bytes); /* copied at submit */
    cr_assert_eq(concur_future_id(first), 1);
    for (int i = 0; i < 5; i++) {
        cr_assert_not_null(out[i]);
        cr_assert_eq(concur_future_id(out[i]), (uint64_t)i + 2);
        const void *data = NULL;
        size_t len = 0;
        cr_assert_eq(concur_future_collect(out[i], TU_SAFETY, &data, &len), 0);
        cr_assert_eq(len, (size_t)(i * 4 + 1));
        for (size_t k = 0; k < len; k++)
            cr_assert_eq(((const char *)data)[k], 'a' + i);
        concur_future_release(out[i]);
    }
    concur_future_release(first);
    concur_pool_destroy(p);
}

Test(pool, submit_batch_without_out)
{
    concur_pool *p = tu_pool(2);
    atomic_int *ran = TU_SHARED(atomic_int);
    void *ranp = ran;
    concur_input ins[4];
    for (int i = 0; i < 4; i++)
        ins[i] = (concur_input){&ranp, sizeof ranp};
    cr_assert_eq(concur_pool_submit_batch(p, tu_task_count, ins, 4, NULL), 0);
    cr_assert_eq(concur_pool_join(p, TU_SAFETY), 0);
    cr_assert_eq(atomic_load(ran), 4);
    concur_pool_destroy(p);
}

Test(pool, submit_batch_all_or_nothing_with_queue_limit)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 1, .queue_limit = 3};
    concur_pool *p = tu_pool_opts(&o);
    tu_gate *g = tu_gate_new();
    atomic_int *ran = TU_SHARED(atomic_int);
    concur_future *a = tu_submit_gate(p, g);
    cr_assert(tu_gate_await(g, 1, TU_SAFETY));
    void *ranp = ran;
    concur_input ins[4];
    for (int i = 0; i < 4; i++)
        ins[i] = (concur_input){&ranp, sizeof ranp};
    concur_future *sentinel = (concur_future *)0x1;
    concur_future *out[4] = {sentinel, sentinel, sentinel, sentinel};
    cr_assert_eq(concur_pool_submit_batch(p, tu_task_count, ins, 4, out), CONCUR_EFULL);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(out[i], sentinel, "out[%d] touched on error", i);
    cr_assert_eq(tu_counts(p).pending, 0, "nothing may be queued on error");
    cr_assert_eq(concur_pool_submit_batch(p, tu_task_count, ins, 3, out), 0);
    cr_assert_eq(tu_counts(p).pending, 3);
    cr_assert_eq(concur_pool_submit(p, tu_task_count, TU_PTR_IN(ran), NULL), CONCUR_EFULL);
    tu_gate_open(g);
    cr_assert_eq(concur_wait_all(out, 3, TU_SAFETY), 0);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(ran), 3);
    for (int i = 0; i < 3; i++)
        concur_future_release(out[i]);
    concur_future_release(a);
    tu_gate_destroy(g);
}

/* ---- run ------------------------------------------------------------------------------- */

Test(pool, run_returns_result_and_future)
{
    concur_pool *p = tu_pool(2);
    concur_future *f = NULL;
    cr_assert_eq(concur_pool_run(p, tu_task_echo, "abc", 3, TU_SAFETY, &f), 0);
    cr_assert_not_null(f);
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_result(f, &data, &len), 0);
    cr_assert_eq(len, 3);
    cr_assert_arr_eq(data, "abc", 3);
    concur_future_release(f);
    cr_assert_eq(concur_pool_run(p, tu_task_echo, "abc", 3, TU_SAFETY, NULL), 0);
    concur_pool_destroy(p);
}

static int task_fail_eio(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    return concur_task_fail(t, -EIO, "run failed");
}

Test(pool, run_returns_task_error)
{
    concur_pool *p = tu_pool(1);
    concur_future *f = NULL;
    cr_assert_eq(concur_pool_run(p, task_fail_eio, NULL, 0, TU_SAFETY, &f), -EIO);
    cr_assert_str_eq(concur_future_error_message(f), "run failed");
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(pool, run_times_out_and_task_goes_on)
{
    concur_pool *p = tu_pool(1);
    tu_gate *g = tu_gate_new();
    concur_future *f = NULL;
    double t0 = tu_now();
    cr_assert_eq(concur_pool_run(p, tu_task_gate, TU_PTR_IN(g), 0.1, &f), CONCUR_ETIMEDOUT);
    cr_assert_geq(tu_now() - t0, 0.1 - TU_EPS);
    cr_assert_not_null(f);
    cr_assert_not(concur_future_is_done(f));
    tu_gate_open(g);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    concur_future_release(f);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

static int task_run_nested(concur_task *t, const void *in, size_t len)
{
    concur_pool *p = tu_in_ptr(in, len);
    concur_future *inner = NULL;
    int rc = concur_pool_run(p, tu_task_echo, "inner", 5, TU_SAFETY, &inner);
    if (rc == 0) {
        const void *data = NULL;
        size_t n = 0;
        rc = concur_future_result(inner, &data, &n);
        if (rc == 0)
            rc = concur_task_return(t, data, n);
    }
    concur_future_release(inner);
    return rc < 0 ? concur_task_fail(t, rc, "nested run: %s", concur_err_name(rc)) : 0;
}

Test(pool, run_from_task_on_same_pool)
{
    TU_SKIP_ON_PROCESSES("a task in a worker process has only a copy of the caller's pool");
    concur_pool *p = tu_pool(2);
    concur_future *f = tu_submit(p, task_run_nested, TU_PTR_IN(p));
    const void *data = NULL;
    size_t len = 0;
    int rc = concur_future_collect(f, TU_SAFETY, &data, &len);
    cr_assert_eq(rc, 0, "%s: %s", concur_err_name(rc), rc ? concur_future_error_message(f) : "");
    cr_assert_eq(len, 5);
    cr_assert_arr_eq(data, "inner", 5);
    concur_future_release(f);
    concur_pool_destroy(p);
}

typedef struct lock_probe {
    concur_pool *p;
    tu_gate in_run;
    atomic_int other_rc;
} lock_probe;

static void *probe_counts(void *arg)
{
    /* while another thread waits in run(), pool calls from here must not block */
    lock_probe *lp = arg;
    concur_pool_counts c;
    concur_pool_counts_get(lp->p, &c);
    int rc = concur_pool_submit(lp->p, tu_task_noop, NULL, 0, NULL);
    atomic_store(&lp->other_rc, rc == 0 ? 1 : rc);
    tu_gate_open(&lp->in_run);
    return NULL;
}

static int task_wait_gate_ptr(concur_task *t, const void *in, size_t len)
{
    (void)t;
    lock_probe *lp = tu_in_ptr(in, len);
    tu_gate_pass(&lp->in_run);
    return 0;
}

Test(pool, run_holds_no_pool_lock_while_waiting)
{
    concur_pool *p = tu_pool(2);
    lock_probe *lp = TU_SHARED(lock_probe);
    lp->p = p;
    tu_gate_init(&lp->in_run);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, probe_counts, lp), 0);
    /* the task only finishes once the other thread's submit went through */
    concur_future *f = NULL;
    cr_assert_eq(concur_pool_run(p, task_wait_gate_ptr, TU_PTR_IN(lp), TU_SAFETY, &f), 0);
    pthread_join(th, NULL);
    cr_assert_eq(atomic_load(&lp->other_rc), 1);
    concur_future_release(f);
    concur_pool_destroy(p);
    tu_gate_destroy(&lp->in_run);
}

/* ---- task_timeout ---------------------------------------------------------------------- */

typedef struct tt_ctx {
    tu_gate release;
    atomic_int saw_stop;
    atomic_int returned;
} tt_ctx;

static int task_overrun(concur_task *t, const void *in, size_t len)
{
    tt_ctx *c = tu_in_ptr(in, len);
    double dl = tu_now() + TU_SAFETY;
    while (!tu_gate_is_open(&c->release) && tu_now() < dl) {
        if (concur_task_should_stop(t))
            atomic_store(&c->saw_stop, 1);
        tu_nap();
    }
    int rc = concur_task_return(t, "late", 4);
    atomic_store(&c->returned, 1);
    return rc;
}

Test(pool, task_timeout_fails_future_before_task_returns)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 1, .task_timeout = 0.2};
    concur_pool *p = tu_pool_opts(&o);
    tt_ctx *c = TU_SHARED(tt_ctx);
    tu_gate_init(&c->release);
    double t0 = tu_now();
    concur_future *f = tu_submit(p, task_overrun, TU_PTR_IN(c));
    const void *data = (const void *)0x1;
    size_t len = 99;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &data, &len), CONCUR_ETASKTIMEOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.2 - TU_EPS);
    cr_assert_lt(el, TU_LOOSE(0.2));
    cr_assert_eq(atomic_load(&c->returned), 0, "the future failed only after the task returned");
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    cr_assert_eq(concur_future_error(f), CONCUR_ETASKTIMEOUT);
    cr_assert_not_null(concur_future_error_message(f));
    bool ok;
    if (TU_PROC) {
        /* The worker process was killed: the task never returns, the worker is free. */
        TU_POLL_UNTIL(ok, tu_counts(p).busy == 0, TU_SAFETY);
        cr_assert(ok, "the worker stayed busy after its process was killed");
    } else {
        TU_POLL_UNTIL(ok, atomic_load(&c->saw_stop) == 1, TU_SAFETY);
        cr_assert(ok, "the task never saw should_stop after its timeout");
        concur_pool_counts cnt = tu_counts(p);
        cr_assert_eq(cnt.busy, 1, "the worker stays busy until the task returns");
    }
    cr_assert_eq(concur_pool_check(p), 0);
    tu_gate_open(&c->release);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(&c->returned), !TU_PROC, "a killed task cannot return");
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED, "the late result must be dropped");
    cr_assert_eq(concur_future_result(f, &data, &len), CONCUR_ETASKTIMEOUT);
    concur_future_release(f);
    tu_gate_destroy(&c->release);
}

typedef struct tt_cb {
    tt_ctx *ctx;
    atomic_int calls;
    atomic_int returned_at_call;
    atomic_int state_at_call;
} tt_cb;

static void cb_timeout(concur_future *f, void *arg)
{
    tt_cb *r = arg;
    atomic_store(&r->returned_at_call, atomic_load(&r->ctx->returned));
    atomic_store(&r->state_at_call, (int)concur_future_state(f));
    atomic_fetch_add(&r->calls, 1);
}

Test(pool, task_timeout_callback_runs_once_at_timeout)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 1, .task_timeout = 0.1};
    concur_pool *p = tu_pool_opts(&o);
    tt_ctx *c = TU_SHARED(tt_ctx);
    tu_gate_init(&c->release);
    tt_cb r = {.ctx = c, .calls = 0, .returned_at_call = -1, .state_at_call = -1};
    concur_future *f = tu_submit(p, task_overrun, TU_PTR_IN(c));
    cr_assert_eq(concur_future_add_callback(f, cb_timeout, &r), 0);
    bool ok;
    TU_POLL_UNTIL(ok, atomic_load(&r.calls) == 1, TU_SAFETY);
    cr_assert(ok, "the callback must run when the task times out");
    cr_assert_eq(atomic_load(&r.returned_at_call), 0);
    cr_assert_eq(atomic_load(&r.state_at_call), CONCUR_FAILED);
    tu_gate_open(&c->release);
    concur_pool_destroy(p);
    cr_assert_eq(atomic_load(&r.calls), 1, "the late return must not run callbacks again");
    concur_future_release(f);
    tu_gate_destroy(&c->release);
}

Test(pool, task_within_timeout_is_done)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 1, .task_timeout = 5.0 * TU_SLOW};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = tu_submit(p, tu_task_echo, "fast", 4);
    const void *data = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &data, &len), 0);
    cr_assert_eq(len, 4);
    cr_assert_arr_eq(data, "fast", 4);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(pool, worker_after_task_timeout_takes_next_task)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 1, .task_timeout = 0.1};
    concur_pool *p = tu_pool_opts(&o);
    tt_ctx *c = TU_SHARED(tt_ctx);
    tu_gate_init(&c->release);
    concur_future *f = tu_submit(p, task_overrun, TU_PTR_IN(c));
    concur_future *g = tu_submit(p, tu_task_echo, "next", 4);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), CONCUR_ETASKTIMEOUT);
    if (TU_PROC) /* the overrunning task's process was killed: its replacement takes g */
        cr_assert_eq(concur_future_collect(g, TU_SAFETY, NULL, NULL), 0);
    else
        cr_assert_not(concur_future_is_done(g), "one worker: still busy with the overrunning task");
    tu_gate_open(&c->release);
    cr_assert_eq(concur_future_collect(g, TU_SAFETY, NULL, NULL), 0);
    concur_future_release(f);
    concur_future_release(g);
    concur_pool_destroy(p);
    tu_gate_destroy(&c->release);
}

/* A batch reaches every idle worker: with three idle workers (one of them possibly spinning)
 * a batch of three blocking tasks runs all three at once, none waits behind another. */
Test(pool, batch_wakes_every_idle_worker)
{
    for (int round = 0; round < 20; round++) {
        concur_pool *p = tu_pool(3);
        cr_assert_eq(concur_pool_spawn_workers(p, 3), 3);
        bool idle;
        TU_POLL_UNTIL(idle, tu_counts(p).free == 3, TU_SAFETY);
        cr_assert(idle);
        /* A quick task first: the worker that ran it spins for a while after it (tens of
         * microseconds). Give it 20 us to get there, so that the batch below usually
         * arrives while a worker spins: the case where parked workers were not woken. This
         * provokes a state; whether it is reached or not, the assertions hold. */
        atomic_int *ran = TU_SHARED(atomic_int);
        cr_assert_eq(concur_pool_run(p, tu_task_count, TU_PTR_IN(ran), TU_SAFETY, NULL), 0);
        for (double t0 = concur_now(); concur_now() - t0 < 20e-6;)
            ;
        tu_gate *g = tu_gate_new();
        concur_input ins[3];
        for (int i = 0; i < 3; i++)
            ins[i] = (concur_input){&g, sizeof g};
        concur_future *fs[3];
        cr_assert_eq(concur_pool_submit_batch(p, tu_task_gate, ins, 3, fs), 0);
        cr_assert(tu_gate_await(g, 3, 2.0), "round %d: not all three ran at once", round);
        tu_gate_open(g);
        cr_assert_eq(concur_wait_all(fs, 3, TU_SAFETY), 0);
        for (int i = 0; i < 3; i++)
            concur_future_release(fs[i]);
        concur_pool_destroy(p);
        tu_gate_destroy(g);
    }
}

/* ---- concur_task_sleep ---------------------------------------------------------------- */

struct sleep_job {
    tu_gate *started; /* in the shared arena */
    double secs;
};

/* Arrives at the gate, sleeps with concur_task_sleep; the result is its return code. */
static int task_stoppable_sleep(concur_task *t, const void *in, size_t len)
{
    struct sleep_job j;
    if (len != sizeof j)
        return CONCUR_EINVAL;
    memcpy(&j, in, sizeof j);
    if (j.started)
        tu_gate_arrive(j.started);
    int rc = concur_task_sleep(t, j.secs);
    return concur_task_return(t, &rc, sizeof rc);
}

Test(pool, task_sleep_sleeps_the_whole_time_unless_stopped)
{
    concur_pool *p = tu_pool(2);
    struct sleep_job j = {.secs = 0.05};
    double t0 = concur_now();
    concur_future *f = tu_submit(p, task_stoppable_sleep, &j, sizeof j);
    const void *d;
    size_t len;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &d, &len), 0);
    cr_assert_eq(*(const int *)d, 0, "a full sleep returns 0");
    cr_assert_geq(concur_now() - t0, 0.05);
    concur_future_release(f);

    /* Cancelled while it sleeps: concur_task_sleep returns CONCUR_ECANCELED at once (the
     * task returns that code as its result here). */
    j = (struct sleep_job){.started = tu_gate_new(), .secs = 60};
    f = tu_submit(p, task_stoppable_sleep, &j, sizeof j);
    cr_assert(tu_gate_await(j.started, 1, TU_SAFETY));
    t0 = concur_now();
    (void)concur_future_cancel(f); /* RUNNING: flagged only (false) */
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    int rc = concur_future_collect(f, 0, &d, &len);
    if (rc == 0) /* threads, processes: the task returned what the sleep said */
        cr_assert_eq(*(const int *)d, CONCUR_ECANCELED, "the sleep was cut short: %d",
                     *(const int *)d);
    else /* coroutines: a cancelled running coroutine fails its future at once */
        cr_assert_eq(rc, CONCUR_ECANCELED, "%s", concur_strerror(rc));
    /* the worker is free again soon: the sleep ended (a thread cannot be killed) */
    struct sleep_job k = {.secs = 0};
    concur_future *g = tu_submit(p, task_stoppable_sleep, &k, sizeof k);
    concur_future *h = tu_submit(p, task_stoppable_sleep, &k, sizeof k);
    cr_assert_eq(concur_future_wait(g, TU_SAFETY), 0);
    cr_assert_eq(concur_future_wait(h, TU_SAFETY), 0);
    cr_assert_lt(concur_now() - t0, TU_SAFETY / 2, "the cancelled sleep ended early");
    cr_assert_eq(concur_pool_join(p, TU_SAFETY), 0);
    cr_assert_eq(concur_task_sleep(NULL, -1), CONCUR_EINVAL);
    cr_assert_eq(concur_task_sleep(NULL, 0), 0);
    concur_future_release(f);
    concur_future_release(g);
    concur_future_release(h);
    tu_gate_destroy(j.started);
    concur_pool_destroy(p);
}

/* ---- completion as a pollable fd ---------------------------------------------------------- */


/* Reads the eventfd counter (0 when not readable). */
static uint64_t efd_take(int efd)
{
    uint64_t v = 0;
    if (read(efd, &v, sizeof v) != (ssize_t)sizeof v)
        return 0;
    return v;
}

Test(pool, future_completion_reaches_an_event_loop_through_an_eventfd)
{
    concur_pool *p = tu_pool(2);
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    cr_assert_geq(efd, 0);
    tu_gate *g = tu_gate_new();
    enum { N = 5 };
    concur_future *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = tu_submit_gate(p, g);
        cr_assert_eq(concur_future_notify_fd(fs[i], efd), 0);
    }
    struct pollfd pf = {.fd = efd, .events = POLLIN};
    cr_assert_eq(poll(&pf, 1, 0), 0, "nothing finished yet: not readable");
    cr_assert_eq(concur_future_remove_notify_fd(fs[N - 1], efd), 1, "removed before it ran");
    tu_gate_open(g);
    /* The loop: wake on the fd until N - 1 completions were counted. */
    uint64_t seen = 0;
    double end = tu_now() + TU_SAFETY;
    while (seen < N - 1 && tu_now() < end) {
        cr_assert_geq(poll(&pf, 1, 1000), 0);
        seen += efd_take(efd);
    }
    cr_assert_eq(seen, N - 1);
    cr_assert_eq(concur_future_wait(fs[N - 1], TU_SAFETY), 0);
    cr_assert_eq(efd_take(efd), 0, "the removed registration never fired");
    /* On a finished future the fd is posted at once. */
    cr_assert_eq(concur_future_notify_fd(fs[0], efd), 0);
    cr_assert_eq(efd_take(efd), 1);
    cr_assert_eq(concur_future_notify_fd(NULL, efd), CONCUR_EINVAL);
    cr_assert_eq(concur_future_notify_fd(fs[0], -1), CONCUR_EINVAL);
    for (int i = 0; i < N; i++)
        concur_future_release(fs[i]);
    tu_gate_destroy(g);
    concur_pool_destroy(p);
    close(efd);
}

/* ---- typed helpers ------------------------------------------------------------------------ */

typedef struct {
    double x, y;
} point;

static int task_scale(concur_task *t, const void *in, size_t len)
{
    point q;
    int rc = CONCUR_TASK_INPUT(t, in, len, &q);
    if (rc)
        return rc;
    return CONCUR_TASK_RETURN_VALUE(t, ((point){q.x * 2, q.y * 3}));
}

static int task_square_int(concur_task *t, const void *in, size_t len)
{
    int x;
    int rc = CONCUR_TASK_INPUT(t, in, len, &x);
    if (rc)
        return rc;
    return CONCUR_TASK_RETURN_VALUE(t, x * x);
}

Test(pool, typed_helpers_submit_a_value_and_read_a_value)
{
    concur_pool *p = tu_pool(2);
    concur_future *f, *g, *h;
    cr_assert_eq(CONCUR_SUBMIT_VALUE(p, task_square_int, 7, &f), 0, "an rvalue");
    point pt = {1.5, -2};
    cr_assert_eq(CONCUR_SUBMIT_VALUE(p, task_scale, pt, &g), 0, "a struct");
    int y = 0;
    cr_assert_eq(CONCUR_FUTURE_GET(f, TU_SAFETY, &y), 0);
    cr_assert_eq(y, 49);
    point r = {0, 0};
    cr_assert_eq(CONCUR_FUTURE_GET(g, TU_SAFETY, &r), 0);
    cr_assert(r.x == 3.0 && r.y == -6.0, "(%g, %g)", r.x, r.y);
    /* Wrong sizes on both sides: a clear code and message, nothing overwritten. */
    double d = 42;
    cr_assert_eq(CONCUR_FUTURE_GET(f, TU_SAFETY, &d), CONCUR_ESIZE);
    cr_assert(d == 42);
    long wrong = 5;
    cr_assert_eq(CONCUR_SUBMIT_VALUE(p, task_square_int, wrong, &h), 0);
    cr_assert_eq(CONCUR_FUTURE_GET(h, TU_SAFETY, &y), CONCUR_ESIZE);
    cr_assert_eq(concur_future_error(h), CONCUR_ESIZE);
    cr_assert_str_eq(concur_future_error_message(h), "input of 8 bytes, 4 expected");
    concur_future_release(f);
    concur_future_release(g);
    concur_future_release(h);
    concur_pool_destroy(p);
}

/* ---- the context of a task's error -------------------------------------------------------- */

/* Not static: the test executables export their functions (ENABLE_EXPORTS), so the loader
 * knows this one's name. */
int concur_test_failing_task(concur_task *t, const void *in, size_t len);
int concur_test_failing_task(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    return concur_task_fail(t, -EIO, "the disk said no");
}

static void fail_and_look(bool with_bt, concur_error_info *ei, concur_future **f)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = 1, .error_backtrace = with_bt};
    concur_pool *p = tu_pool_opts(&o);
    *f = tu_submit(p, concur_test_failing_task, NULL, 0);
    cr_assert_eq(concur_future_wait(*f, TU_SAFETY), 0);
    cr_assert_eq(concur_future_error_info(*f, ei), 0);
    concur_pool_destroy(p);
}

Test(pool, a_task_error_carries_its_function_and_on_request_its_backtrace)
{
    concur_error_info ei;
    concur_future *f;
    fail_and_look(true, &ei, &f);
    cr_assert_eq(ei.code, -EIO);
    cr_assert_str_eq(ei.message, "the disk said no");
    cr_assert_eq(ei.remote, TU_PROC == 1, "remote exactly in a worker process");
    cr_assert_not_null(ei.function);
    cr_assert_str_eq(ei.function, "concur_test_failing_task");
    cr_assert_not_null(ei.backtrace, "error_backtrace: where concur_task_fail was called");
    /* It starts at the call (the task's own frame may be gone: `return concur_task_fail()`
     * is a tail call at -O2). */
    cr_assert(strstr(ei.backtrace, "concur_task_fail") &&
                  strstr(ei.backtrace, "concur_task_fail") < strchr(ei.backtrace, '\n'),
              "%s", ei.backtrace);
    cr_assert(strchr(ei.backtrace, '\n'));
    concur_future_release(f);

    fail_and_look(false, &ei, &f);
    cr_assert_str_eq(ei.message, "the disk said no");
    cr_assert_null(ei.backtrace, "no backtrace unless asked");
    cr_assert_str_eq(ei.function, "concur_test_failing_task");
    concur_future_release(f);
}

/* ---- a command run inside a task ------------------------------------------------------ */

/* A cancel of a task that waits for a command (concur_run_prog) ends the wait and the
 * command, on every engine: in a thread the runner's loop sees the task should stop, in a
 * worker process the same through the cancel word, in a coroutine its suspension is
 * interrupted. */
Test(pool, cancel_stops_a_command_the_task_runs)
{
    char fifo[128];
    tu_fifo_make(fifo, sizeof(fifo));
    concur_pool *p = tu_pool(1);
    concur_future *f = tu_submit(p, tu_task_run_sleeper, fifo, strlen(fifo));
    pid_t pid = tu_fifo_read_pid(fifo, TU_SAFETY);
    (void)concur_future_cancel(f);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0, "the task is still waiting for it");
    cr_assert(tu_pid_ends_within(pid, TU_SAFETY), "the command still runs");
    concur_future_release(f);
    concur_pool_destroy(p);
    tu_fifo_remove(fifo);
}
