/*
 * runner.c - the command runner's loop: many children and function tasks, one thread, one
 * sys/os.h loop.
 *
 * Flow: the source fills a concur_cmd when a slot is free -> the job starts (runner_spawn.c
 * spawns a command, runner_fn.c hands a function to its pool) -> the loop waits on the
 * jobs' fds, the function-completion eventfd, the caller's stop fd, its wake-up (how
 * concur_runner_stop reaches it) and its timers -> events go to their job; a job whose
 * child exited and whose pipes are at EOF (or whose future is over) is over: its record is
 * built and handed to on_done -> the slot is free for the next command.
 *
 * Timers: each job has one, armed for its deadline; when it fires, the term signal goes to
 * the job's process group (a function task is cancelled instead), and the timer is re-armed
 * for each next step of the termination sequence (SIGKILL after the last). Once a command's
 * child has exited, the timer counts the output grace (OUTPUT_GRACE_NS) instead, after
 * which pipes that are still open are closed. A stop sends the
 * first step at once. The runner's own timers wake the loop when the start delay is over
 * and, while some function futures carry no callback, to look at them.
 *
 * Invariants: every child started is reaped before run() returns, whatever happens (errors
 * stop the run as CONCUR_STOP_TERM and keep looping until the last child is gone); a job's
 * timer is disarmed before the job is released; no signal disposition of the process is
 * touched.
 */
#include <limits.h>
#include <signal.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "forms/run_state.h"

enum { EVENTS = 64 }; /* loop events per wait */

/* ---------------------------------------------------------------- jobs */

/* Closes a job's descriptors and gives back its timer, captures and message. */
static void job_release(concur_runner *r, struct job *j)
{
    concur__timer_cancel(&r->loop, &j->timer);
    concur__loop_close(&r->loop, &j->pidfd);
    concur__loop_close(&r->loop, &j->out_fd);
    concur__loop_close(&r->loop, &j->err_fd);
    concur__loop_close(&r->loop, &j->in_fd);
    concur__cap_free(r, &j->out);
    concur__cap_free(r, &j->err);
    free(j->errmsg);
    j->errmsg = NULL;
    concur_future_release(j->fut); /* never cancels: a running task is awaited elsewhere */
    j->fut = NULL;
}

static void job_free(concur_runner *r, struct job *j)
{
    if (!j)
        return;
    job_release(r, j);
    free(j);
}

static struct job *job_new(const concur_runner *r, size_t index, const concur_cmd *cmd)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->index = index;
    j->cmd = *cmd;
    j->fn = cmd->fn ? cmd->fn : (cmd->argv ? NULL : r->o.fn);
    j->pidfd = j->out_fd = j->err_fd = j->in_fd = -1;
    concur__cap_init(&j->out);
    concur__cap_init(&j->err);
    j->t_ready = 0; /* the run's start: set by start_job */
    return j;
}

static void job_reset_for_retry(concur_runner *r, struct job *j)
{
    job_release(r, j);
    j->pid = 0;
    j->in_off = 0;
    j->exited = j->timed_out = j->stopped = j->expired = false;
    memset(&j->ended, 0, sizeof(j->ended));
    j->kill_stage = 0;
    j->deadline = 0;
    j->t_start = 0;
    j->wall_start = 0;
    memset(&j->res, 0, sizeof(j->res));
    j->t_ready = now_ns();
}

/* Moves job @j to step @stage of the termination sequence (past the last step: SIGKILL),
 * and arms its timer for the next step. */
static void signal_job(concur_runner *r, struct job *j, int stage)
{
    if (!j->pid || j->kill_stage >= stage)
        return;
    j->kill_stage = stage;
    /* The group outlives its leader while members remain, and its id cannot be reused
     * while it exists, so this reaches exactly the job's tree. ESRCH: the group is gone. */
    /* Once the child exited, its timer counts the output grace instead (members of its
     * group that hold the pipes still get the signal). */
    if ((size_t)stage <= r->nseq) {
        const concur_term_step *st = &r->seq[stage - 1];
        (void)kill(-j->pid, st->signal);
        if (!j->exited)
            concur__timer_arm(&r->loop, &j->timer, now_ns() + (uint64_t)(st->wait * 1e9),
                              job_tag(j->slot, TAG_TIMER));
    } else {
        (void)kill(-j->pid, SIGKILL);
        if (!j->exited)
            concur__timer_cancel(&r->loop, &j->timer);
    }
}

