/*
 * test_runner.c - the command runner (SPEC section A): one result per command in input
 * order, exit codes and signals, exact output, spawn errors, timeouts that reach the whole
 * process group, worker limits, streaming, stop, retries, output caps, run_prog.
 * Child programs are /bin/sh one-liners; sleeps appear only as the workload of a command.
 */
#include <concur.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define SH(script) ((const char *const[]){"/bin/sh", "-c", (script), NULL})

static concur_runner *batch(const concur_cmd *cmds, size_t n, const concur_runner_opts *o)
{
    concur_runner *r = NULL;
    cr_assert_eq(concur_run_batch(cmds, n, o, &r), 0);
    cr_assert_eq(concur_runner_count(r), n);
    return r;
}

static const concur_result *one(const char *script, double timeout, concur_runner **r)
{
    concur_cmd c = {.argv = SH(script), .timeout = timeout};
    *r = batch(&c, 1, NULL);
    return concur_runner_result(*r, 0);
}

/* No child of this test process is left: every one was reaped. */
static void assert_no_children(void)
{
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1);
    cr_assert_eq(errno, ECHILD);
}

Test(runner, exit_status_and_both_streams)
{
    concur_runner *r;
    const concur_result *x = one("echo out; echo err >&2; exit 3", 0, &r);
    cr_assert(!x->success);
    cr_assert(!x->timeout);
    cr_assert_eq(x->exit_code, 3);
    cr_assert_eq(x->returncode, 3);
    cr_assert_eq(x->out_len, 4);
    cr_assert_eq(memcmp(x->out, "out\n", 4), 0);
    cr_assert_eq(x->err_len, 4);
    cr_assert_eq(memcmp(x->err, "err\n", 4), 0);
    concur_runner_destroy(r);
    assert_no_children();
}

Test(runner, success_and_empty_output)
{
    concur_runner *r;
    const concur_result *x = one("true", 0, &r);
    cr_assert(x->success);
    cr_assert_eq(x->returncode, 0);
    cr_assert_eq(x->out_len, 0);
    cr_assert_eq(x->err_len, 0);
    cr_assert(x->spawned);
    cr_assert_gt(x->pid, 0);
    concur_runner_destroy(r);
}

Test(runner, killed_by_signal_is_negative_returncode)
{
    concur_runner *r;
    const concur_result *x = one("kill -TERM $$", 0, &r);
    cr_assert(!x->success);
    cr_assert_eq(x->signal, SIGTERM);
    cr_assert_eq(x->returncode, -SIGTERM);
    cr_assert_eq(x->exit_code, -1);
    concur_runner_destroy(r);
}

Test(runner, large_outputs_on_both_streams_do_not_deadlock)
{
    concur_runner *r;
    const concur_result *x =
        one("head -c 3000000 /dev/zero; head -c 2000000 /dev/zero >&2; echo end", 0, &r);
    cr_assert(x->success);
    cr_assert_eq(x->out_len, 3000004);
    cr_assert_eq(x->err_len, 2000000);
    cr_assert_eq(memcmp(x->out + 3000000, "end\n", 4), 0);
    concur_runner_destroy(r);
}

Test(runner, binary_output_is_exact)
{
    concur_runner *r;
    const concur_result *x = one("printf 'a\\000b\\377\\000'", 0, &r);
    cr_assert_eq(x->out_len, 5);
    cr_assert_eq(memcmp(x->out, "a\0b\377\0", 5), 0);
    concur_runner_destroy(r);
}

Test(runner, missing_program_fails_only_its_task)
{
    const char *missing[] = {"no-such-program-concur", NULL};
    concur_cmd cmds[] = {{.argv = SH("echo a")}, {.argv = missing, .key = "m"},
                         {.argv = SH("echo c")}};
    concur_runner *r = batch(cmds, 3, NULL);
    const concur_result *m = concur_runner_result(r, 1);
    cr_assert(!m->spawned);
    cr_assert(!m->success);
    cr_assert(!m->timeout);
    cr_assert_eq(m->error, CONCUR_ENOENT);
    cr_assert_eq(m->returncode, -1);
    cr_assert_not_null(m->error_message);
    cr_assert_not_null(strstr(m->error_message, "no-such-program-concur"));
    cr_assert(concur_runner_result(r, 0)->success);
    cr_assert(concur_runner_result(r, 2)->success);
    concur_runner_destroy(r);
}

Test(runner, non_executable_is_permission_error)
{
    char path[] = "/tmp/concur-noexec-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    const char *argv[] = {path, NULL};
    concur_cmd c = {.argv = argv};
    concur_runner *r = batch(&c, 1, NULL);
    cr_assert_eq(concur_runner_result(r, 0)->error, CONCUR_EACCES);
    concur_runner_destroy(r);
    unlink(path);
}

