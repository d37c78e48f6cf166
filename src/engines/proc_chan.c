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

/* Waits until c->fd is ready for @events. Returns 0 (try the operation again),
 * CONCUR_EPIPE when the worker is gone (its status arrived, the socket is silent: a process
 * the task forked may hold the socket open), CONCUR_ETIMEDOUT at the deadline. */
int concur__chan_wait(const concur__chan *c, short events)
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
        ssize_t r = recv(c->fd, dst, cap, flags);
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
