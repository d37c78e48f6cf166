/*
 * test_process_pool.c - the process engine (CONCUR_ENGINE_PROCESSES): exact results across
 * the process boundary (small and 10 MB), the task's own errors (remote), crashes of every
 * kind (segfault, abort, exit, _exit, SIGKILL) failing only their own future with the right
 * cause and a replaced worker, task timeouts killing the worker, initializer / finalizer
 * failures, recycling, refusal of functions outside the loaded code, the map family, test(),
 * cleanliness after destroy (no child processes, no fds), fault injection at scale, the
 * error detail of futures of other engines, per-worker limits (CPU: SIGXCPU and the hard
 * limit's SIGKILL; memory: failed allocations, crashes naming the limit; option checks),
 * concur_future_cancel_kill (running, pending, thread pools, races with completion), and
 * concur_task_should_stop in worker processes on shutdown with cancel.
 *
 * Worker processes are observed from the outside: the fork server is a child of the test
 * process (of the thread that created the pool), the workers are the server's children;
 * both are listed through /proc/<pid>/task/<tid>/children.
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(procpool, .timeout = TU_TIMEOUT, .fini = tu_fini);

static concur_pool *proc_pool(int workers, const char *name)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES, .max_workers = workers, .name = name};
    return tu_pool_opts(&o);
}

/* ---- observing processes ------------------------------------------------------------ */

/* The children of thread @tid of process @pid, up to @cap of them into @out. */
static int children_of(pid_t pid, pid_t tid, pid_t *out, int cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int n = 0, v;
    while (n < cap && fscanf(f, "%d", &v) == 1)
        out[n++] = (pid_t)v;
    fclose(f);
    return n;
}

/* Process state letter of @pid ('Z' for a zombie), or 0 if it is gone. */
static char proc_state(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')'); /* "pid (comm) S ..." */
    return rp && rp[1] == ' ' ? rp[2] : 0;
}

/* The worker processes (children of the fork server, which is this thread's only child):
 * how many are alive and how many are zombies. */
static void count_workers(int *alive, int *zombies)
{
    pid_t srv[4], w[256];
    *alive = *zombies = 0;
    if (children_of(getpid(), (pid_t)gettid(), srv, 4) != 1)
        return;
    int n = children_of(srv[0], srv[0], w, 256);
    for (int i = 0; i < n; i++) {
        char s = proc_state(w[i]);
        if (s == 'Z')
            (*zombies)++;
        else if (s)
            (*alive)++;
    }
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ---- tasks ----------------------------------------------------------------------------- */

/* int -> int: x * x + 1. */
static int task_square(concur_task *t, const void *in, size_t len)
{
    int x;
    if (len != sizeof x)
        return concur_task_fail(t, CONCUR_EINVAL, "len %zu", len);
    memcpy(&x, in, sizeof x);
    x = x * x + 1;
    return concur_task_return(t, &x, sizeof x);
}

/* Input: uint64 n, uint32 seed. Result: n bytes of a pattern. */
static unsigned char pattern_byte(size_t i, uint32_t seed)
{
    return (unsigned char)((i * 2654435761u + seed) >> 7);
}

static int task_pattern(concur_task *t, const void *in, size_t len)
{
    struct {
        uint64_t n;
        uint32_t seed;
    } a;
    if (len != sizeof a)
        return concur_task_fail(t, CONCUR_EINVAL, "len %zu", len);
    memcpy(&a, in, sizeof a);
    unsigned char *out = concur_task_result_alloc(t, (size_t)a.n);
    if (!out && a.n)
        return CONCUR_ENOMEM;
    for (size_t i = 0; i < a.n; i++)
        out[i] = pattern_byte(i, a.seed);
    return 0;
}

/* Result: the worker's pid. */
static int task_getpid(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    pid_t pid = getpid();
    return concur_task_return(t, &pid, sizeof pid);
}

static int task_fail_io(concur_task *t, const void *in, size_t len)
{
    (void)in;
    return concur_task_fail(t, -EIO, "remote failure %zu in %s", len, concur_task_worker_name(t));
}

static int g_side_effect;

/* Result: the worker's name, its user pointer and the value of a global it increments. */
static int task_context(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    struct {
        char name[96];
        void *user;
        int global;
        uint64_t id;
    } r;
    memset(&r, 0, sizeof r);
    snprintf(r.name, sizeof r.name, "%s", concur_task_worker_name(t));
    r.user = concur_task_user(t);
    r.global = ++g_side_effect;
    r.id = concur_task_id(t);
    return concur_task_return(t, &r, sizeof r);
}

enum kind { K_OK, K_SEGV, K_ABORT, K_EXIT3, K_EXIT4, K_SIGKILL, K_HANG, K_NKINDS };

typedef struct job {
    int kind;
    int value;
} job;

/* Does what the job's kind says; K_OK returns value * 3. */
static int task_job(concur_task *t, const void *in, size_t len)
{
    job j;
    if (len != sizeof j)
        return concur_task_fail(t, CONCUR_EINVAL, "len %zu", len);
    memcpy(&j, in, sizeof j);
    switch (j.kind) {
    case K_SEGV: {
        volatile uintptr_t addr = 16; /* a real fault (not NULL: UBSan would step in) */
        *(volatile int *)addr = 1;
        break;
    }
    case K_ABORT:
        abort();
    case K_EXIT3:
        exit(3);
    case K_EXIT4:
        _exit(4);
    case K_SIGKILL:
        kill(getpid(), SIGKILL);
        break;
    case K_HANG:
        tu_sleep(30);
        break;
    default:
        break;
    }
    int v = j.value * 3;
    return concur_task_return(t, &v, sizeof v);
}

static concur_future *submit_job(concur_pool *p, int kind, int value)
{
    job j = {kind, value};
    return tu_submit(p, task_job, &j, sizeof j);
}

/* Asserts how a crashed job's future failed. */
static void assert_crash(concur_future *f, int kind)
{
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    concur_error_info ei;
    cr_assert_eq(concur_future_error_info(f, &ei), 0);
    cr_assert_eq(ei.code, CONCUR_ECRASHED, "kind %d: code %d (%s)", kind, ei.code, ei.message);
    cr_assert_not(ei.remote);
    char want[128];
    switch (kind) {
    case K_SEGV:
    case K_ABORT:
    case K_SIGKILL: {
        int sig = kind == K_SEGV ? SIGSEGV : kind == K_ABORT ? SIGABRT : SIGKILL;
        cr_assert_eq(ei.signal, sig, "kind %d: signal %d", kind, ei.signal);
        cr_assert_eq(ei.exit_status, -1);
        snprintf(want, sizeof want, "worker died: killed by signal %d (%s)", sig,
                 sigdescr_np(sig));
        cr_assert_str_eq(ei.message, want);
        if (kind == K_SIGKILL)
            cr_assert_null(ei.backtrace, "SIGKILL cannot be caught: no backtrace");
        else
            cr_assert(ei.backtrace && strchr(ei.backtrace, '\n'), "kind %d: a backtrace", kind);
        break;
    }
    default: {
        int st = kind == K_EXIT3 ? 3 : 4;
        cr_assert_eq(ei.signal, 0);
        cr_assert_eq(ei.exit_status, st);
        snprintf(want, sizeof want, "worker exited with status %d", st);
        cr_assert_str_eq(ei.message, want);
        cr_assert_null(ei.backtrace);
        break;
    }
    }
    cr_assert_str_eq(concur_future_error_message(f), ei.message);
}

/* ---- results ------------------------------------------------------------------------ */

Test(procpool, small_results_are_exact)
{
    concur_pool *p = proc_pool(3, "pp");
    cr_assert_eq(concur_pool_max_workers(p), 3);
    concur_future *fs[50];
    for (int i = 0; i < 50; i++)
        fs[i] = tu_submit(p, task_square, &i, sizeof i);
    for (int i = 0; i < 50; i++) {
        tu_assert_int_result(fs[i], i * i + 1, "square");
        concur_future_release(fs[i]);
    }
    /* Echo of every small size, inline or not, and of nothing. */
    unsigned char bytes[40];
    for (int i = 0; i < 40; i++)
        bytes[i] = (unsigned char)(i * 7 + 1);
    for (size_t n = 0; n <= 40; n++) {
        concur_future *f = tu_submit(p, tu_task_echo, n ? bytes : NULL, n);
        const void *d = NULL;
        size_t len = 99;
        cr_assert_eq(concur_future_collect(f, TU_SAFETY, &d, &len), 0);
        cr_assert_eq(len, n);
        if (n)
            cr_assert_eq(memcmp(d, bytes, n), 0, "echo of %zu bytes", n);
        concur_future_release(f);
    }
    concur_pool_destroy(p);
}

/* A stream of short tasks handed to one process many at a time, with results of every size:
 * small ones through shared memory (which wraps around, and fills up when the proxy is
 * behind), big ones on the socket, in any mix; each comes back whole to its own future. */
Test(procpool, results_of_every_size_come_back_in_a_pipelined_stream)
{
    concur_pool *p = proc_pool(1, "sizes");
    static const uint64_t sizes[] = {0, 1, 24, 1000, 3000, 4000, 4100, 9000, 20000, 7, 2500};
    enum { N = 3000, NS = sizeof sizes / sizeof sizes[0] };
    struct arg {
        uint64_t n;
        uint32_t seed;
    };
    concur_future **fs = malloc(N * sizeof *fs);
    cr_assert_not_null(fs);
    for (uint32_t i = 0; i < N; i++) {
        struct arg a = {sizes[(i * 7 + i / NS) % NS], i};
        fs[i] = tu_submit(p, task_pattern, &a, sizeof a);
    }
    for (uint32_t i = 0; i < N; i++) {
        size_t want = (size_t)sizes[(i * 7 + i / NS) % NS];
        const void *d = NULL;
        size_t len = 0;
        cr_assert_eq(concur_future_collect(fs[i], TU_SAFETY, &d, &len), 0, "task %u: %s", i,
                     concur_future_error_message(fs[i]));
        cr_assert_eq(len, want, "task %u: %zu bytes, not %zu", i, len, want);
        const unsigned char *b = d;
        for (size_t j = 0; j < want; j++)
            if (b[j] != pattern_byte(j, i))
                cr_assert_fail("task %u: byte %zu is wrong", i, j);
        concur_future_release(fs[i]);
    }
    free(fs);
    concur_pool_destroy(p);
}

Test(procpool, ten_megabyte_inputs_and_results_are_exact)
{
    concur_pool *p = proc_pool(2, "big");
    size_t n = (size_t)10 << 20;
    unsigned char *buf = malloc(n);
    cr_assert_not_null(buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = pattern_byte(i, 99);
    concur_future *echo = tu_submit(p, tu_task_echo, buf, n);
    struct {
        uint64_t n;
        uint32_t seed;
    } a = {n + 3, 5};
    concur_future *gen = tu_submit(p, task_pattern, &a, sizeof a);
    const void *d = NULL;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(echo, TU_SAFETY, &d, &len), 0);
    cr_assert_eq(len, n);
    cr_assert_eq(memcmp(d, buf, n), 0, "10 MB echo");
    cr_assert_eq(concur_future_collect(gen, TU_SAFETY, &d, &len), 0);
    cr_assert_eq(len, n + 3);
    const unsigned char *r = d;
    for (size_t i = 0; i < n + 3; i++)
        if (r[i] != pattern_byte(i, 5))
            cr_assert_fail("10 MB result: byte %zu", i);
    concur_future_release(echo);
    concur_future_release(gen);
    free(buf);
    concur_pool_destroy(p);
}

Test(procpool, tasks_see_their_context_and_keep_side_effects_in_the_worker)
{
    int anchor = 0;
    concur_pool_opts o = {
        .engine = CONCUR_ENGINE_PROCESSES, .max_workers = 1, .name = "ctx", .user = &anchor};
    concur_pool *p = tu_pool_opts(&o);
    for (int i = 1; i <= 3; i++) {
        concur_future *f = tu_submit(p, task_context, NULL, 0);
        const void *d = NULL;
        size_t len = 0;
        cr_assert_eq(concur_future_collect(f, TU_SAFETY, &d, &len), 0);
        struct {
            char name[96];
            void *user;
            int global;
            uint64_t id;
        } r;
        cr_assert_eq(len, sizeof r);
        memcpy(&r, d, sizeof r);
        cr_assert_str_eq(r.name, "concur-ctx-process-worker-1");
        cr_assert_eq(r.user, &anchor, "the user pointer travels by value");
        cr_assert_eq(r.global, i, "one worker process keeps its globals across tasks");
        cr_assert_eq(r.id, (uint64_t)i);
        concur_future_release(f);
    }
    cr_assert_eq(g_side_effect, 0, "the parent's globals are untouched");
    concur_pool_destroy(p);
}

Test(procpool, task_errors_come_back_as_remote)
{
    concur_pool *p = proc_pool(2, "err");
    concur_future *f = tu_submit(p, task_fail_io, "abc", 3);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), -EIO);
    concur_error_info ei;
    cr_assert_eq(concur_future_error_info(f, &ei), 0);
    cr_assert_eq(ei.code, -EIO);
    cr_assert_str_eq(ei.message, "remote failure 3 in concur-err-process-worker-1");
    cr_assert(ei.remote);
    cr_assert_eq(ei.signal, 0);
    cr_assert_eq(ei.exit_status, -1);
    cr_assert_null(ei.backtrace);
    concur_future_release(f);
    /* The worker lives on: the next task runs in the same process. */
    concur_future *a = tu_submit(p, task_getpid, NULL, 0);
    concur_future *b = tu_submit(p, task_fail_io, NULL, 0);
    cr_assert_eq(concur_future_collect(a, TU_SAFETY, NULL, NULL), 0);
    cr_assert_eq(concur_future_collect(b, TU_SAFETY, NULL, NULL), -EIO);
    concur_future_release(a);
    concur_future_release(b);
    concur_pool_destroy(p);
}

