/*
 * concur/pool.h - pools of workers that run tasks and complete futures.
 *
 * One pool type for every engine: the engine is a field of the options, so switching from
 * threads to processes is a one-line change for the caller; the task function, the futures
 * and every call here stay the same.
 *
 * Lifecycle: a pool is OPEN after concur_pool_create(). It becomes BROKEN when a worker
 * initializer or finalizer fails (pending tasks are cancelled and listed, every later
 * submit-like call returns the stored error), and CLOSED after concur_pool_shutdown(); a
 * closed pool refuses work with CONCUR_ECLOSED ("closed" wins over "broken").
 * concur_pool_destroy() shuts down (draining the queue) and frees.
 *
 * Workers are started lazily, when work is submitted and no worker is free, up to
 * max_workers. Pools still open when the program exits are shut down by an exit handler:
 * pending tasks are cancelled (their callbacks run), running tasks are asked to stop
 * (concur_task_should_stop) and awaited, so exit neither hangs on idle workers nor tears
 * memory from under running tasks.
 *
 * Every function is thread-safe; any thread, including a pool's own workers and callbacks,
 * may submit to any pool. Calls that wait for the pool's workers to finish (join, shutdown
 * with a wait, destroy) return CONCUR_EDEADLK when made from a worker of that same pool,
 * where they would wait for themselves.
 */
#ifndef CONCUR_POOL_H
#define CONCUR_POOL_H

#include "future.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct concur_pool concur_pool;

/**
 * The engine that runs a pool's tasks.
 *
 * CONCUR_ENGINE_PROCESSES runs each task in a worker process (docs/process_pool.md). The
 * API, the task-function type and the futures are the same; what changes:
 * - Inputs and results are copied between processes; side effects of a task (globals, the
 *   heap) stay in its worker. The task function is passed as a pointer, so it must be code
 *   that was loaded when the pool was created (the executable, or a library loaded by then):
 *   submit (and the map family, for its per-item function) refuses any other pointer with
 *   CONCUR_ENOTLOADED. init_arg, final_arg and user are
 *   passed by pointer value too: they must point to memory that existed when the pool was
 *   created (each worker sees its own copy, as of that moment).
 * - A task that crashes (signal) or ends its process (exit, _exit) fails only its own future,
 *   with CONCUR_ECRASHED and the detail in concur_future_error_info(); the worker process is
 *   replaced. A task past task_timeout has its worker process killed, and so has a running
 *   task given to concur_future_cancel_kill(). worker_memory_limit and worker_cpu_limit
 *   limit each worker process (RLIMIT_AS, RLIMIT_CPU). concur_task_should_stop() in a worker
 *   process becomes true when the pool shuts down with CONCUR_SHUTDOWN_CANCEL (a shared stop
 *   word) or when concur_future_cancel() is called on that running task (a shared cancel
 *   word per worker), as in threads.
 * - Short tasks are pipelined: while recent tasks took under 200 us and more are queued than
 *   the other workers can take, a worker process is handed up to 16 tasks at once. A task
 *   handed over is RUNNING (no longer pending or cancellable; concur_future_cancel_kill()
 *   kills it when its turn comes); its run time and task_timeout count from its real start;
 *   if the process dies, the tasks behind the one it ran go to its replacement.
 * - Fork safety: at creation the pool forks the calling process once, into a single-threaded
 *   fork server; every worker process is a fork of that server, so creating workers later
 *   never forks a multithreaded process. But locks that other threads of the caller held at
 *   the moment the pool was created stay held in the server and in every worker: create
 *   process pools early (before other threads start, or at least before they take locks,
 *   stdio's and malloc-heavy code included).
 * - The server is a child of the calling process until concur_pool_destroy() reaps it; an
 *   application that reaps every child (waitpid(-1, ...)) may reap it instead, harmlessly.
 *
 * CONCUR_ENGINE_COROUTINES runs each task as a coroutine (docs/coroutines.md): an ordinary
 * task function on a small stack of its own (coroutine_stack_size), on a loop thread that
 * runs many at once. A coroutine that waits in a call of concur/coro.h (sleep, yield, an
 * fd) is suspended and its loop runs the others. max_workers is the number of loop threads
 * (default 1, not the CPU count). task_timeout and concur_future_cancel() of a running
 * task interrupt its current or next suspension and fail its future at once. Per-worker
 * limits are CONCUR_EINVAL; a build without Boost.Context's fcontext refuses the engine
 * with CONCUR_ENOTSUP.
 *
 * CONCUR_ENGINE_MPI runs the tasks on the other ranks of an MPI job (concur/mpi.h,
 * docs/mpi.md): the program links libconcur_mpi and calls concur_mpi_init() first. Each
 * rank runs its tasks in a local process pool (crash isolation as above); functions and
 * static data travel as (loaded object, offset). Without a launcher the pool runs locally
 * as a process pool. In libconcur, or before concur_mpi_init(), creation fails with
 * CONCUR_ENOTSUP.
 */
