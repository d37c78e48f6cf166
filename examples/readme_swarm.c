/*
 * readme_swarm.c - the README's swarm example, as printed there, with what it needs around
 * it: four copies of a crawler share a counter of pages; copy 2 fails on purpose, so the
 * wait reports CONCUR_ETASK and the errors are printed.
 * Exit status: 0 when every page was taken once.
 */
#include <concur.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

struct pages { atomic_int next, done; };

static int crawl(concur_task *t, const void *in, size_t len)
{
    struct pages *pg;
    int rc = CONCUR_TASK_INPUT(t, in, len, &pg);
    if (rc)
        return rc;
    if (concur_swarm_index(t) == 2)
        return concur_task_fail(t, -EIO, "page server unreachable");
    while (atomic_fetch_add(&pg->next, 1) < 100)
        atomic_fetch_add(&pg->done, 1);
    return 0;
}

int main(void)
{
    struct pages pages = {0}, *shared = &pages;
    concur_swarm *sw;
    if (concur_swarm_start(&sw, 4, crawl, &shared, sizeof shared, NULL) == 0) {
        if (concur_swarm_wait(sw, CONCUR_FOREVER) == CONCUR_ETASK) {   /* a copy failed */
            char text[512];
            concur_swarm_format_errors(sw, text, sizeof text);
            fputs(text, stderr);
        }
        concur_swarm_destroy(sw);
    }
    return atomic_load(&pages.done) == 100 ? 0 : 1;
}
