/*
 * fork_call.c - fork calls (one child process per call, a future per child) and waitfor.
 *
 * Flow of one call: concur_fork_call() makes a result pipe, flushes stdio, and under g.mu
 * makes sure the supervisor runs, forks, opens a pidfd for the child and puts the call's
 * record, the pipe's read end and the pidfd into the supervisor's epoll set -> the child
 * runs the task function on its copy of the caller's memory, flushes stdio, writes one
 * record (RESULT) to the pipe and _exits -> the supervisor reads the pipe as it becomes
 * readable (a result of any size streams into the future's buffer) -> the pidfd becomes
 * readable when the child ends: the supervisor drains the pipe, reaps the child with
 * waitid(P_PIDFD), and completes the future from what arrived and how the child ended.
 *
 * Wire format (native byte order: both ends are the same program). A record is a 32-byte
 * head {u32 magic "FORK", u32 type, i32 code, u32 0, u64 out_len, u64 msg_len}, then:
 *   RESULT  out_len result bytes (code 0) then msg_len message bytes (code < 0);
 *   CRASH   (code = the signal) backtrace text up to EOF, written by the child's handler
 *           for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT, which then dies of the signal.
 * A child that ends without a whole RESULT failed: its future gets CONCUR_ECRASHED and how
 * it ended. Completion does not wait for EOF on the pipe: another child forked meanwhile by
 * another thread may hold a copy of the write end; the pidfd says when the child is gone,
 * and what it wrote is in the pipe by then.
 *
 * Invariants:
 * - The supervisor is one detached thread, started by the first call and gone once no call
 *   is outstanding (it never keeps the process alive, and nothing is left to join). g.mu
 *   guards the list of calls, the running flag and the epoll/eventfd pair; a call is put in
 *   the list, and its fds in the epoll set, under g.mu in the same critical section as its
 *   fork, so the supervisor never sees an empty list while a call is being made. The
 *   receive state of a call is the supervisor's alone.
 * - Once a call's pidfd is in the epoll set, its record is the supervisor's: the caller
 *   still registers the pipe (under g.mu) but touches the record no more after that, and
 *   the supervisor takes g.mu before it acts on a child's end. Every child is reaped before
 *   its future completes; the record is freed after, by the supervisor only. Within one
 *   batch of events the pipe events are handled before the pidfd events, since only the
 *   latter free records.
 * - fds are removed from the epoll set before they are closed: a child forked meanwhile may
 *   hold a copy of them, which would keep the registration alive.
 * - The fork happens with g.mu held, so the child's copy of the list is consistent: the
 *   child closes the copies of the parent's fds and starts afresh (nested calls start their
 *   own supervisor there). A process forked by anyone else notices on its first call that
 *   the state is its parent's (the owner pid differs) and forgets it without walking it.
 * - The supervisor allocates and frees under g.mu (the result buffer, the record), and a
 *   fork happens with g.mu held, so no fork catches the supervisor inside an allocator that
 *   is not fork-safe (glibc's malloc is; the sanitizers' allocators of GCC 12 are not).
 *   Completion itself (callbacks, an error's detail) runs without the lock.
 * - No signal disposition of the caller's process changes. In the child, the crash handler
 *   replaces only default dispositions; exit() there runs an on_exit handler registered by
 *   the child that flushes stdio and _exits before the caller's atexit handlers.
 */
#include "core/concur_impl.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

#define FC_MAGIC 0x4b524f46u /* "FORK" */
enum { REC_RESULT = 1, REC_CRASH = 2 };

typedef struct fc_head {
    uint32_t magic, type;
    int32_t code; /* RESULT: 0 or the task's negative code; CRASH: the signal */
    uint32_t reserved;
    uint64_t out_len, msg_len;
} fc_head;

_Static_assert(sizeof(fc_head) == 32, "wire layout");