/* ---- crashes ------------------------------------------------------------------------ */

Test(procpool, each_kind_of_crash_fails_only_its_own_future)
{
    concur_pool *p = proc_pool(2, "crash");
    int kinds[] = {K_SEGV, K_ABORT, K_EXIT3, K_EXIT4, K_SIGKILL};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        concur_future *before = submit_job(p, K_OK, 10);
        concur_future *bad = submit_job(p, kinds[k], 0);
        concur_future *after[4];
        for (int i = 0; i < 4; i++)
            after[i] = submit_job(p, K_OK, i);
        assert_crash(bad, kinds[k]);
        tu_assert_int_result(before, 30, "before the crash");
        for (int i = 0; i < 4; i++) {
            tu_assert_int_result(after[i], i * 3, "after the crash");
            concur_future_release(after[i]);
        }
        concur_future_release(before);
        concur_future_release(bad);
    }
    cr_assert_eq(concur_pool_check(p), 0, "crashes do not break the pool");
    concur_pool_destroy(p);
}

Test(procpool, one_worker_crash_then_five_tasks)
{
    concur_pool *p = proc_pool(1, "one");
    concur_future *pid0 = tu_submit(p, task_getpid, NULL, 0);
    concur_future *bad = submit_job(p, K_SEGV, 0);
    concur_future *fs[5];
    for (int i = 0; i < 5; i++)
        fs[i] = submit_job(p, K_OK, i + 1);
    concur_future *pid1 = tu_submit(p, task_getpid, NULL, 0);
    assert_crash(bad, K_SEGV);
    for (int i = 0; i < 5; i++) {
        tu_assert_int_result(fs[i], (i + 1) * 3, "after the crash");
        concur_future_release(fs[i]);
    }
    const void *a, *b;
    cr_assert_eq(concur_future_collect(pid0, TU_SAFETY, &a, NULL), 0);
    cr_assert_eq(concur_future_collect(pid1, TU_SAFETY, &b, NULL), 0);
    cr_assert_neq(*(const pid_t *)a, *(const pid_t *)b, "a replacement process");
    concur_pool_counts c;
    concur_pool_counts_get(p, &c);
    cr_assert_eq(c.workers, 1);
    concur_future_release(pid0);
    concur_future_release(pid1);
    concur_future_release(bad);
    concur_pool_destroy(p);
}

Test(procpool, task_timeout_kills_the_worker)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 1,
                          .name = "tmo",
                          .task_timeout = 0.3};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *warm = submit_job(p, K_OK, 1); /* the process is up */
    tu_assert_int_result(warm, 3, "warm-up");
    double t0 = tu_now();
    concur_future *hang = submit_job(p, K_HANG, 0);
    concur_future *next = submit_job(p, K_OK, 7);
    cr_assert_eq(concur_future_collect(hang, TU_SAFETY, NULL, NULL), CONCUR_ETASKTIMEOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.3 - TU_EPS, "%.3f s", el);
    cr_assert_lt(el, TU_SANITIZED ? TU_LOOSE(1.0) : 1.0, "%.3f s", el);
    concur_error_info ei;
    cr_assert_eq(concur_future_error_info(hang, &ei), 0);
    cr_assert_eq(ei.signal, SIGKILL, "the worker was killed");
    cr_assert_not(ei.remote);
    cr_assert_not_null(strstr(ei.message, "timeout"));
    tu_assert_int_result(next, 21, "the pool goes on");
    concur_future_release(warm);
    concur_future_release(hang);
    concur_future_release(next);
    concur_pool_destroy(p);
}

/* ---- hooks -------------------------------------------------------------------------- */

static int g_init_value; /* set by the initializer in the worker process only */

static int init_set(concur_task *t, void *arg)
{
    (void)t;
    g_init_value = *(const int *)arg;
    return 0;
}

static int task_init_value(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    return concur_task_return(t, &g_init_value, sizeof g_init_value);
}

static const int g_init_arg = 42; /* exists at pool creation */

Test(procpool, initializer_runs_in_each_worker_process)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 1,
                          .name = "ini",
                          .initializer = init_set,
                          .init_arg = (void *)&g_init_arg};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *a = tu_submit(p, task_init_value, NULL, 0);
    tu_assert_int_result(a, 42, "initializer ran in the worker");
    concur_future *bad = submit_job(p, K_ABORT, 0);
    assert_crash(bad, K_ABORT);
    concur_future *b = tu_submit(p, task_init_value, NULL, 0);
    tu_assert_int_result(b, 42, "and again in its replacement");
    cr_assert_eq(g_init_value, 0, "not in the parent");
    concur_future_release(a);
    concur_future_release(b);
    concur_future_release(bad);
    concur_pool_destroy(p);
}

