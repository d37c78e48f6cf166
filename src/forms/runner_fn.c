/*
 * runner_fn.c - the runner's function tasks.
 *
 * Flow of one function task: the job's key and arguments are laid out as bytes (struct
 * fn_head, then NUL-terminated strings) and submitted to a concur_pool as the task fn_task,
 * which unpacks them in the worker (a thread, or a worker process: the bytes travel there),
 * calls the concur_run_fn, and appends the function's status to its answer (struct
 * fn_trailer). The future's completion callback posts an eventfd that is in the runner's
 * loop; the loop then finds the finished futures among its jobs and delivers their records
 * like commands'. The callback holds a reference on that eventfd's owner (struct fn_note),
 * not on the runner, so a callback still running in a pool thread after the run can never
 * touch freed memory.
 *
 * At most fn_limit function tasks are in the pool at once (the pool has that many workers),
 * so a task handed over starts at once, and its timeout counts from there. A timeout
 * cancels the task with concur_future_cancel_kill: a worker process is killed, a coroutine
 * interrupted, and the future fails at once; a thread is only flagged (concur_task_should_stop), so its record is
 * delivered at the deadline and its future moves to the stale list, which still counts
 * against the limits until the thread returns. A run ends only when the stale list is empty
 * too.
 */
#include <limits.h>
#include <sys/epoll.h>

#include "forms/run_state.h"
#include "sys/code.h"

/* The input of a function task, as it travels to its worker (a thread, or a worker process:
 * the pool copies it there): this head, the key with its NUL when has_key, then argc
 * NUL-terminated arguments. Both ends are the same program, so the function pointer is
 * passed as it is (the process pool's rule for task functions applies to it), or as a
 * reference for workers with an address layout of their own (MPI ranks: fn is NULL). */
struct fn_head {
    concur_run_fn fn;
    uint32_t argc;
    uint32_t has_key;
    concur__code_ref fn_ref;
};

/* Appended to the answer by fn_task when the function returned a status (>= 0); the runner
 * takes it off again. */
struct fn_trailer {
    int32_t status;
    uint32_t magic;
};

#define FN_MAGIC 0x636e7566u /* "func" */
enum { FN_STACK_IN = 512, FN_STACK_ARGV = 32 };

/* ---------------------------------------------------------------- in the worker */

/* Appends the trailer to the task's result buffer (the answer). This is the buffer that
 * concur_task_return() fills (concur_impl.h): it grows in place (realloc), so a large answer
 * is not copied once more. */
static int fn_put_status(concur_task *t, int status)
{
    struct fn_trailer tr = {status, FN_MAGIC};
    concur__buf *b = &t->out;
    size_t n = b->len, m = n + sizeof(tr);
    unsigned char *p;
    if (m <= CONCUR_INLINE_BYTES) {
        p = b->u.inl;
    } else if (n > CONCUR_INLINE_BYTES) {
        p = realloc(b->u.ptr, m);
        if (!p)
            return concur_task_fail(t, CONCUR_ENOMEM, "no memory to return the answer");
        b->u.ptr = p;
    } else {
        p = malloc(m);
        if (!p)
            return concur_task_fail(t, CONCUR_ENOMEM, "no memory to return the answer");
        if (n)
            memcpy(p, b->u.inl, n);
        b->u.ptr = p;
    }
    memcpy(p + n, &tr, sizeof(tr));
    b->len = m;
    return 0;
}

/* The next NUL-terminated string of an input, or NULL when none is left in [*p, end). */
static const char *next_str(const char **p, const char *end)
{
    const char *s = *p;
    const char *nul = s < end ? memchr(s, '\0', (size_t)(end - s)) : NULL;
    if (!nul)
        return NULL;
    *p = nul + 1;
    return s;
}

/* The pool task of every function task: unpacks key and arguments (pointing into the
 * input, which is this task's own copy) and calls the function. */
static int fn_task(concur_task *t, const void *in, size_t len)
{
    struct fn_head h;
    if (len < sizeof(h))
        return concur_task_fail(t, CONCUR_EINVAL, "malformed function task");
    memcpy(&h, in, sizeof(h));
    if (!(h.fn = (concur_run_fn)(uintptr_t)concur__code_unpack((const void *)(uintptr_t)h.fn,
                                                                &h.fn_ref)))
        return concur_task_fail(t, CONCUR_ENOTLOADED, "the task's function is not loaded here");
    const char *p = (const char *)in + sizeof(h), *end = (const char *)in + len;
    const char *stack_argv[FN_STACK_ARGV];
    const char **argv = stack_argv;
    if (h.argc >= FN_STACK_ARGV && !(argv = malloc((h.argc + (size_t)1) * sizeof(*argv))))
        return concur_task_fail(t, CONCUR_ENOMEM, "no memory for the function's arguments");
    const char *key = h.has_key ? next_str(&p, end) : NULL;
    bool ok = !h.has_key || key;
    for (uint32_t i = 0; ok && i < h.argc; i++)
        ok = (argv[i] = next_str(&p, end)) != NULL;
    int rc;
    if (!ok || h.argc > INT_MAX) {
        rc = concur_task_fail(t, CONCUR_EINVAL, "malformed function task");
    } else {
        argv[h.argc] = NULL;
        rc = h.fn(t, key, (int)h.argc, argv);
    }
    if (argv != stack_argv)
        free(argv);
    return rc < 0 ? rc : fn_put_status(t, rc);
}

