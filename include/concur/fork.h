/*
 * concur/fork.h - fork calls: run one task function in a child process forked for that one
 * call, and waitfor, a loop over a caller-owned array of futures that also keeps a number
 * of calls in flight.
 *
 * concur_fork_call() forks the calling process now. The child runs the task function on
 * its own copy of the caller's memory, as it was at the call, sends the result (or error)
 * back through a pipe and ends with _exit; the call returns at once with a future that is
 * already RUNNING. Nothing the child does (globals, heap, exit()) reaches the parent except
 * its result. One supervisor thread per process, started with the first call and gone when
 * no call is outstanding, reads the results, reaps the children and completes the futures.
 * See docs/fork_calls.md for the wire format and the fork-from-threads hazard.
 *
 * A fork call is the right tool for a few long, independent calls, or for calls that must
 * see the caller's whole state as it is now. For many small tasks, for callers that run
 * threads, or for crash isolation with reused workers, use a process pool
 * (CONCUR_ENGINE_PROCESSES in concur/pool.h).
 */
#ifndef CONCUR_FORK_H
#define CONCUR_FORK_H

#include "future.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Options of one fork call. A zeroed struct (or NULL) gives the defaults. */
typedef struct concur_fork_opts {
    /** Seconds the child may run, counted from the call. Past it the child is killed
     *  (SIGKILL), with the processes it started (as by concur_fork_call's kill), and the
     *  future fails with CONCUR_ETASKTIMEOUT (error info: signal 9).
     *  0 or less: no timeout. NaN is CONCUR_EINVAL. */
    double timeout;
    /** Returned by concur_task_user() in the child. Any pointer of the caller works: the
     *  child has a copy of the caller's memory as it was at the call. */
    void *user;
} concur_fork_opts;

/**
 * Forks a child process that runs @p fn(t, @p in, @p len) and returns at once with its
 * future in *out (one reference, the caller's).
 *
 * The future is RUNNING from the start and cannot be cancelled: concur_future_cancel()
 * returns false (it only flags the future; the child does not see the flag, and
 * concur_task_should_stop() stays false in the child). concur_future_cancel_kill() kills
 * the child (SIGKILL): the future fails with CONCUR_ECANCELED, "cancelled while running: the
 * child process was killed". Such a kill (or a timeout's) also kills what the child started
 * and still runs: the child is the subreaper of its descendants, and before its SIGKILL it
 * is stopped and each of its children is killed with the process group it leads, until no
 * new one appears (up to 2 s; the caller waits that long at most). Its id
 * (concur_future_id) is 1, 2, 3... per process.
 *
 * The child: sees the caller's memory as it was at the call (@p in is read there, never
 * copied: the caller may change or free it as soon as this returns); runs @p fn with a task
 * context on which concur_task_return, concur_task_result_alloc, concur_task_fail,
 * concur_task_user (opts->user), concur_task_id and concur_task_worker_name
 * ("concur-fork-<id>") work; then flushes every stdio stream (fflush(NULL)), sends the result
 * and ends with _exit(), so it never returns into the caller's code and none of the caller's
 * atexit handlers run there. A call to exit() inside @p fn flushes stdio and ends the child
 * with that status, before the caller's atexit handlers: the child ended without reporting.
 * Before forking, the caller's stdio streams are flushed (fflush(NULL)) so that output
 * buffered at the call is not written twice.
 *
 * The future ends as follows (details with concur_future_error_info()):
 * - @p fn returned 0: DONE with the result bytes, any size;
 * - @p fn returned a negative code (or a positive one: CONCUR_ETASK): FAILED with that code
 *   and the message of concur_task_fail(), error info remote = true;
 * - the child ended before reporting (a signal, a crash, exit(), _exit()): CONCUR_ECRASHED,
 *   "child process died before reporting: killed by signal 9 (Killed)" or "child process
 *   exited with status 3 before reporting", with the signal or the exit status in the
 *   error info, and for SIGSEGV, SIGBUS, SIGFPE, SIGILL or SIGABRT the child's backtrace
 *   (when the caller left that signal's disposition at its default);
 * - past opts->timeout: CONCUR_ETASKTIMEOUT; killed by concur_future_cancel_kill():
 *   CONCUR_ECANCELED;
 * - the parent has no memory for the result: CONCUR_ENOMEM (the child is still reaped).
 * When the future completes, its child has been reaped: no zombie is left. Callbacks of the
 * future run in the supervisor thread; they may make fork calls, but must not call
 * concur_fork_drain().
 *
 * Returns 0, or CONCUR_EINVAL (NULL out or fn, NULL in with len > 0, NaN timeout),
 * CONCUR_ENOMEM, or the negated errno of pipe, fork, pidfd_open (which needs Linux 5.3;
 * -ENOSYS before), epoll or thread creation (-EAGAIN: no more processes or threads,
 * -EMFILE ...); on failure *out is untouched and no child is left running (one that was
 * forked is killed and reaped).
 *
 * Thread-safe. In a process that runs other threads, the child is a copy of the calling
 * thread only: locks that other threads held at the fork stay held in the child (glibc's
 * malloc and stdio are reset by glibc; others are not). See docs/fork_calls.md.
 * Calls may be nested: @p fn may make fork calls in the child (the child starts its own
 * supervisor). Futures of calls that were outstanding when a process was forked never
 * complete in that child: their results go to the parent.
 */
