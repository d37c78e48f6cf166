/*
 * process_pool.c - worker processes and their proxies: the wire format, the loop of a
 * worker process, and running a task remotely from a proxy thread of the thread engine.
 *
 * Wire format (docs/process_pool.md has the full table). A proxy and its worker share one
 * AF_UNIX stream socket. Everything on it is a frame: a fixed 24-byte header
 * {u32 type, u32 flags, u64 id, u64 len} then len payload bytes, native byte order (both
 * ends are the same program on the same machine). Frames are written fully (partial writes
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
 *                     (concur__proc_kill_task): the future fails with CONCUR_ECANCELED.
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
#include "engines/processes.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

enum frame_type { FR_SETUP = 1, FR_TASK, FR_INIT, FR_FINAL, FR_RESULT, FR_CRASH };
enum { FRF_TO_EOF = 1 }; /* the payload runs until EOF (len is meaningless) */

typedef struct frame_hdr {
    uint32_t type, flags;
    uint64_t id; /* the task id (TASK, its RESULT, CRASH); 0 otherwise */
    uint64_t len;
} frame_hdr;

typedef struct result_head {
    int32_t code; /* 0 or the negative code the task / hook returned */
    uint32_t reserved;
    uint64_t out_len;
} result_head;

_Static_assert(sizeof(frame_hdr) == 24 && sizeof(result_head) == 16, "wire layout");

enum {
    NAME_CAP = 256,         /* worker names are shorter (pool names <= 64 bytes) */
    MSG_CAP = 4096,         /* messages kept from a RESULT (tasks send <= 1 KiB) */
    BT_CAP = 64 << 10,      /* backtrace text kept from a CRASH frame */
    EXIT_GRACE_MS = 2000,   /* a worker told to leave gets this long, then SIGKILL */
    KEEP_INPUT = 1 << 20,   /* a worker keeps an input buffer up to this size */
    ALTSTACK = 64 << 10,    /* the crash handler's stack */
    RBUF_CAP = 64 << 10,    /* read buffer of a worker and of a proxy */
    DEPTH = 16,             /* tasks a proxy hands its process at once (pipelining) */
    AHEAD_BYTES = 64 << 10, /* frame bytes handed over but not answered yet */
    SHORT_NS = 200000,      /* tasks shorter than this are pipelined */
};

/* ---------------------------------------------------------------- channel I/O */

/* A read buffer: frames are read in as few recv() calls as the bytes available allow. */
typedef struct rbuf {
    char *p;
    size_t cap, off, end; /* unread bytes: p[off, end) */
} rbuf;

typedef struct chan {
    int fd;
    int status;        /* the worker's status pipe (proxy side), or -1 */
    uint64_t deadline; /* CLOCK_MONOTONIC ns; UINT64_MAX: none */
    rbuf *rb;          /* NULL: unbuffered */
} chan;

/* Waits until c->fd is ready for @events. Returns 0 (try the operation again),
 * CONCUR_EPIPE when the worker is gone (its status arrived, the socket is silent: a process
 * the task forked may hold the socket open), CONCUR_ETIMEDOUT at the deadline. */
static int chan_wait(const chan *c, short events)
{
    for (;;) {
        int ms = -1;
        if (c->deadline != UINT64_MAX) {
            uint64_t now = now_ns();
            if (now >= c->deadline)
                return CONCUR_ETIMEDOUT;
            uint64_t left = (c->deadline - now + 999999) / 1000000;
            ms = left > INT_MAX ? INT_MAX : (int)left;
        }
        struct pollfd pf[2] = {{.fd = c->fd, .events = events},
                               {.fd = c->status, .events = POLLIN}}; /* -1: ignored */
        int n = poll(pf, 2, ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (pf[0].revents)
            return 0; /* data, room, or a hang-up the next call reports */
        if (pf[1].revents)
            return CONCUR_EPIPE;
    }
}

/* Sends all of @iov (modified). 0, CONCUR_EPIPE (peer gone), CONCUR_ETIMEDOUT or -errno. */
static int chan_send(const chan *c, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                int rc = chan_wait(c, POLLOUT);
                if (rc)
                    return rc;
                continue;
            }
            return errno == EPIPE || errno == ECONNRESET ? CONCUR_EPIPE : -errno;
        }
        size_t done = (size_t)w;
        while (n > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

/* One recv() of up to @cap bytes into @dst, waiting as needed. Returns the count (> 0),
 * or CONCUR_EPIPE (EOF: peer gone), CONCUR_ETIMEDOUT, -errno. */
static ssize_t chan_recv_some(const chan *c, void *dst, size_t cap)
{
    for (;;) {
        ssize_t r = recv(c->fd, dst, cap, 0);
        if (r > 0)
            return r;
        if (r == 0)
            return CONCUR_EPIPE;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            int rc = chan_wait(c, POLLIN);
            if (rc)
                return rc;
            continue;
        }
        return errno == ECONNRESET ? CONCUR_EPIPE : -errno;
    }
}

