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
    DEPTH = 64,             /* tasks a proxy hands its process at once (pipelining) */
    AHEAD_BYTES = 64 << 10, /* frame bytes handed over but not answered yet */
    SHORT_NS = 200000,      /* tasks shorter than this are pipelined */
};

/*
 * The answer ring: shared memory between a proxy and its worker process (a memfd the proxy
 * makes for each process it starts; the fork server maps it into the new worker), where the
 * worker puts the RESULT frames of tasks so that answering costs no write to the socket. A
 * byte ring of records {u64 stamp, frame}, each at a multiple of RING_ALIGN; one that would
 * cross the end is put at the start behind a PAD frame. Only the worker writes head, only
 * the proxy tail. Answers too big for it, hook answers and crash reports go on the socket.
 *
 * The worker answers in the order of the tasks, so the proxy finds the answer it waits for
 * at the ring's first record (same id) or, when that is a later task's (or the ring is
 * empty and the socket has a frame), on the socket. A proxy about to sleep says so
 * (sleeping); the worker that then puts an answer rings the bell, a pipe the proxy polls
 * beside the socket (not the socket: the worker's own bytes there would keep it from
 * looking drained, below).
 *
 * A task runs where the socket is an open fd, and may write into it: what it wrote must be
 * read before its answer, as on a single stream, so that it is blamed and no other task.
 * So a task's answer goes in the ring only when the socket was drained when the task
 * returned (SIOCOUTQ 0: the proxy has received every byte written into it), and its record
 * carries the stamp rx_total at that moment (the bytes the proxy had received, under the
 * rx_seq count the proxy makes odd around each recv()); the proxy reads what came on the
 * socket before that stamp before it takes the record. Otherwise the answer
 * goes on the socket, after what the task wrote there. The proxy trusts nothing in the
 * ring: a record that does not fit what was published is CONCUR_EIO.
 */
enum {
    RING_HDR = 4096,         /* the header page; the records follow */
    RING_DATA = 16 << 10,    /* bytes of records */
    RING_SIZE = RING_HDR + RING_DATA,
    RING_ALIGN = 32,         /* records start at multiples of this */
    RING_MAX = RING_DATA / 4 /* bigger answers go on the socket */
};

typedef struct concur__ring {
    _Atomic uint64_t head; /* bytes the worker has published */
    char pad[56];
    _Atomic uint64_t tail;     /* bytes the proxy has consumed */
    _Atomic uint32_t sleeping; /* 1: the proxy sleeps until the bell rings */
    uint32_t reserved;
    _Atomic uint64_t rx_seq;   /* odd while the proxy is in a recv() */
    _Atomic uint64_t rx_total; /* bytes the proxy has received from the socket */
} concur__ring;

/* Worker: whether the socket @fd is drained (nothing written into it is unread by the
 * proxy); then *stamp is the count of bytes the proxy has received. One system call. */
bool concur__ring_drained(const concur__ring *r, int fd, uint64_t *stamp);
/* Worker: puts the frame in @iov (@n entries) in the ring with @stamp. False when it does
 * not fit (it then goes on the socket). *bell: the proxy was asleep, ring the bell. */
bool concur__ring_put(concur__ring *r, const struct iovec *iov, int n, uint64_t stamp,
                      bool *bell);
/* Proxy: the first record in the ring (a RESULT): its header in *h, its stamp in *stamp and
 * *frame at the frame (header included). 1, 0 when the ring is empty, CONCUR_EIO when it is
 * malformed. */
int concur__ring_peek(concur__ring *r, concur__frame *h, uint64_t *stamp, const char **frame);
/* Proxy: drops the record concur__ring_peek returned. */
void concur__ring_pop(concur__ring *r, const concur__frame *h);
/* Proxy: about to sleep (@on), or awake again. Setting it orders against the next
 * concur__ring_peek: a record put after that peek rings the bell. */
void concur__ring_sleep(concur__ring *r, bool on);

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
    concur__ring *ring; /* proxy side: counts what it receives there (rx_seq, rx_total) */
} concur__chan;

/* Waits until c->fd is ready for @events. 0 (try again), CONCUR_EPIPE when the worker is gone
 * (its status arrived while the socket is silent), CONCUR_ETIMEDOUT at the deadline. */
int concur__chan_wait(const concur__chan *c, short events);
/* The same, and also until @other (an fd, or -1) is readable: then 1. */
int concur__chan_wait_or(const concur__chan *c, short events, int other);
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
