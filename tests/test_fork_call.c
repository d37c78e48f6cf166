/*
 * test_fork_call.c - fork calls (concur_fork_call, concur_fork_drain) and waitfor
 * (concur_waitfor_*): SPEC C.50-C.63.
 *
 * Children are real forks of this test process. What a child did is told by its result, by
 * a pipe, or by a MAP_SHARED page created before the call; nothing sleeps to fix a race
 * (the sleeps are the children's timing workload).
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(fork, .timeout = TU_TIMEOUT, .fini = tu_fini);

/* ---- helpers ------------------------------------------------------------------------- */

static int count_dir(const char *path)
{
    DIR *d = opendir(path);
    cr_assert_not_null(d, "opendir %s", path);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - (strcmp(path, "/proc/self/fd") == 0); /* the DIR's own fd */
}

static int count_fds(void)
{
    return count_dir("/proc/self/fd");
}
static int count_threads(void)
{
    return count_dir("/proc/self/task");
}

/* True when this process has no child at all, exited or running. */
static bool no_children(void)
{
    siginfo_t si;
    return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == -1 && errno == ECHILD;
}

/* A page shared with every child forked after it was made. */
struct shared {
    atomic_int in_flight, max_in_flight;
    atomic_int escaped;     /* code after a call ran in a child */
    atomic_int atexit_runs; /* the test's atexit handler ran in a child */
    pid_t parent;
};

static struct shared *shared_new(void)
{
    struct shared *s =
        mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(s, MAP_FAILED);
    memset(s, 0, sizeof(*s));
    s->parent = getpid();
    return s;
}

static concur_future *call(concur_fn fn, const void *in, size_t len, const concur_fork_opts *o)
{
    concur_future *f = NULL;
    int rc = concur_fork_call(&f, fn, in, len, o);
    cr_assert_eq(rc, 0, "concur_fork_call: %s", concur_strerror(rc));
    cr_assert_not_null(f);
    return f;
}

static concur_error_info info_of(concur_future *f)
{
    concur_error_info ei;
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    cr_assert_eq(concur_future_error_info(f, &ei), 0);
    return ei;
}

/* ---- tasks (they run in the children) ------------------------------------------------ */

/* Input: a double (seconds). Sleeps, then returns its pid. */
static int task_sleep_pid(concur_task *t, const void *in, size_t len)
{
    (void)tu_task_sleep(t, in, len);
    pid_t me = getpid();
    return concur_task_return(t, &me, sizeof(me));
}

/* Input: size_t n. Returns n bytes of a known pattern, written in place. */
static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 131u + (i >> 13));
}

static int task_pattern(concur_task *t, const void *in, size_t len)
{
    size_t n;
    if (len != sizeof(n))
        return concur_task_fail(t, CONCUR_EINVAL, "bad input");
    memcpy(&n, in, sizeof(n));
    unsigned char *p = concur_task_result_alloc(t, n);
    if (!p && n)
        return concur_task_fail(t, CONCUR_ENOMEM, "no memory for %zu bytes", n);
    for (size_t i = 0; i < n; i++)
        p[i] = pattern(i);
    return 0;
}

/* ---- C.50, C.51: the call returns at once, the child runs in parallel ----------------- */

Test(fork, four_calls_return_at_once_running_and_uncancellable_and_run_in_four_processes)
{
    double secs = 0.5;
    concur_future *fs[4];
    double t0 = tu_now();
    for (int i = 0; i < 4; i++)
        fs[i] = call(task_sleep_pid, &secs, sizeof(secs), NULL);
    double made = tu_now() - t0;
    cr_assert_lt(made, TU_SANITIZED ? TU_LOOSE(0.1) : 0.1, "4 calls took %.3f s", made);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(concur_future_state(fs[i]), CONCUR_RUNNING);
        cr_assert_not(concur_future_cancel(fs[i]), "a fork call cannot be cancelled");
        cr_assert_eq(concur_future_state(fs[i]), CONCUR_RUNNING);
        cr_assert(concur_future_cancel_requested(fs[i]));
    }
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        const void *d;
        size_t n;
        cr_assert_eq(concur_future_collect(fs[i], TU_SAFETY, &d, &n), 0);
        cr_assert_eq(n, sizeof(pid_t));
        memcpy(&pids[i], d, sizeof(pid_t));
        cr_assert_neq(pids[i], getpid());
        for (int j = 0; j < i; j++)
            cr_assert_neq(pids[i], pids[j], "calls %d and %d ran in the same process", i, j);
    }
    double el = tu_now() - t0;
    cr_assert_geq(el, secs - TU_EPS, "%.3f s", el);
    cr_assert_lt(el, TU_SANITIZED ? TU_LOOSE(secs) : secs + 0.3, "4 x 0.5 s took %.3f s", el);
    for (int i = 0; i < 4; i++) {
        double pend, run;
        concur_future_durations(fs[i], &pend, &run);
        cr_assert_eq(pend, 0.0, "a fork call is never pending");
        cr_assert_geq(run, secs - TU_EPS);
        concur_future_release(fs[i]);
    }
}

/* ---- C.51: result bytes, any size ----------------------------------------------------- */

