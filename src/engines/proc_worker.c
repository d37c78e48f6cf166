/*
 * engines/proc_worker.c - the loop of a worker process: the worker side of the process engine.
 *
 * A worker process is forked by the fork server (forkserver.c) and serves frames on its
 * socket until EOF: SETUP (its name, the user pointer, its cancel slot), TASK (run the
 * function at the pointer on the input, answer RESULT), INIT / FINAL (run a hook, answer
 * RESULT). It is single-threaded (unless a task starts threads) and is ours: it sets its
 * limits (RLIMIT_AS, RLIMIT_CPU) before any hook or task runs, and installs handlers for
 * SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT and SIGXCPU on an alternate stack that send a
 * CRASH frame (the signal and a backtrace) and re-raise with the default action, so the
 * status the proxy reads names the real signal. It leaves with _exit.
 */
#include "engines/proc_worker.h"
#include "engines/proc_chan.h"
#include "sys/os.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static const _Atomic int *g_stop; /* the pool's shared stop word */
static concur__ring *g_ring;      /* the answer ring, or NULL */
static int g_bell = -1;           /* the bell that wakes a sleeping proxy (write end) */

/* Sends the RESULT of a task (@id not 0: through the answer ring when it fits and the socket
 * holds nothing unread, see proc_chan.h) or hook (id 0: on the socket, where the proxy waits
 * for it) that returned @rc with context @t. A crash
 * while it is written sends no CRASH frame (it would cut into this one): the proxy sees the
 * death. */
static int send_result(const concur__chan *c, uint64_t id, int rc, const concur_task *t)
{
    concur__result_tx tx;
    struct iovec *iov = concur__result_frame(&tx, id, rc, t);
    bool bell = false;
    int r = 0;
    concur__crash_mute(true);
    uint64_t stamp;
    if (id && g_ring && concur__ring_drained(g_ring, c->fd, &stamp) &&
        concur__ring_put(g_ring, iov, CONCUR__RESULT_IOV, stamp, &bell)) {
        if (bell)
            r = concur__bell_ring(g_bell);
    } else {
        r = concur__chan_send(c, iov, CONCUR__RESULT_IOV);
    }
    concur__crash_mute(false);
    return r;
}

/* A RESULT that carries an error made by the worker itself (no task ran). */
static int send_error(const concur__chan *c, uint64_t id, int code, const char *msg)
{
    concur_task t = {.msg = (char *)msg};
    return send_result(c, id, code, &t);
}

struct wstate {
    char name[NAME_CAP];
    void *user;
    const _Atomic uint64_t *cancel_word; /* this worker's slot, or NULL */
    bool want_bt;                        /* the pool's error_backtrace */
    void *in;
    size_t in_cap;
};

static int serve_setup(const concur__chan *c, const concur__frame *h, struct wstate *ws)
{
    uint64_t head[2]; /* user, slot */
    if (h->len < sizeof(head))
        return CONCUR_EIO;
    int rc = concur__chan_recv(c, head, sizeof(head));
    uint64_t user = head[0], slot = head[1];
    uint64_t len = h->len - sizeof(head), keep = len < NAME_CAP ? len : NAME_CAP - 1;
    if (!rc)
        rc = concur__chan_recv(c, ws->name, (size_t)keep);
    if (!rc)
        rc = concur__chan_skip(c, len - keep);
    ws->name[keep] = '\0';
    ws->user = (void *)(uintptr_t)user;
    ws->want_bt = h->flags & CONCUR__FRF_BACKTRACE;
    ws->cancel_word = g_stop && slot < INT_MAX ? concur__cancel_word(g_stop, (int)slot) : NULL;
    return rc;
}

static int serve_task(const concur__chan *c, const concur__frame *h, struct wstate *ws)
{
    uint64_t fnv;
    if (h->len < sizeof(fnv) || h->len - sizeof(fnv) > SIZE_MAX)
        return CONCUR_EIO;
    int rc = concur__chan_recv(c, &fnv, sizeof(fnv));
    if (rc)
        return rc;
    size_t len = (size_t)(h->len - sizeof(fnv));
    if (len > ws->in_cap) {
        free(ws->in);
        ws->in = malloc(len);
        ws->in_cap = ws->in ? len : 0;
        if (!ws->in) {
            rc = concur__chan_skip(c, len);
            return rc ? rc
                      : send_error(c, h->id, CONCUR_ENOMEM,
                                   "the worker process has no memory for the task's input");
        }
    }
    if (len && (rc = concur__chan_recv(c, ws->in, len)) != 0)
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
                     .cancel_word = ws->cancel_word,
                     .want_bt = ws->want_bt};
    concur_fn fn = (concur_fn)(uintptr_t)fnv;
    concur__crash_set_id(h->id);
    concur__cur_task = &t; /* the runner inside it stops when it should (concur__task_park) */
    int r = fn(&t, ws->in, len);
    concur__cur_task = NULL;
    concur__crash_set_id(0);
    rc = send_result(c, h->id, r, &t);
    concur__task_reset(&t);
    if (ws->in_cap > KEEP_INPUT) {
        free(ws->in);
        ws->in = NULL;
        ws->in_cap = 0;
    }
    return rc;
}

static int serve_hook(const concur__chan *c, const concur__frame *h, struct wstate *ws)
{
    uint64_t pl[2];
    if (h->len != sizeof(pl))
        return CONCUR_EIO;
    int rc = concur__chan_recv(c, pl, sizeof(pl));
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

_Noreturn void concur__worker_main(int sock, void *ring, int bell, const concur__limits *lim,
                                   const _Atomic int *stop)
{
    /* The proxy's end stays non-blocking; ours blocks (the crash handler writes to it). */
    g_stop = stop;
    g_ring = ring;
    g_bell = bell;
    concur__loop_park = concur__task_park;
    int fl = fcntl(sock, F_GETFL);
    if (fl < 0 || fcntl(sock, F_SETFL, fl & ~O_NONBLOCK) != 0 ||
        concur__crash_setup(sock, false) != 0 || on_exit(worker_on_exit, NULL) != 0 ||
        set_limits(lim) != 0)
        _exit(127);
    static char rbytes[RBUF_CAP];
    static concur__rbuf rb = {.p = rbytes, .cap = sizeof(rbytes)};
    concur__chan c = {.fd = sock, .status = -1, .deadline = UINT64_MAX, .rb = &rb};
    static struct wstate ws; /* static: the name outlives any frame */
    int rc;
    for (;;) {
        concur__frame h;
        /* About to wait for the next frame: reap what the tasks left behind and has ended
         * since (this process is the subreaper of its tasks' processes), without a system
         * call per task while frames are queued. */
        if (rb.end - rb.off < sizeof(h))
            while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
        rc = concur__chan_recv(&c, &h, sizeof(h));
        if (rc)
            break;
        switch (h.type) {
        case CONCUR__FR_SETUP:
            rc = serve_setup(&c, &h, &ws);
            break;
        case CONCUR__FR_TASK:
            rc = serve_task(&c, &h, &ws);
            break;
        case CONCUR__FR_INIT:
        case CONCUR__FR_FINAL:
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
