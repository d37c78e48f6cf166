/*
 * engines/proc_chan.c - reading and writing frames on the socket between a proxy and its
 * worker process (both sides use it).
 *
 * Frames are written fully (partial writes are continued) and read fully; payloads of any
 * size are streamed straight from the future's input buffer and into the result buffer, so
 * a 256 MB input exists once on each side. Reads go through a buffer (one recv() for every
 * frame already arrived). The proxy's end is non-blocking: a wait polls the socket and the
 * worker's status pipe (written by the fork server when it reaps the worker) with the
 * task's deadline, so a dead worker or a timeout never leaves the proxy stuck in a read.
 */
#include "engines/proc_chan.h"
#include "sys/os.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>

/* Waits until c->fd is ready for @events (0: try the operation again) or @other (-1: none)
 * is readable (1). CONCUR_EPIPE when the worker is gone (its status arrived, the socket is
 * silent: a process the task forked may hold the socket open), CONCUR_ETIMEDOUT at the
 * deadline. */
int concur__chan_wait_or(const concur__chan *c, short events, int other)
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
        struct pollfd pf[3] = {{.fd = c->fd, .events = events},
                               {.fd = c->status, .events = POLLIN}, /* -1: ignored */
                               {.fd = other, .events = POLLIN}};
        int n = poll(pf, 3, ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (pf[0].revents)
            return 0; /* data, room, or a hang-up the next call reports */
        if (pf[2].revents)
            return 1;
        if (pf[1].revents)
            return CONCUR_EPIPE;
    }
}

int concur__chan_wait(const concur__chan *c, short events)
{
    return concur__chan_wait_or(c, events, -1);
}

/* Sends all of @iov (modified). 0, CONCUR_EPIPE (peer gone), CONCUR_ETIMEDOUT or -errno. */
int concur__chan_send(const concur__chan *c, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                int rc = concur__chan_wait(c, POLLOUT);
                if (rc)
                    return rc;
                continue;
            }
            return errno == EPIPE || errno == ECONNRESET ? CONCUR_EPIPE : -errno;
        }
        concur__iov_advance(&iov, &n, (size_t)w);
    }
    return 0;
}

/* One recv() of up to @cap bytes into @dst (@flags: MSG_DONTWAIT or 0), waiting as needed.
 * The count (> 0), or CONCUR_EPIPE (EOF: peer gone), CONCUR_ETIMEDOUT, -errno. */
static ssize_t recv_some(const concur__chan *c, void *dst, size_t cap, int flags)
{
    for (;;) {
        ssize_t r;
        if (c->ring) { /* rx_seq odd meanwhile: concur__ring_drained */
            uint64_t seq = atomic_load_explicit(&c->ring->rx_seq, memory_order_relaxed);
            atomic_store_explicit(&c->ring->rx_seq, seq + 1, memory_order_seq_cst);
            r = recv(c->fd, dst, cap, flags);
            if (r > 0)
                atomic_fetch_add_explicit(&c->ring->rx_total, (uint64_t)r, memory_order_relaxed);
            atomic_store_explicit(&c->ring->rx_seq, seq + 2, memory_order_release);
        } else {
            r = recv(c->fd, dst, cap, flags);
        }
        if (r > 0)
            return r;
        if (r == 0)
            return CONCUR_EPIPE;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            int rc = concur__chan_wait(c, POLLIN);
            if (rc)
                return rc;
            continue;
        }
        return errno == ECONNRESET ? CONCUR_EPIPE : -errno;
    }
}

ssize_t concur__chan_recv_some(const concur__chan *c, void *dst, size_t cap)
{
    return recv_some(c, dst, cap, MSG_DONTWAIT);
}

/* Receives exactly @len bytes. 0, CONCUR_EPIPE (EOF: peer gone), CONCUR_ETIMEDOUT, -errno.
 * Buffered: the bytes come from c->rb first; the buffer is refilled with whatever is
 * available (the next frames too), except for a payload as big as half the buffer or more,
 * which is received in place. */
