/*
 * concur_impl.h - the one internal header: base helpers (clock, futex, locks, byte buffers),
 * the future record and the engine interface. Nothing here is exported: internal non-static
 * names carry the prefix concur__.
 */
#ifndef CONCUR_IMPL_H
#define CONCUR_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "concur.h"

#define CONCUR_CACHELINE 64
#define ALIGNED_LINE _Alignas(CONCUR_CACHELINE)

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* A failed pthread_mutex_* call is a bug in concur, not a runtime condition: say so and stop.
 * These checks stay on with NDEBUG. */
#define CHECK_PTHREAD(call)                                                                \
    do {                                                                                   \
        int check_rc_ = (call);                                                            \
        if (unlikely(check_rc_ != 0))                                                      \
            concur__panic(__FILE__, __LINE__, #call, check_rc_);                           \
    } while (0)

_Noreturn void concur__panic(const char *file, int line, const char *what, int err);

static inline void mu_lock(pthread_mutex_t *m) { CHECK_PTHREAD(pthread_mutex_lock(m)); }
static inline void mu_unlock(pthread_mutex_t *m) { CHECK_PTHREAD(pthread_mutex_unlock(m)); }

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ---- clock: nanoseconds on CLOCK_MONOTONIC ---- */
static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Absolute deadline in ns for a wait timeout in seconds: UINT64_MAX for "forever" (negative),
 * now for 0. */
uint64_t concur__deadline_ns(double timeout);

/* ---- futex (private to the process) ---- */
/* Sleeps while *addr == val, until woken or the absolute CLOCK_MONOTONIC deadline (UINT64_MAX:
 * none). Returns 0 when woken (or spuriously, or *addr != val), -ETIMEDOUT at the deadline. */
int concur__futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t deadline_ns);
void concur__futex_wake(_Atomic uint32_t *addr, int n);
/* Set in a thread whose concur__futex_wake woke a sleeping thread (cleared by its reader). */
extern _Thread_local bool concur__woke_thread;

/* The CPUs this process may keep busy while it waits (an idle worker's spin), read by each
 * pool at its creation: 0, every online CPU. concur_mpi_init sets this rank's share of its
 * node's CPUs (at least 1) when several ranks share the node: a spin that counted every CPU
 * would then take the CPU from the very rank, or worker process, it waits for. */
extern _Atomic int concur__cpu_share;

/* ---- byte buffers, inline when small ---- */
typedef struct concur__buf {
    size_t len;
    union {
        void *ptr;
        unsigned char inl[CONCUR_INLINE_BYTES];
    } u;
} concur__buf;

static inline const void *buf_data(const concur__buf *b)
{
    return b->len <= CONCUR_INLINE_BYTES ? (const void *)b->u.inl : b->u.ptr;
}
static inline void *buf_wdata(concur__buf *b)
{
    return b->len <= CONCUR_INLINE_BYTES ? (void *)b->u.inl : b->u.ptr;
}
/* Makes @b a buffer of len bytes (contents undefined). Frees an earlier heap buffer. Returns
 * the writable data or NULL (b is then empty). */
void *concur__buf_alloc(concur__buf *b, size_t len);
int concur__buf_set(concur__buf *b, const void *data, size_t len);

/* Big buffers (CONCUR__BIG_MIN bytes and more: task inputs and results of chunked maps, big
 * frames) are kept for reuse while pools exist (concur__big_hold): a freed one goes to a small lock-free cache
 * (64 MiB at most, by power-of-two size class) and the next allocation of its class takes
 * it back. A fresh block costs a page fault per page on first write, on some virtual
 * machines 2.6 ms per MiB against 8 us to write a kept one. The blocks are malloc()'s, so
 * free() and realloc() remain correct on them; concur__big_free takes any malloc()'ed
 * block. Fork-safe (no locks); any thread. */
#define CONCUR__BIG_MIN ((size_t)64 << 10)
void *concur__big_alloc(size_t len);
void concur__big_free(void *p);
/* A block of @len bytes with the first @keep bytes of @p (which it frees; NULL: none), as
 * realloc() but through the cache. On failure NULL, and @p is left as it was. */
void *concur__big_realloc(void *p, size_t keep, size_t len);
/* Blocks are kept only while someone holds the cache (each pool, from its creation to its
 * destruction); the last unhold frees every kept block, and blocks freed afterwards go
 * straight back to malloc. */
