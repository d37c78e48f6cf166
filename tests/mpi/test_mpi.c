/*
 * test_mpi - the MPI engine, run as `mpirun -n 3 test_mpi PLUGIN` (tests/mpi/run.sh) and as
 * a plain `test_mpi PLUGIN` (one process: MPI pools run locally). Rank 0 runs every case
 * and prints "ok NAME" or "not ok NAME: why"; the exit status is the number of failures.
 * Every other rank serves inside concur_mpi_init and exits when rank 0 is done.
 */
#include <concur.h>

#include <dlfcn.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            printf("not ok %s: %s:%d: ", test_name, __FILE__, __LINE__);                   \
            printf(__VA_ARGS__);                                                           \
            printf("\n");                                                                  \
            failures++;                                                                    \
            return;                                                                        \
        }                                                                                  \
    } while (0)

static const char *test_name;

/* ---- task functions (in this executable: every rank has them) ---- */

static int twice_plus_one(concur_task *t, const void *in, size_t len)
{
    int x;
    if (len != sizeof(x))
        return concur_task_fail(t, CONCUR_EINVAL, "bad input");
    memcpy(&x, in, sizeof(x));
    x = 2 * x + 1;
    return concur_task_return(t, &x, sizeof(x));
}

/* Runs until cancelled (at most 60 s). */
static int hold(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    for (int i = 0; i < 60000 && !concur_task_should_stop(t); i++)
        usleep(1000);
    return 0;
}

static int fails_own(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    return concur_task_fail(t, -42, "own failure on rank %d", concur_mpi_rank());
}

/* The rank and pid that ran it. */
static int where(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    usleep(2000);
    int w[2] = {concur_mpi_rank(), (int)getpid()};
    return concur_task_return(t, w, sizeof(w));
}

/* kind 0: result; 1: SIGSEGV; 2: exit(3); 3: hang until stopped or killed */
static int mixed(concur_task *t, const void *in, size_t len)
{
    int v[2];
    if (len != sizeof(v))
        return CONCUR_EINVAL;
    memcpy(v, in, sizeof(v));
    if (v[1] == 1)
        raise(SIGSEGV);
    if (v[1] == 2)
        exit(3);
    if (v[1] == 3)
        for (;;)
            pause();
    return concur_task_return(t, &v[0], sizeof(v[0]));
}

static int g_init_value; /* set by the initializer in each worker */
static const int g_init_arg = 1234;

static int init_hook(concur_task *t, void *arg)
{
    (void)t;
    g_init_value = *(const int *)arg;
    return 0;
}

static int failing_init(concur_task *t, void *arg)
{
    (void)arg;
    return concur_task_fail(t, -9, "no database on rank %d", concur_mpi_rank());
}

static int read_init(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    return concur_task_return(t, &g_init_value, sizeof(g_init_value));
}

static int square(concur_task *t, const void *in, void *out)
{
    (void)t;
    int x;
    memcpy(&x, in, sizeof(x));
    x *= x;
    memcpy(out, &x, sizeof(x));
    return 0;
}

/* ---- cases ---- */

static concur_pool *mpi_pool(int max, double task_timeout, bool in_process)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_MPI,
                          .max_workers = max,
                          .task_timeout = task_timeout,
                          .mpi_in_process = in_process};
    concur_pool *p = NULL;
    int rc = concur_pool_create(&p, &o);
    if (rc) {
        printf("not ok %s: pool creation: %s\n", test_name, concur_strerror(rc));
        failures++;
    }
    return p;
}

/* A stream: every task submitted, then every one awaited (windows fill, drain, refill). */
static void results_come_back(bool in_process)
{
    enum { N = 20000 };
    concur_pool *p = mpi_pool(0, 0, in_process);
    if (!p)
        return;
    static concur_future *fs[N];
    for (int i = 0; i < N; i++) {
        int rc = concur_pool_submit(p, twice_plus_one, &i, sizeof(i), &fs[i]);
        CHECK(rc == 0, "submit %d: %s", i, concur_strerror(rc));
    }
    for (int i = 0; i < N; i++) {
        int y = 0;
        int rc = concur_future_get(fs[i], 60, &y, sizeof(y));
        CHECK(rc == 0 && y == 2 * i + 1, "task %d: rc %d y %d", i, rc, y);
        concur_future_release(fs[i]);
    }
    concur_pool_destroy(p);
    printf("ok %s\n", test_name);
}

