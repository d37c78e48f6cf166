/*
 * test_process_pool.c - the process engine (CONCUR_ENGINE_PROCESSES): exact results across
 * the process boundary (small and 10 MB), the task's own errors (remote), crashes of every
 * kind (segfault, abort, exit, _exit, SIGKILL) failing only their own future with the right
 * cause and a replaced worker, task timeouts killing the worker, initializer / finalizer
 * failures, recycling, refusal of functions outside the loaded code, the map family, test(),
 * cleanliness after destroy (no child processes, no fds), fault injection at scale, and the
 * error detail of futures of other engines.
 *
 * Worker processes are observed from the outside: the fork server is a child of the test
 * process (of the thread that created the pool), the workers are the server's children;
 * both are listed through /proc/<pid>/task/<tid>/children.
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
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

/* Asserts that @f is DONE with the int @want. */
static void assert_int_result(concur_future *f, int want, const char *what)
{
    const void *d = NULL;
    size_t len = 0;
    int rc = concur_future_collect(f, TU_SAFETY, &d, &len);
    cr_assert_eq(rc, 0, "%s: rc %d (%s)", what, rc,
                 rc ? concur_future_error_message(f) : "");
    cr_assert_eq(len, sizeof(int), "%s", what);
    int v;
    memcpy(&v, d, sizeof v);
    cr_assert_eq(v, want, "%s: %d != %d", what, v, want);
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
        assert_int_result(fs[i], i * i + 1, "square");
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
        assert_int_result(before, 30, "before the crash");
        for (int i = 0; i < 4; i++) {
            assert_int_result(after[i], i * 3, "after the crash");
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
        assert_int_result(fs[i], (i + 1) * 3, "after the crash");
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
    assert_int_result(warm, 3, "warm-up");
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
    assert_int_result(next, 21, "the pool goes on");
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
    assert_int_result(a, 42, "initializer ran in the worker");
    concur_future *bad = submit_job(p, K_ABORT, 0);
    assert_crash(bad, K_ABORT);
    concur_future *b = tu_submit(p, task_init_value, NULL, 0);
    assert_int_result(b, 42, "and again in its replacement");
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
    assert_int_result(f, 6, "before the finalizer");
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
    assert_int_result(f, 15, "a later submit starts a worker again");
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
    assert_int_result(f, 3, "warm-up");
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
    cr_assert_eq(concur_pool_submit(p, bad, NULL, 0, &f), CONCUR_EINVAL);
    cr_assert_null(f);
    concur_input in = {NULL, 0};
    cr_assert_eq(concur_pool_submit_batch(p, bad, &in, 1, NULL), CONCUR_EINVAL);
    concur_fn stack = (concur_fn)(uintptr_t)&in;
    cr_assert_eq(concur_pool_submit(p, stack, NULL, 0, NULL), CONCUR_EINVAL);
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
            assert_int_result(fs[i], i * 3, "a normal task");
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
