/*
 * test_runner_fn.c - function tasks in the runner (SPEC A.2-4, 15-25 for functions):
 * pyconcurrent's own suite (sleeps 1/4/2 with timeout 10, sleeps 1/10/2 with timeout 5) on
 * the thread engine and on the process engine, answers as exact bytes, unsuccessful returns,
 * errors (concur_task_fail), crashes that fail one record, fresh arguments and an untouched
 * prefix, input order, duplicate keys, empty lists, worker limits, print_results, timeouts
 * on both engines, stops, retries, a caller's pool, and the one-line switch of engine.
 *
 * Functions sleep only as the workload whose timing is the point; the ordering test uses
 * gates opened from on_done.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

TestSuite(runfn, .timeout = TU_TIMEOUT, .fini = tu_fini);

static const concur_engine engines[] = {CONCUR_ENGINE_THREADS, CONCUR_ENGINE_PROCESSES};
static const char *const engine_names[] = {"threads", "processes"};

/* ---- functions ------------------------------------------------------------------------ */

/* Sleeps @secs in 10 ms slices and returns false as soon as the task should stop. A thread
 * cannot be killed: slices are how a thread whose task timed out sees it and ends, so that
 * the run (which waits for it) can end. On the process engine the worker is killed. A
 * coroutine's sleep suspends only it (elsewhere concur_co_sleep is nanosleep), and returns
 * an error as soon as it is interrupted. */
static bool nap_slices(concur_task *t, double secs)
{
    double end = tu_now() + secs;
    for (double now = tu_now(); now < end; now = tu_now()) {
        if (concur_task_should_stop(t) ||
            concur_co_sleep(end - now < 0.01 ? end - now : 0.01) != 0)
            return false;
    }
    return true;
}

/* pyconcurrent's test_func: sleeps args[-1] seconds and answers with what it was given,
 * as the Python dictionary would print. */
static int test_func(concur_task *t, const char *key, int argc, const char *const *argv)
{
    if (!nap_slices(t, argc ? atof(argv[argc - 1]) : 0))
        return concur_task_fail(t, CONCUR_ECANCELED, "stopped");
    char buf[512];
    int n = snprintf(buf, sizeof buf, "{'key': %s, 'args': [", key ? key : "None");
    for (int i = 0; i < argc; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "%s'%s'", i ? ", " : "", argv[i]);
    n += snprintf(buf + n, sizeof buf - (size_t)n,
                  "], 'success': True, 'result': 'test_func done'}");
    return concur_task_return(t, buf, (size_t)n);
}

/* The arg says what to do: "ok", "nul" (answer with NUL bytes), "mid" (12 bytes: the status
 * the runner appends no longer fits inline), "big" (an 8 MiB answer),
 * "none" (no answer), "unsuccessful" (returns 3 with an answer), "fail" (concur_task_fail),
 * "segv", "abort", "exit3", "empty" (an empty answer). */
enum { BIG = 8 << 20 };

static int behave(concur_task *t, const char *key, int argc, const char *const *argv)
{
    const char *what = argc ? argv[argc - 1] : "";
    if (!strcmp(what, "nul"))
        return concur_task_return(t, "a\0b\377\0", 5);
    if (!strcmp(what, "mid"))
        return concur_task_return(t, "twelve bytes", 12);
    if (!strcmp(what, "big")) {
        unsigned char *p = concur_task_result_alloc(t, BIG);
        if (!p)
            return concur_task_fail(t, CONCUR_ENOMEM, "no memory");
        for (size_t i = 0; i < BIG; i++)
            p[i] = (unsigned char)(i * 7 + i / 251);
        return 0;
    }
    if (!strcmp(what, "none"))
        return 0;
    if (!strcmp(what, "empty"))
        return concur_task_return(t, "", 0);
    if (!strcmp(what, "unsuccessful")) {
        concur_task_return(t, "partial", 7);
        return 3;
    }
    if (!strcmp(what, "fail")) {
        concur_task_return(t, "dropped", 7);
        return concur_task_fail(t, CONCUR_ETASK, "RuntimeError: %s went wrong", key);
    }
    if (!strcmp(what, "segv")) {
        volatile uintptr_t addr = 16; /* a real fault (not NULL: UBSan would step in) */
        *(volatile int *)addr = 1;
    }
    if (!strcmp(what, "abort"))
        abort();
    if (!strcmp(what, "exit3"))
        exit(3);
    return concur_task_return(t, "ok", 2);
}

/* ---- helpers ------------------------------------------------------------------------- */