static bool job_over(const struct job *j)
{
    return j->exited && j->out_fd < 0 && j->err_fd < 0;
}

/* The job's timer fired: its deadline (the first step of the termination sequence, or a
 * function task's cancel), the wait of a step is over (the next step), or, once the child
 * exited, its output grace is over (the pipes are closed). Returns a failure of the runner. */
static int job_timer(concur_runner *r, struct job *j)
{
    if (job_over(j))
        return 0;
    if (j->fn) {
        if (j->fut && !j->expired)
            concur__fn_expire(r, j);
        return 0;
    }
    if (j->exited) /* pipes held by a process that outlived the child */
        return concur__job_close_output(r, j);
    if (j->kill_stage == 0) {
        j->timed_out = true;
        signal_job(r, j, 1);
    } else if ((size_t)j->kill_stage <= r->nseq) {
        signal_job(r, j, j->kill_stage + 1);
    }
    return 0;
}

static void apply_stop(concur_runner *r, int level)
{
    if (level <= r->stop_level)
        return;
    r->stop_level = level;
    if (level >= CONCUR_STOP_TERM)
        for (size_t i = 0; i < r->nslots; i++) {
            struct job *j = r->slots[i];
            if (!j || job_over(j))
                continue;
            j->stopped = true;
            if (j->fut) /* a worker process is killed, a thread told to stop */
                concur_future_cancel_kill(j->fut);
            else
                signal_job(r, j, 1);
        }
}

/* ---------------------------------------------------------------- records */

static void build_result(struct job *j)
{
    concur_result *res = &j->res;
    uint64_t end = now_ns();
    res->index = j->index;
    res->key = j->cmd.key;
    res->arg = j->cmd.arg;
    res->user = j->cmd.user;
    res->attempts = j->attempts;
    res->pid = j->pid;
    res->spawned = j->pid > 0;
    res->time_start = j->wall_start;
    res->time_run = j->t_start && end > j->t_start ? (double)(end - j->t_start) / 1e9 : 0;
    res->time_wait = j->t_start > j->t_ready ? (double)(j->t_start - j->t_ready) / 1e9 : 0;
    res->timeout = j->timed_out;
    res->stopped = j->stopped;
    res->exit_code = -1;
    res->returncode = -1;
    if (j->fn)
        concur__fn_result(j);
    else
        concur__job_cmd_result(j);
}

static int keep_result(concur_runner *r, struct job *j)
{
    if (j->index >= r->capkept) {
        size_t cap = r->capkept ? r->capkept : 64;
        while (cap <= j->index)
            cap *= 2;
        struct job **a = realloc(r->keptjobs, cap * sizeof(*a));
        if (!a)
            return CONCUR_ENOMEM;
        memset(a + r->capkept, 0, (cap - r->capkept) * sizeof(*a));
        r->keptjobs = a;
        r->capkept = cap;
    }
    job_free(r, r->keptjobs[j->index]);
    r->keptjobs[j->index] = j;
    if (j->index >= r->nkept)
        r->nkept = j->index + 1;
    return 0;
}

/* A job that is over: deliver it (then retry it, keep it or free it). Returns a negative
 * code for failures of the runner itself. */
static int finish_job(concur_runner *r, size_t slot)
{
    struct job *j = r->slots[slot];
    r->slots[slot] = NULL;
    r->running--;
    if (j->fn)
        r->fn_running--;
    concur__loop_close(&r->loop, &j->in_fd);
    build_result(j);
    int again = r->o.on_done ? r->o.on_done(r, &j->res, r->o.cb_arg) : 0;
    if (again && j->attempts <= r->o.retries && r->stop_level == 0) {
        job_reset_for_retry(r, j);
        j->next = NULL;
        if (r->retry_tail)
            r->retry_tail->next = j;
        else
            r->retry_head = j;
        r->retry_tail = j;
        return 0;
    }
    if (r->o.flags & CONCUR_RUN_KEEP_RESULTS)
        return keep_result(r, j);
    job_free(r, j);
    return 0;
}

