/*
 * ring.c - an io_uring beside a loop's epoll set (liburing), for the coroutine engine's
 * reads and writes.
 *
 * Why: on a loop where a coroutine waits for a socket, the epoll way costs a read that
 * fails (EAGAIN), an epoll_ctl to re-arm the fd, an epoll_wait and the read again: four
 * syscalls per message received. Through the ring the read is queued, submitted with the
 * next wait and completed by the kernel when data comes: one io_uring_enter per pass of
 * the loop, for every read and write queued in it.
 *
 * The wait: while reads or writes are in flight (or queued), concur__loop_wait waits in
 * io_uring_enter, not in epoll_wait. The epoll set (fds, the wake-up eventfd) is watched by
 * a one-shot poll request of the ring on the epoll fd, armed again after it fires: the
 * wait returns for a completion, for an event of the set or at the nearest timer. Only
 * then is epoll_wait called (without blocking) to take the set's events.
 *
 * Polled (coroutine_io_poll): a kernel thread of the ring (SQPOLL) takes the requests as they
 * are queued, so submitting costs no io_uring_enter, and a wait with requests in flight
 * first watches the completion queue for up to POLL_NS (bounded by the wait's timeout)
 * before it enters the kernel to sleep: a completion that comes meanwhile costs no system
 * call either. The kernel thread sleeps after SQ_IDLE_MS without requests, and is woken by
 * the next submission (liburing enters the kernel for that).
 *
 * Tags: a completion carries its request's tag (user_data). Two values are the ring's own:
 * EP_TAG (the poll on the epoll fd) and CANCEL_TAG (cancel requests; their completions are
 * dropped). Both differ from CONCUR__LOOP_WAKE and from the engine's tags (addresses with a
 * kind in their low bits).
 */
#include "sys/os.h"

#include <errno.h>

bool concur__ring_off;

#ifdef CONCUR_HAVE_URING
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>

#define EP_TAG (UINT64_MAX - 1)
#define CANCEL_TAG (UINT64_MAX - 2)
enum { RING_ENTRIES = 256, SQ_IDLE_MS = 10, POLL_NS = 50000 };
/* A read or write asks for this much at most (the kernel's own cap is 0x7ffff000). */
#define RW_MAX (1u << 30)

struct concur__ring {
    struct io_uring u;
    unsigned inflight; /* reads and writes submitted or queued, not yet completed */
    bool ep_armed;     /* the poll on the epoll fd is queued or in flight */
};

/* SQPOLL: a kernel thread takes the submissions. */
static bool polled(const struct concur__ring *r)
{
    return (r->u.flags & IORING_SETUP_SQPOLL) != 0;
}

/* A free submission entry, submitting what is queued when the ring is full; NULL when even
 * that fails. */
static struct io_uring_sqe *sqe_get(struct concur__ring *r)
{
    struct io_uring_sqe *s = io_uring_get_sqe(&r->u);
    if (!s && io_uring_submit(&r->u) >= 0)
        s = io_uring_get_sqe(&r->u);
    return s;
}

