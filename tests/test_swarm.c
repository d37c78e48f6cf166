/*
 * test_swarm.c - swarms (concur/swarm.h) on the three engines: n copies running at once, each
 * with its own index; n <= 0; the timing of copies sharing an iterator (conc 1..4 x data
 * 1..4); collect / suppress / fail_hard with the exact error, fail_hard when the failing
 * copy is the last one or when all fail at once; stop keeping finished work and returning
 * promptly; errors readable before completion and always current; wait twice; process
 * copies that exit, abort or are killed; pool options passed through; the process-wide
 * default engine seen from another thread; no fd and no child left after destroy.
 *
 * Copies of every engine share state through one page mapped MAP_SHARED before the swarm
 * starts (a process swarm forks its fork server at start), so the same copy functions run
 * on threads and on processes. Copies wait for each other by polling atomics in that page
 * (with naps and a deadline): process-private gates do not cross processes. Thread and
 * coroutine copies sleep in short slices of concur_co_sleep (which suspends a coroutine, so
 * the copies sharing its loop run on) and give up when concur_task_should_stop() turns true
 * (a thread cannot be killed); process copies sleep in one blocking call, which a stop kills.
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(swarm, .timeout = TU_TIMEOUT, .fini = tu_fini);
TestSuite(swarm_threads, .timeout = TU_TIMEOUT, .fini = tu_fini);
TestSuite(swarm_processes, .timeout = TU_TIMEOUT, .fini = tu_fini);
TestSuite(swarm_coroutines, .timeout = TU_TIMEOUT, .fini = tu_fini);

/* One test body run on each engine: BOTH(name) { ... uses engine `e` ... } (threads,
 * processes, coroutines: concurrently's AsyncIO and Gevent engines). */
#define BOTH(name)                                                                                 \
    static void name(concur_engine e);                                                             \
    Test(swarm_threads, name)                                                                      \
    {                                                                                              \
        name(CONCUR_ENGINE_THREADS);                                                               \
    }                                                                                              \
    Test(swarm_processes, name)                                                                    \
    {                                                                                              \
        name(CONCUR_ENGINE_PROCESSES);                                                             \
    }                                                                                              \
    Test(swarm_coroutines, name)                                                                   \
    {                                                                                              \
        name(CONCUR_ENGINE_COROUTINES);                                                            \
    }                                                                                              \
    static void name(concur_engine e)

#define MAXC 8  /* copies */
#define MAXI 16 /* items */

/* The state copies share; one MAP_SHARED page. */
typedef struct shared {
    bool cooperative; /* sleep in slices polling should_stop (thread copies) */
    int n;            /* copies started */
    int k;            /* items 0 .. k-1 */
    int fail_item;    /* this item fails after its sleep (-1: none) */
    double unit;      /* item d sleeps d units */
    atomic_int next;  /* the shared iterator */
    atomic_int arrived, ended, go, all_seen;
    atomic_int started[MAXI], done[MAXI];
    double finish[MAXI]; /* when item d was done (tu_now) */
    atomic_int seen[MAXC];
    pid_t pid[MAXC];
    atomic_int names_ok, users_ok;
} shared;

