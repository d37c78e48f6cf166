/*
 * engines/processes.c - the process engine: each worker thread of the pool core is a proxy
 * that owns one worker process (proc_worker.c, forked by forkserver.c) and runs its tasks
 * there.
 *
 * Wire format (docs/process_pool.md has the full table). A proxy and its worker share one
 * AF_UNIX stream socket. Everything on it is a frame: a fixed 24-byte header
 * {u32 type, u32 flags, u64 id, u64 len} then len payload bytes, native byte order (both
 * ends are the same program on the same machine). Small task answers come through the
 * answer ring in shared memory instead (proc_chan.h), with a bell (a pipe) that wakes
 * a sleeping proxy. Frames are written fully (partial writes
 * are continued) and read fully; payloads of any size are streamed straight from the
 * future's input buffer and into the result buffer, so a 256 MB input exists once on each
 * side. proxy -> worker: SETUP {u64 user, name}, TASK {u64 fn, input}, INIT / FINAL
 * {u64 fn, u64 arg}. worker -> proxy: RESULT {i32 code, u32 0, u64 out_len, out,
 * u64 msg_len, msg} answers TASK, INIT and FINAL; CRASH {i32 signal, backtrace text} is
 * written by the worker's fatal-signal handler with flag TO_EOF (len unknown: the text runs
 * until the socket closes, which it does as the worker dies).
 *
 * The proxy (a worker thread of a process pool) waits with poll() on the socket and on the
 * worker's status pipe (written by the fork server when it reaps the worker), with the task
 * timeout as the deadline. Outcomes of a task:
 *   RESULT            the future gets the result bytes, or the task's own (code, message)
 *                     marked remote;
 *   CRASH, EOF, or a  the worker died: the proxy reads its wait status from the pipe and
 *   status            fails the future with CONCUR_ECRASHED, "worker died: killed by signal
 *                     11 (Segmentation fault)" or "worker exited with status 3", the signal,
 *                     exit status and backtrace in the error info; the caller replaces it;
 *   deadline          the proxy SIGKILLs the worker (through a pidfd: no pid reuse race),
 *                     fails the future with CONCUR_ETASKTIMEOUT; the caller replaces it;
 *   killed on request concur_future_cancel_kill() from another thread SIGKILLed the worker
 *                     (proc_kill_task): the future fails with CONCUR_ECANCELED.
 * A worker that died of its CPU limit (SIGXCPU, or SIGKILL with its CPU time at the limit)
 * is reported as such ("worker exceeded its CPU time limit of N s", error info limit); a
 * crash under a memory limit gets "(memory limit of N bytes)" appended, since a failed
 * allocation is the likely cause, though nothing tells it for sure.
 *
 * The worker process is single-threaded (unless a task starts threads) and is ours: it
 * sets its limits (RLIMIT_AS, RLIMIT_CPU) before any hook or task runs, and installs
 * handlers for SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT and SIGXCPU on an alternate stack
 * that send a CRASH frame (backtrace()/backtrace_symbols_fd(), both usable there once
 * backtrace() was called once outside the handler) and re-raise with the default action,
 * so the status the proxy reads names the real signal. It leaves with _exit.
 */
#include "core/pool.h"
#include "engines/forkserver.h"
#include "engines/proc_chan.h"
#include "sys/os.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the proxy */

typedef struct concur__proc concur__proc;

/* A proxy's handle on its worker process; no process runs yet. @name and @user must outlive
 * it. @slot (0 .. workers-1, unique among the pool's live proxies) picks its cancel word.
 * Returns 0 or CONCUR_ENOMEM. */
static int proc_create(concur__proc **out, concur__fs *fs, const char *name, void *user, int slot);

/*
 * Starts a worker process (replacing a dead one) and runs @init (if not NULL) in it, then
 * hands it the tasks its predecessor had been given and not answered (@timeout: the
 * pool's task_timeout). Returns 0, or a negative code with a message in t->msg (may be
 * NULL): *hook_failed says whether the initializer failed (or died) rather than the start
 * of the process.
 */
static int proc_start(concur__proc *pr, concur_worker_fn init, void *arg, concur_task *t,
                      bool *hook_failed, double timeout);

/*
 * Pipelining. A proxy hands its process RUNNING futures in order (proc_push puts them in
 * its ring, transmit sends every frame that may go in one sendmsg): the process runs one and finds
 * the next ones already in its socket, so tiny tasks cost no sleep and wake-up each. The first one
 * handed over runs; each later one starts (its t_start, its timeout) when the one before it is
 * answered. proc_finish_one waits for the first one's answer and completes it: the result, the
 * task's own error (remote), or CONCUR_ECRASHED / CONCUR_ETASKTIMEOUT with the worker's fate, or
 * CONCUR_ECANCELED when proc_kill_task killed it. *alive = false when the process is gone (crashed,
 * exited, killed): the caller starts a replacement with proc_start, which takes the
 * unanswered tasks over. Returns the completed future (the caller holds the engine's
 * reference, handed over at the push). Only the proxy thread calls these.
 */
static void proc_push(concur__proc *pr, concur_future *f);
static void transmit(concur__proc *pr, double timeout);
static concur_future *proc_finish_one(concur__proc *pr, concur_task *t, double timeout,
                                      bool *alive);
/* Futures handed over and not completed yet. */
static unsigned proc_inflight(const concur__proc *pr);
/* Whether to hand over one more now: fewer than min(@room, a fixed depth) are in flight,
 * the last task was short (tasks of unknown or long run time go one at a time, so that no
 * task waits behind a long one while another worker is free) and the stream is sound. */
static bool proc_want_more(const concur__proc *pr, unsigned room);

/*
 * Kills the worker process if it runs @f, so that it fails with CONCUR_ECANCELED; a task
 * handed over and still waiting its turn is killed when it starts. Sets *found when @f is
 * one of this proxy's tasks; returns true when the kill was sent or is scheduled. Called
 * from any thread, while the caller guarantees that @pr stays alive.
 */
static bool proc_kill_task(concur__proc *pr, const concur_future *f, bool *found);

/*
 * Passes a cancel of @f on to the process, if @f is one of this proxy's tasks (sets *found
 * and returns true then): concur_task_should_stop() there becomes true while it runs. A
 * future cancelled before it reaches the proxy is caught at proc_push. Called from
 * any thread, while the caller guarantees that @pr stays alive.
 */
