/*
 * futures_callbacks.c - the future of one task, from submit to result.
 *
 * Three parts:
 *   1. one task: submit divide(10, 2), add a callback, collect with a timeout, read the
 *      durations, cancel (too late), wait, read the result; then a task that fails
 *      (divide by zero) with an error code and a message;
 *   2. cancelling a task that has not started yet;
 *   3. a batch of tasks followed with concur_as_done() as they finish: the size of a few
 *      files, one of which does not exist.
 *
 * Exit status: 0 when everything behaved as described, 1 otherwise.
 */
#include <concur.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "futures_callbacks: line %d: ", __LINE__);                     \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            goto fail;                                                                     \
        }                                                                                  \
    } while (0)

/* ---- 1. one task ------------------------------------------------------------------ */

/* A task's input is bytes: several arguments travel as one struct. */
struct division {
    long x, y;
};

static int divide(concur_task *t, const void *in, size_t len)
{
    struct division d;

    if (len != sizeof d)
        return concur_task_fail(t, CONCUR_EINVAL, "expected %zu input bytes, got %zu",
                                sizeof d, len);
    memcpy(&d, in, sizeof d);
    if (d.y == 0)
        return concur_task_fail(t, CONCUR_EINVAL, "division by zero (%ld / %ld)", d.x, d.y);
    long q = d.x / d.y;
    return concur_task_return(t, &q, sizeof q); /* the result is bytes, copied */
}

/* What the callback saw. The callback may run in a worker thread, so it only counts and
 * signals; main() prints. */
struct seen {
    atomic_int calls;
    concur_future *signal; /* a standalone future (a promise) completed by the callback */
};

static void on_done(concur_future *f, void *arg)
{
    struct seen *s = arg;
    atomic_fetch_add(&s->calls, 1);
    /* Completing another future from a callback is allowed: no concur lock is held here.
     * The payload is the state the callback saw. */
    concur_state st = concur_future_state(f);
    (void)concur_future_set_result(s->signal, &st, sizeof st);
}

static void count_call(concur_future *f, void *arg)
{
    (void)f;
    atomic_fetch_add((atomic_int *)arg, 1);
}

static int read_long(concur_future *f, long *v)
{
    const void *data;
    size_t len;
    int rc = concur_future_result(f, &data, &len);
    if (rc < 0)
        return rc;
    if (len != sizeof *v)
        return CONCUR_EINVAL;
    memcpy(v, data, sizeof *v); /* the bytes may not be aligned for a long: copy them */
    return 0;
}