static shared *shared_new(concur_engine e)
{
    void *p = mmap(NULL, sizeof(shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED, "mmap: %s", strerror(errno));
    shared *s = p; /* zeroed by mmap */
    s->cooperative = e != CONCUR_ENGINE_PROCESSES;
    s->fail_item = -1;
    return s;
}

static void shared_free(shared *s)
{
    munmap(s, sizeof *s);
}

static concur_swarm *start(concur_engine e, concur_swarm_mode mode, int n, concur_fn fn, shared *s)
{
    concur_pool_opts po = {.engine = e};
    concur_swarm_opts o = {.mode = mode, .pool = &po};
    concur_swarm *sw = NULL;
    s->n = n;
    int rc = concur_swarm_start(&sw, n, fn, TU_PTR_IN(s), &o);
    cr_assert_eq(rc, 0, "start: %s", concur_strerror(rc));
    cr_assert_eq(concur_swarm_engine(sw), e);
    return sw;
}

/* Destroys the swarm and unmaps the shared page. */
static void finish(concur_swarm *sw, shared *s)
{
    concur_swarm_destroy(sw);
    shared_free(s);
}

/* Asserts that @count errors are recorded, the first with @code and @msg; returns it. */
static concur_swarm_err first_error(concur_swarm *sw, size_t count, int code, const char *msg)
{
    concur_swarm_err er = {0};
    cr_assert_eq(concur_swarm_errors(sw, 0, &er), count, "%zu error(s) recorded", count);
    cr_assert_eq(er.code, code, "code %d, want %d", er.code, code);
    cr_assert_str_eq(er.message, msg);
    cr_assert(er.index >= 0 && er.index < concur_swarm_size(sw));
    return er;
}

/* ---- what copies do ----------------------------------------------------------------- */

/* Sleeps @secs; a thread or coroutine copy in slices, false once it should stop. A slice is
 * concur_co_sleep: it suspends a coroutine (copies share a loop) and sleeps a thread. */
static bool nap(concur_task *t, const shared *s, double secs)
{
    if (!s->cooperative) {
        tu_sleep(secs);
        return true;
    }
    double end = tu_now() + secs;
    while (tu_now() < end) {
        if (concur_task_should_stop(t))
            return false;
        double left = end - tu_now();
        if (concur_co_sleep(left < 0.002 ? left : 0.002) != 0)
            return false; /* a coroutine interrupted */
    }
    return !concur_task_should_stop(t);
}

/* Waits until @a reaches @want (TU_SAFETY at most); false if it did not. Naps as nap(). */
static bool await_count(atomic_int *a, int want)
{
    double end = tu_now() + TU_SAFETY;
    while (atomic_load(a) < want)
        if (tu_now() > end || concur_co_sleep(0.001) != 0)
            return false;
    return true;
}

/* Takes items from the shared iterator; item d sleeps d units, then is done, or fails when
 * it is fail_item. */
static int copy_items(concur_task *t, const void *in, size_t len)
{
    shared *s = tu_in_ptr(in, len);
    for (;;) {
        int d = atomic_fetch_add(&s->next, 1);
        if (d >= s->k)
            return 0;
        atomic_store(&s->started[d], 1);
        if (!nap(t, s, d * s->unit))
            return concur_task_fail(t, CONCUR_ECANCELED, "stopped in item %d", d);
        if (d == s->fail_item)
            return concur_task_fail(t, -EIO, "item %d failed", d);
        s->finish[d] = tu_now();
        atomic_store(&s->done[d], 1);
    }
}

/* Starts @n copies of copy_items over items 0..k-1 (item d sleeps d units). */
static concur_swarm *start_items(concur_engine e, concur_swarm_mode mode, int n, shared *s, int k,
                                 double unit, int fail_item)
{
    s->k = k;
    s->unit = unit;
    s->fail_item = fail_item;
    return start(e, mode, n, copy_items, s);
}

/* Records its index and pid, then waits until all n copies have arrived. */
static int copy_barrier(concur_task *t, const void *in, size_t len)
{
    shared *s = tu_in_ptr(in, len);
    int me = concur_swarm_index(t);
    if (me < 0 || me >= MAXC)
        return concur_task_fail(t, -ERANGE, "index %d", me);
    atomic_fetch_add(&s->seen[me], 1);
    s->pid[me] = getpid();
    atomic_fetch_add(&s->arrived, 1);
    if (await_count(&s->arrived, s->n))
        atomic_fetch_add(&s->all_seen, 1);
    return 0;
}

/* All copies arrive, then all fail at once, each with its own message. */
static int copy_all_fail(concur_task *t, const void *in, size_t len)
{
    shared *s = tu_in_ptr(in, len);
    atomic_fetch_add(&s->arrived, 1);
    (void)await_count(&s->arrived, s->n);
    return concur_task_fail(t, -EIO, "copy %d", concur_swarm_index(t));
}

/* Every copy but the last ends well; the last one fails once the others have returned. */
static int copy_last_fails(concur_task *t, const void *in, size_t len)
{
    shared *s = tu_in_ptr(in, len);
    if (concur_swarm_index(t) < s->n - 1) {
        atomic_fetch_add(&s->ended, 1);
        return 0;
    }
    (void)await_count(&s->ended, s->n - 1);
    return concur_task_fail(t, -EDOM, "the last copy fails");
}

/* Copy 0 fails at once; copy 1 fails once the test opens `go`. */
static int copy_early_late(concur_task *t, const void *in, size_t len)
{
    shared *s = tu_in_ptr(in, len);
    if (concur_swarm_index(t) == 0)
        return concur_task_fail(t, -EIO, "early");
    if (!await_count(&s->go, 1))
        return concur_task_fail(t, CONCUR_ETIMEDOUT, "never opened");
    return concur_task_fail(t, -EPERM, "late");
}

/* ---- n copies at once, their indexes ------------------------------------------------- */

BOTH(starts_n_copies_at_once)
{
    shared *s = shared_new(e);
    concur_swarm *sw = start(e, CONCUR_SWARM_COLLECT, 5, copy_barrier, s);
    cr_assert_eq(concur_swarm_size(sw), 5);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), 0);
    cr_assert(concur_swarm_done(sw));
    cr_assert_eq(atomic_load(&s->all_seen), 5, "every copy saw the 5 running at once");
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(atomic_load(&s->seen[i]), 1, "index %d seen once", i);
        if (e != CONCUR_ENGINE_PROCESSES)
            cr_assert_eq(s->pid[i], getpid());
        else
            cr_assert_neq(s->pid[i], getpid(), "copy %d runs in a worker process", i);
        for (int j = 0; j < i && e == CONCUR_ENGINE_PROCESSES; j++)
            cr_assert_neq(s->pid[i], s->pid[j], "copies %d and %d in distinct processes", i, j);
    }
    cr_assert_eq(concur_swarm_errors(sw, 0, NULL), 0);
    finish(sw, s);
}