/* Bursts of every size up to past a slot's window, each awaited before the next: every
 * way a window fills and drains (a task lost there never completes: the wait says so). */
static void bursts_lose_nothing(void)
{
    concur_pool *p = mpi_pool(0, 0, false);
    if (!p)
        return;
    concur_future *fs[80];
    for (int round = 0; round < 300; round++) {
        int k = 1 + round % 80;
        for (int i = 0; i < k; i++)
            CHECK(concur_pool_submit(p, twice_plus_one, &i, sizeof(i), &fs[i]) == 0, "submit");
        for (int i = 0; i < k; i++) {
            int y = 0;
            int rc = concur_future_get(fs[i], 30, &y, sizeof(y));
            CHECK(rc == 0 && y == 2 * i + 1, "round %d task %d: %s", round, i,
                  concur_strerror(rc));
            concur_future_release(fs[i]);
        }
    }
    concur_pool_destroy(p);
    printf("ok %s\n", test_name);
}

/* Submit, wait, submit: each task finds the slot of the one before free, so the pool
 * keeps one slot however many it may start (a slot counted busy until after its task
 * completed would start another for the next submit). */
static void a_sequence_keeps_one_slot(bool in_process)
{
    concur_pool *p = mpi_pool(4, 0, in_process);
    if (!p)
        return;
    for (int i = 0; i < 200; i++) {
        concur_future *f = NULL;
        int y = 0, rc = concur_pool_submit(p, twice_plus_one, &i, sizeof(i), &f);
        CHECK(rc == 0, "submit %d: %s", i, concur_strerror(rc));
        rc = concur_future_get(f, 30, &y, sizeof(y));
        concur_future_release(f);
        CHECK(rc == 0 && y == 2 * i + 1, "task %d: rc %d y %d", i, rc, y);
        concur_pool_counts c;
        concur_pool_counts_get(p, &c);
        CHECK(c.workers == 1, "after task %d: %zu slots", i, c.workers);
    }
    concur_pool_destroy(p);
    printf("ok %s\n", test_name);
}

static void tasks_run_on_the_other_ranks(void)
{
    concur_pool *p = mpi_pool(0, 0, false);
    if (!p)
        return;
    int size = concur_mpi_size();
    bool seen[64] = {0};
    /* Tasks that take a while, all at once: every slot starts, one per rank at least. */
    concur_future *fs[200];
    for (int i = 0; i < 200; i++)
        CHECK(concur_pool_submit(p, where, NULL, 0, &fs[i]) == 0, "submit");
    for (int i = 0; i < 200; i++) {
        int w[2] = {-1, -1};
        CHECK(concur_future_get(fs[i], CONCUR_FOREVER, w, sizeof(w)) == 0, "get");
        concur_future_release(fs[i]);
        CHECK(w[0] >= 0 && w[0] < size && w[0] < 64, "rank %d", w[0]);
        CHECK(size == 1 || (w[0] != 0 && w[1] != (int)getpid()), "ran on rank %d", w[0]);
        seen[w[0]] = true;
    }
    int n = concur_pool_max_workers(p);
    CHECK(n >= size - 1, "max_workers %d for %d ranks", n, size);
    for (int k = 1; k < size && k < 64; k++)
        CHECK(seen[k], "rank %d ran nothing of 200 tasks", k);
    concur_pool_destroy(p);
    printf("ok %s (max_workers %d)\n", test_name, n);
}

static void own_errors_are_remote(bool in_process)
{
    concur_pool *p = mpi_pool(2, 0, in_process);
    if (!p)
        return;
    concur_future *f;
    CHECK(concur_pool_submit(p, fails_own, NULL, 0, &f) == 0, "submit");
    CHECK(concur_future_wait(f, CONCUR_FOREVER) == 0, "wait");
    concur_error_info info;
    CHECK(concur_future_error_info(f, &info) == 0, "error info");
    CHECK(info.code == -42, "code %d", info.code);
    CHECK(info.message && strstr(info.message, "own failure on rank"), "message %s",
          info.message ? info.message : "(null)");
    /* one process with mpi_in_process: the task ran in this process */
    CHECK(info.remote || (in_process && concur_mpi_size() == 1), "not marked remote");
    concur_future_release(f);
    concur_pool_destroy(p);
    printf("ok %s\n", test_name);
}

