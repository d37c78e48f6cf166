/*
 * concur/future.h - the task-function type and the one future type of every engine.
 *
 * A task is a function that takes an input as bytes and ends with a result as bytes or an
 * error (a code and a message). The same function runs unchanged on every engine: the
 * thread pool passes the input by pointer, engines that cross a process boundary copy it.
 * Inputs and results of up to CONCUR_INLINE_BYTES are stored inside the task record, so a
 * tiny task costs no allocation besides the record itself.
 *
 * A future is the completion object of one task:
 *
 *     PENDING --start--> RUNNING --return--> DONE
 *        |                  |----error-----> FAILED   (task error, task timeout, worker death)
 *        +-----cancel-----> CANCELLED
 *
 * DONE, FAILED and CANCELLED are terminal: a future reaches exactly one of them, once.
 * Futures are reference counted. The engine keeps its own reference until the task is
 * over, so releasing a pending future never cancels it and never frees it under the worker.
 * Every function here is thread-safe unless stated otherwise.
 */
#ifndef CONCUR_FUTURE_H
#define CONCUR_FUTURE_H

#include <stdarg.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Inputs and results up to this many bytes are stored inline in the task record. */
#define CONCUR_INLINE_BYTES 16

/**
 * The context of one running task (or of a worker initializer/finalizer), handed to the task
 * function. It is valid only during that call and only in the thread that received it.
 */
typedef struct concur_task concur_task;

/**
 * The task-function type, the same for every engine.
 *
 * @p in / @p len are the task's input bytes (in is never NULL when len > 0; it may be NULL
 * when len == 0). They are valid for the duration of the call, read-only.
 *
 * Return 0 for success; the result is what concur_task_return() or concur_task_result_alloc()
 * set (empty when neither was called). Return a negative code for failure: the future fails
 * with that code and the message given to concur_task_fail(), if any. A positive return value
 * is treated as CONCUR_ETASK.
 */
typedef int (*concur_fn)(concur_task *t, const void *in, size_t len);

/** One input of a batch submit. */
typedef struct concur_input {
    const void *data; /**< bytes, copied at submit; may be NULL when len == 0 */
    size_t len;       /**< bytes at data */
} concur_input;

/**
 * Sets the task's result to a copy of @p len bytes at @p data (replacing any earlier result).
 * Returns 0 or CONCUR_ENOMEM / CONCUR_EINVAL (data NULL with len > 0).
 */
CONCUR_API int concur_task_return(concur_task *t, const void *data, size_t len);

/**
 * Makes the result a buffer of @p len bytes, owned by the future, that the task writes in
 * place (no copy). Returns NULL on allocation failure. The contents are undefined until
 * written. A later call replaces the buffer.
 */
CONCUR_API void *concur_task_result_alloc(concur_task *t, size_t len);

/**
 * Typed input: copies the task's input @p in / @p len into the @p size bytes at @p dst when
 * @p len == @p size. Returns 0, or CONCUR_ESIZE with the message "input of LEN bytes, SIZE
 * expected" recorded (concur_task_fail), so a task can `return` it as is. See
 * CONCUR_TASK_INPUT.
 */
CONCUR_API int concur_task_input(concur_task *t, const void *in, size_t len, void *dst,
                                 size_t size);

/** concur_task_input() into the object @p ptr points to: `int x; int rc =
 *  CONCUR_TASK_INPUT(t, in, len, &x); if (rc) return rc;` */
#define CONCUR_TASK_INPUT(t, in, len, ptr) concur_task_input((t), (in), (len), (ptr), sizeof *(ptr))

#if defined(__GNUC__) || (defined(__STDC_VERSION__) && __STDC_VERSION__ > 201710L)
#define CONCUR_TYPEOF_(x) __typeof__(x)
/** Makes the value of the expression @p value the task's result, as its bytes (it may be an
 *  rvalue: `return CONCUR_TASK_RETURN_VALUE(t, x * x);`). Returns concur_task_return()'s
 *  code. With a compiler without typeof, @p value must be an lvalue. */
#define CONCUR_TASK_RETURN_VALUE(t, value)                                                 \
    concur_task_return((t), (CONCUR_TYPEOF_(value)[1]){[0] = (value)}, sizeof(value))
#else
#define CONCUR_TASK_RETURN_VALUE(t, value) concur_task_return((t), &(value), sizeof(value))
#endif

/**
 * Records an error message (printf-style) for the task and returns @p code, so a task can
 * end with `return concur_task_fail(t, -EIO, "read %s: %s", path, strerror(errno));`.
 * A non-negative @p code is replaced by CONCUR_ETASK. The message is truncated to 1 KiB.
 */