typedef enum concur_engine {
    CONCUR_ENGINE_THREADS = 0, /**< worker threads in this process */
    CONCUR_ENGINE_PROCESSES,   /**< worker processes forked from a fork server */
    CONCUR_ENGINE_COROUTINES,  /**< coroutines on loop threads in this process */
    CONCUR_ENGINE_MPI,         /**< the other MPI ranks (concur/mpi.h, libconcur_mpi) */
} concur_engine;

/**
 * A worker initializer or finalizer. It runs in the worker (the thread, or the worker
 * process of a process pool: once per process, also in each replacement of a crashed one),
 * before its first task or after its last one. Return 0, or a negative code (with
 * concur_task_fail() for a message): the pool then becomes BROKEN with CONCUR_EINITIALIZER or
 * CONCUR_EFINALIZER. @p t is a context valid during the call (concur_task_fail,
 * concur_task_worker_name and concur_task_user work on it).
 */
typedef int (*concur_worker_fn)(concur_task *t, void *arg);

/** Pool options. A zeroed struct (or NULL) gives the defaults. */
typedef struct concur_pool_opts {
    concur_engine engine; /**< default CONCUR_ENGINE_THREADS */
    int max_workers;      /**< 0: concur_cpu_count(); negative: CONCUR_EINVAL */
    const char *name;     /**< shown in worker names; default "pool"; copied (<= 64 bytes) */
    /** Seconds an idle worker waits for work before it exits: 0 (default) never exits,
     *  negative exits as soon as the queue is empty. */
    double idle_timeout;
    unsigned max_tasks_per_worker; /**< a worker exits after this many tasks; 0: no limit */
    concur_worker_fn initializer;  /**< run at each worker start; NULL for none */
    void *init_arg; /**< process pools: must point to memory that exists at pool creation */
    concur_worker_fn finalizer; /**< run at each worker exit; NULL for none */
    void *final_arg; /**< the finalizer's argument (process pools: as init_arg) */
    /** At most this many pending (queued, not started) tasks; a submit beyond it fails
     *  with CONCUR_EFULL. 0: unbounded. */
    size_t queue_limit;
    /** Seconds a task may run. Past it, the task's future fails with CONCUR_ETASKTIMEOUT at
     *  once and concur_task_should_stop() becomes true for it; a thread cannot be killed, so
     *  the worker stays busy until the task returns and its late result is dropped. In a
     *  process pool the worker process is killed (SIGKILL) and replaced.
     *  0: no timeout. */
    double task_timeout;
    void *user; /**< returned by concur_task_user() in tasks and hooks */
    /** A task that fails with concur_task_fail() also records where: the backtrace of that
     *  call (backtrace(3), one frame per line from concur_task_fail on; names need
     *  -rdynamic; a task that ends with `return concur_task_fail(...)` may lose its own
     *  frame to tail-call optimization), in the error info's backtrace field, also from a
     *  worker process (as asyncpal's remote tracebacks). Costs a stack walk per failure,
     *  nothing otherwise. false: no backtrace. */
    bool error_backtrace;
    /** Process pools: the most address space (bytes) a worker process may use, set as its
     *  RLIMIT_AS (soft and hard) right after it is forked, before the initializer runs.
     *  Beyond it, allocations fail (malloc returns NULL, mmap ENOMEM) in the task. It counts
     *  virtual memory, including what the worker inherits from the caller's image (code,
     *  libraries, thread stacks, a sanitizer's shadow), not resident memory. A crash under
     *  this limit gets "(memory limit of N bytes)" appended to its message. 0: none.
     *  Values above SIZE_MAX / 2 (a negative number converted) are CONCUR_EINVAL; one above
     *  the caller's own hard RLIMIT_AS fails creation with -EPERM. Thread pools: any non-zero
     *  value is CONCUR_EINVAL (a thread cannot be limited on its own). */
    size_t worker_memory_limit;
    /** Process pools: seconds of CPU time each worker process may use over its whole life
     *  (initializer and every task it runs), rounded up to whole seconds and set as its
     *  RLIMIT_CPU (soft; hard = soft + 1) right after it is forked. The task running when it
     *  is reached dies of SIGXCPU (or SIGKILL at the hard limit, if it ignores SIGXCPU) and
     *  fails with CONCUR_ECRASHED, "worker exceeded its CPU time limit of N s" and error
     *  info limit = true; the worker is replaced, with a fresh budget (max_tasks_per_worker
     *  recycles workers sooner). 0: none. Negative, NaN or above 1e9 is CONCUR_EINVAL; more
     *  than the caller's own hard RLIMIT_CPU allows fails creation with -EPERM. Thread pools:
     *  any non-zero value is CONCUR_EINVAL. */
    double worker_cpu_limit;
    /** Coroutine pools: bytes of stack per coroutine, rounded up to whole pages; 0: 64 KiB
     *  (256 KiB in sanitizer builds of the library). Stacks are reserved, not committed:
     *  only the pages a coroutine touches use memory. An overflow crashes the process
     *  (guard page or canary, docs/coroutines.md). Above 1 GiB: CONCUR_EINVAL. Other
     *  engines: any non-zero value is CONCUR_EINVAL. */
    size_t coroutine_stack_size;
    /** MPI pools: run tasks in threads of each rank's own process instead of its local
     *  process pool: the lowest latency, but a task that crashes ends the MPI job, and
     *  worker limits are CONCUR_EINVAL. Other engines: true is CONCUR_EINVAL. */
    bool mpi_in_process;
    /** Coroutine pools: each loop's coroutines take turns on one stack of
     *  coroutine_stack_size bytes, and a suspended coroutine keeps only the part of it in use
     *  (from a few hundred bytes), copied out to a buffer of its own when another coroutine
     *  needs the stack and back when it resumes, as gevent's greenlets do. 100,000 sleeping
     *  coroutines then take about 106 MB instead of 420 (a stack page each). The costs: a
     *  copy of the stack in use at each switch between two coroutines (none when a
     *  coroutine resumes with nobody in between), and a rule: while a coroutine is
     *  suspended, nothing may use the address of a variable on its stack (another
     *  coroutine, another thread, the kernel), since another coroutine's frames are there
     *  then. concur's own waiting calls keep to it (concur_co_read and concur_co_write with a
     *  buffer on the stack hand the kernel a heap copy of it). A suspension that finds no memory to keep the frames returns
     *  CONCUR_ENOMEM. Other engines: true is CONCUR_EINVAL. */
    bool coroutine_shared_stack;
    /** Coroutine pools: trade CPU for I/O latency. The reads and writes each loop hands to
     *  its io_uring (concur_co_read, concur_co_write) are picked up by a kernel thread that
     *  polls the ring (io_uring's SQPOLL: one such thread per loop, which sleeps after 10 ms
     *  without I/O), and a loop waiting with I/O in flight watches for completions for up
     *  to 50 us before it sleeps in the kernel. A steady exchange of messages then costs no
     *  system call per message: two coroutines bouncing a byte over a socketpair take 4.4 to
     *  5.7 us per round trip instead of 6.4 to 10 on the reference machine (co_pingpong).
     *  The cost: while I/O flows the kernel thread keeps a CPU busy, and each wait may spin
     *  for up to 50 us. Reads and writes that do not go through the ring (no io_uring here,
     *  a buffer on a shared stack) are as without it; where the kernel refuses a polling
     *  ring (it needs Linux 5.11 for unprivileged use), the loop's ring is an ordinary one.
     *  Other engines: true is CONCUR_EINVAL. */
    bool coroutine_io_poll;
} concur_pool_opts;

