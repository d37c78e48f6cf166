/*
 * swarm.c - n copies of one task function started at once on a pool of their own, and the
 * waiter over them (concurrently's form).
 *
 * This is a "form": it is written against the public pool and future API only
 * (concur_pool_create / spawn_workers / submit_batch / destroy, future callbacks and
 * cancel), never against one engine's insides. A swarm owns a pool of exactly n workers
 * (coroutines: of its loop threads, one by default, each running many copies):
 * the workers are started before the copies are submitted (concur_pool_spawn_workers), so
 * each copy finds an idle worker and they all run at once.
 *
 * What flows through it. Each copy is one task of the pool; its future carries a callback
 * (copy_ended) that runs once when the copy ends, in the thread that completed it (a worker
 * thread, a process pool's proxy thread, or a thread that cancelled a pending copy). The
 * callback records the copy's error, if any and if the swarm is not stopping, in the errors
 * array (completion order: the order the callbacks take the lock), then counts the copy as
 * ended and wakes the waiters. Waiters sleep on a condition variable until every copy is
 * counted, not on the futures: so when a wait returns, every error is already recorded.
 *
 * Stopping. stop() and the first error in FAIL_HARD mode set `stopping` (from then on, errors
 * are not recorded: they are the interrupted copies') and call concur_future_cancel_kill()
 * on every copy: a pending copy is cancelled, a running process copy is killed, a running
 * thread copy is flagged (concur_task_should_stop). A FAIL_HARD callback does this before it
 * counts its own copy as ended, so the swarm is not done while a callback still cancels.
 *
 * Invariants. futs[] and pool are set before any callback is registered and never change
 * until destroy. errs[0 .. nerrs) are written once and never change (at most one per copy,
 * so the array of n slots never grows); their messages point into the futures (the swarm
 * holds a reference to each) or the pool, both kept until destroy. destroy waits until
 * every copy is counted, then destroys the pool, which joins every worker thread (and so
 * every callback that could still be returning), and only then frees the swarm.
 */
#include <stdarg.h>

#include "core/concur_impl.h"
#include "core/pool.h"
#include "sys/os.h"

/* CONCUR_ENGINE_THREADS until set: seen by every thread. */
static _Atomic int default_engine = CONCUR_ENGINE_THREADS;

struct concur_swarm {
    int n; /* copies started; 0 when asked for n <= 0 */
    concur_swarm_mode mode;
    concur_engine engine;
    concur_pool *pool;      /* NULL when n == 0 */
    concur_future **futs;   /* n futures, one reference each */
    pthread_mutex_t mu;     /* protects the fields below */
    pthread_cond_t cv;      /* broadcast when ended grows (CLOCK_MONOTONIC) */
    int ended;              /* copies whose callback has finished its work */
    bool stopping;          /* stop() was called, or FAIL_HARD saw its first error */
    size_t nerrs;           /* recorded errors: errs[0 .. nerrs) */
    concur_swarm_err *errs; /* n slots */
    int *nfds;              /* concur_swarm_notify_fd: posted when the last copy ends */
    size_t nnfds;
};

static bool engine_ok(concur_engine e)
{
    return e == CONCUR_ENGINE_THREADS || e == CONCUR_ENGINE_PROCESSES ||
           e == CONCUR_ENGINE_COROUTINES || e == CONCUR_ENGINE_MPI;
}

int concur_swarm_set_default_engine(concur_engine engine)
{
    if (!engine_ok(engine))
        return CONCUR_EINVAL;
    atomic_store_explicit(&default_engine, (int)engine, memory_order_release);
    return 0;
}

concur_engine concur_swarm_get_default_engine(void)
{
    return (concur_engine)atomic_load_explicit(&default_engine, memory_order_acquire);
}

int concur_swarm_index(const concur_task *t)
{
    uint64_t id = t ? concur_task_id(t) : 0;
    return id == 0 || id > (uint64_t)INT32_MAX ? -1 : (int)(id - 1);
}

/* ------------------------------------------------------------------------------------ */
/* The end of a copy. */

/* The copy's index: its future's id minus 1 (ids are 1, 2, 3... per pool, and the swarm's
 * pool runs nothing else); checked, with a scan as the fallback. */
