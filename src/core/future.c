/*
 * future.c - the one completion object, its record allocator, and the task context.
 *
 * Invariants:
 * - A future becomes terminal exactly once: completers race through a CAS claim
 *   (concur__future_claim) and only the winner writes the outcome, then publishes the terminal
 *   state with one atomic RMW (release) that keeps the flag bits. Readers of the outcome first
 *   observe a terminal state (acquire).
 * - Callbacks are kept under one of STRIPES mutexes chosen by the future's address. A callback
 *   registered before the terminal state is published sets F_HAS_CBS in the same CAS that
 *   checks the state, so the completer knows to take the list; one registered after runs at
 *   once in the registering thread. Either way it runs exactly once, with no lock held.
 * - Waiters set F_WAITERS and sleep on the state word (futex); the completer wakes them only
 *   when the flag is set, so a completion nobody waits for costs no system call.
 * - Records come from per-thread caches refilled in batches from a shared free list, so a
 *   submit/release pair touches no shared allocator state in the common case. Under
 *   AddressSanitizer each record is a plain calloc/free so that use-after-free is caught.
 */
#include "core/concur_impl.h"
#include "sys/os.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <sys/mman.h>

/* ---------------------------------------------------------------- record allocator */

#if defined(__SANITIZE_ADDRESS__)
#define CONCUR_PLAIN_ALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CONCUR_PLAIN_ALLOC 1
#endif
#endif

static void record_free(concur_future *f);

#ifdef CONCUR_PLAIN_ALLOC
concur_future *concur__future_alloc(void)
{
    return calloc(1, sizeof(concur_future));
}
static void record_free(concur_future *f)
{
    free(f);
}
#else
enum { CACHE_MAX = 512, CACHE_BATCH = 256 };

/* Records are carved from arenas that double from 64 KiB up to 2 MiB; 2 MiB arenas are
 * aligned and marked for transparent huge pages, so a program with a million tasks in
 * flight takes one page fault per 2 MiB instead of one per 4 KiB. Arenas are kept for the
 * life of the process (records are recycled, never returned to the system). */
#define ARENA_MIN ((size_t)64 << 10)
#define ARENA_MAX ((size_t)2 << 20)

struct arena {
    struct arena *next;
};

static pthread_mutex_t g_alloc_mu = PTHREAD_MUTEX_INITIALIZER;
static concur_future *g_free; /* free records, linked by ->next; under g_alloc_mu */
static size_t g_nfree;
static struct arena *g_arenas;    /* every arena ever made, kept reachable */
static char *g_bump, *g_bump_end; /* the uncarved rest of the newest arena */
static size_t g_arena_size;
static pthread_key_t g_cache_key;
static pthread_once_t g_cache_once = PTHREAD_ONCE_INIT;

struct cache {
    concur_future *head;
    size_t n;
    bool keyed;
};
static _Thread_local struct cache tc;

static concur_future *next_of(concur_future *f)
{
    return atomic_load_explicit(&f->next, memory_order_relaxed);
}
static void set_next(concur_future *f, concur_future *n)
{
    atomic_store_explicit(&f->next, n, memory_order_relaxed);
}

/* Gives @n records of the chain @head..@tail back to the shared list. */
static void give_back(concur_future *head, concur_future *tail, size_t n)
{
    mu_lock(&g_alloc_mu);
    set_next(tail, g_free);
    g_free = head;
    g_nfree += n;
    mu_unlock(&g_alloc_mu);
}

static void cache_flush(void *unused)
{
    (void)unused;
    if (tc.head) {
        concur_future *tail = tc.head;
        while (next_of(tail))
            tail = next_of(tail);
        give_back(tc.head, tail, tc.n);
    }
    tc.head = NULL;
    tc.n = 0;
}

static void cache_key_init(void)
{
    CHECK_PTHREAD(pthread_key_create(&g_cache_key, cache_flush));
}

