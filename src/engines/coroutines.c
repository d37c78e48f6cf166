/*
 * engines/coroutines.c - the coroutine engine: tasks as coroutines on loop threads.
 *
 * Each worker of the pool core is a loop thread (docs/coroutines.md). It owns a loop of the
 * OS layer (sys/loop.c: epoll, timers, the wake-up eventfd), a fiber scheduler and a slab
 * of stacks (sys/fiber.c). worker_run starts the task it was handed as a coroutine and
 * runs the loop while any coroutine it started lives:
 *
 *     a pass          resume every ready coroutine once, in order; each runs until it
 *                     suspends (concur/coro.h) or returns (its future completes here)
 *     more tasks      after each pass, pop queued tasks with concur__worker_pop and
 *                     start them (they run in the next pass): a task that blocks its
 *                     thread from the start never returns to the loop, so what is queued
 *                     behind it stays for another worker
 *     events          when nothing is ready, block in epoll until an fd, a timer or a
 *                     wake-up; otherwise poll once per POLL_NS (1 ms) of passes
 *
 * Wake-ups from other threads go through the loop's eventfd: a submit while a loop is
 * blocked (the class's `queued` hook: one load when no loop is blocked), a cancel of a
 * running coroutine and a shutdown with CONCUR_SHUTDOWN_CANCEL (both also set the loop's
 * `check` flag: the loop then scans its waiting coroutines for one to interrupt). The
 * blocking side announces itself (blocked, nblocked) and then looks for queued work; the
 * submitting side queues and then reads nblocked (all sequentially consistent), so one of
 * the two sees the other.
 *
 * A coroutine lives on its own stack; its record (struct co) sits at the top of that stack,
 * so starting one takes no allocation once the slab has free stacks. Timers and fds in the
 * loop carry a tag: the coroutine's address with the kind in the low bits.
 *
 * task_timeout, two ways: a loop timer per coroutine fails its future with
 * CONCUR_ETASKTIMEOUT when it fires and interrupts the suspension in progress; and since a
 * coroutine that holds its loop (computes, or blocks the thread) keeps the loop from
 * looking at its timers, the core's watchdog (own_timeouts false) watches the coroutine
 * running at each moment (concur__worker_running, set around each resume) and fails its
 * future on time. Whichever claims the future first fails it; the other does nothing.
 */
#include "core/pool.h"
#include "sys/fiber.h"
#include "sys/os.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

enum { EV_BATCH = 64 };
/* While coroutines are ready, the loop looks at its fds and timers once this much time
 * (on the coarse clock) has passed: a syscall costs far more than a switch. */
#define POLL_NS 1000000u
/* How often a loop tells waiters that it completes tasks (wait_poll_ns). */
#define DONE_EVERY_NS 10000u
/* Tasks a loop takes off the pool's queue at once. */
enum { ADMIT_BATCH = 32 };
/* A yield switches straight to the next ready coroutine at most this many times in a row
 * before it goes back through the loop, and reads the clock every STAMP_EVERY of them (a
 * power of two). */
enum { SWITCH_MAX = 256, STAMP_EVERY = 8 };
#define CANCEL_MSG "cancelled while running: the coroutine was interrupted"
enum { TAG_FD = 0, TAG_WAIT = 1, TAG_TIMEOUT = 2, TAG_IO = 3, TAG_KINDS = 3 };
enum { W_NONE, W_SLEEP, W_FD, W_FUTURE, W_IO }; /* what a coroutine waits in (W_NONE: ready or
                                             running) */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DEFAULT_STACK (256u * 1024)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DEFAULT_STACK (256u * 1024)
#endif
#endif
#ifndef DEFAULT_STACK
#define DEFAULT_STACK (64u * 1024)
#endif
#define MAX_STACK ((size_t)1 << 30)

typedef struct cloop cloop;
typedef struct fwait fwait;

typedef struct co {
    concur__fiber fib;
    concur_task t;
    cloop *L;
    struct co *rnext;       /* ready queue */
    struct co *prev, *next; /* the loop's live coroutines */
    concur__timer timer;    /* a sleep, or a wait's timeout */
    concur__timer ttimer;   /* task_timeout */
    int wait;               /* W_* */
    int wake_rc;            /* what the suspension returns, set by who woke it */
    int fd;                 /* W_FD: the fd in the loop's epoll set */
    uint32_t revents;
    bool fd_fired;          /* W_FD: the fd's event ended the wait (its one shot is spent) */
    bool io_busy;           /* W_IO: its read or write is in the kernel (see ring_rw) */
    int io_rc;              /* W_IO: the interruption waiting for the cancel to complete */
    int32_t io_res;         /* W_IO: the read's or write's result */
    fwait *wrec; /* W_FUTURE: its record */
    int rc;      /* the task function's return value */
    void *stack;
    uint64_t *canary;
} co;

struct engine {
    pthread_mutex_t mu;
    cloop *loops; /* the live loops, under mu */
    _Atomic int nblocked;
    _Atomic uint64_t max_stall_ns;
    _Atomic uint64_t last_done; /* ns: a loop completed a task (stored every DONE_EVERY_NS) */
    size_t stack_size;
    bool shared;  /* coroutine_shared_stack */
    bool io_poll; /* coroutine_io_poll */
    uint64_t timeout_ns; /* 0: none */
    double task_timeout;
};

