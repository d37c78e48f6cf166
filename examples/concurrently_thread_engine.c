/*
 * concurrently_thread_engine.c - copies of one function in threads, waited for without an
 * event loop.
 *
 * The ThreadEngine example of Python's concurrently, in C:
 *
 *     @concurrently(2, engine=ThreadEngine)
 *     def fetch_urls():  # not async def
 *         ...
 *     fetch_urls()  # not await
 *
 * The engine is chosen in the pool options the swarm passes on (here threads, which is also
 * the default). Instead of a shared counter, each copy asks concur_swarm_index() which copy
 * it is and takes every n-th url from there: copy 0 urls 0, 2, 4; copy 1 urls 1, 3, 5.
 *
 * Exit status: 0 when every url was handled by the copy it belongs to, 1 otherwise.
 */
#include <concur.h>

#include <stdio.h>
#include <string.h>

#define COPIES 2
#define NURLS 6

struct job {
    const char *urls[NURLS];
    int fetched_by[NURLS]; /* the index of the copy that fetched urls[i] */
};

static int fetch_urls(concur_task *t, const void *in, size_t len)
{
    struct job *job;
    if (len != sizeof job)
        return concur_task_fail(t, CONCUR_EINVAL, "expected a pointer");
    memcpy(&job, in, sizeof job);
    int me = concur_swarm_index(t);
    for (int i = me; i < NURLS; i += COPIES) {
        if (concur_task_should_stop(t)) /* the swarm was stopped: give up between pages */
            return concur_task_fail(t, CONCUR_ECANCELED, "stopped before %s", job->urls[i]);
        job->fetched_by[i] = me; /* a real copy would download job->urls[i] here */
    }
    return 0;
}

int main(void)
{
    struct job job = {.urls = {"http://test/a", "http://test/b", "http://test/c", "http://test/d",
                               "http://test/e", "http://test/f"}};
    struct job *jp = &job;
    memset(job.fetched_by, -1, sizeof job.fetched_by);

    concur_pool_opts engine = {.engine = CONCUR_ENGINE_THREADS, .name = "fetch"};
    concur_swarm_opts opts = {.pool = &engine};
    concur_swarm *sw;
    int rc = concur_swarm_start(&sw, COPIES, fetch_urls, &jp, sizeof jp, &opts);
    if (rc == 0) {
        rc = concur_swarm_wait(sw, CONCUR_FOREVER);
        concur_swarm_destroy(sw);
    }
    if (rc < 0) {
        fprintf(stderr, "concurrently_thread_engine: %s\n", concur_strerror(rc));
        return 1;
    }

    int ok = 1;
    for (int i = 0; i < NURLS; i++) {
        printf("%s fetched by copy %d\n", job.urls[i], job.fetched_by[i]);
        ok &= job.fetched_by[i] == i % COPIES;
    }
    return ok ? 0 : 1;
}
