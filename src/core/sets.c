/*
 * sets.c - operations over several futures: wait all/any, collect, the completion queue
 * (fqueue) and as_done.
 *
 * Waiting for "the first of many" registers a completion callback on each future; nothing
 * polls. Callback registrations are always undone before the waiting object goes away: a
 * registration is either removed (concur_future_remove_callback returns 1) or its callback
 * has run to the end (it reports under the waiter's lock). Every object here counts its
 * outstanding registrations and only frees itself when that count is zero.
 */
#include "core/concur_impl.h"

#include <limits.h>

static int check_set(concur_future *const *fs, size_t n)
{
    if (n && !fs)
        return CONCUR_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!fs[i])
            return CONCUR_EINVAL;
    return 0;
}

static double left_of(uint64_t deadline)
{
    if (deadline == UINT64_MAX)
        return CONCUR_FOREVER;
    uint64_t now = now_ns();
    return now >= deadline ? 0 : (double)(deadline - now) / 1e9;
}

int concur_wait_all(concur_future *const *fs, size_t n, double timeout)
{
    int rc = check_set(fs, n);
    if (rc)
        return rc;
    uint64_t deadline = concur__deadline_ns(timeout);
    for (size_t i = 0; i < n; i++) {
        rc = concur_future_wait(fs[i], left_of(deadline));
        if (rc)
            return rc;
    }
    return 0;
}

int concur_collect_all(concur_future *const *fs, size_t n, double timeout, size_t *failed_index)
{
    int rc = check_set(fs, n);
    if (rc)
        return rc;
    uint64_t deadline = concur__deadline_ns(timeout);
    for (size_t i = 0; i < n; i++) {
        rc = concur_future_collect(fs[i], left_of(deadline), NULL, NULL);
        if (rc == CONCUR_ETIMEDOUT)
            return rc;
        if (rc) {
            if (failed_index)
                *failed_index = i;
            return rc;
        }
    }
    return 0;
}

/* A record that other threads use while the caller waits: @on_stack, the caller's own,
 * except on a shared coroutine stack (concur__co_shared_stack), where that address holds
 * another coroutine's frames meanwhile and the record is allocated. NULL: no memory. */
static void *wait_record(void *on_stack, size_t size)
{
    return concur__co_shared_stack ? malloc(size) : on_stack;
}

static void wait_record_free(void *rec, void *on_stack)
{
    if (rec != on_stack)
        free(rec);
}

/* ---------------------------------------------------------------- wait_any */

struct any_waiter {
    _Atomic uint32_t fired;
    _Atomic int active; /* registrations neither removed nor finished */
    concur_future *sig; /* on a coroutine loop thread: completed at the first firing */
};

static void any_cb(concur_future *f, void *arg)
{
    (void)f;
    struct any_waiter *w = arg;
    atomic_store_explicit(&w->fired, 1, memory_order_release);
    if (w->sig)
        (void)concur_future_set_result(w->sig, NULL, 0); /* only the first one counts */
    concur__futex_wake(&w->fired, 1);
    /* Last touch of *w: after this the waiter may return and its stack frame go away. */
    atomic_fetch_sub_explicit(&w->active, 1, memory_order_release);
}

static bool first_done(concur_future *const *fs, size_t n, size_t *index)
{
    for (size_t i = 0; i < n; i++)
        if (concur_future_is_done(fs[i])) {
            if (index)
                *index = i;
            return true;
        }
    return false;
}