static int one_task(void)
{
    concur_pool *pool = NULL;
    concur_future *f = NULL, *bad = NULL;
    struct seen seen = {.calls = 0, .signal = NULL};
    atomic_int late_calls = 0;
    const void *data;
    size_t len;
    long result;
    int rc;

    concur_pool_opts opts = {.max_workers = 4, .name = "divide"};
    rc = concur_pool_create(&pool, &opts);
    CHECK(rc == 0, "pool_create: %s", concur_strerror(rc));
    rc = concur_future_create(&seen.signal);
    CHECK(rc == 0, "future_create: %s", concur_strerror(rc));

    /* Submit a task: divide(10, 2). The input struct is copied, so it may live on the stack. */
    struct division d = {10, 2};
    rc = concur_pool_submit(pool, divide, &d, sizeof d, &f);
    CHECK(rc == 0, "submit: %s", concur_strerror(rc));
    printf("submitted task %llu (%s)\n", (unsigned long long)concur_future_id(f),
           concur_state_name(concur_future_state(f)));

    /* Add a callback; it runs exactly once, when the future is done (at once, in this
     * thread, if it already is). */
    rc = concur_future_add_callback(f, on_done, &seen);
    CHECK(rc == 0, "add_callback: %s", concur_strerror(rc));

    /* Collect the result: blocks at most 42 s until the future is done. */
    rc = concur_future_collect(f, 42, &data, &len);
    CHECK(rc == 0, "collect: %s", concur_strerror(rc));
    CHECK(len == sizeof result, "result has %zu bytes", len);
    memcpy(&result, data, sizeof result);
    CHECK(result == 5, "10 / 2 gave %ld", result);
    printf("divide(10, 2) = %ld\n", result);

    /* The callback completes `signal` before it returns; wait for it to be sure it ran. */
    rc = concur_future_collect(seen.signal, 42, &data, &len);
    CHECK(rc == 0 && len == sizeof(concur_state), "callback signal: %s", concur_strerror(rc));
    concur_state cb_state;
    memcpy(&cb_state, data, sizeof cb_state);
    CHECK(atomic_load(&seen.calls) == 1, "callback ran %d times", atomic_load(&seen.calls));
    printf("callback ran once and saw the future %s\n", concur_state_name(cb_state));

    /* A callback added to a finished future runs at once, in this thread. */
    rc = concur_future_add_callback(f, count_call, &late_calls);
    CHECK(rc == 0, "add_callback: %s", concur_strerror(rc));
    CHECK(atomic_load(&late_calls) == 1, "late callback ran %d times",
          atomic_load(&late_calls));

    /* Durations in seconds: time spent queued, then time spent running. */
    double pending, running;
    concur_future_durations(f, &pending, &running);
    printf("pending %.6f s, running %.6f s\n", pending, running);
    CHECK(pending >= 0 && running >= 0, "negative duration");

    /* Cancel: too late, the task is done. Nothing changes but the cancel flag. */
    bool cancelled = concur_future_cancel(f);
    CHECK(!cancelled, "cancel of a finished task succeeded");
    CHECK(concur_future_cancel_requested(f), "cancel flag not set");
    CHECK(concur_future_state(f) == CONCUR_DONE, "state %s after a late cancel",
          concur_state_name(concur_future_state(f)));
    printf("cancel: too late, the future stays %s\n", concur_state_name(concur_future_state(f)));

    /* We could have waited for the future instead (0: it is done, whatever the outcome). */
    rc = concur_future_wait(f, 42);
    CHECK(rc == 0, "wait: %s", concur_strerror(rc));

    /* Read the result without blocking: CONCUR_EAGAIN if it were not done yet. */
    rc = read_long(f, &result);
    CHECK(rc == 0 && result == 5, "result: %s", concur_strerror(rc));
    CHECK(concur_future_is_done(f), "not done");
    CHECK(concur_future_error(f) == 0, "error %d on a done future", concur_future_error(f));

    /* A task that fails: the collect returns its error code, the message comes with it. */
    struct division by_zero = {10, 0};
    rc = concur_pool_submit(pool, divide, &by_zero, sizeof by_zero, &bad);
    CHECK(rc == 0, "submit: %s", concur_strerror(rc));
    rc = concur_future_collect(bad, 42, NULL, NULL);
    CHECK(rc == CONCUR_EINVAL, "divide(10, 0) gave %d (%s)", rc, concur_strerror(rc));
    CHECK(concur_future_state(bad) == CONCUR_FAILED, "state %s",
          concur_state_name(concur_future_state(bad)));
    CHECK(concur_future_error(bad) == rc, "stored error %d", concur_future_error(bad));
    const char *msg = concur_future_error_message(bad);
    CHECK(msg != NULL && strstr(msg, "division by zero") != NULL, "message '%s'",
          msg ? msg : "(null)");
    printf("divide(10, 0) failed: %s: %s\n", concur_err_name(rc), msg);

    concur_future_release(bad);
    concur_future_release(f);
    concur_future_release(seen.signal);
    concur_pool_destroy(pool);
    return 0;
fail:
    concur_future_release(bad);
    concur_future_release(f);
    concur_future_release(seen.signal);
    concur_pool_destroy(pool);
    return -1;
}

/* ---- 2. cancelling a task before it starts ----------------------------------------- */