Test(fork, result_bytes_are_exact_from_empty_to_8_mib)
{
    const size_t sizes[] = {
        0, 1, CONCUR_INLINE_BYTES, CONCUR_INLINE_BYTES + 1, 65536 + 3, (size_t)8 << 20};
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };
    concur_future *fs[N];
    for (size_t i = 0; i < N; i++)
        fs[i] = call(task_pattern, &sizes[i], sizeof(sizes[i]), NULL);
    for (size_t i = 0; i < N; i++) {
        const void *d = NULL;
        size_t n = 99;
        int rc = concur_future_collect(fs[i], TU_SAFETY, &d, &n);
        cr_assert_eq(rc, 0, "size %zu: %s", sizes[i], concur_future_error_message(fs[i]));
        cr_assert_eq(n, sizes[i]);
        const unsigned char *p = d;
        size_t bad = n;
        for (size_t k = 0; k < n && bad == n; k++)
            if (p[k] != pattern(k))
                bad = k;
        cr_assert_eq(bad, n, "size %zu: byte %zu differs", sizes[i], bad);
        concur_future_release(fs[i]);
    }
}

/* ---- C.52, C.53: errors travel with code and message ----------------------------------- */

static int task_fail(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    return concur_task_fail(t, -EIO, "read %s: disk on fire (pid %d)", "/dev/sda", (int)getpid());
}

static int task_positive(concur_task *t, const void *in, size_t len)
{
    (void)t;
    (void)in;
    (void)len;
    return 7;
}

/* C.53 in C: a result that cannot be made (no memory for it) fails the future, no hang. */
static int task_huge_result(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    if (!concur_task_result_alloc(t, SIZE_MAX / 4))
        return concur_task_fail(t, CONCUR_ENOMEM, "cannot hold the result");
    return 0;
}

Test(fork, task_errors_come_back_with_code_and_message_marked_remote)
{
    concur_future *f = call(task_fail, NULL, 0, NULL);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), -EIO);
    concur_error_info ei = info_of(f);
    cr_assert_eq(ei.code, -EIO);
    cr_assert(strncmp(ei.message, "read /dev/sda: disk on fire (pid ", 33) == 0, "%s", ei.message);
    cr_assert(ei.remote);
    cr_assert_eq(ei.signal, 0);
    cr_assert_eq(ei.exit_status, -1);
    cr_assert_null(ei.backtrace);
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    concur_future_release(f);

    f = call(task_positive, NULL, 0, NULL);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), CONCUR_ETASK);
    ei = info_of(f);
    cr_assert(ei.remote);
    cr_assert_str_eq(ei.message, concur_strerror(CONCUR_ETASK));
    concur_future_release(f);

    f = call(task_huge_result, NULL, 0, NULL);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), CONCUR_ENOMEM);
    ei = info_of(f);
    cr_assert_str_eq(ei.message, "cannot hold the result");
    cr_assert(ei.remote);
    concur_future_release(f);
}

/* ---- C.54: the child's side effects stay in the child ------------------------------------ */

static int g_value = 10;

struct object {
    int v;
    int gate_fd; /* the child reads one byte from it before it looks at the input */
};

static int task_side_effects(concur_task *t, const void *in, size_t len)
{
    struct object *o = tu_in_ptr(in, len); /* the caller's object, in the child's copy */
    char b;
    if (!o || read(o->gate_fd, &b, 1) != 1)
        return concur_task_fail(t, CONCUR_EIO, "no gate");
    int seen = o->v; /* as at the call, whatever the caller did since */
    o->v += 5;
    g_value += 5;
    int out[3] = {seen, o->v, g_value};
    return concur_task_return(t, out, sizeof(out));
}

Test(fork, the_child_sees_memory_as_at_the_call_and_its_changes_stay_there)
{
    int gate[2];
    cr_assert_eq(pipe(gate), 0);
    struct object obj = {.v = 10, .gate_fd = gate[0]};
    concur_future *f = call(task_side_effects, TU_PTR_IN(&obj), NULL);
    obj.v = 1000; /* after the call: the child must not see it */
    cr_assert_eq(write(gate[1], "x", 1), 1);
    const void *d;
    size_t n;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &d, &n), 0);
    int out[3];
    cr_assert_eq(n, sizeof(out));
    memcpy(out, d, sizeof(out));
    cr_assert_eq(out[0], 10, "the child saw %d", out[0]);
    cr_assert_eq(out[1], 15);
    cr_assert_eq(out[2], 15);
    cr_assert_eq(obj.v, 1000, "the object in the parent is the parent's");
    cr_assert_eq(g_value, 10, "the global in the parent is unchanged");
    concur_future_release(f);
    close(gate[0]);
    close(gate[1]);
}

/* ---- C.55: the child's output is flushed, the parent's is not written twice -------------- */

static int task_print(concur_task *t, const void *in, size_t len)
{
    (void)t;
    (void)in;
    (void)len;
    printf("child-says-hi"); /* no newline: stays buffered until the child's flush */
    return 0;
}

