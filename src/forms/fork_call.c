/*
 * fork_call.c - fork calls (one child process per call, a future per child) and waitfor.
 *
 * Flow of one call: concur_fork_call() makes a result pipe, flushes stdio, and under g.mu
 * makes sure the supervisor runs, forks, opens a pidfd for the child and puts the call's
 * record, the pipe's read end and the pidfd into the supervisor's loop (sys/os.h) -> the
 * child runs the task function on its copy of the caller's memory, flushes stdio, writes
 * one RESULT frame to the pipe and _exits -> the supervisor feeds what the pipe holds, as
 * it becomes readable, to the call's receiver (sys/wire.h: a result of any size streams
 * into its buffer) -> the pidfd becomes readable when the child ends: the supervisor drains
 * the pipe, reaps the child with waitid(P_PIDFD), and completes the future from what
 * arrived and how the child ended.
 *
 * Wire format: the frames of sys/wire.h, with the call's id. The child writes one RESULT
 * (its result bytes, or its negative code and message); its crash handler (sys/wire.h, for
 * SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT and SIGXCPU where the disposition was the
 * default) writes a CRASH frame with the backtrace instead, and dies of the signal. A child
 * that ends without a whole RESULT failed: its future gets CONCUR_ECRASHED and how it ended.
 * Completion does not wait for EOF on the pipe: another child forked meanwhile by another
 * thread may hold a copy of the write end; the pidfd says when the child is gone, and what
 * it wrote is in the pipe by then.
 *
 * Invariants:
 * - The supervisor is one detached thread, started by the first call and gone once no call
 *   is outstanding (it never keeps the process alive, and nothing is left to join). A start
 *   returns only once the new thread is in its loop, so no fork catches it in its thread's
 *   start-up (where a sanitizer runtime allocates under locks that a child would inherit
 *   held; glibc's allocator is fork-safe, GCC 12's sanitizer allocators are not). g.mu
 *   guards the list of calls, the running flag and the loop's fds; a call is put in the
 *   list, and its fds in the loop, under g.mu in the same critical section as its fork, so
 *   the supervisor never sees an empty list while a call is being made. The receive state
 *   of a call, and the loop's timer, are the supervisor's alone.
 * - Once a call's pidfd is in the loop, its record is the supervisor's: the caller still
 *   registers the pipe (under g.mu) but touches the record no more after that, and the
 *   supervisor takes g.mu before it acts on a child's end. Every child is reaped before its
 *   future completes; the record is freed after, by the supervisor only. Within one batch
 *   of events the pipe events are handled before the pidfd events, since only the latter
 *   free records.
 * - fds are removed from the loop before they are closed: a child forked meanwhile may hold
 *   a copy of them, which would keep the registration alive.
 * - The fork happens with g.mu held, so the child's copy of the list is consistent: the
 *   child closes the copies of the parent's fds (closing, never unwatching: the epoll set
 *   is the parent's too) and starts afresh (nested calls start their own supervisor there).
 *   A process forked by anyone else notices on its first call that the state is its
 *   parent's (the owner pid differs) and forgets it without walking it.
 * - The supervisor allocates and frees under g.mu (the receiver's buffers, through its
 *   guard; the record), and a fork happens with g.mu held, so no fork catches the
 *   supervisor inside an allocator that is not fork-safe (glibc's malloc is; the
 *   sanitizers' allocators of GCC 12 are not). Completion itself (callbacks, an error's
 *   detail) runs without the lock.
 * - No signal disposition of the caller's process changes. In the child, the crash handler
 *   replaces only default dispositions; exit() there runs an on_exit handler registered by
 *   the child that flushes stdio and _exits before the caller's atexit handlers.
 */
#include "core/concur_impl.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sys/os.h"
#include "sys/wire.h"

enum {
    EVENTS = 64,          /* loop events per wait */
    READS_PER_EVENT = 64, /* reads per readiness event, so one big result cannot hog */
    SCRATCH = 16 << 10,   /* bytes read at once when they are dropped */
};