enum {
    MSG_CAP = 4096,       /* message bytes kept from a RESULT (tasks send <= 1 KiB) */
    BT_CAP = 64 << 10,    /* backtrace bytes kept from a CRASH */
    ALTSTACK = 64 << 10,  /* the child's crash-handler stack */
    EVENTS = 64,          /* epoll events per wait */
    READS_PER_EVENT = 64, /* reads per readiness event, so one big result cannot hog */
    SCRATCH = 16 << 10,   /* bytes read at once when they are dropped */
};

enum { TAG_PIPE = 1, TAG_PID = 2, TAG_MASK = 3 }; /* low bits of epoll data (0: the eventfd) */

/* What the supervisor has received from a call's pipe. */
enum rx_state { RX_HEAD, RX_OUT, RX_MSG, RX_DONE, RX_CRASH, RX_BAD };

struct call {
    struct call *prev, *next; /* g.calls; under g.mu */
    concur_future *f;         /* the engine's reference */
    int pidfd, rfd;           /* rfd: -1 once at EOF */
    uint64_t deadline;        /* CLOCK_MONOTONIC ns; UINT64_MAX: none */
    double timeout;
    bool timed_out, cancelled; /* under g.mu: SIGKILL sent for the timeout / for a cancel */
    /* The supervisor's alone. */
    enum rx_state rx;
    bool nomem; /* no memory for the result: its bytes are dropped */
    fc_head head;
    uint64_t got; /* bytes of the current part received */
    concur__buf out;
    char *text; /* message (RESULT) or backtrace (CRASH); NUL-terminated at the end */
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t idle; /* broadcast when the supervisor leaves */
    struct call *calls;  /* outstanding calls */
    size_t ndeadlines;   /* calls with a deadline in the list */
    bool running;        /* a supervisor thread serves ep */
    pthread_t thread;    /* valid while running */
    int ep, wake;        /* the running supervisor's epoll set and wake-up eventfd, or -1 */
    uint64_t next_id;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER, .ep = -1, .wake = -1};

/* The process g belongs to (0: unused so far; -pid while pid resets it). */
static _Atomic pid_t g_owner;

static void close_fd(int *fd)
{
    if (*fd >= 0)
        (void)close(*fd); /* ours; after close() fails on Linux the fd is gone anyway */
    *fd = -1;
}

static void call_free(struct call *c)
{
    buf_free(&c->out);
    free(c->text);
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
            close_fd(&c->pidfd);
            close_fd(&c->rfd);
            call_free(c);
        }
        close_fd(&g.ep);
        close_fd(&g.wake);
    }
    g.ep = g.wake = -1;
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

static bool pidfd_kill(int pidfd)
{
    return syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) == 0;
}