/* Receives exactly @len bytes. 0, CONCUR_EPIPE (EOF: peer gone), CONCUR_ETIMEDOUT, -errno.
 * Buffered: the bytes come from c->rb first; the buffer is refilled with whatever is
 * available (the next frames too), except for a payload as big as half the buffer or more,
 * which is received in place. */
static int chan_recv(const chan *c, void *buf, size_t len)
{
    char *p = buf;
    rbuf *rb = c->rb;
    while (len) {
        if (rb && rb->off < rb->end) {
            size_t k = rb->end - rb->off < len ? rb->end - rb->off : len;
            memcpy(p, rb->p + rb->off, k);
            rb->off += k;
            p += k;
            len -= k;
            continue;
        }
        ssize_t r;
        if (rb && len < rb->cap / 2) {
            rb->off = rb->end = 0;
            r = chan_recv_some(c, rb->p, rb->cap);
            if (r > 0)
                rb->end = (size_t)r;
        } else {
            r = chan_recv_some(c, p, len);
            if (r > 0) {
                p += r;
                len -= (size_t)r;
            }
        }
        if (r < 0)
            return (int)r;
    }
    return 0;
}

/* Receives and drops @len bytes. */
static int chan_skip(const chan *c, uint64_t len)
{
    char scratch[4096];
    while (len) {
        size_t k = len < sizeof(scratch) ? (size_t)len : sizeof(scratch);
        int rc = chan_recv(c, scratch, k);
        if (rc)
            return rc;
        len -= k;
    }
    return 0;
}

/* Reads until EOF (or the deadline), keeping the first @cap bytes as a string in *out
 * (NULL when nothing came or memory is short). */
static void chan_read_to_eof(const chan *c, size_t cap, char **out)
{
    char *buf = malloc(cap + 1);
    size_t len = 0;
    char scratch[4096];
    for (;;) {
        char *dst = buf && len < cap ? buf + len : scratch;
        size_t room = buf && len < cap ? cap - len : sizeof(scratch);
        ssize_t r;
        if (c->rb && c->rb->off < c->rb->end) {
            r = (ssize_t)(c->rb->end - c->rb->off < room ? c->rb->end - c->rb->off : room);
            memcpy(dst, c->rb->p + c->rb->off, (size_t)r);
            c->rb->off += (size_t)r;
        } else {
            r = chan_recv_some(c, dst, room);
        }
        if (r <= 0)
            break; /* EOF, error, deadline, or the status arrived */
        if (dst != scratch)
            len += (size_t)r;
    }
    if (buf && len) {
        buf[len] = '\0';
        *out = buf;
    } else {
        free(buf);
        *out = NULL;
    }
}

/* ---------------------------------------------------------------- the worker process */

static int g_crash_fd = -1;          /* the worker's socket */
static const _Atomic int *g_stop;    /* the pool's shared stop word */
static pid_t g_worker_pid;           /* a process the task forks must not report */
static volatile uint64_t g_crash_id; /* the running task's id (0: a hook) */

static void crash_handler(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    if (getpid() == g_worker_pid) {
        struct {
            frame_hdr h;
            int32_t sig;
        } head = {{.type = FR_CRASH, .flags = FRF_TO_EOF, .id = g_crash_id, .len = 0}, sig};
        concur__crash_report(g_crash_fd, &head, sizeof(head.h) + sizeof(head.sig));
    }
    concur__die_of_signal(sig);
}

