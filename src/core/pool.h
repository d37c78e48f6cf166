/*
 * core/pool.h - the pool core and the engine interface (internal).
 *
 * A pool is written once (core/pool.c): admission, the task queue, the workers' life (lazy
 * start, idle shrink, recycling after max_tasks_per_worker), counters, the broken state,
 * join and shutdown, the exit handler and task_timeout bookkeeping for engines that do not
 * enforce it themselves. What differs between engines is how a worker runs what it pops:
 * in its own thread (engines/threads.c), in a worker process it owns
 * (engines/processes.c), on coroutines of a loop thread (engines/coroutines.c). That
 * difference is one concur__engine_class, a table of functions the core calls; the core
 * never asks which engine it runs.
 *
 * Every worker of the core is one thread (concur__worker). Its loop, in core/pool.c:
 *
 *     cls->worker_start(w, t)                  start what the worker drives, run the
 *                                              initializer there (failure breaks the pool)
 *     while a task is popped:                  queue, idle wait and exit rules: the core's
 *         cls->worker_run(w, t, f, room)       run f (and, if the engine wants, more tasks
 *                                              it pops itself with concur__worker_pop)
 *     cls->worker_final(w, t)                  the finalizer, where the initializer ran
 *     cls->worker_end(w)                       release what worker_start made
 *
 * Adding an engine: a file in src/engines/ that defines a concur__engine_class, one value
 * in concur_engine (include/concur/pool.h), one line in concur__engine_class_of() (the MPI
 * engine, built only with MPI, is picked through concur__mpi_class instead), and the
 * pool suites built once more against it (tests/CMakeLists: CONCUR_ENGINE_SUITES).
 */
#ifndef CONCUR_CORE_POOL_H
#define CONCUR_CORE_POOL_H

#include "core/concur_impl.h"

typedef struct concur__worker concur__worker;

typedef struct concur__engine_class {
    const char *kind; /* in worker names: "concur-<pool>-<kind>-worker-<n>" */
    /* The engine enforces task_timeout itself; otherwise the core's watchdog does (it fails
     * the future of a task running past it; the late result is dropped). */
    bool own_timeouts;
    /* Tasks run in the caller's process and may use its memory (the range form needs it). */
    bool shares_memory;
    /* Workers get a slot number, 0 .. max_workers-1, unique among the live workers. */
    bool slots;
    /* Workers have their own address layout (concur__pool_remote_code). */
    bool remote_code;
    /* max_workers when the options say 0; 0 here: the CPU count. */
    int default_workers;
    /* Optional, in place of default_workers: computed at each pool's creation. */
    int (*default_workers_fn)(void);
    /* Checks the engine's own options and sets up pool-wide state (*state; NULL is fine).
     * Called once from concur_pool_create; a negative code fails the creation. */
    int (*create)(concur_pool *p, const concur_pool_opts *o, void **state);
    /* Frees it, after every worker has gone. Accepts NULL state. */
    void (*destroy)(void *state);
    /* Optional: shutdown with CONCUR_SHUTDOWN_CANCEL; tasks the engine runs out of reach of
     * the pool's stop flag (another process) must see concur_task_should_stop(). */
    void (*stop)(void *state);
    /* Optional: false when @fn cannot run on this engine's workers (CONCUR_ENOTLOADED). */
    bool (*code_ok)(const void *state, const void *fn);
    /* In the worker's thread, once: starts what the worker drives and runs the initializer
     * (p's opts) there. Returns 0, or a negative code with a message in t->msg (may be
     * NULL); *hook_failed tells an initializer failure from a start failure. */
    int (*worker_start)(concur__worker *w, concur_task *t, bool *hook_failed);
    /* Runs the RUNNING future @f (the caller hands over the engine's reference) and any
     * more it pops with concur__worker_pop, at most @room in all. Every one of them is
     * complete on return. Returns how many it completed. */
    unsigned (*worker_run)(concur__worker *w, concur_task *t, concur_future *f, unsigned room);
    /* Runs the finalizer where the initializer ran. 0, or a negative code (t->msg). */
    int (*worker_final)(concur__worker *w, concur_task *t);
    /* Optional: releases what worker_start made (after a failed start too). */
    void (*worker_end)(concur__worker *w);
    /* Optional future operations (concur_future_cancel_kill, concur_future_cancel of a
     * RUNNING future, a waiter's poll time): see concur__engine_ops in concur_impl.h. */
    bool (*kill_running)(concur_pool *p, concur_future *f);
    void (*cancel_running)(concur_pool *p, concur_future *f);
    uint64_t (*wait_poll_ns)(concur_pool *p);
    /* Optional: called after every submit (one or a batch) has queued its tasks, in the
     * submitting thread, so that an engine whose workers may wait outside the core's idle
     * wait (a loop thread asleep in epoll while its coroutines are suspended) wakes them.
     * Keep it to a load when nobody waits there: it is on every submit's path. */
    void (*queued)(concur_pool *p);
    /* Optional: adds the engine's own figures to concur_pool_counts_get (max_stall_ns). */
    void (*counts)(concur_pool *p, concur_pool_counts *c);
} concur__engine_class;

/* The usual wait_poll_ns of an engine whose tasks complete in another thread or process: a
 * waiter polls for up to 50 us while the engine completed a task within the last 200 us
 * (@last_done_ns; its proxies, loops or processes are awake and the answer is
 * microseconds away, while a sleep costs a cross-CPU wake-up of tens); after an idle spell
 * the wake-ups are needed anyway, and a polling waiter would only keep its CPU from them. */