int concur_wait_any(concur_future *const *fs, size_t n, double timeout, size_t *index)
{
    int rc = check_set(fs, n);
    if (rc)
        return rc;
    if (n == 0)
        return CONCUR_EINVAL;
    if (first_done(fs, n, index))
        return 0;
    if (timeout == 0)
        return CONCUR_ETIMEDOUT;
    uint64_t deadline = concur__deadline_ns(timeout);
    struct any_waiter local, *w = wait_record(&local, sizeof(local)); /* the callbacks' */
    if (!w)
        return CONCUR_ENOMEM;
    w->sig = NULL;
    atomic_init(&w->fired, 0);
    atomic_init(&w->active, 0);
    /* In a coroutine, wait on a future of our own, which suspends it (future.c). */
    if (concur__co_wait && concur_future_create(&w->sig) != 0)
        w->sig = NULL; /* no memory: wait the thread's way */
    size_t registered = 0;
    rc = 0;
    for (; registered < n; registered++) {
        atomic_fetch_add_explicit(&w->active, 1, memory_order_relaxed);
        int r = concur_future_add_callback(fs[registered], any_cb, w);
        if (r) {
            atomic_fetch_sub_explicit(&w->active, 1, memory_order_relaxed);
            rc = r;
            break;
        }
        if (atomic_load_explicit(&w->fired, memory_order_acquire)) {
            registered++;
            break;
        }
    }
    while (!rc && !atomic_load_explicit(&w->fired, memory_order_acquire)) {
        if (w->sig)
            rc = concur_future_wait(w->sig, left_of(deadline)); /* 0: fired is set */
        else if (concur__futex_wait(&w->fired, 0, deadline) == -ETIMEDOUT &&
                 !atomic_load_explicit(&w->fired, memory_order_acquire))
            rc = CONCUR_ETIMEDOUT;
    }
    for (size_t i = 0; i < registered; i++) {
        int removed = concur_future_remove_callback(fs[i], any_cb, w);
        if (removed > 0)
            atomic_fetch_sub_explicit(&w->active, removed, memory_order_relaxed);
    }
    /* Callbacks that were already running finish in a few instructions. */
    while (atomic_load_explicit(&w->active, memory_order_acquire) > 0)
        cpu_relax();
    concur_future_release(w->sig);
    wait_record_free(w, &local);
    if (rc == 0)
        first_done(fs, n, index); /* fired: a callback ran, so one of them is terminal */
    return rc;
}

/* ---------------------------------------------------------------- fqueue */

struct fq_node {
    concur_future *f;
    size_t idx;
    struct fq_node *prev, *next;
    bool done;
};

/* A coroutine waiting in concur_fqueue_get: it waits on a future of its own (which suspends
 * it, future.c) that the next finished future completes. On the waiter's stack; linked
 * under the queue's lock. */
struct fq_co {
    concur_future *sig;
    struct fq_co *next;
};

struct concur_fqueue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fq_co *co; /* waiting coroutines */
    struct fq_node *waiting; /* registered, not finished (doubly linked) */
    struct fq_node *done_head, *done_tail;
    size_t nwaiting, ndone;
    size_t outstanding; /* callbacks registered, neither removed nor finished */
};

static void list_unlink(struct fq_node **head, struct fq_node *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        *head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    n->prev = n->next = NULL;
}

static void fq_cb(concur_future *f, void *arg);

static struct concur_fqueue *fq_of(struct fq_node *n);

int concur_fqueue_create(concur_fqueue **out)
{
    if (!out)
        return CONCUR_EINVAL;
    concur_fqueue *q = calloc(1, sizeof(*q));
    if (!q)
        return CONCUR_ENOMEM;
    pthread_condattr_t ca;
    CHECK_PTHREAD(pthread_condattr_init(&ca));
    CHECK_PTHREAD(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC));
    CHECK_PTHREAD(pthread_mutex_init(&q->mu, NULL));
    CHECK_PTHREAD(pthread_cond_init(&q->cv, &ca));
    pthread_condattr_destroy(&ca);
    *out = q;
    return 0;
}

/* A node remembers its queue through a small header placed before it. */
struct fq_cell {
    concur_fqueue *q;
    struct fq_node node;
};

static struct concur_fqueue *fq_of(struct fq_node *n)
{
    return ((struct fq_cell *)((char *)n - offsetof(struct fq_cell, node)))->q;
}