/* Loop tags: a call's address with the kind of fd in the low bits; 0: the deadline sweep. */
enum { TAG_SWEEP = 0, TAG_PIPE = 1, TAG_PID = 2, TAG_MASK = 3 };

struct call {
    struct call *prev, *next; /* g.calls; under g.mu */
    concur_future *f;         /* the engine's reference */
    pid_t pid;                /* the child, until the supervisor reaps it */
    int pidfd, rfd;           /* rfd: -1 once the answer is over (or at EOF) */
    uint64_t deadline;        /* CLOCK_MONOTONIC ns; UINT64_MAX: none */
    double timeout;
    bool timed_out, cancelled; /* under g.mu: SIGKILL sent for the timeout / for a cancel */
    concur__rx rx;             /* the supervisor's alone */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t idle; /* broadcast when the supervisor leaves */
    struct call *calls;  /* outstanding calls */
    size_t ndeadlines;   /* calls with a deadline in the list */
    bool running;        /* a supervisor thread serves the loop */
    pthread_t thread;    /* valid while running */
    _Atomic uint32_t started; /* set by a new supervisor once it is in its loop */
    concur__loop loop;   /* the running supervisor's; its fds fixed while it runs */
    concur__timer sweep; /* the supervisor's: the next deadline of a call */
    uint64_t next_id;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER, .loop = {-1, -1}};

/* The process g belongs to (0: unused so far; -pid while pid resets it). */
static _Atomic pid_t g_owner;

/* The child process's fate, as a future's error names it. */
static const concur__fate_ctx g_fate_ctx = {.who = "child process", .when = " before reporting"};

static void call_free(struct call *c)
{
    concur__rx_free(&c->rx);
    free(c);
}

/* Forgets the state inherited from the parent process. @walk: the state is consistent (the
 * parent forked with g.mu held), so the copies of its fds are closed and its records freed;
 * otherwise the fd numbers may be stale (closed in the parent, maybe reused here since), so
 * fds and records are left alone (close-on-exec, and unreachable). Closing a copy never
 * touches the parent's epoll set. The parent's futures in the records stay as they are:
 * they complete in the parent only. */
static void state_reset(bool walk)
{
    if (walk) {
        for (struct call *c = g.calls, *n; c; c = n) {
            n = c->next;
            concur__close(&c->pidfd);
            concur__close(&c->rfd);
            call_free(c);
        }
        concur__loop_fini(&g.loop);
    }
    g.loop = CONCUR__LOOP_NONE;
    memset(&g.sweep, 0, sizeof(g.sweep));
    g.calls = NULL;
    g.ndeadlines = 0;
    g.running = false;
    g.next_id = 0;
    CHECK_PTHREAD(pthread_mutex_init(&g.mu, NULL));
    CHECK_PTHREAD(pthread_cond_init(&g.idle, NULL));
}

/* Makes g this process's own: after a fork by someone else it is the parent's copy, maybe
 * caught in the middle of a change, so it is dropped without being walked. */
static void adopt(void)
{
    pid_t me = getpid();
    for (;;) {
        pid_t o = atomic_load_explicit(&g_owner, memory_order_acquire);
        if (o == me)
            return;
        if (o == -me) { /* another thread of this process is resetting it */
            sched_yield();
            continue;
        }
        if (!atomic_compare_exchange_weak_explicit(&g_owner, &o, -me, memory_order_acquire,
                                                   memory_order_relaxed))
            continue;
        if (o != 0) /* 0: never used, the static state is fresh */
            state_reset(false);
        atomic_store_explicit(&g_owner, me, memory_order_release);
        return;
    }
}

/* Kills the child for a timeout or a cancel, with the commands and processes it started
 * (the child is their subreaper): nothing it ran outlives it. */
static bool kill_child(const struct call *c)
{
    return concur__pidfd_kill_tree(c->pidfd, c->pid) == 0; /* -ESRCH: it is gone already */
}