int concur__chan_recv(const concur__chan *c, void *buf, size_t len)
{
    char *p = buf;
    concur__rbuf *rb = c->rb;
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
            /* Waiting for the next frame: never asleep in recv(), where a blocked reader of
             * an AF_UNIX stream is woken each time its peer reads (the write-space wake-up
             * shares the wait queue); one in poll() is woken for input only. */
            r = recv_some(c, rb->p, rb->cap, MSG_DONTWAIT);
            if (r > 0)
                rb->end = (size_t)r;
        } else {
            /* Inside a big payload: the rest is coming, a blocking read takes it with
             * fewer calls (a socket that blocks; the proxy's does not). */
            r = recv_some(c, p, len, 0);
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
int concur__chan_skip(const concur__chan *c, uint64_t len)
{
    char scratch[4096];
    while (len) {
        size_t k = len < sizeof(scratch) ? (size_t)len : sizeof(scratch);
        int rc = concur__chan_recv(c, scratch, k);
        if (rc)
            return rc;
        len -= k;
    }
    return 0;
}

/* Reads until EOF (or the deadline), keeping the first @cap bytes as a string in *out
 * (NULL when nothing came or memory is short). */
int concur__chan_read_to_eof(const concur__chan *c, size_t cap, char **out)
{
    char *buf = malloc(cap + 1);
    size_t len = 0;
    char scratch[4096];
    ssize_t r;
    for (;;) {
        char *dst = buf && len < cap ? buf + len : scratch;
        size_t room = buf && len < cap ? cap - len : sizeof(scratch);
        if (c->rb && c->rb->off < c->rb->end) {
            r = (ssize_t)(c->rb->end - c->rb->off < room ? c->rb->end - c->rb->off : room);
            memcpy(dst, c->rb->p + c->rb->off, (size_t)r);
            c->rb->off += (size_t)r;
        } else {
            r = concur__chan_recv_some(c, dst, room);
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
    return r == CONCUR_EPIPE ? 0 : (int)r;
}

/* ---------------------------------------------------------------- the answer ring */

/* A record: its stamp, then the frame. */
enum { REC_HEAD = 8 + sizeof(concur__frame) };

static size_t ring_span(uint64_t frame_len)
{
    return (size_t)((REC_HEAD + frame_len + RING_ALIGN - 1) & ~(uint64_t)(RING_ALIGN - 1));
}

static char *ring_data(concur__ring *r)
{
    return (char *)r + RING_HDR;
}

bool concur__ring_drained(const concur__ring *r, int fd, uint64_t *stamp)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (concur__sock_drained(fd) != 1)
        return false;
    /* Every byte written so far has been received. If no recv() was running meanwhile,
     * rx_total counts them all. */
    atomic_thread_fence(memory_order_seq_cst);
    uint64_t s1 = atomic_load_explicit(&r->rx_seq, memory_order_acquire);
    uint64_t total = atomic_load_explicit(&r->rx_total, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    uint64_t s2 = atomic_load_explicit(&r->rx_seq, memory_order_relaxed);
    *stamp = total;
    return !(s1 & 1) && s1 == s2;
}

bool concur__ring_put(concur__ring *r, const struct iovec *iov, int n, uint64_t stamp, bool *bell)
{
    size_t len = 0;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    *bell = false;
    if (len < sizeof(concur__frame) || len > RING_MAX)
        return false;
    size_t need = ring_span(len - sizeof(concur__frame));
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    size_t at = (size_t)(head % RING_DATA), gap = RING_DATA - at;
    size_t total = need <= gap ? need : gap + need;
    if (head - tail > RING_DATA || total > RING_DATA - (head - tail))
        return false; /* full: the proxy is behind */
    char *d = ring_data(r);
    if (need > gap) { /* a PAD to the end, the record at the start */
        concur__frame pad = {.type = CONCUR__FR_PAD, .len = gap - REC_HEAD};
        memcpy(d + at + 8, &pad, sizeof(pad));
        at = 0;
    }
    memcpy(d + at, &stamp, sizeof(stamp));
    at += sizeof(stamp);
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len) /* an empty part may have no address */
            memcpy(d + at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    atomic_store_explicit(&r->head, head + total, memory_order_release);
    /* Against concur__ring_sleep: either the proxy's peek sees the record, or this sees it
     * asleep. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->sleeping, memory_order_relaxed))
        *bell = atomic_exchange_explicit(&r->sleeping, 0, memory_order_relaxed) != 0;
    return true;
}

int concur__ring_peek(concur__ring *r, concur__frame *h, uint64_t *stamp, const char **frame)
{
    char *d = ring_data(r);
    for (;;) {
        uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
        if (head == tail)
            return 0;
        uint64_t avail = head - tail;
        if (avail > RING_DATA || avail % RING_ALIGN)
            return CONCUR_EIO;
        size_t at = (size_t)(tail % RING_DATA), gap = RING_DATA - at;
        memcpy(stamp, d + at, sizeof(*stamp));
        memcpy(h, d + at + 8, sizeof(*h));
        if (h->type == CONCUR__FR_PAD) {
            if (h->len != gap - REC_HEAD || gap > avail)
                return CONCUR_EIO;
            atomic_store_explicit(&r->tail, tail + gap, memory_order_release);
            continue;
        }
        if (h->type != CONCUR__FR_RESULT || h->flags || h->len > gap - REC_HEAD ||
            ring_span(h->len) > avail)
            return CONCUR_EIO;
        *frame = d + at + 8;
        return 1;
    }
}

void concur__ring_pop(concur__ring *r, const concur__frame *h)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    atomic_store_explicit(&r->tail, tail + ring_span(h->len), memory_order_release);
}

void concur__ring_sleep(concur__ring *r, bool on)
{
    atomic_store_explicit(&r->sleeping, on ? 1u : 0u, memory_order_seq_cst);
    if (on)
        atomic_thread_fence(memory_order_seq_cst);
}