CONCUR_API int concur_task_fail(concur_task *t, int code, const char *fmt, ...)
    CONCUR_PRINTF(3, 4);

/** va_list form of concur_task_fail(). */
CONCUR_API int concur_task_vfail(concur_task *t, int code, const char *fmt, va_list ap);

/** The message last recorded by concur_task_fail() during this call, or NULL. */
CONCUR_API const char *concur_task_message(const concur_task *t);

/**
 * True once the task should stop early: its future was cancelled while running
 * (concur_future_cancel), its task timeout expired, or its pool is shutting down with
 * cancellation. Tasks that run long should poll it; a result returned after that is dropped.
 * Cheap (one atomic load).
 */
CONCUR_API bool concur_task_should_stop(const concur_task *t);

/**
 * Sleeps @p seconds, or less when the task should stop: returns 0 after the whole time,
 * CONCUR_ECANCELED as soon as concur_task_should_stop(@p t) is true (looked at every 5 ms
 * at most, and before sleeping at all), CONCUR_EINVAL for a negative or NaN @p seconds.
 * The task then usually returns that code: `if ((rc = concur_task_sleep(t, 2)) != 0) return
 * rc;`. @p t may be NULL (a plain sleep). Any engine (in a coroutine it suspends only the
 * coroutine); a signal does not cut it short.
 */
CONCUR_API int concur_task_sleep(const concur_task *t, double seconds);

/** The task's id: 1, 2, 3... in submission order per pool (0 in initializers/finalizers). */
CONCUR_API uint64_t concur_task_id(const concur_task *t);

/**
 * The name of the worker running the task, "concur-<pool name>-thread-worker-<n>" (or
 * "concur-<pool name>-process-worker-<n>" in a process pool) with n counted from 1 per pool
 * (the pool name defaults to "pool"). Valid during the call. The kernel's thread name (15
 * bytes at most) is "<pool name>-<n>", truncated.
 */
CONCUR_API const char *concur_task_worker_name(const concur_task *t);

/** The pool user data given in concur_pool_opts.user (NULL if none). */
CONCUR_API void *concur_task_user(const concur_task *t);

/* ------------------------------------------------------------------------------------ */

typedef struct concur_future concur_future;

typedef enum concur_state {
    CONCUR_PENDING = 0, /**< queued, not started */
    CONCUR_RUNNING,     /**< a worker runs it */
    CONCUR_DONE,        /**< ended with a result */
    CONCUR_FAILED,      /**< ended with an error */
    CONCUR_CANCELLED,   /**< cancelled before it started; never ran */
} concur_state;

/** Name of a state ("pending", "running", "done", "failed", "cancelled"). */
CONCUR_API const char *concur_state_name(concur_state s);

/**
 * Creates a standalone future in state PENDING with one reference owned by the caller,
 * completed by concur_future_set_result() / concur_future_set_error() (a promise). Engines
 * create their futures themselves. Returns 0 or CONCUR_ENOMEM / CONCUR_EINVAL.
 */
CONCUR_API int concur_future_create(concur_future **out);

/**
 * Completes a standalone future (from concur_future_create) with a copy of the result bytes.
 * Returns 0, CONCUR_ESTATE when the future is already terminal (nothing changes), or
 * CONCUR_EINVAL for a future of a pool: only its engine completes it (cancel it instead).
 */
CONCUR_API int concur_future_set_result(concur_future *f, const void *data, size_t len);

/**
 * Fails a standalone future with @p code (negative; a non-negative code becomes CONCUR_ETASK)
 * and an optional message (may be NULL; copied). Returns 0, CONCUR_ESTATE when already
 * terminal, or CONCUR_EINVAL for a future of a pool.
 */
CONCUR_API int concur_future_set_error(concur_future *f, int code, const char *msg);

/** Adds a reference. Returns @p f. */
CONCUR_API concur_future *concur_future_retain(concur_future *f);

/**
 * Drops a reference; the last one frees the future (and its result). Accepts NULL. Never
 * cancels the task. Safe inside a callback of the same future.
 */
CONCUR_API void concur_future_release(concur_future *f);

/** The current state (a snapshot). */
CONCUR_API concur_state concur_future_state(const concur_future *f);

/** True in DONE, FAILED or CANCELLED. */
CONCUR_API bool concur_future_is_done(const concur_future *f);