/* ---------------------------------------------------------------- starting jobs */

static int free_slot(concur_runner *r, size_t *slot)
{
    for (size_t i = 0; i < r->nslots; i++)
        if (!r->slots[i]) {
            *slot = i;
            return 0;
        }
    size_t n = r->nslots ? r->nslots * 2 : 16;
    struct job **s = realloc(r->slots, n * sizeof(*s));
    if (!s)
        return CONCUR_ENOMEM;
    memset(s + r->nslots, 0, (n - r->nslots) * sizeof(*s));
    *slot = r->nslots;
    r->slots = s;
    r->nslots = n;
    return 0;
}

/* Starts @j; on a start failure the job is delivered at once. */
static int start_job(concur_runner *r, struct job *j)
{
    size_t slot;
    int rc = free_slot(r, &slot);
    if (rc) {
        job_free(r, j);
        return rc;
    }
    r->slots[slot] = j;
    j->slot = slot;
    r->running++;
    j->attempts++;
    if (!j->t_ready)
        j->t_ready = r->run_start;
    if (j->fn) {
        r->fn_running++;
        concur__fn_start(r, j); /* fails only the job, if anything */
    } else {
        rc = concur__job_spawn(r, j);
    }
    if (r->o.on_start)
        r->o.on_start(r, j->index, &j->cmd, j->pid, r->o.cb_arg);
    if (rc) {
        /* The runner failed (not the program): stop, but keep the child for reaping. */
        if (!j->pid) {
            r->slots[slot] = NULL;
            r->running--;
            job_free(r, j);
        }
        return rc;
    }
    return job_over(j) ? finish_job(r, slot) : 0;
}

/* The state of one concur_runner_run. */
struct run {
    concur_source_fn src;
    void *arg;
    size_t index; /* of the next command from the source */
    bool source_done;
    bool source_waiting; /* it said CONCUR_EAGAIN: its fd is watched (EV_SOURCE) */
    int result;
};

/* A failure of the runner itself: the run stops (CONCUR_STOP_TERM), and keeps reaping. */
static void run_fail(concur_runner *r, struct run *run, int rc)
{
    run->result = rc;
    apply_stop(r, CONCUR_STOP_TERM);
}

static void run_stopped(concur_runner *r, struct run *run, int level)
{
    apply_stop(r, level);
    if (!run->result)
        run->result = CONCUR_ECANCELED;
}

/* A stop asked for with concur_runner_stop (from any thread, or a handler). */
static void take_stop_request(concur_runner *r, struct run *run)
{
    int level = atomic_exchange_explicit(&r->stop_req, 0, memory_order_acq_rel);
    if (level)
        run_stopped(r, run, level);
}

/* The next job to start: one held for a function slot, a retry, or the source's next. NULL
 * when there is none now. */
static struct job *pull_job(concur_runner *r, struct run *run)
{
    struct job *j = r->held;
    if (j) {
        r->held = NULL;
        return j;
    }
    if ((j = r->retry_head) != NULL) {
        r->retry_head = j->next;
        if (!r->retry_head)
            r->retry_tail = NULL;
        return j;
    }
    concur_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    int rc = run->src(run->arg, run->index, &cmd);
    if (rc == CONCUR_EAGAIN && (r->o.flags & CONCUR_RUN_SOURCE_WAIT)) {
        /* Nothing yet: the loop watches its fd, and asks again once it is readable. */
        if ((rc = concur__loop_add(&r->loop, r->o.source_fd, EPOLLIN, EV_SOURCE)) != 0)
            run_fail(r, run, rc);
        else
            run->source_waiting = true;
        return NULL;
    }
    if (rc <= 0) {
        run->source_done = true;
        if (rc < 0) {
            run->result = rc;
            apply_stop(r, CONCUR_STOP_START);
        }
        return NULL;
    }
    if (!(j = job_new(r, run->index++, &cmd)))
        run_fail(r, run, CONCUR_ENOMEM);
    return j;
}

static bool more_to_start(const concur_runner *r, const struct run *run)
{
    return r->held || r->retry_head || (!run->source_done && !run->source_waiting);
}