/* Under g.mu: nudges the supervisor (new deadline, or nothing left to serve). */
static void wake_locked(void)
{
    if (g.loop.wake >= 0)
        (void)concur__loop_wake(&g.loop); /* fails only for a bad fd: none while it runs */
}

/* ---------------------------------------------------------------- the engine */

static void fc_on_cancel(struct concur__engine *e, concur_future *f)
{
    (void)e; /* never called: fork-call futures are never PENDING */
    (void)f;
}

static bool fc_kill_running(struct concur__engine *e, concur_future *f)
{
    (void)e;
    adopt();
    bool hit = false;
    mu_lock(&g.mu);
    for (struct call *c = g.calls; c; c = c->next) {
        if (c->f != f)
            continue;
        /* A kill that was sent wins over a result that may have arrived meanwhile. */
        if (!c->cancelled && !c->timed_out && kill_child(c))
            hit = c->cancelled = true;
        break;
    }
    mu_unlock(&g.mu);
    return hit;
}

static const concur__engine_ops fc_ops = {.on_cancel = fc_on_cancel,
                                          .kill_running = fc_kill_running};
static struct concur__engine g_engine = {.ops = &fc_ops};

/* ---------------------------------------------------------------- the supervisor */

/* The receivers allocate under g.mu: not while a fork is under way (see the invariants). */
static void rx_guard(void *arg, bool enter)
{
    (void)arg;
    if (enter)
        mu_lock(&g.mu);
    else
        mu_unlock(&g.mu);
}

/* Feeds what the pipe holds now to the call's receiver, at most @max reads. Returns false
 * when there is nothing more to read: EOF, a read error (the child's end is gone for us
 * either way), or the answer is over. */
static bool rx_read(struct call *c, size_t max)
{
    char scratch[SCRATCH];
    for (size_t i = 0; i < max; i++) {
        void *dst;
        size_t room = concur__rx_room(&c->rx, scratch, sizeof(scratch), &dst);
        if (!room)
            return false;
        ssize_t r = concur__read_some(c->rfd, dst, room);
        if (r <= 0)
            return r == -EAGAIN;
        concur__rx_feed(&c->rx, (size_t)r);
    }
    return true;
}

/* Under g.mu: kills the calls past their deadline. Returns the next deadline, UINT64_MAX
 * for none. */
static uint64_t kill_overdue_locked(void)
{
    if (!g.ndeadlines)
        return UINT64_MAX;
    uint64_t now = now_ns(), next = UINT64_MAX;
    for (struct call *c = g.calls; c; c = c->next) {
        if (c->deadline == UINT64_MAX || c->timed_out || c->cancelled ||
            concur__rx_end(&c->rx) == CONCUR__RX_RESULT)
            continue;
        if (now >= c->deadline)
            c->timed_out = kill_child(c); /* false: it is dying anyway */
        else if (c->deadline < next)
            next = c->deadline;
    }
    return next;
}

/* Completes the future of a call whose child is gone. */
static void complete(struct call *c, const concur__fate *fa, bool timed_out, bool cancelled)
{
    const uint32_t running = STATE_BIT(CONCUR_RUNNING);
    concur_future *f = c->f;
    concur__rx *rx = &c->rx;
    enum concur__rx_end end = concur__rx_end(rx);
    char msg[192];
    if (cancelled) {
        concur__future_fail_info(f, running, CONCUR_ECANCELED,
                                 "cancelled while running: the child process was killed",
                                 fa->signal, fa->exit_status, NULL, false, false);
    } else if (timed_out) {
        snprintf(msg, sizeof(msg),
                 "the call ran past its timeout of %g s; its child process "
                 "was killed",
                 c->timeout);
        concur__future_fail_info(f, running, CONCUR_ETASKTIMEOUT, msg, fa->signal, fa->exit_status,
                                 NULL, false, false);
    } else if (end == CONCUR__RX_RESULT && rx->nomem) {
        snprintf(msg, sizeof(msg), "no memory for the child process's result of %llu bytes",
                 (unsigned long long)rx->rh.out_len);
        concur__future_fail_info(f, running, CONCUR_ENOMEM, msg, 0, -1, NULL, false, false);
    } else if (end == CONCUR__RX_RESULT && rx->rh.code == 0) {
        concur_task t = {.f = f, .out = rx->out}; /* the result moves into the future */
        rx->out.len = 0;
        concur__task_complete(&t, 0, now_ns());
    } else if (end == CONCUR__RX_RESULT) {
        concur__future_fail_info(f, running, rx->rh.code, rx->text, 0, -1, NULL, true, false);
    } else if (end == CONCUR__RX_BAD) {
        concur__future_fail_info(f, running, CONCUR_EIO, "malformed result from the child process",
                                 fa->signal, fa->exit_status, NULL, false, false);
    } else {
        concur__fate_fail(f, fa, end == CONCUR__RX_CRASH && rx->text_len ? rx->text : NULL);
    }
}