/* Blocks its worker until the gate future is completed. The gate's address travels as
 * the input bytes: fine on the thread pool, where tasks share the caller's memory (a
 * process engine would need a pipe or similar instead). */
static int wait_gate(concur_task *t, const void *in, size_t len)
{
    concur_future *gate;
    if (len != sizeof gate)
        return concur_task_fail(t, CONCUR_EINVAL, "bad input");
    memcpy(&gate, in, sizeof gate);
    int rc = concur_future_wait(gate, CONCUR_FOREVER);
    return rc < 0 ? rc : 0;
}

static int cancel_pending(void)
{
    concur_pool *pool = NULL;
    concur_future *gate = NULL, *busy = NULL, *queued = NULL;
    atomic_int calls = 0;
    int rc;

    /* One worker: while it is held by `busy`, the next task has to wait in the queue. */
    concur_pool_opts opts = {.max_workers = 1, .name = "cancel"};
    rc = concur_pool_create(&pool, &opts);
    CHECK(rc == 0, "pool_create: %s", concur_strerror(rc));
    rc = concur_future_create(&gate);
    CHECK(rc == 0, "future_create: %s", concur_strerror(rc));

    rc = concur_pool_submit(pool, wait_gate, &gate, sizeof gate, &busy);
    CHECK(rc == 0, "submit: %s", concur_strerror(rc));
    struct division d = {7, 7};
    rc = concur_pool_submit(pool, divide, &d, sizeof d, &queued);
    CHECK(rc == 0, "submit: %s", concur_strerror(rc));
    rc = concur_future_add_callback(queued, count_call, &calls);
    CHECK(rc == 0, "add_callback: %s", concur_strerror(rc));

    /* Not started yet: the cancel succeeds, the task will never run, and the callback
     * runs now, in this thread (the one that cancelled). */
    bool cancelled = concur_future_cancel(queued);
    CHECK(cancelled, "cancel of a queued task failed (state %s)",
          concur_state_name(concur_future_state(queued)));
    CHECK(atomic_load(&calls) == 1, "callback ran %d times", atomic_load(&calls));
    rc = concur_future_collect(queued, 0, NULL, NULL);
    CHECK(rc == CONCUR_ECANCELED, "collect of a cancelled task gave %s", concur_err_name(rc));
    double pending, running;
    concur_future_durations(queued, &pending, &running);
    CHECK(running == 0, "a cancelled task ran for %f s", running);
    printf("queued task cancelled: %s (%s)\n", concur_state_name(concur_future_state(queued)),
           concur_strerror(rc));

    /* The busy task is still running: a zero timeout does not block, it reports the
     * wait's own expiry, CONCUR_ETIMEDOUT (not a failure of the task). */
    rc = concur_future_collect(busy, 0, NULL, NULL);
    CHECK(rc == CONCUR_ETIMEDOUT, "collect(0) of a blocked task gave %s", concur_err_name(rc));

    /* Open the gate: the first task ends normally. */
    rc = concur_future_set_result(gate, NULL, 0);
    CHECK(rc == 0, "set_result: %s", concur_strerror(rc));
    rc = concur_future_collect(busy, 42, NULL, NULL);
    CHECK(rc == 0, "busy task: %s", concur_strerror(rc));

    concur_future_release(queued);
    concur_future_release(busy);
    concur_pool_destroy(pool);
    concur_future_release(gate);
    return 0;
fail:
    if (gate)
        (void)concur_future_set_result(gate, NULL, 0); /* never leave the worker blocked */
    concur_future_release(queued);
    concur_future_release(busy);
    concur_pool_destroy(pool);
    concur_future_release(gate);
    return -1;
}

/* ---- 3. a batch followed with as_done ---------------------------------------------- */

/* Reads a whole file and returns its size as a uint64_t: the local stand-in for
 * "download a page and report its length". The input is the path, NUL included. */