/* The source's fd is no longer watched (it became readable, or the run is over). */
static void source_unwatch(concur_runner *r, struct run *run)
{
    if (!run->source_waiting)
        return;
    run->source_waiting = false;
    int rc = concur__loop_del(&r->loop, r->o.source_fd);
    if (rc)
        run_fail(r, run, rc);
}

/* Starts what may start: while a slot is free, the start delay is over and jobs remain. */
static void start_ready(concur_runner *r, struct run *run)
{
    size_t limit = r->o.max_workers > 0 ? (size_t)r->o.max_workers : SIZE_MAX;
    while (r->stop_level == 0 && r->running + r->nstale < limit && more_to_start(r, run)) {
        if (r->next_start_ok && now_ns() < r->next_start_ok)
            break; /* the start timer wakes the loop */
        struct job *j = pull_job(r, run);
        if (!j)
            break;
        /* A function task also needs a free worker in the pool. */
        if (j->fn && r->fn_running + r->nstale >= r->fn_limit) {
            r->held = j;
            break;
        }
        int rc = start_job(r, j);
        if (rc)
            run_fail(r, run, rc);
    }
}

/* ---------------------------------------------------------------- the loop */

/* Delivers the function jobs whose future is over (or whose thread timed out), and lets go
 * of stale futures whose thread returned at last. */
static void deliver_fn_jobs(concur_runner *r, struct run *run)
{
    for (size_t i = 0; i < r->nslots && r->fn_running; i++) {
        struct job *j = r->slots[i];
        if (!j || !j->fn)
            continue;
        if (!j->exited && j->fut && concur_future_is_done(j->fut))
            j->exited = true;
        int rc = j->exited ? finish_job(r, i) : 0;
        if (rc)
            run_fail(r, run, rc);
    }
    concur__fn_prune_stale(r);
}

/* One event of the loop. */
static void dispatch(concur_runner *r, struct run *run, const concur__event *ev)
{
    switch (ev->tag) {
    case CONCUR__LOOP_WAKE: /* concur_runner_stop: stop_req says how */
        take_stop_request(r, run);
        return;
    case EV_FN_DONE: /* a function task ended: deliver_fn_jobs() finds it */
        concur__event_drain(r->note->efd);
        return;
    case EV_STOP_FD: /* the caller's stop fd: watched once per run */
        (void)concur__loop_del(&r->loop, r->o.stop_fd);
        r->stop_fd_armed = false;
        run_stopped(r, run, CONCUR_STOP_TERM);
        return;
    case EV_SOURCE: /* the source may have a command now: start_ready() asks it */
        source_unwatch(r, run);
        return;
    case EV_START:   /* the start delay is over: start_ready() goes on */
    case EV_FN_POLL: /* deliver_fn_jobs() looks at the futures */
        return;
    default:
        break;
    }
    size_t slot = (size_t)(ev->tag >> TAG_BITS);
    int tag = (int)(ev->tag & ((1u << TAG_BITS) - 1));
    struct job *j = slot < r->nslots ? r->slots[slot] : NULL;
    if (!j)
        return; /* an event for a job already finished in this batch */
    int rc;
    if (tag == TAG_TIMER) {
        /* a function job it ends is delivered by deliver_fn_jobs() */
        rc = job_timer(r, j);
        if (rc)
            run_fail(r, run, rc);
        if (!j->fn && job_over(j) && (rc = finish_job(r, slot)) != 0)
            run_fail(r, run, rc);
        return;
    }
    rc = concur__job_event(r, j, tag);
    if (rc)
        run_fail(r, run, rc);
    if (job_over(j) && (rc = finish_job(r, slot)) != 0)
        run_fail(r, run, rc);
}

static void wait_and_dispatch(concur_runner *r, struct run *run)
{
    if (r->fn_unwatched && (r->fn_running || r->nstale) && !r->poll_timer.armed)
        concur__timer_arm(&r->loop, &r->poll_timer, now_ns() + FN_POLL_NS, EV_FN_POLL);
    concur__event evs[EVENTS];
    int n = concur__loop_wait(&r->loop, evs, EVENTS, false);
    if (n < 0)
        run_fail(r, run, n);
    /* Run inside a coroutine that was cancelled or timed out: the run stops as by
     * concur_runner_stop(CONCUR_STOP_TERM) (once: the wake-up it posts is not repeated). */
    if (r->loop.parked_rc &&
        atomic_load_explicit(&r->stop_req, memory_order_relaxed) < CONCUR_STOP_TERM)
        (void)concur_runner_stop(r, CONCUR_STOP_TERM);
    for (int k = 0; k < n; k++)
        dispatch(r, run, &evs[k]);
    if (r->fn_running || r->nstale)
        deliver_fn_jobs(r, run);
}