static int crash_setup(int sock)
{
    g_crash_fd = sock;
    g_worker_pid = getpid();
    void *frames[1];
    (void)backtrace(frames, 1); /* loads libgcc now: the handler must not allocate */
    stack_t ss = {.ss_size = ALTSTACK, .ss_flags = 0};
    ss.ss_sp = mmap(NULL, ALTSTACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ss.ss_sp == MAP_FAILED || sigaltstack(&ss, NULL) != 0)
        return -errno;
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGXCPU};
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = crash_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (sigaction(sigs[i], &sa, NULL) != 0)
            return -errno;
    return 0;
}

/* Sends the RESULT of a task or hook that returned @rc with context @t. */
static int send_result(const chan *c, uint64_t id, int rc, const concur_task *t)
{
    result_head rh = {.code = rc == 0 ? 0 : (rc < 0 ? rc : CONCUR_ETASK)};
    const void *out = NULL;
    if (rh.code == 0 && t->out.len) {
        out = buf_data(&t->out);
        rh.out_len = t->out.len;
    }
    const char *msg = rh.code && t->msg ? t->msg : NULL;
    uint64_t msg_len = msg ? strlen(msg) : 0;
    frame_hdr h = {.type = FR_RESULT, .id = id, .len = sizeof(rh) + rh.out_len + 8 + msg_len};
    struct iovec iov[5] = {{&h, sizeof(h)},
                           {&rh, sizeof(rh)},
                           {(void *)out, (size_t)rh.out_len},
                           {&msg_len, sizeof(msg_len)},
                           {(void *)msg, (size_t)msg_len}};
    return chan_send(c, iov, 5);
}

/* A RESULT that carries an error made by the worker itself (no task ran). */
static int send_error(const chan *c, uint64_t id, int code, const char *msg)
{
    concur_task t = {.msg = (char *)msg};
    return send_result(c, id, code, &t);
}

struct wstate {
    char name[NAME_CAP];
    void *user;
    const _Atomic uint64_t *cancel_word; /* this worker's slot, or NULL */
    void *in;
    size_t in_cap;
};

static int serve_setup(const chan *c, const frame_hdr *h, struct wstate *ws)
{
    uint64_t head[2]; /* user, slot */
    if (h->len < sizeof(head))
        return CONCUR_EIO;
    int rc = chan_recv(c, head, sizeof(head));
    uint64_t user = head[0], slot = head[1];
    uint64_t len = h->len - sizeof(head), keep = len < NAME_CAP ? len : NAME_CAP - 1;
    if (!rc)
        rc = chan_recv(c, ws->name, (size_t)keep);
    if (!rc)
        rc = chan_skip(c, len - keep);
    ws->name[keep] = '\0';
    ws->user = (void *)(uintptr_t)user;
    ws->cancel_word = g_stop && slot < INT_MAX ? concur__cancel_word(g_stop, (int)slot) : NULL;
    return rc;
}

static int serve_task(const chan *c, const frame_hdr *h, struct wstate *ws)
{
    uint64_t fnv;
    if (h->len < sizeof(fnv) || h->len - sizeof(fnv) > SIZE_MAX)
        return CONCUR_EIO;
    int rc = chan_recv(c, &fnv, sizeof(fnv));
    if (rc)
        return rc;
    size_t len = (size_t)(h->len - sizeof(fnv));
    if (len > ws->in_cap) {
        free(ws->in);
        ws->in = malloc(len);
        ws->in_cap = ws->in ? len : 0;
        if (!ws->in) {
            rc = chan_skip(c, len);
            return rc ? rc
                      : send_error(c, h->id, CONCUR_ENOMEM,
                                   "the worker process has no memory for the task's input");
        }
    }
    if (len && (rc = chan_recv(c, ws->in, len)) != 0)
        return rc;
    /* A stand-in future: concur_task_id() reads its id, concur_task_should_stop() its
     * state (RUNNING: a cancel of this one task is not forwarded) and the pool's shared
     * stop word (shutdown with cancel). */
    concur_future fake;
    memset(&fake, 0, sizeof(fake));
    atomic_init(&fake.state, CONCUR_RUNNING);
    fake.id = h->id;
    concur_task t = {.f = &fake,
                     .worker_name = ws->name,
                     .user = ws->user,
                     .pool_stop = g_stop,
                     .cancel_word = ws->cancel_word};
    concur_fn fn = (concur_fn)(uintptr_t)fnv;
    g_crash_id = h->id;
    int r = fn(&t, ws->in, len);
    g_crash_id = 0;
    rc = send_result(c, h->id, r, &t);
    concur__task_reset(&t);
    if (ws->in_cap > KEEP_INPUT) {
        free(ws->in);
        ws->in = NULL;
        ws->in_cap = 0;
    }
    return rc;
}