static void crashes_fail_only_their_task(void)
{
    concur_pool *p = mpi_pool(2, 0, false);
    if (!p)
        return;
    int v[2] = {7, 1};
    concur_future *crash, *ex, *ok;
    CHECK(concur_pool_submit(p, mixed, v, sizeof(v), &crash) == 0, "submit");
    v[1] = 2;
    CHECK(concur_pool_submit(p, mixed, v, sizeof(v), &ex) == 0, "submit");
    v[1] = 0;
    CHECK(concur_pool_submit(p, mixed, v, sizeof(v), &ok) == 0, "submit");
    concur_error_info info;
    CHECK(concur_future_wait(crash, CONCUR_FOREVER) == 0, "wait");
    CHECK(concur_future_error_info(crash, &info) == 0 && info.code == CONCUR_ECRASHED &&
              info.signal == SIGSEGV && info.backtrace && info.backtrace[0],
          "crash: code %d signal %d backtrace %s", info.code, info.signal,
          info.backtrace ? "yes" : "no");
    CHECK(concur_future_wait(ex, CONCUR_FOREVER) == 0, "wait");
    CHECK(concur_future_error_info(ex, &info) == 0 && info.code == CONCUR_ECRASHED &&
              info.exit_status == 3,
          "exit: code %d status %d", info.code, info.exit_status);
    int y = 0;
    CHECK(concur_future_get(ok, CONCUR_FOREVER, &y, sizeof(y)) == 0 && y == 7, "ok: %d", y);
    concur_future_release(crash);
    concur_future_release(ex);
    concur_future_release(ok);
    concur_pool_destroy(p);
    printf("ok %s\n", test_name);
}

static void timeouts_and_kills(void)
{
    concur_pool *p = mpi_pool(2, 0.3, false);
    if (!p)
        return;
    int v[2] = {0, 3};
    concur_future *hang;
    CHECK(concur_pool_submit(p, mixed, v, sizeof(v), &hang) == 0, "submit");
    CHECK(concur_future_wait(hang, 30) == 0, "the hanging task did not end");
    CHECK(concur_future_error(hang) == CONCUR_ETASKTIMEOUT, "code %d",
          concur_future_error(hang));
    concur_future_release(hang);
    concur_pool_destroy(p);

    p = mpi_pool(1, 0, false);
    if (!p)
        return;
    CHECK(concur_pool_submit(p, mixed, v, sizeof(v), &hang) == 0, "submit");
    bool killed = false;
    for (int i = 0; i < 30000 && !killed; i++) { /* up to 30 s: slow under sanitizers */
        if (concur_future_state(hang) == CONCUR_RUNNING)
            killed = concur_future_cancel_kill(hang);
        if (!killed)
            usleep(1000);
    }
    CHECK(killed, "cancel_kill never took");
    CHECK(concur_future_wait(hang, 30) == 0, "the killed task did not end");
    CHECK(concur_future_error(hang) == CONCUR_ECANCELED, "code %d", concur_future_error(hang));
    concur_future_release(hang);
    v[1] = 0;
    v[0] = 5;
    int y = 0;
    concur_future *f;
    CHECK(concur_pool_submit(p, mixed, v, sizeof(v), &f) == 0, "submit");
    CHECK(concur_future_get(f, 30, &y, sizeof(y)) == 0 && y == 5, "after the kill: %d", y);
    concur_future_release(f);
    concur_pool_destroy(p);
    printf("ok %s\n", test_name);
}

static void crash_mix_loses_nothing(void)
{
    /* The timeout counts from each task's start in its worker process, which under a
     * sanitizer on a loaded machine may be a fresh one still starting: 0.5 s leaves the
     * tiny tasks room, and the 100 hanging ones cost 100 x 0.5 s over the slots. */
    enum { N = 10000 };
    concur_pool *p = mpi_pool(0, 0.5, false);
    if (!p)
        return;
    static concur_future *fs[N];
    for (int i = 0; i < N; i++) {
        int v[2] = {i, i % 100 == 7 ? 3 : i % 10 == 3 ? 1 : 0};
        CHECK(concur_pool_submit(p, mixed, v, sizeof(v), &fs[i]) == 0, "submit %d", i);
    }
    int ok = 0, crashed = 0, timed_out = 0;
    for (int i = 0; i < N; i++) {
        int y = -1;
        int rc = concur_future_get(fs[i], 120, &y, sizeof(y));
        int kind = i % 100 == 7 ? 3 : i % 10 == 3 ? 1 : 0;
        if (kind == 0) {
            CHECK(rc == 0 && y == i, "task %d: rc %d (%s) y %d", i, rc,
                  concur_future_error_message(fs[i]), y);
            ok++;
        } else if (kind == 1) {
            CHECK(rc == CONCUR_ECRASHED, "task %d: rc %d", i, rc);
            crashed++;
        } else {
            CHECK(rc == CONCUR_ETASKTIMEOUT, "task %d: rc %d", i, rc);
            timed_out++;
        }
        concur_future_release(fs[i]);
    }
    concur_pool_destroy(p);
    printf("ok %s (%d results, %d crashes, %d timeouts)\n", test_name, ok, crashed, timed_out);
}