/* The call's child has ended (its pidfd is readable): take what it wrote, reap it, complete
 * the future, free the record. */
static void finish(struct call *c)
{
    /* Out of the list first: taking g.mu waits for a concur_fork_call that is still
     * registering the pipe of this very call (its child may end that fast). */
    mu_lock(&g.mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        g.calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->deadline != UINT64_MAX)
        g.ndeadlines--;
    bool timed_out = c->timed_out, cancelled = c->cancelled;
    mu_unlock(&g.mu);
    if (c->rfd >= 0) {
        (void)rx_read(c, SIZE_MAX); /* everything the child wrote is in the pipe */
        concur__loop_close(&g.loop, &c->rfd);
    }
    siginfo_t si;
    int reaped = concur__reap(c->pidfd, &si, false);
    concur__loop_close(&g.loop, &c->pidfd);
    concur__ended e = concur__ended_siginfo(reaped == 1 ? &si : NULL);
    concur__fate fa;
    concur__fate_describe(&fa, &e, &g_fate_ctx);
    complete(c, &fa, timed_out, cancelled);
    mu_lock(&g.mu); /* frees: not while a fork is under way (see the invariants) */
    concur_future_release(c->f);
    call_free(c);
    mu_unlock(&g.mu);
}

/* Handles one batch of events: the pipes first, then the ends of children (which free
 * records that a pipe event of the same batch may name). */
static void dispatch(const concur__event *evs, int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t d = evs[i].tag;
        struct call *c = (struct call *)(uintptr_t)(d & ~(uint64_t)TAG_MASK);
        if (d != CONCUR__LOOP_WAKE && (d & TAG_MASK) == TAG_PIPE && c->rfd >= 0 &&
            !rx_read(c, READS_PER_EVENT))
            concur__loop_close(&g.loop, &c->rfd);
    }
    for (int i = 0; i < n; i++)
        if (evs[i].tag != CONCUR__LOOP_WAKE && (evs[i].tag & TAG_MASK) == TAG_PID)
            finish((struct call *)(uintptr_t)(evs[i].tag & ~(uint64_t)TAG_MASK));
}

static void *supervise(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "concur-fork"); /* cosmetic: failure is harmless */
    /* The thread's start-up is over (the C library's, and a sanitizer runtime's, which
     * allocates): the starter may fork now. */
    atomic_store_explicit(&g.started, 1, memory_order_release);
    concur__futex_wake(&g.started, 1);
    concur__event evs[EVENTS];
    for (;;) {
        mu_lock(&g.mu);
        uint64_t next = kill_overdue_locked();
        mu_unlock(&g.mu);
        if (next == UINT64_MAX)
            concur__timer_cancel(&g.loop, &g.sweep);
        else
            concur__timer_arm(&g.loop, &g.sweep, next, TAG_SWEEP);
        int n = concur__loop_wait(&g.loop, evs, EVENTS, false);
        if (n < 0)
            concur__panic(__FILE__, __LINE__, "epoll_wait", -n);
        dispatch(evs, n);
        mu_lock(&g.mu);
        if (!g.calls) {
            concur__loop_fini(&g.loop);
            g.running = false;
            CHECK_PTHREAD(pthread_cond_broadcast(&g.idle));
            mu_unlock(&g.mu);
            return NULL;
        }
        mu_unlock(&g.mu);
    }
}