static int serve_hook(const chan *c, const frame_hdr *h, struct wstate *ws)
{
    uint64_t pl[2];
    if (h->len != sizeof(pl))
        return CONCUR_EIO;
    int rc = chan_recv(c, pl, sizeof(pl));
    if (rc)
        return rc;
    concur_task t = {.worker_name = ws->name, .user = ws->user, .pool_stop = g_stop};
    concur_worker_fn fn = (concur_worker_fn)(uintptr_t)pl[0];
    int r = fn(&t, (void *)(uintptr_t)pl[1]);
    rc = send_result(c, 0, r, &t);
    concur__task_reset(&t);
    return rc;
}

/* A task called exit(): the handlers that tasks registered in this process have run (they
 * come later in the list); the ones inherited from the application (and a sanitizer's leak
 * check of a heap copied from a multithreaded process) are the parent's business. Flush
 * stdio and leave with the task's status. */
static void worker_on_exit(int status, void *arg)
{
    (void)arg;
    (void)fflush(NULL);
    _exit(status);
}

/* The pool's limits, set on this process after its own setup (which maps memory) and before
 * any hook or task runs. The fork server checked that they fit under its hard limits. */
static int set_limits(const concur__limits *lim)
{
    if (lim->mem) {
        struct rlimit rl = {.rlim_cur = (rlim_t)lim->mem, .rlim_max = (rlim_t)lim->mem};
        if (setrlimit(RLIMIT_AS, &rl) != 0)
            return -errno;
    }
    if (lim->cpu_s) {
        struct rlimit rl = {.rlim_cur = (rlim_t)lim->cpu_s, .rlim_max = (rlim_t)lim->cpu_s + 1};
        if (setrlimit(RLIMIT_CPU, &rl) != 0)
            return -errno;
    }
    return 0;
}

_Noreturn void concur__worker_main(int sock, const concur__limits *lim, const _Atomic int *stop)
{
    /* The proxy's end stays non-blocking; ours blocks (the crash handler writes to it). */
    g_stop = stop;
    int fl = fcntl(sock, F_GETFL);
    if (fl < 0 || fcntl(sock, F_SETFL, fl & ~O_NONBLOCK) != 0 || crash_setup(sock) != 0 ||
        on_exit(worker_on_exit, NULL) != 0 || set_limits(lim) != 0)
        _exit(127);
    static char rbytes[RBUF_CAP];
    static rbuf rb = {.p = rbytes, .cap = sizeof(rbytes)};
    chan c = {.fd = sock, .status = -1, .deadline = UINT64_MAX, .rb = &rb};
    static struct wstate ws; /* static: the name outlives any frame */
    int rc;
    for (;;) {
        frame_hdr h;
        rc = chan_recv(&c, &h, sizeof(h));
        if (rc)
            break;
        switch (h.type) {
        case FR_SETUP:
            rc = serve_setup(&c, &h, &ws);
            break;
        case FR_TASK:
            rc = serve_task(&c, &h, &ws);
            break;
        case FR_INIT:
        case FR_FINAL:
            rc = serve_hook(&c, &h, &ws);
            break;
        default:
            rc = CONCUR_EIO;
            break;
        }
        if (rc)
            break;
    }
    /* EOF: the proxy let us go. Flush what tasks printed ([IP] 55), then leave without the
     * caller's atexit handlers. */
    (void)fflush(NULL);
    _exit(rc == CONCUR_EPIPE ? 0 : 1);
}

/* ---------------------------------------------------------------- the proxy */

