/*
 * process_pool.h - internal interface of the process engine.
 *
 * A process pool is the thread engine (thread_pool.c) with one difference: each worker
 * thread is a *proxy* that owns one worker process and runs its tasks there. Queueing,
 * lazy start, idle shrink, recycling, join, shutdown, counters, cancel, callbacks and the map
 * family are the thread engine's, unchanged; the proxy thread's lifetime is its process's
 * lifetime. Two files implement the rest:
 *
 *   forkserver.c    the fork server: one single-threaded process per pool, forked from the
 *                   caller at pool creation, that forks the worker processes on request and
 *                   reports how each one ended; and the code map that tells which function
 *                   pointers are valid in the workers.
 *   process_pool.c  the wire format (frames over a stream socket), the loop of a worker
 *                   process, and the proxy side: run a task remotely, detect a crash or a
 *                   timeout, describe it, replace the process.
 *
 * See docs/process_pool.md for the design, the wire format and the guarantees.
 */
#ifndef CONCUR_ENGINES_PROCESSES_H
#define CONCUR_ENGINES_PROCESSES_H

#include <sys/types.h>

#include "core/concur_impl.h"

/* ---- the fork server (forkserver.c) ---- */

typedef struct concur__fs concur__fs;

/* Resource limits of every worker process (concur_pool_opts), set in the worker after fork. */
typedef struct concur__limits {
    uint64_t mem;   /* RLIMIT_AS (soft and hard) in bytes; 0: none */
    uint64_t cpu_s; /* RLIMIT_CPU soft limit in whole seconds (hard: one more); 0: none */
} concur__limits;

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

/* The shared mapping: the stop word at its start, then from CONCUR__CANCEL_WORDS_AT one
 * cancel word per worker slot (slots 0 .. workers-1, one per live proxy): a proxy writes the
 * id of a cancelled task there, and concur_task_should_stop() in its worker process reads
 * it. */
enum { CONCUR__CANCEL_WORDS_AT = 64 };
static inline _Atomic uint64_t *concur__cancel_word(const _Atomic int *stop, int slot)
{
    return (_Atomic uint64_t *)(void *)((char *)(uintptr_t)stop + CONCUR__CANCEL_WORDS_AT +
                                        (size_t)slot * sizeof(uint64_t));
}

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
 * Asks the server to fork a worker process that serves the stream socket @sock, and to write
 * the worker's wait status to @status_w when it ends. The caller keeps (and closes) its own
 * copies of both fds. Returns 0 and the worker's pid in *pid, or a negative code. Thread-safe
 * (requests are serialised).
 */
int concur__fs_spawn(concur__fs *fs, int sock, int status_w, pid_t *pid);

/* ---- worker processes and proxies (process_pool.c) ---- */

/* The loop of a worker process: applies @lim, then serves frames on @sock until EOF, then
 * _exits. @stop is the pool's shared stop word. Called by the fork server in the freshly
 * forked worker. */
_Noreturn void concur__worker_main(int sock, const concur__limits *lim, const _Atomic int *stop);

typedef struct concur__proc concur__proc;

/* A proxy's handle on its worker process; no process runs yet. @name and @user must outlive
 * it. @slot (0 .. workers-1, unique among the pool's live proxies) picks its cancel word.
 * Returns 0 or CONCUR_ENOMEM. */
int concur__proc_create(concur__proc **out, concur__fs *fs, const char *name, void *user,
                        int slot);

/*
 * Starts a worker process (replacing a dead one) and runs @init (if not NULL) in it, then
 * hands it the tasks its predecessor had been given and not answered (@timeout: the
 * pool's task_timeout). Returns 0, or a negative code with a message in t->msg (may be
 * NULL): *hook_failed says whether the initializer failed (or died) rather than the start
 * of the process.
 */
int concur__proc_start(concur__proc *pr, concur_worker_fn init, void *arg, concur_task *t,
                       bool *hook_failed, double timeout);

/*
 * Pipelining. A proxy hands its process RUNNING futures in order (concur__proc_push): the
 * process runs one and finds the next ones already in its socket, so tiny tasks cost no
 * sleep and wake-up each. The first one handed over runs; each later one starts (its
 * t_start, its timeout) when the one before it is answered. concur__proc_finish_one waits
 * for the first one's answer and completes it: the result, the task's own error (remote),
 * or CONCUR_ECRASHED / CONCUR_ETASKTIMEOUT with the worker's fate, or CONCUR_ECANCELED when
 * concur__proc_kill_task killed it. *alive = false when the process is gone (crashed,
 * exited, killed): the caller starts a replacement with concur__proc_start, which takes the
 * unanswered tasks over. Returns the completed future (the caller holds the engine's
 * reference, handed over at the push). Only the proxy thread calls these.
 */
void concur__proc_push(concur__proc *pr, concur_future *f, double timeout);
concur_future *concur__proc_finish_one(concur__proc *pr, concur_task *t, double timeout,
                                       bool *alive);
/* Futures handed over and not completed yet. */
unsigned concur__proc_inflight(const concur__proc *pr);
/* Whether to hand over one more now: fewer than min(@room, a fixed depth) are in flight,
 * the last task was short (tasks of unknown or long run time go one at a time, so that no
 * task waits behind a long one while another worker is free) and the stream is sound. */
bool concur__proc_want_more(const concur__proc *pr, unsigned room);

/*
 * Kills the worker process if it runs @f, so that it fails with CONCUR_ECANCELED; a task
 * handed over and still waiting its turn is killed when it starts. Sets *found when @f is
 * one of this proxy's tasks; returns true when the kill was sent or is scheduled. Called
 * from any thread, while the caller guarantees that @pr stays alive.
 */
bool concur__proc_kill_task(concur__proc *pr, const concur_future *f, bool *found);

/*
 * Passes a cancel of @f on to the process, if @f is one of this proxy's tasks (sets *found
 * and returns true then): concur_task_should_stop() there becomes true while it runs. A
 * future cancelled before it reaches the proxy is caught at concur__proc_push. Called from
 * any thread, while the caller guarantees that @pr stays alive.
 */
bool concur__proc_cancel_task(concur__proc *pr, const concur_future *f, bool *found);

/* Runs the finalizer @fn in the worker process. Returns 0 (also when no process runs), or a
 * negative code with a message in t->msg. */
int concur__proc_final(concur__proc *pr, concur_worker_fn fn, void *arg, concur_task *t);

/* Ends the worker process (EOF on its socket; SIGKILL if it does not leave promptly), waits
 * until the server has reaped it, and frees the handle. Accepts NULL. */
void concur__proc_destroy(concur__proc *pr);

#endif