static int init_fail(concur_task *t, void *arg)
{
    (void)arg;
    return concur_task_fail(t, -EIO, "init boom in %s", concur_task_worker_name(t));
}

Test(procpool, initializer_failure_breaks_the_pool)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 1,
                          .name = "brk",
                          .initializer = init_fail};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = submit_job(p, K_OK, 1);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), CONCUR_ECANCELED);
    cr_assert(concur_pool_is_broken(p));
    cr_assert_eq(concur_pool_check(p), CONCUR_EINITIALIZER);
    cr_assert_str_eq(concur_pool_error_message(p),
                     "initializer failed in worker 'concur-brk-process-worker-1': "
                     "init boom in concur-brk-process-worker-1");
    job j = {K_OK, 1};
    cr_assert_eq(concur_pool_submit(p, task_job, &j, sizeof j, NULL), CONCUR_EINITIALIZER);
    cr_assert_eq(concur_pool_test(p), CONCUR_EBROKEN);
    concur_future_release(f);
    concur_pool_destroy(p);
}

static int init_crash(concur_task *t, void *arg)
{
    (void)t;
    (void)arg;
    abort();
}

Test(procpool, initializer_crash_breaks_the_pool)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 1,
                          .name = "ic",
                          .initializer = init_crash};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = submit_job(p, K_OK, 1);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), CONCUR_ECANCELED);
    cr_assert_eq(concur_pool_check(p), CONCUR_EINITIALIZER);
    cr_assert_not_null(strstr(concur_pool_error_message(p), "killed by signal 6"),
                       "%s", concur_pool_error_message(p));
    concur_future_release(f);
    concur_pool_destroy(p);
}

static int final_fail(concur_task *t, void *arg)
{
    (void)arg;
    return concur_task_fail(t, -EIO, "final boom");
}

Test(procpool, finalizer_failure_breaks_the_pool)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 1,
                          .name = "fin",
                          .finalizer = final_fail};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = submit_job(p, K_OK, 2);
    tu_assert_int_result(f, 6, "before the finalizer");
    cr_assert_eq(concur_pool_join(p, TU_SAFETY), 0);
    cr_assert_eq(concur_pool_check(p), CONCUR_EFINALIZER);
    cr_assert_not_null(strstr(concur_pool_error_message(p), "concur-fin-process-worker-1"));
    concur_future_release(f);
    concur_pool_destroy(p);
}

/* ---- workers -------------------------------------------------------------------------- */

Test(procpool, recycling_gives_fresh_processes)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 1,
                          .name = "rec",
                          .max_tasks_per_worker = 2};
    concur_pool *p = tu_pool_opts(&o);
    pid_t pids[5];
    for (int i = 0; i < 5; i++) {
        concur_future *f = tu_submit(p, task_getpid, NULL, 0);
        const void *d = NULL;
        cr_assert_eq(concur_future_collect(f, TU_SAFETY, &d, NULL), 0);
        memcpy(&pids[i], d, sizeof(pid_t));
        cr_assert_neq(pids[i], getpid());
        concur_future_release(f);
    }
    int distinct = 0;
    for (int i = 0; i < 5; i++) {
        bool seen = false;
        for (int j = 0; j < i; j++)
            seen |= pids[j] == pids[i];
        distinct += !seen;
    }
    cr_assert_eq(distinct, 3, "N=2 over 5 tasks: 3 worker processes");
    cr_assert_eq(pids[0], pids[1]);
    cr_assert_eq(pids[2], pids[3]);
    concur_pool_destroy(p);
}

Test(procpool, destroy_leaves_no_processes_and_no_fds)
{
    int fds = count_fds();
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 3,
                          .name = "clean",
                          .task_timeout = 5};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *fs[12];
    for (int i = 0; i < 12; i++)
        fs[i] = submit_job(p, i % 4 == 1 ? K_SEGV : K_OK, i);
    cr_assert_eq(concur_wait_all(fs, 12, TU_SAFETY), 0);
    for (int i = 0; i < 12; i++)
        concur_future_release(fs[i]);
    bool ok;
    int alive = 0, zombies = 0;
    TU_POLL_UNTIL(ok, (count_workers(&alive, &zombies), alive == 3 && zombies == 0), TU_SAFETY);
    cr_assert(ok, "3 worker processes, no zombies (alive %d, zombies %d)", alive, zombies);
    concur_pool_destroy(p);
    errno = 0;
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no child process left");
    cr_assert_eq(errno, ECHILD);
    cr_assert_eq(count_fds(), fds, "no fd left behind");
}

Test(procpool, idle_workers_exit_with_their_processes)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 2,
                          .name = "idle",
                          .idle_timeout = 0.1};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *fs[4];
    for (int i = 0; i < 4; i++)
        fs[i] = submit_job(p, K_OK, i);
    cr_assert_eq(concur_wait_all(fs, 4, TU_SAFETY), 0);
    for (int i = 0; i < 4; i++)
        concur_future_release(fs[i]);
    bool ok;
    int alive = 0, zombies = 0;
    TU_POLL_UNTIL(ok,
                  (count_workers(&alive, &zombies),
                   tu_counts(p).workers == 0 && alive == 0 && zombies == 0),
                  TU_SAFETY);
    cr_assert(ok, "idle proxies left and took their processes (alive %d)", alive);
    concur_future *f = submit_job(p, K_OK, 5);
    tu_assert_int_result(f, 15, "a later submit starts a worker again");
    concur_future_release(f);
    concur_pool_destroy(p);
}

/* Dead: gone, or a zombie waiting for whoever inherited it. */
static bool process_dead(pid_t pid)
{
    if (kill(pid, 0) == -1 && errno == ESRCH)
        return true;
    char path[64], buf[256] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    bool dead = false;
    if (fgets(buf, sizeof buf, f)) {
        const char *e = strrchr(buf, ')');
        dead = e && (e[2] == 'Z' || e[2] == 'X');
    }
    fclose(f);
    return dead;
}

Test(procpool, death_of_the_fork_server_breaks_the_pool)
{
    concur_pool *p = proc_pool(1, "srv");
    concur_future *f = submit_job(p, K_OK, 1);
    tu_assert_int_result(f, 3, "warm-up");
    concur_future_release(f);
    pid_t srv[4], wk[4];
    cr_assert_eq(children_of(getpid(), (pid_t)gettid(), srv, 4), 1, "the fork server");
    cr_assert_eq(children_of(srv[0], srv[0], wk, 4), 1, "the server's one worker");
    cr_assert_eq(kill(srv[0], SIGKILL), 0); /* its worker dies with it (PR_SET_PDEATHSIG) */
    /* The worker's death signal is asynchronous: wait until it is gone (reaped by whoever
     * inherited it), so the next task cannot still reach it. */
    bool gone;
    TU_POLL_UNTIL(gone, process_dead(wk[0]), TU_SAFETY);
    cr_assert(gone, "the worker outlived its fork server");
    f = submit_job(p, K_OK, 2);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), CONCUR_ECRASHED);
    bool ok;
    TU_POLL_UNTIL(ok, concur_pool_check(p) == CONCUR_EBROKEN, TU_SAFETY);
    cr_assert(ok, "a worker process cannot be replaced: the pool is broken");
    cr_assert_str_eq(concur_pool_error_message(p),
                     "starting the worker process failed in worker 'concur-srv-process-worker-1': "
                     "fork server: it is gone");
    concur_future_release(f);
    concur_pool_destroy(p); /* reaps the killed server */
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no child process left");
}

/* ---- submit checks ------------------------------------------------------------------- */

Test(procpool, functions_outside_the_loaded_code_are_refused)
{
    concur_pool *p = proc_pool(1, "fn");
    unsigned char *heap = malloc(64);
    cr_assert_not_null(heap);
    concur_fn bad = (concur_fn)(uintptr_t)heap;
    concur_future *f = NULL;
    cr_assert_eq(concur_pool_submit(p, bad, NULL, 0, &f), CONCUR_ENOTLOADED);
    cr_assert_null(f);
    cr_assert_str_eq(concur_strerror(CONCUR_ENOTLOADED),
                     "the function is not in code the worker processes have (loaded after the "
                     "pool?)");
    cr_assert_str_eq(concur_err_name(CONCUR_ENOTLOADED), "ENOTLOADED");
    concur_input in = {NULL, 0};
    cr_assert_eq(concur_pool_submit_batch(p, bad, &in, 1, NULL), CONCUR_ENOTLOADED);
    concur_fn stack = (concur_fn)(uintptr_t)&in;
    cr_assert_eq(concur_pool_submit(p, stack, NULL, 0, NULL), CONCUR_ENOTLOADED);
    /* The map family's per-item function travels inside its chunks: checked too. */
    int items[4] = {1, 2, 3, 4}, outs[4];
    concur_map_opts mo = CONCUR_MAP_OPTS_INIT;
    mo.in_size = mo.out_size = sizeof(int);
    cr_assert_eq(concur_map(p, (concur_map_fn)(uintptr_t)heap, &mo, items, 4, outs, NULL),
                 CONCUR_ENOTLOADED);
    cr_assert_eq(tu_counts(p).pending, 0, "nothing was queued");
    /* Library code loaded at creation is fine (tu_task_echo, and concur's own chunk task). */
    f = tu_submit(p, tu_task_noop, NULL, 0);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), 0);
    concur_future_release(f);
    free(heap);
    concur_pool_destroy(p);
}

/* ---- map, test() -------------------------------------------------------------------------- */