struct cloop {
    concur__loop loop;
    concur__fiber_sched sched;
    concur__slab slab;
    concur__worker *w;
    struct engine *e;
    concur_task tmpl; /* what every coroutine's context starts from */
    co *rhead, *rtail;
    co *live;
    size_t nlive;
    uint64_t stamp;     /* coarse clock after the last resume (or the pass's start) */
    uint64_t last_end;  /* the clock when the last coroutine finished */
    uint64_t told_end;  /* the last_end last stored in e->last_done */
    unsigned nswitch;   /* direct switches since the loop last resumed a coroutine */
    uint64_t last_poll; /* coarse clock at the last look at fds and timers */
    uint64_t max_stall;
    _Atomic int blocked; /* in epoll with nothing to run */
    _Atomic int check;   /* a cancel or a stop arrived: scan the waiting coroutines */
    fwait *_Atomic inbox; /* futures completed for waiting coroutines (any thread) */
    cloop *prev, *next;  /* in the engine's list */
    co **fdw;            /* by fd: the coroutine waiting on it, or NULL (see arm_fd) */
    size_t nfdw;
    bool ring_tried;     /* concur__loop_ring was called (at the first read or write) */
    concur__fiber_stack sstack; /* coroutine_shared_stack: the stack its coroutines take
                                 * turns on (records from rec_get); lo NULL otherwise */
    co *cfree;           /* shared: records of ended coroutines, for the next ones */
    struct rec_chunk *rchunks; /* shared: where records come from (rec_get) */
    char *rbump;
    size_t rleft, rsize;
};

/* Shared stacks: a coroutine's record is a heap block of CO_RECORD bytes, the co and then
 * the inline part of its image buffer, enough for a coroutine that waits a few calls deep
 * (a sleep in a task function keeps about 220 bytes; sys/fiber.c reserves the depth where
 * it suspends plus a margin). Deeper frames get a buffer of their own. */
#define CO_RECORD ((sizeof(co) + 448 + 63) & ~(size_t)63)

/* Records are carved from chunks that double from 64 KiB to 2 MiB (the big ones advised
 * for huge pages: 100,000 coroutines then grow the heap a few dozen times, not 100,000),
 * and are kept for the loop's next coroutines until it ends. */
struct rec_chunk {
    struct rec_chunk *next;
};
#define REC_CHUNK_MIN ((size_t)64 << 10)
#define REC_CHUNK_MAX ((size_t)2 << 20)

static bool shared(const cloop *L)
{
    return L->sstack.lo != NULL;
}

static co *rec_get(cloop *L)
{
    co *c = L->cfree;
    if (c) {
        L->cfree = c->rnext;
        return c;
    }
    if (!L->rleft) {
        size_t size = L->rsize ? L->rsize * 2 : REC_CHUNK_MIN;
        if (size > REC_CHUNK_MAX)
            size = REC_CHUNK_MAX;
        struct rec_chunk *k =
            size == REC_CHUNK_MAX ? aligned_alloc(REC_CHUNK_MAX, size) : malloc(size);
        if (!k)
            return NULL;
        if (size == REC_CHUNK_MAX)
            (void)madvise(k, size, MADV_HUGEPAGE); /* a hint: without it, small pages */
        k->next = L->rchunks;
        L->rchunks = k;
        L->rsize = size;
        L->rbump = (char *)k + 64;
        L->rleft = (size - 64) / CO_RECORD;
    }
    c = (co *)L->rbump;
    L->rbump += CO_RECORD;
    L->rleft--;
    return c;
}

static _Thread_local co *tls_co; /* the running coroutine of this thread */

static uint64_t tag_of(const co *c, unsigned kind)
{
    return (uint64_t)(uintptr_t)c | kind;
}

static uint64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts); /* cannot fail for this clock */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- interruption */

/* What a suspension of @c returns now without waiting: 0 (it may wait), CONCUR_ECANCELED
 * (cancelled while running, or the pool stops) or CONCUR_ETASKTIMEOUT. */
static int interrupted_slow(const co *c, uint32_t v);

/* The check of every suspension and switch: inline, two loads when nothing happened. */
static inline int interrupted(const co *c)
{
    uint32_t v = atomic_load_explicit(&c->t.f->state, memory_order_acquire);
    if (likely((v & ST_MASK) == CONCUR_RUNNING && !(v & F_CANCEL_REQ)) &&
        !(c->t.pool_stop && atomic_load_explicit(c->t.pool_stop, memory_order_relaxed)))
        return 0;
    return interrupted_slow(c, v);
}

/* @f's state word once no completer is writing its outcome (a few stores away). */
static uint32_t settled(concur_future *f)
{
    uint32_t v;
    while (((v = atomic_load_explicit(&f->state, memory_order_acquire)) & ST_MASK) ==
           ST_COMPLETING)
        cpu_relax();
    return v;
}

static int interrupted_slow(const co *c, uint32_t v)
{
    if (c->t.pool_stop && atomic_load_explicit(c->t.pool_stop, memory_order_relaxed))
        return CONCUR_ECANCELED;
    if ((v & ST_MASK) == CONCUR_RUNNING && !(v & F_CANCEL_REQ))
        return 0;
    /* Cancelled, and the canceller has not failed the future yet (its cancel_running call
     * comes right after the flag): fail it here, so that a task that returns at once
     * cannot complete it first. Whichever claims it first fails it; the same way. */
    if ((v & ST_MASK) == CONCUR_RUNNING)
        concur__future_fail(c->t.f, STATE_BIT(CONCUR_RUNNING), CONCUR_ECANCELED, CANCEL_MSG);
    /* Another thread (the core's watchdog) may be failing it right now: its outcome tells
     * which interruption this is. */
    v = settled(c->t.f);
    if (!(v & F_CANCEL_REQ) && (v & ST_MASK) == CONCUR_FAILED &&
        c->t.f->err == CONCUR_ETASKTIMEOUT)
        return CONCUR_ETASKTIMEOUT;
    return CONCUR_ECANCELED;
}

/* ---------------------------------------------------------------- the ready queue */

static void ready_push(cloop *L, co *c)
{
    c->rnext = NULL;
    if (L->rtail)
        L->rtail->rnext = c;
    else
        L->rhead = c;
    L->rtail = c;
}