/* Under g_alloc_mu: a new arena to carve from. */
static bool arena_new_locked(void)
{
    size_t size = g_arena_size ? g_arena_size * 2 : ARENA_MIN;
    if (size > ARENA_MAX)
        size = ARENA_MAX;
    struct arena *a = size == ARENA_MAX ? aligned_alloc(ARENA_MAX, size) : malloc(size);
    if (!a)
        return false;
    if (size == ARENA_MAX)
        (void)madvise(a, size, MADV_HUGEPAGE); /* a hint: without it, small pages */
    g_arena_size = size;
    a->next = g_arenas;
    g_arenas = a;
    uintptr_t start = ((uintptr_t)(a + 1) + _Alignof(concur_future) - 1) &
                      ~(uintptr_t)(_Alignof(concur_future) - 1);
    g_bump = (char *)start;
    g_bump_end = (char *)a + size;
    return true;
}

static bool cache_refill(void)
{
    if (!tc.keyed) {
        /* Register the thread so its cache returns to the shared list when it exits. */
        CHECK_PTHREAD(pthread_once(&g_cache_once, cache_key_init));
        if (pthread_setspecific(g_cache_key, &tc) == 0)
            tc.keyed = true;
    }
    size_t n = 0;
    concur_future *head = NULL, *tail = NULL;
    mu_lock(&g_alloc_mu);
    if (g_free) {
        head = tail = g_free;
        n = 1;
        while (n < CACHE_BATCH && next_of(tail)) {
            tail = next_of(tail);
            n++;
        }
        g_free = next_of(tail);
        g_nfree -= n;
    } else {
        while (n < CACHE_BATCH) {
            if ((size_t)(g_bump_end - g_bump) < sizeof(concur_future) && (n || !arena_new_locked()))
                break;
            concur_future *f = (concur_future *)g_bump;
            g_bump += sizeof(concur_future);
            set_next(f, head);
            if (!head)
                tail = f;
            head = f;
            n++;
        }
    }
    mu_unlock(&g_alloc_mu);
    if (!n)
        return false;
    set_next(tail, tc.head);
    tc.head = head;
    tc.n += n;
    return true;
}

concur_future *concur__future_alloc(void)
{
    if (unlikely(!tc.head) && !cache_refill())
        return NULL;
    concur_future *f = tc.head;
    tc.head = next_of(f);
    tc.n--;
    memset(f, 0, sizeof(*f));
    return f;
}

static void record_free(concur_future *f)
{
    set_next(f, tc.head);
    tc.head = f;
    if (unlikely(++tc.n > CACHE_MAX)) {
        concur_future *head = tc.head, *tail = head;
        for (size_t i = 1; i < CACHE_BATCH; i++)
            tail = next_of(tail);
        tc.head = next_of(tail);
        tc.n -= CACHE_BATCH;
        give_back(head, tail, CACHE_BATCH);
    }
}
#endif

/* ---------------------------------------------------------------- callbacks */

struct concur__cb {
    concur_callback_fn fn;
    void *arg;
    struct concur__cb *next;
};

enum { STRIPES = 64 };
static pthread_mutex_t g_stripes[STRIPES] = {[0 ... STRIPES - 1] = PTHREAD_MUTEX_INITIALIZER};

static pthread_mutex_t *stripe_of(const concur_future *f)
{
    uintptr_t h = (uintptr_t)f;
    h ^= h >> 7;
    h ^= h >> 13;
    return &g_stripes[h % STRIPES];
}

/* ---------------------------------------------------------------- error detail */

/* The detail of concur_error_info beyond code and message, kept in the message's own
 * allocation so that the record does not grow: f->errmsg points at text[], and the state
 * flag F_ERRX (set by the completer before it publishes FAILED) says so. text holds the
 * message, then the backtrace when there is one. */
struct errx {
    const char *backtrace; /* inside text[], or NULL */
    int32_t signal, exit_status;
    bool remote, limit;
    char text[];
};

static struct errx *errx_of(char *msg)
{
    return (struct errx *)(void *)(msg - offsetof(struct errx, text));
}

/* ---------------------------------------------------------------- lifecycle */