static inline uint64_t concur__poll_if_busy(uint64_t last_done_ns)
{
    return now_ns() - last_done_ns < 200000 ? 50000 : 0;
}

extern const concur__engine_class concur__threads_class;
extern const concur__engine_class concur__processes_class;
extern const concur__engine_class concur__coroutines_class;

/* The class of @e, or NULL for a value that names no engine (and for CONCUR_ENGINE_MPI). */
const concur__engine_class *concur__engine_class_of(concur_engine e);

/* The class of an MPI pool with options @o: the MPI engine's on rank 0 of a run with other
 * ranks, the process (or, with mpi_in_process, thread) engine's without them. NULL with
 * the code in *why: CONCUR_ENOTSUP (a library built without MPI, concur_mpi_init not
 * called), CONCUR_EINVAL. engines/mpi_off.c or engines/mpi.c. */
const concur__engine_class *concur__mpi_class(const concur_pool_opts *o, int *why);

enum { CONCUR__WORKER_NAME = 64 + 48 };

struct concur__worker {
    concur_pool *pool;
    pthread_t thread;
    unsigned index;
    unsigned gen;      /* stop generation it was started in */
    int slot;          /* with cls->slots: 0 .. max_workers-1; else -1 (under pool->mu) */
    bool in_idle;      /* counted in the pool's idle workers (this thread only) */
    uint64_t last_end; /* when its last task ended: the next one's start (0: read the clock) */
    _Atomic int busy;
    /* cur_mu guards cur and cur_start (the core's watchdog) and ctx's replacement, so that
     * concur__pool_each_worker callers see a stable ctx. */
    pthread_mutex_t cur_mu;
    concur_future *cur;
    uint64_t cur_start;
    void *ctx;                          /* the engine's per-worker state */
    struct concur__worker *prev, *next; /* live or dead list, under pool->mu */
    char name[CONCUR__WORKER_NAME];
};

/* ---- what engines call ---- */

/* concur_pool_submit, with @as_id as the task's id when it is not 0 (concur_task_id and
 * the future's id): an MPI rank runs the tasks of a rank-0 pool under their ids there,
 * which are unique within that pool. */
int concur__pool_submit_as(concur_pool *p, concur_fn fn, const void *in, size_t len,
                           uint64_t as_id, concur_future **out);

const concur_pool_opts *concur__pool_opts(const concur_pool *p);
int concur__pool_max_workers(const concur_pool *p);
int concur__pool_nworkers(const concur_pool *p);
/* Tasks admitted and not taken by a worker yet. */
uint64_t concur__pool_pending(concur_pool *p);
void *concur__pool_engine_state(const concur_pool *p);
/* The code the pool broke with, 0 while it is not broken. */
int concur__pool_broken_code(const concur_pool *p);
/* Marks the pool broken (first call wins): queued tasks are cancelled, submits refused with
 * @code; the message is "<kind> failed in worker '<name>': <msg or rc's text>". */
void concur__pool_break(concur_pool *p, int code, const char *kind, const concur__worker *w,
                        const char *msg, int rc);
/* Waits until @n workers have started (the engine's worker_start succeeded: a process
 * engine's worker process runs and its initializer ran) since the pool was created. 0, or
 * the code the pool broke with (a worker that could not start breaks it). For the forms
 * that need every worker up at once (swarms). */
int concur__pool_await_started(concur_pool *p, unsigned n);
/* A worker made progress (a task completed): wakes join/shutdown waiters if any. */
void concur__pool_progress(concur_pool *p);

/* Pops one more task for @w, RUNNING, or NULL (*popped: something was taken and dealt with,
 * cancelled or dropped, so look again). Only @w's own thread calls it. */
concur_future *concur__worker_pop(concur__worker *w, bool *popped);
/* Pops up to @n tasks for @w into @out (RUNNING, in queue order) under one lock; returns
 * how many. *popped as for concur__worker_pop. Only @w's own thread calls it. */
size_t concur__worker_pop_n(concur__worker *w, concur_future **out, size_t n, bool *popped);
/* Call right before completing the last task a worker holds: when nothing is queued, the
 * worker counts as idle from now on, so a caller that submits again as soon as it sees the
 * result finds a free worker instead of starting another one. */
void concur__worker_ready(concur__worker *w);
/* Runs @f in this thread: its start time, the watchdog's view, the call, the completion,
 * the release of the engine's reference. */
void concur__worker_call(concur__worker *w, concur_task *t, concur_future *f);
/* The pool's initializer / finalizer run in this thread, for engines whose tasks run in the
 * worker's own process (usable as worker_start / worker_final). */
int concur__worker_init_hook(concur__worker *w, concur_task *t, bool *hook_failed);
int concur__worker_final_hook(concur__worker *w, concur_task *t);
/* For engines that switch between several tasks in one worker thread (coroutines): @f is
 * the task running now (NULL: none), which the core's task_timeout watchdog checks against
 * its start (f->t_start). Does nothing (no lock) when the pool has no watchdog. */
void concur__worker_running(concur__worker *w, concur_future *f);
/* Sets w->ctx under cur_mu (so concur__pool_each_worker sees it whole). */
void concur__worker_set_ctx(concur__worker *w, void *ctx);
/* Calls @fn(w->ctx, arg) for each live worker with a ctx, under the pool's lock and the
 * worker's cur_mu, until it returns true; returns whether one did. */
bool concur__pool_each_worker(concur_pool *p, bool (*fn)(void *ctx, void *arg), void *arg);

#endif