struct concur__proc {
    concur__fs *fs;
    const char *name;
    void *user;
    pid_t pid;
    int sock, status, pidfd; /* -1 when no process runs (pidfd: also when unsupported) */
    rbuf rb;                 /* what the process sent, read ahead */
    uint64_t last_run_ns;    /* how long the last task took; UINT64_MAX: none yet */
    /* The tasks handed to this process, in order (a ring of n from head): the first `sent`
     * of them have gone out, `sent_bytes` frame bytes in all; the process runs the first
     * and reads the others when it is done with it. kill_mu guards the ring, killed and
     * the pid and pidfd against concur__proc_kill_task from other threads; only the proxy
     * thread writes them. */
    pthread_mutex_t kill_mu;
    concur_future *fl[DEPTH];
    bool fl_kill[DEPTH];   /* concur__proc_kill_task asked: kill it when it starts */
    bool fl_cancel[DEPTH]; /* its future was cancelled: the cancel word names the first */
    int slot;
    _Atomic uint64_t *cancel_word; /* shared with the process; NULL: no slot */
    unsigned head, n, sent;
    uint64_t sent_bytes;
    bool killed; /* the process was killed to cancel the first task */
    int tx_rc;   /* a failed send: the stream is broken (the process is killed when */
    const concur_future *tx_failed; /* ... the task whose frame failed is the next to run) */
};

int concur__proc_create(concur__proc **out, concur__fs *fs, const char *name, void *user, int slot)
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
    pr->sock = pr->status = pr->pidfd = -1;
    pr->last_run_ns = UINT64_MAX;
    pr->slot = slot;
    pr->cancel_word = concur__fs_cancel_word(fs, slot);
    if (pr->cancel_word)
        atomic_store_explicit(pr->cancel_word, 0, memory_order_relaxed);
    CHECK_PTHREAD(pthread_mutex_init(&pr->kill_mu, NULL));
    *out = pr;
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        (void)close(*fd); /* ours; after close() fails on Linux the fd is gone anyway */
    *fd = -1;
}

/* SIGKILLs the worker process. True when the signal was sent (false: it is gone). */
static bool proc_kill(concur__proc *pr)
{
#ifdef SYS_pidfd_send_signal
    /* ESRCH: reaped already; its pid may be someone else's by now, so no kill() then. */
    if (pr->pidfd >= 0)
        return syscall(SYS_pidfd_send_signal, pr->pidfd, SIGKILL, NULL, 0) == 0;
#endif
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
    close_fd(&pr->sock);
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
    close_fd(&pr->status);
    close_fd(&pr->pidfd);
    pr->pid = 0;
    *wst = ws;
}

/* How a worker ended, for a future's error. */
struct fate {
    int signal, exit_status;
    bool limit; /* it died of its CPU limit */
    char text[224];
};

static void describe(const concur__proc *pr, const concur__wstatus *wst, struct fate *fa)
{
    const concur__limits *lim = concur__fs_limits(pr->fs);
    int ws = wst->status;
    fa->signal = 0;
    fa->exit_status = -1;
    fa->limit = false;
    if (ws != -1 && WIFSIGNALED(ws)) {
        fa->signal = WTERMSIG(ws);
        /* SIGXCPU at the soft limit; SIGKILL at the hard one (the task caught or ignored
         * SIGXCPU), told from other kills by the CPU time the server measured. */
        fa->limit = lim->cpu_s && (fa->signal == SIGXCPU ||
                                   (fa->signal == SIGKILL && wst->cpu_us >= lim->cpu_s * 1000000u));
        const char *d = sigdescr_np(fa->signal);
        if (fa->limit)
            snprintf(fa->text, sizeof(fa->text), "worker exceeded its CPU time limit of %llu s",
                     (unsigned long long)lim->cpu_s);
        else
            snprintf(fa->text, sizeof(fa->text), "worker died: killed by signal %d (%s)",
                     fa->signal, d ? d : "unknown signal");
    } else if (ws != -1 && WIFEXITED(ws)) {
        fa->exit_status = WEXITSTATUS(ws);
        snprintf(fa->text, sizeof(fa->text), "worker exited with status %d", fa->exit_status);
    } else {
        snprintf(fa->text, sizeof(fa->text), "worker died (its exit status is unknown)");
    }
    if (lim->mem && !fa->limit) {
        size_t n = strlen(fa->text);
        snprintf(fa->text + n, sizeof(fa->text) - n, " (memory limit of %llu bytes)",
                 (unsigned long long)lim->mem);
    }
}

