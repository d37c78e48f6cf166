/*
 * concurrently_waiter.c - the waiter: collect, suppress_exceptions, fail_hard, exceptions(),
 * stop().
 *
 * Python's concurrently returns a Waiter; calling it waits for the copies and raises
 * UnhandledExceptions when some failed, unless suppress_exceptions; fail_hard stops the
 * others at the first error and raises that one; exceptions() lists the errors; stop()
 * interrupts the copies. In C the swarm is the waiter, the mode is chosen at start
 * (concur_swarm_opts.mode), and errors are codes with messages:
 *
 *   Python                               concur
 *   waiter()  -> UnhandledExceptions     concur_swarm_wait() -> CONCUR_ETASK (COLLECT)
 *   str(UnhandledExceptions)             concur_swarm_format_errors()
 *   waiter(suppress_exceptions=True)     mode CONCUR_SWARM_SUPPRESS: wait returns 0
 *   waiter(fail_hard=True)               mode CONCUR_SWARM_FAIL_HARD: the copy's own code
 *   waiter.exceptions()                  concur_swarm_errors(sw, i, &err)
 *   waiter.stop()                        concur_swarm_stop(sw, timeout)
 *
 * Each copy below handles one "job" (its index): job 1 fails; the others take 30 ms, or
 * run until stopped when `endless` is set.
 *
 * Exit status: 0 when every outcome is the expected one, 1 otherwise.
 */
#include <concur.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct jobs {
    bool endless;
};

static int job(concur_task *t, const void *in, size_t len)
{
    struct jobs j;
    if (len != sizeof j)
        return concur_task_fail(t, CONCUR_EINVAL, "expected struct jobs");
    memcpy(&j, in, sizeof j);
    int me = concur_swarm_index(t);
    if (me == 1)
        return concur_task_fail(t, -EIO, "job %d: the disk said no", me);
    /* Thread copies cannot be killed: a long one polls concur_task_should_stop(). */
    for (int ms = 0; j.endless || ms < 30; ms++) {
        if (concur_task_should_stop(t))
            return concur_task_fail(t, CONCUR_ECANCELED, "job %d: stopped", me);
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Runs 3 copies of job in @mode, waits, prints the outcome and the errors; returns what
 * the wait returned. */
static int run(const char *title, concur_swarm_mode mode)
{
    struct jobs j = {.endless = mode == CONCUR_SWARM_FAIL_HARD};
    concur_swarm_opts opts = {.mode = mode};
    concur_swarm *sw;
    int rc = concur_swarm_start(&sw, 3, job, &j, sizeof j, &opts);
    if (rc < 0)
        return rc;
    rc = concur_swarm_wait(sw, CONCUR_FOREVER);
    char text[256];
    concur_swarm_format_errors(sw, text, sizeof text);
    printf("%s: wait returned %d (%s), %zu error(s):\n%s", title, rc,
           rc ? concur_err_name(rc) : "ok", concur_swarm_errors(sw, 0, NULL), text);
    concur_swarm_destroy(sw);
    return rc;
}

int main(void)
{
    int ok = 1;
    ok &= run("collect", CONCUR_SWARM_COLLECT) == CONCUR_ETASK;
    ok &= run("suppress_exceptions", CONCUR_SWARM_SUPPRESS) == 0;
    /* The endless copies would never end: fail_hard stops them at job 1's error. */
    ok &= run("fail_hard", CONCUR_SWARM_FAIL_HARD) == -EIO;

    /* stop(): endless copies, in SUPPRESS mode; job 1's error came before the stop and is
     * kept, the stopped copies' errors are swallowed. */
    struct jobs j = {.endless = true};
    concur_swarm_opts opts = {.mode = CONCUR_SWARM_SUPPRESS};
    concur_swarm *sw;
    if (concur_swarm_start(&sw, 3, job, &j, sizeof j, &opts) == 0) {
        concur_swarm_err err;
        while (concur_swarm_errors(sw, 0, &err) == 0) /* until job 1 has failed */
            (void)concur_swarm_wait(sw, 0.001);
        int rc = concur_swarm_stop(sw, 5.0);
        printf("stop returned %d; %zu error(s), the first of copy %d: %s\n", rc,
               concur_swarm_errors(sw, 0, NULL), err.index, err.message);
        ok &= rc == 0 && concur_swarm_errors(sw, 0, NULL) == 1 && err.index == 1;
        concur_swarm_destroy(sw);
    } else {
        ok = 0;
    }
    return ok ? 0 : 1;
}