static bool proc_cancel_task(concur__proc *pr, const concur_future *f, bool *found);

/* Runs the finalizer @fn in the worker process. Returns 0 (also when no process runs), or a
 * negative code with a message in t->msg. */
static int proc_final(concur__proc *pr, concur_worker_fn fn, void *arg, concur_task *t);

/* Ends the worker process (EOF on its socket; SIGKILL if it does not leave promptly), waits
 * until the server has reaped it, and frees the handle. Accepts NULL. */
static void proc_destroy(concur__proc *pr);

struct concur__proc {
    concur__fs *fs;
    concur__worker *owner; /* the proxy */
    const char *name;
    void *user;
    pid_t pid;
    int sock, status, pidfd; /* -1 when no process runs (pidfd: also when unsupported) */
    concur__rbuf rb;         /* what the process sent, read ahead */
    concur__ring *ring;      /* its answer ring (RING_SIZE bytes mapped), or NULL */
    int bell;                /* with a ring: the bell its process rings (read end); else -1 */
    uint64_t last_run_ns;    /* how long the last task took; UINT64_MAX: none yet */
    uint64_t last_id;        /* the id of the task completed last (0: none yet) */
    bool want_bt;            /* the pool's error_backtrace: SETUP says so */
    /* The tasks handed to this process, in order (a ring of n from head): the first `sent`
     * of them have gone out, `sent_bytes` frame bytes in all; the process runs the first
     * and reads the others when it is done with it. kill_mu guards the ring, killed and
     * the pid and pidfd against proc_kill_task from other threads; only the proxy
     * thread writes them. */
    pthread_mutex_t kill_mu;
    concur_future *fl[DEPTH];
    bool fl_kill[DEPTH];   /* proc_kill_task asked: kill it when it starts */
    bool fl_cancel[DEPTH]; /* its future was cancelled: the cancel word names the first */
    int slot;
    _Atomic uint64_t *cancel_word; /* shared with the process; NULL: no slot */
    unsigned head, n, sent;
    uint64_t sent_bytes;
    bool killed; /* the process was killed to cancel the first task */
    int tx_rc;   /* a failed send: the stream is broken (the process is killed when */
    const concur_future *tx_failed; /* ... the task whose frame failed is the next to run) */
};

static int proc_create(concur__proc **out, concur__fs *fs, const char *name, void *user, int slot)
{
    concur__proc *pr = calloc(1, sizeof(*pr));
    if (!pr)
        return CONCUR_ENOMEM;
    pr->rb.p = malloc(RBUF_CAP);
    if (!pr->rb.p) {
        free(pr);
        return CONCUR_ENOMEM;
    }
    pr->rb.cap = RBUF_CAP;
    pr->fs = fs;
    pr->name = name;
    pr->user = user;
    pr->sock = pr->status = pr->pidfd = pr->bell = -1;
    pr->last_run_ns = UINT64_MAX;
    pr->slot = slot;
    pr->cancel_word = concur__fs_cancel_word(fs, slot);
    if (pr->cancel_word)
        atomic_store_explicit(pr->cancel_word, 0, memory_order_relaxed);
    CHECK_PTHREAD(pthread_mutex_init(&pr->kill_mu, NULL));
    *out = pr;
    return 0;
}

/* SIGKILLs the worker process. True when the signal was sent (false: it is gone). */
static bool proc_kill(concur__proc *pr)
{
    /* ESRCH: reaped already; its pid may be someone else's by now, so no kill() then. */
    if (pr->pidfd >= 0)
        return concur__pidfd_kill(pr->pidfd, SIGKILL) == 0;
    /* No pidfd: the process is not reaped before its status reaches us, so the pid is
     * still its own (ESRCH: it just died). */
    return pr->pid > 0 && kill(pr->pid, SIGKILL) == 0;
}

/* Waits for the wait status the server writes when it reaps the worker; after @grace_ms the
 * worker is killed. Returns the status in ws->status (-1 when unknown: the server is gone)
 * and the worker's CPU time. Closes the process's fds. */
static void proc_reap(concur__proc *pr, int grace_ms, concur__wstatus *wst)
{
    concur__wstatus ws = {.status = -1};
    concur__close(&pr->sock);
    pr->rb.off = pr->rb.end = 0;
    if (pr->status >= 0) {
        struct pollfd pf = {.fd = pr->status, .events = POLLIN};
        bool killed = false;
        for (;;) {
            int n = poll(&pf, 1, killed ? -1 : grace_ms);
            if (n < 0 && errno == EINTR)
                continue;
            if (n == 0) {
                proc_kill(pr);
                killed = true;
                continue;
            }
            break; /* readable, or poll failed (then the read says what it can) */
        }
        ssize_t r;
        do
            r = read(pr->status, &ws, sizeof(ws));
        while (r < 0 && errno == EINTR);
        if (r != (ssize_t)sizeof(ws))
            ws = (concur__wstatus){.status = -1}; /* EOF: the server died without reaping it */
    }
    concur__close(&pr->status);
    concur__close(&pr->pidfd);
    if (pr->ring)
        (void)munmap(pr->ring, RING_SIZE); /* ours, mapped whole: cannot fail */
    pr->ring = NULL;
    concur__close(&pr->bell);
    pr->pid = 0;
    *wst = ws;
}

/* Reaps the worker (after @grace_ms it is killed) and describes how it ended. */
static void proc_fate(concur__proc *pr, int grace_ms, concur__fate *fa)
{
    concur__wstatus ws;
    proc_reap(pr, grace_ms, &ws);
    const concur__limits *lim = concur__fs_limits(pr->fs);
    concur__ended e = concur__ended_wstatus(ws.status, ws.cpu_us);
    concur__fate_ctx ctx = {
        .who = "worker", .when = "", .mem_limit = lim->mem, .cpu_limit_s = lim->cpu_s};
    concur__fate_describe(fa, &e, &ctx);
}