/* Reaps the worker (after @grace_ms it is killed) and describes how it ended. */
static void proc_fate(concur__proc *pr, int grace_ms, struct fate *fa)
{
    concur__wstatus ws;
    proc_reap(pr, grace_ms, &ws);
    describe(pr, &ws, fa);
}

/*
 * Reads the answer to a request with id @id: a RESULT (its code in *code; the result bytes
 * in t->out when the code is 0 and @want_out; the message in t->msg), or a CRASH frame (its
 * backtrace in *bt; returns CONCUR_EPIPE, the worker is dying). Other returns: transport
 * errors, CONCUR_EIO for a malformed frame, CONCUR_ENOMEM.
 */
static int read_answer(const chan *c, uint64_t id, concur_task *t, bool want_out, int *code,
                       char **bt)
{
    frame_hdr h;
    int rc = chan_recv(c, &h, sizeof(h));
    if (rc)
        return rc;
    if (h.type == FR_CRASH) {
        int32_t sig;
        if (chan_recv(c, &sig, sizeof(sig)) == 0)
            chan_read_to_eof(c, BT_CAP, bt);
        return CONCUR_EPIPE;
    }
    result_head rh;
    if (h.type != FR_RESULT || h.id != id || h.len < sizeof(rh) + 8)
        return CONCUR_EIO;
    if ((rc = chan_recv(c, &rh, sizeof(rh))) != 0)
        return rc;
    if (rh.out_len > h.len - sizeof(rh) - 8 || rh.out_len > SIZE_MAX || (rh.out_len && rh.code))
        return CONCUR_EIO;
    if (rh.out_len) {
        if (!want_out)
            return CONCUR_EIO;
        void *dst = concur__buf_alloc(&t->out, (size_t)rh.out_len);
        if (!dst)
            return CONCUR_ENOMEM;
        if ((rc = chan_recv(c, dst, (size_t)rh.out_len)) != 0)
            return rc;
    }
    uint64_t msg_len;
    if ((rc = chan_recv(c, &msg_len, sizeof(msg_len))) != 0)
        return rc;
    if (msg_len != h.len - sizeof(rh) - 8 - rh.out_len)
        return CONCUR_EIO;
    if (msg_len) {
        size_t keep = msg_len < MSG_CAP ? (size_t)msg_len : MSG_CAP;
        char *m = malloc(keep + 1);
        if (!m)
            return CONCUR_ENOMEM;
        rc = chan_recv(c, m, keep);
        if (!rc)
            rc = chan_skip(c, msg_len - keep);
        if (rc) {
            free(m);
            return rc;
        }
        m[keep] = '\0';
        free(t->msg);
        t->msg = m;
    }
    *code = rh.code;
    return 0;
}

/* Sends a hook request (INIT / FINAL) and waits for its answer. Returns the hook's code
 * (message in t->msg), or CONCUR_ECRASHED when the process died (or the stream broke: the
 * process is then killed) with the worker's fate as the message. */
static int proc_hook(concur__proc *pr, uint32_t type, concur_worker_fn fn, void *arg,
                     concur_task *t)
{
    chan c = {.fd = pr->sock, .status = pr->status, .deadline = UINT64_MAX, .rb = &pr->rb};
    frame_hdr h = {.type = type, .len = 16};
    uint64_t pl[2] = {(uint64_t)(uintptr_t)fn, (uint64_t)(uintptr_t)arg};
    struct iovec iov[2] = {{&h, sizeof(h)}, {pl, sizeof(pl)}};
    int code = 0;
    char *bt = NULL;
    int rc = chan_send(&c, iov, 2);
    if (!rc)
        rc = read_answer(&c, 0, t, false, &code, &bt);
    free(bt); /* hooks report the fate in their message only */
    if (!rc)
        return code;
    if (rc != CONCUR_EPIPE)
        (void)proc_kill(pr); /* false: it is dead already */
    struct fate fa;
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
        close_fd(&sv[0]);
        close_fd(&sv[1]);
        return concur_task_fail(t, -e, "pipe: %s", strerror(e));
    }
    pid_t pid = 0;
    int rc = concur__fs_spawn(pr->fs, sv[1], st[1], &pid);
    close_fd(&sv[1]);
    close_fd(&st[1]);
    if (rc) {
        close_fd(&sv[0]);
        close_fd(&st[0]);
        /* errno texts: concur_strerror(-EAGAIN) would say "not ready yet" */
        return concur_task_fail(t, rc, "fork server: %s",
                                rc == CONCUR_EPIPE                ? "it is gone"
                                : rc < 0 && rc > CONCUR_ERRNO_MAX ? strerror(-rc)
                                                                  : concur_strerror(rc));
    }
    pr->pid = pid;
    pr->sock = sv[0];
    pr->status = st[0];
