/*
 * concurrently_quick.c - fetch some pages with 2 copies of one function (a swarm).
 *
 * The quick example of Python's concurrently, in C:
 *
 *     @concurrently(2)
 *     async def fetch_urls():
 *         for url in urls:
 *             page = await fetch_page(url)
 *             results[url] = page
 *     await fetch_urls()
 *
 * concur_swarm_start() starts the 2 copies at once and returns the swarm (Python's
 * Waiter); concur_swarm_wait() blocks until both have ended. The copies share the list of
 * urls and the results through memory: a thread copy sees the caller's memory. They take
 * urls from one shared counter, so every page is fetched once (each copy of the Python
 * example walks the whole list, fetching every page twice).
 *
 * Python runs this on its asyncio engine, its default; concur has no coroutine engine yet,
 * and its default engine is threads (concur_swarm_get_default_engine()).
 *
 * Exit status: 0 when every page was fetched, 1 otherwise.
 */
#include <concur.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define NURLS 4

static const char *const urls[NURLS] = {
    "http://test/page_1",
    "http://test/page_2",
    "http://test/page_3",
    "http://test/page_4",
};

/* What the copies share. */
struct crawl {
    atomic_int next;         /* the next url to fetch */
    char results[NURLS][64]; /* results[i]: the page of urls[i] */
};

/* Stands in for a download: 20 ms of waiting, then the page. */
static void fetch_page(const char *url, char *page, size_t size)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    snprintf(page, size, "<html>%s</html>", strrchr(url, '/') + 1);
}

/* One copy: the input is a pointer to the shared state. */
static int fetch_urls(concur_task *t, const void *in, size_t len)
{
    struct crawl *c;
    if (len != sizeof c)
        return concur_task_fail(t, CONCUR_EINVAL, "expected a pointer");
    memcpy(&c, in, sizeof c);
    for (int i; (i = atomic_fetch_add(&c->next, 1)) < NURLS;)
        fetch_page(urls[i], c->results[i], sizeof c->results[i]);
    return 0;
}

int main(void)
{
    struct crawl c = {0};
    struct crawl *cp = &c;
    concur_swarm *sw;

    /* Starts 2 copies now, on the default engine. */
    int rc = concur_swarm_start(&sw, 2, fetch_urls, &cp, sizeof cp, NULL);
    if (rc < 0) {
        fprintf(stderr, "concurrently_quick: %s\n", concur_strerror(rc));
        return 1;
    }
    /* Blocks until both copies have ended; CONCUR_ETASK when one failed (Python's
     * UnhandledExceptions), with the list of errors as text. */
    rc = concur_swarm_wait(sw, CONCUR_FOREVER);
    if (rc == CONCUR_ETASK) {
        char errors[512];
        concur_swarm_format_errors(sw, errors, sizeof errors);
        fprintf(stderr, "concurrently_quick: some copies failed:\n%s", errors);
    }
    concur_swarm_destroy(sw);

    int fetched = 0;
    for (int i = 0; i < NURLS; i++)
        if (c.results[i][0] != '\0' && printf("%s: %s\n", urls[i], c.results[i]) > 0)
            fetched++;
    return rc == 0 && fetched == NURLS ? 0 : 1;
}
