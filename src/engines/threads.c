/*
 * engines/threads.c - the thread engine: a worker thread calls each task itself.
 *
 * Everything a thread pool does beyond calling the task (the queue, the workers' life,
 * task_timeout through the core's watchdog, shutdown) is the pool core's (core/pool.c). A
 * task shares the caller's memory; a running task cannot be killed, only asked to stop
 * (concur_task_should_stop sees its future's cancel flag and the pool's stop word).
 */
#include "core/pool.h"
#include "sys/os.h"

static int create(concur_pool *p, const concur_pool_opts *o, void **state)
{
    (void)p;
    *state = NULL;
    /* Per-worker limits need a process of their own: a thread cannot be limited alone. */
    if (o->worker_cpu_limit != 0 || o->worker_memory_limit != 0 || o->coroutine_stack_size != 0 ||
        o->coroutine_shared_stack || o->coroutine_io_poll)
        return CONCUR_EINVAL;
    return 0;
}

static void destroy(void *state)
{
    (void)state;
}

/* The runner's loop inside a task of this thread parks with concur__task_park: it stops its
 * commands when the task should stop (a cancel, the pool's stop, task_timeout). */
static int worker_start(concur__worker *w, concur_task *t, bool *hook_failed)
{
    concur__loop_park = concur__task_park;
    return concur__worker_init_hook(w, t, hook_failed);
}

static unsigned worker_run(concur__worker *w, concur_task *t, concur_future *f, unsigned room)
{
    (void)room;
    concur__worker_call(w, t, f);
    return 1;
}

const concur__engine_class concur__threads_class = {
    .kind = "thread",
    .shares_memory = true,
    .create = create,
    .destroy = destroy,
    .worker_start = worker_start,
    .worker_run = worker_run,
    .worker_final = concur__worker_final_hook,
};