Test(fork, child_output_without_newline_is_flushed_and_parent_output_is_not_duplicated)
{
    fflush(stdout);
    int p[2];
    cr_assert_eq(pipe(p), 0);
    int saved = dup(1);
    cr_assert_geq(saved, 0);
    cr_assert_eq(dup2(p[1], 1), 1);
    setvbuf(stdout, NULL, _IOFBF, 4096); /* as for any pipe: fully buffered */
    printf("parent-first|");             /* buffered in the parent at the call */
    concur_future *f;
    int rc = concur_fork_call(&f, task_print, NULL, 0, NULL);
    int wrc = rc ? rc : concur_future_wait(f, TU_SAFETY);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    close(p[1]);
    cr_assert_eq(rc, 0);
    cr_assert_eq(wrc, 0);
    cr_assert_eq(concur_future_error(f), 0);
    char buf[256];
    size_t got = 0;
    for (ssize_t r; (r = read(p[0], buf + got, sizeof(buf) - 1 - got)) > 0;)
        got += (size_t)r;
    buf[got] = '\0';
    close(p[0]);
    cr_assert_str_eq(buf, "parent-first|child-says-hi");
    concur_future_release(f);
}

/* ---- C.56, C.57: children that end without reporting ------------------------------------ */

static struct shared *g_sh;

static void count_atexit_in_child(void)
{
    if (g_sh && getpid() != g_sh->parent)
        atomic_fetch_add(&g_sh->atexit_runs, 1);
}

/* Input: an int saying how the child ends without reporting. */
enum ending { END_EXIT3, END_EXIT0, END__EXIT4, END_ABORT };

static int task_end(concur_task *t, const void *in, size_t len)
{
    int how = -1;
    if (len == sizeof(how))
        memcpy(&how, in, sizeof(how));
    switch (how) {
    case END_EXIT3:
        exit(3);
    case END_EXIT0:
        exit(0);
    case END__EXIT4:
        _exit(4);
    case END_ABORT:
        abort();
    }
    return concur_task_fail(t, CONCUR_EINVAL, "bad input");
}

/* Writes its pid to pid_w, then waits on a read of an fd nobody writes, until killed. */
struct hang {
    int pid_w;
    int never_r;
};

static int task_report_pid_and_hang(concur_task *t, const void *in, size_t len)
{
    (void)t;
    struct hang h;
    if (len != sizeof(h))
        return CONCUR_EINVAL;
    memcpy(&h, in, sizeof(h));
    pid_t me = getpid();
    if (write(h.pid_w, &me, sizeof(me)) != (ssize_t)sizeof(me))
        return CONCUR_EIO;
    char b;
    (void)read(h.never_r, &b, 1);
    return 0;
}

static concur_future *checked_call(concur_fn fn, const void *in, size_t len)
{
    concur_future *f = call(fn, in, len, NULL);
    if (getpid() != g_sh->parent) { /* only if a child came back into the caller's code */
        atomic_fetch_add(&g_sh->escaped, 1);
        _exit(0);
    }
    return f;
}

Test(fork, exit_abort_and_kill_fail_only_their_own_future_with_the_detail)
{
    g_sh = shared_new();
    cr_assert_eq(atexit(count_atexit_in_child), 0);
    int hp[2], never[2];
    cr_assert_eq(pipe(hp), 0);
    cr_assert_eq(pipe(never), 0);
    struct hang h = {.pid_w = hp[1], .never_r = never[0]};
    double sib_secs = 0.05;
    fflush(stdout);
    const int ends[] = {END_EXIT3, END_EXIT0, END__EXIT4, END_ABORT};
    concur_future *ex3 = checked_call(task_end, &ends[0], sizeof(int));
    concur_future *ex0 = checked_call(task_end, &ends[1], sizeof(int));
    concur_future *ex4 = checked_call(task_end, &ends[2], sizeof(int));
    concur_future *ab = checked_call(task_end, &ends[3], sizeof(int));
    concur_future *kl = checked_call(task_report_pid_and_hang, &h, sizeof(h));
    concur_future *ok = checked_call(task_sleep_pid, &sib_secs, sizeof(sib_secs));
    pid_t victim;
    cr_assert_eq(read(hp[0], &victim, sizeof(victim)), (ssize_t)sizeof(victim));
    cr_assert_eq(kill(victim, SIGKILL), 0);

    concur_error_info ei = info_of(ex3);
    cr_assert_eq(ei.code, CONCUR_ECRASHED);
    cr_assert_eq(ei.exit_status, 3);
    cr_assert_eq(ei.signal, 0);
    cr_assert_not(ei.remote);
    cr_assert_str_eq(ei.message, "child process exited with status 3 before reporting");

    ei = info_of(ex0);
    cr_assert_eq(ei.code, CONCUR_ECRASHED, "exit(0) before reporting is a failure");
    cr_assert_eq(ei.exit_status, 0);

    ei = info_of(ex4);
    cr_assert_eq(ei.code, CONCUR_ECRASHED);
    cr_assert_eq(ei.exit_status, 4);
    cr_assert_str_eq(ei.message, "child process exited with status 4 before reporting");

    ei = info_of(ab);
    cr_assert_eq(ei.code, CONCUR_ECRASHED);
    cr_assert_eq(ei.signal, SIGABRT);
    cr_assert_eq(ei.exit_status, -1);
    cr_assert_str_eq(ei.message,
                     "child process died before reporting: killed by signal 6 (Aborted)");
    if (!TU_TSAN) { /* TSan runs handlers its own way */
        cr_assert_not_null(ei.backtrace, "the child's crash handler sent its backtrace");
        cr_assert_gt(strlen(ei.backtrace), 0);
    }

    ei = info_of(kl);
    cr_assert_eq(ei.code, CONCUR_ECRASHED);
    cr_assert_eq(ei.signal, SIGKILL);
    cr_assert_str_eq(ei.message,
                     "child process died before reporting: killed by signal 9 (Killed)");
    cr_assert_null(ei.backtrace);

    cr_assert_eq(concur_future_collect(ok, TU_SAFETY, NULL, NULL), 0, "the sibling succeeded");

    cr_assert_eq(atomic_load(&g_sh->escaped), 0, "a child returned into the caller's code");
    cr_assert_eq(atomic_load(&g_sh->atexit_runs), 0, "the caller's atexit handler ran in a child");
    cr_assert(no_children(), "every child was reaped when its future completed");
    concur_future *all[] = {ex3, ex0, ex4, ab, kl, ok};
    for (size_t i = 0; i < 6; i++)
        concur_future_release(all[i]);
    close(hp[0]);
    close(hp[1]);
    close(never[0]);
    close(never[1]);
}

