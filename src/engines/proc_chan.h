/*
 * engines/proc_chan.h - the wire between a proxy thread and its worker process: frame
 * layout, limits of what is kept, and frame I/O on the socket (proc_chan.c). Used by both
 * sides: processes.c (the proxy) and proc_worker.c (the worker).
 */
#ifndef CONCUR_ENGINES_PROC_CHAN_H
#define CONCUR_ENGINES_PROC_CHAN_H

#include <sys/types.h>
#include <sys/uio.h>

#include "core/concur_impl.h"
#include "sys/wire.h"

/* Frames over one AF_UNIX stream socket, in the one wire codec's layout (sys/wire.h). See
 * docs/process_pool.md for the table of frames. */
enum {
    NAME_CAP = 256,         /* worker names are shorter (pool names <= 64 bytes) */
    EXIT_GRACE_MS = 2000,   /* a worker told to leave gets this long, then SIGKILL */
    BROKEN_GRACE_MS = 200,  /* a worker that broke the protocol: time to die of its own */
    KEEP_INPUT = 1 << 20,   /* a worker keeps an input buffer up to this size */
    RBUF_CAP = 64 << 10,    /* read buffer of a worker and of a proxy */
    DEPTH = 16,             /* tasks a proxy hands its process at once (pipelining) */
    AHEAD_BYTES = 64 << 10, /* frame bytes handed over but not answered yet */
    SHORT_NS = 200000,      /* tasks shorter than this are pipelined */
};

/* A read buffer: frames are read in as few recv() calls as the bytes available allow. */
typedef struct concur__rbuf {
    char *p;
    size_t cap, off, end; /* unread bytes: p[off, end) */
} concur__rbuf;

typedef struct concur__chan {
    int fd;
    int status;        /* the worker's status pipe (proxy side), or -1 */
    uint64_t deadline; /* CLOCK_MONOTONIC ns; UINT64_MAX: none */
    concur__rbuf *rb;  /* NULL: unbuffered */
} concur__chan;

/* Waits until c->fd is ready for @events. 0 (try again), CONCUR_EPIPE when the worker is gone
 * (its status arrived while the socket is silent), CONCUR_ETIMEDOUT at the deadline. */
int concur__chan_wait(const concur__chan *c, short events);
/* Sends all of @iov (modified). 0, CONCUR_EPIPE (peer gone), CONCUR_ETIMEDOUT or -errno. */
int concur__chan_send(const concur__chan *c, struct iovec *iov, int n);
/* One recv() of up to @cap bytes, waiting as needed: the count, or CONCUR_EPIPE (EOF),
 * CONCUR_ETIMEDOUT, -errno. */
ssize_t concur__chan_recv_some(const concur__chan *c, void *dst, size_t cap);
/* Receives exactly @len bytes (through c->rb when set). 0 or as concur__chan_recv_some. */
int concur__chan_recv(const concur__chan *c, void *buf, size_t len);
/* Receives and drops @len bytes. */
int concur__chan_skip(const concur__chan *c, uint64_t len);
/* Reads until EOF (or the deadline), keeping the first @cap bytes as a string in *out (NULL
 * when nothing came or memory is short). Returns 0 at EOF (or when the worker's status
 * arrived), else what stopped it: CONCUR_ETIMEDOUT, -errno. */
int concur__chan_read_to_eof(const concur__chan *c, size_t cap, char **out);

#endif
