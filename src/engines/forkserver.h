/*
 * engines/forkserver.h - the fork server of a process pool (forkserver.c): one
 * single-threaded process per pool, forked from the caller at pool creation, that forks
 * the worker processes on request and reports how each one ended; and the code map that
 * tells which function pointers are valid in the workers.
 */
#ifndef CONCUR_ENGINES_FORKSERVER_H
#define CONCUR_ENGINES_FORKSERVER_H

#include <sys/types.h>

#include "engines/proc_worker.h"

typedef struct concur__fs concur__fs;

/* What the fork server writes to a worker's status pipe when it has reaped it (one write,
 * far below PIPE_BUF: never partial). */
typedef struct concur__wstatus {
    int32_t status; /* the wait status */
    uint32_t reserved;
    uint64_t cpu_us; /* user + system CPU time the worker used (wait4's rusage) */
} concur__wstatus;

/*
 * Records the code map of this process, maps the pool's shared stop word, and forks the
 * pool's fork server. @workers sizes the server's first table of workers (it grows as
 * needed); @lim (copied) applies to every worker. Returns 0 and the server in *out, or a
 * negative code (nothing is left behind): -EPERM when a limit exceeds the hard limit this
 * process runs with.
 */
int concur__fs_create(concur__fs **out, int workers, const concur__limits *lim);

/* The cancel word of @slot, or NULL when @slot is outside 0 .. workers-1. */
_Atomic uint64_t *concur__fs_cancel_word(concur__fs *fs, int slot);

/* The limits given at creation. */
const concur__limits *concur__fs_limits(const concur__fs *fs);

/* Sets the pool's stop word, a MAP_SHARED page that every worker process shares with the
 * caller: concur_task_should_stop() becomes true for the tasks running there and later. */
void concur__fs_stop(concur__fs *fs);

/* Closes the request socket (the server then kills and reaps any worker left, and exits)
 * and reaps the server. Accepts NULL. */
void concur__fs_destroy(concur__fs *fs);

/* True when @addr lies in code that was mapped when the server was forked, so that the same
 * address is code in every worker. Lock-free, read-only. */
bool concur__fs_code_ok(const concur__fs *fs, uintptr_t addr);

/*
 * Asks the server to fork a worker process that serves the stream socket @sock, with the
 * answer ring in the memfd @ring (RING_SIZE bytes) and the write end of its bell @bell (both -1:
 * none), and to write the worker's wait status to @status_w when it ends. The caller keeps
 * (and closes) its own copies of the fds. Returns 0 and the worker's pid in *pid, or a
 * negative code. Thread-safe (requests are serialised).
 */
int concur__fs_spawn(concur__fs *fs, int sock, int status_w, int ring, int bell, pid_t *pid);

#endif