static concur_runner *batch(const concur_cmd *cmds, size_t n, const concur_runner_opts *o)
{
    concur_runner *r = NULL;
    int rc = concur_run_batch(cmds, n, o, &r);
    cr_assert_eq(rc, 0, "run: %s", concur_strerror(rc));
    cr_assert_eq(concur_runner_count(r), n);
    return r;
}

static bool answer_is(const concur_result *x, const char *want)
{
    size_t n = strlen(want);
    return x->answer_len == n && x->answer && memcmp(x->answer, want, n) == 0;
}

/* No child of this test process is left: every one was reaped. */
static void assert_no_children(void)
{
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
    cr_assert_eq(errno, ECHILD);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* ---- pyconcurrent's suite: commands, and functions on each engine -------------------- */

enum mode { M_COMMANDS, M_THREADS, M_PROCESSES, M_COROUTINES };
static const char *const mode_names[] = {"commands", "threads", "processes", "coroutines"};
static const char *const sleep_prefix[] = {"/usr/bin/sleep", NULL};
static const char *const dummy_prefix[] = {"dummy-arg", NULL};

/* The suite's tasks (1, 1), (2, @middle), (3, 2) with 4 workers and @timeout: `sleep` as
 * the prefix of commands, or test_func with 'dummy-arg' before each task's arg. */
static concur_runner *suite_run(enum mode m, const char *middle, double timeout, double *el)
{
    static concur_cmd cmds[3]; /* keys and args stay valid for the results */
    cmds[0] = (concur_cmd){.key = "1", .arg = "1"};
    cmds[1] = (concur_cmd){.key = "2", .arg = middle};
    cmds[2] = (concur_cmd){.key = "3", .arg = "2"};
    concur_runner_opts o = {.max_workers = 4, .timeout = timeout, .prefix = sleep_prefix};
    if (m != M_COMMANDS) {
        o.fn = test_func;
        o.prefix = dummy_prefix;
        const concur_engine e[] = {0, CONCUR_ENGINE_THREADS, CONCUR_ENGINE_PROCESSES,
                                   CONCUR_ENGINE_COROUTINES};
        o.engine = e[m];
    }
    double t0 = tu_now();
    concur_runner *r = batch(cmds, 3, &o);
    *el = tu_now() - t0;
    for (size_t i = 0; i < 3; i++) {
        const concur_result *x = concur_runner_result(r, i);
        cr_assert_str_eq(x->key, cmds[i].key, "input order"); /* they end 1, 3, 2 */
        cr_assert_eq(x->function, m != M_COMMANDS);
    }
    return r;
}

/* test_*_subprocess and test_*_func: sleeps 1/4/2 with timeout 10: three successes. */
static void suite(enum mode m)
{
    double el;
    concur_runner *r = suite_run(m, "4", 10, &el);
    const char *name = mode_names[m];
    const double secs[] = {1, 4, 2};
    for (size_t i = 0; i < 3; i++) {
        const concur_result *x = concur_runner_result(r, i);
        cr_assert(x->success, "%s: task %zu: %s", name, i,
                  x->error_message ? x->error_message : "");
        cr_assert_not(x->timeout);
        cr_assert_eq(x->returncode, 0);
        cr_assert_eq(x->error, 0);
        cr_assert_geq(x->time_run, secs[i] - TU_EPS, "%s: %f", name, x->time_run);
        cr_assert_lt(x->time_run, TU_LOOSE(secs[i]) - 1.5, "%s: %f", name, x->time_run);
        if (m == M_COMMANDS) {
            cr_assert_null(x->answer);
            continue;
        }
        char want[256];
        snprintf(want, sizeof want,
                 "{'key': %s, 'args': ['dummy-arg', '%s'], 'success': True, "
                 "'result': 'test_func done'}",
                 x->key, x->arg);
        cr_assert(answer_is(x, want), "answer %.*s", (int)x->answer_len, x->answer);
    }
    cr_assert_geq(el, 4.0);
    cr_assert_lt(el, TU_LOOSE(4.0) - 1.0, "%s: %f s", name, el);
    concur_runner_destroy(r);
    assert_no_children();
}

/* test_*_subprocess_timeout and test_*_func_timeout: sleeps 1/10/2 with timeout 5: exactly
 * two successes, the second task timed out, and the run takes about 5 s (not 10). */
static void suite_timeout(enum mode m)
{
    double el;
    concur_runner *r = suite_run(m, "10", 5, &el);
    const char *name = mode_names[m];
    int successes = 0;
    for (size_t i = 0; i < 3; i++)
        successes += concur_runner_result(r, i)->success;
    cr_assert_eq(successes, 2, "%s", name);
    cr_assert(concur_runner_result(r, 0)->success);
    cr_assert(concur_runner_result(r, 2)->success);
    const concur_result *x = concur_runner_result(r, 1);
    cr_assert(x->timeout);
    cr_assert_not(x->success);
    cr_assert_eq(x->error, 0, "%s: a timeout is no error: %d", name, x->error);
    cr_assert_null(x->answer);
    cr_assert_geq(x->time_run, 5.0 - TU_EPS, "%s: %f", name, x->time_run);
    cr_assert_lt(x->time_run, TU_SANITIZED ? 6.0 : 5.5, "%s: %f", name, x->time_run);
    /* sleep dies of the term signal; a worker process is killed; a thread returns; a
     * coroutine is interrupted */
    const int sig[] = {SIGTERM, 0, SIGKILL, 0};
    cr_assert_eq(x->signal, sig[m], "%s: signal %d", name, x->signal);
    cr_assert_eq(x->returncode, sig[m] ? -sig[m] : -1);
    cr_assert_geq(el, 5.0);
    cr_assert_lt(el, 6.0, "%s: %f s", name, el);
    concur_runner_destroy(r);
    assert_no_children();
}

Test(runfn, pyconcurrent_subprocess)
{
    suite(M_COMMANDS);
}
Test(runfn, pyconcurrent_subprocess_timeout)
{
    suite_timeout(M_COMMANDS);
}
Test(runfn, pyconcurrent_func_threads)
{
    suite(M_THREADS);
}
Test(runfn, pyconcurrent_func_timeout_threads)
{
    suite_timeout(M_THREADS);
}
Test(runfn, pyconcurrent_func_coroutines)
{
    suite(M_COROUTINES);
}
Test(runfn, pyconcurrent_func_timeout_coroutines)
{
    suite_timeout(M_COROUTINES);
}
Test(runfn, pyconcurrent_func_processes)
{
    suite(M_PROCESSES);
}
Test(runfn, pyconcurrent_func_timeout_processes)
{
    suite_timeout(M_PROCESSES);
}

/* ---- answers and outcomes ------------------------------------------------------------ */

static const char *const no_prefix[] = {NULL};

static concur_runner *behave_batch(concur_engine engine, const char *const *whats, size_t n)
{
    concur_cmd cmds[16];
    cr_assert_leq(n, 16);
    for (size_t i = 0; i < n; i++)
        cmds[i] = (concur_cmd){.key = whats[i], .arg = whats[i]};
    concur_runner_opts o = {.fn = behave, .prefix = no_prefix, .engine = engine, .max_workers = 2};
    return batch(cmds, n, &o);
}

Test(runfn, answers_are_exact_bytes_or_null)
{
    for (int e = 0; e < 2; e++) {
        const char *whats[] = {"nul", "none", "empty", "big", "mid"};
        concur_runner *r = behave_batch(engines[e], whats, 5);
        const concur_result *x = concur_runner_result(r, 0);
        cr_assert(x->success);
        cr_assert_eq(x->answer_len, 5, "%s", engine_names[e]);
        cr_assert_eq(memcmp(x->answer, "a\0b\377\0", 5), 0);
        for (size_t i = 1; i <= 2; i++) { /* no answer, or an empty one: NULL */
            x = concur_runner_result(r, i);
            cr_assert(x->success);
            cr_assert_null(x->answer, "%s: %s", engine_names[e], whats[i]);
            cr_assert_eq(x->answer_len, 0);
        }
        x = concur_runner_result(r, 3);
        cr_assert(x->success);
        cr_assert_eq(x->answer_len, BIG);
        bool same = true;
        for (size_t i = 0; i < BIG && same; i++)
            same = x->answer[i] == (unsigned char)(i * 7 + i / 251);
        cr_assert(same, "%s: the 8 MiB answer is exact", engine_names[e]);
        cr_assert(answer_is(concur_runner_result(r, 4), "twelve bytes"));
        cr_assert_eq(x->out_len, 0);
        cr_assert_eq(x->err_len, 0);
        cr_assert_eq(x->pid, 0);
        concur_runner_destroy(r);
    }
}

Test(runfn, unsuccessful_return_and_task_fail)
{
    for (int e = 0; e < 2; e++) {
        const char *whats[] = {"unsuccessful", "fail", "ok"};
        concur_runner *r = behave_batch(engines[e], whats, 3);
        const concur_result *x = concur_runner_result(r, 0);
        cr_assert_not(x->success);
        cr_assert_not(x->timeout);
        cr_assert_eq(x->error, 0);
        cr_assert_eq(x->returncode, 3);
        cr_assert_eq(x->exit_code, 3);
        cr_assert(answer_is(x, "partial"), "the answer of an unsuccessful run is kept");
        x = concur_runner_result(r, 1);
        cr_assert_not(x->success);
        cr_assert_not(x->timeout, "an error is not a timeout");
        cr_assert_eq(x->error, CONCUR_ETASK, "%s: %d", engine_names[e], x->error);
        cr_assert_str_eq(x->error_message, "RuntimeError: fail went wrong");
        cr_assert_eq(x->returncode, -1);
        cr_assert_null(x->answer);
        cr_assert(x->spawned);
        x = concur_runner_result(r, 2);
        cr_assert(x->success, "the other tasks go on");
        cr_assert(answer_is(x, "ok"));
        concur_runner_destroy(r);
    }
}

Test(runfn, crash_on_processes_fails_only_its_record)
{
    const char *whats[] = {"ok", "segv", "abort", "exit3", "ok"};
    int fds = count_fds();
    concur_runner *r = behave_batch(CONCUR_ENGINE_PROCESSES, whats, 5);
    const int sigs[] = {0, SIGSEGV, SIGABRT, 0, 0};
    for (size_t i = 1; i <= 3; i++) {
        const concur_result *x = concur_runner_result(r, i);
        cr_assert_not(x->success, "%s", whats[i]);
        cr_assert_not(x->timeout);
        cr_assert_eq(x->error, CONCUR_ECRASHED, "%s: %d", whats[i], x->error);
        cr_assert_not_null(x->error_message);
        cr_assert_eq(x->signal, sigs[i], "%s: signal %d", whats[i], x->signal);
        if (sigs[i])
            cr_assert_eq(x->returncode, -sigs[i]);
        else
            cr_assert_eq(x->exit_code, 3);
    }
    cr_assert(answer_is(concur_runner_result(r, 0), "ok"));
    cr_assert(answer_is(concur_runner_result(r, 4), "ok"));
    concur_runner_destroy(r);
    assert_no_children();
    cr_assert_eq(count_fds(), fds, "no descriptor left behind");
}

Test(runfn, a_function_outside_the_workers_code_fails_only_its_record)
{
    /* A pointer into the heap stands for a library loaded after the pool was created. */
    unsigned char *heap = malloc(64);
    cr_assert_not_null(heap);
    concur_cmd cmds[2] = {{.key = "bad", .arg = "ok", .fn = (concur_run_fn)(uintptr_t)heap},
                          {.key = "good", .arg = "ok"}};
    concur_runner_opts o = {.fn = behave,
                            .prefix = no_prefix,
                            .engine = CONCUR_ENGINE_PROCESSES,
                            .max_workers = 2};
    concur_runner *r = batch(cmds, 2, &o);
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert_not(x->success);
    cr_assert_eq(x->error, CONCUR_ENOTLOADED, "%d", x->error);
    cr_assert_not_null(x->error_message);
    cr_assert(strstr(x->error_message, "not in the worker processes' code"), "%s",
              x->error_message);
    cr_assert(answer_is(concur_runner_result(r, 1), "ok"), "the other record runs");
    concur_runner_destroy(r);
    free(heap);
}

/* ---- arguments ------------------------------------------------------------------------ */

/* Thread engine only: where each task's first argument lives, by key. */
static uintptr_t arg0_at[4];
static uintptr_t argv_at[4];

static int echo_args(concur_task *t, const char *key, int argc, const char *const *argv)
{
    if (key && key[0] >= '0' && key[0] <= '3' && argc > 0) {
        arg0_at[key[0] - '0'] = (uintptr_t)argv[0];
        argv_at[key[0] - '0'] = (uintptr_t)argv;
    }
    char buf[256];
    int n = snprintf(buf, sizeof buf, "%d", argc);
    for (int i = 0; i < argc; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "|%s", argv[i]);
    if (argv[argc] != NULL)
        return concur_task_fail(t, CONCUR_EINVAL, "argv is not NULL-terminated");
    if (!nap_slices(t, 0.1)) /* both tasks at once: their arrays live at the same time */
        return CONCUR_ECANCELED;
    return concur_task_return(t, buf, (size_t)n);
}

Test(runfn, args_are_fresh_per_task_and_the_prefix_is_untouched)
{
    const char *prefix[] = {"dummy-arg", "two words", NULL};
    const char *saved[] = {prefix[0], prefix[1], prefix[2]};
    const char *own[] = {"x", "y", NULL};
    for (int e = 0; e < 2; e++) {
        concur_runner_opts o = {
            .fn = echo_args, .prefix = prefix, .engine = engines[e], .max_workers = 4};
        concur_cmd cmds[] = {{.key = "0", .arg = "a"},
                             {.key = "1", .arg = "b c"},
                             {.key = "2"}, /* no arg: the prefix only */
                             {.key = "3", .argv = own, .arg = "ignored", .fn = echo_args}};
        memset(arg0_at, 0, sizeof arg0_at);
        concur_runner *r = batch(cmds, 4, &o);
        cr_assert(answer_is(concur_runner_result(r, 0), "3|dummy-arg|two words|a"));
        cr_assert(answer_is(concur_runner_result(r, 1), "3|dummy-arg|two words|b c"));
        cr_assert(answer_is(concur_runner_result(r, 2), "2|dummy-arg|two words"));
        cr_assert(answer_is(concur_runner_result(r, 3), "2|x|y"));
        cr_assert_str_eq(concur_runner_result(r, 1)->arg, "b c");
        for (int i = 0; i < 3; i++)
            cr_assert_eq(prefix[i], saved[i], "the prefix array is not modified");
        cr_assert_str_eq(prefix[0], "dummy-arg");
        if (engines[e] == CONCUR_ENGINE_THREADS) {
            for (int i = 0; i < 3; i++)
                cr_assert(arg0_at[i] && arg0_at[i] != (uintptr_t)prefix[0],
                          "task %d got a copy of the prefix", i);
            cr_assert_neq(arg0_at[0], arg0_at[1], "each task its own copy");
            cr_assert_neq(argv_at[0], argv_at[1], "each task its own array");
            cr_assert_neq(argv_at[1], (uintptr_t)prefix);
        }
        concur_runner_destroy(r);
    }
}

/* ---- order, keys, empty lists -------------------------------------------------------- */

/* Task i waits at gate i; on_done of a task opens the gate of the one before it. Task 2
 * goes at once, so they complete 2, 1, 0. */
static tu_gate order_gates[3];

static int wait_own_gate(concur_task *t, const char *key, int argc, const char *const *argv)
{
    (void)argc;
    (void)argv;
    int i = key[0] - '0';
    if (i < 2)
        tu_gate_pass(&order_gates[i]);
    return concur_task_return(t, key, 1);
}

struct order_log {
    size_t order[3];
    size_t n;
};

static int open_previous(concur_runner *r, const concur_result *res, void *arg)
{
    (void)r;
    struct order_log *log = arg;
    log->order[log->n++] = res->index;
    if (res->index > 0)
        tu_gate_open(&order_gates[res->index - 1]);
    return 0;
}

Test(runfn, results_in_input_order_completion_order_streamed)
{
    for (int i = 0; i < 3; i++)
        tu_gate_init(&order_gates[i]);
    struct order_log log = {{0}, 0};
    concur_runner_opts o = {
        .fn = wait_own_gate, .max_workers = 3, .on_done = open_previous, .cb_arg = &log};
    concur_cmd cmds[] = {{.key = "0"}, {.key = "1"}, {.key = "2"}};
    concur_runner *r = batch(cmds, 3, &o);
    cr_assert_eq(log.n, 3);
    cr_assert_eq(log.order[0], 2);
    cr_assert_eq(log.order[1], 1);
    cr_assert_eq(log.order[2], 0);
    for (size_t i = 0; i < 3; i++) {
        const concur_result *x = concur_runner_result(r, i);
        cr_assert_eq(x->index, i);
        cr_assert_str_eq(x->key, cmds[i].key);
        cr_assert(answer_is(x, cmds[i].key));
    }
    concur_runner_destroy(r);
    for (int i = 0; i < 3; i++)
        tu_gate_destroy(&order_gates[i]);
}

Test(runfn, duplicate_keys_and_empty_list)
{
    for (int e = 0; e < 2; e++) {
        concur_runner_opts o = {.fn = echo_args, .engine = engines[e]};
        concur_cmd cmds[] = {{.key = "k", .arg = "first"}, {.key = "k", .arg = "second"}};
        concur_runner *r = batch(cmds, 2, &o);
        cr_assert(answer_is(concur_runner_result(r, 0), "1|first"));
        cr_assert(answer_is(concur_runner_result(r, 1), "1|second"));
        cr_assert_str_eq(concur_runner_result(r, 1)->key, "k");
        concur_runner_destroy(r);
        r = NULL;
        int fds = count_fds();
        cr_assert_eq(concur_run_batch(NULL, 0, &o, &r), 0); /* no pool is made for nothing */
        cr_assert_eq(concur_runner_count(r), 0);
        concur_runner_destroy(r);
        cr_assert_eq(count_fds(), fds);
        assert_no_children();
    }
}

/* ---- limits and timing ----------------------------------------------------------------- */

static double run_naps(concur_engine engine, int workers, int n, const char *secs)
{
    concur_cmd cmds[8];
    for (int i = 0; i < n; i++)
        cmds[i] = (concur_cmd){.arg = secs};
    concur_runner_opts o = {.fn = test_func, .engine = engine, .max_workers = workers};
    double t0 = tu_now();
    concur_runner *r = batch(cmds, (size_t)n, &o);
    double el = tu_now() - t0;
    for (int i = 0; i < n; i++)
        cr_assert(concur_runner_result(r, (size_t)i)->success);
    concur_runner_destroy(r);
    return el;
}

/* SPEC A.20: 4 tasks of 0.5 s take 1.0 s with 2 workers and 0.5 s with 4. A.21's decision:
 * no limit gives as many at once as the run's pool has workers, one per CPU. */
Test(runfn, worker_limit_timing_on_both_engines)
{
    int cpus = concur_cpu_count();
    for (int e = 0; e < 2; e++) {
        double two = run_naps(engines[e], 2, 4, "0.5");
        double four = run_naps(engines[e], 4, 4, "0.5");
        cr_assert_geq(two, 1.0, "%s: 2 workers %f", engine_names[e], two);
        cr_assert_lt(two, TU_SANITIZED ? TU_LOOSE(1.0) : 1.45, "%s: 2 workers %f", engine_names[e],
                     two);
        cr_assert_geq(four, 0.5, "%s: 4 workers %f", engine_names[e], four);
        cr_assert_lt(four, TU_SANITIZED ? TU_LOOSE(0.5) : 0.95, "%s: 4 workers %f", engine_names[e],
                     four);
    }
    int n = cpus < 4 ? cpus + 1 : 4;
    double rounds = cpus < 4 ? 2 : 1;
    double none = run_naps(CONCUR_ENGINE_THREADS, 0, n, "0.25");
    cr_assert_geq(none, 0.25 * rounds, "no limit, %d CPUs: %f", cpus, none);
}

/* A thread cannot be killed: its record is delivered at the deadline, the function sees
 * concur_task_should_stop(), its slot stays taken until it returns, and the run waits. */
static atomic_int saw_stop, returned, delivered_before_return;

static int slow_to_stop(concur_task *t, const char *key, int argc, const char *const *argv)
{
    (void)argc;
    (void)argv;
    if (key[0] == 'a') {
        while (!concur_task_should_stop(t))
            tu_sleep(0.005);
        atomic_store(&saw_stop, 1);
        tu_sleep(0.4); /* cleaning up after the stop, as a real function may */
        atomic_store(&returned, 1);
        return concur_task_return(t, "late", 4);
    }
    return concur_task_return(t, "b", 1);
}

static int note_delivery(concur_runner *r, const concur_result *res, void *arg)
{
    (void)r;
    (void)arg;
    if (res->timeout && !atomic_load(&returned))
        atomic_store(&delivered_before_return, 1);
    return 0;
}

Test(runfn, thread_timeout_delivers_at_the_deadline_and_holds_the_slot)
{
    atomic_store(&saw_stop, 0);
    atomic_store(&returned, 0);
    atomic_store(&delivered_before_return, 0);
    concur_runner_opts o = {
        .fn = slow_to_stop, .max_workers = 1, .timeout = 0.2, .on_done = note_delivery};
    concur_cmd cmds[] = {{.key = "a"}, {.key = "b"}};
    double t0 = tu_now();
    concur_runner *r = batch(cmds, 2, &o);
    double el = tu_now() - t0;
    cr_assert(atomic_load(&returned), "the run waited for the thread");
    cr_assert(atomic_load(&saw_stop));
    const concur_result *a = concur_runner_result(r, 0), *b = concur_runner_result(r, 1);
    cr_assert(a->timeout);
    cr_assert_not(a->success);
    cr_assert_null(a->answer, "the late answer is discarded");
    cr_assert_geq(a->time_run, 0.2 - TU_EPS);
    cr_assert_lt(a->time_run, TU_LOOSE(0.2), "%f", a->time_run);
    cr_assert(atomic_load(&delivered_before_return), "delivered before the thread returned");
    cr_assert(b->success);
    cr_assert_geq(b->time_wait, 0.6 - 0.05, "b waited for the one worker: %f", b->time_wait);
    cr_assert_geq(el, 0.6);
    concur_runner_destroy(r);
}

Test(runfn, process_timeout_kills_the_worker)
{
    concur_runner_opts o = {.fn = test_func, .engine = CONCUR_ENGINE_PROCESSES, .max_workers = 2};
    concur_cmd cmds[] = {{.key = "1", .arg = "30", .timeout = 0.3}, {.key = "2", .arg = "0"}};
    double t0 = tu_now();
    concur_runner *r = batch(cmds, 2, &o);
    double el = tu_now() - t0;
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert(x->timeout);
    cr_assert_eq(x->signal, SIGKILL);
    cr_assert_geq(x->time_run, 0.3 - TU_EPS);
    cr_assert_lt(el, TU_LOOSE(0.3), "%f", el);
    cr_assert(concur_runner_result(r, 1)->success);
    concur_runner_destroy(r);
    assert_no_children();
}

/* ---- stop, retries, a caller's pool, mixed runs ------------------------------------------- */

static int stop_after_first(concur_runner *r, const concur_result *res, void *arg)
{
    (void)arg;
    if (res->index == 0)
        concur_runner_stop(r, CONCUR_STOP_TERM);
    return 0;
}

Test(runfn, stop_cancels_running_functions_on_both_engines)
{
    for (int e = 0; e < 2; e++) {
        concur_runner_opts o = {.fn = test_func,
                                .engine = engines[e],
                                .max_workers = 2,
                                .on_done = stop_after_first,
                                .flags = CONCUR_RUN_KEEP_RESULTS};
        concur_cmd cmds[] = {
            {.key = "1", .arg = "0"}, {.key = "2", .arg = "30"}, {.key = "3", .arg = "0"}};
        concur_runner *r;
        cr_assert_eq(concur_run_batch(cmds, 3, &o, &r), CONCUR_ECANCELED);
        cr_assert_eq(concur_runner_count(r), 2, "the third never started");
        const concur_result *x = concur_runner_result(r, 1);
        cr_assert(x->stopped, "%s", engine_names[e]);
        cr_assert_not(x->success);
        cr_assert_eq(x->error, CONCUR_ECANCELED, "%s: %d", engine_names[e], x->error);
        cr_assert_lt(x->time_run, TU_LOOSE(0.5), "%s: %f", engine_names[e], x->time_run);
        concur_runner_destroy(r);
    }
    assert_no_children();
}

static atomic_int tries;

static int fails_once(concur_task *t, const char *key, int argc, const char *const *argv)
{
    (void)key;
    (void)argc;
    (void)argv;
    return atomic_fetch_add(&tries, 1) == 0 ? 1 : concur_task_return(t, "second", 6);
}

static int retry_failed(concur_runner *r, const concur_result *res, void *arg)
{
    (void)r;
    (void)arg;
    return !res->success;
}

Test(runfn, retries_run_a_function_again)
{
    atomic_store(&tries, 0);
    concur_runner_opts o = {.fn = fails_once, .retries = 2, .on_done = retry_failed};
    concur_cmd c = {.key = "r"};
    concur_runner *r = batch(&c, 1, &o);
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert(x->success);
    cr_assert_eq(x->attempts, 2);
    cr_assert(answer_is(x, "second"));
    concur_runner_destroy(r);
}

/* A caller's pool of one worker: functions go through it one at a time while commands
 * (no limit) run beside them; a closed pool fails each record, not the run. */
Test(runfn, callers_pool_and_mixed_commands)
{
    concur_pool *p = tu_pool(1);
    const char *sh[] = {"/bin/sh", "-c", "echo cmd", NULL};
    concur_runner_opts o = {.pool = p};
    concur_cmd cmds[] = {{.fn = test_func, .key = "f1", .arg = "0.2"},
                         {.argv = sh, .key = "c1"},
                         {.fn = test_func, .key = "f2", .arg = "0.2"},
                         {.argv = sh, .key = "c2"}};
    double t0 = tu_now();
    concur_runner *r = batch(cmds, 4, &o);
    double el = tu_now() - t0;
    for (size_t i = 0; i < 4; i++)
        cr_assert(concur_runner_result(r, i)->success, "%zu", i);
    cr_assert(concur_runner_result(r, 0)->function);
    cr_assert_not(concur_runner_result(r, 1)->function);
    cr_assert_eq(memcmp(concur_runner_result(r, 1)->out, "cmd\n", 4), 0);
    cr_assert_geq(el, 0.4, "one function at a time: %f", el);
    cr_assert_geq(concur_runner_result(r, 2)->time_wait, 0.2 - 0.01);
    concur_runner_destroy(r);
    cr_assert_eq(concur_pool_check(p), 0, "the caller's pool is left open");
    cr_assert_eq(concur_pool_shutdown(p, 0, TU_SAFETY), 0);
    r = batch(cmds, 1, &o);
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert_not(x->success);
    cr_assert_not(x->spawned);
    cr_assert_eq(x->error, CONCUR_ECLOSED);
    cr_assert_not_null(x->error_message);
    concur_runner_destroy(r);
    concur_pool_destroy(p);
}

/* ---- print_results, and the one-line switch ------------------------------------------ */

static void fmt_time(char *buf, size_t n, double t)
{
    time_t s = (time_t)t;
    struct tm tm;
    cr_assert_not_null(localtime_r(&s, &tm));
    cr_assert_gt(strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm), 0);
}