int concur__loop_ring(concur__loop *l, bool poll)
{
    if (l->ring)
        return 0;
    if (concur__ring_off)
        return -ENOSYS;
    struct concur__ring *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    int rc = -EINVAL;
    if (poll) {
        /* Refused (EPERM before Linux 5.11 without CAP_SYS_ADMIN, EINVAL, ENOMEM): the
         * ordinary ring below. */
        struct io_uring_params pa = {.flags = IORING_SETUP_SQPOLL, .sq_thread_idle = SQ_IDLE_MS};
        rc = io_uring_queue_init_params(RING_ENTRIES, &r->u, &pa);
    }
    /* Completions are handled when the loop enters the kernel anyway: no interrupting IPI
     * for them (COOP_TASKRUN, 5.19). Older kernels refuse the flag: no flags then. */
    if (rc < 0)
        rc = io_uring_queue_init(RING_ENTRIES, &r->u,
                                 IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
    if (rc == -EINVAL)
        rc = io_uring_queue_init(RING_ENTRIES, &r->u, 0);
    if (rc < 0) {
        free(r);
        return rc;
    }
    const unsigned need = IORING_FEAT_NODROP | IORING_FEAT_RW_CUR_POS | IORING_FEAT_EXT_ARG;
    if ((r->u.features & need) != need) {
        io_uring_queue_exit(&r->u);
        free(r);
        return -ENOSYS;
    }
    l->ring = r;
    return 0;
}

bool concur__loop_ring_polled(const concur__loop *l)
{
    return l->ring && polled(l->ring);
}

/* A polled ring: submits what is queued (the kernel thread takes it; no system call unless
 * it sleeps) and watches the completion queue for up to POLL_NS, or @ms when that is
 * shorter (-1: no bound). True when a completion is there. */
static bool poll_completions(struct concur__ring *r, int ms)
{
    (void)io_uring_submit(&r->u); /* a failure shows again at the wait that follows */
    uint64_t spin = ms >= 0 && (uint64_t)ms * 1000000u < POLL_NS ? (uint64_t)ms * 1000000u : POLL_NS;
    uint64_t until = concur__mono_ns() + spin;
    for (unsigned i = 1;; i++) {
        if (io_uring_cq_ready(&r->u))
            return true;
        concur__cpu_pause();
        if (i % 64 == 0 && concur__mono_ns() >= until)
            return false;
    }
}

void concur__ring_free(struct concur__ring *r)
{
    if (!r)
        return;
    io_uring_queue_exit(&r->u); /* cancels what is in flight: the poll, at most */
    free(r);
}

int concur__loop_rw(concur__loop *l, bool write, int fd, void *buf, size_t n, uint64_t tag)
{
    struct concur__ring *r = l->ring;
    struct io_uring_sqe *s = r ? sqe_get(r) : NULL;
    if (!s)
        return -EBUSY;
    unsigned len = n > RW_MAX ? RW_MAX : (unsigned)n;
    if (write)
        io_uring_prep_write(s, fd, buf, len, (uint64_t)-1); /* -1: the file position */
    else
        io_uring_prep_read(s, fd, buf, len, (uint64_t)-1);
    io_uring_sqe_set_data64(s, tag);
    r->inflight++;
    return 0;
}

int concur__loop_rw_cancel(concur__loop *l, uint64_t tag)
{
    struct io_uring_sqe *s = l->ring ? sqe_get(l->ring) : NULL;
    if (!s)
        return -EBUSY;
    io_uring_prep_cancel64(s, tag, 0);
    io_uring_sqe_set_data64(s, CANCEL_TAG);
    return 0;
}

bool concur__ring_busy(const struct concur__ring *r)
{
    return r && (r->inflight || io_uring_sq_ready(&r->u));
}

int concur__ring_wait(struct concur__ring *r, int ep, int ms, concur__event *ev, int max,
                      bool *ep_ready)
{
    *ep_ready = false;
    if (!r->ep_armed) {
        struct io_uring_sqe *s = sqe_get(r);
        if (s) {
            io_uring_prep_poll_add(s, ep, POLLIN);
            io_uring_sqe_set_data64(s, EP_TAG);
            r->ep_armed = true;
        } else {
            *ep_ready = true; /* cannot watch the set: look at it without blocking */
            ms = 0;
        }
    }
    int rc;
    if (polled(r) && ms != 0 && poll_completions(r, ms)) {
        rc = 0; /* completions are there: no need to enter the kernel */
    } else if (ms == 0) {
        rc = io_uring_submit_and_get_events(&r->u);
    } else {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {ms / 1000, (long long)(ms % 1000) * 1000000};
        rc = io_uring_submit_and_wait_timeout(&r->u, &cqe, 1, ms < 0 ? NULL : &ts, NULL);
    }
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
        return rc;
    int k = 0;
    unsigned head, seen = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&r->u, head, cqe)
    {
        uint64_t tag = io_uring_cqe_get_data64(cqe);
        if (tag == EP_TAG) {
            r->ep_armed = false;
            *ep_ready = true;
        } else if (tag != CANCEL_TAG) {
            if (k == max)
                break; /* the rest at the next wait */
            r->inflight--;
            ev[k++] = (concur__event){tag, 0, cqe->res};
        }
        seen++;
    }
    io_uring_cq_advance(&r->u, seen);
    if (ms == 0)
        *ep_ready = true; /* a look: at everything */
    return k;
}

#else /* no liburing: the loop works on epoll alone */

int concur__loop_ring(concur__loop *l, bool poll)
{
    (void)l, (void)poll, (void)concur__ring_off;
    return -ENOSYS;
}

bool concur__loop_ring_polled(const concur__loop *l)
{
    (void)l;
    return false;
}

void concur__ring_free(struct concur__ring *r)
{
    (void)r;
}

int concur__loop_rw(concur__loop *l, bool write, int fd, void *buf, size_t n, uint64_t tag)
{
    (void)l, (void)write, (void)fd, (void)buf, (void)n, (void)tag;
    return -EBUSY;
}

int concur__loop_rw_cancel(concur__loop *l, uint64_t tag)
{
    (void)l, (void)tag;
    return -EBUSY;
}

bool concur__ring_busy(const struct concur__ring *r)
{
    (void)r;
    return false;
}

int concur__ring_wait(struct concur__ring *r, int ep, int ms, concur__event *ev, int max,
                      bool *ep_ready)
{
    (void)r, (void)ep, (void)ms, (void)ev, (void)max;
    *ep_ready = true;
    return 0;
}

#endif