BOTH(n_le_zero_starts_nothing)
{
    shared *s = shared_new(e);
    for (int n = 0; n >= -3; n -= 3) {
        concur_swarm *sw = NULL;
        concur_pool_opts po = {.engine = e};
        concur_swarm_opts o = {.mode = CONCUR_SWARM_FAIL_HARD, .pool = &po};
        cr_assert_eq(concur_swarm_start(&sw, n, copy_barrier, TU_PTR_IN(s), &o), 0);
        double t0 = tu_now();
        cr_assert_eq(concur_swarm_wait(sw, 0), 0, "n=%d: done at once, no error", n);
        cr_assert_eq(concur_swarm_wait(sw, CONCUR_FOREVER), 0);
        cr_assert_eq(concur_swarm_stop(sw, 0), 0);
        cr_assert_lt(tu_now() - t0, 0.5);
        cr_assert(concur_swarm_done(sw));
        cr_assert_eq(concur_swarm_size(sw), 0);
        cr_assert_eq(concur_swarm_errors(sw, 0, NULL), 0);
        cr_assert_eq(concur_swarm_engine(sw), e);
        concur_swarm_destroy(sw);
    }
    cr_assert_eq(atomic_load(&s->arrived), 0, "no copy ran");
    cr_assert(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "no process was started");
    shared_free(s);
}

/* ---- B.34: copies over a shared iterator, item d takes d units ------------------------ */

/* When item @d is done, in units, with @c copies over items 0..k-1: each item goes to the
 * copy that is free first (all start at 0; item d takes d units). */
static double calc_delta(int c, int d)
{
    double free_at[MAXC] = {0}, fin = 0;
    for (int i = 0; i <= d; i++) {
        int best = 0;
        for (int j = 1; j < c; j++)
            if (free_at[j] < free_at[best])
                best = j;
        fin = free_at[best] + i;
        free_at[best] = fin;
    }
    return fin;
}

Test(swarm, calc_delta_matches_hand_computed_cases)
{
    /* conc 1: items end at 0, 1, 3, 6 (serial). */
    cr_assert_eq(calc_delta(1, 3), 6);
    /* conc 2: A does 0 then 2 (ends 2); B does 1 (ends 1) then 3 (ends 4). */
    cr_assert_eq(calc_delta(2, 2), 2);
    cr_assert_eq(calc_delta(2, 3), 4);
    /* conc 3: A does 0 then 3 (ends 3). conc 4: every item at once. */
    cr_assert_eq(calc_delta(3, 3), 3);
    cr_assert_eq(calc_delta(4, 3), 3);
}

BOTH(timing_conc_1_to_4_data_1_to_4)
{
    const double unit = 0.08;
    /* Lower bounds are exact; the upper bound allows start-up (a process swarm forks its
     * server and workers) and scheduling on a loaded machine, yet stays under one unit in
     * plain builds, so an item run one step too late fails. */
    const double slack = 0.9 * unit * TU_SLOW;
    for (int c = 1; c <= 4; c++) {
        for (int k = 1; k <= 4; k++) {
            shared *s = shared_new(e);
            s->k = k;
            s->unit = unit;
            /* Lower bounds from before the start, upper bounds from its return: the start
             * (a process swarm forks its workers) is not the items' time. */
            double t0 = tu_now();
            concur_swarm *sw = start(e, CONCUR_SWARM_COLLECT, c, copy_items, s);
            double t1 = tu_now();
            cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), 0, "conc %d data %d", c, k);
            for (int d = 0; d < k; d++) {
                double at = s->finish[d] - t0, want = calc_delta(c, d) * unit;
                double late = s->finish[d] - t1;
                cr_assert(atomic_load(&s->done[d]), "conc %d data %d: item %d done", c, k, d);
                cr_assert_geq(at, want - TU_EPS, "conc %d data %d: item %d at %.3f s < %.3f s", c,
                              k, d, at, want);
                cr_assert_leq(late, want + slack, "conc %d data %d: item %d at %.3f s > %.3f s",
                              c, k, d, late, want + slack);
            }
            finish(sw, s);
        }
    }
}

