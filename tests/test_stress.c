/*
 * test_stress.c - many threads hammer one pool: submit, cancel, add/remove callbacks and
 * a shutdown with CONCUR_SHUTDOWN_CANCEL midway. Checks the exactly-once promises:
 * every future ends in exactly one terminal state, a task body runs at most once (exactly
 * once when DONE, never when CANCELLED), every registered callback runs exactly once
 * unless it was removed, and cancelled + done == submitted.
 *
 * Sizes scale down under sanitizers (TSan on 2 cores must finish well within a minute).
 *
 * Built twice (see testutil.h): test_stress on the thread engine, test_stress_proc on the
 * process engine (fewer tasks: each is a round trip to a worker process).
 */
#include "testutil.h"

#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#if TU_PROC /* every task is a round trip to a worker process */
#define N_TASKS (TU_TSAN ? 5000 : TU_ASAN ? 10000 : 20000)
#elif TU_TSAN
#define N_TASKS 40000
#else
#define N_TASKS 100000
#endif

#define N_SUBMITTERS 8
#define N_CANCELLERS 2
#define N_CB_ADDERS 2

TestSuite(stress, .timeout = TU_SANITIZED ? 300.0 : 60.0, .fini = tu_fini);

typedef struct slot {
    _Atomic(concur_future *) f;
    atomic_int state;  /* 0 not yet, 1 submitted, -1 refused */
    atomic_int runs;   /* task body executions */
    atomic_int cb_reg; /* registrations that were not removed */
    atomic_int cb_ran;
    atomic_int cancel_true;
} slot;

typedef struct stress {
    concur_pool *pool;
    slot *slots;
    size_t n;
    atomic_size_t n_submitted;
    atomic_size_t n_runs; /* task bodies run, all slots */
    atomic_int stop;
    atomic_int bad_submit_rc;
    atomic_int bad_cb_state;
    atomic_int bad_cb_rc;
    size_t shutdown_after; /* 0: no shutdown thread */
    int shutdown_rc;
} stress;

/* Tasks and callbacks find the slots here. S and the slots are in the shared arena and S is
 * set before the pool is created: the tasks of a process pool count their runs in them. */
static stress *S;

static int stress_task(concur_task *t, const void *in, size_t len)
{
    uint32_t idx;
    if (len != sizeof idx)
        return -EINVAL;
    memcpy(&idx, in, sizeof idx);
    atomic_fetch_add(&S->slots[idx].runs, 1);
    atomic_fetch_add(&S->n_runs, 1);
    return concur_task_return(t, &idx, sizeof idx);
}

static void stress_cb(concur_future *f, void *arg)
{
    size_t idx = (size_t)(uintptr_t)arg;
    if (!concur_future_is_done(f))
        atomic_fetch_add(&S->bad_cb_state, 1);
    atomic_fetch_add(&S->slots[idx].cb_ran, 1);
}

static void add_cb(size_t idx, concur_future *f)
{
    slot *s = &S->slots[idx];
    atomic_fetch_add(&s->cb_reg, 1);
    int rc = concur_future_add_callback(f, stress_cb, (void *)(uintptr_t)idx);
    if (rc != 0) {
        atomic_fetch_sub(&s->cb_reg, 1);
        atomic_fetch_add(&S->bad_cb_rc, 1);
    }
}

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void *submitter(void *arg)
{
    size_t k = (size_t)(uintptr_t)arg;
    size_t per = S->n / N_SUBMITTERS;
    size_t lo = k * per, hi = k + 1 == N_SUBMITTERS ? S->n : lo + per;
    for (size_t i = lo; i < hi; i++) {
        uint32_t idx = (uint32_t)i;
        concur_future *f = NULL;
        int rc = concur_pool_submit(S->pool, stress_task, &idx, sizeof idx, &f);
        if (rc == 0) {
            atomic_store(&S->slots[i].f, f);
            atomic_store(&S->slots[i].state, 1);
            atomic_fetch_add(&S->n_submitted, 1);
            if (i % 3 == 0)
                add_cb(i, f);
        } else {
            atomic_store(&S->slots[i].state, -1);
            if (rc != CONCUR_ECLOSED)
                atomic_fetch_add(&S->bad_submit_rc, 1);
        }
    }
    return NULL;
}