/*
 * Reads the answer to a request with id @id: a RESULT (its code in *code; the result bytes
 * in t->out when the code is 0 and @want_out; the message in t->msg), or a CRASH frame (its
 * backtrace in *bt; returns CONCUR_EPIPE, the worker is dying). Other returns: transport
 * errors, CONCUR_ENOMEM, and CONCUR_EIO when the stream breaks the protocol (a task wrote
 * into its worker's socket, or the worker died in the middle of a frame): a malformed
 * frame, an answer for another task (its id in *other), or a crash report from a process
 * that goes on living.
 */
static int read_answer(const concur__chan *c, uint64_t id, concur_task *t, bool want_out, int *code,
                       char **bt, uint64_t *other)
{
    /* The one receiver of the wire codec (sys/wire.c) says where each part goes; the
     * reads are exact, so a frame that follows stays in the read buffer. */
    concur__rx rx;
    concur__rx_init(&rx, id, want_out);
    char scratch[4096];
    int rc = 0;
    for (;;) {
        void *dst;
        size_t room = concur__rx_room(&rx, scratch, sizeof(scratch), &dst);
        if (!room || concur__rx_end(&rx) == CONCUR__RX_CRASH)
            break; /* a crash report: read below, up to EOF */
        if ((rc = concur__chan_recv(c, dst, room)) != 0)
            break;
        concur__rx_feed(&rx, room);
    }
    enum concur__rx_end end = concur__rx_end(&rx);
    if (!rc && end == CONCUR__RX_CRASH && (!rx.h.id || rx.h.id == id)) {
        /* The crash handler writes its report and dies at once: a report that does not end
         * within the grace time is not one. */
        concur__chan cc = *c;
        uint64_t grace = now_ns() + (uint64_t)EXIT_GRACE_MS * 1000000u;
        cc.deadline = grace < c->deadline ? grace : c->deadline;
        int32_t sig; /* its signal: the wait status tells it too */
        if ((rc = concur__chan_recv(&cc, &sig, sizeof(sig))) == 0)
            rc = concur__chan_read_to_eof(&cc, CONCUR__BT_CAP, bt);
        concur__rx_free(&rx);
        return rc == 0 || rc == CONCUR_EPIPE ? CONCUR_EPIPE : CONCUR_EIO;
    }
    if (!rc && end != CONCUR__RX_RESULT) {
        if (rx.h.type == CONCUR__FR_RESULT && rx.h.id != id)
            *other = rx.h.id; /* an answer for another task */
        rc = CONCUR_EIO;
    }
    if (!rc && rx.nomem)
        rc = CONCUR_ENOMEM;
    if (rc) {
        concur__rx_free(&rx);
        return rc;
    }
    *code = rx.rh.code;
    concur__buf_free(&t->out);
    t->out = rx.out; /* the result moves into the task context */
    rx.out.len = 0;
    /* "message NUL backtrace" when the task's backtrace comes with it */
    size_t ml = rx.text ? strlen(rx.text) : 0;
    if (rx.text && ml < rx.text_len && !*bt)
        *bt = strdup(rx.text + ml + 1); /* NULL when memory is short: no backtrace */
    free(t->msg);
    t->msg = ml ? rx.text : NULL;
    if (!ml)
        free(rx.text);
    rx.text = NULL;
    return 0;
}

/* ---- where an answer comes from: the answer ring or the socket ---- */

/* Reads more of what the process sent into the read buffer, behind what is unread, waiting
 * until something comes. 0, or what stopped the wait (CONCUR_EPIPE, CONCUR_ETIMEDOUT,
 * -errno). */
static int rb_more(const concur__chan *c)
{
    concur__rbuf *rb = c->rb;
    if (rb->off) {
        memmove(rb->p, rb->p + rb->off, rb->end - rb->off);
        rb->end -= rb->off;
        rb->off = 0;
    }
    ssize_t r = concur__chan_recv_some(c, rb->p + rb->end, rb->cap - rb->end);
    if (r < 0)
        return (int)r;
    rb->end += (size_t)r;
    return 0;
}

/* Whether @id is one of the tasks handed over behind the first. */
static bool later_task(const concur__proc *pr, uint64_t id)
{
    for (unsigned i = 1; i < pr->sent; i++)
        if (pr->fl[(pr->head + i) % DEPTH]->id == id)
            return true;
    return false;
}

/* The task whose answer is in the ring put it there when the proxy had received @stamp
 * bytes from the socket: what came before was written before the answer (by a task: the
 * worker's own frames before it are read by now), and is read first. 1 when that is
 * nothing, 0 when there is a frame, CONCUR_EIO when there is a piece of one (the worker
 * writes no more after it) or the stamp is beyond what was received. */
static int nothing_before(const concur__proc *pr, uint64_t stamp)
{
    const concur__rbuf *rb = &pr->rb;
    uint64_t total = atomic_load_explicit(&pr->ring->rx_total, memory_order_relaxed);
    uint64_t read = total - (rb->end - rb->off); /* the socket's bytes taken from the buffer */
    if (stamp > total)
        return CONCUR_EIO;
    if (stamp <= read)
        return 1;
    return stamp - read < sizeof(concur__frame) ? CONCUR_EIO : 0;
}

/* Sleeps until the bell rings or the socket has data (read into the buffer then). 0, or what
 * stopped the wait. */
static int sleep_on_ring(concur__proc *pr, const concur__chan *c)
{
    int rc = concur__chan_wait_or(c, POLLIN, pr->bell);
    if (rc == 1)
        concur__bell_drain(pr->bell);
    return rc == 1 ? 0 : rc == 0 ? rb_more(c) : rc;
}

/* A proxy whose last task was short (under SPIN_RUN_NS) watches the ring for up to SPIN_NS
 * before it sleeps, giving its CPU away every few polls: an answer that comes meanwhile costs
 * the worker no bell and the proxy no wake-up (a stream of short tasks, or a caller that
 * waits for each result in turn). */
enum { SPIN_RUN_NS = 50000, SPIN_NS = 30000, SPIN_YIELD = 64 };

/* True when a record came into the ring within SPIN_NS. */
static bool spin_for_answer(const concur__proc *pr)
{
    if (pr->last_run_ns >= SPIN_RUN_NS)
        return false;
    uint64_t until = now_ns() + SPIN_NS;
    for (unsigned i = 1;; i++) {
        cpu_relax();
        if (atomic_load_explicit(&pr->ring->head, memory_order_relaxed) !=
            atomic_load_explicit(&pr->ring->tail, memory_order_relaxed))
            return true;
        if (i % SPIN_YIELD == 0) {
            if (now_ns() > until)
                return false;
            (void)sched_yield(); /* cannot fail on Linux */
        }
    }
}