/* ---- C.58: reaped at completion, nested calls --------------------------------------------- */

Test(fork, the_child_is_reaped_when_its_future_completes)
{
    double secs = 0.01;
    for (int i = 0; i < 3; i++) {
        concur_future *f = call(task_sleep_pid, &secs, sizeof(secs), NULL);
        cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
        cr_assert(no_children(), "round %d: a child is left after completion", i);
        concur_future_release(f);
    }
}

/* Input: int depth. Returns depth*10 followed by what a nested call for depth+1 returned. */
static int task_nested(concur_task *t, const void *in, size_t len)
{
    int depth;
    if (len != sizeof(depth))
        return CONCUR_EINVAL;
    memcpy(&depth, in, sizeof(depth));
    int out[8] = {depth * 10};
    size_t n = 1;
    if (depth < 2) {
        int next = depth + 1;
        concur_future *f;
        concur_fork_opts o = {.timeout = TU_SAFETY / 2};
        int rc = concur_fork_call(&f, task_nested, &next, sizeof(next), &o);
        if (rc)
            return concur_task_fail(t, rc, "nested call at depth %d", depth);
        const void *d;
        size_t dn;
        rc = concur_future_collect(f, TU_SAFETY, &d, &dn);
        if (rc == 0) {
            memcpy(out + 1, d, dn);
            n += dn / sizeof(int);
        }
        concur_future_release(f);
        if (rc)
            return concur_task_fail(t, rc, "nested result at depth %d", depth);
        if (!no_children())
            return concur_task_fail(t, CONCUR_EIO, "a grandchild is left at depth %d", depth);
    }
    return concur_task_return(t, out, n * sizeof(int));
}

Test(fork, calls_nest_inside_children)
{
#if TU_TSAN
    cr_skip_test("TSan cannot start threads in the child of a multithreaded fork (the nested "
                 "call's supervisor is a thread)");
#endif
    int zero = 0;
    concur_fork_opts o = {.timeout = TU_SAFETY / 2}; /* a hung child dies before the test */
    concur_future *f = call(task_nested, &zero, sizeof(zero), &o);
    const void *d;
    size_t n;
    int rc = concur_future_collect(f, TU_SAFETY, &d, &n);
    cr_assert_eq(rc, 0, "%s", concur_future_error_message(f));
    cr_assert_eq(n, 3 * sizeof(int));
    int got[3];
    memcpy(got, d, sizeof(got));
    cr_assert_eq(got[0], 0);
    cr_assert_eq(got[1], 10);
    cr_assert_eq(got[2], 20);
    concur_future_release(f);
    cr_assert(no_children());
}

/* A task that forks a process of its own, which returns from the task function too: only
 * the child of the call reports. */
static int task_forks_and_returns_twice(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    pid_t pid = fork();
    if (pid < 0)
        return concur_task_fail(t, -errno, "fork");
    if (pid == 0)
        return concur_task_return(t, "grandchild", 10); /* returns into concur's code */
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return concur_task_fail(t, CONCUR_EIO, "grandchild status 0x%x", status);
    return concur_task_return(t, "child", 5);
}

Test(fork, a_process_forked_by_the_task_that_returns_from_it_reports_nothing)
{
    concur_future *f = call(task_forks_and_returns_twice, NULL, 0, NULL);
    const void *d;
    size_t n;
    int rc = concur_future_collect(f, TU_SAFETY, &d, &n);
    cr_assert_eq(rc, 0, "%s", concur_future_error_message(f));
    cr_assert_eq(n, 5);
    cr_assert(memcmp(d, "child", 5) == 0);
    concur_future_release(f);
    cr_assert(no_children());
}

/* A process forked by someone else (plain fork) makes its own fork calls. */
Test(fork, calls_work_in_a_process_forked_by_the_application)
{
#if TU_TSAN
    cr_skip_test("TSan cannot start threads in the child of a multithreaded fork");
#endif
    double secs = 0.3;
    concur_future *outer = call(task_sleep_pid, &secs, sizeof(secs), NULL); /* supervisor up */
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        size_t len = 100000;
        concur_future *f;
        int st = 10;
        if (concur_fork_call(&f, task_pattern, &len, sizeof(len), NULL) == 0) {
            const void *d;
            size_t n;
            st = concur_future_collect(f, 10.0, &d, &n) == 0 && n == len ? 0 : 11;
            concur_future_release(f);
            if (concur_fork_drain(10.0) != 0)
                st = 12;
        }
        _exit(st);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x", status);
    cr_assert_eq(concur_future_collect(outer, TU_SAFETY, NULL, NULL), 0);
    concur_future_release(outer);
}