static void hooks_and_static_args_travel(void)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_MPI,
                          .max_workers = 2,
                          .initializer = init_hook,
                          .init_arg = (void *)&g_init_arg};
    concur_pool *p;
    int rc = concur_pool_create(&p, &o);
    CHECK(rc == 0, "create: %s", concur_strerror(rc));
    concur_future *f;
    int y = 0;
    CHECK(concur_pool_submit(p, read_init, NULL, 0, &f) == 0, "submit");
    CHECK(concur_future_get(f, 30, &y, sizeof(y)) == 0 && y == 1234, "value %d", y);
    concur_future_release(f);
    concur_pool_destroy(p);

    /* An initializer that fails on the ranks breaks the pool. */
    concur_pool_opts bad = {.engine = CONCUR_ENGINE_MPI, .max_workers = 1,
                            .initializer = failing_init};
    rc = concur_pool_create(&p, &bad);
    CHECK(rc == 0, "create: %s", concur_strerror(rc));
    CHECK(concur_pool_submit(p, read_init, NULL, 0, &f) == 0, "submit");
    CHECK(concur_future_wait(f, 30) == 0, "wait");
    rc = concur_future_error(f);
    concur_future_release(f);
    bool broken = concur_pool_is_broken(p);
    const char *why = concur_pool_error_message(p);
    /* on ranks the task gets the pool's error; a local process pool cancels it */
    CHECK(rc == CONCUR_EINITIALIZER || (concur_mpi_size() == 1 && rc == CONCUR_ECANCELED),
          "task: %d", rc);
    CHECK(broken && why && strstr(why, "no database"), "pool broken %d: %s", broken,
          why ? why : "(null)");
    concur_pool_destroy(p);

    int on_stack = 5;
    o.init_arg = &on_stack;
    rc = concur_pool_create(&p, &o);
    CHECK(concur_mpi_size() == 1 ? rc == 0 : rc == CONCUR_EINVAL,
          "a stack pointer as init_arg: %d", rc);
    if (rc == 0)
        concur_pool_destroy(p);
    printf("ok %s\n", test_name);
}

static void unknown_function_fails_its_future(const char *plugin)
{
    if (concur_mpi_size() == 1) {
        printf("ok %s # skip: one rank\n", test_name);
        return;
    }
    void *h = dlopen(plugin, RTLD_NOW | RTLD_LOCAL);
    CHECK(h, "dlopen %s: %s", plugin, dlerror());
    concur_fn fn = (concur_fn)(uintptr_t)dlsym(h, "mpi_plugin_task");
    CHECK(fn, "dlsym");
    concur_pool *p = mpi_pool(2, 0, false);
    if (!p)
        return;
    concur_future *f;
    CHECK(concur_pool_submit(p, fn, "x", 1, &f) == 0, "submit");
    CHECK(concur_future_wait(f, 30) == 0, "wait");
    CHECK(concur_future_error(f) == CONCUR_ENOTLOADED, "code %d", concur_future_error(f));
    concur_future_release(f);
    int x = 1, y = 0;
    CHECK(concur_pool_submit(p, twice_plus_one, &x, sizeof(x), &f) == 0, "submit");
    CHECK(concur_future_get(f, 30, &y, sizeof(y)) == 0 && y == 3, "after: %d", y);
    concur_future_release(f);
    concur_pool_destroy(p);
    dlclose(h);
    printf("ok %s\n", test_name);
}

static void map_runs_across_ranks(void)
{
    enum { N = 100000 };
    concur_pool *p = mpi_pool(0, 0, false);
    if (!p)
        return;
    static int in[N], out[N];
    for (int i = 0; i < N; i++)
        in[i] = i % 1000;
    concur_map_opts mo = CONCUR_MAP_OPTS_INIT;
    mo.in_size = mo.out_size = sizeof(int);
    mo.chunk_size = 5000;
    size_t bad = 0;
    int rc = concur_map(p, square, &mo, in, N, out, &bad);
    concur_pool_destroy(p);
    CHECK(rc == 0, "map: %s (item %zu)", concur_strerror(rc), bad);
    for (int i = 0; i < N; i++)
        CHECK(out[i] == (i % 1000) * (i % 1000), "item %d: %d", i, out[i]);
    printf("ok %s\n", test_name);
}