/** The task id given by the pool (1, 2, 3...; 0 for standalone futures). */
CONCUR_API uint64_t concur_future_id(const concur_future *f);

/**
 * Waits until the future is terminal. @p timeout: seconds; 0 does not block; negative waits
 * forever. Returns 0 when terminal (whatever the outcome), CONCUR_ETIMEDOUT on expiry. Does
 * not spin for long: after a short spin the thread sleeps in the kernel. Called from a
 * coroutine (CONCUR_ENGINE_COROUTINES), it suspends only that coroutine, and returns
 * CONCUR_ECANCELED or CONCUR_ETASKTIMEOUT when the coroutine is interrupted meanwhile
 * (docs/coroutines.md); the same holds for every wait built on it (collect, the sets).
 */
CONCUR_API int concur_future_wait(concur_future *f, double timeout);

/**
 * Waits like concur_future_wait() and returns the outcome: 0 with the result in
 * *data / *len (either may be NULL); the task's negative error code when FAILED (details with
 * concur_future_error_message()); CONCUR_ECANCELED when CANCELLED; CONCUR_ETIMEDOUT when the
 * wait expired (the future goes on; *data and *len untouched). The result memory belongs to
 * the future and stays valid while the caller holds a reference.
 */
CONCUR_API int concur_future_collect(concur_future *f, double timeout, const void **data,
                                     size_t *len);

/**
 * Non-blocking read of the outcome: like collect with timeout 0, except that an unfinished
 * future gives CONCUR_EAGAIN.
 */
CONCUR_API int concur_future_result(concur_future *f, const void **data, size_t *len);

/**
 * Typed result: waits like concur_future_collect() and copies the result into the @p size
 * bytes at @p dst. Returns 0 (the value is in *dst); CONCUR_ESIZE when the result is not
 * @p size bytes (*dst untouched); otherwise collect's code (the task's error when FAILED,
 * CONCUR_ECANCELED, CONCUR_ETIMEDOUT, ...). Same thread-safety as collect. See
 * CONCUR_FUTURE_GET.
 */
CONCUR_API int concur_future_get(concur_future *f, double timeout, void *dst, size_t size);

/** concur_future_get() into the object @p ptr points to: `int y; rc =
 *  CONCUR_FUTURE_GET(f, CONCUR_FOREVER, &y);` */
#define CONCUR_FUTURE_GET(f, timeout, ptr) concur_future_get((f), (timeout), (ptr), sizeof *(ptr))

/** The error code of a FAILED future (CONCUR_ECANCELED if CANCELLED, 0 otherwise). */
CONCUR_API int concur_future_error(const concur_future *f);

/**
 * The error message of a FAILED future: the task's own message when it gave one, else the
 * code's text; for a CANCELLED future, the text of CONCUR_ECANCELED. NULL while the future
 * is unfinished or DONE. Valid while the caller holds a reference.
 */
CONCUR_API const char *concur_future_error_message(const concur_future *f);

/** The whole detail of a future's error (concur_future_error_info()). */
typedef struct concur_error_info {
    int code;            /**< as concur_future_error() */
    const char *message; /**< as concur_future_error_message() */
    /** The signal that killed the worker process running the task (CONCUR_ECRASHED; also
     *  SIGKILL for a task timeout in a process pool, where the worker is killed), 0 if none. */
    int signal;
    int exit_status; /**< the worker process's exit status (CONCUR_ECRASHED), -1 if none */
    /** The backtrace text the worker process wrote as it crashed on a signal (SIGSEGV,
     *  SIGBUS, SIGFPE, SIGILL, SIGABRT), one frame per line; or, with the pool option
     *  error_backtrace, where the task called concur_task_fail(); NULL if none. */
    const char *backtrace;
    /** True when code and message are the task's own, returned by the task function in a
     *  worker process; false for errors made by concur (a crash, a timeout, a cancel) and for
     *  every error of a thread pool or a standalone future. */
    bool remote;
    /** The task function's name, when the dynamic linker knows it (an exported symbol, or
     *  any function of a program linked with -rdynamic); NULL otherwise, and for futures
     *  without a function (standalone ones). Static storage of the loader. */
    const char *function;
    /** True when the worker process hit a limit set in concur_pool_opts, as far as concur
     *  can tell: its CPU time limit (it died of SIGXCPU, or of SIGKILL with its CPU time at
     *  the limit). A crash under worker_memory_limit is not attributed for sure (the kernel
     *  only makes the allocation fail): its message names the limit, limit stays false. */
    bool limit;
} concur_error_info;