static int item_poly(concur_task *t, const void *in, void *out)
{
    (void)t;
    int64_t x;
    memcpy(&x, in, sizeof x);
    x = x * x * 3 - 7 * x + 11;
    memcpy(out, &x, sizeof x);
    return 0;
}

Test(procpool, map_equals_the_serial_map)
{
    concur_pool *p = proc_pool(3, "map");
    size_t n = 10007;
    int64_t *in = malloc(n * sizeof *in), *out = calloc(n, sizeof *out);
    cr_assert(in && out);
    for (size_t i = 0; i < n; i++)
        in[i] = (int64_t)i - 5000;
    size_t ks[] = {1, 64, 1000, n};
    for (size_t c = 0; c < sizeof ks / sizeof *ks; c++) {
        concur_map_opts o = CONCUR_MAP_OPTS_INIT;
        o.in_size = o.out_size = sizeof(int64_t);
        o.chunk_size = ks[c];
        memset(out, 0, n * sizeof *out);
        size_t nn = ks[c] == 1 ? 2000 : n; /* chunk size 1: one task per item */
        cr_assert_eq(concur_map(p, item_poly, &o, in, nn, out, NULL), 0);
        for (size_t i = 0; i < nn; i++) {
            int64_t want;
            item_poly(NULL, &in[i], &want);
            if (out[i] != want)
                cr_assert_fail("k=%zu: out[%zu]", ks[c], i);
        }
    }
    free(in);
    free(out);
    concur_pool_destroy(p);
}

Test(procpool, pool_test_runs_on_a_process_copy)
{
    concur_pool *p = proc_pool(2, "tst");
    cr_assert_eq(concur_pool_test(p), 0);
    concur_pool_destroy(p);
}

/* ---- fault injection -------------------------------------------------------------------- */

/* Task i: a crash when i % 100 < 10 (10%, the five kinds in turn), a hang past the timeout
 * when i % 100 == 50 (1%), otherwise a normal task. */
static int planned_kind(int i)
{
    if (i % 100 < 10)
        return K_SEGV + (i % 100 + i / 100) % 5;
    if (i % 100 == 50)
        return K_HANG;
    return K_OK;
}

Test(procpool, fault_injection_at_scale, .timeout = 240)
{
    /* Under a sanitizer, fewer tasks, and a timeout that a normal task (a fork of a
     * sanitized process, on a loaded machine) never reaches. */
    int n = TU_SANITIZED ? 300 : 2000, workers = 8;
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = workers,
                          .name = "faults",
                          .task_timeout = TU_SANITIZED ? 2.0 : 0.3};
    concur_pool *p = tu_pool_opts(&o);
    concur_future **fs = calloc((size_t)n, sizeof *fs);
    cr_assert_not_null(fs);
    for (int i = 0; i < n; i++)
        fs[i] = submit_job(p, planned_kind(i), i);
    cr_assert_eq(concur_wait_all(fs, (size_t)n, TU_SANITIZED ? 200 : 60), 0);
    int ok = 0, crashed = 0, timed_out = 0;
    for (int i = 0; i < n; i++) {
        int k = planned_kind(i);
        if (k == K_OK) {
            tu_assert_int_result(fs[i], i * 3, "a normal task");
            ok++;
        } else if (k == K_HANG) {
            cr_assert_eq(concur_future_error(fs[i]), CONCUR_ETASKTIMEOUT, "task %d", i);
            timed_out++;
        } else {
            assert_crash(fs[i], k);
            crashed++;
        }
        concur_future_release(fs[i]);
    }
    free(fs);
    cr_assert_eq(crashed, n / 10);
    cr_assert_eq(timed_out, n / 100);
    cr_assert_eq(ok, n - n / 10 - n / 100);
    bool fine;
    int alive = 0, zombies = 0;
    TU_POLL_UNTIL(fine,
                  (count_workers(&alive, &zombies),
                   alive == workers && zombies == 0 && tu_counts(p).workers == (size_t)workers),
                  TU_SAFETY);
    cr_assert(fine, "the pool ends with its %d workers (processes alive %d, zombies %d)",
              workers, alive, zombies);
    concur_pool_destroy(p);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no child process left");
}

/* ---- error info of other futures ------------------------------------------------------ */

Test(procpool, error_info_of_thread_pool_and_standalone_futures)
{
    concur_future *f;
    cr_assert_eq(concur_future_create(&f), 0);
    concur_error_info ei;
    cr_assert_eq(concur_future_error_info(f, &ei), CONCUR_EAGAIN);
    cr_assert_eq(ei.exit_status, -1);
    cr_assert_eq(concur_future_set_error(f, -EIO, "local"), 0);
    cr_assert_eq(concur_future_error_info(f, &ei), 0);
    cr_assert_eq(ei.code, -EIO);
    cr_assert_str_eq(ei.message, "local");
    cr_assert_not(ei.remote);
    cr_assert_eq(ei.signal, 0);
    cr_assert_eq(ei.exit_status, -1);
    cr_assert_null(ei.backtrace);
    concur_future_release(f);
    cr_assert_eq(concur_future_error_info(NULL, &ei), CONCUR_EINVAL);

    concur_pool *p = tu_pool(1);
    f = tu_submit(p, task_fail_io, NULL, 0);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), -EIO);
    cr_assert_eq(concur_future_error_info(f, &ei), 0);
    cr_assert_not(ei.remote, "a thread pool's errors are local");
    cr_assert_str_eq(ei.message, "remote failure 0 in concur-pool-thread-worker-1");
    concur_future_release(f);
    f = tu_submit(p, tu_task_noop, NULL, 0);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), 0);
    cr_assert_eq(concur_future_error_info(f, &ei), 0);
    cr_assert_eq(ei.code, 0);
    cr_assert_null(ei.message);
    concur_future_release(f);
    concur_pool_destroy(p);
}

Test(procpool, engine_value_is_checked)
{
    concur_pool *p = NULL;
    concur_pool_opts o = {.engine = (concur_engine)7};
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o.engine = CONCUR_ENGINE_PROCESSES;
    o.max_workers = -1;
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o.max_workers = 0;
    cr_assert_eq(concur_pool_create(&p, &o), 0);
    cr_assert_eq(concur_pool_max_workers(p), concur_cpu_count());
    concur_pool_destroy(p);
}

/* ---- per-worker limits ------------------------------------------------------------- */

/* Burns CPU until 30 s of wall time passed (a limit must end it long before); with an
 * input byte 1 it ignores SIGXCPU first, so only the hard limit's SIGKILL stops it. */
static int task_spin(concur_task *t, const void *in, size_t len)
{
    (void)t;
    if (len == 1 && *(const unsigned char *)in == 1)
        signal(SIGXCPU, SIG_IGN);
    double end = tu_now() + 30;
    volatile uint64_t x = 0;
    while (tu_now() < end)
        for (int i = 0; i < 100000; i++)
            x = x + (uint64_t)i;
    return 0;
}

/* Asserts that @f died of the 1 s CPU limit (by @sig), within about @secs of @t0. The
 * bound is loose: CPU time accrues slower than wall time on a loaded machine (the test runs
 * next to others), and what matters is that the limit, not the task's 30 s, ended it. */
static void assert_cpu_limit_death(concur_future *f, int sig, double t0, double secs)
{
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), CONCUR_ECRASHED);
    double el = tu_now() - t0;
    cr_assert_lt(el, TU_SANITIZED ? TU_LOOSE(secs) : 2 * secs + 2, "%.3f s to reach the CPU limit",
                 el);
    concur_error_info ei;
    cr_assert_eq(concur_future_error_info(f, &ei), 0);
    cr_assert_str_eq(ei.message, "worker exceeded its CPU time limit of 1 s");
    cr_assert(ei.limit, "the limit is reported");
    /* TSan defers a signal to a handler until the thread reaches one of its interceptors,
     * which a busy loop may never do: the hard limit's SIGKILL comes first then. */
    if (TU_TSAN && sig == SIGXCPU)
        cr_assert(ei.signal == SIGXCPU || ei.signal == SIGKILL, "signal %d", ei.signal);
    else
        cr_assert_eq(ei.signal, sig, "signal %d", ei.signal);
    cr_assert_not(ei.remote);
}

Test(procpool, cpu_limit_kills_a_busy_task_and_the_worker_is_replaced)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 1,
                          .name = "cpu",
                          .worker_cpu_limit = 1};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *pid0 = tu_submit(p, task_getpid, NULL, 0);
    cr_assert_eq(concur_future_collect(pid0, TU_SAFETY, NULL, NULL), 0);
    double t0 = tu_now();
    concur_future *spin = tu_submit(p, task_spin, NULL, 0);
    concur_future *pid1 = tu_submit(p, task_getpid, NULL, 0);
    assert_cpu_limit_death(spin, SIGXCPU, t0, 3.0);
    concur_error_info ei;
    cr_assert_eq(concur_future_error_info(spin, &ei), 0);
    if (ei.signal == SIGXCPU)
        cr_assert(ei.backtrace && strchr(ei.backtrace, '\n'), "SIGXCPU leaves a backtrace");
    const void *a, *b;
    cr_assert_eq(concur_future_collect(pid0, TU_SAFETY, &a, NULL), 0);
    cr_assert_eq(concur_future_collect(pid1, TU_SAFETY, &b, NULL), 0, "the next task runs");
    cr_assert_neq(*(const pid_t *)a, *(const pid_t *)b, "in a replacement process");
    cr_assert_eq(concur_pool_check(p), 0);
    concur_future_release(pid0);
    concur_future_release(pid1);
    concur_future_release(spin);
    concur_pool_destroy(p);
}