/* Under g.mu: starts the supervisor unless it runs, and returns once its thread is in the
 * loop, so that a fork right after (this call's, or the application's) never catches the
 * thread inside its start-up. */
static int sup_start_locked(void)
{
    if (g.running)
        return 0;
    int rc = concur__loop_init(&g.loop);
    if (rc)
        return rc;
    atomic_store_explicit(&g.started, 0, memory_order_relaxed);
    pthread_attr_t at;
    CHECK_PTHREAD(pthread_attr_init(&at));
    CHECK_PTHREAD(pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED));
    /* The thread takes no signals: they belong to the application's threads. */
    sigset_t all, old;
    sigfillset(&all);
    CHECK_PTHREAD(pthread_sigmask(SIG_SETMASK, &all, &old));
    rc = -pthread_create(&g.thread, &at, supervise, NULL);
    CHECK_PTHREAD(pthread_sigmask(SIG_SETMASK, &old, NULL));
    pthread_attr_destroy(&at);
    if (rc) {
        concur__loop_fini(&g.loop);
        return rc;
    }
    g.running = true;
    while (!atomic_load_explicit(&g.started, memory_order_acquire))
        (void)concur__futex_wait(&g.started, 0, UINT64_MAX); /* it never takes g.mu first */
    return 0;
}

/* ---------------------------------------------------------------- the child */

/* exit() inside the task: the handlers the task registered have run (they come later in
 * the list); the caller's are not the child's business. */
static void child_on_exit(int status, void *arg)
{
    (void)arg;
    (void)fflush(NULL);
    _exit(status);
}

/* Sends the RESULT frame of a task that returned @code. Returns 0 or -errno. */
static int child_report(int fd, uint64_t id, int code, const concur_task *t)
{
    concur__result_tx tx;
    concur__crash_mute(true); /* a CRASH frame now would cut into this one */
    return concur__writev_all(fd, concur__result_frame(&tx, id, code, t), CONCUR__RESULT_IOV);
}

static _Noreturn void child_main(int rfd, int wfd, concur_fn fn, const void *in, size_t len,
                                 uint64_t id, void *user)
{
    pid_t me = getpid();
    concur__close(&rfd);
    state_reset(true); /* the parent forked with g.mu held: the copy is consistent */
    atomic_store_explicit(&g_owner, me, memory_order_release);
    /* Best effort: without it, a crash is still reported, without the text. */
    (void)concur__crash_setup(wfd, true);
    concur__crash_set_id(id);
    /* What the task starts and leaves orphaned is re-parented here while the child lives,
     * so a timeout or a cancel kills it too (kill_child). EINVAL before Linux 3.4. */
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1);
    /* A parent that is gone must not kill us with SIGPIPE before _exit. */
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    (void)pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    static char name[40];
    snprintf(name, sizeof(name), "concur-fork-%llu", (unsigned long long)id);
    /* A stand-in future: concur_task_id() reads its id, concur_task_should_stop() its
     * state, which stays RUNNING. */
    concur_future fake;
    memset(&fake, 0, sizeof(fake));
    atomic_init(&fake.state, CONCUR_RUNNING);
    fake.id = id;
    concur_task t = {.f = &fake, .worker_name = name, .user = user};
    int rc;
    if (on_exit(child_on_exit, NULL) != 0)
        rc = concur_task_fail(&t, CONCUR_ENOMEM,
                              "the child process could not register its "
                              "exit handler");
    else
        rc = fn(&t, in, len);
    if (getpid() != me) { /* a process the task forked returned here: it reports nothing */
        (void)fflush(NULL);
        _exit(0);
    }
    (void)fflush(NULL);
    rc = child_report(wfd, id, rc, &t);
    _exit(rc == 0 ? 0 : 1);
}