/* Ends the wait of @c (if it waits) with @rc and makes it ready. */
static void wake(cloop *L, co *c, int rc)
{
    if (c->wait == W_NONE)
        return;
    if (c->wait == W_IO && c->io_busy) {
        /* The kernel still holds the buffer: ask it to cancel, and end the wait when the
         * read's or write's completion comes (dispatch). */
        if (rc && !c->io_rc) {
            c->io_rc = rc;
            concur__timer_cancel(&L->loop, &c->timer);
            (void)concur__loop_rw_cancel(&L->loop, tag_of(c, TAG_IO)); /* -EBUSY: it ends
                                                                         by itself */
        }
        return;
    }
    concur__timer_cancel(&L->loop, &c->timer);
    if (c->wait == W_FD) {
        L->fdw[c->fd] = NULL;
        if (!c->fd_fired) /* a timeout or a cancel: disarm it (a closed fd is gone already) */
            (void)concur__loop_del(&L->loop, c->fd);
        c->fd = -1;
    }
    c->wait = W_NONE;
    c->wake_rc = rc;
    ready_push(L, c);
}

/* ---------------------------------------------------------------- a coroutine's life */

static void co_main(void *arg)
{
    co *c = arg;
    concur_future *f = c->t.f;
    c->rc = f->fn(&c->t, buf_data(&f->in), f->in.len);
}

/* Starts the RUNNING future @f as a coroutine (takes over the engine's reference); its
 * start time is @now (one clock read for the tasks a pass admits). */
static co *spawn(cloop *L, concur_future *f, uint64_t now)
{
    uint64_t *canary = NULL;
    void *lo = NULL;
    co *c;
    if (shared(L)) {
        c = rec_get(L);
    } else {
        lo = concur__slab_get(&L->slab, &canary);
        /* The record sits at the top of the stack. */
        c = lo ? (co *)(((uintptr_t)lo + L->slab.stack - sizeof(co)) & ~(uintptr_t)63) : NULL;
    }
    if (!c) {
        concur__future_fail(f, STATE_BIT(CONCUR_RUNNING), CONCUR_ENOMEM,
                            "no memory for a coroutine stack");
        concur_future_release(f);
        return NULL;
    }
    memset(c, 0, sizeof(*c));
    c->L = L;
    c->t = L->tmpl;
    c->t.f = f;
    c->fd = -1;
    c->stack = lo;
    c->canary = canary;
    f->t_start = now;
    if (L->e->timeout_ns)
        concur__timer_arm(&L->loop, &c->ttimer, f->t_start + L->e->timeout_ns,
                          tag_of(c, TAG_TIMEOUT));
    if (shared(L))
        concur__fiber_make_shared(&c->fib, &L->sstack, c + 1, CO_RECORD - sizeof(co), co_main, c);
    else
        concur__fiber_make(&c->fib, lo, (uintptr_t)c - (uintptr_t)lo, canary, co_main, c);
    c->next = L->live;
    if (L->live)
        L->live->prev = c;
    L->live = c;
    L->nlive++;
    ready_push(L, c);
    return c;
}

/* The coroutine @c returned: complete its future, give its stack back. */
static void finish(cloop *L, co *c)
{
    uint64_t end = now_ns();
    L->last_end = end;
    if (end - L->told_end >= DONE_EVERY_NS) { /* waiters read it: not on every completion */
        L->told_end = end;
        atomic_store_explicit(&L->e->last_done, end, memory_order_relaxed);
    }
    concur__timer_cancel(&L->loop, &c->ttimer);
    concur__timer_cancel(&L->loop, &c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        L->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (--L->nlive == 0)
        concur__worker_ready(L->w);
    concur_future *f = c->t.f;
    concur__task_complete(&c->t, c->rc, end); /* false: it failed already; result dropped */
    concur_future_release(f);                 /* the engine's reference */
    concur__fiber_release(&c->fib);
    if (shared(L)) {
        c->rnext = L->cfree;
        L->cfree = c;
    } else {
        concur__slab_put(&L->slab, c->stack, c->canary);
    }
}

static void note_stall(cloop *L, uint64_t dt)
{
    L->max_stall = dt;
    uint64_t m = atomic_load_explicit(&L->e->max_stall_ns, memory_order_relaxed);
    while (m < dt && !atomic_compare_exchange_weak_explicit(&L->e->max_stall_ns, &m, dt,
                                                            memory_order_relaxed,
                                                            memory_order_relaxed))
        ;
}

/* Resumes @c; it, or another coroutine it (or a successor) switched to, comes back. */
static void resume(cloop *L, co *c)
{
    tls_co = c;
    L->nswitch = 0;
    if (L->e->timeout_ns)
        concur__worker_running(L->w, c->t.f);
    co *back = (co *)concur__fiber_resume(&L->sched, &c->fib); /* fib is co's first member */
    uint64_t now = coarse_ns(), dt = now - L->stamp; /* the loop's own part is negligible */
    L->stamp = now;
    if (L->e->timeout_ns)
        concur__worker_running(L->w, NULL);
    tls_co = NULL;
    if (dt > L->max_stall)
        note_stall(L, dt);
    if (back->fib.finished)
        finish(L, back);
}

/* From inside @c, which yields: straight to the next ready coroutine @n, without the loop
 * (one jump instead of two). The clock is read every STAMP_EVERY switches, for the stall
 * counter and to go back to the loop once POLL_NS has passed since it last looked at its
 * fds and timers (at the latest after SWITCH_MAX switches). */
static int switch_to(cloop *L, co *c, co *n)
{
    if ((++L->nswitch & (STAMP_EVERY - 1)) == 0) {
        uint64_t now = coarse_ns(), dt = now - L->stamp;
        L->stamp = now;
        if (dt > L->max_stall)
            note_stall(L, dt);
        if (now - L->last_poll >= POLL_NS)
            L->nswitch = SWITCH_MAX;
    }
    L->rhead = n->rnext;
    if (!L->rhead)
        L->rtail = NULL;
    ready_push(L, c);
    c->wait = W_NONE;
    c->wake_rc = 0;
    tls_co = n;
    if (L->e->timeout_ns)
        concur__worker_running(L->w, n->t.f);
    concur__fiber_switch(&L->sched, &n->fib);
    return c->wake_rc ? c->wake_rc : interrupted(c);
}

/* One pass: every coroutine ready now runs once (those it makes ready run next pass). */
static void run_ready(cloop *L)
{
    co *c = L->rhead;
    L->rhead = L->rtail = NULL;
    L->stamp = coarse_ns();
    while (c) {
        co *next = c->rnext;
        resume(L, c);
        c = next;
    }
}

/* From inside @c: back to the loop until woken; what the wait returns. */
static int suspend(co *c, int wait)
{
    c->wait = wait;
    c->wake_rc = 0;
    concur__fiber_suspend(&c->L->sched);
    return c->wake_rc ? c->wake_rc : interrupted(c);
}

/* Called by every way into a suspension before it sets anything up: what it returns at
 * once instead of waiting (0: it may wait). An interruption (see interrupted()), or
 * CONCUR_ENOMEM when a coroutine on a shared stack finds no room to keep its frames while
 * it waits (sys/fiber.h). */
static inline int before_wait(co *c)
{
    int rc = interrupted(c);
    if (!rc && shared(c->L) && !concur__fiber_reserve(&c->L->sched))
        rc = CONCUR_ENOMEM;
    return rc;
}

/* ---------------------------------------------------------------- events */

static void expire(cloop *L, co *c)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "the task ran past its timeout of %g s", L->e->task_timeout);
    concur__future_fail(c->t.f, STATE_BIT(CONCUR_RUNNING), CONCUR_ETASKTIMEOUT, msg);
    wake(L, c, CONCUR_ETASKTIMEOUT);
}