static int fq_put(concur_fqueue *q, concur_future *f, size_t idx)
{
    struct fq_cell *cell = calloc(1, sizeof(*cell));
    if (!cell)
        return CONCUR_ENOMEM;
    cell->q = q;
    struct fq_node *n = &cell->node;
    n->f = concur_future_retain(f);
    n->idx = idx;
    mu_lock(&q->mu);
    n->next = q->waiting;
    if (q->waiting)
        q->waiting->prev = n;
    q->waiting = n;
    q->nwaiting++;
    q->outstanding++;
    mu_unlock(&q->mu);
    /* Outside the queue lock: if f is already done, fq_cb runs right here and takes it. */
    int rc = concur_future_add_callback(f, fq_cb, n);
    if (rc) {
        mu_lock(&q->mu);
        list_unlink(&q->waiting, n);
        q->nwaiting--;
        q->outstanding--;
        mu_unlock(&q->mu);
        concur_future_release(n->f);
        free(cell);
    }
    return rc;
}

static void fq_cb(concur_future *f, void *arg)
{
    (void)f;
    struct fq_node *n = arg;
    concur_fqueue *q = fq_of(n);
    mu_lock(&q->mu);
    list_unlink(&q->waiting, n);
    q->nwaiting--;
    n->done = true;
    if (q->done_tail)
        q->done_tail->next = n;
    else
        q->done_head = n;
    q->done_tail = n;
    q->ndone++;
    q->outstanding--;
    CHECK_PTHREAD(pthread_cond_broadcast(&q->cv));
    /* Under the lock, so a waiter's future outlives this: completing it only posts a
     * wake-up to its loop, which never takes this lock. */
    for (struct fq_co *w = q->co; w; w = w->next)
        (void)concur_future_set_result(w->sig, NULL, 0);
    q->co = NULL;
    mu_unlock(&q->mu);
}

int concur_fqueue_put(concur_fqueue *q, concur_future *f)
{
    if (!q || !f)
        return CONCUR_EINVAL;
    return fq_put(q, f, 0);
}

static int fq_get_node(concur_fqueue *q, uint64_t deadline, struct fq_node **out)
{
    int rc = 0;
    mu_lock(&q->mu);
    for (;;) {
        if (q->done_head)
            break;
        if (q->nwaiting == 0) {
            rc = CONCUR_EAGAIN;
            break;
        }
        if (deadline != UINT64_MAX && now_ns() >= deadline) {
            rc = CONCUR_ETIMEDOUT; /* timeout 0 included: an expired wait, as everywhere */
            break;
        }
        /* In a coroutine: suspend it, not its loop's thread (no memory: block). fq_cb reads
         * the record meanwhile. */
        struct fq_co local, *w = concur__co_wait ? wait_record(&local, sizeof(local)) : NULL;
        if (w && concur_future_create(&w->sig) != 0) {
            wait_record_free(w, &local);
            w = NULL;
        }
        if (w) {
            w->next = q->co;
            q->co = w;
            mu_unlock(&q->mu);
            int r = concur_future_wait(w->sig, left_of(deadline));
            mu_lock(&q->mu);
            for (struct fq_co **pp = &q->co; *pp; pp = &(*pp)->next)
                if (*pp == w) {
                    *pp = w->next;
                    break;
                }
            concur_future_release(w->sig);
            wait_record_free(w, &local);
            if (r && r != CONCUR_ETIMEDOUT) {
                rc = r; /* the coroutine was cancelled or timed out */
                break;
            }
        } else if (deadline == UINT64_MAX) {
            CHECK_PTHREAD(pthread_cond_wait(&q->cv, &q->mu));
        } else {
            struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                                  .tv_nsec = (long)(deadline % 1000000000u)};
            int r = pthread_cond_timedwait(&q->cv, &q->mu, &ts);
            if (r != 0 && r != ETIMEDOUT)
                concur__panic(__FILE__, __LINE__, "pthread_cond_timedwait", r);
        }
    }
    if (!rc) {
        struct fq_node *n = q->done_head;
        q->done_head = n->next;
        if (!q->done_head)
            q->done_tail = NULL;
        q->ndone--;
        n->next = NULL;
        *out = n;
    }
    mu_unlock(&q->mu);
    return rc;
}