/* ---------------------------------------------------------------- fork calls */

/* A new call record with its future (RUNNING from the start). NULL: no memory. */
static struct call *call_new(concur_fn fn, double timeout)
{
    struct call *c = calloc(1, sizeof(*c));
    concur_future *f = c ? concur__future_alloc() : NULL;
    if (!f) {
        free(c);
        return NULL;
    }
    future_init_engine(f, &g_engine, fn, 0, now_ns());
    c->f = f;
    c->pidfd = c->rfd = -1;
    c->deadline = UINT64_MAX;
    c->timeout = timeout;
    return c;
}

/* Under g.mu, the child forked: hands the call to the supervisor (pidfd, list, pipe).
 * Returns 0 or a negative code. *handed: the record is the supervisor's (it reaps the child
 * and frees the record; a failure then leaves only the caller's reference on the future to
 * release); otherwise the caller cleans up. */
static int hand_over_locked(struct call *c, pid_t pid, bool *handed)
{
    *handed = false;
    int rc = concur__pidfd_open(pid);
    if (rc < 0)
        return rc;
    c->pidfd = rc;
    c->pid = pid;
    if ((rc = concur__loop_add(&g.loop, c->pidfd, EPOLLIN, (uintptr_t)c | TAG_PID)) != 0)
        return rc;
    /* From here the supervisor may see the child end: the record is in its hands. */
    *handed = true;
    c->next = g.calls;
    if (g.calls)
        g.calls->prev = c;
    g.calls = c;
    if (c->deadline != UINT64_MAX) {
        g.ndeadlines++;
        wake_locked(); /* the supervisor's wait may be too long for this deadline */
    }
    if ((rc = concur__loop_add(&g.loop, c->rfd, EPOLLIN, (uintptr_t)c | TAG_PIPE)) != 0) {
        /* Without reads, a big result would block the child: end it. The supervisor reaps
         * it and completes the future, which nobody else sees. */
        c->cancelled = kill_child(c);
        return rc;
    }
    return 0;
}

int concur_fork_call(concur_future **out, concur_fn fn, const void *in, size_t len,
                     const concur_fork_opts *opts)
{
    if (!out || !fn || (!in && len))
        return CONCUR_EINVAL;
    double timeout = opts ? opts->timeout : 0;
    if (isnan(timeout))
        return CONCUR_EINVAL;
    adopt();
    concur__crash_prime(); /* the children's crash handlers find libgcc loaded */
    struct call *c = call_new(fn, timeout);
    if (!c)
        return CONCUR_ENOMEM;
    concur_future *f = c->f;
    int p[2];
    pid_t pid = 0;
    int rc = concur__pipe(p, true);
    if (rc)
        goto fail;
    /* Output buffered now would otherwise be written again by the child's flush. */
    (void)fflush(NULL);
    mu_lock(&g.mu);
    if ((rc = sup_start_locked()) != 0)
        goto fail_locked;
    f->id = ++g.next_id;
    f->t_start = f->t_submit = now_ns();
    atomic_store_explicit(&f->state, CONCUR_RUNNING, memory_order_relaxed);
    if (timeout > 0)
        c->deadline = timeout < 1e9 ? f->t_start + (uint64_t)(timeout * 1e9) : UINT64_MAX - 1;
    concur__rx_init(&c->rx, f->id, true);
    c->rx.guard = rx_guard;
    pid = fork();
    if (pid == 0)
        child_main(p[0], p[1], fn, in, len, f->id, opts ? opts->user : NULL);
    if (pid < 0) {
        rc = -errno;
        pid = 0;
        goto fail_locked;
    }
    concur__close(&p[1]);
    c->rfd = p[0];
    p[0] = -1;
    bool handed;
    rc = hand_over_locked(c, pid, &handed);
    if (rc && handed) {
        mu_unlock(&g.mu);
        concur_future_release(f);
        return rc;
    }
    if (rc)
        goto fail_locked;
    mu_unlock(&g.mu);
    *out = f;
    return 0;

fail_locked:
    if (g.running && !g.calls)
        wake_locked(); /* it may have been started for this call only: let it leave */
    mu_unlock(&g.mu);
fail:
    if (pid > 0) { /* not in the supervisor's set: reap it here */
        (void)kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    concur__close(&p[0]);
    concur__close(&p[1]);
    concur__close(&c->rfd); /* neither is in the loop */
    concur__close(&c->pidfd);
    concur_future_release(f); /* both references: nobody else saw it */
    concur_future_release(f);
    call_free(c);
    return rc;
}

int concur_fork_drain(double timeout)
{
    adopt();
    uint64_t deadline = concur__deadline_ns(timeout);
    int rc = 0;
    mu_lock(&g.mu);
    if (g.running && pthread_equal(g.thread, pthread_self()))
        rc = CONCUR_EDEADLK;
    while (!rc && g.running) {
        if (deadline == UINT64_MAX) {
            CHECK_PTHREAD(pthread_cond_wait(&g.idle, &g.mu));
            continue;
        }
        struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                              .tv_nsec = (long)(deadline % 1000000000u)};
        int w = pthread_cond_clockwait(&g.idle, &g.mu, CLOCK_MONOTONIC, &ts);
        if (w == ETIMEDOUT && g.running)
            rc = CONCUR_ETIMEDOUT;
        else if (w && w != ETIMEDOUT)
            concur__panic(__FILE__, __LINE__, "pthread_cond_clockwait", w);
    }
    mu_unlock(&g.mu);
    return rc;
}