/* ---------------------------------------------------------------- handing it over */

/* Copies @s with its NUL to @b + @off (only counts when @b is NULL; nothing for a NULL
 * @s). Returns the offset past it. */
static size_t put_str(unsigned char *b, size_t off, const char *s)
{
    if (!s)
        return off;
    size_t n = strlen(s) + 1;
    if (b)
        memcpy(b + off, s, n);
    return off + n;
}

/* Writes (or, with @b NULL, measures) the strings of function job @j's input after its
 * head: the key, then the arguments (the job's argv, or the prefix followed by its arg).
 * Returns the total length; the argument count in *argc. */
static size_t fn_layout(const concur_runner *r, const struct job *j, unsigned char *b,
                        uint32_t *argc)
{
    const char *const *args = j->cmd.argv ? j->cmd.argv : r->o.prefix;
    const char *last = j->cmd.argv ? NULL : j->cmd.arg;
    size_t off = put_str(b, sizeof(struct fn_head), j->cmd.key);
    uint32_t n = 0;
    for (; args && args[n]; n++)
        off = put_str(b, off, args[n]);
    if (last) {
        off = put_str(b, off, last);
        n++;
    }
    *argc = n;
    return off;
}

/* Lays out the input of function job @j: in @buf when it fits in @cap bytes, else in a
 * malloc'd buffer returned in *heap. Returns the length, or 0 when out of memory. */
static size_t fn_encode(const concur_runner *r, const struct job *j, unsigned char *buf, size_t cap,
                        unsigned char **heap)
{
    struct fn_head h = {.argc = 0, .has_key = j->cmd.key != NULL};
    const void *ptr;
    concur__code_pack((const void *)(uintptr_t)j->fn, concur__pool_remote_code(r->fn_pool), &ptr,
                      &h.fn_ref);
    h.fn = (concur_run_fn)(uintptr_t)ptr;
    size_t len = fn_layout(r, j, NULL, &h.argc);
    unsigned char *b = buf;
    if (len > cap && !(b = *heap = malloc(len)))
        return 0;
    fn_layout(r, j, b, &h.argc);
    memcpy(b, &h, sizeof(h));
    return len;
}

void concur__fn_note_release(struct fn_note *n)
{
    if (n && atomic_fetch_sub_explicit(&n->refs, 1, memory_order_acq_rel) == 1) {
        concur__close(&n->efd);
        free(n);
    }
}

/* The completion callback of function tasks (a pool thread, or this one for a cancel): a
 * wake-up for the loop. It touches only the note it holds a reference on. */
static void fn_completed(concur_future *f, void *arg)
{
    (void)f;
    struct fn_note *n = arg;
    /* Nothing fails on an eventfd of ours; the loop also looks at every future whenever
     * it wakes. */
    (void)concur__event_post(n->efd);
    concur__fn_note_release(n);
}

/* What the first function task of a run needs: the completion eventfd in the loop (once
 * per runner) and the pool (the caller's, or one of the run's own). */
static int fn_setup(concur_runner *r)
{
    if (!r->note) {
        struct fn_note *n = malloc(sizeof(*n));
        if (!n)
            return CONCUR_ENOMEM;
        atomic_init(&n->refs, 1);
        n->efd = concur__eventfd();
        int rc = n->efd < 0 ? n->efd : concur__loop_add(&r->loop, n->efd, EPOLLIN, EV_FN_DONE);
        if (rc) {
            concur__close(&n->efd);
            free(n);
            return rc;
        }
        r->note = n;
    }
    if (!r->fn_pool) {
        /* Coroutines: one loop thread runs every function task (the runner's limit still
         * bounds how many run at once). */
        int workers = r->fn_limit > INT_MAX ? INT_MAX : (int)r->fn_limit;
        concur_pool_opts po = {.engine = r->o.engine,
                               .max_workers = r->o.engine == CONCUR_ENGINE_COROUTINES ? 1 : workers,
                               .name = "run"};
        int rc = concur_pool_create(&r->fn_pool, &po);
        if (rc)
            return rc;
        r->fn_pool_owned = true;
    }
    return 0;
}