/* Under g.mu: nudges the supervisor (new deadline, or nothing left to serve). */
static void wake_locked(void)
{
    uint64_t one = 1;
    if (g.wake >= 0 && write(g.wake, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, a wake-up is pending anyway */
    }
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
        if (!c->cancelled && !c->timed_out && pidfd_kill(c->pidfd))
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

/* Where the next bytes from the pipe go (@scratch when they are dropped), and how many. */
static size_t rx_room(struct call *c, char *scratch, char **dst)
{
    uint64_t left = SCRATCH;
    *dst = scratch;
    switch (c->rx) {
    case RX_HEAD:
        *dst = (char *)&c->head + c->got;
        return sizeof(c->head) - (size_t)c->got;
    case RX_OUT:
        left = c->head.out_len - c->got;
        if (!c->nomem) {
            *dst = (char *)buf_wdata(&c->out) + c->got;
            return left > SSIZE_MAX ? SSIZE_MAX : (size_t)left;
        }
        break;
    case RX_MSG:
        left = c->head.msg_len - c->got;
        if (c->text && c->got < MSG_CAP) {
            *dst = c->text + c->got;
            return left < MSG_CAP - c->got ? (size_t)left : MSG_CAP - (size_t)c->got;
        }
        break;
    case RX_CRASH:
        if (c->text && c->got < BT_CAP) {
            *dst = c->text + c->got;
            return BT_CAP - (size_t)c->got;
        }
        break;
    default:
        break;
    }
    return left < SCRATCH ? (size_t)left : SCRATCH;
}

/* A whole head arrived: check it and get ready for the body. */
static void rx_head(struct call *c)
{
    const fc_head *h = &c->head;
    c->got = 0;
    if (h->magic != FC_MAGIC) {
        c->rx = RX_BAD;
    } else if (h->type == REC_CRASH) {
        c->text = malloc(BT_CAP + 1); /* NULL: the text is dropped */
        c->rx = RX_CRASH;
    } else if (h->type != REC_RESULT || h->code > 0 || (h->code && h->out_len) ||
               h->out_len > SIZE_MAX / 2) {
        c->rx = RX_BAD;
    } else {
        if (h->out_len && !concur__buf_alloc(&c->out, (size_t)h->out_len))
            c->nomem = true;
        if (h->msg_len)
            c->text = malloc(MSG_CAP + 1); /* NULL: the code's text is used */
        c->rx = h->out_len ? RX_OUT : h->msg_len ? RX_MSG : RX_DONE;
    }
}

/* @k more bytes arrived where rx_room said. */
static void rx_advance(struct call *c, size_t k)
{
    c->got += k;
    switch (c->rx) {
    case RX_HEAD:
        if (c->got == sizeof(c->head)) {
            mu_lock(&g.mu); /* it allocates: not while a fork is under way (see below) */
            rx_head(c);
            mu_unlock(&g.mu);
        }
        break;
    case RX_OUT:
        if (c->got == c->head.out_len) {
            c->got = 0;
            c->rx = c->head.msg_len ? RX_MSG : RX_DONE;
        }
        break;
    case RX_MSG:
        if (c->got == c->head.msg_len)
            c->rx = RX_DONE;
        break;
    default: /* RX_CRASH counts its text; bytes after a RESULT or a bad head are dropped */
        break;
    }
}

/* Reads what the pipe holds now, at most @max reads. Returns false at EOF (or a read error:
 * the child's end is gone for us either way). */
static bool rx_read(struct call *c, size_t max)
{
    char scratch[SCRATCH];
    for (size_t i = 0; i < max; i++) {
        char *dst;
        size_t room = rx_room(c, scratch, &dst);
        ssize_t r = read(c->rfd, dst, room);
        if (r > 0) {
            rx_advance(c, (size_t)r);
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        return r < 0 && errno == EAGAIN;
    }
    return true;
}

static void stop_reading(struct call *c, int ep)
{
    (void)epoll_ctl(ep, EPOLL_CTL_DEL, c->rfd, NULL); /* before close: see the invariants */
    close_fd(&c->rfd);
}

/* Under g.mu: kills the calls past their deadline. Returns the epoll timeout (ms) until the
 * next deadline, -1 for none. */
static int kill_overdue_locked(void)
{
    if (!g.ndeadlines)
        return -1;
    uint64_t now = now_ns(), next = UINT64_MAX;
    for (struct call *c = g.calls; c; c = c->next) {
        if (c->deadline == UINT64_MAX || c->timed_out || c->cancelled || c->rx == RX_DONE)
            continue;
        if (now >= c->deadline)
            c->timed_out = pidfd_kill(c->pidfd); /* false: it is dying anyway */
        else if (c->deadline < next)
            next = c->deadline;
    }
    if (next == UINT64_MAX)
        return -1;
    uint64_t ms = (next - now + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* How a child ended, for a future's error. */
struct fate {
    int signal, exit_status;
    char text[160];
};

static void describe(bool reaped, const siginfo_t *si, struct fate *fa)
{
    fa->signal = 0;
    fa->exit_status = -1;
    if (reaped && si->si_code == CLD_EXITED) {
        fa->exit_status = si->si_status;
        snprintf(fa->text, sizeof(fa->text), "child process exited with status %d before reporting",
                 fa->exit_status);
    } else if (reaped && (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED)) {
        fa->signal = si->si_status;
        const char *d = sigdescr_np(fa->signal);
        snprintf(fa->text, sizeof(fa->text),
                 "child process died before reporting: killed by signal %d (%s)", fa->signal,
                 d ? d : "unknown signal");
    } else {
        /* Reaped by someone else (SIGCHLD ignored, a waitpid(-1) in the application). */
        snprintf(fa->text, sizeof(fa->text),
                 "child process ended before reporting (its exit status is unknown)");
    }
}

/* Completes the future of a call whose child is gone. */
static void complete(struct call *c, const struct fate *fa, bool timed_out, bool cancelled)
{
    const uint32_t running = STATE_BIT(CONCUR_RUNNING);
    concur_future *f = c->f;
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
    } else if (c->rx == RX_DONE && c->nomem) {
        snprintf(msg, sizeof(msg), "no memory for the child process's result of %llu bytes",
                 (unsigned long long)c->head.out_len);
        concur__future_fail_info(f, running, CONCUR_ENOMEM, msg, 0, -1, NULL, false, false);
    } else if (c->rx == RX_DONE && c->head.code == 0) {
        concur_task t = {.f = f, .out = c->out}; /* the result moves into the future */
        c->out.len = 0;
        concur__task_complete(&t, 0, now_ns());
    } else if (c->rx == RX_DONE) {
        if (c->text)
            c->text[c->got < MSG_CAP ? c->got : MSG_CAP] = '\0';
        concur__future_fail_info(f, running, c->head.code, c->text, 0, -1, NULL, true, false);
    } else if (c->rx == RX_BAD) {
        concur__future_fail_info(f, running, CONCUR_EIO, "malformed result from the child process",
                                 fa->signal, fa->exit_status, NULL, false, false);
    } else {
        const char *bt = NULL;
        if (c->rx == RX_CRASH && c->text && c->got) {
            c->text[c->got < BT_CAP ? c->got : BT_CAP] = '\0';
            bt = c->text;
        }
        concur__future_fail_info(f, running, CONCUR_ECRASHED, fa->text, fa->signal, fa->exit_status,
                                 bt, false, false);
    }
}

/* The call's child has ended (its pidfd is readable): take what it wrote, reap it, complete
 * the future, free the record. */
static void finish(struct call *c, int ep)
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
        stop_reading(c, ep);
    }
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    int r;
    do
        r = waitid((idtype_t)P_PIDFD, (id_t)c->pidfd, &si, WEXITED);
    while (r < 0 && errno == EINTR);
    (void)epoll_ctl(ep, EPOLL_CTL_DEL, c->pidfd, NULL);
    close_fd(&c->pidfd);
    struct fate fa;
    describe(r == 0, &si, &fa);
    complete(c, &fa, timed_out, cancelled);
    mu_lock(&g.mu); /* frees: not while a fork is under way (see below) */
    concur_future_release(c->f);
    call_free(c);
    mu_unlock(&g.mu);
}

static void *supervise(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "concur-fork"); /* cosmetic: failure is harmless */
    mu_lock(&g.mu);
    int ep = g.ep, wake = g.wake; /* fixed while this thread runs */
    mu_unlock(&g.mu);
    struct epoll_event evs[EVENTS];
    for (;;) {
        mu_lock(&g.mu);
        int ms = kill_overdue_locked();
        mu_unlock(&g.mu);
        int n = epoll_wait(ep, evs, EVENTS, ms);
        if (n < 0) {
            if (errno != EINTR)
                concur__panic(__FILE__, __LINE__, "epoll_wait", errno);
            n = 0;
        }
        for (int i = 0; i < n; i++) {
            uint64_t d = evs[i].data.u64;
            struct call *c = (struct call *)(uintptr_t)(d & ~(uint64_t)TAG_MASK);
            if (!c) {
                uint64_t v;
                if (read(wake, &v, sizeof(v)) < 0) {
                    /* EAGAIN: another wake-up took it */
                }
            } else if ((d & TAG_MASK) == TAG_PIPE && c->rfd >= 0 && !rx_read(c, READS_PER_EVENT)) {
                stop_reading(c, ep);
            }
        }
        for (int i = 0; i < n; i++) /* after the pipes: this frees records */
            if ((evs[i].data.u64 & TAG_MASK) == TAG_PID)
                finish((struct call *)(uintptr_t)(evs[i].data.u64 & ~(uint64_t)TAG_MASK), ep);
        mu_lock(&g.mu);
        if (!g.calls) {
            close_fd(&g.ep);
            close_fd(&g.wake);
            g.running = false;
            CHECK_PTHREAD(pthread_cond_broadcast(&g.idle));
            mu_unlock(&g.mu);
            return NULL;
        }
        mu_unlock(&g.mu);
    }
}

/* Under g.mu: starts the supervisor unless it runs. */
static int sup_start_locked(void)
{
    if (g.running)
        return 0;
    int rc = 0;
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    g.wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (g.ep < 0 || g.wake < 0 || epoll_ctl(g.ep, EPOLL_CTL_ADD, g.wake, &ev) != 0) {
        rc = -errno;
        goto fail;
    }
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
    if (rc)
        goto fail;
    g.running = true;
    return 0;
fail:
    close_fd(&g.ep);
    close_fd(&g.wake);
    return rc;
}

/* ---------------------------------------------------------------- the child */

static int g_report_fd = -1;              /* the child's end of its result pipe */
static pid_t g_child_pid;                 /* the crash handler reports in this process only */
static volatile sig_atomic_t g_reporting; /* a record is being written: no other one */

/* Writes all of @buf to the blocking @fd. Returns 0 or -errno (EPIPE: the parent is gone).
 * Async-signal-safe. */
static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static void on_fatal(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    if (getpid() == g_child_pid && !g_reporting) {
        g_reporting = 1;
        fc_head h = {.magic = FC_MAGIC, .type = REC_CRASH, .code = sig};
        concur__crash_report(g_report_fd, &h, sizeof(h));
    }
    concur__die_of_signal(sig);
}

/* Reports fatal signals with a backtrace, where the caller left the default action. Best
 * effort: without it, a crash is still reported, without the text. */
static void crash_setup(int fd)
{
    g_report_fd = fd;
    g_child_pid = getpid();
    stack_t old;
    if (sigaltstack(NULL, &old) == 0 && (old.ss_flags & SS_DISABLE)) {
        stack_t ss = {.ss_size = ALTSTACK, .ss_flags = 0};
        ss.ss_sp = mmap(NULL, ALTSTACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (ss.ss_sp != MAP_FAILED)
            (void)sigaltstack(&ss, NULL);
    }
    struct sigaction ours = {.sa_sigaction = on_fatal,
                             .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND};
    sigemptyset(&ours.sa_mask);
    const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
        struct sigaction cur;
        /* Default, or ours in a nested child (which takes it over with its own fd). */
        if (sigaction(fatal[i], NULL, &cur) == 0 &&
            ((cur.sa_flags & SA_SIGINFO) ? cur.sa_sigaction == on_fatal
                                         : cur.sa_handler == SIG_DFL))
            (void)sigaction(fatal[i], &ours, NULL);
    }
}

/* exit() inside the task: the handlers the task registered have run (they come later in
 * the list); the caller's are not the child's business. */
static void child_on_exit(int status, void *arg)
{
    (void)arg;
    (void)fflush(NULL);
    _exit(status);
}

/* Sends the RESULT record of a task that returned @code. Returns 0 or -errno. */
static int child_report(int fd, int code, const concur_task *t)
{
    fc_head h = {.magic = FC_MAGIC, .type = REC_RESULT, .code = code <= 0 ? code : CONCUR_ETASK};
    const void *out = NULL;
    if (h.code == 0 && t->out.len) {
        out = buf_data(&t->out);
        h.out_len = t->out.len;
    }
    const char *msg = h.code && t->msg ? t->msg : NULL;
    h.msg_len = msg ? strlen(msg) : 0;
    g_reporting = 1;
    int rc = write_all(fd, &h, sizeof(h));
    if (!rc)
        rc = write_all(fd, out, (size_t)h.out_len);
    if (!rc)
        rc = write_all(fd, msg, (size_t)h.msg_len);
    return rc;
}

static _Noreturn void child_main(int rfd, int wfd, concur_fn fn, const void *in, size_t len,
                                 uint64_t id, void *user)
{
    pid_t me = getpid();
    close_fd(&rfd);
    state_reset(true); /* the parent forked with g.mu held: the copy is consistent */
    atomic_store_explicit(&g_owner, me, memory_order_release);
    crash_setup(wfd);
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
    rc = child_report(wfd, rc, &t);
    _exit(rc == 0 ? 0 : 1);
}

/* ---------------------------------------------------------------- fork calls */

static pthread_once_t g_prime_once = PTHREAD_ONCE_INIT;

/* backtrace() loads libgcc on first use, which allocates: do it once here, so that the
 * children's crash handlers find it loaded. */
static void prime_backtrace(void)
{
    void *frames[1];
    (void)backtrace(frames, 1);
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
    CHECK_PTHREAD(pthread_once(&g_prime_once, prime_backtrace));
    struct call *c = calloc(1, sizeof(*c));
    concur_future *f = c ? concur__future_alloc() : NULL;
    if (!f) {
        free(c);
        return CONCUR_ENOMEM;
    }
    future_init_engine(f, &g_engine, fn, 0, now_ns());
    c->f = f;
    c->pidfd = c->rfd = -1;
    c->deadline = UINT64_MAX;
    c->timeout = timeout;
    int rc = 0, p[2] = {-1, -1};
    pid_t pid = 0;
    if (pipe2(p, O_CLOEXEC) != 0 || fcntl(p[0], F_SETFL, O_NONBLOCK) != 0) {
        rc = -errno;
        goto fail;
    }
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
    pid = fork();
    if (pid == 0)
        child_main(p[0], p[1], fn, in, len, f->id, opts ? opts->user : NULL);
    if (pid < 0) {
        rc = -errno;
        pid = 0;
        goto fail_locked;
    }
    close_fd(&p[1]);
    c->rfd = p[0];
    p[0] = -1;
    c->pidfd = (int)syscall(SYS_pidfd_open, pid, 0); /* close-on-exec by definition */
    struct epoll_event de = {.events = EPOLLIN, .data.u64 = (uintptr_t)c | TAG_PID};
    if (c->pidfd < 0 || epoll_ctl(g.ep, EPOLL_CTL_ADD, c->pidfd, &de) != 0) {
        rc = -errno;
        goto fail_locked;
    }
    /* From here the supervisor may see the child end: the record is in its hands. */
    c->next = g.calls;
    if (g.calls)
        g.calls->prev = c;
    g.calls = c;
    if (c->deadline != UINT64_MAX) {
        g.ndeadlines++;
        wake_locked(); /* the supervisor's wait may be too long for this deadline */
    }
    struct epoll_event pe = {.events = EPOLLIN, .data.u64 = (uintptr_t)c | TAG_PIPE};
    if (epoll_ctl(g.ep, EPOLL_CTL_ADD, c->rfd, &pe) != 0) {
        /* Without reads, a big result would block the child: end it. The supervisor reaps
         * it and completes the future, which nobody else sees. */
        rc = -errno;
        c->cancelled = pidfd_kill(c->pidfd);
        mu_unlock(&g.mu);
        concur_future_release(f);
        return rc;
    }
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
    close_fd(&p[0]);
    close_fd(&p[1]);
    close_fd(&c->rfd);
    close_fd(&c->pidfd);
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