static void dispatch(cloop *L, const concur__event *ev)
{
    if (ev->tag == CONCUR__LOOP_WAKE)
        return; /* drained; what it announced is in `check` or the queue */
    co *c = (co *)(uintptr_t)(ev->tag & ~(uint64_t)TAG_KINDS);
    switch ((unsigned)(ev->tag & TAG_KINDS)) {
    case TAG_FD:
        if (c->wait == W_FD) {
            c->revents = ev->events;
            c->fd_fired = true;
            wake(L, c, 0);
        }
        break;
    case TAG_WAIT:
        wake(L, c, c->wait == W_SLEEP ? 0 : CONCUR_ETIMEDOUT);
        break;
    case TAG_TIMEOUT:
        expire(L, c);
        break;
    case TAG_IO:
        c->io_busy = false;
        c->io_res = ev->res;
        /* Cancelled before it was done: the interruption. Done first: its result (what it
         * read is not lost; a cancel or task timeout shows at the next suspension). */
        wake(L, c, c->io_rc && (ev->res == -ECANCELED || ev->res == -EINTR) ? c->io_rc : 0);
        break;
    }
}

/* A cancel or a stop arrived: interrupt the waiting coroutines it concerns. */
static void scan(cloop *L)
{
    for (co *c = L->live; c; c = c->next) {
        if (c->wait == W_NONE)
            continue; /* ready: it sees it when it next suspends */
        int rc = interrupted(c);
        if (rc)
            wake(L, c, rc);
    }
}

/* Looks at the loop's fds and timers; with @block, waits for one (or a wake-up) unless
 * tasks are queued (@want_tasks) or a check is due. */
static void poll_events(cloop *L, bool block, bool want_tasks)
{
    concur_pool *p = L->w->pool;
    if (block) {
        atomic_store_explicit(&L->blocked, 1, memory_order_seq_cst);
        atomic_fetch_add_explicit(&L->e->nblocked, 1, memory_order_seq_cst);
        if ((want_tasks && concur__pool_pending(p) > 0) ||
            atomic_load_explicit(&L->check, memory_order_seq_cst) ||
            atomic_load_explicit(&L->inbox, memory_order_seq_cst))
            block = false;
    }
    concur__event ev[EV_BATCH];
    int n = concur__loop_wait(&L->loop, ev, EV_BATCH, !block);
    if (atomic_load_explicit(&L->blocked, memory_order_relaxed)) {
        atomic_store_explicit(&L->blocked, 0, memory_order_seq_cst);
        atomic_fetch_sub_explicit(&L->e->nblocked, 1, memory_order_seq_cst);
    }
    for (int i = 0; i < n; i++) /* n < 0: epoll failed on a valid set; nothing to do */
        dispatch(L, &ev[i]);
}

/* ---------------------------------------------------------------- awaiting futures */

/*
 * A coroutine waits for a future with a callback on it. The callback runs in whatever
 * thread completes the future: it pushes the record on the loop's inbox (a lock-free
 * stack), wakes the loop through its eventfd and sets `done`, after which it touches
 * nothing. The loop drains the inbox (the record's `drained`) and wakes the coroutine if it
 * still waits on that record. The record belongs to the coroutine, which frees it once the
 * callback was removed (never ran) or is done and the loop drained it: so neither the loop
 * (the coroutine, hence its loop, lives until then) nor the record is ever used after free.
 */
struct fwait {
    co *c;
    cloop *L;
    fwait *next;
    _Atomic int done;
    bool drained; /* the loop's thread only */
};

static void fwait_fired(concur_future *f, void *arg)
{
    (void)f;
    fwait *r = arg;
    cloop *L = r->L;
    fwait *head = atomic_load_explicit(&L->inbox, memory_order_relaxed);
    do
        r->next = head;
    while (!atomic_compare_exchange_weak_explicit(&L->inbox, &head, r, memory_order_seq_cst,
                                                  memory_order_relaxed));
    (void)concur__loop_wake(&L->loop); /* a full counter is a pending wake-up */
    atomic_store_explicit(&r->done, 1, memory_order_release);
}