static int index_of(const concur_swarm *sw, const concur_future *f)
{
    uint64_t id = concur_future_id(f);
    if (id >= 1 && id <= (uint64_t)sw->n && sw->futs[id - 1] == f)
        return (int)(id - 1);
    for (int i = 0; i < sw->n; i++)
        if (sw->futs[i] == f)
            return i;
    return -1;
}

/* Fills @e for the copy of @f when it failed; false when it succeeded. */
static bool describe(const concur_swarm *sw, concur_future *f, concur_swarm_err *e)
{
    concur_error_info info;
    if (concur_future_error_info(f, &info) != 0 || info.code == 0)
        return false;
    *e = (concur_swarm_err){.index = index_of(sw, f),
                            .code = info.code,
                            .message = info.message ? info.message : concur_strerror(info.code),
                            .signal = info.signal,
                            .exit_status = info.exit_status};
    /* Only the pool cancels a copy the swarm did not stop: it broke (an initializer failed)
     * or the program is exiting. The pool's reason says more than "cancelled". */
    const char *why = concur_future_state(f) == CONCUR_CANCELLED && concur_pool_is_broken(sw->pool)
                          ? concur_pool_error_message(sw->pool)
                          : NULL;
    if (why) {
        int rc = concur_pool_check(sw->pool);
        e->code = rc == CONCUR_ECLOSED || rc == 0 ? CONCUR_EBROKEN : rc;
        e->message = why;
    }
    return true;
}

/* Interrupts every copy: pending ones are cancelled, running process copies killed, running
 * thread copies flagged. Called without the swarm's lock: cancelling a pending copy runs its
 * callback in this thread. */
static void interrupt(concur_swarm *sw)
{
    for (int i = 0; i < sw->n; i++)
        (void)concur_future_cancel_kill(sw->futs[i]);
}

/* The callback of every copy's future: runs once, when the copy has ended. */
static void copy_ended(concur_future *f, void *arg)
{
    concur_swarm *sw = arg;
    concur_swarm_err e;
    bool failed = describe(sw, f, &e), stop_others = false;

    mu_lock(&sw->mu);
    if (failed && !sw->stopping) {
        sw->errs[sw->nerrs++] = e;
        if (sw->mode == CONCUR_SWARM_FAIL_HARD)
            sw->stopping = stop_others = true;
    }
    mu_unlock(&sw->mu);

    if (stop_others)
        interrupt(sw);

    mu_lock(&sw->mu);
    bool last = ++sw->ended == sw->n;
    CHECK_PTHREAD(pthread_cond_broadcast(&sw->cv));
    /* Posted under the lock: a registration either sees the swarm done or is in the list;
     * and the fds stay the caller's (no copy of the list to outlive a destroy). */
    for (size_t i = 0; last && i < sw->nnfds; i++)
        (void)concur__event_post(sw->nfds[i]); /* a closed fd: the caller's broken promise */
    mu_unlock(&sw->mu);
}

int concur_swarm_notify_fd(concur_swarm *sw, int efd)
{
    if (!sw || efd < 0)
        return CONCUR_EINVAL;
    int rc = 0;
    mu_lock(&sw->mu);
    if (sw->ended >= sw->n) {
        (void)concur__event_post(efd);
    } else {
        int *grown = realloc(sw->nfds, (sw->nnfds + 1) * sizeof *grown);
        if (grown) {
            sw->nfds = grown;
            sw->nfds[sw->nnfds++] = efd;
        } else {
            rc = CONCUR_ENOMEM;
        }
    }
    mu_unlock(&sw->mu);
    return rc;
}

/* Waits until every copy is counted as ended or @timeout expires: 0 or CONCUR_ETIMEDOUT. */
static int wait_ended(concur_swarm *sw, double timeout)
{
    uint64_t deadline = concur__deadline_ns(timeout);
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                          .tv_nsec = (long)(deadline % 1000000000u)};
    int rc = 0;
    mu_lock(&sw->mu);
    while (sw->ended < sw->n && rc == 0) {
        if (deadline == UINT64_MAX) {
            CHECK_PTHREAD(pthread_cond_wait(&sw->cv, &sw->mu));
            continue;
        }
        int e = pthread_cond_timedwait(&sw->cv, &sw->mu, &ts);
        if (e == ETIMEDOUT)
            rc = sw->ended < sw->n ? CONCUR_ETIMEDOUT : 0;
        else if (e != 0)
            concur__panic(__FILE__, __LINE__, "pthread_cond_timedwait", e);
    }
    mu_unlock(&sw->mu);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Life cycle. */

