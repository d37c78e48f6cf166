/*
 * fd.c - whole reads and writes, closing, fd flags, pipes, wake-up eventfds and shared
 * memory.
 *
 * The write loops are async-signal-safe (crash reports use them from a fatal-signal
 * handler): no allocation, no locks, errno read right after the call that set it.
 */
#include "sys/os.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

void concur__close(int *fd)
{
    if (*fd >= 0)
        (void)close(*fd); /* ours; after close() fails on Linux the fd is gone anyway */
    *fd = -1;
}

/* The one write loop: write() or send(MSG_NOSIGNAL), until @n bytes went out. */
static int put_all(int fd, const void *p, size_t n, bool nosig)
{
    const char *b = p;
    while (n) {
        ssize_t w = nosig ? send(fd, b, n, MSG_NOSIGNAL) : write(fd, b, n);
        if (w < 0 && nosig && errno == ENOTSOCK) {
            nosig = false; /* a pipe or a file: write() from now on */
            continue;
        }
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int concur__write_all(int fd, const void *p, size_t n)
{
    return put_all(fd, p, n, false);
}

int concur__send_all(int fd, const void *p, size_t n)
{
    return put_all(fd, p, n, true);
}

void concur__iov_advance(struct iovec **iov, int *n, size_t done)
{
    struct iovec *v = *iov;
    int k = *n;
    while (k > 0 && done >= v->iov_len) {
        done -= v->iov_len;
        v++;
        k--;
    }
    if (k > 0) {
        v->iov_base = (char *)v->iov_base + done;
        v->iov_len -= done;
    }
    *iov = v;
    *n = k;
}

int concur__writev_all(int fd, struct iovec *iov, int n)
{
    concur__iov_advance(&iov, &n, 0); /* leading empty entries: nothing to write for them */
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        concur__iov_advance(&iov, &n, (size_t)w);
    }
    return 0;
}

ssize_t concur__read_some(int fd, void *p, size_t n)
{
    for (;;) {
        ssize_t r = read(fd, p, n);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -errno;
    }
}

ssize_t concur__read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = concur__read_some(fd, (char *)p + got, n - got);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int add_flag(int fd, int get, int set, int flag)
{
    int fl = fcntl(fd, get);
    if (fl < 0 || ((fl & flag) == 0 && fcntl(fd, set, fl | flag) < 0))
        return -errno;
    return 0;
}

int concur__set_nonblock(int fd)
{
    return add_flag(fd, F_GETFL, F_SETFL, O_NONBLOCK);
}

int concur__set_cloexec(int fd)
{
    return add_flag(fd, F_GETFD, F_SETFD, FD_CLOEXEC);
}

int concur__pipe(int p[2], bool nonblock_read)
{
    p[0] = p[1] = -1;
    if (pipe2(p, O_CLOEXEC) != 0)
        return -errno;
    int rc = nonblock_read ? concur__set_nonblock(p[0]) : 0;
    if (rc) {
        concur__close(&p[0]);
        concur__close(&p[1]);
    }
    return rc;
}

int concur__eventfd(void)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

int concur__event_post(int efd)
{
    uint64_t one = 1;
    for (;;) {
        if (write(efd, &one, sizeof(one)) == (ssize_t)sizeof(one))
            return 0;
        if (errno == EAGAIN) /* the counter is full: a wake-up is pending */
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

void concur__event_drain(int efd)
{
    uint64_t v;
    /* One read resets an eventfd's counter; EAGAIN: another drain took it first. */
    (void)concur__read_some(efd, &v, sizeof(v));
}

int concur__bell(int p[2])
{
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0)
        return 0;
    p[0] = p[1] = -1;
    return -errno;
}

int concur__bell_ring(int fd)
{
    for (;;) {
        if (write(fd, "", 1) == 1)
            return 0;
        if (errno == EAGAIN) /* full: rings are pending */
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

void concur__bell_drain(int fd)
{
    char buf[64];
    while (concur__read_some(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf))
        ; /* more may wait; a short read, EOF or EAGAIN: drained */
}

int concur__shm_create(size_t size, int *fd, void **map)
{
    *fd = -1;
    *map = NULL;
    int m = memfd_create("concur", MFD_CLOEXEC);
    if (m < 0)
        return -errno;
    void *p = MAP_FAILED;
    if (ftruncate(m, (off_t)size) == 0)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, m, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        concur__close(&m);
        return -e;
    }
    *fd = m;
    *map = p;
    return 0;
}

int concur__sock_drained(int fd)
{
    int unread = 0;
    if (ioctl(fd, SIOCOUTQ, &unread) != 0)
        return -errno;
    return unread == 0;
}