/*
 * Waits for the answer to the first task (@id): returns 1 when it is the answer ring's first
 * record (its frame's header in *h, the frame at *frame), 0 when it comes on the socket, or
 * what stopped the wait: CONCUR_EPIPE, CONCUR_ETIMEDOUT, -errno, or CONCUR_EIO for a
 * malformed ring or an answer there for no task handed over (its id in *other).
 */
static int answer_source(concur__proc *pr, const concur__chan *c, uint64_t id, concur__frame *h,
                         const char **frame, uint64_t *other)
{
    uint64_t stamp;
    for (;;) {
        int k = pr->ring ? concur__ring_peek(pr->ring, h, &stamp, frame) : 0;
        if (k > 0 && h->id != id && !later_task(pr, h->id)) {
            *other = h->id;
            return CONCUR_EIO;
        }
        if (k > 0 && h->id == id)
            return nothing_before(pr, stamp);
        if (k != 0) /* a later task's answer there: this one's went on the socket */
            return k < 0 ? k : 0;
        if (pr->rb.end > pr->rb.off)
            return 0;
        if (!pr->ring) {
            int rc = rb_more(c);
            if (rc)
                return rc;
            continue;
        }
        if (spin_for_answer(pr))
            continue;
        concur__ring_sleep(pr->ring, true); /* an answer put from now on rings the bell */
        k = concur__ring_peek(pr->ring, h, &stamp, frame);
        int rc = k ? 0 : sleep_on_ring(pr, c);
        concur__ring_sleep(pr->ring, false);
        /* What the process put before it died or the deadline passed still counts (as
         * what it wrote on the socket before its EOF does). */
        if (rc && concur__ring_peek(pr->ring, h, &stamp, frame) == 0)
            return rc;
    }
}

/* Reads the answer to @id from the ring frame that answer_source found, and drops it from
 * the ring. As read_answer; anything malformed is CONCUR_EIO. */
static int ring_answer(concur__proc *pr, const concur__frame *h, const char *frame, uint64_t id,
                       concur_task *t, int *code, char **bt, uint64_t *other)
{
    /* A read buffer that holds just the frame and a channel that cannot read more. */
    concur__rbuf view = {.p = (char *)(uintptr_t)frame, .end = sizeof(*h) + (size_t)h->len};
    concur__chan c = {.fd = -1, .status = -1, .deadline = UINT64_MAX, .rb = &view};
    int rc = read_answer(&c, id, t, true, code, bt, other);
    concur__ring_pop(pr->ring, h);
    return rc == 0 || rc == CONCUR_ENOMEM ? rc : CONCUR_EIO;
}

/* Sends a hook request (INIT / FINAL) and waits for its answer. Returns the hook's code
 * (message in t->msg), or CONCUR_ECRASHED when the process died (or the stream broke: the
 * process is then killed) with the worker's fate as the message. */
static int proc_hook(concur__proc *pr, uint32_t type, concur_worker_fn fn, void *arg,
                     concur_task *t)
{
    concur__chan c = {.fd = pr->sock,
                      .status = pr->status,
                      .deadline = UINT64_MAX,
                      .rb = &pr->rb,
                      .ring = pr->ring};
    concur__frame h = {.type = type, .len = 16};
    uint64_t pl[2] = {(uint64_t)(uintptr_t)fn, (uint64_t)(uintptr_t)arg};
    struct iovec iov[2] = {{&h, sizeof(h)}, {pl, sizeof(pl)}};
    int code = 0;
    char *bt = NULL;
    int rc = concur__chan_send(&c, iov, 2);
    if (!rc)
        rc = read_answer(&c, 0, t, false, &code, &bt, &(uint64_t){0});
    free(bt); /* hooks report the fate in their message only */
    if (!rc)
        return code;
    if (rc != CONCUR_EPIPE)
        (void)proc_kill(pr); /* false: it is dead already */
    concur__fate fa;
    proc_fate(pr, EXIT_GRACE_MS, &fa);
    return concur_task_fail(t, CONCUR_ECRASHED, "%s", fa.text);
}

/* Starts the worker process and sends it SETUP. */
static int proc_spawn(concur__proc *pr, concur_task *t)
{
    int sv[2], st[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0)
        return concur_task_fail(t, -errno, "socketpair: %s", strerror(errno));
    if (pipe2(st, O_CLOEXEC) != 0) {
        int e = errno;
        concur__close(&sv[0]);
        concur__close(&sv[1]);
        return concur_task_fail(t, -e, "pipe: %s", strerror(e));
    }
    /* Without shared memory or a bell (memfd refused, memory or fds short) every answer goes
     * on the socket. */
    int ring_fd = -1, bell[2];
    void *ring = NULL;
    if (concur__bell(bell) == 0 && concur__shm_create(RING_SIZE, &ring_fd, &ring) != 0) {
        concur__close(&bell[0]);
        concur__close(&bell[1]);
    }
    pid_t pid = 0;
    int rc = concur__fs_spawn(pr->fs, sv[1], st[1], ring_fd, bell[1], &pid);
    concur__close(&sv[1]);
    concur__close(&st[1]);
    concur__close(&ring_fd);
    concur__close(&bell[1]);
    if (rc && ring) {
        (void)munmap(ring, RING_SIZE); /* ours, mapped whole: cannot fail */
        concur__close(&bell[0]);
    }
    if (rc) {
        concur__close(&sv[0]);
        concur__close(&st[0]);
        /* errno texts: concur_strerror(-EAGAIN) would say "not ready yet" */
        return concur_task_fail(t, rc, "fork server: %s",
                                rc == CONCUR_EPIPE                ? "it is gone"
                                : rc < 0 && rc > CONCUR_ERRNO_MAX ? strerror(-rc)
                                                                  : concur_strerror(rc));
    }
    pr->pid = pid;
    pr->sock = sv[0];
    pr->status = st[0];
    pr->ring = ring;
    pr->bell = bell[0];
    /* For a kill without a pid-reuse race. It fails only when the process already died
     * (ESRCH) or the kernel lacks pidfds: kill() by pid is the fallback then. */
    pr->pidfd = concur__pidfd_open(pid);
    if (pr->pidfd < 0)
        pr->pidfd = -1;
    concur__chan c = {.fd = pr->sock,
                      .status = pr->status,
                      .deadline = UINT64_MAX,
                      .rb = &pr->rb,
                      .ring = pr->ring};
    uint64_t head[2] = {(uint64_t)(uintptr_t)pr->user,
                        pr->cancel_word ? (uint64_t)pr->slot : UINT64_MAX};
    size_t nlen = strlen(pr->name);
    concur__frame h = {.type = CONCUR__FR_SETUP,
                       .flags = pr->want_bt ? CONCUR__FRF_BACKTRACE : 0,
                       .len = sizeof(head) + nlen};
    struct iovec iov[3] = {{&h, sizeof(h)}, {head, sizeof(head)}, {(void *)pr->name, nlen}};
    rc = concur__chan_send(&c, iov, 3);
    if (rc) {
        if (rc != CONCUR_EPIPE)
            (void)proc_kill(pr); /* false: it is dead already */
        concur__fate fa;
        proc_fate(pr, EXIT_GRACE_MS, &fa);
        return concur_task_fail(t, CONCUR_ECRASHED, "%s", fa.text);
    }
    return 0;
}