void concur__big_hold(void);
void concur__big_unhold(void);
/* Frees every cached block. */
void concur__big_drain(void);
/* The bytes the cache holds now (usable sizes), for tests. */
size_t concur__big_kept(void);

/* Frees @b's heap buffer, if any (a big one through concur__big_free); @b is then empty. */
void concur__buf_free(concur__buf *b);

/* ---- the future record ----
 *
 * state word: bits 0-2 the state (concur_state, or ST_COMPLETING while one completer writes
 * the outcome), then flags. Completion is a claim: exactly one thread moves the state from
 * PENDING/RUNNING to ST_COMPLETING (CAS), writes the outcome fields, then publishes the
 * terminal state with one atomic RMW that keeps the flags. The outcome fields are written
 * only by the claimer and read only after a terminal state was observed (acquire).
 */
enum {
    ST_MASK = 7u,
    ST_COMPLETING = 5u,
    F_CANCEL_REQ = 1u << 3, /* concur_future_cancel() was called */
    F_HAS_CBS = 1u << 4,    /* a callback was registered while not terminal */
    F_WAITERS = 1u << 5,    /* a thread sleeps on the state word */
    F_STOP = 1u << 6,       /* the task should stop (timeout, pool cancel) */
    F_ERRX = 1u << 7,       /* errmsg is the text of an error-detail record (future.c) */
};

static inline bool st_terminal(uint32_t v)
{
    uint32_t s = v & ST_MASK;
    return s == CONCUR_DONE || s == CONCUR_FAILED || s == CONCUR_CANCELLED;
}

struct concur__cb;
struct concur__engine;

struct concur_future {
    _Atomic uint32_t state;
    _Atomic uint32_t refs;
    struct concur_future *_Atomic next; /* engine queue link */
    concur_fn fn;
    struct concur__engine *engine; /* NULL for standalone futures */
    uint64_t id;
    int32_t err;
    char *errmsg;            /* NULL: the code's text */
    struct concur__cb *cbs;  /* under the stripe lock of the future */
    uint64_t t_submit, t_start;
    _Atomic uint64_t t_end; /* first completer's time wins (see concur__task_complete) */
    concur__buf in;
    concur__buf out;
};

/* The engine interface: what a future needs from the engine that runs it. */
typedef struct concur__engine_ops {
    /* A PENDING future of this engine was cancelled by its owner (called between the claim
     * and the publication of CANCELLED). */
    void (*on_cancel)(struct concur__engine *e, concur_future *f);
    /* Optional (NULL: running tasks cannot be killed). Kills what runs the RUNNING future
     * @f, so that the engine fails it with CONCUR_ECANCELED; true when that was done, false
     * when @f is not (or no longer) running. Called by concur_future_cancel_kill(). */
    bool (*kill_running)(struct concur__engine *e, concur_future *f);
    /* Optional. The owner cancelled the RUNNING future @f (F_CANCEL_REQ is set): an engine
     * whose tasks cannot see that flag directly (a process pool) passes it on. */
    void (*cancel_running)(struct concur__engine *e, concur_future *f);
    /* Optional. How long a waiter polls the future, yielding its CPU, before it sleeps:
     * worth it when a completion costs a cross-CPU wake-up that is long next to a typical
     * task (a process pool's round trip while the pool is busy). 0: a brief spin only. */
    uint64_t (*wait_poll_ns)(struct concur__engine *e);
} concur__engine_ops;

struct concur__engine {
    const concur__engine_ops *ops;
};

/* Record allocator (per-thread caches over shared slabs). Records come zeroed. */
concur_future *concur__future_alloc(void);
/* Sets up a new engine future: refs = 2 (caller + engine), state PENDING. */
static inline void future_init_engine(concur_future *f, struct concur__engine *e, concur_fn fn,
                                      uint64_t id, uint64_t t_submit)
{
    atomic_store_explicit(&f->state, CONCUR_PENDING, memory_order_relaxed);
    atomic_store_explicit(&f->refs, 2, memory_order_relaxed);
    f->fn = fn;
    f->engine = e;
    f->id = id;
    f->t_submit = t_submit;
}

/* Waiting inside a coroutine: the coroutine engine sets this on its loop threads (NULL on
 * every other thread), and the waits of future.c call it before they block the thread. It
 * returns CONCUR__WAIT_THREAD when the caller is not a coroutine (wait the thread's way);
 * otherwise it has suspended the calling coroutine until @f is terminal (0) or the
 * deadline passed (CONCUR_ETIMEDOUT), or the coroutine was interrupted (CONCUR_ECANCELED,
 * CONCUR_ETASKTIMEOUT). The waker may be any thread: the engine goes through the loop's
 * wake-up, never a futex. */