/* Cancels random even slots. The odd ones are left to run: with 12 busy threads on few
 * cores, a worker (above all a worker process, two context switches per task) may not get
 * to any task before every pending one was cancelled, and the test would pass vacuously. */
static void *canceller(void *arg)
{
    uint64_t x = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
    while (!atomic_load(&S->stop)) {
        size_t idx = (size_t)(rnd(&x) % S->n) & ~(size_t)1;
        concur_future *f = atomic_load(&S->slots[idx].f);
        if (f && concur_future_cancel(f))
            atomic_fetch_add(&S->slots[idx].cancel_true, 1);
    }
    return NULL;
}

static void *cb_adder(void *arg)
{
    uint64_t x = 0x2545f4914f6cdd1dull * ((uintptr_t)arg + 7);
    unsigned it = 0;
    while (!atomic_load(&S->stop)) {
        size_t idx = (size_t)(rnd(&x) % S->n);
        concur_future *f = atomic_load(&S->slots[idx].f);
        if (!f)
            continue;
        add_cb(idx, f);
        if (++it % 4 == 0) {
            /* removes every pending (cb, idx) registration, from any thread */
            int removed = concur_future_remove_callback(f, stress_cb, (void *)(uintptr_t)idx);
            if (removed < 0)
                atomic_fetch_add(&S->bad_cb_rc, 1);
            else
                atomic_fetch_sub(&S->slots[idx].cb_reg, removed);
        }
    }
    return NULL;
}

/* Shuts the pool down once half the tasks were submitted and some ran: on a loaded machine
 * the first task of a process pool can take tens of milliseconds (two context switches per
 * task among a dozen busy threads), by when every task may have been submitted. */
#define MIN_RUNS_BEFORE_SHUTDOWN 100

static void *shutdowner(void *arg)
{
    (void)arg;
    double dl = tu_now() + TU_SAFETY * 4;
    while ((atomic_load(&S->n_submitted) < S->shutdown_after ||
            atomic_load(&S->n_runs) < MIN_RUNS_BEFORE_SHUTDOWN) &&
           tu_now() < dl)
        sched_yield();
    S->shutdown_rc = concur_pool_shutdown(S->pool, CONCUR_SHUTDOWN_CANCEL, CONCUR_FOREVER);
    return NULL;
}