static void node_free(struct fq_node *n)
{
    free((char *)n - offsetof(struct fq_cell, node));
}

int concur_fqueue_get(concur_fqueue *q, double timeout, concur_future **out)
{
    if (!q || !out)
        return CONCUR_EINVAL;
    /* timeout 0 is "do not block": deadline 0 makes the loop answer ETIMEDOUT at once. */
    uint64_t deadline = timeout == 0 ? 0 : concur__deadline_ns(timeout);
    struct fq_node *n;
    int rc = fq_get_node(q, deadline, &n);
    if (rc)
        return rc;
    *out = n->f; /* the queue's reference passes to the caller */
    node_free(n);
    return 0;
}

size_t concur_fqueue_size(concur_fqueue *q)
{
    if (!q)
        return 0;
    mu_lock(&q->mu);
    size_t n = q->nwaiting + q->ndone;
    mu_unlock(&q->mu);
    return n;
}

void concur_fqueue_destroy(concur_fqueue *q)
{
    if (!q)
        return;
    mu_lock(&q->mu);
    /* Undo the registrations still in place; a node whose callback already started is
     * moved to the done list by that callback, under this lock, shortly. */
    for (struct fq_node *n = q->waiting, *next; n; n = next) {
        next = n->next;
        if (concur_future_remove_callback(n->f, fq_cb, n) > 0) {
            list_unlink(&q->waiting, n);
            q->nwaiting--;
            q->outstanding--;
            concur_future_release(n->f);
            node_free(n);
        }
    }
    while (q->outstanding > 0)
        CHECK_PTHREAD(pthread_cond_wait(&q->cv, &q->mu));
    for (struct fq_node *n = q->done_head, *next; n; n = next) {
        next = n->next;
        concur_future_release(n->f);
        node_free(n);
    }
    mu_unlock(&q->mu);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

/* ---------------------------------------------------------------- as_done */

struct concur_as_done {
    concur_future *const *fs;
    size_t n, next; /* next: input-order cursor, or number handed out */
    bool keep_order;
    uint64_t deadline;
    concur_fqueue *q; /* completion order only */
};

int concur_as_done_create(concur_as_done **out, concur_future *const *fs, size_t n,
                          bool keep_order, double timeout)
{
    if (!out)
        return CONCUR_EINVAL;
    int rc = check_set(fs, n);
    if (rc)
        return rc;
    concur_as_done *it = calloc(1, sizeof(*it));
    if (!it)
        return CONCUR_ENOMEM;
    it->fs = fs;
    it->n = n;
    it->keep_order = keep_order;
    it->deadline = timeout == 0 ? 0 : concur__deadline_ns(timeout);
    if (!keep_order && n) {
        rc = concur_fqueue_create(&it->q);
        for (size_t i = 0; !rc && i < n; i++)
            rc = fq_put(it->q, fs[i], i);
        if (rc) {
            concur_as_done_destroy(it);
            return rc;
        }
    }
    *out = it;
    return 0;
}

int concur_as_done_next(concur_as_done *it, concur_future **f, size_t *index)
{
    if (!it)
        return CONCUR_EINVAL;
    if (it->next >= it->n)
        return 0;
    size_t i;
    if (it->keep_order) {
        i = it->next;
        double left = it->deadline == 0 ? 0 : left_of(it->deadline);
        if (concur_future_wait(it->fs[i], left))
            return CONCUR_ETIMEDOUT;
    } else {
        struct fq_node *n;
        int rc = fq_get_node(it->q, it->deadline, &n);
        if (rc)
            return rc == CONCUR_EAGAIN ? CONCUR_ETIMEDOUT : rc;
        i = n->idx;
        concur_future_release(n->f);
        node_free(n);
    }
    it->next++;
    if (f)
        *f = it->fs[i];
    if (index)
        *index = i;
    return 1;
}

void concur_as_done_destroy(concur_as_done *it)
{
    if (!it)
        return;
    concur_fqueue_destroy(it->q);
    free(it);
}