#ifdef SYS_pidfd_open
    /* For a kill without a pid-reuse race. It fails only when the process already died
     * (ESRCH) or the kernel lacks pidfds: kill() by pid is the fallback then. */
    pr->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pr->pidfd >= 0 && fcntl(pr->pidfd, F_SETFD, FD_CLOEXEC) != 0)
        close_fd(&pr->pidfd);
#endif
    chan c = {.fd = pr->sock, .status = pr->status, .deadline = UINT64_MAX, .rb = &pr->rb};
    uint64_t head[2] = {(uint64_t)(uintptr_t)pr->user,
                        pr->cancel_word ? (uint64_t)pr->slot : UINT64_MAX};
    size_t nlen = strlen(pr->name);
    frame_hdr h = {.type = FR_SETUP, .len = sizeof(head) + nlen};
    struct iovec iov[3] = {{&h, sizeof(h)}, {head, sizeof(head)}, {(void *)pr->name, nlen}};
    rc = chan_send(&c, iov, 3);
    if (rc) {
        if (rc != CONCUR_EPIPE)
            (void)proc_kill(pr); /* false: it is dead already */
        struct fate fa;
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
    return sizeof(frame_hdr) + 8 + (uint64_t)f->in.len;
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
    while (pr->sent < pr->n && !pr->tx_rc && pr->sock >= 0) {
        concur_future *f = fl_at(pr, pr->sent);
        uint64_t bytes = frame_bytes(f);
        if (pr->sent && pr->sent_bytes + bytes > AHEAD_BYTES)
            return;
        mu_lock(&pr->kill_mu); /* counted as sent first: a kill now must go to the process */
        if (pr->sent++ == 0)
            head_started_locked(pr, now_ns());
        pr->sent_bytes += bytes;
        mu_unlock(&pr->kill_mu);
        chan c = {.fd = pr->sock,
                  .status = pr->status,
                  .deadline =
                      timeout > 0 ? fl_at(pr, 0)->t_start + (uint64_t)(timeout * 1e9) : UINT64_MAX};
        frame_hdr h = {.type = FR_TASK, .id = f->id, .len = 8 + (uint64_t)f->in.len};
        uint64_t fnv = (uint64_t)(uintptr_t)f->fn;
        struct iovec iov[3] = {
            {&h, sizeof(h)}, {&fnv, sizeof(fnv)}, {(void *)buf_data(&f->in), f->in.len}};
        pr->tx_rc = chan_send(&c, iov, 3);
        pr->tx_failed = f;
    }
}

unsigned concur__proc_inflight(const concur__proc *pr)
{
    return pr->n;
}

bool concur__proc_want_more(const concur__proc *pr, unsigned room)
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

void concur__proc_push(concur__proc *pr, concur_future *f, double timeout)
{
    mu_lock(&pr->kill_mu);
    unsigned i = (pr->head + pr->n) % DEPTH;
    pr->fl[i] = f;
    pr->fl_kill[i] = false;
    pr->n++;
    /* A cancel made before it was in the ring, where concur__proc_cancel_task looks. */
    pr->fl_cancel[i] = atomic_load_explicit(&f->state, memory_order_seq_cst) & F_CANCEL_REQ;
    if (pr->fl_cancel[i])
        publish_cancel_locked(pr);
    mu_unlock(&pr->kill_mu);
    transmit(pr, timeout);
}

/* Under kill_mu: the position of @f in the ring (0: the first), or -1. */
static int ring_find_locked(const concur__proc *pr, const concur_future *f)
{
    for (unsigned i = 0; i < pr->n; i++)
        if (fl_at(pr, i) == f)
            return (int)i;
    return -1;
}

bool concur__proc_cancel_task(concur__proc *pr, const concur_future *f, bool *found)
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