/* ---- the tasks handed to the process (pipelining) ---- */

static concur_future *fl_at(const concur__proc *pr, unsigned i)
{
    return pr->fl[(pr->head + i) % DEPTH];
}

static uint64_t frame_bytes(const concur_future *f)
{
    return sizeof(concur__frame) + 8 + (uint64_t)f->in.len;
}

/* Under kill_mu: the first task has started (its frame went out, or the one before it was
 * answered): its run time and timeout count from now; a kill asked for while it waited is
 * carried out. */
static void head_started_locked(concur__proc *pr, uint64_t now)
{
    fl_at(pr, 0)->t_start = now;
    pr->killed = false;
    if (pr->fl_kill[pr->head]) {
        pr->fl_kill[pr->head] = false;
        pr->killed = proc_kill(pr);
    }
}

/* Sends the frames not sent yet, in order, while the bytes handed over but unanswered stay
 * under AHEAD_BYTES (the first one always goes): the proxy then never blocks in a send
 * while the process waits to send an answer. A failed send breaks the stream: tx_rc. */
static void transmit(concur__proc *pr, double timeout)
{
    /* Every frame that may go now leaves in one sendmsg(): a proxy that pipelines short
     * tasks pays one system call per batch, not one per task. */
    concur__frame h[DEPTH];
    uint64_t fnv[DEPTH];
    struct iovec iov[3 * DEPTH];
    int k = 0;
    concur_future *first = NULL;
    if (pr->tx_rc || pr->sock < 0)
        return;
    while (pr->sent < pr->n) {
        concur_future *f = fl_at(pr, pr->sent);
        uint64_t bytes = frame_bytes(f);
        if (pr->sent && pr->sent_bytes + bytes > AHEAD_BYTES)
            break;
        mu_lock(&pr->kill_mu); /* counted as sent first: a kill now must go to the process */
        if (pr->sent++ == 0)
            head_started_locked(pr, now_ns());
        pr->sent_bytes += bytes;
        mu_unlock(&pr->kill_mu);
        if (!first)
            first = f;
        int x = k / 3;
        h[x] =
            (concur__frame){.type = CONCUR__FR_TASK, .id = f->id, .len = 8 + (uint64_t)f->in.len};
        fnv[x] = (uint64_t)(uintptr_t)f->fn;
        iov[k] = (struct iovec){&h[x], sizeof(h[x])};
        iov[k + 1] = (struct iovec){&fnv[x], sizeof(fnv[x])};
        iov[k + 2] = (struct iovec){(void *)buf_data(&f->in), f->in.len};
        k += 3;
    }
    if (!k)
        return;
    concur__chan c = {.fd = pr->sock,
                      .status = pr->status,
                      .deadline = timeout > 0 ? fl_at(pr, 0)->t_start + (uint64_t)(timeout * 1e9)
                                              : UINT64_MAX};
    pr->tx_rc = concur__chan_send(&c, iov, k);
    /* Which frame of the batch broke is unknown: the first one fails with the stream and the
     * process is replaced; the ones behind it go to the replacement. */
    pr->tx_failed = first;
}

static unsigned proc_inflight(const concur__proc *pr)
{
    return pr->n;
}

static bool proc_want_more(const concur__proc *pr, unsigned room)
{
    return pr->n < DEPTH && pr->n < room && pr->last_run_ns < SHORT_NS && pr->sock >= 0 &&
           !pr->tx_rc;
}

/* Under kill_mu: the cancel word names the first cancelled task of the ring (the process
 * runs them in order), or none. */
static void publish_cancel_locked(concur__proc *pr)
{
    if (!pr->cancel_word)
        return;
    uint64_t id = 0;
    for (unsigned i = 0; i < pr->n && !id; i++)
        if (pr->fl_cancel[(pr->head + i) % DEPTH])
            id = fl_at(pr, i)->id;
    atomic_store_explicit(pr->cancel_word, id, memory_order_relaxed);
}

/* Whether a whole answer is in the answer ring or the read buffer already (it can be
 * completed without a system call). */
static bool answer_buffered(concur__proc *pr)
{
    concur__rbuf *rb = &pr->rb;
    concur__frame h;
    const char *frame;
    uint64_t stamp;
    if (pr->ring && concur__ring_peek(pr->ring, &h, &stamp, &frame) > 0)
        return true;
    if (rb->end - rb->off < sizeof(h))
        return false;
    memcpy(&h, rb->p + rb->off, sizeof(h));
    return h.len <= rb->end - rb->off - sizeof(h);
}

static void proc_push(concur__proc *pr, concur_future *f)
{
    mu_lock(&pr->kill_mu);
    unsigned i = (pr->head + pr->n) % DEPTH;
    pr->fl[i] = f;
    pr->fl_kill[i] = false;
    pr->n++;
    /* A cancel made before it was in the ring, where proc_cancel_task looks. */
    pr->fl_cancel[i] = atomic_load_explicit(&f->state, memory_order_seq_cst) & F_CANCEL_REQ;
    if (pr->fl_cancel[i])
        publish_cancel_locked(pr);
    mu_unlock(&pr->kill_mu);
}