/* ---- timeouts and cancel_kill (SPEC decision: timeouts in every engine) ---------------- */

Test(fork, a_child_past_its_timeout_is_killed_and_its_future_fails)
{
    double long_secs = 20, short_secs = 0.05;
    concur_fork_opts o = {.timeout = 0.3};
    double t0 = tu_now();
    concur_future *slow = call(task_sleep_pid, &long_secs, sizeof(long_secs), &o);
    concur_future *quick = call(task_sleep_pid, &short_secs, sizeof(short_secs), &o);
    concur_future *free_run = call(task_sleep_pid, &short_secs, sizeof(short_secs), NULL);
    cr_assert_eq(concur_future_collect(slow, TU_SAFETY, NULL, NULL), CONCUR_ETASKTIMEOUT);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.3 - TU_EPS, "%.3f s", el);
    cr_assert_lt(el, TU_SANITIZED ? TU_LOOSE(0.3) : 0.8, "%.3f s", el);
    concur_error_info ei = info_of(slow);
    cr_assert_eq(ei.signal, SIGKILL);
    cr_assert_not(ei.remote);
    cr_assert_str_eq(ei.message, "the call ran past its timeout of 0.3 s; its child process was "
                                 "killed");
    cr_assert_eq(concur_future_collect(quick, TU_SAFETY, NULL, NULL), 0);
    cr_assert_eq(concur_future_collect(free_run, TU_SAFETY, NULL, NULL), 0);
    concur_future_release(slow);
    concur_future_release(quick);
    concur_future_release(free_run);
    cr_assert(no_children());
}

Test(fork, cancel_kill_kills_the_child_and_fails_the_future_cancelled)
{
    double secs = 20;
    concur_future *f = call(task_sleep_pid, &secs, sizeof(secs), NULL);
    cr_assert_not(concur_future_cancel(f));
    double t0 = tu_now();
    cr_assert(concur_future_cancel_kill(f));
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), CONCUR_ECANCELED);
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.5));
    concur_error_info ei = info_of(f);
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED, "it did run");
    cr_assert_eq(ei.signal, SIGKILL);
    cr_assert_str_eq(ei.message, "cancelled while running: the child process was killed");
    cr_assert_not(concur_future_cancel_kill(f), "nothing left to kill");
    concur_future_release(f);
    cr_assert(no_children());
}

/* A task that starts a daemon (its shell exits at once: the daemon is orphaned, and
 * re-parented to the child, their subreaper), writes its pid to the FIFO named by the input,
 * and waits to be killed. */
static int task_daemon_then_wait(concur_task *t, const void *in, size_t len)
{
    char cmd[PATH_MAX + 80];
    snprintf(cmd, sizeof(cmd), "setsid sleep 30 </dev/null >/dev/null 2>&1 & echo $! > '%.*s'",
             (int)len, (const char *)in);
    if (system(cmd) != 0)
        return concur_task_fail(t, CONCUR_ETASK, "system() failed");
    for (;;)
        pause();
}

/* A child killed for a timeout or by cancel_kill takes what it started with it: the command
 * it waits for (in a process group of its own) and a daemon it left orphaned. */
static void killed_child_leaves_nothing(concur_fn fn, double timeout)
{
    char fifo[128];
    tu_fifo_make(fifo, sizeof(fifo));
    concur_fork_opts o = {.timeout = timeout};
    concur_future *f = call(fn, fifo, strlen(fifo), &o);
    pid_t pid = tu_fifo_read_pid(fifo, TU_SAFETY);
    cr_assert_gt(pid, 0);
    if (timeout == 0)
        cr_assert(concur_future_cancel_kill(f));
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL),
                 timeout == 0 ? CONCUR_ECANCELED : CONCUR_ETASKTIMEOUT);
    cr_assert(tu_pid_ends_within(pid, TU_SAFETY), "what the child started outlived it");
    concur_future_release(f);
    tu_fifo_remove(fifo);
    cr_assert(no_children());
}

Test(fork, cancel_kill_ends_the_command_the_child_runs)
{
    killed_child_leaves_nothing(tu_task_run_sleeper, 0);
}

Test(fork, a_timeout_ends_the_daemon_the_child_left)
{
    killed_child_leaves_nothing(task_daemon_then_wait, 1.0);
}

/* ---- the task context in the child --------------------------------------------------- */

struct ctx_seen {
    uint64_t id;
    void *user;
    bool stop;
    char name[40];
};

static int task_context(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    struct ctx_seen s = {
        .id = concur_task_id(t), .user = concur_task_user(t), .stop = concur_task_should_stop(t)};
    snprintf(s.name, sizeof(s.name), "%s", concur_task_worker_name(t));
    return concur_task_return(t, &s, sizeof(s));
}