/**
 * Fills @p info with the outcome of a terminal future: for FAILED the code, message and
 * detail; for CANCELLED CONCUR_ECANCELED and its text; for DONE code 0 and message NULL.
 * Fields without a value are 0 / NULL / false, exit_status -1. Returns 0, CONCUR_EAGAIN
 * while the future is not terminal (info cleared as for DONE), CONCUR_EINVAL for NULL
 * arguments. The strings stay valid while the caller holds a reference.
 */
CONCUR_API int concur_future_error_info(const concur_future *f, concur_error_info *info);

/**
 * Cancels the task. A PENDING task becomes CANCELLED at once and never runs (callbacks run,
 * waiters wake): returns true. A RUNNING task is only flagged (concur_task_should_stop()
 * becomes true for it; it completes normally) and false is returned, as for a terminal one.
 */
CONCUR_API bool concur_future_cancel(concur_future *f);

/**
 * Cancels the task, killing it if it runs in a worker process. A PENDING task is cancelled
 * as by concur_future_cancel() (CANCELLED, never ran). A task RUNNING in a process pool's
 * worker has its worker process killed (SIGKILL, through a pidfd); its future fails
 * (FAILED: it did run) with CONCUR_ECANCELED and the message "cancelled while running: the
 * worker was killed", and the worker process is replaced, as after a crash. Returns true
 * when the task was cancelled or killed, false when it had finished, or when it runs in a
 * thread pool (only flagged, as by concur_future_cancel(): a thread cannot be killed). For
 * futures of thread pools and standalone futures it is concur_future_cancel(). It must not
 * run concurrently with concur_pool_destroy() of the task's pool.
 */
CONCUR_API bool concur_future_cancel_kill(concur_future *f);

/** True once concur_future_cancel() (or _cancel_kill()) has been called on the future. */
CONCUR_API bool concur_future_cancel_requested(const concur_future *f);

/**
 * Durations in seconds: *pending = submit to start (for a cancelled task, submit to
 * cancellation), *running = start to end (0 for a cancelled task). Both are 0 until the
 * future is terminal. Either pointer may be NULL.
 */
CONCUR_API void concur_future_durations(const concur_future *f, double *pending,
                                        double *running);

/**
 * A completion callback. It runs exactly once per registration, when the future becomes
 * terminal, in the thread that completed it (a worker, or the thread that cancelled it), or
 * at once in the registering thread when the future is already terminal. No concur lock is
 * held while it runs: it may submit work (even to the same pool), wait on other futures,
 * register callbacks and release the future (the completing thread holds its own reference
 * for the duration of the call). It must not block for long, since it delays that worker.
 */
typedef void (*concur_callback_fn)(concur_future *f, void *arg);

/**
 * Registers @p cb(@p f, @p arg). Callbacks of one future run in insertion order. Returns 0 or
 * CONCUR_ENOMEM / CONCUR_EINVAL; if it fails, the callback never runs.
 */
CONCUR_API int concur_future_add_callback(concur_future *f, concur_callback_fn cb, void *arg);

/**
 * Removes every registration equal to (@p cb, @p arg) that has not started to run and
 * returns how many were removed (0 when none, e.g. because the future completed and the
 * callback ran or is running).
 */
CONCUR_API int concur_future_remove_callback(concur_future *f, concur_callback_fn cb,
                                             void *arg);

/**
 * Makes an event loop see @p f finish: once @p f is terminal (at once when it is already),
 * adds 1 to the eventfd @p efd, which becomes readable. One eventfd may serve many futures
 * (its counter says how many finished since the last read); libuv (uv_poll_t), epoll, GLib
 * and the like wait on it without a thread of their own. @p efd should be an eventfd
 * (eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)); the write end of a pipe also works (8 bytes per
 * completion; a full pipe is readable anyway). The caller keeps @p efd open until @p f has
 * finished or the registration is removed with concur_future_remove_notify_fd(). The write
 * happens in the thread that completes the future (a callback). Returns 0, CONCUR_EINVAL
 * (NULL @p f, negative @p efd), CONCUR_ENOMEM. Thread-safe.
 */
CONCUR_API int concur_future_notify_fd(concur_future *f, int efd);

/** Removes the registrations of @p efd on @p f that have not run; returns how many. */
CONCUR_API int concur_future_remove_notify_fd(concur_future *f, int efd);

/* ------------------------------------------------------------------------------------ */
/* Sets of futures. The arrays are the caller's and are not modified; NULL entries are
 * invalid (CONCUR_EINVAL). Timeouts are for the whole call. */