/* Under kill_mu: the position of @f in the ring (0: the first), or -1. */
static int ring_find_locked(const concur__proc *pr, const concur_future *f)
{
    for (unsigned i = 0; i < pr->n; i++)
        if (fl_at(pr, i) == f)
            return (int)i;
    return -1;
}

static bool proc_cancel_task(concur__proc *pr, const concur_future *f, bool *found)
{
    mu_lock(&pr->kill_mu);
    int i = ring_find_locked(pr, f);
    if (i >= 0) {
        *found = true;
        pr->fl_cancel[(pr->head + (unsigned)i) % DEPTH] = true;
        publish_cancel_locked(pr);
    }
    mu_unlock(&pr->kill_mu);
    return i >= 0;
}

/* Takes the first task off the ring; the next one, if it went out, starts now. */
static concur_future *pop_head(concur__proc *pr, uint64_t now)
{
    mu_lock(&pr->kill_mu);
    concur_future *f = pr->fl[pr->head];
    pr->fl[pr->head] = NULL;
    pr->last_id = f->id;
    bool was_cancelled = pr->fl_cancel[pr->head];
    pr->fl_cancel[pr->head] = false;
    pr->head = (pr->head + 1) % DEPTH;
    pr->n--;
    if (was_cancelled)
        publish_cancel_locked(pr);
    if (pr->sent) {
        pr->sent--;
        pr->sent_bytes -= frame_bytes(f);
    }
    pr->killed = false;
    if (pr->sent)
        head_started_locked(pr, now);
    mu_unlock(&pr->kill_mu);
    return f;
}

static int proc_start(concur__proc *pr, concur_worker_fn init, void *arg, concur_task *t,
                      bool *hook_failed, double timeout)
{
    *hook_failed = false;
    if (pr->sock >= 0) {
        concur__wstatus ws;
        proc_reap(pr, EXIT_GRACE_MS, &ws);
    }
    mu_lock(&pr->kill_mu);
    pr->sent = 0; /* what the old process had not answered goes to the new one */
    pr->sent_bytes = 0;
    pr->tx_rc = 0;
    pr->tx_failed = NULL;
    pr->killed = false;
    mu_unlock(&pr->kill_mu);
    int rc = proc_spawn(pr, t);
    if (!rc && init) {
        rc = proc_hook(pr, CONCUR__FR_INIT, init, arg, t);
        *hook_failed = rc != 0;
    }
    if (!rc)
        transmit(pr, timeout);
    return rc;
}

static int proc_final(concur__proc *pr, concur_worker_fn fn, void *arg, concur_task *t)
{
    return pr->sock >= 0 ? proc_hook(pr, CONCUR__FR_FINAL, fn, arg, t) : 0;
}

/* Whether the worker process ends (its status arrives) within @ms, its socket left open. */
static bool proc_ended_within(const concur__proc *pr, int ms)
{
    if (pr->status < 0)
        return false;
    uint64_t until = now_ns() + (uint64_t)ms * 1000000u;
    for (;;) {
        struct pollfd pf = {.fd = pr->status, .events = POLLIN};
        uint64_t now = now_ns();
        int n = poll(&pf, 1, now >= until ? 0 : (int)((until - now + 999999) / 1000000));
        if (n >= 0)
            return n > 0;
        if (errno != EINTR)
            return false;
    }
}

/* The process goes: it died, ran past the deadline, was killed on request, or broke the
 * protocol (@rc CONCUR_EIO: a task wrote into its socket, or it died in the middle of a
 * frame). Reaps it and fails its first task @f with what happened (@bt: a crash report's
 * backtrace); the tasks behind go to its replacement. Returns @f, or NULL when the stream
 * shows that the task before @f broke it (an answer with that task's id, @other): @f is
 * innocent and goes to the replacement too. */
static concur_future *head_lost(concur__proc *pr, concur_future *f, int rc, bool killed,
                                const char *bt, uint64_t other, double timeout)
{
    const uint32_t running = STATE_BIT(CONCUR_RUNNING);
    bool broken = rc == CONCUR_EIO && !killed, died = false;
    /* A broken stream may be a process dying of its own (a crash in the middle of a
     * frame): it gets a moment to end before it is killed, and its fate tells which. */
    if (broken)
        died = proc_ended_within(pr, BROKEN_GRACE_MS);
    if (rc != CONCUR_EPIPE && !killed && !died)
        (void)proc_kill(pr); /* false: it is dead already */
    mu_lock(&pr->kill_mu);   /* nobody signals it from here on: pid and pidfd change */
    pr->killed = true;
    pr->sent = 1; /* the tasks behind this one have not started: none is the next to run */
    pr->sent_bytes = frame_bytes(f);
    mu_unlock(&pr->kill_mu);
    concur__fate fa;
    proc_fate(pr, EXIT_GRACE_MS, &fa);
    bool had_to_kill = broken && !died;
    if (had_to_kill && other && other == pr->last_id)
        return NULL; /* proc_start hands the whole ring to the replacement */
    char msg[256];
    if (killed) {
        concur__future_fail_info(f, running, CONCUR_ECANCELED,
                                 "cancelled while running: the worker was killed", fa.signal,
                                 fa.exit_status, NULL, false, false);
    } else if (rc == CONCUR_EPIPE || died) {
        concur__fate_fail(f, &fa, bt);
    } else if (had_to_kill) {
        if (other)
            snprintf(msg, sizeof(msg),
                     "the task wrote into its worker's channel (an answer for task %" PRIu64
                     "); the worker was killed",
                     other);
        else
            snprintf(msg, sizeof(msg), "the task wrote into its worker's channel (a malformed "
                                       "frame); the worker was killed");
        concur__future_fail_info(f, running, CONCUR_ECRASHED, msg, fa.signal, fa.exit_status,
                                 NULL, false, false);
    } else if (rc == CONCUR_ETIMEDOUT) {
        snprintf(msg, sizeof(msg),
                 "the task ran past its timeout of %g s; its worker process was killed", timeout);
        concur__future_fail_info(f, running, CONCUR_ETASKTIMEOUT, msg, fa.signal, fa.exit_status,
                                 NULL, false, false);
    } else {
        snprintf(msg, sizeof(msg), "talking to the worker process failed (%s); it was killed",
                 concur_strerror(rc));
        concur__future_fail_info(f, running, rc, msg, fa.signal, fa.exit_status, NULL, false,
                                 false);
    }
    return f;
}