Test(runner, timeout_kills_the_whole_group_and_keeps_partial_output)
{
    char pidfile[] = "/tmp/concur-gc-XXXXXX";
    int fd = mkstemp(pidfile);
    cr_assert_geq(fd, 0);
    close(fd);
    char script[256];
    snprintf(script, sizeof(script), "sleep 30 & echo $! > %s; echo partial; sleep 31", pidfile);
    concur_runner_opts o = {.kill_grace = 0.5};
    concur_cmd c = {.argv = SH(script), .timeout = 0.3};
    double t0 = concur_now();
    concur_runner *r = batch(&c, 1, &o);
    double dt = concur_now() - t0;
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert(x->timeout);
    cr_assert(!x->success);
    cr_assert_eq(x->signal, SIGTERM);
    cr_assert_geq(dt, 0.3);
    cr_assert_lt(dt, 3.0);
    cr_assert_eq(x->out_len, 8, "partial output kept: %zu bytes", x->out_len);
    cr_assert_eq(memcmp(x->out, "partial\n", 8), 0);
    FILE *f = fopen(pidfile, "r");
    cr_assert_not_null(f);
    int gc = 0;
    cr_assert_eq(fscanf(f, "%d", &gc), 1);
    fclose(f);
    unlink(pidfile);
    /* The grandchild was in the job's group: killed too (it may linger as init's zombie for
     * a moment, so look at its state rather than at kill(gc, 0)). */
    char stat[64], buf[256] = "";
    snprintf(stat, sizeof(stat), "/proc/%d/stat", gc);
    FILE *s = fopen(stat, "r");
    if (s) {
        cr_assert_not_null(fgets(buf, sizeof(buf), s));
        fclose(s);
        char *p = strrchr(buf, ')');
        cr_assert(p && (p[2] == 'Z' || p[2] == 'X'), "grandchild %d still running: %s", gc, buf);
    }
    concur_runner_destroy(r);
    assert_no_children();
}

/* A command ends with its process: a daemon it started (in a session of its own, so out of
 * reach of the group's signals) that still holds its stdout delays it by a short grace
 * only, and what the command wrote is kept. */
Test(runner, a_daemon_holding_stdout_does_not_hold_the_command)
{
    concur_cmd c = {.argv = SH("setsid sleep 30 & echo $!; head -c 100000 /dev/zero")};
    double t0 = concur_now();
    concur_runner *r = batch(&c, 1, NULL);
    double dt = concur_now() - t0;
    const concur_result *x = concur_runner_result(r, 0);
    int daemon = atoi((const char *)x->out);
    cr_assert_gt(daemon, 0);
    cr_assert_eq(kill(daemon, SIGKILL), 0, "the daemon outlives the command");
    cr_assert(x->success);
    cr_assert_lt(dt, 10.0, "held %.1f s by the daemon", dt);
    const char *nl = memchr(x->out, '\n', x->out_len);
    cr_assert_not_null(nl);
    cr_assert_eq(x->out_len - (size_t)(nl + 1 - (const char *)x->out), 100000);
    concur_runner_destroy(r);
    assert_no_children();
}

Test(runner, term_ignored_then_killed_after_grace)
{
    concur_runner_opts o = {.kill_grace = 0.2};
    concur_cmd c = {.argv = SH("trap '' TERM; sleep 20"), .timeout = 0.2};
    double t0 = concur_now();
    concur_runner *r = batch(&c, 1, &o);
    double dt = concur_now() - t0;
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert(x->timeout);
    cr_assert_eq(x->signal, SIGKILL);
    cr_assert_geq(dt, 0.4);
    cr_assert_lt(dt, 3.0);
    concur_runner_destroy(r);
}

Test(runner, zero_or_negative_timeout_means_none)
{
    concur_runner_opts o = {.timeout = 0};
    concur_cmd cmds[] = {{.argv = SH("sleep 0.2")}, {.argv = SH("sleep 0.2"), .timeout = -1}};
    concur_runner *r = batch(cmds, 2, &o);
    cr_assert(concur_runner_result(r, 0)->success);
    cr_assert(concur_runner_result(r, 1)->success);
    concur_runner_destroy(r);
}

Test(runner, results_in_input_order_and_fractional_timeouts)
{
    concur_runner_opts o = {.timeout = 1.5}; /* far above a's 0.3 s, even on a loaded host */
    concur_cmd cmds[] = {{.argv = SH("sleep 0.3"), .key = "a"},
                         {.argv = SH("sleep 30"), .key = "b"},
                         {.argv = SH("sleep 0.1"), .key = "c"}};
    double t0 = concur_now();
    concur_runner *r = batch(cmds, 3, &o);
    cr_assert_lt(concur_now() - t0, 10.0);
    const char *keys[] = {"a", "b", "c"};
    for (size_t i = 0; i < 3; i++) {
        cr_assert_str_eq(concur_runner_result(r, i)->key, keys[i]);
        cr_assert_eq(concur_runner_result(r, i)->index, i);
    }
    cr_assert(concur_runner_result(r, 0)->success);
    cr_assert(concur_runner_result(r, 1)->timeout);
    cr_assert(concur_runner_result(r, 2)->success);
    concur_runner_destroy(r);
}