void concur__fn_start(concur_runner *r, struct job *j)
{
    const char *what = "cannot start the pool of function tasks";
    int rc = fn_setup(r);
    /* The task's time starts now, after the pool was made (a process pool forks): it is
     * the hand-over, from which its timeout counts. */
    j->t_start = now_ns();
    j->wall_start = concur__wall_now();
    concur__runner_delay_next(r);
    if (!rc && !concur__pool_code_ok(r->fn_pool, (const void *)(uintptr_t)j->fn)) {
        /* It travels inside the task's input: the pool checks only its own wrapper. */
        what = "the function is not in the worker processes' code";
        rc = CONCUR_ENOTLOADED;
    }
    if (!rc) {
        unsigned char buf[FN_STACK_IN], *heap = NULL;
        size_t len = fn_encode(r, j, buf, sizeof(buf), &heap);
        what = "cannot hand the function task to its pool";
        rc = len ? concur_pool_submit(r->fn_pool, fn_task, heap ? heap : buf, len, &j->fut)
                 : CONCUR_ENOMEM;
        free(heap);
    }
    if (rc) {
        j->res.error = rc;
        if (asprintf(&j->errmsg, "%s: %s", what, concur_strerror(rc)) < 0)
            j->errmsg = NULL;
        j->exited = true;
        return;
    }
    atomic_fetch_add_explicit(&r->note->refs, 1, memory_order_relaxed);
    if (concur_future_add_callback(j->fut, fn_completed, r->note) != 0) {
        concur__fn_note_release(r->note);
        r->fn_unwatched = true; /* no wake-up will come for this one: poll */
    }
    concur__runner_arm_deadline(r, j);
}

/* ---------------------------------------------------------------- timeouts and records */

/* A pending task is cancelled and a worker process killed, and either future fails at once;
 * a thread cannot be killed, so it is only flagged (concur_task_should_stop), its record is
 * delivered now, and its future waits in the stale list, where it still counts against the
 * limits, until the thread returns. */
void concur__fn_expire(concur_runner *r, struct job *j)
{
    j->expired = j->timed_out = true;
    bool running = concur_future_state(j->fut) == CONCUR_RUNNING;
    if (concur_future_cancel_kill(j->fut))
        return;
    if (concur_future_is_done(j->fut)) {
        /* A coroutine cancelled while it runs fails at once with CONCUR_ECANCELED: that is
         * this timeout. Otherwise it ended just in time, and its own outcome stands. */
        if (!running || concur_future_error(j->fut) != CONCUR_ECANCELED)
            j->timed_out = false;
        return;
    }
    if (r->nstale == r->capstale) {
        size_t cap = r->capstale ? r->capstale * 2 : 8;
        concur_future **a = realloc(r->stale, cap * sizeof(*a));
        if (!a)
            return; /* keep the job until its thread returns; the record still says timeout */
        r->stale = a;
        r->capstale = cap;
    }
    r->stale[r->nstale++] = j->fut;
    j->fut = NULL;
    j->exited = true;
}

void concur__fn_prune_stale(concur_runner *r)
{
    for (size_t i = 0; i < r->nstale;) {
        if (concur_future_is_done(r->stale[i])) {
            concur_future_release(r->stale[i]);
            r->stale[i] = r->stale[--r->nstale];
        } else {
            i++;
        }
    }
}

/* A finished future's answer: the function's status trailer comes off. */
static void fn_answer(concur_result *res, concur_future *f)
{
    const void *data = NULL;
    size_t len = 0;
    struct fn_trailer tr = {0, 0};
    concur_future_result(f, &data, &len);
    if (len >= sizeof(tr))
        memcpy(&tr, (const unsigned char *)data + len - sizeof(tr), sizeof(tr));
    if (tr.magic != FN_MAGIC) {
        res->error = CONCUR_EIO;
        res->error_message = "the function task returned a malformed answer";
    } else if (!res->timeout) { /* (a late result after a timeout is dropped) */
        res->exit_code = res->returncode = tr.status;
        res->success = tr.status == 0;
        res->answer = len > sizeof(tr) ? data : NULL;
        res->answer_len = len - sizeof(tr);
    }
}

void concur__fn_result(struct job *j)
{
    concur_result *res = &j->res;
    concur_future *f = j->fut;
    res->function = true;
    res->pid = 0;
    res->error_message = j->errmsg;
    if (!f) { /* not handed to the pool, or a thread that timed out (and still runs) */
        res->spawned = !res->error;
        return;
    }
    /* The run counts from the hand-over to the pool (as a command's counts from its spawn)
     * to the end the future recorded, which may be earlier than this delivery. */
    concur_state st = concur_future_state(f);
    uint64_t end = atomic_load_explicit(&f->t_end, memory_order_relaxed); /* terminal: set */
    res->spawned = st != CONCUR_CANCELLED;
    /* From the runner's own hand-over time, the one its deadline counts from (the
     * future's submit time comes a little later, after the input is encoded). */
    res->time_run = end > j->t_start ? (double)(end - j->t_start) / 1e9 : 0;
    if (st == CONCUR_DONE) {
        fn_answer(res, f);
        return;
    }
    concur_error_info ei;
    concur_future_error_info(f, &ei);
    res->signal = ei.signal;
    if (ei.signal)
        res->returncode = -ei.signal;
    else if (ei.exit_status >= 0)
        res->returncode = res->exit_code = ei.exit_status;
    if (ei.code == CONCUR_ETASKTIMEOUT) /* the task timeout of a caller's pool */
        res->timeout = true;
    if (res->timeout)
        return; /* as for a command: timeout, no error */
    res->error = ei.code;
    if (!res->error_message)
        res->error_message = ei.message;
}