Test(procpool, cpu_hard_limit_kills_a_task_that_ignores_sigxcpu)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 1,
                          .name = "cpuhard",
                          .worker_cpu_limit = 0.5}; /* rounded up: 1 s, hard 2 s */
    concur_pool *p = tu_pool_opts(&o);
    unsigned char ignore = 1;
    double t0 = tu_now();
    concur_future *spin = tu_submit(p, task_spin, &ignore, 1);
    concur_future *next = submit_job(p, K_OK, 4);
    assert_cpu_limit_death(spin, SIGKILL, t0, 4.0);
    double el = tu_now() - t0;
    cr_assert_geq(el, 2.0 - TU_EPS, "the hard limit is one second more: %.3f s", el);
    tu_assert_int_result(next, 12, "the next task runs");
    concur_future_release(spin);
    concur_future_release(next);
    concur_pool_destroy(p);
}

/* Input: size_t n. Allocates n bytes and touches every page; result: n. */
static int task_alloc(concur_task *t, const void *in, size_t len)
{
    size_t n;
    if (len != sizeof n)
        return concur_task_fail(t, CONCUR_EINVAL, "len %zu", len);
    memcpy(&n, in, sizeof n);
    unsigned char *m = malloc(n);
    if (!m)
        return concur_task_fail(t, -ENOMEM, "malloc(%zu) failed", n);
    for (size_t i = 0; i < n; i += 4096)
        m[i] = (unsigned char)i;
    m[n - 1] = 1;
    free(m);
    return concur_task_return(t, &n, sizeof n);
}

/* Input: size_t n. Aborts when malloc(n) fails, as many programs do. */
static int task_alloc_or_abort(concur_task *t, const void *in, size_t len)
{
    size_t n;
    memcpy(&n, in, sizeof n < len ? sizeof n : len);
    void *m = malloc(n);
    if (!m)
        abort();
    free(m);
    return concur_task_return(t, &n, sizeof n);
}

/* This process's address space (VmSize), which a worker forked now inherits. */
static size_t vm_size(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert_not_null(f);
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %llu kB", &kb) == 1)
            break;
    fclose(f);
    cr_assert_gt(kb, 0);
    return (size_t)kb << 10;
}

Test(procpool, memory_limit_makes_large_allocations_fail)
{
    /* RLIMIT_AS counts the whole address space, inherited mappings included. Here that is
     * a few dozen MB, so 256 MB leaves room for a 1 MB allocation and none for 512 MB;
     * under a sanitizer it is terabytes of shadow, so the limit is 256 MB above it. */
    size_t vm = vm_size(), limit = (size_t)256 << 20;
    if (TU_SANITIZED)
        limit += vm;
    else
        cr_assert_lt(vm, (size_t)160 << 20, "VmSize %zu leaves too little below 256 MB", vm);
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES,
                          .max_workers = 1,
                          .name = "mem",
                          .worker_memory_limit = limit};
    concur_pool *p = tu_pool_opts(&o);
    size_t big = (size_t)512 << 20, small = (size_t)1 << 20;
    concur_future *pid0 = tu_submit(p, task_getpid, NULL, 0);
    concur_future *fb = tu_submit(p, task_alloc, &big, sizeof big);
    concur_future *fs = tu_submit(p, task_alloc, &small, sizeof small);
    concur_future *pid1 = tu_submit(p, task_getpid, NULL, 0);
    cr_assert_eq(concur_future_collect(fb, TU_SAFETY, NULL, NULL), -ENOMEM,
                 "512 MB: %s", concur_future_error_message(fb));
    concur_error_info ei;
    cr_assert_eq(concur_future_error_info(fb, &ei), 0);
    cr_assert(ei.remote, "the task reported it itself");
    cr_assert_not(ei.limit);
    char want[64];
    snprintf(want, sizeof want, "malloc(%zu) failed", big);
    cr_assert_str_eq(ei.message, want);
    const void *d;
    size_t len = 0;
    cr_assert_eq(concur_future_collect(fs, TU_SAFETY, &d, &len), 0, "1 MB: %s",
                 concur_future_error_message(fs));
    cr_assert_eq(len, sizeof small);
    const void *a, *b;
    cr_assert_eq(concur_future_collect(pid0, TU_SAFETY, &a, NULL), 0);
    cr_assert_eq(concur_future_collect(pid1, TU_SAFETY, &b, NULL), 0);
    cr_assert_eq(*(const pid_t *)a, *(const pid_t *)b, "a failed allocation kills nothing");

    /* A task that aborts on the NULL: a crash, with the limit named. */
    concur_future *fa = tu_submit(p, task_alloc_or_abort, &big, sizeof big);
    cr_assert_eq(concur_future_collect(fa, TU_SAFETY, NULL, NULL), CONCUR_ECRASHED);
    cr_assert_eq(concur_future_error_info(fa, &ei), 0);
    char crash[160];
    snprintf(crash, sizeof crash,
             "worker died: killed by signal %d (%s) (memory limit of %zu bytes)", SIGABRT,
             sigdescr_np(SIGABRT), limit);
    cr_assert_str_eq(ei.message, crash);
    cr_assert_eq(ei.signal, SIGABRT);
    cr_assert_not(ei.limit, "a failed allocation cannot be told for sure");
    concur_future *after = tu_submit(p, task_alloc, &small, sizeof small);
    cr_assert_eq(concur_future_collect(after, TU_SAFETY, NULL, NULL), 0, "the worker replaced");
    concur_future_release(after);
    concur_future_release(fa);
    concur_future_release(pid0);
    concur_future_release(pid1);
    concur_future_release(fb);
    concur_future_release(fs);
    concur_pool_destroy(p);
}

Test(procpool, limit_options_are_checked)
{
    concur_pool *p = NULL;
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES, .worker_cpu_limit = -1};
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o.worker_cpu_limit = NAN;
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o.worker_cpu_limit = 1e10;
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o.worker_cpu_limit = 0;
    o.worker_memory_limit = (size_t)-1; /* -1 converted */
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    /* Thread pools: a thread cannot be limited. */
    concur_pool_opts th = {.engine = CONCUR_ENGINE_THREADS, .worker_memory_limit = 1 << 30};
    cr_assert_eq(concur_pool_create(&p, &th), CONCUR_EINVAL);
    th.worker_memory_limit = 0;
    th.worker_cpu_limit = 5;
    cr_assert_eq(concur_pool_create(&p, &th), CONCUR_EINVAL);
    cr_assert_null(p, "nothing was created");
    /* More than this process's own hard limit: the worker could not set it. */
    struct rlimit rl = {.rlim_cur = 100, .rlim_max = 100};
    cr_assert_eq(setrlimit(RLIMIT_CPU, &rl), 0);
    concur_pool_opts hi = {.engine = CONCUR_ENGINE_PROCESSES, .worker_cpu_limit = 100};
    cr_assert_eq(concur_pool_create(&p, &hi), -EPERM, "soft 100 s needs a hard limit of 101");
    hi.worker_cpu_limit = 99;
    p = tu_pool_opts(&hi);
    concur_future *f = submit_job(p, K_OK, 2);
    tu_assert_int_result(f, 6, "a limit under the hard one");
    concur_future_release(f);
    concur_pool_destroy(p);
}

/* ---- cancel_kill --------------------------------------------------------------------- */

Test(procpool, cancel_kill_kills_a_running_task_and_replaces_its_worker)
{
    concur_pool *p = proc_pool(1, "kill");
    concur_future *pid0 = tu_submit(p, task_getpid, NULL, 0);
    cr_assert_eq(concur_future_collect(pid0, TU_SAFETY, NULL, NULL), 0);
    concur_future *hang = submit_job(p, K_HANG, 0);
    concur_future *pid1 = tu_submit(p, task_getpid, NULL, 0);
    bool running;
    TU_POLL_UNTIL(running, concur_future_state(hang) == CONCUR_RUNNING, TU_SAFETY);
    cr_assert(running);
    double t0 = tu_now();
    cr_assert(concur_future_cancel_kill(hang), "a running task is killed");
    cr_assert_eq(concur_future_collect(hang, TU_SAFETY, NULL, NULL), CONCUR_ECANCELED);
    double el = tu_now() - t0;
    cr_assert_lt(el, TU_SANITIZED ? TU_LOOSE(1.0) : 1.0, "%.3f s", el);
    cr_assert_eq(concur_future_state(hang), CONCUR_FAILED, "it ran: FAILED, not CANCELLED");
    cr_assert(concur_future_cancel_requested(hang));
    concur_error_info ei;
    cr_assert_eq(concur_future_error_info(hang, &ei), 0);
    cr_assert_eq(ei.code, CONCUR_ECANCELED);
    cr_assert_str_eq(ei.message, "cancelled while running: the worker was killed");
    cr_assert_eq(ei.signal, SIGKILL);
    cr_assert_not(ei.remote);
    cr_assert_not(ei.limit);
    cr_assert_not(concur_future_cancel_kill(hang), "a finished task: nothing to do");
    const void *a, *b;
    cr_assert_eq(concur_future_collect(pid0, TU_SAFETY, &a, NULL), 0);
    cr_assert_eq(concur_future_collect(pid1, TU_SAFETY, &b, NULL), 0, "the next task runs");
    cr_assert_neq(*(const pid_t *)a, *(const pid_t *)b, "in a replacement process");
    int alive = 0, zombies = 0;
    bool ok;
    TU_POLL_UNTIL(ok, (count_workers(&alive, &zombies), alive == 1 && zombies == 0), TU_SAFETY);
    cr_assert(ok, "one worker process, no zombie (alive %d, zombies %d)", alive, zombies);
    cr_assert_eq(concur_pool_check(p), 0);
    concur_future_release(pid0);
    concur_future_release(pid1);
    concur_future_release(hang);
    concur_pool_destroy(p);
}

