/*
 * testutil.h - shared helpers of concur's Criterion tests.
 *
 * Synchronisation without sleeps: a tu_gate is a mutex + condvar that tasks (or any thread)
 * block on until the test opens it; it also counts arrivals, so the test can wait until N
 * tasks are really running (tu_gate_await) before it looks at states or counters.
 * TU_POLL_UNTIL waits for a condition that has no event to block on (e.g. a worker count
 * after an idle timeout), with a deadline; it is not a sleep that hides a race.
 *
 * Sanitizer builds are 5-20x slower: TU_SLOW scales loose upper bounds and TU_SCALE scales
 * workload sizes down. Lower bounds of timing checks are never scaled.
 *
 * Never call cr_assert* from a task, a callback or a helper thread: record what happened
 * in atomics and assert in the test's own thread.
 *
 * One engine per build: the suites that test pools are built twice, as test_x on the thread
 * engine and as test_x_proc with TU_PROC=1 on the process engine. tu_pool()/tu_pool_opts()
 * make pools on TU_ENGINE, and tests that build their own options set .engine = TU_ENGINE.
 * A task of a process pool runs in a worker process, a fork of the test process as it was
 * when the pool was created: whatever a task and the test both see (gates, counters,
 * contexts given as init_arg or user) lives in the shared arena (tu_shared_alloc,
 * tu_gate_new), mapped MAP_SHARED before main(), so every worker process has it at the same
 * address. Callbacks always run in the test process. Tests that cannot apply to worker
 * processes skip there with TU_SKIP_ON_PROCESSES("reason").
 */
#ifndef CONCUR_TESTUTIL_H
#define CONCUR_TESTUTIL_H

#include <concur.h>

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#if defined(__SANITIZE_THREAD__)
#define TU_TSAN 1
#else
#define TU_TSAN 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TU_ASAN 1
#else
#define TU_ASAN 0
#endif
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#undef TU_TSAN
#define TU_TSAN 1
#endif
#if __has_feature(address_sanitizer)
#undef TU_ASAN
#define TU_ASAN 1
#endif
#endif

#define TU_SANITIZED (TU_TSAN || TU_ASAN)

/* ---- the engine under test ------------------------------------------------------------ */

#ifndef TU_PROC
#define TU_PROC 0 /**< 1 in the _proc builds of the pool suites */
#endif
#ifndef TU_CO
#define TU_CO 0 /**< 1 in the _co builds of the pool suites (the coroutine engine) */
#endif
#if TU_PROC
#define TU_ENGINE CONCUR_ENGINE_PROCESSES
#define TU_WORKER_KIND "process" /**< as in worker names: concur-<pool>-process-worker-<n> */
#elif TU_CO
#define TU_ENGINE CONCUR_ENGINE_COROUTINES
#define TU_WORKER_KIND "coroutine"
#else
#define TU_ENGINE CONCUR_ENGINE_THREADS
#define TU_WORKER_KIND "thread"
#endif

/** The name of worker @p n (a string literal) of the pool named @p pool on TU_ENGINE. */
#define TU_WORKER_NAME(pool, n) "concur-" pool "-" TU_WORKER_KIND "-worker-" #n

/** Skips the test in the process-engine build, with a reason (printf format). */
#define TU_SKIP_ON_PROCESSES(...)                                                                  \
    do {                                                                                           \
        if (TU_PROC)                                                                               \
            cr_skip_test(__VA_ARGS__);                                                             \
    } while (0)

/** Skips the test in the coroutine-engine build, with a reason (printf format). */
#define TU_SKIP_ON_COROUTINES(...)                                                                 \
    do {                                                                                           \
        if (TU_CO)                                                                                 \
            cr_skip_test(__VA_ARGS__);                                                             \
    } while (0)

/**
 * A Test() option for tests that use no pool (standalone futures, helpers): they are the
 * same on every engine and run in the thread-engine build only; the _proc and _co builds
 * list them as disabled without starting a process for them. Test(suite, name, TU_NO_ENGINE).
 */
#define TU_NO_ENGINE .disabled = (TU_PROC || TU_CO)

/* ---- memory shared with worker processes ----------------------------------------------- */

/**
 * @p size zeroed bytes (64-byte aligned) of the shared arena: MAP_SHARED, mapped before
 * main() and so before any pool exists, hence shared with every worker process at the same
 * address. Never freed (each test runs in its own process). Asserts when it runs out.
 */
void *tu_shared_alloc(size_t size);

/** A zeroed object of @p type in the shared arena. */
#define TU_SHARED(type) ((type *)tu_shared_alloc(sizeof(type)))

/** Initializes @p mu for use across processes (PTHREAD_PROCESS_SHARED). */
void tu_shared_mutex_init(pthread_mutex_t *mu);

/** Factor for loose upper bounds of timing checks. */
#if TU_TSAN
#define TU_SLOW 20.0
#elif TU_ASAN
#define TU_SLOW 5.0
#else
#define TU_SLOW 1.0
#endif

/** A loose upper bound for something that should take about @p x seconds. */
#define TU_LOOSE(x) ((x)*TU_SLOW + 2.0)

/** Per-test Criterion timeout (seconds) for suites. */
#if TU_SANITIZED
#define TU_TIMEOUT 120.0
#else
#define TU_TIMEOUT 30.0
#endif

/** Safety cap for waits that should never expire in a passing test. */
#if TU_SANITIZED
#define TU_SAFETY 60.0
#else
#define TU_SAFETY 10.0
#endif

/** Lower-bound slack for timing checks: clocks and double rounding, nothing more. */
#define TU_EPS 0.002

/** Seconds on CLOCK_MONOTONIC (independent of the library's clock). */
double tu_now(void);