/**
 * Creates a pool. @p opts may be NULL (defaults); it is copied. No worker starts until work
 * arrives (a process pool starts its fork server now). Returns 0 and the pool in *out, or
 * CONCUR_EINVAL (bad option, NULL out), CONCUR_ENOMEM, or for a process pool the negated
 * errno of starting the fork server (-EAGAIN: no more processes, -EMFILE, ...; -EPERM: a
 * worker limit above the caller's own hard limit).
 */
CONCUR_API int concur_pool_create(concur_pool **out, const concur_pool_opts *opts);

/**
 * Shuts the pool down if still open, draining queued tasks (as concur_pool_shutdown(p, 0,
 * CONCUR_FOREVER)), waits for the workers and frees the pool, including the list of cancelled
 * tasks. Futures handed out stay valid (they are reference counted). Accepts NULL. Must not
 * be called from one of the pool's own workers (nothing happens then; the pool leaks).
 * While any pool exists the library keeps freed buffers of 64 KiB and more (task inputs and
 * results, a map's chunks), up to 64 MiB in all, for the next tasks to reuse; destroying the
 * last pool frees them.
 */
CONCUR_API void concur_pool_destroy(concur_pool *p);

/**
 * Submits @p fn with a copy of @p len input bytes. On success returns 0 and, when @p out is
 * not NULL, the task's future in *out with one reference for the caller. Errors:
 * CONCUR_EINVAL (NULL fn, NULL in with len > 0; in a process pool, a function outside the
 * code loaded when the pool was created), CONCUR_ENOMEM, CONCUR_EFULL (queue_limit
 * reached), CONCUR_EBUSY (a join is in progress), CONCUR_ECLOSED, or the stored broken error
 * (CONCUR_EINITIALIZER / CONCUR_EFINALIZER). On error nothing was queued.
 */