/* ---- B.35-B.39: collect, suppress, fail_hard ------------------------------------------ */

BOTH(collect_reports_after_all_end)
{
    shared *s = shared_new(e);
    concur_swarm *sw = start_items(e, CONCUR_SWARM_COLLECT, 3, s, 3, 0.02, 1);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), CONCUR_ETASK);
    cr_assert(atomic_load(&s->done[0]) && atomic_load(&s->done[2]), "the others' work is done");
    cr_assert_eq(atomic_load(&s->done[1]), 0);

    concur_swarm_err er = first_error(sw, 1, -EIO, "item 1 failed");
    if (e == CONCUR_ENGINE_PROCESSES)
        cr_assert(er.signal == 0 && er.exit_status == -1, "a reported error, not a crash");

    char want[64], text[128], small[8];
    snprintf(want, sizeof want, "copy %d: item 1 failed (EIO)\n", er.index);
    size_t n = concur_swarm_format_errors(sw, text, sizeof text);
    cr_assert_str_eq(text, want);
    cr_assert_eq(n, strlen(want));
    cr_assert_eq(concur_swarm_format_errors(sw, small, sizeof small), n, "full length");
    cr_assert_eq(strlen(small), sizeof small - 1, "truncated, terminated");
    cr_assert_eq(concur_swarm_format_errors(sw, NULL, 0), n);
    finish(sw, s);
}

BOTH(suppress_returns_zero_errors_stay)
{
    shared *s = shared_new(e);
    concur_swarm *sw = start_items(e, CONCUR_SWARM_SUPPRESS, 2, s, 2, 0.02, 1);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), 0);
    cr_assert(atomic_load(&s->done[0]) && !atomic_load(&s->done[1]), "results == {0}");
    first_error(sw, 1, -EIO, "item 1 failed");
    cr_assert_eq(concur_swarm_wait(sw, 0), 0, "the same outcome again");
    finish(sw, s);
}

BOTH(fail_hard_stops_the_others_with_the_original_error)
{
    /* 3 copies over items 0..3, item 1 fails after 1 unit: items 2 and 3 (still sleeping)
     * are interrupted, only item 0 is done. */
    const double unit = TU_SANITIZED ? 0.4 : 0.2;
    shared *s = shared_new(e);
    double t0 = tu_now();
    concur_swarm *sw = start_items(e, CONCUR_SWARM_FAIL_HARD, 3, s, 4, unit, 1);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), -EIO, "the copy's own code");
    double took = tu_now() - t0;
    cr_assert_geq(took, unit - TU_EPS);
    cr_assert_lt(took, 1.9 * unit, "the others were stopped, not waited for (%.3f s)", took);
    cr_assert(atomic_load(&s->done[0]), "results == {0}");
    cr_assert(!atomic_load(&s->done[2]) && !atomic_load(&s->done[3]), "interrupted");
    first_error(sw, 1, -EIO, "item 1 failed"); /* the interrupted copies add nothing */
    cr_assert_eq(concur_swarm_wait(sw, 0), -EIO, "the same outcome again");
    finish(sw, s);
}

BOTH(fail_hard_without_failure_returns_zero)
{
    shared *s = shared_new(e);
    concur_swarm *sw = start_items(e, CONCUR_SWARM_FAIL_HARD, 2, s, 4, 0.01, -1);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), 0);
    for (int d = 0; d < 4; d++)
        cr_assert(atomic_load(&s->done[d]));
    cr_assert_eq(concur_swarm_errors(sw, 0, NULL), 0);
    finish(sw, s);
}

BOTH(fail_hard_when_the_last_copy_fails)
{
    shared *s = shared_new(e);
    concur_swarm *sw = start(e, CONCUR_SWARM_FAIL_HARD, 3, copy_last_fails, s);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), -EDOM, "the last copy's own code");
    cr_assert_eq(first_error(sw, 1, -EDOM, "the last copy fails").index, 2);
    char text[128];
    concur_swarm_format_errors(sw, text, sizeof text);
    char want[64];
    snprintf(want, sizeof want, "copy 2: the last copy fails (error %d)\n", -EDOM);
    cr_assert_str_eq(text, want, "a code without a name shows its number");
    finish(sw, s);
}