static void drain_inbox(cloop *L)
{
    fwait *r = atomic_exchange_explicit(&L->inbox, NULL, memory_order_acquire);
    while (r) {
        fwait *next = r->next;
        r->drained = true;
        if (r->c->wait == W_FUTURE && r->c->wrec == r)
            wake(L, r->c, 0);
        r = next;
    }
}

/* Yields, whatever the coroutine's interruption, until the callback of @r is done with it
 * and the loop has drained it. */
static void fwait_settle(co *c, fwait *r)
{
    while (!atomic_load_explicit(&r->done, memory_order_acquire) || !r->drained) {
        ready_push(c->L, c);
        (void)suspend(c, W_NONE);
    }
}

static int co_wait_future(concur_future *f, uint64_t deadline)
{
    co *c = tls_co;
    if (!c)
        return CONCUR__WAIT_THREAD;
    int rc = before_wait(c);
    if (rc)
        return rc;
    fwait *r = calloc(1, sizeof(*r));
    if (!r)
        return CONCUR__WAIT_THREAD; /* no memory: block the thread instead */
    r->c = c;
    r->L = c->L;
    c->wrec = r;
    if (concur_future_add_callback(f, fwait_fired, r) != 0) {
        free(r);
        return CONCUR__WAIT_THREAD;
    }
    if (deadline != UINT64_MAX)
        concur__timer_arm(&c->L->loop, &c->timer, deadline, tag_of(c, TAG_WAIT));
    rc = suspend(c, W_FUTURE);
    c->wrec = NULL;
    if (rc == 0 || concur_future_remove_callback(f, fwait_fired, r) == 0)
        fwait_settle(c, r); /* it fired: wait until nothing uses the record */
    free(r);
    if (rc == CONCUR_ETIMEDOUT &&
        st_terminal(atomic_load_explicit(&f->state, memory_order_acquire)))
        rc = 0; /* it completed as the deadline passed */
    return rc;
}

/* Starts queued tasks, at most @room, and with several loop threads only this loop's share
 * of what is queued (the others may be free to take the rest). Returns how many it took.
 * While no other coroutine is ready, each new one runs at once, up to its first suspension,
 * before the next is made: one that completes there gives its stack back while its lines
 * are still in the cache, and the next one takes it (a batch of empty tasks then touches
 * one stack instead of one per task). Otherwise they queue behind the ready ones. */
static unsigned admit(cloop *L, unsigned room)
{
    concur_pool *p = L->w->pool;
    uint64_t pending = concur__pool_pending(p);
    uint64_t loops = (uint64_t)concur__pool_max_workers(p);
    uint64_t share = (pending + loops - 1) / loops;
    if (share < room)
        room = (unsigned)share;
    unsigned got = 0;
    uint64_t now = 0;
    L->stamp = coarse_ns(); /* for the stall count of those run at once; resume() keeps it */
    concur_future *batch[ADMIT_BATCH];
    size_t nb = 0, at = 0;
    while (got < room) {
        if (at == nb) { /* one lock of the queue for a few tasks */
            if (!concur__pool_pending(p))
                break;
            bool popped;
            unsigned want = room - got < ADMIT_BATCH ? room - got : ADMIT_BATCH;
            nb = concur__worker_pop_n(L->w, batch, want, &popped);
            at = 0;
            if (!nb) {
                if (!popped)
                    break;
                continue;
            }
        }
        concur_future *f = batch[at++];
        if (!now)
            now = now_ns();
        co *c = spawn(L, f, now);
        got++;
        if (c && L->rhead == c && !c->rnext) {
            L->rhead = L->rtail = NULL;
            L->last_end = 0;
            resume(L, c);
            /* The next one starts when this one ended, if it did (the clock costs tens of
             * ns on some virtual machines); otherwise the clock is read again. */
            now = L->last_end;
        }
    }
    return got;
}

/* ---------------------------------------------------------------- the class */

static unsigned worker_run(concur__worker *w, concur_task *t, concur_future *f, unsigned room)
{
    cloop *L = w->ctx;
    L->tmpl = (concur_task){.worker_name = t->worker_name,
                            .user = t->user,
                            .pool_stop = t->pool_stop,
                            .want_bt = t->want_bt};
    unsigned started = 1;
    spawn(L, f, now_ns());
    while (L->nlive) {
        run_ready(L);
        /* After the pass, not before: a task that blocks its thread from the start never
         * comes back here, so what is queued behind it stays for another worker. */
        started += admit(L, room - started);
        if (!L->nlive)
            break;
        if (!L->rhead || L->stamp - L->last_poll >= POLL_NS) {
            L->last_poll = L->stamp;
            poll_events(L, !L->rhead, started < room);
        }
        if (atomic_load_explicit(&L->inbox, memory_order_relaxed))
            drain_inbox(L);
        if (atomic_load_explicit(&L->check, memory_order_relaxed) &&
            atomic_exchange_explicit(&L->check, 0, memory_order_seq_cst))
            scan(L);
    }
    return started;
}

static void loop_free(cloop *L)
{
    while (L->rchunks) {
        struct rec_chunk *k = L->rchunks;
        L->rchunks = k->next;
        free(k);
    }
    concur__loop_fini(&L->loop);
    concur__slab_fini(&L->slab);
    free(L->fdw);
    free(L);
}

static int co_park(int fd, int timeout_ms);