Test(fork, the_child_gets_a_task_context_with_id_name_and_user)
{
    int marker;
    concur_fork_opts o = {.user = &marker};
    concur_future *a = call(task_context, NULL, 0, &o);
    concur_future *b = call(task_context, NULL, 0, NULL);
    cr_assert_eq(concur_future_id(b), concur_future_id(a) + 1);
    const void *d;
    size_t n;
    cr_assert_eq(concur_future_collect(a, TU_SAFETY, &d, &n), 0);
    struct ctx_seen s;
    cr_assert_eq(n, sizeof(s));
    memcpy(&s, d, sizeof(s));
    cr_assert_eq(s.id, concur_future_id(a));
    cr_assert_eq(s.user, (void *)&marker);
    cr_assert_not(s.stop);
    char want[40];
    snprintf(want, sizeof(want), "concur-fork-%llu", (unsigned long long)concur_future_id(a));
    cr_assert_str_eq(s.name, want);
    cr_assert_eq(concur_future_collect(b, TU_SAFETY, &d, &n), 0);
    memcpy(&s, d, sizeof(s));
    cr_assert_null(s.user);
    cr_assert_eq(concur_future_set_result(a, "x", 1), CONCUR_EINVAL,
                 "only the engine completes it");
    concur_future_release(a);
    concur_future_release(b);
}

/* ---- bad arguments --------------------------------------------------------------------- */