CONCUR_API int concur_pool_submit(concur_pool *p, concur_fn fn, const void *in, size_t len,
                                  concur_future **out);

/**
 * Submits @p fn with the bytes of the expression @p value as its input (copied):
 * `CONCUR_SUBMIT_VALUE(pool, square, 7, &f)`; the task reads it with CONCUR_TASK_INPUT.
 * Returns concur_pool_submit()'s code. With a compiler without typeof, @p value must be an
 * lvalue.
 */
#ifdef CONCUR_TYPEOF_
#define CONCUR_SUBMIT_VALUE(p, fn, value, out)                                             \
    concur_pool_submit((p), (fn), (CONCUR_TYPEOF_(value)[1]){[0] = (value)}, sizeof(value), \
                       (out))
#else
#define CONCUR_SUBMIT_VALUE(p, fn, value, out)                                             \
    concur_pool_submit((p), (fn), &(value), sizeof(value), (out))
#endif

/**
 * Submits @p n tasks of @p fn at once, the i-th with a copy of ins[i], with one queue
 * operation for the whole batch. When @p out is not NULL, out[i] receives the i-th future
 * (one reference each). All or nothing: on error nothing was queued and out is untouched.
 * Errors as concur_pool_submit(); with queue_limit, CONCUR_EFULL when the batch does not fit.
 */
CONCUR_API int concur_pool_submit_batch(concur_pool *p, concur_fn fn, const concur_input *ins,
                                        size_t n, concur_future **out);

/**
 * Submit and collect: runs @p fn on the pool and waits up to @p timeout. Returns what
 * concur_future_collect() returns (or a submit error), and the future in *out (when not NULL)
 * so the caller can read the result and must release it. No pool lock is held while waiting:
 * a task may call run on its own pool, where another worker takes the new task; with
 * max_workers 1 that would wait forever, so it returns CONCUR_EDEADLK there.
 */
CONCUR_API int concur_pool_run(concur_pool *p, concur_fn fn, const void *in, size_t len,
                               double timeout, concur_future **out);

/**
 * 0 when the pool accepts work; otherwise CONCUR_ECLOSED, or the broken error
 * (CONCUR_EINITIALIZER, CONCUR_EFINALIZER), the same code every time.
 */
CONCUR_API int concur_pool_check(const concur_pool *p);

/**
 * The message stored with the broken state ("initializer failed in worker
 * 'concur-x-thread-worker-1': <task message>"), or NULL when the pool is not broken.
 * Valid until the pool is destroyed.
 */
CONCUR_API const char *concur_pool_error_message(const concur_pool *p);