Test(runfn, print_results_of_function_records)
{
    const char *whats[] = {"ok", "fail"};
    concur_runner *r = behave_batch(CONCUR_ENGINE_THREADS, whats, 2);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_eq(concur_print_results(f, r), 0);
    fclose(f);
    double start, end;
    concur_runner_times(r, &start, &end);
    const concur_result *a = concur_runner_result(r, 0), *b = concur_runner_result(r, 1);
    char when[32], want[2048];
    fmt_time(when, sizeof when, start);
    snprintf(want, sizeof want,
             "**********\n"
             "Test start time : %s\n"
             " Total run time : %.1f\n"
             "\n"
             "========================================\n"
             "key                 : ok\n"
             "time_start          : %.1f\n"
             "time_run            : %.1f\n"
             "success             : True\n"
             "timeout             : False\n"
             "exception           : None\n"
             "arg                 : ok\n"
             "returncode          : 0\n"
             "answer              : ok\n"
             "========================================\n"
             "key                 : fail\n"
             "time_start          : %.1f\n"
             "time_run            : %.1f\n"
             "success             : False\n"
             "timeout             : False\n"
             "exception           : ETASK\n"
             "arg                 : fail\n"
             "returncode          : -1\n",
             when, end - start, a->time_start, a->time_run, b->time_start, b->time_run);
    cr_assert_str_eq(buf, want);
    free(buf);
    concur_runner_destroy(r);
}