/* A swarm copy: index 1 fails with its own error, the others succeed. */
static int swarm_copy(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    if (concur_swarm_index(t) == 1)
        return concur_task_fail(t, -7, "copy 1 fails on rank %d", concur_mpi_rank());
    return 0;
}

static void swarms_run_on_ranks(void)
{
    concur_pool_opts po = {.engine = CONCUR_ENGINE_MPI};
    concur_swarm_opts so = {.mode = CONCUR_SWARM_COLLECT, .pool = &po};
    concur_swarm *sw;
    int rc = concur_swarm_start(&sw, 4, swarm_copy, NULL, 0, &so);
    CHECK(rc == 0, "start: %s", concur_strerror(rc));
    rc = concur_swarm_wait(sw, 60);
    concur_swarm_err e = {0};
    size_t n = concur_swarm_errors(sw, 0, &e);
    concur_swarm_destroy(sw);
    CHECK(rc == CONCUR_ETASK, "wait: %d", rc);
    CHECK(n == 1 && e.index == 1 && e.code == -7, "errors %zu: copy %d code %d", n, e.index,
          e.code);
    printf("ok %s\n", test_name);
}

/* A runner function task: answers "key:arg0,arg1" and exits with status argc. */
static int run_fn(concur_task *t, const char *key, int argc, const char *const *argv)
{
    char out[128];
    int n = snprintf(out, sizeof(out), "%s:%s@%d", key ? key : "-", argc ? argv[0] : "",
                     concur_mpi_rank() > 0);
    int rc = concur_task_return(t, out, (size_t)n);
    return rc ? rc : argc;
}

static void runner_functions_run_on_ranks(void)
{
    concur_pool *p = mpi_pool(0, 0, false);
    if (!p)
        return;
    const char *a1[] = {"x", NULL}, *a2[] = {"y", "z", NULL};
    concur_cmd cmds[2] = {{.argv = a1, .key = "one", .fn = run_fn},
                          {.argv = a2, .key = "two", .fn = run_fn}};
    concur_runner_opts ro = {.pool = p};
    concur_runner *r = NULL;
    int rc = concur_run_batch(cmds, 2, &ro, &r);
    bool ok = rc == 0 && concur_runner_count(r) == 2;
    char got[2][64] = {"", ""};
    int status[2] = {-1, -1};
    for (size_t i = 0; ok && i < 2; i++) {
        const concur_result *res = concur_runner_result(r, i);
        size_t k = res->key && !strcmp(res->key, "two");
        snprintf(got[k], sizeof(got[k]), "%.*s", (int)res->answer_len,
                 res->answer ? (const char *)res->answer : "");
        status[k] = res->returncode;
    }
    concur_runner_destroy(r);
    concur_pool_destroy(p);
    CHECK(ok, "run_batch: %s", concur_strerror(rc));
    char want0[32], want1[32];
    snprintf(want0, sizeof(want0), "one:x@%d", concur_mpi_size() > 1);
    snprintf(want1, sizeof(want1), "two:y@%d", concur_mpi_size() > 1);
    CHECK(!strcmp(got[0], want0) && status[0] == 1, "one: '%s' status %d", got[0], status[0]);
    CHECK(!strcmp(got[1], want1) && status[1] == 2, "two: '%s' status %d", got[1], status[1]);
    printf("ok %s\n", test_name);
}

/* A task submitted while a long one runs starts another slot at once: a slot waiting for
 * its only task in flight is busy, not free (it once counted itself free from the moment
 * it sent its last task, so the next task waited for the long one to end). */
