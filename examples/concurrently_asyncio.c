/*
 * concurrently_asyncio.c - the caller keeps its own loop going while the copies run.
 *
 * The AsyncIOEngine and AsyncIOThreadEngine examples of Python's concurrently, in C:
 *
 *     @concurrently(2, engine=AsyncIOThreadEngine, loop=loop)
 *     def fetch_urls():  # not async def
 *         ...
 *     await fetch_urls()
 *
 * "await" lets the event loop do other work while the copies (threads) run. A C program
 * with a loop of its own does the same with a wait that gives up after a short time: here
 * the loop reports progress every 10 ms until concur_swarm_wait() says the swarm is done.
 * (concur has no coroutine engine yet, so AsyncIOEngine's "async def" copies, like
 * GeventEngine's greenlets, become thread copies; concur engines take no loop option.)
 *
 * Exit status: 0 when every page was fetched, 1 otherwise.
 */
#include <concur.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 15 * 1000 * 1000}; /* the download */
        nanosleep(&ts, NULL);
        atomic_fetch_add(&f->fetched, 1);
    }
    return 0;
}

int main(void)
{
    struct fetch f = {0};
    struct fetch *fp = &f;
    concur_swarm *sw;

    /* Python's default engine is asyncio; concur's is threads, and can be changed for the
     * whole process with concur_swarm_set_default_engine(). */
    printf("default engine: %s\n",
           concur_swarm_get_default_engine() == CONCUR_ENGINE_THREADS ? "threads" : "processes");

    int rc = concur_swarm_start(&sw, 2, fetch_urls, &fp, sizeof fp, NULL);
    if (rc < 0) {
        fprintf(stderr, "concurrently_asyncio: %s\n", concur_strerror(rc));
        return 1;
    }
    int ticks = 0;
    while ((rc = concur_swarm_wait(sw, 0.01)) == CONCUR_ETIMEDOUT) {
        /* the caller's own loop: other work goes here */
        ticks++;
        printf("tick %d: %d of %d pages\n", ticks, atomic_load(&f.fetched), PAGES);
    }
    concur_swarm_destroy(sw);
    if (rc < 0) {
        fprintf(stderr, "concurrently_asyncio: %s\n", concur_strerror(rc));
        return 1;
    }
    printf("done after %d ticks: %d of %d pages\n", ticks, atomic_load(&f.fetched), PAGES);
    return atomic_load(&f.fetched) == PAGES ? 0 : 1;
}