static int worker_start(concur__worker *w, concur_task *t, bool *hook_failed)
{
    struct engine *e = concur__pool_engine_state(w->pool);
    *hook_failed = false;
    cloop *L = calloc(1, sizeof(*L));
    if (!L)
        return CONCUR_ENOMEM;
    L->w = w;
    L->e = e;
    int rc = concur__loop_init(&L->loop);
    if (rc) {
        free(L);
        return rc;
    }
    concur__slab_init(&L->slab, e->stack_size);
    if (e->shared) {
        uint64_t *canary;
        L->sstack.lo = concur__slab_get(&L->slab, &canary);
        if (!L->sstack.lo) {
            loop_free(L);
            return CONCUR_ENOMEM;
        }
        L->sstack.size = L->slab.stack;
        L->sstack.canary = canary;
        concur__co_shared_stack = true; /* sets.c: no waiting record on the stack */
    }
    concur__fiber_sched_init(&L->sched);
    mu_lock(&e->mu);
    L->next = e->loops;
    if (e->loops)
        e->loops->prev = L;
    e->loops = L;
    mu_unlock(&e->mu);
    concur__worker_set_ctx(w, L);
    concur__co_wait = co_wait_future; /* this thread's future waits suspend its coroutines */
    concur__loop_park = co_park;      /* and so do the loops run inside them */
    return concur__worker_init_hook(w, t, hook_failed);
}

static void worker_end(concur__worker *w)
{
    cloop *L = w->ctx;
    if (!L)
        return;
    struct engine *e = L->e;
    mu_lock(&e->mu);
    if (L->prev)
        L->prev->next = L->next;
    else
        e->loops = L->next;
    if (L->next)
        L->next->prev = L->prev;
    mu_unlock(&e->mu);
    concur__worker_set_ctx(w, NULL);
    loop_free(L);
}

/* Wakes every loop (@check: and makes it scan its waiting coroutines), or with !check only
 * those blocked in epoll. */
static void wake_loops(struct engine *e, bool check)
{
    mu_lock(&e->mu);
    for (cloop *L = e->loops; L; L = L->next) {
        if (check)
            atomic_store_explicit(&L->check, 1, memory_order_seq_cst);
        if (check || atomic_load_explicit(&L->blocked, memory_order_seq_cst))
            (void)concur__loop_wake(&L->loop); /* a full counter is a pending wake-up */
    }
    mu_unlock(&e->mu);
}

static void queued(concur_pool *p)
{
    struct engine *e = concur__pool_engine_state(p);
    if (atomic_load_explicit(&e->nblocked, memory_order_seq_cst))
        wake_loops(e, false);
}

static void stop(void *state)
{
    wake_loops(state, true);
}

static void cancel_running(concur_pool *p, concur_future *f)
{
    /* The future fails now; its coroutine sees it at its current or next suspension. If
     * the coroutine saw the flag first and is failing it (interrupted_slow), or it is
     * completing, that is a few stores away: the future is final when this returns. */
    concur__future_fail(f, STATE_BIT(CONCUR_RUNNING), CONCUR_ECANCELED, CANCEL_MSG);
    (void)settled(f);
    wake_loops(concur__pool_engine_state(p), true);
}

static void counts(concur_pool *p, concur_pool_counts *c)
{
    struct engine *e = concur__pool_engine_state(p);
    c->max_stall_ns = atomic_load_explicit(&e->max_stall_ns, memory_order_relaxed);
}

static int create(concur_pool *p, const concur_pool_opts *o, void **state)
{
    (void)p;
    *state = NULL;
    if (!concur__fiber_supported())
        return CONCUR_ENOTSUP;
    if (o->worker_cpu_limit != 0 || o->worker_memory_limit != 0 ||
        o->coroutine_stack_size > MAX_STACK)
        return CONCUR_EINVAL;
    struct engine *e = calloc(1, sizeof(*e));
    if (!e)
        return CONCUR_ENOMEM;
    CHECK_PTHREAD(pthread_mutex_init(&e->mu, NULL));
    e->stack_size = o->coroutine_stack_size ? o->coroutine_stack_size : DEFAULT_STACK;
    e->shared = o->coroutine_shared_stack || concur__co_shared_on;
    e->io_poll = o->coroutine_io_poll || concur__co_io_poll_on;
    e->task_timeout = o->task_timeout;
    if (o->task_timeout > 0) {
        double ns = o->task_timeout * 1e9;
        e->timeout_ns = ns >= 1e18 ? (uint64_t)1e18 : ns < 1 ? 1 : (uint64_t)ns;
    }
    *state = e;
    return 0;
}

static void destroy(void *state)
{
    struct engine *e = state;
    if (!e)
        return;
    pthread_mutex_destroy(&e->mu);
    free(e);
}

/* A thread waiting for a future of this pool polls while a loop completes tasks
 * (concur__poll_if_busy): a waiter that sleeps costs the loop a wake-up system call per
 * future, more than a short task. */
static uint64_t wait_poll_ns(concur_pool *p)
{
    struct engine *e = concur__pool_engine_state(p);
    return concur__poll_if_busy(atomic_load_explicit(&e->last_done, memory_order_relaxed));
}

const concur__engine_class concur__coroutines_class = {
    .kind = "coroutine",
    .own_timeouts = false, /* the watchdog covers a coroutine that holds its loop */
    .shares_memory = true,
    .default_workers = 1,
    .create = create,
    .destroy = destroy,
    .stop = stop,
    .worker_start = worker_start,
    .worker_run = worker_run,
    .worker_final = concur__worker_final_hook,
    .worker_end = worker_end,
    .cancel_running = cancel_running,
    .queued = queued,
    .counts = counts,
    .wait_poll_ns = wait_poll_ns,
};

/* ---------------------------------------------------------------- concur/coro.h */

bool concur_co_in_coroutine(void)
{
    return tls_co != NULL;
}

concur_task *concur_co_task(void)
{
    return tls_co ? &tls_co->t : NULL;
}

static uint64_t ns_of(double seconds)
{
    return seconds >= 1e9 ? (uint64_t)1e18 : (uint64_t)(seconds * 1e9);
}