static void a_long_task_does_not_hold_up_the_next(void)
{
    concur_pool *p = mpi_pool(2, 0, false);
    if (!p)
        return;
    concur_future *a, *b;
    int x = 3, y = 0;
    CHECK(concur_pool_submit(p, hold, NULL, 0, &a) == 0, "submit the long task");
    for (int i = 0; i < 10000 && concur_future_state(a) != CONCUR_RUNNING; i++)
        usleep(1000);
    CHECK(concur_future_state(a) == CONCUR_RUNNING, "the long task never ran");
    usleep(200000); /* its slot reaches its wait: where it counted itself free */
    CHECK(concur_pool_submit(p, twice_plus_one, &x, sizeof(x), &b) == 0, "submit");
    int rc = concur_future_get(b, 20, &y, sizeof(y));
    bool a_running = concur_future_state(a) == CONCUR_RUNNING;
    concur_future_release(b);
    concur_future_cancel(a);
    (void)concur_future_wait(a, CONCUR_FOREVER);
    concur_future_release(a);
    concur_pool_destroy(p);
    CHECK(rc == 0 && y == 7, "the second task: %s (y %d)", concur_strerror(rc), y);
    CHECK(a_running, "the long task ended before the second one");
    printf("ok %s\n", test_name);
}

#define RUN(call)                                                                          \
    do {                                                                                   \
        test_name = #call;                                                                 \
        call;                                                                              \
        fflush(stdout);                                                                    \
    } while (0)

/* `test_mpi PLUGIN --own-mpi`: the program starts MPI itself before concur_mpi_init and
 * ends it after concur_mpi_finalize; one case runs. */
static int own_mpi(int argc, char **argv)
{
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        printf("not ok MPI_Init_thread\n");
        return 1;
    }
    int rc = concur_mpi_init(&argc, &argv);
    if (rc) {
        printf("not ok concur_mpi_init after the program's MPI_Init_thread: %s\n",
               concur_strerror(rc));
        return 1;
    }
    RUN(tasks_run_on_the_other_ranks());
    rc = concur_mpi_finalize();
    if (rc) {
        printf("not ok concur_mpi_finalize: %s\n", concur_strerror(rc));
        failures++;
    }
    int finalized = 1;
    MPI_Finalized(&finalized);
    if (finalized) {
        printf("not ok concur_mpi_finalize ended the program's MPI\n");
        failures++;
    }
    if (MPI_Finalize() != MPI_SUCCESS) {
        printf("not ok MPI_Finalize\n");
        failures++;
    }
    printf("# %d failed\n", failures);
    return failures ? 1 : 0;
}

/* `test_mpi PLUGIN --leave-open`: a task runs, then main returns with the pool open and
 * MPI not finalized: the exit handlers shut the pool down and send the ranks home (a rank
 * left waiting would hang mpirun; run.sh runs this under a time limit). */
static int leave_open(int argc, char **argv)
{
    if (concur_mpi_init(&argc, &argv) != 0)
        return 1;
    concur_pool *p = mpi_pool(0, 0, false);
    concur_future *f;
    int x = 20, y = 0;
    if (!p || concur_pool_submit(p, twice_plus_one, &x, sizeof(x), &f) != 0)
        return 1;
    int rc = concur_future_get(f, 30, &y, sizeof(y));
    concur_future_release(f);
    printf("%s leave_open (%d)\n", rc == 0 && y == 41 ? "ok" : "not ok", y);
    return rc == 0 && y == 41 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[2], "--own-mpi"))
        return own_mpi(argc, argv);
    if (argc > 2 && !strcmp(argv[2], "--leave-open"))
        return leave_open(argc, argv);
    int rc = concur_mpi_init(&argc, &argv);
    if (rc) {
        printf("not ok concur_mpi_init: %s\n", concur_strerror(rc));
        return 1;
    }
    const char *plugin = argc > 1 ? argv[1] : "./libmpi_plugin.so";
    printf("# %d ranks\n", concur_mpi_size());
    RUN(results_come_back(false));
    RUN(results_come_back(true));
    RUN(tasks_run_on_the_other_ranks());
    RUN(a_sequence_keeps_one_slot(false));
    RUN(a_sequence_keeps_one_slot(true));
    RUN(a_long_task_does_not_hold_up_the_next());
    RUN(bursts_lose_nothing());
    RUN(own_errors_are_remote(false));
    RUN(own_errors_are_remote(true));
    RUN(crashes_fail_only_their_task());
    RUN(timeouts_and_kills());
    RUN(hooks_and_static_args_travel());
    RUN(unknown_function_fails_its_future(plugin));
    RUN(map_runs_across_ranks());
    RUN(swarms_run_on_ranks());
    RUN(runner_functions_run_on_ranks());
    RUN(crash_mix_loses_nothing());
    rc = concur_mpi_finalize();
    if (rc) {
        printf("not ok concur_mpi_finalize: %s\n", concur_strerror(rc));
        failures++;
    }
    printf("# %d failed\n", failures);
    return failures ? 1 : 0;
}