Test(fork, bad_arguments_are_rejected)
{
    concur_future *f = NULL;
    cr_assert_eq(concur_fork_call(NULL, task_context, NULL, 0, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_fork_call(&f, NULL, NULL, 0, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_fork_call(&f, task_context, NULL, 3, NULL), CONCUR_EINVAL);
    concur_fork_opts o = {.timeout = NAN};
    cr_assert_eq(concur_fork_call(&f, task_context, NULL, 0, &o), CONCUR_EINVAL);
    cr_assert_null(f);
    cr_assert(no_children(), "nothing was forked");

    concur_waitfor it;
    concur_future *arr[2] = {0};
    size_t n = 0;
    cr_assert_eq(concur_waitfor_init(NULL, arr, &n, 0), CONCUR_EINVAL);
    cr_assert_eq(concur_waitfor_init(&it, NULL, &n, 0), CONCUR_EINVAL);
    cr_assert_eq(concur_waitfor_init(&it, arr, NULL, 0), CONCUR_EINVAL);
    cr_assert_eq(concur_waitfor_init(&it, arr, &n, -1), CONCUR_EINVAL);
    cr_assert_eq(concur_waitfor_init(&it, arr, &n, 3), 0);
    cr_assert_eq(concur_waitfor_next(&it, 0, NULL), CONCUR_EINVAL);
    cr_assert_eq(concur_waitfor_next(NULL, 0, &f), CONCUR_EINVAL);
    n = 1; /* arr[0] is NULL */
    cr_assert_eq(concur_waitfor_next(&it, 0, &f), CONCUR_EINVAL);
    n = 0;
    it.cf = -2;
    cr_assert_eq(concur_waitfor_next(&it, 0, &f), CONCUR_EINVAL);
}

/* ---- C.60 - C.62: waitfor -------------------------------------------------------------- */

Test(fork, waitfor_yields_in_completion_order_and_empties_the_array_in_place)
{
    double secs[3] = {0.6, 0.2, 0.4};
    concur_future *arr[3];
    /* Timed from before the calls: the first child sleeps from after it, whatever the
     * forks cost (under ASan they took 70 ms, and a clock read after them saw 0.534 s). */
    double t0 = tu_now();
    for (int i = 0; i < 3; i++)
        arr[i] = call(task_sleep_pid, &secs[i], sizeof(secs[i]), NULL);
    concur_future *orig[3] = {arr[0], arr[1], arr[2]};
    size_t n = 3;
    concur_waitfor it;
    cr_assert_eq(concur_waitfor_init(&it, arr, &n, 0), 0);
    int order[3], k = 0, rc;
    concur_future *f;
    while ((rc = concur_waitfor_next(&it, TU_SAFETY, &f)) == CONCUR_WAITFOR_FUTURE) {
        cr_assert_lt(k, 3);
        cr_assert(concur_future_is_done(f));
        int idx = -1;
        for (int i = 0; i < 3; i++)
            if (orig[i] == f)
                idx = i;
        cr_assert_geq(idx, 0);
        order[k++] = idx;
        cr_assert_eq(n, (size_t)(3 - k), "removed from the array");
        for (size_t i = 0; i < n; i++)
            cr_assert_neq(arr[i], f);
        if (k == 1) /* the other two keep their relative order */
            cr_assert(arr[0] == orig[0] && arr[1] == orig[2]);
        concur_future_release(f);
    }
    cr_assert_eq(rc, CONCUR_WAITFOR_END);
    cr_assert_null(f);
    cr_assert_eq(k, 3);
    cr_assert_eq(order[0], 1);
    cr_assert_eq(order[1], 2);
    cr_assert_eq(order[2], 0);
    double el = tu_now() - t0;
    cr_assert_geq(el, 0.6 - TU_EPS, "%.3f s", el);
    cr_assert_lt(el, TU_SANITIZED ? TU_LOOSE(0.6) : 0.9);
    cr_assert_eq(concur_waitfor_next(&it, 0, &f), CONCUR_WAITFOR_END, "END stays");
}

/* One child of the cf test: counts itself in flight, sleeps, leaves. */
static int task_counted_sleep(concur_task *t, const void *in, size_t len)
{
    struct shared *s = tu_in_ptr(in, len);
    int now = atomic_fetch_add(&s->in_flight, 1) + 1;
    int max = atomic_load(&s->max_in_flight);
    while (now > max && !atomic_compare_exchange_weak(&s->max_in_flight, &max, now))
        ;
    double secs = 0.3;
    (void)tu_task_sleep(t, &secs, sizeof(secs));
    atomic_fetch_sub(&s->in_flight, 1);
    return 0;
}

Test(fork, waitfor_with_cf_keeps_at_most_cf_in_flight_and_asks_for_more)
{
    struct shared *s = shared_new();
    enum { TASKS = 7, CF = 3 };
    concur_future *arr[TASKS];
    size_t n = 0;
    int left = TASKS, done = 0, mores = 0, rc;
    double at[TASKS];
    concur_waitfor it;
    cr_assert_eq(concur_waitfor_init(&it, arr, &n, CF), 0);
    double t0 = tu_now();
    concur_future *f;
    while ((rc = concur_waitfor_next(&it, TU_SAFETY, &f)) > 0) {
        if (rc == CONCUR_WAITFOR_MORE) {
            cr_assert_null(f);
            cr_assert_lt(n, (size_t)CF, "asked for more with %zu in flight", n);
            mores++;
            if (left > 0) {
                arr[n++] = call(task_counted_sleep, TU_PTR_IN(s), NULL);
                left--;
            }
            continue;
        }
        cr_assert_lt(done, TASKS);
        at[done++] = tu_now() - t0;
        cr_assert_eq(concur_future_error(f), 0);
        concur_future_release(f);
    }
    cr_assert_eq(rc, CONCUR_WAITFOR_END);
    cr_assert_eq(done, TASKS);
    cr_assert_eq(left, 0);
    cr_assert_eq(n, 0);
    cr_assert_leq(atomic_load(&s->max_in_flight), CF);
    cr_assert_eq(atomic_load(&s->max_in_flight), CF);
    cr_assert_geq(mores, TASKS + 1, "one MORE per call, plus the last unanswered one");
    for (int i = 0; i < TASKS; i++) {
        double want = 0.3 * (i / CF + 1); /* 0.3 0.3 0.3 0.6 0.6 0.6 0.9 */
        cr_assert_geq(at[i], want - TU_EPS, "completion %d at %.3f s, want %.1f", i, at[i], want);
        cr_assert_lt(at[i], TU_SANITIZED ? TU_LOOSE(want) : want + 0.25,
                     "completion %d at %.3f s, want %.1f", i, at[i], want);
    }
}

Test(fork, waitfor_on_an_empty_array_asks_once_then_ends)
{
    concur_future *arr[1];
    size_t n = 0;
    concur_future *f = (concur_future *)&n;
    concur_waitfor it;
    cr_assert_eq(concur_waitfor_init(&it, arr, &n, 0), 0);
    cr_assert_eq(concur_waitfor_next(&it, CONCUR_FOREVER, &f), CONCUR_WAITFOR_END, "cf 0: nothing");
    cr_assert_null(f);

    cr_assert_eq(concur_waitfor_init(&it, arr, &n, 3), 0);
    cr_assert_eq(concur_waitfor_next(&it, CONCUR_FOREVER, &f), CONCUR_WAITFOR_MORE);
    cr_assert_eq(concur_waitfor_next(&it, CONCUR_FOREVER, &f), CONCUR_WAITFOR_END);
    cr_assert_eq(concur_waitfor_next(&it, CONCUR_FOREVER, &f), CONCUR_WAITFOR_END);

    /* Something added after END is waited for. */
    cr_assert_eq(concur_future_create(&arr[0]), 0);
    n = 1;
    cr_assert_eq(concur_future_set_result(arr[0], "a", 1), 0);
    cr_assert_eq(concur_waitfor_next(&it, CONCUR_FOREVER, &f), CONCUR_WAITFOR_FUTURE);
    cr_assert_eq(n, 0);
    concur_future_release(f);
}

/* Any futures work: standalone ones make the order within a sweep exact, and the wait's
 * timeout. */
Test(fork, waitfor_sweeps_in_array_order_blocks_and_times_out)
{
    enum { N = 4 };
    concur_future *arr[N];
    for (int i = 0; i < N; i++)
        cr_assert_eq(concur_future_create(&arr[i]), 0);
    concur_future *orig[N];
    memcpy(orig, arr, sizeof(arr));
    size_t n = N;
    concur_waitfor it;
    cr_assert_eq(concur_waitfor_init(&it, arr, &n, 0), 0);
    /* Finished in the order 3, 0, 2: one sweep hands them out as 0, 2, 3. */
    cr_assert_eq(concur_future_set_result(orig[3], NULL, 0), 0);
    cr_assert_eq(concur_future_set_result(orig[0], NULL, 0), 0);
    cr_assert_eq(concur_future_set_error(orig[2], -EIO, "no"), 0);
    concur_future *f;
    int want[] = {0, 2, 3};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(concur_waitfor_next(&it, 0, &f), CONCUR_WAITFOR_FUTURE);
        cr_assert_eq(f, orig[want[k]], "step %d", k);
        concur_future_release(f);
    }
    cr_assert_eq(n, 1);
    cr_assert_eq(arr[0], orig[1]);
    double t0 = tu_now();
    cr_assert_eq(concur_waitfor_next(&it, 0, &f), CONCUR_ETIMEDOUT, "0: does not block");
    cr_assert_lt(tu_now() - t0, 0.05);
    t0 = tu_now();
    cr_assert_eq(concur_waitfor_next(&it, 0.1, &f), CONCUR_ETIMEDOUT);
    cr_assert_geq(tu_now() - t0, 0.1 - TU_EPS);
    cr_assert_null(f);
    cr_assert(concur_future_cancel(orig[1]));
    cr_assert_eq(concur_waitfor_next(&it, 0, &f), CONCUR_WAITFOR_FUTURE);
    cr_assert_eq(f, orig[1]);
    concur_future_release(f);
    cr_assert_eq(concur_waitfor_next(&it, 0, &f), CONCUR_WAITFOR_END);
}

/* ---- C.58, C.63: no zombie, no fd, no thread left ----------------------------------------- */

struct drain_seen {
    atomic_int rc;
    atomic_int ran;
};

static void drain_from_callback(concur_future *f, void *arg)
{
    (void)f;
    struct drain_seen *s = arg;
    atomic_store(&s->rc, concur_fork_drain(0));
    atomic_store(&s->ran, 1);
}

Test(fork, the_supervisor_leaves_no_thread_fd_or_child_behind)
{
    int fds0 = count_fds(), threads0 = count_threads();
    double secs = 0.1, long_secs = 20;
    size_t big = (size_t)1 << 20;
    concur_fork_opts to = {.timeout = 0.2};
    struct drain_seen ds = {0};
    concur_future *fs[4];
    /* The callback is registered at once, before the other calls (a fork takes a while under
     * TSan): it must run in the supervisor when the call ends, not here at registration. */
    double first_secs = 0.5;
    fs[0] = call(task_sleep_pid, &first_secs, sizeof(first_secs), NULL);
    cr_assert_eq(concur_future_add_callback(fs[0], drain_from_callback, &ds), 0);
    fs[1] = call(task_pattern, &big, sizeof(big), NULL);
    fs[2] = call(task_sleep_pid, &long_secs, sizeof(long_secs), &to);
    int how = END_ABORT;
    fs[3] = call(task_end, &how, sizeof(how), NULL);
    cr_assert_eq(count_threads(), threads0 + 1, "one supervisor thread");
    cr_assert_eq(concur_wait_all(fs, 4, TU_SAFETY), 0);
    cr_assert_eq(concur_fork_drain(TU_SAFETY), 0);
    cr_assert(atomic_load(&ds.ran));
    cr_assert_eq(atomic_load(&ds.rc), CONCUR_EDEADLK, "drain from the supervisor's callback");
    cr_assert_eq(count_fds(), fds0, "every pipe, pidfd, epoll and eventfd is closed");
    cr_assert(no_children());
    bool gone;
    TU_POLL_UNTIL(gone, count_threads() == threads0, TU_SAFETY); /* a detached thread exiting */
    cr_assert(gone, "the supervisor thread is gone (%d threads, %d before)", count_threads(),
              threads0);
    for (int i = 0; i < 4; i++)
        concur_future_release(fs[i]);
    /* And it comes back for the next call. */
    concur_future *f = call(task_sleep_pid, &secs, sizeof(secs), NULL);
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, NULL, NULL), 0);
    concur_future_release(f);
    cr_assert_eq(concur_fork_drain(TU_SAFETY), 0);
    cr_assert_eq(count_fds(), fds0);
}