/* The same code on both engines: only opts.engine differs, and so do the results not. */
static concur_runner *demo(concur_engine engine)
{
    concur_runner_opts o = {.fn = behave, .max_workers = 3};
    o.engine = engine; /* the one line */
    concur_cmd cmds[] = {{.key = "a", .arg = "ok"},
                         {.key = "b", .arg = "nul"},
                         {.key = "c", .arg = "unsuccessful"},
                         {.key = "d", .arg = "fail"}};
    return batch(cmds, 4, &o);
}

Test(runfn, switching_engine_is_one_line)
{
    concur_runner *t = NULL, *p = NULL;
    concur_runner_opts bad = {.engine = (concur_engine)7}; /* no such engine */
    cr_assert_eq(concur_runner_create(&t, &bad), CONCUR_EINVAL);
    cr_assert_null(t);
    t = demo(CONCUR_ENGINE_THREADS);
    p = demo(CONCUR_ENGINE_PROCESSES);
    for (size_t i = 0; i < 4; i++) {
        const concur_result *x = concur_runner_result(t, i), *y = concur_runner_result(p, i);
        cr_assert_str_eq(x->key, y->key);
        cr_assert_eq(x->success, y->success, "%s", x->key);
        cr_assert_eq(x->timeout, y->timeout);
        cr_assert_eq(x->returncode, y->returncode, "%s", x->key);
        cr_assert_eq(x->error, y->error, "%s", x->key);
        cr_assert_eq(x->answer_len, y->answer_len, "%s", x->key);
        cr_assert(x->answer_len == 0 || memcmp(x->answer, y->answer, x->answer_len) == 0);
        if (x->error_message || y->error_message)
            cr_assert_str_eq(x->error_message, y->error_message);
    }
    concur_runner_destroy(t);
    concur_runner_destroy(p);
    assert_no_children();
}