static void run_stress(size_t n, bool shutdown_midway)
{
    S = TU_SHARED(stress);
    S->slots = tu_shared_alloc(n * sizeof *S->slots);
    S->n = n;
    S->shutdown_after = shutdown_midway ? n / 2 : 0;
    S->shutdown_rc = 1;
    S->pool = tu_pool(4);

    pthread_t sub[N_SUBMITTERS], can[N_CANCELLERS], add[N_CB_ADDERS], sd;
    for (int i = 0; i < N_CANCELLERS; i++)
        cr_assert_eq(pthread_create(&can[i], NULL, canceller, (void *)(uintptr_t)i), 0);
    for (int i = 0; i < N_CB_ADDERS; i++)
        cr_assert_eq(pthread_create(&add[i], NULL, cb_adder, (void *)(uintptr_t)i), 0);
    if (shutdown_midway)
        cr_assert_eq(pthread_create(&sd, NULL, shutdowner, NULL), 0);
    for (int i = 0; i < N_SUBMITTERS; i++)
        cr_assert_eq(pthread_create(&sub[i], NULL, submitter, (void *)(uintptr_t)i), 0);
    for (int i = 0; i < N_SUBMITTERS; i++)
        pthread_join(sub[i], NULL);
    if (shutdown_midway) {
        pthread_join(sd, NULL);
        cr_assert_eq(S->shutdown_rc, 0, "shutdown: %s", concur_err_name(S->shutdown_rc));
    } else {
        cr_assert_eq(concur_pool_join(S->pool, CONCUR_FOREVER), 0);
    }
    atomic_store(&S->stop, 1);
    for (int i = 0; i < N_CANCELLERS; i++)
        pthread_join(can[i], NULL);
    for (int i = 0; i < N_CB_ADDERS; i++)
        pthread_join(add[i], NULL);
    concur_pool_destroy(S->pool); /* every worker (and the callbacks it ran) is over */

    cr_assert_eq(atomic_load(&S->bad_submit_rc), 0, "submit failed with other than ECLOSED");
    cr_assert_eq(atomic_load(&S->bad_cb_rc), 0, "add/remove_callback failed");
    cr_assert_eq(atomic_load(&S->bad_cb_state), 0, "a callback saw a non-terminal future");

    size_t submitted = 0, done = 0, cancelled = 0, other = 0, refused = 0;
    size_t ran_cancelled = 0; /* coroutines: ran, and were cancelled while running */
    size_t bad_runs = 0, bad_cb = 0, bad_result = 0, bad_cancel = 0, first_bad = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        slot *s = &S->slots[i];
        int runs = atomic_load(&s->runs);
        if (atomic_load(&s->state) != 1) {
            refused++;
            if (runs != 0)
                bad_runs++;
            continue;
        }
        submitted++;
        concur_future *f = atomic_load(&s->f);
        concur_state st = concur_future_state(f);
        bool bad = false;
        if (st == CONCUR_DONE) {
            done++;
            const void *data = NULL;
            size_t len = 0;
            uint32_t v = 0;
            if (concur_future_result(f, &data, &len) != 0 || len != sizeof v)
                bad_result++, bad = true;
            else if (memcpy(&v, data, sizeof v), v != (uint32_t)i)
                bad_result++, bad = true;
            if (runs != 1)
                bad_runs++, bad = true;
        } else if (st == CONCUR_CANCELLED) {
            cancelled++;
            if (runs != 0)
                bad_runs++, bad = true;
        } else if (TU_CO && st == CONCUR_FAILED && concur_future_error(f) == CONCUR_ECANCELED) {
            /* A coroutine cancelled while it ran fails at once (docs/coroutines.md). */
            cancelled++;
            ran_cancelled++;
            if (runs != 1)
                bad_runs++, bad = true;
        } else {
            other++, bad = true;
        }
        if (atomic_load(&s->cancel_true) > 1 ||
            (atomic_load(&s->cancel_true) == 1 && st != CONCUR_CANCELLED))
            bad_cancel++, bad = true;
        if (atomic_load(&s->cb_ran) != atomic_load(&s->cb_reg))
            bad_cb++, bad = true;
        if (bad && first_bad == SIZE_MAX)
            first_bad = i;
    }
    if (first_bad != SIZE_MAX) {
        slot *s = &S->slots[first_bad];
        cr_log_error("slot %zu: state %s runs %d cb_reg %d cb_ran %d cancel_true %d", first_bad,
                     concur_state_name(concur_future_state(atomic_load(&s->f))),
                     atomic_load(&s->runs), atomic_load(&s->cb_reg), atomic_load(&s->cb_ran),
                     atomic_load(&s->cancel_true));
    }
    cr_log_info("n %zu submitted %zu done %zu cancelled %zu (%zu while running) refused %zu", n,
                submitted, done, cancelled, ran_cancelled, refused);
    cr_assert_eq(other, 0, "futures not DONE/CANCELLED after destroy");
    cr_assert_eq(bad_runs, 0, "task bodies run a wrong number of times");
    cr_assert_eq(bad_result, 0, "DONE futures with a wrong result");
    cr_assert_eq(bad_cancel, 0, "cancel() returned true but the future is not CANCELLED");
    cr_assert_eq(bad_cb, 0, "callbacks not run exactly once");
    cr_assert_eq(done + cancelled, submitted);
    cr_assert_eq(submitted + refused, n);
    cr_assert_eq(submitted, atomic_load(&S->n_submitted));
    if (shutdown_midway) {
        cr_assert_geq(submitted, n / 2);
        /* The shutdown came after MIN_RUNS_BEFORE_SHUTDOWN task bodies had started: each of
         * them is DONE, or on coroutines FAILED by a cancel that came while it ran. */
        cr_assert_geq(done + ran_cancelled, MIN_RUNS_BEFORE_SHUTDOWN,
                      "done %zu, ran and cancelled %zu", done, ran_cancelled);
    } else {
        cr_assert_eq(submitted, n);
        cr_assert_geq(done, n / 2, "the odd slots are never cancelled");
    }

    for (size_t i = 0; i < n; i++)
        concur_future_release(atomic_load(&S->slots[i].f));
    S = NULL;
}