static int file_size(concur_task *t, const void *in, size_t len)
{
    const char *path = in;
    char buf[16384];
    uint64_t total = 0;
    size_t r;

    if (len == 0 || path[len - 1] != '\0')
        return concur_task_fail(t, CONCUR_EINVAL, "the path is not a C string");
    FILE *fp = fopen(path, "rb");
    if (!fp) { /* a task may end with -errno: the codes are negated errno values */
        int e = -errno;
        return concur_task_fail(t, e, "open %s: %s", path, concur_strerror(e));
    }
    while ((r = fread(buf, 1, sizeof buf, fp)) > 0)
        total += r;
    int bad = ferror(fp);
    fclose(fp);
    if (bad)
        return concur_task_fail(t, CONCUR_EIO, "read %s failed", path);
    return concur_task_return(t, &total, sizeof total);
}

static const char *const PATHS[] = {
    "/proc/self/exe", /* this program */
    "/etc/passwd",
    "/dev/null",
    "/nonexistent/concur-example", /* fails: no such file */
};
#define NPATHS (sizeof PATHS / sizeof PATHS[0])

static int batch_as_done(void)
{
    concur_pool *pool = NULL;
    concur_future *futs[NPATHS] = {0};
    concur_as_done *it = NULL;
    size_t ok = 0, failed = 0, seen = 0;
    int rc;

    concur_pool_opts opts = {.max_workers = 5, .name = "files"};
    rc = concur_pool_create(&pool, &opts);
    CHECK(rc == 0, "pool_create: %s", concur_strerror(rc));

    /* Start the reads; futs[i] belongs to PATHS[i]. */
    for (size_t i = 0; i < NPATHS; i++) {
        rc = concur_pool_submit(pool, file_size, PATHS[i], strlen(PATHS[i]) + 1, &futs[i]);
        CHECK(rc == 0, "submit %s: %s", PATHS[i], concur_strerror(rc));
    }

    /* Take them as they finish (completion order), 42 s for the whole loop. The futures
     * handed out are borrowed from the array: no release here. */
    rc = concur_as_done_create(&it, futs, NPATHS, false, 42);
    CHECK(rc == 0, "as_done_create: %s", concur_strerror(rc));
    concur_future *f;
    size_t i;
    while ((rc = concur_as_done_next(it, &f, &i)) == 1) {
        const void *data;
        size_t len;
        seen++;
        int r = concur_future_collect(f, 0, &data, &len);
        if (r == 0 && len == sizeof(uint64_t)) {
            uint64_t size;
            memcpy(&size, data, sizeof size);
            printf("'%s' is %llu bytes\n", PATHS[i], (unsigned long long)size);
            ok++;
        } else {
            printf("'%s' generated an error: %s: %s\n", PATHS[i], concur_err_name(r),
                   concur_future_error_message(f) ? concur_future_error_message(f)
                                                  : concur_strerror(r));
            CHECK(i == NPATHS - 1 && r == CONCUR_ENOENT, "unexpected failure");
            failed++;
        }
    }
    CHECK(rc == 0, "as_done_next: %s", concur_strerror(rc));
    CHECK(seen == NPATHS && ok == NPATHS - 1 && failed == 1, "%zu seen, %zu ok, %zu failed",
          seen, ok, failed);

    concur_as_done_destroy(it);
    for (i = 0; i < NPATHS; i++)
        concur_future_release(futs[i]);
    concur_pool_destroy(pool);
    return 0;
fail:
    concur_as_done_destroy(it);
    for (i = 0; i < NPATHS; i++)
        concur_future_release(futs[i]);
    concur_pool_destroy(pool);
    return -1;
}

int main(void)
{
    printf("-- one task\n");
    if (one_task() < 0)
        return 1;
    printf("-- cancelling a queued task\n");
    if (cancel_pending() < 0)
        return 1;
    printf("-- as_done\n");
    if (batch_as_done() < 0)
        return 1;
    return 0;
}