static void run_begin(concur_runner *r)
{
    r->stop_level = 0;
    r->wall_start = concur__wall_now();
    r->run_start = now_ns();
    r->next_start_ok = 0;
    /* Forget stop requests made before this run, and an interrupted coroutine's. */
    concur__event_drain(r->loop.wake);
    r->loop.parked_rc = 0;
    atomic_store_explicit(&r->stop_req, 0, memory_order_relaxed);
    /* Function tasks: the pool's size bounds them (the run's own pool is made to measure at
     * the first one). */
    r->fn_pool = r->o.pool;
    r->fn_pool_owned = false;
    r->fn_unwatched = false;
    int limit = r->o.max_workers;
    int pool_size =
        r->o.pool ? concur_pool_max_workers(r->o.pool) : (limit > 0 ? limit : concur_cpu_count());
    r->fn_limit = pool_size > 0 ? (size_t)pool_size : 1;
}

static void run_end(concur_runner *r)
{
    /* A job held for a function slot and retries left queued by a stop are dropped. */
    job_free(r, r->held);
    r->held = NULL;
    while (r->retry_head) {
        struct job *j = r->retry_head;
        r->retry_head = j->next;
        job_free(r, j);
    }
    r->retry_tail = NULL;
    concur__timer_cancel(&r->loop, &r->start_timer);
    concur__timer_cancel(&r->loop, &r->poll_timer);
    /* Every function task has returned: the run's own pool goes (its workers, a process
     * pool's fork server). */
    if (r->fn_pool_owned)
        concur_pool_destroy(r->fn_pool);
    r->fn_pool = NULL;
    r->fn_pool_owned = false;
    if (r->o.stop_fd > 0 && !r->stop_fd_armed && /* watched again by the next run */
        concur__loop_add(&r->loop, r->o.stop_fd, EPOLLIN, EV_STOP_FD) == 0)
        r->stop_fd_armed = true;
    r->wall_end = concur__wall_now();
}

int concur_runner_run(concur_runner *r, concur_source_fn src, void *arg)
{
    if (!r || !src)
        return CONCUR_EINVAL;
    struct run run = {.src = src, .arg = arg};
    run_begin(r);
    for (;;) {
        /* A stop asked for meanwhile (e.g. by on_done) applies before anything starts. */
        take_stop_request(r, &run);
        start_ready(r, &run);
        if (r->running == 0 && r->nstale == 0 &&
            (r->stop_level || (run.source_done && !r->retry_head && !r->held)))
            break;
        wait_and_dispatch(r, &run);
    }
    source_unwatch(r, &run);
    run_end(r);
    return run.result;
}

/* ---------------------------------------------------------------- lifecycle */

/* Checks @o and copies the termination sequence into r->seq. */
static int set_options(concur_runner *r, const concur_runner_opts *o)
{
    if (o->max_workers < 0 || o->timeout != o->timeout || o->kill_grace < 0 || o->term_signal < 0 ||
        o->term_signal >= NSIG || o->start_delay < 0 ||
        (o->engine != CONCUR_ENGINE_THREADS && o->engine != CONCUR_ENGINE_PROCESSES &&
         o->engine != CONCUR_ENGINE_COROUTINES))
        return CONCUR_EINVAL;
    r->o = *o;
    if (!r->o.term_signal)
        r->o.term_signal = SIGTERM;
    size_t nseq = o->term_seq && o->term_seq_len ? o->term_seq_len : 1;
    if (!(r->seq = calloc(nseq, sizeof(*r->seq))))
        return CONCUR_ENOMEM;
    r->nseq = nseq;
    if (o->term_seq && o->term_seq_len) {
        memcpy(r->seq, o->term_seq, nseq * sizeof(*r->seq));
        for (size_t i = 0; i < nseq; i++)
            if (r->seq[i].signal <= 0 || r->seq[i].signal >= NSIG || !(r->seq[i].wait >= 0))
                return CONCUR_EINVAL;
    } else {
        r->seq[0] = (concur_term_step){r->o.term_signal, o->kill_grace > 0 ? o->kill_grace : 2.0};
    }
    r->o.term_seq = NULL; /* the copy above is the one in use */
    if (!r->o.output_cap)
        r->o.output_cap = DEFAULT_CAP;
    return 0;
}