#define CONCUR__WAIT_THREAD 1
extern _Thread_local int (*concur__co_wait)(concur_future *f, uint64_t deadline);

/* True on a loop thread whose coroutines share a stack (coroutine_shared_stack): a waiting
 * call there keeps nothing that another thread or coroutine writes to on the caller's
 * stack (sets.c allocates such records). concur__co_shared_on makes every coroutine pool
 * share its stacks (a test switch, off by default). */
extern _Thread_local bool concur__co_shared_stack;
extern bool concur__co_shared_on;
/* Makes every coroutine pool poll its loops' rings (coroutine_io_poll; a test switch, off
 * by default). */
extern bool concur__co_io_poll_on;

/* The task this thread runs now (a worker thread of the thread engine, a worker process),
 * or NULL: the library's own waits inside a task (the runner's loop) end when it should
 * stop. concur__task_park is the loop's park (sys/os.h, concur__loop_park) for such
 * threads: it waits for @fd up to @timeout_ms, in slices of PARK_SLICE_MS, and returns
 * CONCUR_ECANCELED once the current task should stop (a cancel, the pool's stop, its
 * task_timeout), 0 when the fd is ready or the slice passed, 1 when no task runs here. */
extern _Thread_local concur_task *concur__cur_task;
int concur__task_park(int fd, int timeout_ms);

/* Claims a future whose state is one of @from_mask (bit per state): true when this thread
 * now owns its completion. */
bool concur__future_claim(concur_future *f, uint32_t from_mask);
/* Publishes the outcome of a claimed future: final state, t_end; wakes waiters and runs the
 * callbacks in this thread. */
void concur__future_finish(concur_future *f, concur_state final, uint64_t t_end);
/* Claim + fail with code/message (message copied, may be NULL). True if this call did it. */
bool concur__future_fail(concur_future *f, uint32_t from_mask, int code, const char *msg);
/* The same with the detail of concur_error_info: the signal that killed a worker process (0:
 * none), its exit status (-1: none), its backtrace text (NULL: none; copied), whether code
 * and message are the task's own from a worker process (remote), and whether the worker hit
 * a configured limit (limit). */
bool concur__future_fail_info(concur_future *f, uint32_t from_mask, int code, const char *msg,
                              int signal, int exit_status, const char *backtrace, bool remote,
                              bool limit);

#define STATE_BIT(s) (1u << (s))

/* ---- the task context handed to task functions and worker hooks ---- */
struct concur_task {
    concur_future *f;          /* NULL in initializers/finalizers */
    const char *worker_name;
    void *user;
    const _Atomic int *pool_stop; /* non-zero: the pool asks running tasks to stop */
    /* Process pools, in the worker: holds the id of a task whose future was cancelled
     * while it ran (or waited its turn) in this process. NULL elsewhere. */
    const _Atomic uint64_t *cancel_word;
    char *msg;                 /* from concur_task_fail, malloc'd */
    char *bt;                  /* with want_bt: concur_task_fail's backtrace, malloc'd */
    bool want_bt;              /* the pool's error_backtrace */
    concur__buf out;           /* the result, moved into the future on success */
};

void concur__task_reset(concur_task *t);
/* Completes the RUNNING future of @t with the function's return code (result or error).
 * Returns false when someone else completed it first (timeout, shutdown): the result is
 * dropped. Frees the context's buffers either way. */
bool concur__task_complete(concur_task *t, int rc, uint64_t t_end);

/* False when @p is a process pool and @fn is not in code its worker processes have (a
 * function passed by pointer inside a task's input, such as the map family's). */
bool concur__pool_code_ok(const concur_pool *p, const void *fn);
/* True when @p's tasks run in this process and may use the caller's memory (threads). */
bool concur__pool_shares_memory(const concur_pool *p);
/* True when @p's workers have an address layout of their own (MPI ranks): a function
 * passed inside a task's input travels as a reference (sys/code.h), not a pointer. */
bool concur__pool_remote_code(const concur_pool *p);

/* Crash reports from a fatal-signal handler (concur__crash_report, concur__die_of_signal)
 * and the rest of the codec of what crosses a process boundary. At the end: it stands on
 * the declarations above. */
#include "sys/wire.h"

#endif