concur_future *proc_finish_one(concur__proc *pr, concur_task *t, double timeout, bool *alive)
{
    const uint32_t running = STATE_BIT(CONCUR_RUNNING);
    concur_future *f = fl_at(pr, 0);
    *alive = true;
    if (pr->sock < 0) { /* its start failed: the pool is broken and this proxy leaving */
        concur__future_fail_info(f, running, CONCUR_ECRASHED, "no worker process", 0, -1, NULL,
                                 false, false);
        return pop_head(pr, now_ns());
    }
    concur__chan c = {.fd = pr->sock,
                      .status = pr->status,
                      .deadline = timeout > 0 ? f->t_start + (uint64_t)(timeout * 1e9) : UINT64_MAX,
                      .rb = &pr->rb,
                      .ring = pr->ring};
    int code = 0;
    char *bt = NULL;
    uint64_t other = 0;
    t->f = f;
    int rc = pr->tx_rc;
    if (!rc || pr->tx_failed != f) {
        concur__frame h;
        const char *frame = NULL;
        rc = answer_source(pr, &c, f->id, &h, &frame, &other);
        if (rc == 1)
            rc = ring_answer(pr, &h, frame, f->id, t, &code, &bt, &other);
        else if (rc == 0)
            rc = read_answer(&c, f->id, t, true, &code, &bt, &other);
    }
    uint64_t end = now_ns();
    /* A kill that was sent wins over whatever answer arrived: the caller was told it
     * worked. Only this thread sets killed, but reads it under the lock it is set under. */
    mu_lock(&pr->kill_mu);
    bool killed = pr->killed;
    mu_unlock(&pr->kill_mu);
    if (pr->n == 1 && pr->owner)
        concur__worker_ready(pr->owner); /* its last task: it is free once this completes */
    if (!rc && !killed) {
        pr->last_run_ns = end - f->t_start;
        if (code == 0) {
            concur__task_complete(t, 0, end);
        } else {
            concur__future_fail_info(f, running, code, t->msg, 0, -1, bt, true, false);
            concur__task_reset(t);
        }
        free(bt);
        t->f = NULL;
        concur_future *done = pop_head(pr, end);
        transmit(pr, timeout); /* room for more */
        return done;
    }
    concur__task_reset(t);
    t->f = NULL;
    *alive = false;
    concur_future *lost = head_lost(pr, f, rc, killed, bt, other, timeout);
    free(bt);
    return lost ? pop_head(pr, end) : NULL;
}

static bool proc_kill_task(concur__proc *pr, const concur_future *f, bool *found)
{
    bool hit = false;
    mu_lock(&pr->kill_mu);
    int i = ring_find_locked(pr, f);
    if (i >= 0) {
        *found = true;
        unsigned at = (pr->head + (unsigned)i) % DEPTH;
        if (i == 0 && pr->sent) { /* running */
            hit = !pr->killed && proc_kill(pr);
            if (hit)
                pr->killed = true;
        } else if (!pr->fl_kill[at]) { /* waiting its turn: killed when it starts */
            pr->fl_kill[at] = true;
            hit = true;
        }
    }
    mu_unlock(&pr->kill_mu);
    return hit;
}

static void proc_destroy(concur__proc *pr)
{
    if (!pr)
        return;
    if (pr->sock >= 0) {
        concur__wstatus ws;
        proc_reap(pr, EXIT_GRACE_MS, &ws); /* EOF: the worker flushes and leaves */
    }
    pthread_mutex_destroy(&pr->kill_mu);
    free(pr->rb.p);
    free(pr);
}

/* ---------------------------------------------------------------- the engine */

/* The pool-wide state: the fork server, and when a task last completed (for waiters). */
struct engine {
    concur__fs *fs;
    _Atomic uint64_t last_done; /* ns */
};

#define CPU_LIMIT_MAX 1e9 /* seconds (31 years): worker_cpu_limit above is CONCUR_EINVAL */

static int create(concur_pool *p, const concur_pool_opts *o, void **state)
{
    *state = NULL;
    /* A "negative" size is one above SIZE_MAX / 2 (a negative number converted). */
    if (!(o->worker_cpu_limit >= 0) || o->worker_cpu_limit > CPU_LIMIT_MAX ||
        o->worker_memory_limit > SIZE_MAX / 2 || o->coroutine_stack_size != 0 ||
        o->coroutine_shared_stack || o->coroutine_io_poll)
        return CONCUR_EINVAL;
    struct engine *e = calloc(1, sizeof(*e));
    if (!e)
        return CONCUR_ENOMEM;
    /* RLIMIT_CPU counts whole seconds: round up. */
    uint64_t cpu_s = (uint64_t)o->worker_cpu_limit;
    if ((double)cpu_s < o->worker_cpu_limit)
        cpu_s++;
    concur__limits lim = {.mem = o->worker_memory_limit, .cpu_s = cpu_s};
    int rc = concur__fs_create(&e->fs, concur__pool_max_workers(p), &lim);
    if (rc) {
        free(e);
        return rc;
    }
    *state = e;
    return 0;
}

static void destroy(void *state)
{
    struct engine *e = state;
    if (!e)
        return;
    concur__fs_destroy(e->fs); /* the workers are gone: the server ends, and is reaped */
    free(e);
}

static void stop(void *state)
{
    concur__fs_stop(((struct engine *)state)->fs); /* the tasks in the worker processes */
}

static bool code_ok(const void *state, const void *fn)
{
    return concur__fs_code_ok(((const struct engine *)state)->fs, (uintptr_t)fn);
}

/* Starts this proxy's worker process (at the proxy's start, or to replace one that died) and
 * runs the initializer in it. */
