/*
 * concurrently_process_engine.c - copies of one function in worker processes, sharing
 * memory mapped before the swarm starts.
 *
 * The ProcessEngine example of Python's concurrently, in C:
 *
 *     @concurrently(2, engine=ProcessEngine)
 *     def fetch_urls():
 *         ...
 *     fetch_urls()
 *
 * Process copies are forked (through the pool's fork server) when the swarm starts. They
 * see the caller's memory as it was then, and what they write stays in their own process,
 * except in memory mapped MAP_SHARED before concur_swarm_start(): the shared counter and
 * the results live there. A copy that crashes or calls exit() only fails itself.
 *
 * Exit status: 0 when every item was done once by a worker process, 1 otherwise.
 */
#include <concur.h>

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define COPIES 2
#define ITEMS 8

/* Lives in one MAP_SHARED page, seen by the caller and every copy. */
struct board {
    atomic_int next;
    long square[ITEMS];
    pid_t done_by[ITEMS];
};

static int work(concur_task *t, const void *in, size_t len)
{
    struct board *b;
    if (len != sizeof b)
        return concur_task_fail(t, CONCUR_EINVAL, "expected a pointer");
    memcpy(&b, in, sizeof b); /* the same address in every process: mapped before the fork */
    for (int i; (i = atomic_fetch_add(&b->next, 1)) < ITEMS;) {
        b->square[i] = (long)i * i;
        b->done_by[i] = getpid();
    }
    return 0;
}

int main(void)
{
    struct board *b =
        mmap(NULL, sizeof *b, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED) {
        perror("concurrently_process_engine: mmap");
        return 1;
    }

    concur_pool_opts engine = {.engine = CONCUR_ENGINE_PROCESSES};
    concur_swarm_opts opts = {.pool = &engine};
    concur_swarm *sw;
    int rc = concur_swarm_start(&sw, COPIES, work, &b, sizeof b, &opts);
    if (rc == 0) {
        rc = concur_swarm_wait(sw, CONCUR_FOREVER);
        concur_swarm_destroy(sw); /* no worker process is left after this */
    }
    if (rc < 0) {
        fprintf(stderr, "concurrently_process_engine: %s\n", concur_strerror(rc));
        munmap(b, sizeof *b);
        return 1;
    }

    int ok = 1;
    for (int i = 0; i < ITEMS; i++) {
        printf("%d squared is %ld (process %d)\n", i, b->square[i], (int)b->done_by[i]);
        ok &= b->square[i] == (long)i * i && b->done_by[i] != getpid() && b->done_by[i] > 0;
    }
    munmap(b, sizeof *b);
    return ok ? 0 : 1;
}