static const char *const sleep02[] = {"/bin/sh", "-c", "sleep 0.2", NULL};

static double run_sleeps(int workers, int n)
{
    concur_cmd cmds[8];
    for (int i = 0; i < n; i++)
        cmds[i] = (concur_cmd){.argv = sleep02};
    concur_runner_opts o = {.max_workers = workers};
    double t0 = concur_now();
    concur_runner *r = batch(cmds, (size_t)n, &o);
    double dt = concur_now() - t0;
    concur_runner_destroy(r);
    return dt;
}

Test(runner, worker_limit_bounds_concurrency)
{
    double two = run_sleeps(2, 4), all = run_sleeps(0, 4), one_at = run_sleeps(1, 4);
    cr_assert_geq(two, 0.4, "2 workers: %f", two);
    cr_assert_lt(two, 0.75, "2 workers: %f", two);
    cr_assert_geq(all, 0.2, "no limit: %f", all);
    cr_assert_lt(all, 0.45, "no limit: %f", all);
    cr_assert_geq(one_at, 0.8, "1 worker: %f", one_at);
}

Test(runner, negative_worker_limit_is_einval)
{
    concur_runner *r = NULL;
    concur_runner_opts o = {.max_workers = -1};
    cr_assert_eq(concur_runner_create(&r, &o), CONCUR_EINVAL);
    cr_assert_null(r);
}

Test(runner, duplicate_keys_and_empty_batch)
{
    concur_cmd cmds[] = {{.argv = SH("echo 1"), .key = "k"}, {.argv = SH("echo 2"), .key = "k"}};
    concur_runner *r = batch(cmds, 2, NULL);
    cr_assert_eq(memcmp(concur_runner_result(r, 1)->out, "2\n", 2), 0);
    concur_runner_destroy(r);
    r = NULL;
    cr_assert_eq(concur_run_batch(NULL, 0, NULL, &r), 0);
    cr_assert_eq(concur_runner_count(r), 0);
    double start, end;
    concur_runner_times(r, &start, &end);
    cr_assert_gt(start, 0);
    cr_assert_geq(end, start);
    concur_runner_destroy(r);
}

Test(runner, queue_wait_is_recorded_apart_from_run_time)
{
    concur_runner_opts o = {.max_workers = 1};
    concur_cmd cmds[] = {{.argv = SH("sleep 0.4")}, {.argv = SH("sleep 0.1")}};
    concur_runner *r = batch(cmds, 2, &o);
    const concur_result *second = concur_runner_result(r, 1);
    cr_assert_geq(second->time_wait, 0.39, "wait %f", second->time_wait);
    cr_assert_geq(second->time_run, 0.1);
    cr_assert_lt(second->time_run, 0.39, "run %f", second->time_run);
    concur_runner_destroy(r);
}

Test(runner, prefix_plus_arg_form)
{
    const char *prefix[] = {"/bin/echo", "x", NULL};
    concur_runner_opts o = {.prefix = prefix};
    concur_cmd cmds[] = {{.arg = "1", .key = "one"}, {.arg = "two words"}};
    concur_runner *r = batch(cmds, 2, &o);
    cr_assert_eq(concur_runner_result(r, 0)->out_len, 4);
    cr_assert_eq(memcmp(concur_runner_result(r, 0)->out, "x 1\n", 4), 0);
    cr_assert_eq(memcmp(concur_runner_result(r, 1)->out, "x two words\n", 12), 0);
    cr_assert_str_eq(concur_runner_result(r, 1)->arg, "two words");
    concur_runner_destroy(r);
}

Test(runner, stdin_is_dev_null_unless_input_given)
{
    concur_cmd cmds[] = {{.argv = SH("cat; echo done")},
                         {.argv = SH("cat"), .input = "hello\n", .input_len = 6}};
    concur_runner *r = batch(cmds, 2, NULL);
    cr_assert_eq(concur_runner_result(r, 0)->out_len, 5);
    cr_assert_eq(memcmp(concur_runner_result(r, 1)->out, "hello\n", 6), 0);
    concur_runner_destroy(r);
}