Test(procpool, cancel_kill_of_a_pending_task_cancels_it)
{
    concur_pool *p = proc_pool(1, "killq");
    concur_future *hang = submit_job(p, K_HANG, 0);
    concur_future *queued = submit_job(p, K_OK, 1);
    bool running;
    TU_POLL_UNTIL(running, concur_future_state(hang) == CONCUR_RUNNING, TU_SAFETY);
    cr_assert(running);
    cr_assert(concur_future_cancel_kill(queued), "a pending task is cancelled");
    cr_assert_eq(concur_future_state(queued), CONCUR_CANCELLED, "it never ran");
    cr_assert_eq(concur_future_collect(queued, 0, NULL, NULL), CONCUR_ECANCELED);
    cr_assert(concur_future_cancel_kill(hang));
    cr_assert_eq(concur_future_collect(hang, TU_SAFETY, NULL, NULL), CONCUR_ECANCELED);
    concur_future *next = submit_job(p, K_OK, 5);
    tu_assert_int_result(next, 15, "the pool goes on");
    concur_future_release(next);
    concur_future_release(queued);
    concur_future_release(hang);
    concur_pool_destroy(p);
}

/* Returns 7 when told to stop (or after 30 s: the test then fails on the timing). */
static int task_until_stop(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    double end = tu_now() + 30;
    while (!concur_task_should_stop(t) && tu_now() < end)
        tu_nap();
    int v = concur_task_should_stop(t) ? 7 : 0;
    return concur_task_return(t, &v, sizeof v);
}

Test(procpool, cancel_kill_on_a_thread_pool_or_standalone_future_is_cancel)
{
    concur_pool *p = tu_pool(1);
    concur_future *run = tu_submit(p, task_until_stop, NULL, 0);
    concur_future *queued = tu_submit(p, tu_task_noop, NULL, 0);
    bool running;
    TU_POLL_UNTIL(running, concur_future_state(run) == CONCUR_RUNNING, TU_SAFETY);
    cr_assert(running);
    cr_assert(concur_future_cancel_kill(queued));
    cr_assert_eq(concur_future_state(queued), CONCUR_CANCELLED);
    cr_assert_not(concur_future_cancel_kill(run), "a thread is only flagged");
    cr_assert(concur_future_cancel_requested(run));
    tu_assert_int_result(run, 7, "the task saw concur_task_should_stop and finished normally");
    concur_future_release(run);
    concur_future_release(queued);
    concur_pool_destroy(p);

    concur_future *f;
    cr_assert_eq(concur_future_create(&f), 0);
    cr_assert(concur_future_cancel_kill(f));
    cr_assert_eq(concur_future_state(f), CONCUR_CANCELLED);
    concur_future_release(f);
    cr_assert_eq(concur_future_create(&f), 0);
    cr_assert_eq(concur_future_set_result(f, "x", 1), 0);
    cr_assert_not(concur_future_cancel_kill(f));
    concur_future_release(f);
    cr_assert_not(concur_future_cancel_kill(NULL));
}

/* Input: int ms. Sleeps that long, returns ms * 3. */
static int task_nap_ms(concur_task *t, const void *in, size_t len)
{
    int ms;
    if (len != sizeof ms)
        return concur_task_fail(t, CONCUR_EINVAL, "len %zu", len);
    memcpy(&ms, in, sizeof ms);
    tu_sleep(ms / 1000.0);
    int v = ms * 3;
    return concur_task_return(t, &v, sizeof v);
}

Test(procpool, cancel_kill_racing_with_completion_is_consistent)
{
    /* Kills land before, during and after each task's run: true must mean ECANCELED (or
     * CANCELLED), false a normal result. */
    concur_pool *p = proc_pool(2, "race");
    enum { N = 40 };
    concur_future *fs[N];
    for (int i = 0; i < N; i++) {
        int ms = i % 5;
        fs[i] = tu_submit(p, task_nap_ms, &ms, sizeof ms);
    }
    bool killed[N];
    for (int i = 0; i < N; i++) {
        if (i % 3 == 0)
            tu_nap();
        killed[i] = i % 2 == 0 && concur_future_cancel_kill(fs[i]);
    }
    int nkilled = 0;
    for (int i = 0; i < N; i++) {
        int rc = concur_future_collect(fs[i], TU_SAFETY, NULL, NULL);
        if (killed[i]) {
            nkilled++;
            cr_assert_eq(rc, CONCUR_ECANCELED, "task %d: killed, yet rc %d (%s)", i, rc,
                         concur_future_error_message(fs[i]));
        } else {
            tu_assert_int_result(fs[i], (i % 5) * 3, "not killed");
        }
        concur_future_release(fs[i]);
    }
    cr_assert_gt(nkilled, 0);
    concur_future *f = submit_job(p, K_OK, 3);
    tu_assert_int_result(f, 9, "the pool goes on");
    concur_future_release(f);
    int alive = 0, zombies = 0;
    bool ok;
    TU_POLL_UNTIL(ok, (count_workers(&alive, &zombies), zombies == 0 && alive <= 2), TU_SAFETY);
    cr_assert(ok, "no zombies (alive %d, zombies %d)", alive, zombies);
    concur_pool_destroy(p);
}

/* ---- concur_task_should_stop in worker processes -------------------------------------- */

/* Result: int, concur_task_should_stop() now. */
static int task_should_stop(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    int v = concur_task_should_stop(t);
    return concur_task_return(t, &v, sizeof v);
}

Test(procpool, shutdown_cancel_stops_running_tasks_in_processes)
{
    concur_pool *p = proc_pool(2, "stop");
    concur_future *probe = tu_submit(p, task_should_stop, NULL, 0);
    tu_assert_int_result(probe, 0, "should_stop is false until the pool asks");
    concur_future_release(probe);
    probe = tu_submit(p, task_until_stop, NULL, 0);
    concur_future *run = tu_submit(p, task_until_stop, NULL, 0);
    bool running;
    TU_POLL_UNTIL(running,
                  concur_future_state(run) == CONCUR_RUNNING &&
                      concur_future_state(probe) == CONCUR_RUNNING,
                  TU_SAFETY);
    cr_assert(running);
    concur_future *queued = tu_submit(p, tu_task_noop, NULL, 0);
    double t0 = tu_now();
    cr_assert_eq(concur_pool_shutdown(p, CONCUR_SHUTDOWN_CANCEL, TU_SAFETY), 0);
    double el = tu_now() - t0;
    cr_assert_lt(el, TU_SANITIZED ? TU_LOOSE(1.0) : 1.0, "%.3f s to stop", el);
    tu_assert_int_result(probe, 7, "the first task saw the stop");
    tu_assert_int_result(run, 7, "the second task saw the stop");
    cr_assert_eq(concur_future_state(queued), CONCUR_CANCELLED);
    concur_future_release(probe);
    concur_future_release(run);
    concur_future_release(queued);
    concur_pool_destroy(p);
}

/* ---- parent death and fork safety ------------------------------------------------------ */

/* If the pool's process dies (SIGKILL: no destructor, no exit handler), its fork server
 * sees EOF on its socket and ends its workers; workers also die with the server. */
Test(procpool, parent_death_takes_the_server_and_workers_with_it)
{
#if TU_TSAN
    cr_skip_test("TSan cannot start threads in the child of a multithreaded fork, and the "
                 "pool process here is such a child");
#endif
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t child = fork();
    cr_assert_geq(child, 0);
    if (child == 0) {
        close(pfd[0]);
        concur_pool *p;
        concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES, .max_workers = 2};
        if (concur_pool_create(&p, &o))
            _exit(10);
        job j = {K_HANG, 0};
        concur_future *f;
        if (concur_pool_submit(p, task_job, &j, sizeof j, &f))
            _exit(11);
        /* Wait (bounded) until the hanging task runs in a worker process. */
        for (int i = 0; i < 5000; i++) {
            concur_pool_counts c;
            concur_pool_counts_get(p, &c);
            if (c.busy >= 1)
                break;
            tu_sleep(0.002);
        }
        pid_t srv[4];
        if (children_of(getpid(), (pid_t)gettid(), srv, 4) != 1)
            _exit(12);
        if (write(pfd[1], &srv[0], sizeof srv[0]) != (ssize_t)sizeof srv[0])
            _exit(13);
        for (;;)
            pause(); /* until killed */
    }
    close(pfd[1]);
    pid_t srv = 0;
    ssize_t got = read(pfd[0], &srv, sizeof srv);
    close(pfd[0]);
    cr_assert_eq(got, (ssize_t)sizeof srv, "the child reports its fork server");
    pid_t wk[8];
    int nw = children_of(srv, srv, wk, 8);
    cr_assert_geq(nw, 1, "the server runs the worker with the hanging task");
    cr_assert_eq(kill(child, SIGKILL), 0);
    int st;
    cr_assert_eq(waitpid(child, &st, 0), child);
    double t0 = concur_now();
    bool gone;
    TU_POLL_UNTIL(gone, process_dead(srv) && process_dead(wk[0]) && (nw < 2 || process_dead(wk[1])),
                  TU_SAFETY);
    double el = concur_now() - t0;
    cr_assert(gone, "fork server or worker outlived the pool's process");
    cr_assert_lt(el, TU_SANITIZED ? TU_LOOSE(2.0) : 2.0, "%.3f s", el);
}