int concur__proc_start(concur__proc *pr, concur_worker_fn init, void *arg, concur_task *t,
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
        rc = proc_hook(pr, FR_INIT, init, arg, t);
        *hook_failed = rc != 0;
    }
    if (!rc)
        transmit(pr, timeout);
    return rc;
}

int concur__proc_final(concur__proc *pr, concur_worker_fn fn, void *arg, concur_task *t)
{
    return pr->sock >= 0 ? proc_hook(pr, FR_FINAL, fn, arg, t) : 0;
}

concur_future *concur__proc_finish_one(concur__proc *pr, concur_task *t, double timeout,
                                       bool *alive)
{
    const uint32_t running = STATE_BIT(CONCUR_RUNNING);
    concur_future *f = fl_at(pr, 0);
    *alive = true;
    if (pr->sock < 0) { /* its start failed: the pool is broken and this proxy leaving */
        concur__future_fail_info(f, running, CONCUR_ECRASHED, "no worker process", 0, -1, NULL,
                                 false, false);
        return pop_head(pr, now_ns());
    }
    chan c = {.fd = pr->sock,
              .status = pr->status,
              .deadline = timeout > 0 ? f->t_start + (uint64_t)(timeout * 1e9) : UINT64_MAX,
              .rb = &pr->rb};
    int code = 0;
    char *bt = NULL;
    t->f = f;
    int rc =
        pr->tx_rc && pr->tx_failed == f ? pr->tx_rc : read_answer(&c, f->id, t, true, &code, &bt);
    uint64_t end = now_ns();
    /* A kill that was sent wins over whatever answer arrived: the caller was told it
     * worked. Only this thread sets killed, but reads it under the lock it is set under. */
    mu_lock(&pr->kill_mu);
    bool killed = pr->killed;
    mu_unlock(&pr->kill_mu);
    if (!rc && !killed) {
        pr->last_run_ns = end - f->t_start;
        if (code == 0) {
            concur__task_complete(t, 0, end);
        } else {
            concur__future_fail_info(f, running, code, t->msg, 0, -1, NULL, true, false);
            concur__task_reset(t);
        }
        t->f = NULL;
        concur_future *done = pop_head(pr, end);
        transmit(pr, timeout); /* room for more */
        return done;
    }
    concur__task_reset(t);
    t->f = NULL;
    *alive = false;
    /* The process goes: it died, ran past the deadline, was killed on request, or the
     * stream broke. The tasks behind this one go to its replacement. */
    if (rc != CONCUR_EPIPE && !killed)
        (void)proc_kill(pr); /* false: it is dead already */
    mu_lock(&pr->kill_mu);   /* nobody signals it from here on: pid and pidfd change */
    pr->killed = true;
    pr->sent = 1; /* the tasks behind this one have not started: none is the next to run */
    pr->sent_bytes = frame_bytes(f);
    mu_unlock(&pr->kill_mu);
    struct fate fa;
    proc_fate(pr, EXIT_GRACE_MS, &fa);
    char msg[256];
    if (killed) {
        concur__future_fail_info(f, running, CONCUR_ECANCELED,
                                 "cancelled while running: the worker was killed", fa.signal,
                                 fa.exit_status, NULL, false, false);
    } else if (rc == CONCUR_EPIPE) {
        concur__future_fail_info(f, running, CONCUR_ECRASHED, fa.text, fa.signal, fa.exit_status,
                                 bt, false, fa.limit);
    } else if (rc == CONCUR_ETIMEDOUT) {
        snprintf(msg, sizeof(msg),
                 "the task ran past its timeout of %g s; its worker process was killed", timeout);
        concur__future_fail_info(f, running, CONCUR_ETASKTIMEOUT, msg, fa.signal, fa.exit_status,
                                 NULL, false, false);
    } else {
        snprintf(msg, sizeof(msg), "talking to the worker process failed (%s); it was killed",
                 rc == CONCUR_EIO ? "malformed frame" : concur_strerror(rc));
        concur__future_fail_info(f, running, rc, msg, fa.signal, fa.exit_status, NULL, false,
                                 false);
    }
    free(bt);
    return pop_head(pr, end);
}

bool concur__proc_kill_task(concur__proc *pr, const concur_future *f, bool *found)
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

void concur__proc_destroy(concur__proc *pr)
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