BOTH(fail_hard_when_all_fail_at_once)
{
    shared *s = shared_new(e);
    concur_swarm *sw = start(e, CONCUR_SWARM_FAIL_HARD, 4, copy_all_fail, s);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), -EIO);
    concur_swarm_err er;
    cr_assert_eq(concur_swarm_errors(sw, 0, &er), 1, "the first error only");
    char want[32];
    snprintf(want, sizeof want, "copy %d", er.index);
    cr_assert_str_eq(er.message, want, "the message of the copy that failed first");
    cr_assert_eq(concur_swarm_wait(sw, 0), -EIO);
    finish(sw, s);
}

/* ---- B.40-B.42: stop ------------------------------------------------------------------ */

BOTH(stop_keeps_finished_work_and_returns_promptly)
{
    /* 2 copies over items 0..1: item 0 is done at once, item 1 would take a whole unit.
     * Stop once item 1 runs: it is interrupted (a process copy in a blocking sleep is
     * killed; a thread copy notices the flag), item 0 stays done. */
    const double unit = TU_SANITIZED ? 3.0 : 1.0;
    shared *s = shared_new(e);
    double t0 = tu_now();
    concur_swarm *sw = start_items(e, CONCUR_SWARM_COLLECT, 2, s, 2, unit, -1);
    bool ok;
    TU_POLL_UNTIL(ok, atomic_load(&s->done[0]) && atomic_load(&s->started[1]), TU_SAFETY);
    cr_assert(ok);
    cr_assert_eq(concur_swarm_stop(sw, TU_SAFETY), 0);
    double took = tu_now() - t0;
    cr_assert_lt(took, unit / 2, "stop returned after %.3f s, item 1 was interrupted", took);
    cr_assert(concur_swarm_done(sw));
    cr_assert(atomic_load(&s->done[0]), "results == {0}");
    cr_assert(!atomic_load(&s->done[1]));
    cr_assert_eq(concur_swarm_errors(sw, 0, NULL), 0, "the interrupted copy's error is swallowed");
    cr_assert_eq(concur_swarm_wait(sw, 0), 0);
    cr_assert_eq(concur_swarm_stop(sw, 0), 0, "again: harmless");
    finish(sw, s);
}

Test(swarm_threads, stop_waits_for_a_blocking_call)
{
    /* A thread copy in a blocking call cannot be interrupted: stop waits until it returns. */
    shared *s = shared_new(CONCUR_ENGINE_THREADS);
    s->cooperative = false;
    double t0 = tu_now();
    concur_swarm *sw = start_items(CONCUR_ENGINE_THREADS, CONCUR_SWARM_COLLECT, 2, s, 2, 0.3, -1);
    bool ok;
    TU_POLL_UNTIL(ok, atomic_load(&s->started[1]), TU_SAFETY);
    cr_assert(ok);
    cr_assert_eq(concur_swarm_stop(sw, 0), CONCUR_ETIMEDOUT, "still in its sleep");
    cr_assert(!concur_swarm_done(sw));
    cr_assert_eq(concur_swarm_stop(sw, TU_SAFETY), 0);
    cr_assert_geq(tu_now() - t0, 0.3 - TU_EPS, "the sleep ran to its end");
    cr_assert(concur_swarm_done(sw));
    finish(sw, s);
}

/* ---- B.46, B.47: errors always current, wait twice ------------------------------------- */

BOTH(errors_are_current_before_completion)
{
    shared *s = shared_new(e);
    concur_swarm *sw = start(e, CONCUR_SWARM_COLLECT, 2, copy_early_late, s);
    bool ok;
    TU_POLL_UNTIL(ok, concur_swarm_errors(sw, 0, NULL) == 1, TU_SAFETY);
    cr_assert(ok, "copy 0's error is visible while copy 1 runs");
    cr_assert_eq(first_error(sw, 1, -EIO, "early").index, 0);
    cr_assert(!concur_swarm_done(sw));
    cr_assert_eq(concur_swarm_wait(sw, 0), CONCUR_ETIMEDOUT);
    cr_assert_eq(concur_swarm_wait(sw, 0.05), CONCUR_ETIMEDOUT);

    atomic_store(&s->go, 1);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), CONCUR_ETASK, "the early call cached nothing");
    concur_swarm_err er;
    cr_assert_eq(concur_swarm_errors(sw, 1, &er), 2, "now two, in completion order");
    cr_assert(er.index == 1 && er.code == -EPERM);
    cr_assert_str_eq(er.message, "late");
    concur_swarm_errors(sw, 0, &er);
    cr_assert_str_eq(er.message, "early");
    char text[128];
    concur_swarm_format_errors(sw, text, sizeof text);
    cr_assert_str_eq(text, "copy 0: early (EIO)\ncopy 1: late (error -1)\n");
    finish(sw, s);
}