/** Sleeps @p s seconds. Only as the workload of a task whose timing is the point. */
void tu_sleep(double s);

/** A short nap (1 ms) for polling loops with a deadline. */
void tu_nap(void);

/**
 * Suite fini (TestSuite(x, .fini = tu_fini)). A test that failed an assertion leaves
 * gates closed and tasks blocked on them, often in its dead stack frame; the library's
 * exit handler would then wait for those tasks. When gates are still live (every passing
 * test destroys its gates), tu_fini makes the test process leave with _exit(0) after
 * Criterion has recorded the result, instead of hanging until the timeout.
 */
void tu_fini(void);

/* ---- gates ------------------------------------------------------------------------ */

/* Two futex words, waited on without FUTEX_PRIVATE_FLAG: a gate in the shared arena works
 * across processes, and holds no lock a killed worker process could leave held. */
typedef struct tu_gate {
    atomic_int open;
    atomic_int arrived;
} tu_gate;

void tu_gate_init(tu_gate *g);
/** A gate in the shared arena, initialized (tasks on any engine can pass it). */
tu_gate *tu_gate_new(void);
void tu_gate_destroy(tu_gate *g);
/** Opens the gate: every blocked and later tu_gate_pass() returns. */
void tu_gate_open(tu_gate *g);
/** Counts an arrival without blocking. */
void tu_gate_arrive(tu_gate *g);
/** Counts an arrival, then blocks until the gate is open (or TU_SAFETY expires). */
void tu_gate_pass(tu_gate *g);
/** Blocks until the gate is open; returns false if @p timeout expired first. */
bool tu_gate_wait_open(tu_gate *g, double timeout);
/** Blocks until at least @p n arrivals; returns false if @p timeout expired first. */
bool tu_gate_await(tu_gate *g, int n, double timeout);
bool tu_gate_is_open(tu_gate *g);
int tu_gate_arrivals(tu_gate *g);

/* ---- passing pointers as task input -------------------------------------------------- */

/** Input bytes carrying the pointer @p p (for concur_pool_submit's in/len). */
#define TU_PTR_IN(p) (const void *)&(void *){(void *)(p)}, sizeof(void *)

/** Decodes a pointer passed with TU_PTR_IN (NULL if the size is wrong). */
void *tu_in_ptr(const void *in, size_t len);

/* ---- common tasks ------------------------------------------------------------------- */

/** Input: tu_gate * (tu_gate_new() for process pools). Arrives at the gate and waits for it
 *  to open. Returns 0, no result. */
int tu_task_gate(concur_task *t, const void *in, size_t len);
/** Returns its input bytes as the result. */
int tu_task_echo(concur_task *t, const void *in, size_t len);
/** Does nothing, returns 0. */
int tu_task_noop(concur_task *t, const void *in, size_t len);
/** Input: atomic_int * (in the shared arena for process pools). Increments it, returns 0. */
int tu_task_count(concur_task *t, const void *in, size_t len);
/** Input: a double (seconds). Sleeps that long (timing workload), returns 0. */
int tu_task_sleep(concur_task *t, const void *in, size_t len);

/* ---- commands a task leaves running ----------------------------------------------- */

/** A FIFO in a new temporary directory; its path goes to @p path (@p cap bytes). Removed by
 *  tu_fifo_remove. */
void tu_fifo_make(char *path, size_t cap);
void tu_fifo_remove(const char *path);
/** The pid a process wrote (as text, then a newline) into the FIFO at @p path, read within
 *  @p timeout seconds (asserts that it came). */
pid_t tu_fifo_read_pid(const char *path, double timeout);
/** Whether the process @p pid (not necessarily a child) has ended within @p timeout
 *  seconds: waits on a pidfd, no polling. */
bool tu_pid_ends_within(pid_t pid, double timeout);
/** Input: a FIFO's path. Runs `sh -c 'echo $$ > FIFO; exec sleep 30'` with concur_run_prog
 *  and returns 0 once it ends. */
int tu_task_run_sleeper(concur_task *t, const void *in, size_t len);
/** Input: a FIFO's path. Starts `sleep 30` in the background through system() (it outlives
 *  the task), writes its pid into the FIFO and returns 0. */
int tu_task_leave_sleeper(concur_task *t, const void *in, size_t len);

/* ---- pools --------------------------------------------------------------------------- */

/** A pool on TU_ENGINE with @p max_workers and default options (asserts success). */
concur_pool *tu_pool(int max_workers);
/** A pool from @p opts (asserts success; in the _proc builds, also that the engine is
 *  TU_ENGINE). */
concur_pool *tu_pool_opts(const concur_pool_opts *opts);
/** Submits and asserts success; returns the future (caller releases). */
concur_future *tu_submit(concur_pool *p, concur_fn fn, const void *in, size_t len);
/** Submits tu_task_gate on @p g. */
concur_future *tu_submit_gate(concur_pool *p, tu_gate *g);
/** A snapshot of the pool's counters. */
concur_pool_counts tu_counts(concur_pool *p);
/** Asserts that @p f becomes DONE (within TU_SAFETY) with the int @p want; @p what names it
 * in a failure. */
void tu_assert_int_result(concur_future *f, int want, const char *what);

/**
 * Polls @p expr every millisecond until it is true or @p timeout_s passed; stores the last
 * value of the expression in the bool @p ok.
 */
#define TU_POLL_UNTIL(ok, expr, timeout_s)                                                         \
    do {                                                                                           \
        double tu_dl_ = tu_now() + (timeout_s);                                                    \
        while (!((ok) = (expr)) && tu_now() < tu_dl_)                                              \
            tu_nap();                                                                              \
    } while (0)

#endif