const char *concur_state_name(concur_state s)
{
    switch (s) {
    case CONCUR_PENDING:
        return "pending";
    case CONCUR_RUNNING:
        return "running";
    case CONCUR_DONE:
        return "done";
    case CONCUR_FAILED:
        return "failed";
    case CONCUR_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

int concur_future_create(concur_future **out)
{
    if (!out)
        return CONCUR_EINVAL;
    concur_future *f = concur__future_alloc();
    if (!f)
        return CONCUR_ENOMEM;
    atomic_store_explicit(&f->refs, 1, memory_order_relaxed);
    f->t_submit = now_ns();
    *out = f;
    return 0;
}

concur_future *concur_future_retain(concur_future *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void concur_future_release(concur_future *f)
{
    if (!f)
        return;
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    concur__buf_free(&f->in);
    concur__buf_free(&f->out);
    free(atomic_load_explicit(&f->state, memory_order_relaxed) & F_ERRX ? (void *)errx_of(f->errmsg)
                                                                        : (void *)f->errmsg);
    for (struct concur__cb *c = f->cbs, *n; c; c = n) { /* never-completed futures only */
        n = c->next;
        free(c);
    }
    record_free(f);
}

bool concur__future_claim(concur_future *f, uint32_t from_mask)
{
    uint32_t v = atomic_load_explicit(&f->state, memory_order_relaxed);
    for (;;) {
        if (!(from_mask & STATE_BIT(v & ST_MASK)))
            return false;
        uint32_t nv = (v & ~ST_MASK) | ST_COMPLETING;
        if (atomic_compare_exchange_weak_explicit(&f->state, &v, nv, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    }
}

/* Records the end time unless an earlier completer attempt already did. */
static void set_end(concur_future *f, uint64_t t_end)
{
    uint64_t zero = 0;
    atomic_compare_exchange_strong_explicit(&f->t_end, &zero, t_end, memory_order_relaxed,
                                            memory_order_relaxed);
}

/* After the terminal state was published (@old: the state word before): wake waiters and run
 * the callbacks. */
static void after_publish(concur_future *f, uint32_t old)
{
    if (old & F_WAITERS)
        concur__futex_wake(&f->state, INT_MAX);
    if (old & F_HAS_CBS) {
        concur_future_retain(f); /* a callback may drop the last outside reference */
        pthread_mutex_t *m = stripe_of(f);
        mu_lock(m);
        struct concur__cb *c = f->cbs;
        f->cbs = NULL;
        mu_unlock(m);
        while (c) {
            struct concur__cb *n = c->next;
            c->fn(f, c->arg);
            free(c);
            c = n;
        }
        concur_future_release(f);
    }
}

void concur__future_finish(concur_future *f, concur_state final, uint64_t t_end)
{
    set_end(f, t_end);
    /* Only for DONE: a running task may fail from another thread (a coroutine cancelled
     * while it runs) while its worker still writes t_start. */
    if (final == CONCUR_DONE && f->t_start == 0)
        f->t_start = t_end;
    /* The state bits are ST_COMPLETING and nobody else changes them now: xor swaps them for
     * the final state and keeps whatever flags other threads set meanwhile. */
    uint32_t old = atomic_fetch_xor_explicit(&f->state, ST_COMPLETING ^ (uint32_t) final,
                                             memory_order_acq_rel);
    after_publish(f, old);
}

bool concur__future_fail(concur_future *f, uint32_t from_mask, int code, const char *msg)
{
    if (!concur__future_claim(f, from_mask))
        return false;
    f->err = code < 0 ? code : CONCUR_ETASK;
    f->errmsg = msg ? strdup(msg) : NULL; /* NULL on ENOMEM too: the code's text is used */
    concur__future_finish(f, CONCUR_FAILED, now_ns());
    return true;
}

bool concur__future_fail_info(concur_future *f, uint32_t from_mask, int code, const char *msg,
                              int signal, int exit_status, const char *backtrace, bool remote,
                              bool limit)
{
    if (code >= 0)
        code = CONCUR_ETASK;
    if (!msg)
        msg = concur_strerror(code);
    size_t ml = strlen(msg) + 1, bl = backtrace ? strlen(backtrace) + 1 : 0;
    struct errx *x = malloc(sizeof(*x) + ml + bl); /* before the claim: no failure after it */
    if (!concur__future_claim(f, from_mask)) {
        free(x);
        return false;
    }
    f->err = code;
    if (x) {
        memcpy(x->text, msg, ml);
        x->backtrace = bl ? memcpy(x->text + ml, backtrace, bl) : NULL;
        x->signal = signal;
        x->exit_status = exit_status;
        x->remote = remote;
        x->limit = limit;
        f->errmsg = x->text;
        atomic_fetch_or_explicit(&f->state, F_ERRX, memory_order_relaxed);
    } else {
        f->errmsg = NULL; /* ENOMEM: the code's text, no detail */
    }
    concur__future_finish(f, CONCUR_FAILED, now_ns());
    return true;
}

int concur_future_set_result(concur_future *f, const void *data, size_t len)
{
    if (!f || (!data && len) || f->engine)
        return CONCUR_EINVAL;
    /* Copy first, so a failed allocation leaves the future untouched. */
    concur__buf tmp = {0};
    int rc = concur__buf_set(&tmp, data, len);
    if (rc)
        return rc;
    if (!concur__future_claim(f, STATE_BIT(CONCUR_PENDING) | STATE_BIT(CONCUR_RUNNING))) {
        concur__buf_free(&tmp);
        return CONCUR_ESTATE;
    }
    f->out = tmp;
    concur__future_finish(f, CONCUR_DONE, now_ns());
    return 0;
}

int concur_future_set_error(concur_future *f, int code, const char *msg)
{
    if (!f || f->engine)
        return CONCUR_EINVAL;
    return concur__future_fail(f, STATE_BIT(CONCUR_PENDING) | STATE_BIT(CONCUR_RUNNING), code, msg)
               ? 0
               : CONCUR_ESTATE;
}

/* ---------------------------------------------------------------- queries */

concur_state concur_future_state(const concur_future *f)
{
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK;
    return s == ST_COMPLETING ? CONCUR_RUNNING : (concur_state)s;
}

bool concur_future_is_done(const concur_future *f)
{
    return st_terminal(atomic_load_explicit(&f->state, memory_order_acquire));
}

uint64_t concur_future_id(const concur_future *f)
{
    return f->id;
}

bool concur_future_cancel_requested(const concur_future *f)
{
    return atomic_load_explicit(&f->state, memory_order_relaxed) & F_CANCEL_REQ;
}

int concur_future_error(const concur_future *f)
{
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK;
    if (s == CONCUR_FAILED)
        return f->err;
    return s == CONCUR_CANCELLED ? CONCUR_ECANCELED : 0;
}

const char *concur_future_error_message(const concur_future *f)
{
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK;
    if (s == CONCUR_CANCELLED)
        return concur_strerror(CONCUR_ECANCELED);
    if (s != CONCUR_FAILED)
        return NULL;
    return f->errmsg ? f->errmsg : concur_strerror(f->err);
}

int concur_future_error_info(const concur_future *f, concur_error_info *info)
{
    if (!f || !info)
        return CONCUR_EINVAL;
    memset(info, 0, sizeof(*info));
    info->exit_status = -1;
    uint32_t v = atomic_load_explicit(&f->state, memory_order_acquire);
    if (!st_terminal(v))
        return CONCUR_EAGAIN;
    if ((v & ST_MASK) == CONCUR_CANCELLED) {
        info->code = CONCUR_ECANCELED;
        info->message = concur_strerror(CONCUR_ECANCELED);
    } else if ((v & ST_MASK) == CONCUR_FAILED) {
        Dl_info dl;
        if (f->fn && dladdr((const void *)(uintptr_t)f->fn, &dl) && dl.dli_sname &&
            dl.dli_saddr == (void *)(uintptr_t)f->fn)
            info->function = dl.dli_sname;
        info->code = f->err;
        info->message = f->errmsg ? f->errmsg : concur_strerror(f->err);
        if (v & F_ERRX) {
            const struct errx *x = errx_of(f->errmsg);
            info->signal = x->signal;
            info->exit_status = x->exit_status;
            info->backtrace = x->backtrace;
            info->remote = x->remote;
            info->limit = x->limit;
        }
    }
    return 0;
}

void concur_future_durations(const concur_future *f, double *pending, double *running)
{
    double p = 0, r = 0;
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
    if (st_terminal(s)) {
        uint64_t end = atomic_load_explicit(&f->t_end, memory_order_relaxed);
        uint64_t start = f->t_start ? f->t_start : end;
        p = start > f->t_submit ? (double)(start - f->t_submit) / 1e9 : 0;
        r = f->t_start && end > f->t_start ? (double)(end - f->t_start) / 1e9 : 0;
    }
    if (pending)
        *pending = p;
    if (running)
        *running = r;
}

/* ---------------------------------------------------------------- waiting */

enum { WAIT_SPIN = 200 };

_Thread_local int (*concur__co_wait)(concur_future *f, uint64_t deadline);
_Thread_local bool concur__co_shared_stack;
bool concur__co_shared_on;
bool concur__co_io_poll_on;

static int wait_until(concur_future *f, uint64_t deadline)
{
    uint32_t v = atomic_load_explicit(&f->state, memory_order_acquire);
    if (st_terminal(v))
        return 0;
    if (deadline != UINT64_MAX && now_ns() >= deadline)
        return CONCUR_ETIMEDOUT;
    if (concur__co_wait) { /* a loop thread of the coroutine engine */
        int rc = concur__co_wait(f, deadline);
        if (rc != CONCUR__WAIT_THREAD)
            return rc;
    }
    for (int i = 0; i < WAIT_SPIN; i++) {
        cpu_relax();
        if (st_terminal(atomic_load_explicit(&f->state, memory_order_acquire)))
            return 0;
    }
    uint64_t poll_ns =
        f->engine && f->engine->ops->wait_poll_ns ? f->engine->ops->wait_poll_ns(f->engine) : 0;
    if (poll_ns) {
        /* Yielding, so that a proxy or worker sharing this CPU runs; bounded by the deadline
         * and by the engine's poll time. */
        uint64_t now = now_ns(), until = now + poll_ns;
        if (until > deadline)
            until = deadline;
        while (now < until) {
            (void)sched_yield(); /* cannot fail on Linux */
            if (st_terminal(atomic_load_explicit(&f->state, memory_order_acquire)))
                return 0;
            now = now_ns();
        }
    }
    for (;;) {
        v = atomic_load_explicit(&f->state, memory_order_acquire);
        if (st_terminal(v))
            return 0;
        if (!(v & F_WAITERS)) {
            if (!atomic_compare_exchange_weak_explicit(&f->state, &v, v | F_WAITERS,
                                                       memory_order_acq_rel, memory_order_acquire))
                continue;
            v |= F_WAITERS;
        }
        if (concur__futex_wait(&f->state, v, deadline) == -ETIMEDOUT)
            return st_terminal(atomic_load_explicit(&f->state, memory_order_acquire))
                       ? 0
                       : CONCUR_ETIMEDOUT;
    }
}

int concur_future_wait(concur_future *f, double timeout)
{
    if (!f)
        return CONCUR_EINVAL;
    return wait_until(f, concur__deadline_ns(timeout));
}

static int outcome(concur_future *f, const void **data, size_t *len)
{
    uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK;
    if (s == CONCUR_DONE) {
        if (data)
            *data = buf_data(&f->out);
        if (len)
            *len = f->out.len;
        return 0;
    }
    return s == CONCUR_FAILED ? f->err : CONCUR_ECANCELED;
}

int concur_future_collect(concur_future *f, double timeout, const void **data, size_t *len)
{
    if (!f)
        return CONCUR_EINVAL;
    int rc = wait_until(f, concur__deadline_ns(timeout));
    return rc ? rc : outcome(f, data, len);
}

int concur_future_result(concur_future *f, const void **data, size_t *len)
{
    if (!f)
        return CONCUR_EINVAL;
    if (!concur_future_is_done(f))
        return CONCUR_EAGAIN;
    return outcome(f, data, len);
}

/* ---------------------------------------------------------------- cancel */

bool concur_future_cancel(concur_future *f)
{
    if (!f)
        return false;
    uint32_t v = atomic_fetch_or_explicit(&f->state, F_CANCEL_REQ, memory_order_seq_cst);
    if (!concur__future_claim(f, STATE_BIT(CONCUR_PENDING))) {
        if ((v & ST_MASK) == CONCUR_RUNNING && !(v & F_CANCEL_REQ) && f->engine &&
            f->engine->ops->cancel_running)
            f->engine->ops->cancel_running(f->engine, f);
        return false;
    }
    if (f->engine)
        f->engine->ops->on_cancel(f->engine, f);
    concur__future_finish(f, CONCUR_CANCELLED, now_ns());
    return true;
}

bool concur_future_cancel_kill(concur_future *f)
{
    if (!f)
        return false;
    if (concur_future_cancel(f))
        return true;
    if (!f->engine || !f->engine->ops->kill_running ||
        (atomic_load_explicit(&f->state, memory_order_acquire) & ST_MASK) != CONCUR_RUNNING)
        return false;
    return f->engine->ops->kill_running(f->engine, f);
}

/* ---------------------------------------------------------------- callbacks */

static void notify_fd_cb(concur_future *f, void *arg)
{
    (void)f;
    /* A failure (a closed fd) has no one to be reported to: the registration is the
     * caller's promise to keep the fd open. */
    (void)concur__event_post((int)(intptr_t)arg);
}

int concur_future_notify_fd(concur_future *f, int efd)
{
    if (!f || efd < 0)
        return CONCUR_EINVAL;
    return concur_future_add_callback(f, notify_fd_cb, (void *)(intptr_t)efd);
}

int concur_future_remove_notify_fd(concur_future *f, int efd)
{
    if (!f || efd < 0)
        return CONCUR_EINVAL;
    return concur_future_remove_callback(f, notify_fd_cb, (void *)(intptr_t)efd);
}

int concur_future_add_callback(concur_future *f, concur_callback_fn cb, void *arg)
{
    if (!f || !cb)
        return CONCUR_EINVAL;
    struct concur__cb *c = malloc(sizeof(*c));
    if (!c)
        return CONCUR_ENOMEM;
    c->fn = cb;
    c->arg = arg;
    c->next = NULL;
    pthread_mutex_t *m = stripe_of(f);
    mu_lock(m);
    uint32_t v = atomic_load_explicit(&f->state, memory_order_acquire);
    for (;;) {
        if (st_terminal(v)) {
            mu_unlock(m);
            free(c);
            cb(f, arg); /* already done: run now, in this thread */
            return 0;
        }
        if (v & F_HAS_CBS)
            break;
        if (atomic_compare_exchange_weak_explicit(&f->state, &v, v | F_HAS_CBS,
                                                  memory_order_acq_rel, memory_order_acquire))
            break;
    }
    struct concur__cb **pp = &f->cbs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = c;
    mu_unlock(m);
    return 0;
}

int concur_future_remove_callback(concur_future *f, concur_callback_fn cb, void *arg)
{
    if (!f || !cb)
        return CONCUR_EINVAL;
    int n = 0;
    pthread_mutex_t *m = stripe_of(f);
    mu_lock(m);
    for (struct concur__cb **pp = &f->cbs; *pp;) {
        struct concur__cb *c = *pp;
        if (c->fn == cb && c->arg == arg) {
            *pp = c->next;
            free(c);
            n++;
        } else {
            pp = &c->next;
        }
    }
    mu_unlock(m);
    return n;
}

/* ---------------------------------------------------------------- task context */

void concur__task_reset(concur_task *t)
{
    free(t->msg);
    t->msg = NULL;
    free(t->bt);
    t->bt = NULL;
    concur__buf_free(&t->out);
}

bool concur__task_complete(concur_task *t, int rc, uint64_t t_end)
{
    concur_future *f = t->f;
    if (rc == 0) {
        /* Success takes one CAS: only the running worker writes f->out (engine futures
         * cannot be completed by hand), so it writes the outcome first and publishes DONE
         * directly, without the COMPLETING step. A waiter spinning on the state word thus
         * pulls its line from this core once fewer per task. */
        free(t->msg);
        t->msg = NULL;
        f->out = t->out;
        t->out.len = 0;
        set_end(f, t_end);
        uint32_t v = atomic_load_explicit(&f->state, memory_order_relaxed);
        for (;;) {
            if ((v & ST_MASK) != CONCUR_RUNNING) {
                concur__buf_free(&f->out); /* timed out or failed by the pool: drop the result */
                return false;
            }
            if (atomic_compare_exchange_weak_explicit(&f->state, &v, (v & ~ST_MASK) | CONCUR_DONE,
                                                      memory_order_acq_rel, memory_order_relaxed))
                break;
        }
        after_publish(f, v);
        return true;
    }
    if (t->bt) { /* a detail record carries the backtrace */
        bool mine = concur__future_fail_info(f, STATE_BIT(CONCUR_RUNNING), rc, t->msg, 0, -1,
                                             t->bt, false, false);
        concur__task_reset(t);
        return mine;
    }
    if (!concur__future_claim(f, STATE_BIT(CONCUR_RUNNING))) {
        concur__task_reset(t); /* timed out or failed by the pool: drop the late result */
        return false;
    }
    {
        f->err = rc < 0 ? rc : CONCUR_ETASK;
        f->errmsg = t->msg;
        t->msg = NULL;
        concur__buf_free(&t->out);
        concur__future_finish(f, CONCUR_FAILED, t_end);
    }
    return true;
}

int concur_task_return(concur_task *t, const void *data, size_t len)
{
    if (!t)
        return CONCUR_EINVAL;
    return concur__buf_set(&t->out, data, len);
}

void *concur_task_result_alloc(concur_task *t, size_t len)
{
    if (!t)
        return NULL;
    return concur__buf_alloc(&t->out, len);
}

/* Whether a backtrace_symbols line names function @fn ("module(fn+0x12) [0x...]"). */
static bool frame_is(const char *line, const char *fn)
{
    const char *p = strchr(line, '(');
    size_t n = strlen(fn);
    return p && strncmp(p + 1, fn, n) == 0 && p[1 + n] == '+';
}

/* The backtrace of a concur_task_fail call, one frame per line from concur_task_fail (or
 * concur_task_vfail, when the task called that) outwards, malloc'd; NULL when it cannot be
 * had. */
static char *call_backtrace(void)
{
    void *frames[CONCUR__BT_FRAMES];
    int n = backtrace(frames, CONCUR__BT_FRAMES);
    char **sym = n > 0 ? backtrace_symbols(frames, n) : NULL;
    if (!sym)
        return NULL;
    /* Where the call is: the frames above it are this function's (a sanitizer may add one
     * of its own); without symbol names, two frames up. */
    int from = n > 2 ? 2 : 0;
    for (int i = 0; i < n && i < 5; i++) {
        if (frame_is(sym[i], "concur_task_vfail")) {
            from = i + 1 < n && frame_is(sym[i + 1], "concur_task_fail") ? i + 1 : i;
            break;
        }
    }
    size_t len = 1;
    for (int i = from; i < n; i++)
        len += strlen(sym[i]) + 1;
    char *text = malloc(len), *p = text;
    for (int i = from; text && i < n; i++) {
        size_t k = strlen(sym[i]);
        memcpy(p, sym[i], k);
        p[k] = '\n';
        p += k + 1;
    }
    if (text)
        *p = '\0';
    free(sym);
    return text;
}

int concur_task_vfail(concur_task *t, int code, const char *fmt, va_list ap)
{
    if (code >= 0)
        code = CONCUR_ETASK;
    if (!t)
        return code;
    if (t->want_bt) {
        free(t->bt);
        t->bt = call_backtrace();
    }
    free(t->msg);
    t->msg = NULL;
    if (fmt) {
        enum { MSG_MAX = 1024 };
        char *m = malloc(MSG_MAX);
        if (m) {
            vsnprintf(m, MSG_MAX, fmt, ap);
            t->msg = m;
        }
    }
    return code;
}

int concur_task_fail(concur_task *t, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = concur_task_vfail(t, code, fmt, ap);
    va_end(ap);
    return rc;
}

const char *concur_task_message(const concur_task *t)
{
    return t ? t->msg : NULL;
}

bool concur_task_should_stop(const concur_task *t)
{
    if (!t)
        return false;
    if (t->pool_stop && atomic_load_explicit(t->pool_stop, memory_order_relaxed))
        return true;
    if (!t->f)
        return false;
    if (t->cancel_word && atomic_load_explicit(t->cancel_word, memory_order_relaxed) == t->f->id)
        return true;
    uint32_t v = atomic_load_explicit(&t->f->state, memory_order_relaxed);
    return (v & (F_CANCEL_REQ | F_STOP)) || (v & ST_MASK) != CONCUR_RUNNING;
}

int concur_task_input(concur_task *t, const void *in, size_t len, void *dst, size_t size)
{
    if (len != size || (!in && len) || (!dst && size))
        return concur_task_fail(t, CONCUR_ESIZE, "input of %zu bytes, %zu expected", len, size);
    if (size)
        memcpy(dst, in, size);
    return 0;
}

int concur_future_get(concur_future *f, double timeout, void *dst, size_t size)
{
    const void *data = NULL;
    size_t len = 0;
    int rc = concur_future_collect(f, timeout, &data, &len);
    if (rc)
        return rc;
    if (len != size || (!dst && size))
        return CONCUR_ESIZE;
    if (size)
        memcpy(dst, data, size);
    return 0;
}

int concur_task_sleep(const concur_task *t, double seconds)
{
    enum { SLICE_NS = 5000000 };
    if (!(seconds >= 0))
        return CONCUR_EINVAL;
    uint64_t end = concur__deadline_ns(seconds);
    if (concur__co_wait && t) {
        /* In a coroutine: suspend it (a wait for a future that never completes, up to the
         * end), so that the loop runs the others; a cancel or a timeout interrupts it. */
        concur_future *never = NULL;
        if (concur_future_create(&never) == 0) {
            int rc = concur__co_wait(never, end);
            concur_future_release(never);
            if (rc != CONCUR__WAIT_THREAD)
                return rc == CONCUR_ETIMEDOUT ? 0 : CONCUR_ECANCELED;
        }
    }
    for (;;) {
        if (concur_task_should_stop(t))
            return CONCUR_ECANCELED;
        uint64_t now = now_ns();
        if (now >= end)
            return 0;
        uint64_t step = end - now < SLICE_NS ? end - now : SLICE_NS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step};
        (void)nanosleep(&ts, NULL); /* EINTR: the loop looks again */
    }
}

_Thread_local concur_task *concur__cur_task;

int concur__task_park(int fd, int timeout_ms)
{
    enum { PARK_SLICE_MS = 20 };
    concur_task *t = concur__cur_task;
    if (!t)
        return 1;
    if (concur_task_should_stop(t))
        return CONCUR_ECANCELED;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int ms = timeout_ms < 0 || timeout_ms > PARK_SLICE_MS ? PARK_SLICE_MS : timeout_ms;
    (void)poll(&pf, 1, ms); /* EINTR or a failure: the caller looks and parks again */
    return concur_task_should_stop(t) ? CONCUR_ECANCELED : 0;
}

uint64_t concur_task_id(const concur_task *t)
{
    return t && t->f ? t->f->id : 0;
}

const char *concur_task_worker_name(const concur_task *t)
{
    return t ? t->worker_name : NULL;
}

void *concur_task_user(const concur_task *t)
{
    return t ? t->user : NULL;
}