/**
 * Waits until every future is terminal. Returns 0, or CONCUR_ETIMEDOUT. An empty set (n == 0)
 * returns 0 at once.
 */
CONCUR_API int concur_wait_all(concur_future *const *fs, size_t n, double timeout);

/**
 * Waits until at least one future is terminal and stores its index (the lowest index among
 * those already terminal) in *index. Returns 0, CONCUR_ETIMEDOUT, or CONCUR_EINVAL for an
 * empty set. Blocks in the kernel, no polling.
 */
CONCUR_API int concur_wait_any(concur_future *const *fs, size_t n, double timeout,
                               size_t *index);

/**
 * Collects the futures in input order: waits for each in turn and returns 0 when all are
 * DONE. At the first one (in input order) that is not DONE, returns at once with its error
 * code, or CONCUR_ECANCELED, and its index in *failed_index when not NULL; later futures are
 * not waited for. CONCUR_ETIMEDOUT on expiry. Results are then read with
 * concur_future_result().
 */
CONCUR_API int concur_collect_all(concur_future *const *fs, size_t n, double timeout,
                                  size_t *failed_index);

/**
 * A queue that hands out futures as they finish (completion order): put futures in, get
 * finished ones out. It holds a reference on each future it contains until handed out; the
 * getter then owns that reference.
 */
typedef struct concur_fqueue concur_fqueue;

/** Creates an empty queue. Returns 0 or CONCUR_ENOMEM. */
CONCUR_API int concur_fqueue_create(concur_fqueue **out);

/**
 * Destroys the queue; futures still inside are released (not cancelled). Waits for
 * callbacks of this queue that are running in other threads to return. Accepts NULL. Must
 * not be called concurrently with other calls on the same queue.
 */
CONCUR_API void concur_fqueue_destroy(concur_fqueue *q);

/** Adds @p f (the queue takes its own reference). Returns 0 or CONCUR_ENOMEM. */
CONCUR_API int concur_fqueue_put(concur_fqueue *q, concur_future *f);

/**
 * Takes the next finished future, in completion order, into *out (the caller now owns that
 * reference). @p timeout as for waits (0: do not block). Returns 0; CONCUR_EAGAIN when the
 * queue holds no futures at all (at once, even when blocking: nothing could ever come);
 * CONCUR_ETIMEDOUT when none has finished by the timeout (at once with timeout 0), as any
 * other wait. Inside a coroutine it suspends only the coroutine, and returns CONCUR_ECANCELED
 * or CONCUR_ETASKTIMEOUT when that coroutine is interrupted (concur/coro.h).
 * Thread-safe: any number of threads and coroutines may get from one queue.
 */
CONCUR_API int concur_fqueue_get(concur_fqueue *q, double timeout, concur_future **out);

/** Number of futures in the queue, finished or not. */
CONCUR_API size_t concur_fqueue_size(concur_fqueue *q);

/**
 * Iterates futures as they finish: completion order by default, input order with
 * keep_order. The array is the caller's and must outlive the iterator.
 */
typedef struct concur_as_done concur_as_done;

/**
 * Starts an iteration over @p n futures; @p timeout is the total for the whole iteration
 * (negative or 0 in the sense of waits: 0 never blocks). Returns 0 or CONCUR_ENOMEM /
 * CONCUR_EINVAL.
 */
CONCUR_API int concur_as_done_create(concur_as_done **out, concur_future *const *fs, size_t n,
                                     bool keep_order, double timeout);

/**
 * The next finished future (borrowed from the caller's array) and its index. Returns 1 when
 * one was produced, 0 at the end, CONCUR_ETIMEDOUT when the total timeout expired (calling
 * again keeps returning it).
 */
CONCUR_API int concur_as_done_next(concur_as_done *it, concur_future **f, size_t *index);

/** Ends the iteration. Accepts NULL. */
CONCUR_API void concur_as_done_destroy(concur_as_done *it);

/* ------------------------------------------------------------------------------------ */
/* Deadlines (asyncpal's Countdown). */

/** Seconds on a monotonic clock. */
CONCUR_API double concur_now(void);

/**
 * The seconds left until @p deadline (a concur_now() value), clamped at 0. A negative
 * deadline means "none" and gives CONCUR_FOREVER.
 */
CONCUR_API double concur_remaining(double deadline);

/** A deadline @p timeout seconds from now, or -1 (none) for a negative timeout. */
CONCUR_API double concur_deadline(double timeout);

#ifdef __cplusplus
}
#endif
#endif