BOTH(wait_twice_same_outcome_without_blocking)
{
    static const concur_swarm_mode modes[] = {CONCUR_SWARM_COLLECT, CONCUR_SWARM_SUPPRESS,
                                              CONCUR_SWARM_FAIL_HARD};
    static const int want[] = {CONCUR_ETASK, 0, -EIO};
    for (int m = 0; m < 3; m++) {
        shared *s = shared_new(e);
        concur_swarm *sw = start_items(e, modes[m], 2, s, 2, 0, 1);
        cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), want[m], "mode %d", m);
        double t0 = tu_now();
        cr_assert_eq(concur_swarm_wait(sw, CONCUR_FOREVER), want[m], "mode %d, again", m);
        cr_assert_eq(concur_swarm_wait(sw, 0), want[m], "mode %d, a third time", m);
        cr_assert_lt(tu_now() - t0, 0.1 * TU_SLOW, "no blocking");
        finish(sw, s);
    }
}

/* ---- B.45: process copies that end without reporting ----------------------------------- */

static int copy_crash(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    switch (concur_swarm_index(t)) {
    case 0:
        exit(3);
    case 1:
        abort();
    case 2:
        _exit(4);
    default:
        raise(SIGKILL);
    }
    return 0;
}

Test(swarm_processes, copies_that_exit_or_die_count_as_failed)
{
    concur_pool_opts po = {.engine = CONCUR_ENGINE_PROCESSES};
    concur_swarm_opts o = {.pool = &po};
    concur_swarm *sw;
    cr_assert_eq(concur_swarm_start(&sw, 4, copy_crash, NULL, 0, &o), 0);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), CONCUR_ETASK, "the wait does not hang");
    cr_assert_eq(concur_swarm_errors(sw, 0, NULL), 4);
    bool got[4] = {false};
    for (size_t i = 0; i < 4; i++) {
        concur_swarm_err er;
        concur_swarm_errors(sw, i, &er);
        cr_assert_eq(er.code, CONCUR_ECRASHED, "copy %d", er.index);
        cr_assert(er.index >= 0 && er.index < 4);
        got[er.index] = true;
        static const int sig[] = {0, SIGABRT, 0, SIGKILL}, status[] = {3, -1, 4, -1};
        cr_assert_eq(er.signal, sig[er.index], "copy %d: %s", er.index, er.message);
        cr_assert_eq(er.exit_status, status[er.index], "copy %d: %s", er.index, er.message);
    }
    cr_assert(got[0] && got[1] && got[2] && got[3]);
    concur_swarm_destroy(sw);
    cr_assert(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "no child left");
}

/* ---- pool options, arguments ------------------------------------------------------------ */

static int copy_named(concur_task *t, const void *in, size_t len)
{
    shared *s = tu_in_ptr(in, len);
    const char *name = concur_task_worker_name(t);
    if (name && strncmp(name, "concur-crowd-", 13) == 0)
        atomic_fetch_add(&s->names_ok, 1);
    if (concur_task_user(t) == s)
        atomic_fetch_add(&s->users_ok, 1);
    if (concur_swarm_index(t) == 1 && !nap(t, s, TU_SAFETY))
        return concur_task_fail(t, CONCUR_ECANCELED, "stopped");
    return 0;
}

BOTH(pool_options_apply)
{
    shared *s = shared_new(e);
    concur_pool_opts po = {
        .engine = e, .name = "crowd", .user = s, .task_timeout = 0.2, .max_workers = 1};
    concur_swarm_opts o = {.pool = &po};
    concur_swarm *sw;
    s->n = 2;
    cr_assert_eq(concur_swarm_start(&sw, 2, copy_named, TU_PTR_IN(s), &o), 0);
    cr_assert_eq(concur_swarm_size(sw), 2, "max_workers is the swarm's own");
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), CONCUR_ETASK);
    concur_swarm_err er;
    cr_assert_eq(concur_swarm_errors(sw, 0, &er), 1);
    cr_assert_eq(er.index, 1);
    cr_assert_eq(er.code, CONCUR_ETASKTIMEOUT, "%s", er.message);
    cr_assert_eq(atomic_load(&s->names_ok), 2, "the pool's name");
    cr_assert_eq(atomic_load(&s->users_ok), 2, "the pool's user pointer");
    finish(sw, s);
}

Test(swarm, default_pool_name_and_input_bytes)
{
    shared *s = shared_new(CONCUR_ENGINE_THREADS);
    concur_swarm *sw;
    s->n = 3;
    cr_assert_eq(concur_swarm_start(&sw, 3, copy_barrier, TU_PTR_IN(s), NULL), 0);
    cr_assert_eq(concur_swarm_engine(sw), CONCUR_ENGINE_THREADS, "the default engine");
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), 0);
    cr_assert_eq(atomic_load(&s->all_seen), 3);
    finish(sw, s);
}