/* ---------------------------------------------------------------- waitfor */

enum { WF_SWEEP = 0, WF_ASK, WF_WAIT };

int concur_waitfor_init(concur_waitfor *it, concur_future **futs, size_t *n, int cf)
{
    if (!it || !futs || !n || cf < 0)
        return CONCUR_EINVAL;
    *it = (concur_waitfor){.futs = futs, .n = n, .cf = cf, .phase_ = WF_SWEEP};
    return 0;
}

int concur_waitfor_next(concur_waitfor *it, double timeout, concur_future **f)
{
    if (!it || !f || !it->futs || !it->n || it->cf < 0)
        return CONCUR_EINVAL;
    *f = NULL;
    concur_future **fs = it->futs;
    size_t n = *it->n, cf = (size_t)it->cf;
    for (size_t i = 0; i < n; i++)
        if (!fs[i])
            return CONCUR_EINVAL;
    for (;;) {
        switch (it->phase_) {
        case WF_ASK:
            /* Asked for more: ask again while the caller keeps adding below cf. */
            if (n > it->seen_ && n < cf) {
                it->seen_ = n;
                return CONCUR_WAITFOR_MORE;
            }
            it->phase_ = WF_WAIT;
            break;
        case WF_WAIT: {
            if (n == 0)
                return CONCUR_WAITFOR_END;
            size_t idx;
            int rc = concur_wait_any(fs, n, timeout, &idx); /* blocks: callbacks, no polling */
            if (rc)
                return rc;
            it->phase_ = WF_SWEEP;
            it->pos_ = 0;
            break;
        }
        default: /* WF_SWEEP: the finished ones, in array order */
            for (; it->pos_ < n; it->pos_++) {
                concur_future *x = fs[it->pos_];
                if (concur_future_is_done(x)) {
                    memmove(&fs[it->pos_], &fs[it->pos_ + 1], (n - it->pos_ - 1) * sizeof(*fs));
                    *it->n = n - 1;
                    *f = x;
                    return CONCUR_WAITFOR_FUTURE;
                }
            }
            if (n < cf) {
                it->phase_ = WF_ASK;
                it->seen_ = n;
                return CONCUR_WAITFOR_MORE;
            }
            it->phase_ = WF_WAIT;
            break;
        }
    }
}