struct fork_safety {
    _Atomic int failures;
    _Atomic int stop;
};

static void *pool_churn(void *arg)
{
    struct fork_safety *s = arg;
    for (int round = 0; round < 3; round++) {
        concur_pool *p;
        concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES, .max_workers = 2};
        if (concur_pool_create(&p, &o)) {
            atomic_fetch_add(&s->failures, 1);
            continue;
        }
        concur_future *fs[20];
        int n = 0;
        for (int i = 0; i < 20; i++) {
            job j = {K_OK, i};
            if (concur_pool_submit(p, task_job, &j, sizeof j, &fs[n]) == 0)
                n++;
            else
                atomic_fetch_add(&s->failures, 1);
        }
        for (int i = 0; i < n; i++) {
            const void *d;
            size_t len;
            int v = -1;
            if (concur_future_collect(fs[i], 60, &d, &len) == 0 && len == sizeof v)
                memcpy(&v, d, sizeof v);
            if (v != i * 3)
                atomic_fetch_add(&s->failures, 1);
            concur_future_release(fs[i]);
        }
        concur_pool_destroy(p);
    }
    return NULL;
}

/* Other threads allocating and freeing while pools are created (their fork servers forked). */
static void *allocator_churn(void *arg)
{
    struct fork_safety *s = arg;
    while (!atomic_load(&s->stop)) {
        void *b[64];
        for (int i = 0; i < 64; i++)
            b[i] = malloc((size_t)(16 + i * 37));
        for (int i = 0; i < 64; i++)
            free(b[i]);
    }
    return NULL;
}

/* A parent with 8 threads creating process pools and submitting at once, while other
 * threads allocate: every result is exact, every pool goes away cleanly. */
Test(procpool, eight_threads_create_pools_and_submit_concurrently)
{
#if TU_ASAN
    cr_skip_test("GCC 12's ASan allocator is not fork-safe while other threads allocate "
                 "(see docs/process_pool.md)");
#endif
    struct fork_safety s = {0};
    pthread_t churn[2], th[8];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&churn[i], NULL, allocator_churn, &s), 0);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, pool_churn, &s), 0);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(pthread_join(th[i], NULL), 0);
    atomic_store(&s.stop, 1);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_join(churn[i], NULL), 0);
    cr_assert_eq(atomic_load(&s.failures), 0);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no child process left");
}

/* ---- pipelining: several short tasks handed to a worker process at once ----------------- */

/* Warms @p's @n workers up with short tasks, so that the proxies hand tasks over ahead. */
static void warm_up(concur_pool *p, int n)
{
    for (int k = 0; k < 20; k++) {
        concur_future *fs[4];
        for (int i = 0; i < n; i++)
            fs[i] = submit_job(p, K_OK, i);
        for (int i = 0; i < n; i++) {
            tu_assert_int_result(fs[i], i * 3, "warm-up");
            concur_future_release(fs[i]);
        }
    }
}

Test(procpool, a_stream_of_short_tasks_survives_crashes_in_its_middle)
{
    concur_pool *p = proc_pool(1, "stream");
    warm_up(p, 1);
    enum { N = 400 };
    concur_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = submit_job(p, i == 100 ? K_SEGV : i == 250 ? K_EXIT3 : K_OK, i);
    for (int i = 0; i < N; i++) {
        if (i == 100 || i == 250)
            assert_crash(fs[i], i == 100 ? K_SEGV : K_EXIT3);
        else
            tu_assert_int_result(fs[i], i * 3, "a task around the crashes");
        concur_future_release(fs[i]);
    }
    int alive = 0, zombies = 0;
    bool ok;
    TU_POLL_UNTIL(ok, (count_workers(&alive, &zombies), alive == 1 && zombies == 0), TU_SAFETY);
    cr_assert(ok, "one worker process, no zombie (alive %d, zombies %d)", alive, zombies);
    concur_pool_destroy(p);
}

/* Input: a pointer to an int in memory shared with the test (mapped before the pool, so
 * every worker process has it). Waits until it is non-zero (a futex on shared memory),
 * returns 1. */
static int task_wait_word(concur_task *t, const void *in, size_t len)
{
    _Atomic int *w;
    if (len != sizeof w)
        return concur_task_fail(t, CONCUR_EINVAL, "len %zu", len);
    memcpy(&w, in, sizeof w);
    while (!atomic_load(w))
        (void)syscall(SYS_futex, w, FUTEX_WAIT, 0, NULL, NULL, 0); /* EAGAIN, EINTR: look */
    int v = 1;
    return concur_task_return(t, &v, sizeof v);
}

Test(procpool, cancel_kill_of_a_task_waiting_its_turn_in_a_worker)
{
    _Atomic int *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                             -1, 0);
    cr_assert_neq(word, MAP_FAILED);
    atomic_store(word, 0);
    concur_pool *p = proc_pool(1, "waiting");
    warm_up(p, 1);
    concur_future *gate = tu_submit(p, task_wait_word, &word, sizeof word);
    concur_future *victim = submit_job(p, K_OK, 7);
    concur_future *after = tu_submit(p, task_getpid, NULL, 0);
    bool running;
    TU_POLL_UNTIL(running, concur_future_state(gate) == CONCUR_RUNNING, TU_SAFETY);
    cr_assert(running);
    /* Queued in the pool or already handed to the worker process behind the gate task:
     * either way it is cancelled, and nothing else is disturbed. */
    cr_assert(concur_future_cancel_kill(victim));
    atomic_store(word, 1);
    cr_assert_geq(syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0), 0);
    tu_assert_int_result(gate, 1, "the task ahead of it completes");
    cr_assert_eq(concur_future_collect(victim, TU_SAFETY, NULL, NULL), CONCUR_ECANCELED);
    cr_assert_eq(concur_future_collect(after, TU_SAFETY, NULL, NULL), 0,
                 "the task behind it runs: %s", concur_future_error_message(after));
    concur_future *f = submit_job(p, K_OK, 3);
    tu_assert_int_result(f, 9, "the pool goes on");
    cr_assert_eq(concur_pool_check(p), 0);
    concur_future_release(f);
    concur_future_release(after);
    concur_future_release(victim);
    concur_future_release(gate);
    concur_pool_destroy(p);
    munmap((void *)word, 4096);
}

Test(procpool, task_timeout_counts_from_the_start_of_each_task)
{
    /* Three 250 ms tasks in a row on one worker, each with 0.6 s to run: together they take
     * longer than the timeout, each one alone does not. A hang after them times out. */
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES, .max_workers = 1,
                          .task_timeout = TU_SANITIZED ? 1.5 : 0.6};
    concur_pool *p = tu_pool_opts(&o);
    warm_up(p, 1);
    int ms = TU_SANITIZED ? 600 : 250;
    concur_future *fs[3];
    for (int i = 0; i < 3; i++)
        fs[i] = tu_submit(p, task_nap_ms, &ms, sizeof ms);
    concur_future *hang = submit_job(p, K_HANG, 0);
    concur_future *last = submit_job(p, K_OK, 4);
    for (int i = 0; i < 3; i++) {
        tu_assert_int_result(fs[i], ms * 3, "each task within its own timeout");
        concur_future_release(fs[i]);
    }
    cr_assert_eq(concur_future_collect(hang, TU_SAFETY, NULL, NULL), CONCUR_ETASKTIMEOUT);
    tu_assert_int_result(last, 12, "the task behind the hang runs in a new process");
    concur_future_release(hang);
    concur_future_release(last);
    concur_pool_destroy(p);
}

Test(procpool, long_tasks_do_not_wait_behind_each_other)
{
    /* After a stream of short tasks, two long ones on two workers run at the same time. */
    concur_pool *p = proc_pool(2, "long");
    warm_up(p, 2);
    int ms = 400;
    double t0 = tu_now();
    concur_future *a = tu_submit(p, task_nap_ms, &ms, sizeof ms);
    concur_future *b = tu_submit(p, task_nap_ms, &ms, sizeof ms);
    tu_assert_int_result(a, ms * 3, "a");
    tu_assert_int_result(b, ms * 3, "b");
    double el = tu_now() - t0;
    cr_assert_lt(el, 0.4 + (TU_SANITIZED ? 0.35 : 0.3), "side by side: %.3f s", el);
    concur_future_release(a);
    concur_future_release(b);
    concur_pool_destroy(p);
}

/* ---- concur_future_cancel of a running task reaches its process ------------------------ */