Test(swarm, bad_arguments)
{
    concur_swarm *sw = (concur_swarm *)0x1;
    char b = 0;
    cr_assert_eq(concur_swarm_start(NULL, 1, tu_task_noop, NULL, 0, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_swarm_start(&sw, 1, NULL, NULL, 0, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_swarm_start(&sw, 1, tu_task_noop, NULL, 1, NULL), CONCUR_EINVAL);
    concur_swarm_opts o = {.mode = (concur_swarm_mode)7};
    cr_assert_eq(concur_swarm_start(&sw, 1, tu_task_noop, &b, 1, &o), CONCUR_EINVAL);
    concur_pool_opts po = {.engine = (concur_engine)9};
    o = (concur_swarm_opts){.pool = &po};
    cr_assert_eq(concur_swarm_start(&sw, 1, tu_task_noop, &b, 1, &o), CONCUR_EINVAL);
    po = (concur_pool_opts){.engine = CONCUR_ENGINE_THREADS, .worker_cpu_limit = 1};
    cr_assert_eq(concur_swarm_start(&sw, 1, tu_task_noop, &b, 1, &o), CONCUR_EINVAL,
                 "the pool's own check");
    cr_assert_eq(sw, (concur_swarm *)0x1, "untouched on error");

    cr_assert_eq(concur_swarm_wait(NULL, 0), CONCUR_EINVAL);
    cr_assert_eq(concur_swarm_stop(NULL, 0), CONCUR_EINVAL);
    cr_assert_eq(concur_swarm_errors(NULL, 0, NULL), 0);
    cr_assert_eq(concur_swarm_format_errors(NULL, NULL, 0), 0);
    cr_assert(!concur_swarm_done(NULL));
    cr_assert_eq(concur_swarm_size(NULL), 0);
    concur_swarm_destroy(NULL);
}

/* ---- B.49: the default engine ------------------------------------------------------------ */

static void *set_processes(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)concur_swarm_set_default_engine(CONCUR_ENGINE_PROCESSES);
}

Test(swarm, default_engine_is_process_wide)
{
    cr_assert_eq(concur_swarm_get_default_engine(), CONCUR_ENGINE_THREADS);
    pthread_t th;
    void *ret;
    cr_assert_eq(pthread_create(&th, NULL, set_processes, NULL), 0);
    cr_assert_eq(pthread_join(th, &ret), 0);
    cr_assert_eq((intptr_t)ret, 0);
    cr_assert_eq(concur_swarm_get_default_engine(), CONCUR_ENGINE_PROCESSES,
                 "set in another thread, seen here");

    shared *s = shared_new(CONCUR_ENGINE_PROCESSES);
    s->n = 2;
    concur_swarm *sw;
    concur_swarm_opts o = {.mode = CONCUR_SWARM_SUPPRESS}; /* no pool options: the default */
    cr_assert_eq(concur_swarm_start(&sw, 2, copy_barrier, TU_PTR_IN(s), &o), 0);
    cr_assert_eq(concur_swarm_engine(sw), CONCUR_ENGINE_PROCESSES);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), 0);
    cr_assert(s->pid[0] != getpid() && s->pid[1] != getpid(), "copies ran in processes");
    finish(sw, s);

    cr_assert_eq(concur_swarm_set_default_engine((concur_engine)5), CONCUR_EINVAL);
    cr_assert_eq(concur_swarm_get_default_engine(), CONCUR_ENGINE_PROCESSES, "unchanged");
    cr_assert_eq(concur_swarm_set_default_engine(CONCUR_ENGINE_THREADS), 0);
    cr_assert_eq(concur_swarm_get_default_engine(), CONCUR_ENGINE_THREADS);
}

/* ---- cleanliness ------------------------------------------------------------------------ */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

BOTH(destroy_leaves_no_fd_and_no_child)
{
    int fds = count_fds();
    shared *s = shared_new(e);
    s->k = 3;
    concur_swarm *sw = start(e, CONCUR_SWARM_COLLECT, 3, copy_items, s);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), 0);
    concur_swarm_destroy(sw);
    cr_assert_eq(count_fds(), fds, "no fd left behind");
    cr_assert(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "no child left");

    /* Destroyed while copies still run: it stops them first. */
    s->k = 2;
    s->unit = TU_SANITIZED ? 30 : 10;
    atomic_store(&s->next, 0);
    sw = start(e, CONCUR_SWARM_COLLECT, 2, copy_items, s);
    bool ok;
    TU_POLL_UNTIL(ok, atomic_load(&s->started[1]), TU_SAFETY);
    cr_assert(ok);
    double t0 = tu_now();
    concur_swarm_destroy(sw);
    cr_assert_lt(tu_now() - t0, s->unit / 2, "destroy stopped the copies");
    cr_assert_eq(count_fds(), fds, "no fd left behind");
    cr_assert(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD, "no child left");
    shared_free(s);
}