Test(runner, environment_cwd_and_fds)
{
    const char *add[] = {"CONCUR_T=added", NULL};
    const char *env[] = {"ONLY=this", "PATH=/usr/bin:/bin", NULL};
    /* An fd this process leaves open without O_CLOEXEC must not reach the child. */
    int leak = open("/dev/null", O_RDONLY);
    cr_assert_geq(leak, 3);
    char probe[128];
    snprintf(probe, sizeof(probe), "[ -e /proc/$$/fd/%d ] && echo leaked || echo clean", leak);
    concur_cmd cmds[] = {{.argv = SH("echo $CONCUR_T"), .env_add = add},
                         {.argv = SH("echo ${HOME:-none} $ONLY"), .env = env},
                         {.argv = SH("pwd"), .cwd = "/usr"},
                         {.argv = SH(probe)}};
    concur_runner *r = batch(cmds, 4, NULL);
    close(leak);
    cr_assert_eq(memcmp(concur_runner_result(r, 0)->out, "added\n", 6), 0);
    cr_assert_eq(memcmp(concur_runner_result(r, 1)->out, "none this\n", 10), 0);
    cr_assert_eq(memcmp(concur_runner_result(r, 2)->out, "/usr\n", 5), 0);
    const concur_result *fds = concur_runner_result(r, 3);
    cr_assert_eq(fds->out_len, 6, "fd %d in the child: %.*s", leak, (int)fds->out_len, fds->out);
    cr_assert_eq(memcmp(fds->out, "clean\n", 6), 0);
    concur_runner_destroy(r);
}

struct stream_state {
    size_t done[8];
    size_t ndone;
    size_t out_bytes;
};

static int on_done_record(concur_runner *r, const concur_result *res, void *arg)
{
    (void)r;
    struct stream_state *s = arg;
    s->done[s->ndone++] = res->index;
    s->out_bytes += res->out_len;
    return 0;
}

/* Sources hand out argv arrays that outlive the call (static storage). Command 1 ends at
 * once; command 2 waits for a line on g_fifo[0], written when command 1 is reported done;
 * command 0 waits on g_fifo[1], written when command 2 is: completion order 1, 2, 0 by
 * construction, however slow the machine. */
static char g_fifo[2][PATH_MAX];
static char g_wait_line[2][PATH_MAX + 64];
static const char *g_chain_argv[3][4];

static int chain_source(void *arg, size_t index, concur_cmd *cmd)
{
    (void)arg;
    if (index >= 3)
        return 0;
    cmd->argv = g_chain_argv[index];
    return 1;
}

static void release_fifo(const char *path)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC); /* waits for the command to open it */
    cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, "\n", 1), 1);
    close(fd);
}

static int on_done_chain(concur_runner *r, const concur_result *res, void *arg)
{
    on_done_record(r, res, arg);
    if (res->index == 1)
        release_fifo(g_fifo[0]);
    else if (res->index == 2)
        release_fifo(g_fifo[1]);
    return 0;
}

Test(runner, streaming_delivers_in_completion_order_and_keeps_nothing)
{
    for (int i = 0; i < 2; i++) {
        tu_fifo_make(g_fifo[i], sizeof g_fifo[i]);
        int n = snprintf(g_wait_line[i], sizeof g_wait_line[i], "read x < '%s'; echo %c",
                         g_fifo[i], i ? 'a' : 'c');
        cr_assert(n > 0 && (size_t)n < sizeof g_wait_line[i]);
    }
    const char *chain[3][4] = {{"/bin/sh", "-c", g_wait_line[1], NULL},
                               {"/bin/sh", "-c", "echo b", NULL},
                               {"/bin/sh", "-c", g_wait_line[0], NULL}};
    memcpy(g_chain_argv, chain, sizeof chain);
    struct stream_state s = {0};
    concur_runner_opts o = {.on_done = on_done_chain, .cb_arg = &s}; /* all 3 at once */
    concur_runner *r;
    cr_assert_eq(concur_runner_create(&r, &o), 0);
    cr_assert_eq(concur_runner_run(r, chain_source, NULL), 0);
    cr_assert_eq(s.ndone, 3);
    cr_assert_eq(s.done[0], 1);
    cr_assert_eq(s.done[1], 2);
    cr_assert_eq(s.done[2], 0);
    cr_assert_eq(s.out_bytes, 6);
    cr_assert_eq(concur_runner_count(r), 0);
    concur_runner_destroy(r);
    tu_fifo_remove(g_fifo[0]);
    tu_fifo_remove(g_fifo[1]);
}

static int stop_on_first(concur_runner *r, const concur_result *res, void *arg)
{
    (void)res;
    (void)arg;
    concur_runner_stop(r, CONCUR_STOP_TERM);
    return 0;
}

static const char *const fail_argv[] = {"/bin/sh", "-c", "exit 1", NULL};
static const char *const long_argv[] = {"/bin/sh", "-c", "sleep 30", NULL};

