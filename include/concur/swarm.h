/*
 * concur/swarm.h - n copies of one task function, started at once, and their waiter.
 *
 * concur_swarm_start() runs n copies of a task function (the concur_fn of every engine) at
 * the same time on an engine of its own (threads, processes or coroutines) and returns a
 * swarm: the handle that waits for the copies, lists their errors and stops them. Every
 * copy gets the same input bytes; concur_swarm_index() tells a copy which one it is. Copies
 * usually share work through memory: a counter that hands out items, an array of results.
 *
 * Shared memory. Thread copies share the caller's memory. Process copies run in worker
 * processes forked (through a fork server) when the swarm starts: they see the caller's
 * memory as it was then, and their writes stay in their own process, except in memory
 * mapped MAP_SHARED before concur_swarm_start() (mmap(MAP_SHARED | MAP_ANONYMOUS), or a
 * file): pass a pointer to it in the input, use atomics or process-shared locks there.
 *
 * Errors. A copy that fails (returns a negative code; a process copy that crashes, calls
 * exit() or _exit(), or is killed: CONCUR_ECRASHED) does not stop the others, unless the
 * swarm runs in CONCUR_SWARM_FAIL_HARD mode. Errors are recorded in the order the copies
 * end, and can be read at any time (concur_swarm_errors()), before the swarm is done too.
 *
 * Stopping. concur_swarm_stop() interrupts every copy and waits for them to end: a process
 * copy is killed at once (SIGKILL); a thread copy cannot be killed, it sees
 * concur_task_should_stop() become true and ends when it next looks (a blocking call in it
 * finishes first). What copies finished before the stop stays done; the errors of the
 * copies that end after it (they were interrupted) are not recorded.
 *
 * Every function is thread-safe, except concur_swarm_destroy(), which must not run
 * concurrently with any other call on the same swarm. Calls that wait for the copies
 * (wait and stop with a timeout other than 0, destroy) must not be made from a copy of the
 * same swarm: they would wait for the caller itself.
 */
#ifndef CONCUR_SWARM_H
#define CONCUR_SWARM_H

#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct concur_swarm concur_swarm;

/** What concur_swarm_wait() does with the copies' errors. */
typedef enum concur_swarm_mode {
    /** Wait for every copy; then return CONCUR_ETASK when any copy failed, 0 otherwise. */
    CONCUR_SWARM_COLLECT = 0,
    /** Wait for every copy and return 0 whatever they did; the errors stay readable. */
    CONCUR_SWARM_SUPPRESS,
    /** At the first error, stop the other copies (as concur_swarm_stop() does, at once, even
     *  when nobody waits yet); wait then returns that copy's own error code. */
    CONCUR_SWARM_FAIL_HARD,
} concur_swarm_mode;

/** Swarm options. A zeroed struct (or NULL) gives the defaults. */
typedef struct concur_swarm_opts {
    concur_swarm_mode mode; /**< default CONCUR_SWARM_COLLECT */
    /**
     * The engine and its options, copied. NULL: the process-wide default engine
     * (concur_swarm_get_default_engine()) with default options. When given, its engine is
     * used as is (set .engine = concur_swarm_get_default_engine() to follow the default).
     * The swarm sets max_workers to n, and queue_limit, idle_timeout and
     * max_tasks_per_worker to 0; the other fields apply (name, default "swarm"; user;
     * initializer / finalizer; task_timeout, after which a copy fails with
     * CONCUR_ETASKTIMEOUT; worker limits of process engines).
     */
    const concur_pool_opts *pool;
} concur_swarm_opts;

/**
 * Starts @p n copies of @p fn, each with a copy of the @p len input bytes at @p in, on an
 * engine of n workers of their own, and returns the swarm in *out. Every copy has its
 * worker when this returns: n threads, or on a process engine n worker processes, forked
 * and set up (initializer run) before any copy is handed out. If not all of them can start
 * (a thread or a process cannot be created), nothing runs, nothing is left running and the
 * call fails with CONCUR_EAGAIN (CONCUR_EINITIALIZER when the pool's initializer failed).
 * So the copies run at the same time; they may have ended already. On
 * CONCUR_ENGINE_COROUTINES the copies are coroutines sharing one loop thread (or the pool
 * options' max_workers, at most n), every loop thread up before this returns: they run at
 * the same time as long as they wait with concur/coro.h, and stopping interrupts those
 * waits. With @p n <= 0 nothing starts: the swarm is done at once, concur_swarm_wait()
 * returns 0 and there are no errors. @p opts may be NULL; it is copied.
 *
 * A process engine forks its fork server here, from the calling thread (see fork safety in
 * concur/pool.h), and @p fn must be code loaded by then.
 *
 * Returns 0, CONCUR_EINVAL (NULL out or fn, NULL in with len > 0, an unknown mode, a bad
 * pool option, a process engine's fn outside the loaded code), CONCUR_ENOMEM, CONCUR_EAGAIN
 * (fewer than n workers could start), or an engine's error from concur_pool_create() or
 * concur_pool_submit_batch(). On error nothing runs and *out is untouched.
 */