/* ---- a broken pool --------------------------------------------------------------------- */

static int init_fails(concur_task *t, void *arg)
{
    (void)arg;
    return concur_task_fail(t, -EIO, "no database");
}

BOTH(initializer_failure_is_each_copys_error)
{
    shared *s = shared_new(e);
    concur_pool_opts po = {.engine = e, .initializer = init_fails};
    concur_swarm_opts o = {.pool = &po};
    concur_swarm *sw = NULL;
    s->n = 2;
    /* Every worker is set up before a copy is handed out: the start fails. */
    int rc = concur_swarm_start(&sw, 2, copy_barrier, TU_PTR_IN(s), &o);
    cr_assert_eq(rc, CONCUR_EINITIALIZER, "%s", concur_strerror(rc));
    cr_assert_null(sw);
    cr_assert_eq(atomic_load(&s->arrived), 0, "no copy ran");
    shared_free(s);
}

/* ---- process copies: every worker process exists when start returns --------------------- */

/* The children of process @pid (all its threads). */
static int count_children(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[384];
        snprintf(path, sizeof path, "%s/%s/children", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        int c;
        while (fscanf(f, "%d", &c) == 1)
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* The only child of this process (the swarm's fork server). */
static pid_t only_child(void)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    int c = 0, n = 0, first = 0;
    while (fscanf(f, "%d", &c) == 1)
        if (n++ == 0)
            first = c;
    fclose(f);
    cr_assert_eq(n, 1, "one fork server");
    return (pid_t)first;
}

/* Waits for the gate to open, napping as nap() (coroutine copies share a loop). */
static int copy_gate(concur_task *t, const void *in, size_t len)
{
    (void)t;
    tu_gate *g = tu_in_ptr(in, len);
    tu_gate_arrive(g);
    double end = tu_now() + TU_SAFETY;
    while (!tu_gate_is_open(g))
        if (tu_now() > end || concur_co_sleep(0.001) != 0)
            return CONCUR_ETIMEDOUT;
    return 0;
}

Test(swarm_processes, every_copy_has_its_process_when_start_returns)
{
    concur_pool_opts po = {.engine = CONCUR_ENGINE_PROCESSES};
    concur_swarm_opts o = {.pool = &po};
    tu_gate *g = tu_gate_new();
    concur_swarm *sw;
    cr_assert_eq(concur_swarm_start(&sw, 6, copy_gate, TU_PTR_IN(g), &o), 0);
    /* Looked at at once: not one of them may be still to fork. */
    cr_assert_eq(count_children(only_child()), 6, "six worker processes");
    tu_gate_open(g);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), 0);
    concur_swarm_destroy(sw);
    tu_gate_destroy(g);
}

/* ---- the end of a swarm as a pollable fd ------------------------------------------------- */


BOTH(swarm_end_reaches_an_event_loop_through_an_eventfd)
{
    concur_pool_opts po = {.engine = e};
    concur_swarm_opts o = {.pool = &po};
    tu_gate *g = tu_gate_new();
    int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    cr_assert_geq(efd, 0);
    concur_swarm *sw;
    cr_assert_eq(concur_swarm_start(&sw, 3, copy_gate, TU_PTR_IN(g), &o), 0);
    cr_assert_eq(concur_swarm_notify_fd(sw, efd), 0);
    struct pollfd pf = {.fd = efd, .events = POLLIN};
    cr_assert_eq(poll(&pf, 1, 0), 0, "copies still running: not readable");
    tu_gate_open(g);
    cr_assert_eq(poll(&pf, 1, (int)(TU_SAFETY * 1000)), 1, "readable once all have ended");
    uint64_t v = 0;
    cr_assert_eq(read(efd, &v, sizeof v), (ssize_t)sizeof v);
    cr_assert_eq(v, 1, "posted once, for the whole swarm");
    cr_assert(concur_swarm_done(sw));
    cr_assert_eq(concur_swarm_notify_fd(sw, efd), 0, "done already: posted at once");
    cr_assert_eq(read(efd, &v, sizeof v), (ssize_t)sizeof v);
    concur_swarm_destroy(sw);
    tu_gate_destroy(g);
    close(efd);
}