static int endless_source(void *arg, size_t index, concur_cmd *cmd)
{
    (void)arg;
    cmd->argv = index == 0 ? fail_argv : long_argv;
    return 1;
}

Test(runner, stop_from_callback_terminates_running_commands)
{
    concur_runner_opts o = {.max_workers = 3, .on_done = stop_on_first, .kill_grace = 0.3};
    concur_runner *r;
    cr_assert_eq(concur_runner_create(&r, &o), 0);
    double t0 = concur_now();
    cr_assert_eq(concur_runner_run(r, endless_source, NULL), CONCUR_ECANCELED);
    cr_assert_lt(concur_now() - t0, 3.0);
    concur_runner_destroy(r);
    assert_no_children();
}

Test(runner, stop_fd_stops_the_run)
{
    int efd = eventfd(1, EFD_CLOEXEC); /* already readable: stop at the first look */
    cr_assert_geq(efd, 0);
    concur_runner_opts o = {.max_workers = 2, .stop_fd = efd, .kill_grace = 0.3};
    concur_runner *r;
    cr_assert_eq(concur_runner_create(&r, &o), 0);
    double t0 = concur_now();
    cr_assert_eq(concur_runner_run(r, endless_source, NULL), CONCUR_ECANCELED);
    cr_assert_lt(concur_now() - t0, 3.0);
    concur_runner_destroy(r);
    close(efd);
    assert_no_children();
}

/* CONCUR_RUN_SOURCE_WAIT: a source whose second command comes only once a pipe has a byte,
 * which the first command's on_done writes. The loop must run the first command to its end
 * while the source has nothing. */
struct waiting_source {
    int fds[2]; /* [0] non-blocking */
    int eagain;
    size_t order[2], ndone, nsuccess;
};

static const char *const first_argv[] = {"/bin/sh", "-c", "echo first", NULL};
static const char *const second_argv[] = {"/bin/sh", "-c", "echo second", NULL};

static int waiting_source(void *arg, size_t index, concur_cmd *cmd)
{
    struct waiting_source *w = arg;
    if (index == 0) {
        cmd->argv = first_argv;
        return 1;
    }
    if (index > 1)
        return 0;
    char c;
    if (read(w->fds[0], &c, 1) != 1) {
        cr_assert_eq(errno, EAGAIN);
        w->eagain++;
        return CONCUR_EAGAIN;
    }
    cmd->argv = second_argv;
    return 1;
}

static int waiting_source_done(concur_runner *r, const concur_result *res, void *arg)
{
    struct waiting_source *w = arg;
    (void)r;
    w->nsuccess += res->success;
    w->order[w->ndone++] = res->index;
    if (res->index == 0)
        cr_assert_eq(write(w->fds[1], "x", 1), 1);
    return 0;
}

Test(runner, source_wait_runs_commands_while_the_source_has_none)
{
    struct waiting_source w = {0};
    cr_assert_eq(pipe2(w.fds, O_CLOEXEC), 0);
    cr_assert_eq(fcntl(w.fds[0], F_SETFL, O_NONBLOCK), 0);
    concur_runner_opts o = {.max_workers = 2,
                            .flags = CONCUR_RUN_SOURCE_WAIT,
                            .source_fd = w.fds[0],
                            .on_done = waiting_source_done,
                            .cb_arg = &w};
    concur_runner *r;
    cr_assert_eq(concur_runner_create(&r, &o), 0);
    cr_assert_eq(concur_runner_run(r, waiting_source, &w), 0);
    cr_assert_eq(w.ndone, 2);
    cr_assert_eq(w.nsuccess, 2);
    cr_assert_eq(w.order[0], 0);
    cr_assert_eq(w.order[1], 1);
    cr_assert_geq(w.eagain, 1);
    /* Without the flag, CONCUR_EAGAIN is the source's error. */
    concur_runner_destroy(r);
    o.flags = 0;
    w.ndone = 0;
    cr_assert_eq(concur_runner_create(&r, &o), 0);
    cr_assert_eq(concur_runner_run(r, waiting_source, &w), CONCUR_EAGAIN);
    concur_runner_destroy(r);
    /* A descriptor epoll refuses fails the run, as it waits for it. */
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    cr_assert_geq(null, 0);
    char c;
    while (read(w.fds[0], &c, 1) == 1) {
    }
    o.flags = CONCUR_RUN_SOURCE_WAIT;
    o.source_fd = null;
    w.ndone = 0;
    cr_assert_eq(concur_runner_create(&r, &o), 0);
    cr_assert_eq(concur_runner_run(r, waiting_source, &w), -EPERM);
    concur_runner_destroy(r);
    close(null);
    close(w.fds[0]);
    close(w.fds[1]);
    assert_no_children();
}

static int retry_failures(concur_runner *r, const concur_result *res, void *arg)
{
    (void)r;
    (*(int *)arg)++;
    return !res->success;
}