/**
 * Builds a one-worker copy of this pool (same engine, initializer, finalizer, hooks'
 * arguments and worker limits), runs a task on it and a chunked map of range(10), and
 * destroys it. Returns 0, the initializer/finalizer error the copy hit (CONCUR_EINITIALIZER /
 * CONCUR_EFINALIZER), CONCUR_EBROKEN when this pool is already broken, or CONCUR_ECLOSED
 * when it is closed. Blocks until done.
 */
CONCUR_API int concur_pool_test(concur_pool *p);

/** Counters (snapshots). */
typedef struct concur_pool_counts {
    size_t workers; /**< live workers */
    size_t busy;    /**< workers running a task */
    size_t free;    /**< workers - busy */
    size_t pending; /**< queued tasks not yet started */
    /** Coroutine pools: the longest time one coroutine ran without suspending (holding its
     *  loop), in ns, since the pool was created, to the resolution of the coarse clock
     *  (CLOCK_MONOTONIC_COARSE, a few ms). 0 on other engines. Kept after shutdown. */
    uint64_t max_stall_ns;
} concur_pool_counts;

/** Fills @p c. All zero after shutdown (but max_stall_ns). */
CONCUR_API void concur_pool_counts_get(const concur_pool *p, concur_pool_counts *c);

/**
 * Starts up to @p n more workers now, never beyond max_workers. Returns the number started
 * (>= 0), or a negative error (closed, broken, out of resources when none could start).
 */
CONCUR_API int concur_pool_spawn_workers(concur_pool *p, size_t n);

/**
 * Waits until every queued task has finished, then stops the workers (running finalizers).
 * Submissions are refused with CONCUR_EBUSY meanwhile. Returns 0, CONCUR_ETIMEDOUT (the work
 * goes on; the pool is usable), CONCUR_ECLOSED, or CONCUR_EDEADLK from a worker of this pool.
 * The pool stays usable afterwards: a later submit starts workers again.
 */
CONCUR_API int concur_pool_join(concur_pool *p, double timeout);

/** Flags for concur_pool_shutdown(). */
enum {
    /** Cancel the queued tasks instead of running them; they are listed with
     *  concur_pool_cancelled(). Running tasks see concur_task_should_stop().
     *
     *  The line between the two is the RUNNING state, nothing else: a task is queued
     *  (PENDING) until a worker takes it, and workers start and take tasks asynchronously,
     *  so a task submitted an instant before the shutdown may be cancelled even on an idle
     *  pool (Python's executors and asyncpal start their first worker the same way, but a
     *  fresh thread there usually wins that race). To be sure a task runs, wait until its
     *  future is RUNNING (concur_future_state()) before shutting down, or shut down without
     *  this flag, which runs everything queued. Either way every future ends DONE, FAILED
     *  or CANCELLED, and each cancelled one is listed. */
    CONCUR_SHUTDOWN_CANCEL = 1,
};

/**
 * Closes the pool: every later submit-like call fails with CONCUR_ECLOSED. Queued tasks run
 * (default) or are cancelled (CONCUR_SHUTDOWN_CANCEL); then the workers exit. Waits up to
 * @p timeout for that. Returns 0 when the workers are gone, CONCUR_ETIMEDOUT when they were
 * still busy at the deadline (they go on and exit when done; destroy waits for them),
 * CONCUR_ECLOSED when the pool was already shut down, CONCUR_EDEADLK (nothing waited) when
 * called with a wait from one of the pool's workers.
 */
CONCUR_API int concur_pool_shutdown(concur_pool *p, int flags, double timeout);

/**
 * The futures of tasks cancelled by the pool (shutdown with CONCUR_SHUTDOWN_CANCEL, a broken
 * pool), in queue order. Returns how many there are; when @p i < that, *out receives the i-th
 * future, borrowed (retain it to keep it past concur_pool_destroy()).
 */
CONCUR_API size_t concur_pool_cancelled(const concur_pool *p, size_t i, concur_future **out);

/** True when the pool is broken. */
CONCUR_API bool concur_pool_is_broken(const concur_pool *p);

/** True once concur_pool_shutdown() has been called. */
CONCUR_API bool concur_pool_is_closed(const concur_pool *p);

/** The pool's max_workers after defaults were applied. */
CONCUR_API int concur_pool_max_workers(const concur_pool *p);

#ifdef __cplusplus
}
#endif
#endif