Test(fork, drain_times_out_while_a_call_is_outstanding)
{
    double secs = 0.5;
    concur_future *f = call(task_sleep_pid, &secs, sizeof(secs), NULL);
    cr_assert_eq(concur_fork_drain(0), CONCUR_ETIMEDOUT);
    double t0 = tu_now();
    cr_assert_eq(concur_fork_drain(0.1), CONCUR_ETIMEDOUT);
    cr_assert_geq(tu_now() - t0, 0.1 - TU_EPS);
    cr_assert_eq(concur_fork_drain(TU_SAFETY), 0);
    cr_assert(concur_future_is_done(f));
    concur_future_release(f);
}

/* ---- calls from several threads --------------------------------------------------------- */

static void *thread_calls(void *arg)
{
    atomic_int *bad = arg;
    for (size_t i = 0; i < 8; i++) {
        size_t len = 1000 + i * 4099;
        concur_future *f;
        if (concur_fork_call(&f, task_pattern, &len, sizeof(len), NULL) != 0) {
            atomic_fetch_add(bad, 1);
            continue;
        }
        const void *d;
        size_t n;
        if (concur_future_collect(f, TU_SAFETY, &d, &n) != 0 || n != len ||
            ((const unsigned char *)d)[len - 1] != pattern(len - 1))
            atomic_fetch_add(bad, 1);
        concur_future_release(f);
    }
    return NULL;
}

Test(fork, calls_from_several_threads_at_once)
{
#if TU_SANITIZED
    cr_skip_test("the allocators of GCC 12's ASan and TSan are not fork-safe while other "
                 "threads allocate: a child can hang in malloc (see docs/fork_calls.md)");
#endif
    atomic_int bad = 0;
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, thread_calls, &bad), 0);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_join(th[i], NULL), 0);
    cr_assert_eq(atomic_load(&bad), 0);
    cr_assert_eq(concur_fork_drain(TU_SAFETY), 0);
    cr_assert(no_children());
}