CONCUR_API int concur_swarm_start(concur_swarm **out, int n, concur_fn fn, const void *in,
                                  size_t len, const concur_swarm_opts *opts);

/**
 * Waits until every copy has ended, or @p timeout (seconds; 0 does not block; negative waits
 * forever). Returns CONCUR_ETIMEDOUT on expiry (the copies go on); otherwise the outcome,
 * the same at every call: 0 (no copy failed, or CONCUR_SWARM_SUPPRESS), CONCUR_ETASK
 * (CONCUR_SWARM_COLLECT, at least one error recorded), or in CONCUR_SWARM_FAIL_HARD the
 * error code of the copy that failed first, whose detail is concur_swarm_errors(sw, 0, ..).
 * In FAIL_HARD mode a copy's own code may be CONCUR_ETIMEDOUT: concur_swarm_done() tells
 * the two apart. After concur_swarm_stop(), the outcome counts the errors recorded before
 * the stop. CONCUR_EINVAL for NULL @p sw.
 */
CONCUR_API int concur_swarm_wait(concur_swarm *sw, double timeout);

/**
 * Interrupts every copy and waits up to @p timeout for all of them to end: copies not yet
 * started never start, process copies are killed (SIGKILL), thread copies see
 * concur_task_should_stop() turn true. Errors of copies that end from now on are not
 * recorded. Returns 0 once every copy has ended (at once when they already had),
 * CONCUR_ETIMEDOUT on expiry (the interrupted copies go on until they notice), CONCUR_EINVAL
 * for NULL @p sw. Calling it again is harmless.
 */
CONCUR_API int concur_swarm_stop(concur_swarm *sw, double timeout);

/**
 * Stops the swarm if copies still run (as concur_swarm_stop(sw, CONCUR_FOREVER)), waits for
 * them, shuts its engine down and frees everything: no thread, process or fd of the swarm
 * is left. Strings returned by concur_swarm_errors() become invalid. Accepts NULL.
 */
CONCUR_API void concur_swarm_destroy(concur_swarm *sw);

/** One recorded error of a copy. */
typedef struct concur_swarm_err {
    int index;           /**< the copy, 0 .. n-1 (concur_swarm_index() in that copy) */
    int code;            /**< its negative error code (concur_future_error()) */
    const char *message; /**< never NULL; valid until concur_swarm_destroy() */
    /** Process copies: the signal that killed the worker (CONCUR_ECRASHED), else 0. */
    int signal;
    /** Process copies: the status the worker exited with (exit, _exit), else -1. */
    int exit_status;
} concur_swarm_err;

/**
 * The errors recorded so far, in the order the copies ended. Returns how many there are;
 * when @p i is below that and @p out is not NULL, *out receives the i-th. Callable at any
 * time: the list only grows, so an earlier answer stays true. 0 for NULL @p sw.
 */
CONCUR_API size_t concur_swarm_errors(const concur_swarm *sw, size_t i, concur_swarm_err *out);

/**
 * Writes the recorded errors as text, one line per error, "copy 2: the message (EIO)\n"
 * (the code's name, or its number when it has none), NUL-terminated and truncated to
 * @p size bytes (@p buf may be NULL when size is 0). Returns the length of the whole text,
 * as snprintf does: a result >= size means it was truncated. Empty when there is no error.
 */
CONCUR_API size_t concur_swarm_format_errors(const concur_swarm *sw, char *buf, size_t size);

/** True once every copy has ended (at once for n <= 0). False for NULL. */
CONCUR_API bool concur_swarm_done(const concur_swarm *sw);

/**
 * Makes an event loop see the swarm end: once every copy has ended (at once when the swarm
 * is done already), adds 1 to the eventfd @p efd, as concur_future_notify_fd() does for a
 * future. The caller keeps @p efd open until then or until the swarm is destroyed. Returns
 * 0, CONCUR_EINVAL (NULL @p sw, negative @p efd) or CONCUR_ENOMEM. Thread-safe.
 */
CONCUR_API int concur_swarm_notify_fd(concur_swarm *sw, int efd);

/** The number of copies started (0 when n <= 0 was given, or for NULL). */
CONCUR_API int concur_swarm_size(const concur_swarm *sw);

/** The engine the copies run on: the one chosen at start, also for n <= 0. */
CONCUR_API concur_engine concur_swarm_engine(const concur_swarm *sw);

/**
 * In a copy, its index: 0 .. n-1, distinct per copy (the copy's task id minus 1). -1 in a
 * worker initializer or finalizer. Works on every engine.
 */
CONCUR_API int concur_swarm_index(const concur_task *t);

/**
 * Sets the process-wide default engine, used by swarms started without pool options. Seen
 * by every thread (an atomic). Returns 0, or CONCUR_EINVAL for an unknown engine (nothing
 * changes). Thread-safe.
 */
CONCUR_API int concur_swarm_set_default_engine(concur_engine engine);

/** The process-wide default engine: CONCUR_ENGINE_THREADS until set. Thread-safe. */
CONCUR_API concur_engine concur_swarm_get_default_engine(void);

#ifdef __cplusplus
}
#endif
#endif