/* Frees a swarm whose copies have all ended (or never started). */
static void swarm_free(concur_swarm *sw)
{
    concur_pool_destroy(sw->pool); /* joins every thread that could run a callback */
    for (int i = 0; i < sw->n; i++)
        concur_future_release(sw->futs[i]);
    pthread_cond_destroy(&sw->cv);
    pthread_mutex_destroy(&sw->mu);
    free(sw->futs);
    free(sw->errs);
    free(sw->nfds);
    free(sw);
}

static concur_swarm *swarm_alloc(int n, concur_swarm_mode mode, concur_engine engine)
{
    concur_swarm *sw = calloc(1, sizeof *sw);
    if (!sw)
        return NULL;
    sw->mode = mode;
    sw->engine = engine;
    if (n > 0) {
        sw->futs = calloc((size_t)n, sizeof *sw->futs);
        sw->errs = calloc((size_t)n, sizeof *sw->errs);
        if (!sw->futs || !sw->errs) {
            free(sw->futs);
            free(sw->errs);
            free(sw);
            return NULL;
        }
    }
    pthread_condattr_t ca;
    CHECK_PTHREAD(pthread_condattr_init(&ca));
    CHECK_PTHREAD(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC));
    CHECK_PTHREAD(pthread_cond_init(&sw->cv, &ca));
    CHECK_PTHREAD(pthread_condattr_destroy(&ca));
    CHECK_PTHREAD(pthread_mutex_init(&sw->mu, NULL));
    return sw;
}

/* Creates the pool of n workers and starts every one of them. On coroutines the copies
 * share the loop threads: one, or the pool options' max_workers (at most n). */
static int start_pool(concur_swarm *sw, int n, const concur_swarm_opts *opts)
{
    concur_pool_opts po = {.engine = sw->engine};
    if (opts && opts->pool)
        po = *opts->pool;
    if (po.engine == CONCUR_ENGINE_COROUTINES)
        n = po.max_workers > 0 && po.max_workers < n ? po.max_workers : 1;
    po.max_workers = n;
    po.queue_limit = 0;
    po.idle_timeout = 0;
    po.max_tasks_per_worker = 0;
    if (!po.name)
        po.name = "swarm";
    int rc = concur_pool_create(&sw->pool, &po);
    if (rc < 0)
        return rc;
    rc = concur_pool_spawn_workers(sw->pool, (size_t)n);
    if (rc >= 0 && rc < n)
        rc = CONCUR_EAGAIN;
    /* Every worker up (a process engine's worker process forked, its initializer run)
     * before a copy is handed out; a worker that cannot start fails the start: with the
     * initializer's error, or CONCUR_EAGAIN (no thread or process could be created). */
    if (rc >= 0) {
        int broke = concur__pool_await_started(sw->pool, (unsigned)n);
        if (broke)
            rc = broke == CONCUR_EINITIALIZER ? broke : CONCUR_EAGAIN;
    }
    return rc < 0 ? rc : 0;
}

int concur_swarm_start(concur_swarm **out, int n, concur_fn fn, const void *in, size_t len,
                       const concur_swarm_opts *opts)
{
    concur_swarm_mode mode = opts ? opts->mode : CONCUR_SWARM_COLLECT;
    if (!out || !fn || (!in && len) ||
        (mode != CONCUR_SWARM_COLLECT && mode != CONCUR_SWARM_SUPPRESS &&
         mode != CONCUR_SWARM_FAIL_HARD))
        return CONCUR_EINVAL;
    concur_engine engine =
        opts && opts->pool ? opts->pool->engine : concur_swarm_get_default_engine();
    if (!engine_ok(engine))
        return CONCUR_EINVAL;

    concur_swarm *sw = swarm_alloc(n, mode, engine);
    if (!sw)
        return CONCUR_ENOMEM;
    if (n <= 0) {
        *out = sw;
        return 0;
    }

    concur_input *ins = malloc((size_t)n * sizeof *ins);
    int rc = ins ? start_pool(sw, n, opts) : CONCUR_ENOMEM;
    if (rc == 0) {
        for (int i = 0; i < n; i++)
            ins[i] = (concur_input){.data = in, .len = len};
        rc = concur_pool_submit_batch(sw->pool, fn, ins, (size_t)n, sw->futs);
    }
    free(ins);
    if (rc < 0) { /* nothing was submitted: no future, no callback */
        swarm_free(sw);
        return rc;
    }
    sw->n = n;

    /* The copies run already. A copy that has ended by now gets its callback run here, at
     * once. A registration that fails leaves a copy nobody would count: stop them all. */
    int reg = 0;
    for (int i = 0; i < n && rc == 0; i++, reg++)
        rc = concur_future_add_callback(sw->futs[i], copy_ended, sw);
    if (rc < 0) {
        reg--; /* the failed one never runs */
        mu_lock(&sw->mu);
        sw->stopping = true;
        sw->ended += n - reg; /* the copies without a callback: waited for below */
        mu_unlock(&sw->mu);
        interrupt(sw);
        (void)wait_ended(sw, CONCUR_FOREVER);
        swarm_free(sw); /* its pool's destroy waits for the copies without a callback */
        return rc;
    }
    *out = sw;
    return 0;
}

