/*
 * concur/coro.h - waiting inside a coroutine: sleep, yield, fds (docs/coroutines.md).
 *
 * A pool created with CONCUR_ENGINE_COROUTINES runs each task as a coroutine: an ordinary
 * concur_fn on a small stack of its own, on a loop thread that runs many of them. When a
 * coroutine waits with one of the calls below, only it is suspended; its loop runs the
 * others meanwhile. A coroutine that computes, or blocks its thread in any other call
 * (read() on a blocking fd, a mutex, sleep()), holds its whole loop: see the stall counter,
 * concur_pool_counts.max_stall_ns.
 *
 * Inside a coroutine the library's waits (concur_future_wait, concur_future_collect,
 * concur_wait_all / concur_wait_any / concur_collect_all, as_done, concur_fqueue_get, and
 * the runner: concur_runner_run, concur_run_batch, concur_run_prog) suspend the coroutine as
 * well. The future waits and concur_fqueue_get may also return CONCUR_ECANCELED or
 * CONCUR_ETASKTIMEOUT (see Cancellation); a run interrupted that way stops as by
 * concur_runner_stop(CONCUR_STOP_TERM) and returns what a stopped run returns (its loop's
 * thread blocks while the stopped commands end).
 *
 * Outside a coroutine (any other thread, a thread-pool task) each call does the blocking
 * equivalent in the calling thread: sleep with nanosleep, yield with sched_yield, wait
 * for an fd with poll. There they are never cancelled.
 *
 * Cancellation. Inside a coroutine, each call that suspends returns CONCUR_ECANCELED when
 * the coroutine's future was cancelled by its owner while it ran (concur_future_cancel(),
 * which fails the future at once) or when its pool shuts down with CONCUR_SHUTDOWN_CANCEL,
 * and CONCUR_ETASKTIMEOUT when the pool's task_timeout has passed (the future failed with
 * CONCUR_ETASKTIMEOUT at that moment). The suspension in progress returns at once with that
 * code, and every later one returns it again without suspending; concur_task_should_stop()
 * is true. Whatever the coroutine returns afterwards is dropped: the future already failed
 * (a pool shutdown alone does not fail it). A coroutine that never suspends cannot be
 * interrupted: its future still fails at the timeout or cancel, but it runs on until it
 * returns or next calls one of these.
 *
 * Thread-safety: each call acts on the calling coroutine (or thread) only.
 */
#ifndef CONCUR_CORO_H
#define CONCUR_CORO_H

#include <sys/types.h>

#include "common.h"
#include "future.h"

#ifdef __cplusplus
extern "C" {
#endif

/** True when called from a coroutine of a CONCUR_ENGINE_COROUTINES pool. */
CONCUR_API bool concur_co_in_coroutine(void);

/**
 * The task context of the calling coroutine (the @p t its task function received), or NULL
 * outside a coroutine. Valid while the coroutine runs.
 */
CONCUR_API concur_task *concur_co_task(void);

/**
 * Suspends the calling coroutine for @p seconds (its loop's timers, millisecond
 * resolution); 0 or less is concur_co_yield(). Returns 0, CONCUR_ECANCELED or
 * CONCUR_ETASKTIMEOUT (see the header's comment), or CONCUR_EINVAL for NaN. Outside a
 * coroutine: nanosleep for that long, 0.
 */
CONCUR_API int concur_co_sleep(double seconds);

/**
 * Lets every other ready coroutine of the loop run once, and the loop look at its fds and
 * timers, then continues. Returns 0, CONCUR_ECANCELED or CONCUR_ETASKTIMEOUT. Outside a
 * coroutine: sched_yield(), 0.
 */
CONCUR_API int concur_co_yield(void);

/** Events for concur_co_wait_fd(). */
enum {
    CONCUR_CO_READ = 1,  /**< readable (or end of file, or an error pending) */
    CONCUR_CO_WRITE = 2, /**< writable (or an error pending) */
};

/**
 * Suspends the calling coroutine until @p fd is ready for one of @p events (CONCUR_CO_READ
 * and/or CONCUR_CO_WRITE) or @p timeout seconds pass (negative: no limit; 0: only look).
 * Returns the events that are ready (> 0; an error or hang-up on the fd reports both), or
 * CONCUR_ETIMEDOUT, CONCUR_ECANCELED, CONCUR_ETASKTIMEOUT, CONCUR_EINVAL (bad events, fd
 * < 0), or the negated errno of watching the fd (-EEXIST when another coroutine of the
 * same loop waits on that fd, -EPERM for a regular file, which is always ready). Outside a
 * coroutine: poll().
 */
CONCUR_API int concur_co_wait_fd(int fd, int events, double timeout);

/**
 * One read of up to @p n bytes from @p fd (at its file position), suspending the coroutine
 * until data comes, up to @p timeout seconds (negative: no limit; 0: only look). Returns
 * the byte count (0 at end of file) or a negative code: -errno of the read,
 * CONCUR_ETIMEDOUT, CONCUR_ECANCELED, CONCUR_ETASKTIMEOUT. A read that ends in an error
 * code took no data: what arrives later is there for the next read.
 *
 * Where the loop has an io_uring (liburing at build time, Linux 5.11 or later, io_uring
 * allowed), the read is handed to the kernel and completes there: fewer system calls, and a
 * blocking fd or a regular file does not block the loop. Otherwise it is read(), and on
 * EAGAIN a wait for the fd to become readable (as concur_co_wait_fd); a blocking fd then
 * blocks the whole loop in read(): make fds non-blocking for coroutines. On a pool with
 * coroutine_shared_stack, a @p buf on the coroutine's stack is read into through a copy on
 * the heap (the kernel must not write there while the coroutine is suspended), at most
 * 64 KiB per call; without memory for the copy, it takes that second way. With
 * coroutine_io_poll, a kernel thread takes the request from the ring and the loop watches
 * for its completion before it sleeps: no system call while messages flow. Outside a
 * coroutine: read() and poll().
 */
CONCUR_API ssize_t concur_co_read(int fd, void *buf, size_t n, double timeout);

/**
 * Writes all @p n bytes of @p buf to @p fd, suspending the coroutine whenever the fd is
 * full, up to @p timeout seconds in all. Returns @p n, or a negative code: -errno of the
 * write (-EPIPE for a closed pipe; SIGPIPE is not blocked for you), CONCUR_ETIMEDOUT,
 * CONCUR_ECANCELED, CONCUR_ETASKTIMEOUT; bytes written before a failure are not reported.
 * Through the loop's io_uring where it has one, as concur_co_read (and as it, a buffer on
 * a shared stack through heap copies of up to 64 KiB); otherwise write() and, on EAGAIN, a
 * wait for the fd to become writable. @p buf is read until the call returns.
 */
CONCUR_API ssize_t concur_co_write(int fd, const void *buf, size_t n, double timeout);

#ifdef __cplusplus
}
#endif
#endif