int concur_co_yield(void)
{
    co *c = tls_co;
    if (!c) {
        (void)sched_yield(); /* cannot fail on Linux */
        return 0;
    }
    int rc = before_wait(c);
    if (rc)
        return rc;
    cloop *L = c->L;
    if (!shared(L) && L->rhead && L->nswitch < SWITCH_MAX)
        return switch_to(L, c, L->rhead);
    ready_push(L, c);
    return suspend(c, W_NONE);
}

int concur_co_sleep(double seconds)
{
    if (seconds != seconds)
        return CONCUR_EINVAL;
    co *c = tls_co;
    if (!c) {
        if (seconds > 0) {
            uint64_t ns = ns_of(seconds);
            struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                                  .tv_nsec = (long)(ns % 1000000000u)};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
        return 0;
    }
    if (seconds <= 0)
        return concur_co_yield();
    int rc = before_wait(c);
    if (rc)
        return rc;
    concur__timer_arm(&c->L->loop, &c->timer, now_ns() + ns_of(seconds), tag_of(c, TAG_WAIT));
    return suspend(c, W_SLEEP);
}

static int ready_of(uint32_t ev, uint32_t in, uint32_t out, uint32_t fail)
{
    if (ev & fail)
        return CONCUR_CO_READ | CONCUR_CO_WRITE;
    return ((ev & in) ? CONCUR_CO_READ : 0) | ((ev & out) ? CONCUR_CO_WRITE : 0);
}

/* poll() until @deadline (UINT64_MAX: none), the thread's own wait. */
static int poll_until(int fd, int events, uint64_t deadline)
{
    struct pollfd pf = {.fd = fd,
                        .events = (short)(((events & CONCUR_CO_READ) ? POLLIN : 0) |
                                          ((events & CONCUR_CO_WRITE) ? POLLOUT : 0))};
    for (;;) {
        int ms = -1;
        if (deadline != UINT64_MAX) {
            uint64_t now = now_ns();
            uint64_t left = deadline > now ? (deadline - now + 999999) / 1000000 : 0;
            ms = left > INT32_MAX ? INT32_MAX : (int)left;
        }
        int n = poll(&pf, 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) {
            if (deadline != UINT64_MAX && now_ns() < deadline)
                continue; /* woke early (rounding) */
            return CONCUR_ETIMEDOUT;
        }
        if (pf.revents & POLLNVAL)
            return -EBADF;
        return ready_of((uint32_t)pf.revents, POLLIN, POLLOUT, POLLERR | POLLHUP);
    }
}

/* Watches @fd for @ev for @c, one shot. The registration stays in the epoll set after it
 * fires (EPOLLONESHOT disables it), so the next wait on the fd, the common case of a
 * coroutine doing I/O, re-arms it with one epoll_ctl (MOD) instead of an ADD and a DEL. A
 * disabled registration reports nothing, and one whose fd was closed left the set by itself:
 * MOD then fails with ENOENT and the fd is added. One coroutine waits on an fd at a time:
 * another gets -EEXIST, as from epoll. */
static int arm_fd(cloop *L, co *c, int fd, uint32_t ev)
{
    if ((size_t)fd >= L->nfdw) {
        size_t n = L->nfdw ? L->nfdw : 64;
        while (n <= (size_t)fd)
            n *= 2;
        co **t = realloc(L->fdw, n * sizeof(*t));
        if (!t)
            return CONCUR_ENOMEM;
        memset(t + L->nfdw, 0, (n - L->nfdw) * sizeof(*t));
        L->fdw = t;
        L->nfdw = n;
    }
    if (L->fdw[fd])
        return -EEXIST;
    ev |= EPOLLONESHOT;
    int rc = concur__loop_mod(&L->loop, fd, ev, tag_of(c, TAG_FD));
    if (rc == -ENOENT)
        rc = concur__loop_add(&L->loop, fd, ev, tag_of(c, TAG_FD));
    if (rc)
        return rc;
    L->fdw[fd] = c;
    c->fd_fired = false;
    return 0;
}

static int wait_fd_until(int fd, int events, uint64_t deadline)
{
    co *c = tls_co;
    if (!c)
        return poll_until(fd, events, deadline);
    int rc = before_wait(c);
    if (rc)
        return rc;
    if (deadline != UINT64_MAX && deadline <= now_ns())
        return poll_until(fd, events, deadline); /* only look */
    uint32_t ev = ((events & CONCUR_CO_READ) ? EPOLLIN : 0) |
                  ((events & CONCUR_CO_WRITE) ? EPOLLOUT : 0);
    rc = arm_fd(c->L, c, fd, ev);
    if (rc)
        return rc;
    c->fd = fd;
    c->revents = 0;
    if (deadline != UINT64_MAX)
        concur__timer_arm(&c->L->loop, &c->timer, deadline, tag_of(c, TAG_WAIT));
    rc = suspend(c, W_FD);
    if (rc)
        return rc;
    return ready_of(c->revents, EPOLLIN, EPOLLOUT, EPOLLERR | EPOLLHUP);
}

/* concur__loop_park (sys/os.h): a loop run inside a coroutine (the runner's, for run_prog
 * and command batches) waits for its epoll fd here, so the other coroutines run meanwhile. */
static int co_park(int fd, int timeout_ms)
{
    if (!tls_co)
        return 1;
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_ns() + (uint64_t)timeout_ms * 1000000u;
    int rc = wait_fd_until(fd, CONCUR_CO_READ, deadline);
    if (rc >= 0 || rc == CONCUR_ETIMEDOUT)
        return 0;
    if (rc == CONCUR_ECANCELED || rc == CONCUR_ETASKTIMEOUT)
        return rc;
    return 1; /* the fd could not be watched: the thread's way */
}

int concur_co_wait_fd(int fd, int events, double timeout)
{
    if (fd < 0 || events == 0 || (events & ~(CONCUR_CO_READ | CONCUR_CO_WRITE)) ||
        timeout != timeout)
        return CONCUR_EINVAL;
    return wait_fd_until(fd, events, concur__deadline_ns(timeout));
}

