/*
 * concurrently_asyncio.c - the asyncio engines of Python's concurrently, in C.
 *
 *     @concurrently(2)                    # AsyncIOEngine, the default: coroutines
 *     async def fetch_urls():
 *         ...
 *         await asyncio.sleep(...)        # the download
 *
 *     @concurrently(2, engine=AsyncIOThreadEngine, loop=loop)
 *     def fetch_urls():                   # not async def: run in threads
 *         ...
 *
 *     await fetch_urls()
 *
 * On CONCUR_ENGINE_COROUTINES the copies are coroutines sharing one loop thread: while one
 * waits for its "download" (concur_co_sleep, asyncio.sleep's counterpart) the other runs.
 * On CONCUR_ENGINE_THREADS the same function runs in threads (concur_co_sleep outside a
 * coroutine simply sleeps the thread), as AsyncIOThreadEngine runs blocking functions.
 * "await" lets the caller's loop do other work meanwhile: here that loop reports progress
 * every 10 ms until concur_swarm_wait() says the swarm is done.
 *
 * Exit status: 0 when every page was fetched on both engines, 1 otherwise.
 */
#include <concur.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define PAGES 6

struct fetch {
    atomic_int next;
    atomic_int fetched;
};

static int fetch_urls(concur_task *t, const void *in, size_t len)
{
    struct fetch *f;
    if (len != sizeof f)
        return concur_task_fail(t, CONCUR_EINVAL, "expected a pointer");
    memcpy(&f, in, sizeof f);
    while (atomic_fetch_add(&f->next, 1) < PAGES) {
        int rc = concur_co_sleep(0.015); /* the download: only this copy waits */
        if (rc)
            return rc; /* stopped */
        atomic_fetch_add(&f->fetched, 1);
    }
    return 0;
}

/* Runs 2 copies on @engine and "awaits" them from the caller's own loop. */
static int run(concur_engine engine, const char *name)
{
    struct fetch f = {0};
    struct fetch *fp = &f;
    concur_pool_opts po = {.engine = engine};
    concur_swarm_opts o = {.pool = &po};
    concur_swarm *sw;
    int rc = concur_swarm_start(&sw, 2, fetch_urls, &fp, sizeof fp, &o);
    if (rc < 0) {
        fprintf(stderr, "concurrently_asyncio: %s: %s\n", name, concur_strerror(rc));
        return 1;
    }
    int ticks = 0;
    while ((rc = concur_swarm_wait(sw, 0.01)) == CONCUR_ETIMEDOUT) {
        /* the caller's own loop: other work goes here */
        ticks++;
        printf("%s: tick %d: %d of %d pages\n", name, ticks, atomic_load(&f.fetched), PAGES);
    }
    concur_swarm_destroy(sw);
    if (rc < 0) {
        fprintf(stderr, "concurrently_asyncio: %s: %s\n", name, concur_strerror(rc));
        return 1;
    }
    printf("%s: done after %d ticks: %d of %d pages\n", name, ticks, atomic_load(&f.fetched),
           PAGES);
    return atomic_load(&f.fetched) == PAGES ? 0 : 1;
}

int main(void)
{
    int failed = run(CONCUR_ENGINE_COROUTINES, "coroutines (AsyncIOEngine)");
    failed |= run(CONCUR_ENGINE_THREADS, "threads (AsyncIOThreadEngine)");
    return failed;
}