static int proc_begin(concur__worker *w, concur_task *t, bool *hook_failed)
{
    concur_pool *p = w->pool;
    const concur_pool_opts *o = concur__pool_opts(p);
    struct engine *e = concur__pool_engine_state(p);
    int rc = 0;
    *hook_failed = false;
    if (!w->ctx) {
        concur__proc *pr = NULL;
        rc = proc_create(&pr, e->fs, w->name, o->user, w->slot);
        if (!rc) {
            pr->owner = w;
            pr->want_bt = o->error_backtrace;
        }
        concur__worker_set_ctx(w, pr);
    }
    if (!rc)
        rc = proc_start(w->ctx, o->initializer, o->init_arg, t, hook_failed, o->task_timeout);
    return rc;
}

/* A replacement after a crash: a failure breaks the pool, as at the proxy's start. */
static void proc_restart(concur__worker *w, concur_task *t)
{
    bool hook_failed;
    int rc = proc_begin(w, t, &hook_failed);
    if (rc)
        concur__pool_break(w->pool, hook_failed ? CONCUR_EINITIALIZER : CONCUR_EBROKEN,
                           hook_failed ? "initializer" : "starting the worker process", w, t->msg,
                           rc);
    concur__task_reset(t);
}

/* Hands @f to this proxy's process and, while tasks are short and more are queued than the
 * other workers can take, up to a few more (pipelining); returns when every one of them is
 * complete. A process that dies fails only the task it ran; a fresh one takes its place and
 * the tasks behind. */
static unsigned worker_run(concur__worker *w, concur_task *t, concur_future *f, unsigned room)
{
    concur_pool *p = w->pool;
    struct engine *e = concur__pool_engine_state(p);
    concur__proc *pr = w->ctx;
    double timeout = concur__pool_opts(p)->task_timeout;
    int max = concur__pool_max_workers(p);
    unsigned ran = 0;
    proc_push(pr, f);
    while (proc_inflight(pr)) {
        /* Refill only when the answers that arrived together are all completed: the
         * process has the rest of the ring to run meanwhile, and the frames that go then
         * leave in one send instead of one send per answer. Only what no other worker
         * would take: every worker has started (a task queued while a worker starts is
         * that worker's) and more are queued than the others could take if they were all
         * free now (whether they are idle yet is a matter of scheduling: a worker that has
         * just answered may not have looked yet). */
        for (bool refill = !answer_buffered(pr); refill;) {
            int others = concur__pool_nworkers(p) - 1;
            if (!proc_want_more(pr, room - ran) || others + 1 < max ||
                concur__pool_pending(p) <= (uint64_t)others)
                break;
            bool popped;
            concur_future *g = concur__worker_pop(w, &popped);
            if (g)
                proc_push(pr, g);
            else if (!popped)
                break;
        }
        transmit(pr, timeout); /* what was pushed, in one send */
        bool alive;
        concur_future *done = proc_finish_one(pr, t, timeout, &alive);
        atomic_store_explicit(&e->last_done, now_ns(), memory_order_relaxed);
        if (done) { /* NULL: it goes to the replacement */
            concur_future_release(done); /* the engine's reference */
            concur__pool_progress(p);
            ran++;
        }
        if (!alive)
            proc_restart(w, t); /* on failure the pool is broken: the rest fail in turn */
    }
    return ran;
}

static int worker_final(concur__worker *w, concur_task *t)
{
    const concur_pool_opts *o = concur__pool_opts(w->pool);
    return w->ctx ? proc_final(w->ctx, o->finalizer, o->final_arg, t) : 0;
}

static void worker_end(concur__worker *w)
{
    concur__proc *pr = w->ctx;
    concur__worker_set_ctx(w, NULL);
    proc_destroy(pr); /* the process ends with its proxy */
}

struct find {
    const concur_future *f;
    bool (*op)(concur__proc *, const concur_future *, bool *);
    bool found, hit;
};

static bool find_op(void *ctx, void *arg)
{
    struct find *q = arg;
    q->hit = q->op(ctx, q->f, &q->found);
    return q->found; /* stop at the proxy that holds it */
}

/* Calls @op on the process of each live proxy until one holds @f (it sets *found); returns
 * what that call returned. */
static bool on_proxy_of(concur_pool *p, const concur_future *f,
                        bool (*op)(concur__proc *, const concur_future *, bool *), bool *found)
{
    struct find q = {.f = f, .op = op};
    (void)concur__pool_each_worker(p, find_op, &q);
    *found = q.found;
    return q.found && q.hit;
}

/* Kills the worker process running @f (concur_future_cancel_kill). */
static bool kill_running(concur_pool *p, concur_future *f)
{
    for (unsigned spin = 0;; spin++) {
        bool found = false;
        if (on_proxy_of(p, f, proc_kill_task, &found))
            return true;
        if ((atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK) != CONCUR_RUNNING)
            return false;
        if (found)
            return false; /* its process is being replaced, or it was killed already */
        /* RUNNING, yet no proxy has it: its proxy is a few instructions from handing it
         * over (between pop and push) or from completing it (answer read). Either way that
         * ends soon. */
        if (spin < 64) {
            (void)sched_yield(); /* cannot fail on Linux */
        } else {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 100000};
            (void)nanosleep(&ts, NULL); /* EINTR: just look again */
        }
    }
}

/* Passes the cancel of a RUNNING future on to the process that has it. A future between pop
 * and push is caught by the push (F_CANCEL_REQ is set by now). */
static void cancel_running(concur_pool *p, concur_future *f)
{
    bool found = false;
    (void)on_proxy_of(p, f, proc_cancel_task, &found);
}

/* A waiter polls while the pool completes tasks (concur__poll_if_busy). */
static uint64_t wait_poll_ns(concur_pool *p)
{
    struct engine *e = concur__pool_engine_state(p);
    return concur__poll_if_busy(atomic_load_explicit(&e->last_done, memory_order_relaxed));
}

const concur__engine_class concur__processes_class = {
    .kind = "process",
    .own_timeouts = true,
    .slots = true,
    .create = create,
    .destroy = destroy,
    .stop = stop,
    .code_ok = code_ok,
    .worker_start = proc_begin,
    .worker_run = worker_run,
    .worker_final = worker_final,
    .worker_end = worker_end,
    .kill_running = kill_running,
    .cancel_running = cancel_running,
    .wait_poll_ns = wait_poll_ns,
};
