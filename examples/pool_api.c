/*
 * pool_api.c - a pool's whole life: options, hooks, test, check, counters, spawn, join,
 * shutdown, and what a broken pool looks like.
 *
 * The "ThreadPool class" tour of Python's asyncpal, in C: a named pool of 4 workers with an
 * idle timeout, an initializer and a finalizer; a task; the pool's self-test; its counters
 * while a task runs; spawning workers ahead of work; join, which leaves it usable; shutdown
 * with the queued tasks cancelled and listed. Then a second pool whose initializer fails:
 * it is BROKEN, says why, and refuses work. The same code runs on worker processes by
 * setting opts.engine = CONCUR_ENGINE_PROCESSES.
 *
 * Exit status: 0 when everything behaved as described, 1 otherwise.
 */
#include <concur.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int failures;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "pool_api: %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* add(x, y): the input is two ints, the result their sum. */
static int add(concur_task *t, const void *in, size_t len)
{
    int xy[2];
    if (len != sizeof xy)
        return concur_task_fail(t, CONCUR_EINVAL, "add takes two ints, got %zu bytes", len);
    memcpy(xy, in, sizeof xy);
    int sum = xy[0] + xy[1];
    return concur_task_return(t, &sum, sizeof sum);
}

/* Sleeps for the number of milliseconds in its input. */
static int nap(concur_task *t, const void *in, size_t len)
{
    (void)t;
    int ms = 0;
    if (len == sizeof ms)
        memcpy(&ms, in, sizeof ms);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        continue; /* EINTR: sleep the rest */
    return 0;
}

static atomic_int inits, finals;

static int initializer(concur_task *t, void *arg)
{
    (void)t;
    (void)arg;
    atomic_fetch_add(&inits, 1);
    return 0;
}

static int finalizer(concur_task *t, void *arg)
{
    (void)t;
    (void)arg;
    atomic_fetch_add(&finals, 1);
    return 0;
}

static int failing_initializer(concur_task *t, void *arg)
{
    (void)arg;
    return concur_task_fail(t, CONCUR_EIO, "no database connection");
}

static void tour(void)
{
    /* All these options are optional: a zeroed struct (or NULL) gives the defaults. */
    concur_pool_opts opts = {
        .max_workers = 4,
        .name = "my-pool",
        .idle_timeout = 60,
        .initializer = initializer,
        .finalizer = finalizer,
        .max_tasks_per_worker = 0, /* no recycling */
    };
    concur_pool *pool = NULL;
    if (concur_pool_create(&pool, &opts) != 0) {
        CHECK(!"pool created");
        return;
    }

    /* Submit a task and collect its result. */
    concur_future *f = NULL;
    int xy[2] = {10, 2};
    CHECK(concur_pool_submit(pool, add, xy, sizeof xy, &f) == 0);
    const void *data = NULL;
    size_t len = 0;
    CHECK(concur_future_collect(f, 42, &data, &len) == 0 && len == sizeof(int));
    int sum = 0;
    if (len == sizeof sum)
        memcpy(&sum, data, sizeof sum);
    CHECK(sum == 12);
    concur_future_release(f);

    /* The self-test runs a one-worker copy with the same hooks; the check says whether the
     * pool takes work (0), or why not. */
    int rc = concur_pool_test(pool);
    CHECK(rc == 0);
    CHECK(concur_pool_check(pool) == 0);

    /* Counters while one 300 ms task runs. */
    int ms = 300;
    concur_future *slow = NULL;
    CHECK(concur_pool_submit(pool, nap, &ms, sizeof ms, &slow) == 0);
    concur_pool_counts c;
    for (int i = 0; i < 1000 && concur_future_state(slow) != CONCUR_RUNNING; i++)
        nap(NULL, &(int){1}, sizeof(int));
    concur_pool_counts_get(pool, &c);
    printf("workers %zu, busy %zu, free %zu, pending %zu\n", c.workers, c.busy, c.free, c.pending);
    CHECK(c.busy == 1 && c.free == c.workers - 1);

    /* Start workers ahead of work: never beyond max_workers. */
    int started = concur_pool_spawn_workers(pool, 2);
    CHECK(started >= 0 && started <= 2);

    /* Join: wait for the queued work, stop the workers (finalizers run); the pool stays
     * usable and starts workers again on the next submit. */
    CHECK(concur_pool_join(pool, 42) == 0);
    CHECK(concur_future_is_done(slow));
    concur_future_release(slow);
    concur_pool_counts_get(pool, &c);
    CHECK(c.workers == 0 && c.busy == 0);
    CHECK(atomic_load(&finals) == atomic_load(&inits));

    /* Shut down with the queued tasks cancelled: the tasks workers have taken by then run
     * to their end; those still queued are cancelled and listed. */
    concur_future *fs[4];
    ms = 200;
    for (int i = 0; i < 4; i++)
        CHECK(concur_pool_submit(pool, nap, &ms, sizeof ms, &fs[i]) == 0);
    CHECK(concur_pool_shutdown(pool, CONCUR_SHUTDOWN_CANCEL, 42) == 0);
    CHECK(concur_pool_is_closed(pool));
    size_t ncancelled = concur_pool_cancelled(pool, 0, NULL);
    size_t ndone = 0;
    for (int i = 0; i < 4; i++) {
        ndone += concur_future_state(fs[i]) == CONCUR_DONE;
        concur_future_release(fs[i]);
    }
    printf("after shutdown: %zu done, %zu cancelled\n", ndone, ncancelled);
    CHECK(ndone + ncancelled == 4);
    CHECK(concur_pool_submit(pool, add, xy, sizeof xy, NULL) == CONCUR_ECLOSED);
    concur_pool_destroy(pool);
}

static void broken_pool(void)
{
    concur_pool_opts opts = {
        .max_workers = 2, .name = "broken", .initializer = failing_initializer};
    concur_pool *pool = NULL;
    if (concur_pool_create(&pool, &opts) != 0) {
        CHECK(!"pool created");
        return;
    }
    /* The self-test meets the failing initializer on its copy. */
    CHECK(concur_pool_test(pool) == CONCUR_EINITIALIZER);
    /* The first worker's initializer fails: the pool breaks and the task is cancelled. */
    concur_future *f = NULL;
    int xy[2] = {1, 2};
    CHECK(concur_pool_submit(pool, add, xy, sizeof xy, &f) == 0);
    CHECK(concur_future_wait(f, 42) == 0);
    CHECK(concur_future_state(f) == CONCUR_CANCELLED);
    concur_future_release(f);
    CHECK(concur_pool_is_broken(pool));
    CHECK(concur_pool_check(pool) == CONCUR_EINITIALIZER);
    printf("broken pool: %s\n", concur_pool_error_message(pool));
    CHECK(strstr(concur_pool_error_message(pool), "no database connection") != NULL);
    CHECK(concur_pool_submit(pool, add, xy, sizeof xy, NULL) == CONCUR_EINITIALIZER);
    concur_pool_destroy(pool);
}

int main(void)
{
    tour();
    broken_pool();
    if (failures)
        fprintf(stderr, "pool_api: %d check(s) failed\n", failures);
    return failures ? 1 : 0;
}