CONCUR_API int concur_fork_call(concur_future **out, concur_fn fn, const void *in, size_t len,
                                const concur_fork_opts *opts);

/**
 * Waits until no fork call of this process is outstanding (every child reaped, every
 * future completed and its callbacks run) and the supervisor thread has closed its file
 * descriptors and is leaving. @p timeout: seconds; 0 does not block; negative waits
 * forever. Returns 0, CONCUR_ETIMEDOUT, or CONCUR_EDEADLK when called from the supervisor
 * thread (a callback of a fork call's future), where it would wait for itself.
 * Never needed for correctness: the supervisor does not keep the process alive. Thread-safe.
 */
CONCUR_API int concur_fork_drain(double timeout);

/* ------------------------------------------------------------------------------------ */
/* waitfor: finished futures out of a caller-owned array, with an optional concurrency
 * factor. It works on any futures (fork calls, pools, standalone ones). */

/** What concur_waitfor_next() produced. */
enum {
    CONCUR_WAITFOR_END = 0,    /**< the array is empty and nothing was added when asked */
    CONCUR_WAITFOR_FUTURE = 1, /**< a finished future, taken out of the array */
    CONCUR_WAITFOR_MORE = 2,   /**< fewer than cf futures are in flight: submit more */
};

/**
 * The state of one waitfor loop, initialised by concur_waitfor_init(). It owns nothing and
 * needs no destroy. Not thread-safe: one thread drives the loop and owns the array.
 */
typedef struct concur_waitfor {
    /** The caller's array of futures: each entry holds one reference owned by the caller.
     *  Its capacity is the caller's business; the caller may point this field at a new
     *  array between calls (after growing it with realloc). */
    concur_future **futs;
    /** The number of futures in the array. The caller adds futures by appending them and
     *  incrementing *n; concur_waitfor_next() removes the ones it returns. */
    size_t *n;
    int cf;       /**< concurrency factor (0: none) */
    int phase_;   /**< private */
    size_t pos_;  /**< private: the sweep's position */
    size_t seen_; /**< private: *n when MORE was last returned */
} concur_waitfor;

/**
 * Starts a waitfor loop over the array @p futs holding *@p n futures, with concurrency
 * factor @p cf (0: none; otherwise the number of futures the loop asks to keep in flight).
 * Returns 0, or CONCUR_EINVAL for NULL @p it, @p futs or @p n, or a negative @p cf.
 */
CONCUR_API int concur_waitfor_init(concur_waitfor *it, concur_future **futs, size_t *n, int cf);

/**
 * The next step of the loop:
 * - CONCUR_WAITFOR_FUTURE: a finished future (DONE, FAILED or CANCELLED) is in *@p f. It
 *   was removed from the array (later entries move down one place, keeping their order) and
 *   its reference is now the caller's to release. Each sweep over the array returns the
 *   finished futures in array order; a new sweep starts when the previous one is over.
 * - CONCUR_WAITFOR_MORE (*@p f = NULL): a sweep ended with fewer than cf futures in the
 *   array: append futures now (one per MORE keeps at most cf in flight; more is allowed).
 *   MORE is returned again while the caller keeps adding and the array stays below cf; when
 *   a MORE is answered by adding nothing, the loop stops asking until the next sweep.
 * - CONCUR_WAITFOR_END (*@p f = NULL): the array is empty and the caller did not add to it
 *   when asked; with cf 0, an empty array ends the loop at once. Calling again after END
 *   returns END while the array stays empty, and resumes if futures were added.
 * Between sweeps it blocks until a future of the array finishes (no polling), for at most
 * @p timeout seconds (0: do not block; negative: forever): CONCUR_ETIMEDOUT then, and the
 * next call waits again. CONCUR_EINVAL: NULL @p it or @p f, NULL it->futs or it->n, a NULL
 * entry in the array, or a negative it->cf.
 */
CONCUR_API int concur_waitfor_next(concur_waitfor *it, double timeout, concur_future **f);

#ifdef __cplusplus
}
#endif
#endif