int concur_runner_create(concur_runner **out, const concur_runner_opts *opts)
{
    if (!out)
        return CONCUR_EINVAL;
    concur_runner_opts o;
    memset(&o, 0, sizeof(o));
    if (opts)
        o = *opts;
    concur_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return CONCUR_ENOMEM;
    r->loop = CONCUR__LOOP_NONE;
    int rc = set_options(r, &o);
    const char *t = o.tmpdir && *o.tmpdir ? o.tmpdir : getenv("TMPDIR");
    if (!rc && !(r->tmpdir = strdup(t && *t ? t : "/tmp")))
        rc = CONCUR_ENOMEM;
    if (!rc)
        rc = concur__loop_init(&r->loop);
    if (!rc && o.stop_fd > 0 &&
        (rc = concur__loop_add(&r->loop, o.stop_fd, EPOLLIN, EV_STOP_FD)) == 0)
        r->stop_fd_armed = true;
    if (rc) {
        concur_runner_destroy(r);
        return rc;
    }
    *out = r;
    return 0;
}

void concur_runner_destroy(concur_runner *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nslots; i++)
        job_free(r, r->slots[i]);
    free(r->slots);
    for (size_t i = 0; i < r->capkept; i++)
        job_free(r, r->keptjobs ? r->keptjobs[i] : NULL);
    free(r->keptjobs);
    free(r->tmpdir);
    while (r->npool)
        free(r->pool[--r->npool]);
    free(r->stale); /* empty after every run */
    concur__fn_note_release(
        r->note); /* a callback still holding it (a caller's pool) closes it last */
    free(r->seq);
    free(r->rbuf);
    concur__loop_fini(&r->loop);
    free(r);
}

int concur_runner_stop(concur_runner *r, int how)
{
    if (!r || (how != CONCUR_STOP_START && how != CONCUR_STOP_TERM))
        return CONCUR_EINVAL;
    /* Raise the pending level (a lock-free atomic, fine in a handler), then wake the loop:
     * posting its eventfd is async-signal-safe. */
    int cur = atomic_load_explicit(&r->stop_req, memory_order_relaxed);
    while (cur < how && !atomic_compare_exchange_weak_explicit(
                            &r->stop_req, &cur, how, memory_order_acq_rel, memory_order_relaxed))
        ;
    return concur__loop_wake(&r->loop);
}

size_t concur_runner_count(const concur_runner *r)
{
    return r ? r->nkept : 0;
}

const concur_result *concur_runner_result(const concur_runner *r, size_t index)
{
    if (!r || index >= r->nkept || !r->keptjobs[index])
        return NULL;
    return &r->keptjobs[index]->res;
}

void concur_runner_times(const concur_runner *r, double *start, double *end)
{
    if (start)
        *start = r ? r->wall_start : 0;
    if (end)
        *end = r ? r->wall_end : 0;
}

/* ---------------------------------------------------------------- batch */

struct batch_src {
    const concur_cmd *cmds;
    size_t n;
};

static int batch_next(void *arg, size_t index, concur_cmd *cmd)
{
    struct batch_src *b = arg;
    if (index >= b->n)
        return 0;
    *cmd = b->cmds[index];
    return 1;
}

int concur_run_batch(const concur_cmd *cmds, size_t n, const concur_runner_opts *opts,
                     concur_runner **out)
{
    if (!out || (!cmds && n))
        return CONCUR_EINVAL;
    concur_runner_opts o;
    memset(&o, 0, sizeof(o));
    if (opts)
        o = *opts;
    o.flags |= CONCUR_RUN_KEEP_RESULTS;
    int rc = concur_runner_create(out, &o);
    if (rc)
        return rc;
    struct batch_src b = {cmds, n};
    return concur_runner_run(*out, batch_next, &b);
}