/* After a failed read() or write() on @fd: 0 to try again (EINTR, or the fd became ready
 * for @events after EAGAIN), or the code to return. */
static int after_io_error(int fd, int events, uint64_t deadline)
{
    if (errno == EINTR)
        return 0;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
        return -errno;
    int w = wait_fd_until(fd, events, deadline);
    return w < 0 ? w : 0;
}

/* The loop's ring, made at the first read or write on it; NULL when there is none (not
 * built in, or the kernel refuses: the epoll way then). */
static bool has_ring(cloop *L)
{
    if (!L->ring_tried) {
        L->ring_tried = true;
        (void)concur__loop_ring(&L->loop, L->e->io_poll);
    }
    return L->loop.ring != NULL;
}

/* One read or write of @c through its loop's ring, up to @deadline: the byte count or
 * -errno of the kernel, CONCUR_ETIMEDOUT, CONCUR_ECANCELED, CONCUR_ETASKTIMEOUT; -EBUSY when
 * the ring cannot take it. An interruption cancels the request and waits for its completion
 * (the buffer is the kernel's until then): if the request was done first, its result is
 * returned and the interruption shows at the next suspension. */
static ssize_t ring_rw(co *c, bool write, int fd, void *buf, size_t n, uint64_t deadline)
{
    cloop *L = c->L;
    int rc = before_wait(c);
    if (rc)
        return rc;
    rc = concur__loop_rw(&L->loop, write, fd, buf, n, tag_of(c, TAG_IO));
    if (rc)
        return rc;
    c->io_busy = true;
    c->io_rc = 0;
    if (deadline != UINT64_MAX)
        concur__timer_arm(&L->loop, &c->timer, deadline, tag_of(c, TAG_WAIT));
    c->wait = W_IO;
    c->wake_rc = 0;
    concur__fiber_suspend(&L->sched);
    return c->wake_rc ? c->wake_rc : c->io_res;
}

/* The coroutine that may read or write [@buf, +@n) through its ring until @deadline, or NULL
 * (not in a coroutine, no ring, a deadline already passed: the caller's way, which only
 * looks). *bounce: the buffer is on a shared stack, where the kernel must not read or write
 * while the coroutine is suspended (another coroutine's frames are there then): the
 * request goes through a heap buffer of its own instead (bounce_rw). */
static co *ring_user(const void *buf, size_t n, uint64_t deadline, bool *bounce)
{
    co *c = tls_co;
    *bounce = false;
    if (!c || !has_ring(c->L) || (deadline != UINT64_MAX && deadline <= now_ns()))
        return NULL;
    if (shared(c->L)) {
        uintptr_t lo = (uintptr_t)c->L->sstack.lo, hi = lo + c->L->sstack.size;
        *bounce = (uintptr_t)buf < hi && (uintptr_t)buf + n > lo;
    }
    return c;
}

/* A request through a bounce buffer carries at most this much (a read returns what it got,
 * a write goes on with the rest). */
enum { BOUNCE_MAX = 64 << 10 };

/* ring_rw for a buffer on a shared stack: the kernel reads or writes a heap copy, which
 * the coroutine fills before (a write) or empties after (a read) the request, while its
 * frames are on the stack. -EBUSY when there is no memory for the copy (the epoll way). */
static ssize_t bounce_rw(co *c, bool write, int fd, void *buf, size_t n, uint64_t deadline)
{
    size_t m = n < BOUNCE_MAX ? n : BOUNCE_MAX;
    void *b = malloc(m ? m : 1);
    if (!b)
        return -EBUSY;
    if (write)
        memcpy(b, buf, m);
    ssize_t r = ring_rw(c, write, fd, b, m, deadline);
    if (!write && r > 0)
        memcpy(buf, b, (size_t)r); /* r <= m: the kernel's byte count for this request */
    free(b);
    return r;
}

/* Falls back to read()/write() and the epoll wait after this ring result. */
static bool ring_declined(ssize_t r)
{
    return r == -EBUSY || r == -EAGAIN || r == -EINTR;
}

ssize_t concur_co_read(int fd, void *buf, size_t n, double timeout)
{
    if (fd < 0 || (!buf && n) || timeout != timeout)
        return CONCUR_EINVAL;
    uint64_t deadline = concur__deadline_ns(timeout);
    bool bounce;
    co *c = ring_user(buf, n, deadline, &bounce);
    if (c) {
        ssize_t r = bounce ? bounce_rw(c, false, fd, buf, n, deadline)
                           : ring_rw(c, false, fd, buf, n, deadline);
        if (!ring_declined(r))
            return r;
    }
    for (;;) {
        ssize_t r = read(fd, buf, n);
        if (r >= 0)
            return r;
        int rc = after_io_error(fd, CONCUR_CO_READ, deadline);
        if (rc)
            return rc;
    }
}

ssize_t concur_co_write(int fd, const void *buf, size_t n, double timeout)
{
    if (fd < 0 || (!buf && n) || timeout != timeout || n > SSIZE_MAX)
        return CONCUR_EINVAL;
    uint64_t deadline = concur__deadline_ns(timeout);
    size_t done = 0;
    while (done < n) {
        bool bounce;
        co *c = ring_user((const char *)buf + done, n - done, deadline, &bounce);
        char *at = (char *)(uintptr_t)buf + done;
        ssize_t r = !c     ? -EBUSY
                    : bounce ? bounce_rw(c, true, fd, at, n - done, deadline)
                             : ring_rw(c, true, fd, at, n - done, deadline);
        if (ring_declined(r))
            r = write(fd, at, n - done);
        else if (r < 0)
            return r;
        if (r >= 0) {
            done += (size_t)r;
            continue;
        }
        int rc = after_io_error(fd, CONCUR_CO_WRITE, deadline);
        if (rc)
            return rc;
    }
    return (ssize_t)n;
}