int concur_swarm_wait(concur_swarm *sw, double timeout)
{
    if (!sw)
        return CONCUR_EINVAL;
    int rc = wait_ended(sw, timeout);
    if (rc < 0)
        return rc;
    mu_lock(&sw->mu);
    if (sw->nerrs > 0 && sw->mode == CONCUR_SWARM_COLLECT)
        rc = CONCUR_ETASK;
    else if (sw->nerrs > 0 && sw->mode == CONCUR_SWARM_FAIL_HARD)
        rc = sw->errs[0].code;
    mu_unlock(&sw->mu);
    return rc;
}

int concur_swarm_stop(concur_swarm *sw, double timeout)
{
    if (!sw)
        return CONCUR_EINVAL;
    mu_lock(&sw->mu);
    sw->stopping = true;
    mu_unlock(&sw->mu);
    interrupt(sw);
    return wait_ended(sw, timeout);
}

void concur_swarm_destroy(concur_swarm *sw)
{
    if (!sw)
        return;
    if (!concur_swarm_done(sw))
        (void)concur_swarm_stop(sw, CONCUR_FOREVER);
    swarm_free(sw);
}

/* ------------------------------------------------------------------------------------ */
/* Reading the state. The lock is taken on a const swarm: it guards the fields, not the
 * caller's view of them. */

static pthread_mutex_t *lock_of(const concur_swarm *sw)
{
    return (pthread_mutex_t *)&sw->mu;
}

size_t concur_swarm_errors(const concur_swarm *sw, size_t i, concur_swarm_err *out)
{
    if (!sw)
        return 0;
    mu_lock(lock_of(sw));
    size_t n = sw->nerrs;
    if (out && i < n)
        *out = sw->errs[i];
    mu_unlock(lock_of(sw));
    return n;
}

/* Appends to a snprintf-style buffer: @len counts every byte asked for, @buf gets what fits. */
CONCUR_PRINTF(4, 5)
static void append(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *at = *len < size ? buf + *len : NULL;
    int k = vsnprintf(at, at ? size - *len : 0, fmt, ap);
    va_end(ap);
    if (k > 0)
        *len += (size_t)k;
}

size_t concur_swarm_format_errors(const concur_swarm *sw, char *buf, size_t size)
{
    size_t len = 0;
    if (buf && size)
        buf[0] = '\0';
    if (!sw)
        return 0;
    if (!buf)
        size = 0;
    mu_lock(lock_of(sw));
    for (size_t i = 0; i < sw->nerrs; i++) {
        const concur_swarm_err *e = &sw->errs[i];
        const char *name = concur_err_name(e->code);
        if (strcmp(name, "UNKNOWN") != 0)
            append(buf, size, &len, "copy %d: %s (%s)\n", e->index, e->message, name);
        else
            append(buf, size, &len, "copy %d: %s (error %d)\n", e->index, e->message, e->code);
    }
    mu_unlock(lock_of(sw));
    return len;
}

bool concur_swarm_done(const concur_swarm *sw)
{
    if (!sw)
        return false;
    mu_lock(lock_of(sw));
    bool done = sw->ended >= sw->n;
    mu_unlock(lock_of(sw));
    return done;
}

int concur_swarm_size(const concur_swarm *sw)
{
    return sw ? sw->n : 0;
}

concur_engine concur_swarm_engine(const concur_swarm *sw)
{
    return sw ? sw->engine : concur_swarm_get_default_engine();
}