Test(runner, retries_rerun_a_failed_command)
{
    char path[] = "/tmp/concur-retry-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    char script[256];
    /* Fails twice, then succeeds: counts its runs in a file. */
    snprintf(script, sizeof(script), "echo x >> %s; test $(wc -l < %s) -ge 3", path, path);
    int calls = 0;
    concur_runner_opts o = {.retries = 3, .on_done = retry_failures, .cb_arg = &calls,
                            .flags = CONCUR_RUN_KEEP_RESULTS};
    concur_cmd c = {.argv = SH(script)};
    concur_runner *r = batch(&c, 1, &o);
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert(x->success);
    cr_assert_eq(x->attempts, 3);
    cr_assert_eq(calls, 3);
    concur_runner_destroy(r);
    unlink(path);
}

Test(runner, output_past_the_cap_spills_and_stays_exact)
{
    concur_runner_opts o = {.output_cap = 1000};
    concur_cmd c = {.argv = SH("i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done")};
    concur_runner *r = batch(&c, 1, &o);
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert(x->success);
    cr_assert(!x->out_truncated);
    cr_assert_gt(x->out_len, 1000);
    cr_assert_eq(memcmp(x->out, "line0\nline1\n", 12), 0);
    cr_assert_eq(memcmp(x->out + x->out_len - 9, "line1999\n", 9), 0);
    cr_assert(x->out_mapped, "a spilled stream is a mapping of its file");
    cr_assert(!x->err_mapped);
    /* its pages may be dropped once read: they come back from the file */
    cr_assert_eq(madvise((void *)x->out, x->out_len, MADV_DONTNEED), 0);
    cr_assert_eq(memcmp(x->out + x->out_len - 9, "line1999\n", 9), 0);
    concur_runner_destroy(r);
}

/* Output past the cap that cannot be spilled (TMPDIR missing): the run fails, and the
 * command's record says why, naming the directory; it is not a success. */
Test(runner, output_that_cannot_spill_fails_its_record_naming_tmpdir)
{
    cr_assert_eq(setenv("TMPDIR", "/nonexistent/concur-tmp", 1), 0);
    concur_runner_opts o = {.output_cap = 1000};
    concur_cmd c = {.argv = SH("head -c 5000 /dev/zero")};
    concur_runner *r = NULL;
    int rc = concur_run_batch(&c, 1, &o, &r);
    cr_assert_eq(rc, CONCUR_ENOENT, "run: %d", rc);
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert_not_null(x);
    cr_assert(!x->success);
    cr_assert_eq(x->error, CONCUR_ENOENT);
    cr_assert_not_null(x->error_message);
    cr_assert_not_null(strstr(x->error_message, "'/nonexistent/concur-tmp'"), "%s",
                       x->error_message);
    concur_runner_destroy(r);
    assert_no_children();
}

Test(runner, truncate_policy_keeps_the_first_bytes)
{
    concur_runner_opts o = {.output_cap = 100, .flags = CONCUR_RUN_TRUNCATE};
    concur_cmd c = {.argv = SH("head -c 5000 /dev/zero")};
    concur_runner *r = batch(&c, 1, &o);
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert(x->out_truncated);
    cr_assert_eq(x->out_len, 100);
    concur_runner_destroy(r);
}

Test(runner, print_results_format)
{
    concur_cmd cmds[] = {{.argv = SH("echo hi"), .key = "k1", .arg = "a1"},
                         {.argv = SH("exit 2"), .key = "k2"}};
    concur_runner *r = batch(cmds, 2, NULL);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_eq(concur_print_results(f, r), 0);
    fclose(f);
    cr_assert_eq(strncmp(buf, "**********\nTest start time : ", 29), 0);
    cr_assert_not_null(strstr(buf, "\n Total run time : "));
    cr_assert_not_null(strstr(buf, "\n========================================\n"));
    cr_assert_not_null(strstr(buf, "\nkey                 : k1\n"));
    cr_assert_not_null(strstr(buf, "\nstdout              : hi\n"));
    cr_assert_not_null(strstr(buf, "\nsuccess             : False\n"));
    cr_assert_not_null(strstr(buf, "\nreturncode          : 2\n"));
    /* time_start in epoch seconds with one decimal, time_run with one decimal */
    const char *ts = strstr(buf, "\ntime_start          : ");
    cr_assert_not_null(ts);
    double v = 0;
    int used = 0;
    cr_assert_eq(sscanf(ts + 23, "%lf%n", &v, &used), 1);
    cr_assert_gt(v, 1.6e9, "epoch seconds: %f", v);
    cr_assert_eq(ts[23 + used - 2], '.', "one decimal: %.30s", ts + 23);
    cr_assert_eq(ts[23 + used], '\n');
    cr_assert_not_null(strstr(buf, "\ntime_run            : 0."));
    /* No stdout line for the command that printed nothing. */
    cr_assert_null(strstr(strstr(buf, "key                 : k2"), "stdout"));
    free(buf);
    concur_runner_destroy(r);
}