Test(stress, submit_cancel_callbacks_and_shutdown_midway)
{
    run_stress(N_TASKS, true);
}

Test(stress, submit_cancel_callbacks_then_join)
{
    run_stress(N_TASKS / 4, false);
}

/* ---- callbacks racing completion on standalone futures ---------------------------------- */

#define N_FUT (TU_SANITIZED ? 2000 : 20000)

typedef struct race {
    concur_future **fs;
    atomic_int *reg;
    atomic_int *ran;
    atomic_size_t completed; /* futures [0, completed) are terminal */
    atomic_int stop;
    atomic_int bad;
} race;

static race *R;

static void race_cb(concur_future *f, void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    if (!concur_future_is_done(f))
        atomic_fetch_add(&R->bad, 1);
    atomic_fetch_add(&R->ran[i], 1);
}

static void *race_adder(void *arg)
{
    uint64_t x = 0x51afd7ed558ccd1dull + (uintptr_t)arg;
    unsigned it = 0;
    while (!atomic_load(&R->stop)) {
        /* aim near the completion front, where the races are */
        size_t front = atomic_load(&R->completed);
        size_t i = front + (size_t)(rnd(&x) % 64);
        if (i >= N_FUT)
            i = (size_t)(rnd(&x) % N_FUT);
        atomic_fetch_add(&R->reg[i], 1);
        if (concur_future_add_callback(R->fs[i], race_cb, (void *)(uintptr_t)i) != 0) {
            atomic_fetch_sub(&R->reg[i], 1);
            atomic_fetch_add(&R->bad, 1);
        }
        if (++it % 3 == 0) {
            int r = concur_future_remove_callback(R->fs[i], race_cb, (void *)(uintptr_t)i);
            if (r < 0)
                atomic_fetch_add(&R->bad, 1);
            else
                atomic_fetch_sub(&R->reg[i], r);
        }
    }
    return NULL;
}

Test(stress, callbacks_race_completion_exactly_once, TU_NO_ENGINE)
{
    R = calloc(1, sizeof *R);
    R->fs = calloc(N_FUT, sizeof *R->fs);
    R->reg = calloc(N_FUT, sizeof *R->reg);
    R->ran = calloc(N_FUT, sizeof *R->ran);
    cr_assert(R->fs && R->reg && R->ran);
    for (size_t i = 0; i < N_FUT; i++)
        cr_assert_eq(concur_future_create(&R->fs[i]), 0);
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, race_adder, (void *)(uintptr_t)i), 0);
    for (size_t i = 0; i < N_FUT; i++) {
        if (i % 3 == 0)
            cr_assert(concur_future_cancel(R->fs[i]));
        else if (i % 3 == 1)
            cr_assert_eq(concur_future_set_result(R->fs[i], &i, sizeof i), 0);
        else
            cr_assert_eq(concur_future_set_error(R->fs[i], -EIO, "x"), 0);
        atomic_store(&R->completed, i + 1);
    }
    atomic_store(&R->stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    size_t bad = 0, first = SIZE_MAX;
    for (size_t i = 0; i < N_FUT; i++) {
        if (atomic_load(&R->ran[i]) != atomic_load(&R->reg[i])) {
            bad++;
            if (first == SIZE_MAX)
                first = i;
        }
    }
    cr_assert_eq(bad, 0, "first mismatch at %zu: registered %d ran %d", first,
                 first == SIZE_MAX ? 0 : atomic_load(&R->reg[first]),
                 first == SIZE_MAX ? 0 : atomic_load(&R->ran[first]));
    cr_assert_eq(atomic_load(&R->bad), 0);
    for (size_t i = 0; i < N_FUT; i++)
        concur_future_release(R->fs[i]);
    free(R->fs);
    free(R->reg);
    free(R->ran);
    free(R);
    R = NULL;
}