Test(procpool, cancel_of_a_running_task_is_seen_by_should_stop_in_its_process)
{
    concur_pool *p = proc_pool(2, "coop");
    concur_future *run = tu_submit(p, task_until_stop, NULL, 0);
    concur_future *other = tu_submit(p, task_until_stop, NULL, 0);
    bool running;
    TU_POLL_UNTIL(running,
                  concur_future_state(run) == CONCUR_RUNNING &&
                      concur_future_state(other) == CONCUR_RUNNING,
                  TU_SAFETY);
    cr_assert(running);
    double t0 = tu_now();
    cr_assert_not(concur_future_cancel(run), "running: not cancelled, only asked to stop");
    cr_assert(concur_future_cancel_requested(run));
    tu_assert_int_result(run, 7, "the task saw concur_task_should_stop() and returned");
    cr_assert_lt(tu_now() - t0, TU_SANITIZED ? 5.0 : 1.0, "promptly");
    cr_assert_eq(concur_future_state(other), CONCUR_RUNNING, "the other task goes on");
    cr_assert_not(concur_future_cancel(other));
    tu_assert_int_result(other, 7, "until it is cancelled too");
    /* The worker processes were not killed: the next tasks run in them. */
    concur_future *f = submit_job(p, K_OK, 2);
    tu_assert_int_result(f, 6, "the pool goes on");
    concur_future_release(f);
    concur_future_release(other);
    concur_future_release(run);
    concur_pool_destroy(p);
}

Test(procpool, cancel_of_a_task_waiting_its_turn_in_a_worker_stops_it_at_once)
{
    /* Short tasks first, so that the proxy hands over several at once; then a gate task, a
     * stopper behind it (handed over or still queued) cancelled while it waits, and one
     * more behind that. */
    _Atomic int *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                             -1, 0);
    cr_assert_neq(word, MAP_FAILED);
    atomic_store(word, 0);
    concur_pool *p = proc_pool(1, "coopq");
    warm_up(p, 1);
    concur_future *gate = tu_submit(p, task_wait_word, &word, sizeof word);
    concur_future *stopper = tu_submit(p, task_until_stop, NULL, 0);
    concur_future *after = submit_job(p, K_OK, 5);
    bool running;
    TU_POLL_UNTIL(running, concur_future_state(gate) == CONCUR_RUNNING, TU_SAFETY);
    cr_assert(running);
    bool cancelled = concur_future_cancel(stopper); /* true: it was still in the queue */
    atomic_store(word, 1);
    cr_assert_geq(syscall(SYS_futex, word, FUTEX_WAKE, 1, NULL, NULL, 0), 0);
    tu_assert_int_result(gate, 1, "the task ahead completes");
    if (cancelled)
        cr_assert_eq(concur_future_state(stopper), CONCUR_CANCELLED);
    else
        tu_assert_int_result(stopper, 7, "it started with concur_task_should_stop() true");
    tu_assert_int_result(after, 15, "the task behind it runs");
    concur_future_release(after);
    concur_future_release(stopper);
    concur_future_release(gate);
    concur_pool_destroy(p);
    munmap((void *)word, 4096);
}

/* ---- the caller's buffered output appears once, whatever the engine ------------------- */

static int task_exit0(concur_task *t, const void *in, size_t len)
{
    (void)t;
    (void)in;
    (void)len;
    exit(0); /* flushes this worker's stdio: it must hold none of the caller's output */
}

static int swarm_copy(concur_task *t, const void *in, size_t len)
{
    (void)t;
    (void)in;
    (void)len;
    return 0;
}

static int runner_fn_noop(concur_task *t, const char *key, int argc, const char *const *argv)
{
    (void)t;
    (void)key;
    (void)argc;
    (void)argv;
    return 0;
}

enum { ONCE_POOL, ONCE_SWARM, ONCE_RUNNER, ONCE_FORK };

/* The test binary re-executed with CONCUR_TEST_ONCE=<mode> and stdout on a file (a fresh,
 * single-threaded process: sanitizers do not follow a fork of a threaded one into new
 * threads): "x" stays in stdout's buffer, then the mode forks processes that end; the
 * process flushes its own "x" last. The file must hold one. Runs before Criterion's main. */
static void once_child(int mode)
{
    printf("x"); /* no newline: pending in the buffer (stdout is a file: fully buffered) */
    int rc = 0;
    if (mode == ONCE_POOL) {
        concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES, .max_workers = 2};
        concur_pool *p;
        rc = concur_pool_create(&p, &o);
        if (!rc) {
            concur_future *f[3];
            rc |= concur_pool_submit(p, task_exit0, NULL, 0, &f[0]);
            rc |= concur_pool_submit(p, swarm_copy, NULL, 0, &f[1]);
            rc |= concur_pool_submit(p, swarm_copy, NULL, 0, &f[2]);
            for (int i = 0; i < 3 && !rc; i++) {
                (void)concur_future_wait(f[i], 30);
                concur_future_release(f[i]);
            }
            concur_pool_destroy(p);
        }
    } else if (mode == ONCE_SWARM) {
        concur_pool_opts po = {.engine = CONCUR_ENGINE_PROCESSES};
        concur_swarm_opts so = {.pool = &po};
        concur_swarm *sw;
        rc = concur_swarm_start(&sw, 3, swarm_copy, NULL, 0, &so);
        if (!rc) {
            rc = concur_swarm_wait(sw, 30);
            concur_swarm_destroy(sw);
        }
    } else if (mode == ONCE_RUNNER) {
        concur_runner_opts ro = {.fn = runner_fn_noop, .max_workers = 2, .timeout = 30};
        ro.engine = CONCUR_ENGINE_PROCESSES;
        concur_cmd cmds[] = {{.key = "1", .arg = "a"}, {.key = "2", .arg = "b"}};
        concur_runner *r = NULL;
        rc = concur_run_batch(cmds, 2, &ro, &r);
        concur_runner_destroy(r);
    } else {
        concur_future *f;
        rc = concur_fork_call(&f, task_exit0, NULL, 0, NULL);
        if (!rc) {
            (void)concur_future_wait(f, 30);
            concur_future_release(f);
        }
    }
    (void)fflush(stdout);
    _exit(rc ? 91 : 0);
}

__attribute__((constructor)) static void once_entry(void)
{
    const char *m = getenv("CONCUR_TEST_ONCE");
    if (m)
        once_child(atoi(m));
}

static void check_once(int mode)
{
    char path[] = "/tmp/concur-once-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    char exe[4096];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    cr_assert_gt(el, 0);
    exe[el] = '\0';
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char env[32];
        snprintf(env, sizeof env, "%d", mode);
        if (dup2(fd, STDOUT_FILENO) < 0 || setenv("CONCUR_TEST_ONCE", env, 1) != 0)
            _exit(90);
        execl(exe, exe, (char *)NULL);
        _exit(92);
    }
    (void)close(fd);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
    char buf[64] = {0};
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    unlink(path);
    cr_assert_eq(n, 1, "mode %d: the caller's pending output came out %zu times: \"%s\"", mode,
                 n, buf);
    cr_assert_str_eq(buf, "x");
}

Test(procpool, pending_stdout_printed_once_by_process_pool)
{
    check_once(ONCE_POOL);
}

Test(procpool, pending_stdout_printed_once_by_swarm_on_processes)
{
    check_once(ONCE_SWARM);
}

Test(procpool, pending_stdout_printed_once_by_runner_functions_on_processes)
{
    check_once(ONCE_RUNNER);
}

Test(procpool, pending_stdout_printed_once_by_fork_calls)
{
    check_once(ONCE_FORK);
}

/* ---- what a task leaves running ------------------------------------------------------- */

/* A pool of one worker process running @fn on a new FIFO (its path in @fifo, 128 bytes):
 * returns the pid of the process the task started, read from the FIFO. */
static pid_t start_sleeper(concur_fn fn, char *fifo, concur_pool **p, concur_future **f)
{
    tu_fifo_make(fifo, 128);
    *p = proc_pool(1, "sleeper");
    *f = tu_submit(*p, fn, fifo, strlen(fifo));
    return tu_fifo_read_pid(fifo, TU_SAFETY);
}

/* The commands of a task whose worker is killed go with it (the fork server, subreaper of
 * the workers' trees, kills what a dead worker leaves), instead of running on re-parented
 * to init. */
Test(procpool, a_killed_task_leaves_no_command_behind)
{
    char fifo[128];
    concur_pool *p;
    concur_future *f;
    pid_t pid = start_sleeper(tu_task_run_sleeper, fifo, &p, &f);
    cr_assert(concur_future_cancel_kill(f));
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    cr_assert_eq(concur_future_error(f), CONCUR_ECANCELED);
    cr_assert(tu_pid_ends_within(pid, TU_SAFETY), "the command outlived its worker");
    concur_future_release(f);
    concur_pool_destroy(p);
    tu_fifo_remove(fifo);
}

/* A process a task started and left running (a daemon) lives while its worker does, and
 * ends with it: here at the pool's end. */
Test(procpool, what_a_task_leaves_running_ends_with_its_worker)
{
    char fifo[128];
    concur_pool *p;
    concur_future *f;
    pid_t pid = start_sleeper(tu_task_leave_sleeper, fifo, &p, &f);
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    cr_assert_eq(concur_future_error(f), 0, "%s", concur_future_error_message(f));
    cr_assert_eq(kill(pid, 0), 0, "it runs while its worker lives");
    concur_future_release(f);
    concur_pool_destroy(p);
    cr_assert(tu_pid_ends_within(pid, TU_SAFETY), "it outlived the pool");
    tu_fifo_remove(fifo);
}