Test(run_prog, delivers_large_input_and_drains_after_failure)
{
    static char big[1 << 20];
    memset(big, 'y', sizeof(big));
    const char *cat[] = {"cat", NULL};
    concur_prog_output o;
    cr_assert_eq(concur_run_prog(cat, big, sizeof(big), NULL, 0, &o), 0);
    cr_assert_eq(o.returncode, 0);
    cr_assert_eq(o.out_len, sizeof(big));
    concur_prog_output_free(&o);
    const char *fail[] = {"/bin/sh", "-c", "head -c 300000 /dev/zero; exit 1", NULL};
    cr_assert_eq(concur_run_prog(fail, NULL, 0, NULL, 0, &o), 0);
    cr_assert_eq(o.returncode, 1);
    cr_assert_eq(o.out_len, 300000);
    concur_prog_output_free(&o);
}

Test(run_prog, empty_argv_missing_program_and_false)
{
    concur_prog_output o;
    const char *none[] = {NULL};
    cr_assert_eq(concur_run_prog(none, NULL, 0, NULL, 0, &o), 0);
    cr_assert_eq(o.returncode, 0);
    cr_assert_eq(o.out_len, 0);
    concur_prog_output_free(&o);
    const char *missing[] = {"no-such-program-concur", NULL};
    cr_assert_eq(concur_run_prog(missing, NULL, 0, NULL, 0, &o), 0);
    cr_assert_eq(o.returncode, 1);
    cr_assert_gt(o.err_len, 0);
    concur_prog_output_free(&o);
    const char *f[] = {"/usr/bin/false", NULL};
    cr_assert_eq(concur_run_prog(f, NULL, 0, NULL, 0, &o), 0);
    cr_assert_neq(o.returncode, 0);
    concur_prog_output_free(&o);
    const char *envp[] = {"A=1", NULL};
    const char *show[] = {"/bin/sh", "-c", "echo $A", NULL};
    cr_assert_eq(concur_run_prog(show, NULL, 0, envp, 0, &o), 0);
    cr_assert_str_eq((const char *)o.out, "1\n");
    concur_prog_output_free(&o);
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* SPEC A.31: a child that closes its outputs and keeps running is waited for without
 * spinning. */
Test(run_prog, waits_without_spinning)
{
    const char *argv[] = {"/bin/sh", "-c", "exec >&- 2>&-; sleep 0.5", NULL};
    concur_prog_output o;
    double c0 = cpu_seconds(), t0 = concur_now();
    cr_assert_eq(concur_run_prog(argv, NULL, 0, NULL, 0, &o), 0);
    double wall = concur_now() - t0, cpu = cpu_seconds() - c0;
    cr_assert_geq(wall, 0.5);
    cr_assert_lt(cpu, 0.1, "burned %f s of CPU over %f s", cpu, wall);
    cr_assert_eq(o.returncode, 0);
    concur_prog_output_free(&o);
}

struct stop_count {
    int done, started;
    bool saw_stopped;
};

static int stop_start_on_failure(concur_runner *r, const concur_result *res, void *arg)
{
    struct stop_count *c = arg;
    c->done++;
    if (!res->success)
        concur_runner_stop(r, CONCUR_STOP_START);
    return 0;
}

static void count_start(concur_runner *r, size_t index, const concur_cmd *cmd, pid_t pid,
                        void *arg)
{
    (void)r;
    (void)index;
    (void)cmd;
    (void)pid;
    ((struct stop_count *)arg)->started++;
}

/* A stop asked for in on_done applies before the next start: with one slot, nothing
 * starts after the failing command. */
Test(runner, stop_in_on_done_starts_nothing_more)
{
    struct stop_count c = {0};
    concur_runner_opts o = {.max_workers = 1, .on_done = stop_start_on_failure,
                            .on_start = count_start, .cb_arg = &c};
    concur_runner *r;
    cr_assert_eq(concur_runner_create(&r, &o), 0);
    cr_assert_eq(concur_runner_run(r, endless_source, NULL), CONCUR_ECANCELED);
    cr_assert_eq(c.started, 1);
    cr_assert_eq(c.done, 1);
    concur_runner_destroy(r);
}

static int note_stopped(concur_runner *r, const concur_result *res, void *arg)
{
    struct stop_count *c = arg;
    if (!res->success && !res->stopped && res->exit_code == 1)
        concur_runner_stop(r, CONCUR_STOP_TERM); /* the failing command: stop the rest */
    if (res->stopped) {
        c->saw_stopped = true;
        cr_assert(!res->timeout, "stopped by the run, not by its timeout");
    }
    c->done++;
    return 0;
}

Test(runner, commands_ended_by_a_stop_say_so)
{
    struct stop_count c = {0};
    concur_runner_opts o = {.max_workers = 2, .on_done = note_stopped, .cb_arg = &c,
                            .kill_grace = 0.3};
    concur_runner *r;
    cr_assert_eq(concur_runner_create(&r, &o), 0);
    cr_assert_eq(concur_runner_run(r, endless_source, NULL), CONCUR_ECANCELED);
    cr_assert(c.saw_stopped);
    cr_assert_eq(c.done, 2);
    concur_runner_destroy(r);
}

/* Many jobs with large output reuse capture buffers and stay exact. */
static const char *const mb_argv[] = {"/bin/sh", "-c", "head -c 300000 /dev/zero; echo z", NULL};

static int mb_source(void *arg, size_t index, concur_cmd *cmd)
{
    (void)arg;
    if (index >= 20)
        return 0;
    cmd->argv = mb_argv;
    return 1;
}

static int check_mb(concur_runner *r, const concur_result *res, void *arg)
{
    (void)r;
    cr_assert_eq(res->out_len, 300002);
    cr_assert_eq(res->out[0], 0);
    cr_assert_eq(memcmp(res->out + 300000, "z\n", 2), 0);
    (*(int *)arg)++;
    return 0;
}

Test(runner, capture_buffers_are_reused_across_jobs)
{
    int n = 0;
    concur_runner_opts o = {.max_workers = 2, .on_done = check_mb, .cb_arg = &n};
    concur_runner *r;
    cr_assert_eq(concur_runner_create(&r, &o), 0);
    cr_assert_eq(concur_runner_run(r, mb_source, NULL), 0);
    cr_assert_eq(n, 20);
    concur_runner_destroy(r);
}

/* A termination sequence is followed step by step, then SIGKILL. */
Test(runner, termination_sequence_step_by_step)
{
    concur_term_step seq[] = {{SIGINT, 0.2}, {SIGTERM, 0.2}};
    concur_runner_opts o = {.term_seq = seq, .term_seq_len = 2};
    concur_cmd c = {.argv = SH("trap 'echo int >&2' INT; trap 'echo term >&2' TERM; "
                               "while :; do sleep 0.05; done"),
                    .timeout = 0.1};
    double t0 = concur_now();
    concur_runner *r = batch(&c, 1, &o);
    double dt = concur_now() - t0;
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert(x->timeout);
    cr_assert_eq(x->signal, SIGKILL);
    cr_assert_geq(dt, 0.5, "%f", dt);
    cr_assert_lt(dt, 3.0, "%f", dt);
    cr_assert_not_null(memmem(x->err, x->err_len, "int\n", 4));
    cr_assert_not_null(memmem(x->err, x->err_len, "term\n", 5));
    cr_assert_lt((const unsigned char *)memmem(x->err, x->err_len, "int\n", 4),
                 (const unsigned char *)memmem(x->err, x->err_len, "term\n", 5));
    concur_runner_destroy(r);
}

Test(runner, bad_termination_sequence_is_einval)
{
    concur_term_step seq[] = {{0, 0.1}};
    concur_runner_opts o = {.term_seq = seq, .term_seq_len = 1};
    concur_runner *r = NULL;
    cr_assert_eq(concur_runner_create(&r, &o), CONCUR_EINVAL);
    cr_assert_null(r);
}

static int never_called(concur_task *t, const char *key, int argc, const char *const *argv)
{
    (void)key;
    (void)argc;
    (void)argv;
    return concur_task_fail(t, CONCUR_EINVAL, "a command was run as a function");
}

/* A runner with a function still runs commands given as argv; their records say so and
 * have no answer (pyconcurrent's suite itself is in test_runner_fn.c, for commands too). */
Test(runner, commands_beside_a_function_stay_commands)
{
    concur_runner_opts o = {.fn = never_called};
    concur_cmd cmds[] = {{.argv = SH("echo hi")}, {.argv = SH("exit 4")}};
    concur_runner *r = batch(cmds, 2, &o);
    const concur_result *x = concur_runner_result(r, 0);
    cr_assert(x->success);
    cr_assert_not(x->function);
    cr_assert_null(x->answer);
    cr_assert_eq(x->answer_len, 0);
    cr_assert_gt(x->pid, 0);
    cr_assert_eq(memcmp(x->out, "hi\n", 3), 0);
    cr_assert_eq(concur_runner_result(r, 1)->returncode, 4);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_eq(concur_print_results(f, r), 0);
    fclose(f);
    cr_assert_null(strstr(buf, "answer"), "no answer line for commands");
    free(buf);
    concur_runner_destroy(r);
}
