/*
 * core/pool.c - the pool core: admission, one queue, worker threads, counters, shutdown.
 *
 * Submission. A submit takes a record, copies the input, and is admitted by one CAS on
 * `admitted`: its low bits count admitted tasks (so the task id is the count), its high bits
 * say CLOSED / JOINING / BROKEN. Admission therefore refuses work atomically with shutdown:
 * once CLOSED is set, the number of admitted tasks is final and every one of them is (or is
 * about to be) in the queue. The queue is an intrusive multi-producer queue (Vyukov): a
 * producer links its record with one atomic exchange and never takes a lock; consumers take
 * `qmu` to pop. A batch is linked privately and pushed with a single exchange.
 *
 * Workers. A worker pops and runs tasks until the queue is empty, then idles: at most one
 * idle worker spins for a short while (so a steady stream of tasks costs no wake-ups), the
 * others park on the futex word `seq`. A producer wakes a parked worker only when nobody
 * spins. The park protocol is an eventcount: the worker announces itself in `nsleeping`,
 * reads `seq`, re-checks for work and sleeps only if `seq` is unchanged; the producer pushes,
 * then reads `nsleeping` and bumps `seq` before waking. Both sides use sequentially
 * consistent operations, so either the worker sees the task or the producer sees the worker.
 *
 * Hand-off. When a worker spins, a single submit puts its record in `mailbox` instead of
 * the queue: the two threads then trade one cache line rather than the queue's tail, link
 * and stub. The producer deposits and then checks that a spinner is still there; the
 * spinner clears `nspinning` and then checks the mailbox (both sequentially consistent), so
 * a record is never stranded: either the spinner sees it or the producer takes it back and
 * queues it. Every pop looks at the mailbox first; counters treat it as part of the queue.
 * A spinner that sees a stream of tasks lets a short backlog form before taking any
 * (gather), so it does not fight the producer for the lines of the record just linked.
 *
 * pending = admitted - popped - ncancel_q, where ncancel_q counts records cancelled by their
 * owner while still queued (they are popped and dropped later).
 *
 * Lifecycle (mu + cv): the lists of live and exited workers, the broken error, the cancelled
 * list, join and shutdown waits. Exited workers are joined by the next spawn, shutdown or
 * destroy. Workers block every signal: signals are the application's business.
 *
 * Task timeouts: a watchdog thread (only when task_timeout > 0) checks each worker's
 * current task and fails the future of one that ran too long; the worker's late completion
 * loses the claim and its result is dropped.
 *
 * Engines. What a worker does with a task it popped is its engine's business (core/pool.h:
 * concur__engine_class): call it in this thread (engines/threads.c), hand it to a worker
 * process (engines/processes.c), and so on. The core starts, idles, recycles and ends the
 * worker threads the same way for all of them, and never asks which engine it runs.
 */
#include "core/pool.h"

#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

enum { IDLE_SPIN = 4000, SPIN_POLL = 4, GATHER_PAUSES = 96, NAME_MAX_ = 64 };

#define ADM_CLOSED (1ull << 62)
#define ADM_JOINING (1ull << 61)
#define ADM_BROKEN (1ull << 60)
#define ADM_FLAGS (ADM_CLOSED | ADM_JOINING | ADM_BROKEN)
#define ADM_COUNT (ADM_BROKEN - 1)

struct concur_pool {
    struct concur__engine engine; /* first: futures point here */
    concur_pool_opts o;
    char name[NAME_MAX_ + 1];
    int max_workers;
    int spin_cpus;    /* the CPUs its idle workers may spin on (concur__cpu_share) */
    uint64_t idle_ns; /* 0: never */

    ALIGNED_LINE _Atomic uint64_t admitted;
    ALIGNED_LINE concur_future *_Atomic tail;
    ALIGNED_LINE pthread_mutex_t qmu;
    concur_future *head; /* under qmu */
    _Atomic uint64_t popped;
    ALIGNED_LINE concur_future *_Atomic mailbox; /* hand-off to the spinning worker */
    ALIGNED_LINE _Atomic uint32_t seq;
    _Atomic int nsleeping, nspinning, nidle;
    ALIGNED_LINE _Atomic int nworkers;
    _Atomic int64_t ncancel_q;
    _Atomic int stop_running; /* running tasks are asked to stop */
    _Atomic unsigned stop_gen;
    _Atomic int waiters; /* threads waiting in join/shutdown: workers report progress */
    _Atomic int broken_code;
    _Atomic uint32_t nstarted;  /* workers whose start succeeded, ever */
    _Atomic uint32_t start_seq; /* futex word: bumped by each start and by the break */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    concur__worker *live, *dead;
    bool *slot_used; /* with cls->slots: the live workers' slots (max_workers of them) */
    unsigned next_index;
    char *broken_msg;
    concur_future **cancelled; /* owns one reference each */
    size_t ncancelled, capcancelled;
    bool shut;
    bool exit_done; /* the exit handler has dealt with it */

    const concur__engine_class *cls;
    void *es; /* the engine's pool-wide state */

    bool watchdog_on, wstop;
    pthread_t watchdog;
    pthread_cond_t wcv;
    concur_future **expired;

    concur_pool *reg_prev, *reg_next;
    concur_future stub;
};

static _Thread_local concur__worker *tls_worker;

static bool in_own_worker(const concur_pool *p)
{
    return tls_worker && tls_worker->pool == p;
}

static uint64_t adm_count(uint64_t v)
{
    return v & ADM_COUNT;
}

static uint64_t pending_of(concur_pool *p)
{
    uint64_t a = adm_count(atomic_load_explicit(&p->admitted, memory_order_seq_cst));
    uint64_t q = atomic_load_explicit(&p->popped, memory_order_seq_cst);
    int64_t c = atomic_load_explicit(&p->ncancel_q, memory_order_relaxed);
    int64_t n = (int64_t)(a - q) - (c > 0 ? c : 0);
    return n > 0 ? (uint64_t)n : 0;
}

/* Work in the queue, including cancelled records still to be popped. */
static bool has_work(concur_pool *p)
{
    return adm_count(atomic_load_explicit(&p->admitted, memory_order_seq_cst)) !=
           atomic_load_explicit(&p->popped, memory_order_seq_cst);
}

/* ---------------------------------------------------------------- the queue */

static void q_push_chain(concur_pool *p, concur_future *first, concur_future *last)
{
    atomic_store_explicit(&last->next, NULL, memory_order_relaxed);
    concur_future *prev = atomic_exchange_explicit(&p->tail, last, memory_order_seq_cst);
    atomic_store_explicit(&prev->next, first, memory_order_release);
}

/* Under qmu. NULL when empty or when a producer is between its exchange and its link. */
static concur_future *q_pop(concur_pool *p)
{
    concur_future *head = p->head;
    concur_future *next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (head == &p->stub) {
        if (!next)
            return NULL;
        p->head = next;
        head = next;
        next = atomic_load_explicit(&head->next, memory_order_acquire);
    }
    if (next) {
        p->head = next;
        return head;
    }
    if (head != atomic_load_explicit(&p->tail, memory_order_acquire))
        return NULL;
    q_push_chain(p, &p->stub, &p->stub);
    next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (next) {
        p->head = next;
        return head;
    }
    return NULL;
}

static void wake(concur_pool *p, int n)
{
    atomic_fetch_add_explicit(&p->seq, 1, memory_order_seq_cst);
    concur__futex_wake(&p->seq, n);
}

static void notify_waiters(concur_pool *p)
{
    if (atomic_load_explicit(&p->waiters, memory_order_relaxed)) {
        mu_lock(&p->mu);
        CHECK_PTHREAD(pthread_cond_broadcast(&p->cv));
        mu_unlock(&p->mu);
    }
}

/* ---------------------------------------------------------------- cancelled list */

/* Under qmu: the list is appended and read under qmu only. Takes over one reference. */
static void cancelled_append(concur_pool *p, concur_future *f)
{
    if (p->ncancelled == p->capcancelled) {
        size_t cap = p->capcancelled ? p->capcancelled * 2 : 16;
        concur_future **a = realloc(p->cancelled, cap * sizeof(*a));
        if (!a) {
            concur_future_release(f); /* cannot list it; it is cancelled all the same */
            return;
        }
        p->cancelled = a;
        p->capcancelled = cap;
    }
    p->cancelled[p->ncancelled++] = f;
}

/* Under qmu: takes the next record off the queue (the mailbox first) and counts it popped,
 * or NULL when there is none. A worker passes its in_idle flag: it stops counting as idle
 * in the same critical section that takes the record, so the spawn decision (which reads
 * both under qmu) never sees the task gone and the worker still idle. */
static concur_future *take_locked(concur_pool *p, bool *in_idle)
{
    concur_future *f = NULL;
    if (atomic_load_explicit(&p->mailbox, memory_order_relaxed))
        f = atomic_exchange_explicit(&p->mailbox, NULL, memory_order_acq_rel);
    if (!f)
        f = q_pop(p);
    if (!f)
        return NULL;
    if (in_idle && *in_idle) {
        atomic_fetch_sub_explicit(&p->nidle, 1, memory_order_seq_cst);
        *in_idle = false;
    }
    atomic_store_explicit(&p->popped, atomic_load_explicit(&p->popped, memory_order_relaxed) + 1,
                          memory_order_seq_cst);
    return f;
}

/* A record taken off the queue, out of the lock: returns it claimed RUNNING, or NULL when
 * its owner cancelled it while queued (its reference is then dropped). */
static concur_future *claim_taken(concur_pool *p, concur_future *f)
{
    uint32_t v = atomic_load_explicit(&f->state, memory_order_relaxed);
    for (;;) {
        if ((v & ST_MASK) != CONCUR_PENDING) {
            /* Cancelled by its owner while queued; wait out a claim in progress so the
             * canceller is done with the pool's counters before the pool can go away. */
            while (!st_terminal(v)) {
                cpu_relax();
                v = atomic_load_explicit(&f->state, memory_order_acquire);
            }
            atomic_fetch_sub_explicit(&p->ncancel_q, 1, memory_order_relaxed);
            concur_future_release(f);
            return NULL;
        }
        if (atomic_compare_exchange_weak_explicit(&f->state, &v, (v & ~ST_MASK) | CONCUR_RUNNING,
                                                  memory_order_acquire, memory_order_relaxed))
            return f;
    }
}

/* Pops one record. Returns it claimed RUNNING, or NULL when the queue is empty (*popped_any
 * tells whether something was taken and dealt with: cancelled or dropped). With @cancel_all
 * (or the pool's stop flag) a pending record is cancelled and listed instead of returned.
 * @in_idle: see take_locked. */
static concur_future *pop_task(concur_pool *p, bool cancel_all, bool *popped_any, bool *in_idle)
{
    concur_future *cancel = NULL;
    mu_lock(&p->qmu);
    concur_future *f = take_locked(p, in_idle);
    *popped_any = f != NULL;
    if (f && (cancel_all || atomic_load_explicit(&p->stop_running, memory_order_relaxed)) &&
        concur__future_claim(f, STATE_BIT(CONCUR_PENDING))) {
        cancelled_append(p, concur_future_retain(f));
        cancel = f;
        f = NULL;
    }
    mu_unlock(&p->qmu);
    if (cancel) {
        concur__future_finish(cancel, CONCUR_CANCELLED, now_ns());
        concur_future_release(cancel); /* the engine's reference (the list has its own) */
        return NULL;
    }
    return f ? claim_taken(p, f) : NULL;
}

static void on_cancel(struct concur__engine *e, concur_future *f)
{
    (void)f;
    concur_pool *p = (concur_pool *)e;
    atomic_fetch_add_explicit(&p->ncancel_q, 1, memory_order_relaxed);
}

/* The future operations of every pool: the queue's own, then the engine's. */
static bool kill_running(struct concur__engine *e, concur_future *f)
{
    concur_pool *p = (concur_pool *)e;
    return p->cls->kill_running ? p->cls->kill_running(p, f) : false;
}

static void cancel_running(struct concur__engine *e, concur_future *f)
{
    concur_pool *p = (concur_pool *)e;
    if (p->cls->cancel_running)
        p->cls->cancel_running(p, f);
}

static uint64_t wait_poll_ns(struct concur__engine *e)
{
    concur_pool *p = (concur_pool *)e;
    return p->cls->wait_poll_ns ? p->cls->wait_poll_ns(p) : 0;
}

static const concur__engine_ops pool_ops = {.on_cancel = on_cancel,
                                            .kill_running = kill_running,
                                            .cancel_running = cancel_running,
                                            .wait_poll_ns = wait_poll_ns};

/* ---------------------------------------------------------------- workers */

static void *worker_main(void *arg);
static void *watchdog_main(void *arg);

static void reap_dead_locked(concur_pool *p)
{
    while (p->dead) {
        concur__worker *w = p->dead;
        p->dead = w->next;
        CHECK_PTHREAD(pthread_join(w->thread, NULL));
        pthread_mutex_destroy(&w->cur_mu);
        free(w);
    }
}

/* Starts one worker. Under mu. Returns 0 or a negative code. */
static int spawn_one_locked(concur_pool *p)
{
    concur__worker *w = calloc(1, sizeof(*w));
    if (!w)
        return CONCUR_ENOMEM;
    w->pool = p;
    w->index = ++p->next_index;
    w->gen = atomic_load_explicit(&p->stop_gen, memory_order_relaxed);
    snprintf(w->name, sizeof(w->name), "concur-%s-%s-worker-%u", p->name, p->cls->kind, w->index);
    w->slot = -1;
    w->last_end = 0;
    for (int s = 0; p->slot_used && s < p->max_workers && w->slot < 0; s++)
        if (!p->slot_used[s])
            w->slot = s;
    if (w->slot >= 0)
        p->slot_used[w->slot] = true;
    CHECK_PTHREAD(pthread_mutex_init(&w->cur_mu, NULL));
    w->next = p->live;
    if (p->live)
        p->live->prev = w;
    p->live = w;
    atomic_fetch_add_explicit(&p->nworkers, 1, memory_order_seq_cst);
    /* A worker counts as idle (available) from its creation until it takes a task, so
     * submits made before it runs do not start more workers than there is work. */
    atomic_fetch_add_explicit(&p->nidle, 1, memory_order_seq_cst);

    /* The worker inherits a mask blocking every signal. */
    sigset_t all, old;
    sigfillset(&all);
    CHECK_PTHREAD(pthread_sigmask(SIG_SETMASK, &all, &old));
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    CHECK_PTHREAD(pthread_sigmask(SIG_SETMASK, &old, NULL));
    if (rc) {
        p->live = w->next;
        if (p->live)
            p->live->prev = NULL;
        atomic_fetch_sub_explicit(&p->nworkers, 1, memory_order_seq_cst);
        atomic_fetch_sub_explicit(&p->nidle, 1, memory_order_seq_cst);
        if (w->slot >= 0)
            p->slot_used[w->slot] = false;
        pthread_mutex_destroy(&w->cur_mu);
        free(w);
        p->next_index--;
        return -rc;
    }
    return 0;
}

static bool accepting(concur_pool *p)
{
    return !(atomic_load_explicit(&p->admitted, memory_order_acquire) & (ADM_CLOSED | ADM_BROKEN));
}

/* Starts workers for pending work: min(max - alive, pending - idle). Under mu. Pending and
 * idle are read together under qmu, where workers change them together. */
static void spawn_for_work_locked(concur_pool *p)
{
    reap_dead_locked(p);
    if (!accepting(p) && !has_work(p))
        return;
    int alive = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
    mu_lock(&p->qmu);
    int64_t want = (int64_t)pending_of(p) - atomic_load_explicit(&p->nidle, memory_order_relaxed);
    mu_unlock(&p->qmu);
    if (want > p->max_workers - alive)
        want = p->max_workers - alive;
    int last = 0;
    for (int64_t i = 0; i < want; i++)
        if ((last = spawn_one_locked(p)) != 0)
            break;
    if (last && atomic_load_explicit(&p->nworkers, memory_order_relaxed) == 0) {
        mu_unlock(&p->mu);
        concur__pool_break(p, last, "starting a worker", NULL, NULL, last);
        mu_lock(&p->mu);
    }
}

/* A spinning worker polls the mailbox: handing a task to it directly costs the two threads
 * one cache line instead of the queue's several (tail, link, counters). True when the task
 * was handed over; false when it must go through the queue. */
static void after_push(concur_pool *p, size_t n);

static bool handoff(concur_pool *p, concur_future *f)
{
    concur_future *expect = NULL;
    if (!atomic_compare_exchange_strong_explicit(&p->mailbox, &expect, f, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return false;
    if (atomic_load_explicit(&p->nspinning, memory_order_seq_cst))
        return true; /* the spinner, or a worker that pops, takes it */
    /* The spinner left before it could see the task: take it back unless someone took it. */
    concur_future *x = atomic_exchange_explicit(&p->mailbox, NULL, memory_order_seq_cst);
    if (x == f)
        return false;
    if (x) { /* another producer's task, deposited after ours was taken: queue it for them */
        q_push_chain(p, x, x);
        after_push(p, 1);
    }
    return true;
}

static void after_push(concur_pool *p, size_t n)
{
    if (p->cls->queued)
        p->cls->queued(p);
    /* Below max_workers, the decision is made under the locks (spawn_for_work_locked): an
     * unlocked look at pending and idle could see a task taken by a worker still counted idle
     * and start nobody. At max_workers this costs one load. */
    if (unlikely(atomic_load_explicit(&p->nworkers, memory_order_seq_cst) < p->max_workers)) {
        mu_lock(&p->mu);
        spawn_for_work_locked(p);
        mu_unlock(&p->mu);
    }
    /* A spinning worker takes one task by itself; parked ones are woken for the rest. */
    int sleeping = atomic_load_explicit(&p->nsleeping, memory_order_seq_cst);
    if (sleeping > 0) {
        size_t want = n - (atomic_load_explicit(&p->nspinning, memory_order_relaxed) ? 1 : 0);
        if (want > 0)
            wake(p, want < (size_t)sleeping ? (int)want : sleeping);
    }
}

static bool should_exit(concur__worker *w)
{
    concur_pool *p = w->pool;
    uint64_t v = atomic_load_explicit(&p->admitted, memory_order_seq_cst);
    if (v & ADM_BROKEN)
        return true;
    if ((v & ADM_CLOSED) || atomic_load_explicit(&p->stop_gen, memory_order_acquire) != w->gen)
        return !has_work(p);
    return false;
}

/* The spinner found work. If tasks keep arriving (a producer is submitting a stream), let a
 * short backlog form before taking any: popping the record the producer has just linked
 * makes both threads fight over the same cache lines on every task, which costs the
 * producer several times its own work. A lone task is taken after one extra poll. */
static void gather(concur_pool *p)
{
    uint64_t first = pending_of(p);
    for (int k = 0; k < SPIN_POLL; k++)
        cpu_relax();
    if (pending_of(p) <= first)
        return; /* not a stream */
    /* A stream: wait without looking (every look takes the producer's line away from it). */
    for (int k = 0; k < GATHER_PAUSES; k++)
        cpu_relax();
}

/* Waits for work. Returns false when the worker should exit. */
static bool idle(concur__worker *w)
{
    concur_pool *p = w->pool;
    bool keep = true;
    atomic_store_explicit(&w->busy, 0, memory_order_seq_cst);
    notify_waiters(p);
    uint64_t idle_deadline = p->idle_ns ? now_ns() + p->idle_ns : UINT64_MAX;
    for (;;) {
        if (should_exit(w)) {
            keep = false;
            break;
        }
        if (has_work(p)) {
            /* More queued than this worker takes while others park: pass a wake on, so a
             * burst reaches every worker (each woken one does the same). */
            if (pending_of(p) > 1 && atomic_load_explicit(&p->nsleeping, memory_order_seq_cst))
                wake(p, 1);
            break;
        }
        if (p->o.idle_timeout < 0) {
            keep = false;
            break;
        }
        int zero = 0;
        /* Spin only where it takes no CPU from others: the busy workers, the spinner and one
         * submitting thread must fit in the CPUs this process may keep busy (the online
         * ones, or an MPI rank's share of its node). Otherwise a spinner time-slices with
         * the very thread it waits for. */
        int busy = atomic_load_explicit(&p->nworkers, memory_order_relaxed) -
                   atomic_load_explicit(&p->nidle, memory_order_relaxed);
        if (busy + 2 <= p->spin_cpus &&
            atomic_compare_exchange_strong_explicit(&p->nspinning, &zero, 1, memory_order_seq_cst,
                                                    memory_order_relaxed)) {
            bool found = false;
            /* This thread has just woken a waiter (a completion): the scheduler tends to
             * queue the woken thread on this very CPU, where a spin would keep it waiting
             * for a whole spin (a process pool's idle round trip doubled). Let it run
             * first. */
            if (concur__woke_thread) {
                concur__woke_thread = false;
                (void)sched_yield(); /* cannot fail on Linux */
            }
            /* Poll the producers' lines only every SPIN_POLL pauses: each poll pulls them
             * away from the submitting thread, which must own them to admit a task. */
            for (int i = 0; i < IDLE_SPIN && !found; i++) {
                cpu_relax();
                if (i % SPIN_POLL == 0)
                    found = atomic_load_explicit(&p->mailbox, memory_order_relaxed) ||
                            (i % (8 * SPIN_POLL) == 0 && has_work(p));
            }
            if (found && !atomic_load_explicit(&p->mailbox, memory_order_relaxed))
                gather(p);
            atomic_store_explicit(&p->nspinning, 0, memory_order_seq_cst);
            /* Pairs with the producer's deposit-then-check in handoff(): after this store
             * either the producer sees no spinner and takes its task back, or we see it. */
            if (atomic_load_explicit(&p->mailbox, memory_order_seq_cst))
                found = true;
            if (found)
                continue; /* the top of the loop takes it (and passes a wake on) */
        }
        atomic_fetch_add_explicit(&p->nsleeping, 1, memory_order_seq_cst);
        uint32_t s = atomic_load_explicit(&p->seq, memory_order_seq_cst);
        if (has_work(p) || should_exit(w)) {
            atomic_fetch_sub_explicit(&p->nsleeping, 1, memory_order_seq_cst);
            continue;
        }
        int r = concur__futex_wait(&p->seq, s, idle_deadline);
        atomic_fetch_sub_explicit(&p->nsleeping, 1, memory_order_seq_cst);
        if (r == -ETIMEDOUT && now_ns() >= idle_deadline && !has_work(p)) {
            keep = false;
            break;
        }
    }
    return keep;
}

/* ---- what engines call (core/pool.h) ---- */

const concur__engine_class *concur__engine_class_of(concur_engine e)
{
    switch (e) {
    case CONCUR_ENGINE_THREADS:
        return &concur__threads_class;
    case CONCUR_ENGINE_PROCESSES:
        return &concur__processes_class;
    case CONCUR_ENGINE_COROUTINES:
        return &concur__coroutines_class;
    case CONCUR_ENGINE_MPI:
        return NULL; /* chosen by concur__mpi_class(), which needs the options */
    }
    return NULL;
}

const concur_pool_opts *concur__pool_opts(const concur_pool *p)
{
    return &p->o;
}

int concur__pool_max_workers(const concur_pool *p)
{
    return p->max_workers;
}

int concur__pool_nworkers(const concur_pool *p)
{
    return atomic_load_explicit(&p->nworkers, memory_order_relaxed);
}

uint64_t concur__pool_pending(concur_pool *p)
{
    return pending_of(p);
}

void *concur__pool_engine_state(const concur_pool *p)
{
    return p->es;
}

int concur__pool_broken_code(const concur_pool *p)
{
    return atomic_load_explicit(&p->broken_code, memory_order_acquire);
}

void concur__pool_progress(concur_pool *p)
{
    notify_waiters(p);
}

concur_future *concur__worker_pop(concur__worker *w, bool *popped)
{
    return pop_task(w->pool, false, popped, &w->in_idle);
}

size_t concur__worker_pop_n(concur__worker *w, concur_future **out, size_t n, bool *popped)
{
    concur_pool *p = w->pool;
    if (n == 0) {
        *popped = false;
        return 0;
    }
    if (n == 1 || atomic_load_explicit(&p->stop_running, memory_order_relaxed)) {
        out[0] = pop_task(p, false, popped, &w->in_idle);
        return out[0] != NULL;
    }
    size_t k = 0;
    mu_lock(&p->qmu);
    while (k < n && (out[k] = take_locked(p, &w->in_idle)) != NULL)
        k++;
    mu_unlock(&p->qmu);
    /* A stop that came meanwhile is seen by the tasks (concur_task_should_stop), as for a
     * record popped just before it. */
    *popped = k > 0;
    size_t kept = 0;
    for (size_t i = 0; i < k; i++)
        if ((out[kept] = claim_taken(p, out[i])) != NULL)
            kept++;
    return kept;
}

void concur__worker_ready(concur__worker *w)
{
    concur_pool *p = w->pool;
    /* Only below max_workers, where a submit may start a worker: at the maximum nothing can
     * be started, and a stream of tasks pays nothing for this. */
    if (!w->in_idle &&
        atomic_load_explicit(&p->nworkers, memory_order_relaxed) < p->max_workers &&
        !has_work(p)) {
        /* seq_cst: a submit that sees the result (acquire) sees this count too. */
        atomic_fetch_add_explicit(&p->nidle, 1, memory_order_seq_cst);
        w->in_idle = true;
    }
}

int concur__worker_init_hook(concur__worker *w, concur_task *t, bool *hook_failed)
{
    const concur_pool_opts *o = &w->pool->o;
    *hook_failed = false;
    if (!o->initializer)
        return 0;
    int rc = o->initializer(t, o->init_arg);
    *hook_failed = rc != 0;
    return rc;
}

int concur__worker_final_hook(concur__worker *w, concur_task *t)
{
    const concur_pool_opts *o = &w->pool->o;
    return o->finalizer(t, o->final_arg);
}

void concur__worker_running(concur__worker *w, concur_future *f)
{
    if (!w->pool->watchdog_on)
        return;
    mu_lock(&w->cur_mu);
    w->cur = f;
    w->cur_start = f ? f->t_start : 0;
    mu_unlock(&w->cur_mu);
}

void concur__worker_set_ctx(concur__worker *w, void *ctx)
{
    mu_lock(&w->cur_mu);
    w->ctx = ctx;
    mu_unlock(&w->cur_mu);
}

bool concur__pool_each_worker(concur_pool *p, bool (*fn)(void *ctx, void *arg), void *arg)
{
    bool hit = false;
    mu_lock(&p->mu);
    for (concur__worker *w = p->live; w && !hit; w = w->next) {
        mu_lock(&w->cur_mu);
        if (w->ctx)
            hit = fn(w->ctx, arg);
        mu_unlock(&w->cur_mu);
    }
    mu_unlock(&p->mu);
    return hit;
}

void concur__worker_call(concur__worker *w, concur_task *t, concur_future *f)
{
    concur_pool *p = w->pool;
    uint64_t start = w->last_end ? w->last_end : now_ns();
    f->t_start = start;
    if (p->watchdog_on) {
        mu_lock(&w->cur_mu);
        w->cur = f;
        w->cur_start = start;
        mu_unlock(&w->cur_mu);
    }
    t->f = f;
    concur__cur_task = t;
    int rc = f->fn(t, buf_data(&f->in), f->in.len);
    concur__cur_task = NULL;
    uint64_t end = now_ns();
    if (p->watchdog_on) {
        mu_lock(&w->cur_mu);
        w->cur = NULL;
        mu_unlock(&w->cur_mu);
    }
    concur__worker_ready(w);
    concur__task_complete(t, rc, end);
    t->f = NULL;
    concur_future_release(f); /* the engine's reference */
    w->last_end = end;
}

static void worker_exit(concur__worker *w)
{
    concur_pool *p = w->pool;
    mu_lock(&p->mu);
    if (w->prev)
        w->prev->next = w->next;
    else
        p->live = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->prev = NULL;
    w->next = p->dead;
    p->dead = w;
    if (w->slot >= 0) /* its process is gone: the next proxy may take the slot */
        p->slot_used[w->slot] = false;
    atomic_fetch_sub_explicit(&p->nworkers, 1, memory_order_seq_cst);
    /* A producer that saw this worker alive did not start another: if work is queued, a
     * replacement starts now (recycling, idle exit). */
    if (has_work(p) && !(atomic_load_explicit(&p->admitted, memory_order_seq_cst) & ADM_BROKEN)) {
        int alive = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
        if (alive < p->max_workers && atomic_load_explicit(&p->nidle, memory_order_relaxed) == 0)
            spawn_one_locked(p);
    }
    CHECK_PTHREAD(pthread_cond_broadcast(&p->cv));
    mu_unlock(&p->mu);
}

static void *worker_main(void *arg)
{
    concur__worker *w = arg;
    concur_pool *p = w->pool;
    tls_worker = w;
    /* The kernel keeps 15 bytes of a thread name: "<pool name>-<n>", cut to fit. */
    char full[sizeof(p->name) + 16], short_name[16];
    snprintf(full, sizeof(full), "%s-%u", p->name, w->index);
    memcpy(short_name, full, sizeof(short_name) - 1);
    short_name[sizeof(short_name) - 1] = '\0';
    pthread_setname_np(pthread_self(), short_name); /* cosmetic: failure is harmless */

    concur_task t = {.worker_name = w->name,
                     .user = p->o.user,
                     .pool_stop = &p->stop_running,
                     .want_bt = p->o.error_backtrace};
    bool hook_failed = false;
    int rc = p->cls->worker_start(w, &t, &hook_failed);
    if (rc) {
        if (hook_failed)
            concur__pool_break(p, CONCUR_EINITIALIZER, "initializer", w, t.msg, rc);
        else {
            char kind[48];
            snprintf(kind, sizeof(kind), "starting the worker %s", p->cls->kind);
            concur__pool_break(p, CONCUR_EBROKEN, kind, w, t.msg, rc);
        }
    }
    concur__task_reset(&t);
    bool ok = rc == 0;
    if (ok) {
        atomic_fetch_add_explicit(&p->nstarted, 1, memory_order_seq_cst);
        atomic_fetch_add_explicit(&p->start_seq, 1, memory_order_seq_cst);
        concur__futex_wake(&p->start_seq, INT_MAX);
    }
    unsigned ran = 0, limit = p->o.max_tasks_per_worker;
    /* nidle counts this worker while in_idle: it changes only when the worker goes from
     * idle to running tasks and back, not per task. */
    w->in_idle = true;
    while (ok) {
        bool popped;
        /* Relaxed: the seq_cst store of `popped` that follows (under qmu) publishes it to a
         * joiner that reads popped first, then the busy flags. */
        atomic_store_explicit(&w->busy, 1, memory_order_relaxed);
        concur_future *f = concur__worker_pop(w, &popped);
        if (f) {
            ran += p->cls->worker_run(w, &t, f, limit ? limit - ran : UINT_MAX);
            concur__pool_progress(p);
            if (limit && ran >= limit)
                break;
            continue;
        }
        if (popped)
            continue;
        w->last_end = 0;
        if (!w->in_idle) {
            /* Counted idle before it shows as free (idle() clears busy), so a submit that
             * sees a free worker also sees an idle one and starts no extra worker. */
            atomic_fetch_add_explicit(&p->nidle, 1, memory_order_seq_cst);
            w->in_idle = true;
        }
        if (!idle(w))
            break;
    }
    if (w->in_idle)
        atomic_fetch_sub_explicit(&p->nidle, 1, memory_order_seq_cst);
    atomic_store_explicit(&w->busy, 0, memory_order_relaxed);
    if (ok && p->o.finalizer) {
        rc = p->cls->worker_final(w, &t);
        if (rc)
            concur__pool_break(p, CONCUR_EFINALIZER, "finalizer", w, t.msg, rc);
        concur__task_reset(&t);
    }
    if (p->cls->worker_end)
        p->cls->worker_end(w); /* what the worker drove ends with it */
    worker_exit(w);
    return NULL;
}

/* ---------------------------------------------------------------- watchdog */

static void cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *m, uint64_t deadline)
{
    if (deadline == UINT64_MAX) {
        CHECK_PTHREAD(pthread_cond_wait(cv, m));
        return;
    }
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000000000u),
                          .tv_nsec = (long)(deadline % 1000000000u)};
    int rc = pthread_cond_timedwait(cv, m, &ts);
    if (rc && rc != ETIMEDOUT)
        concur__panic(__FILE__, __LINE__, "pthread_cond_timedwait", rc);
}

static void *watchdog_main(void *arg)
{
    concur_pool *p = arg;
    uint64_t limit = (uint64_t)(p->o.task_timeout * 1e9);
    char msg[96];
    snprintf(msg, sizeof(msg), "the task ran past its timeout of %g s", p->o.task_timeout);
    mu_lock(&p->mu);
    while (!p->wstop) {
        uint64_t now = now_ns(), next = now + limit;
        size_t n = 0;
        for (concur__worker *w = p->live; w; w = w->next) {
            mu_lock(&w->cur_mu);
            if (w->cur) {
                uint64_t dl = w->cur_start + limit;
                if (dl <= now) {
                    if (concur__future_claim(w->cur, STATE_BIT(CONCUR_RUNNING)))
                        p->expired[n++] = concur_future_retain(w->cur);
                } else if (dl < next) {
                    next = dl;
                }
            }
            mu_unlock(&w->cur_mu);
        }
        mu_unlock(&p->mu);
        for (size_t i = 0; i < n; i++) {
            concur_future *f = p->expired[i];
            f->err = CONCUR_ETASKTIMEOUT;
            f->errmsg = strdup(msg);
            concur__future_finish(f, CONCUR_FAILED, now_ns());
            concur_future_release(f);
        }
        mu_lock(&p->mu);
        if (!p->wstop)
            cond_wait_until(&p->wcv, &p->mu, next);
    }
    mu_unlock(&p->mu);
    return NULL;
}

/* ---------------------------------------------------------------- broken, registry */

static void cancel_queued(concur_pool *p, uint64_t target);

void concur__pool_break(concur_pool *p, int code, const char *kind, const concur__worker *w,
                        const char *msg, int rc)
{
    char *text = NULL;
    if (asprintf(&text, "%s failed%s%s%s: %s", kind, w ? " in worker '" : "", w ? w->name : "",
                 w ? "'" : "", msg ? msg : concur_strerror(rc)) < 0)
        text = NULL;
    mu_lock(&p->mu);
    bool first = atomic_load_explicit(&p->broken_code, memory_order_relaxed) == 0;
    if (first) {
        p->broken_msg = text;
        atomic_store_explicit(&p->broken_code, code, memory_order_release);
    }
    mu_unlock(&p->mu);
    if (!first) {
        free(text);
        return;
    }
    uint64_t v = atomic_fetch_or_explicit(&p->admitted, ADM_BROKEN, memory_order_seq_cst);
    cancel_queued(p, adm_count(v));
    wake(p, INT_MAX);
    notify_waiters(p);
    atomic_fetch_add_explicit(&p->start_seq, 1, memory_order_seq_cst);
    concur__futex_wake(&p->start_seq, INT_MAX); /* concur__pool_await_started */
}

int concur__pool_await_started(concur_pool *p, unsigned n)
{
    for (;;) {
        uint32_t seq = atomic_load_explicit(&p->start_seq, memory_order_seq_cst);
        if (atomic_load_explicit(&p->nstarted, memory_order_seq_cst) >= n)
            return 0;
        int broken = atomic_load_explicit(&p->broken_code, memory_order_seq_cst);
        if (broken)
            return broken;
        (void)concur__futex_wait(&p->start_seq, seq, UINT64_MAX);
    }
}

static pthread_mutex_t g_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static concur_pool *g_reg;
static pthread_once_t g_exit_once = PTHREAD_ONCE_INIT;
static pid_t g_exit_pid; /* the process that registered the handler */

/* Pools still open at exit: cancel what is queued, let running tasks finish (they are asked
 * to stop), and join the workers, so no worker runs while the process tears down. A forked
 * child (a process pool's worker whose task calls exit(), or any fork of the application)
 * inherits the handler and copies of the pools but none of their threads: it leaves them
 * alone. */
static void exit_handler(void)
{
    if (getpid() != g_exit_pid)
        return;
    for (;;) {
        concur_pool *p;
        mu_lock(&g_reg_mu);
        for (p = g_reg; p && p->exit_done; p = p->reg_next)
            ;
        if (p)
            p->exit_done = true;
        mu_unlock(&g_reg_mu);
        if (!p)
            break;
        concur_pool_shutdown(p, CONCUR_SHUTDOWN_CANCEL, in_own_worker(p) ? 0 : CONCUR_FOREVER);
    }
}

static void exit_once(void)
{
    g_exit_pid = getpid();
    atexit(exit_handler);
}

/* ---------------------------------------------------------------- API */

int concur_pool_create(concur_pool **out, const concur_pool_opts *opts)
{
    if (!out)
        return CONCUR_EINVAL;
    concur_pool_opts o = {0};
    if (opts)
        o = *opts;
    const concur__engine_class *cls = concur__engine_class_of(o.engine);
    if (o.engine == CONCUR_ENGINE_MPI) {
        int why = 0;
        if (!(cls = concur__mpi_class(&o, &why)))
            return why;
    } else if (o.mpi_in_process) {
        return CONCUR_EINVAL;
    }
    if (!cls || o.max_workers < 0 || (o.name && strlen(o.name) > NAME_MAX_) ||
        o.task_timeout != o.task_timeout || o.idle_timeout != o.idle_timeout)
        return CONCUR_EINVAL;
    concur_pool *p = aligned_alloc(CONCUR_CACHELINE, (sizeof(*p) + CONCUR_CACHELINE - 1) &
                                                         ~(size_t)(CONCUR_CACHELINE - 1));
    if (!p)
        return CONCUR_ENOMEM;
    memset(p, 0, sizeof(*p));
    p->engine.ops = &pool_ops;
    p->cls = cls;
    p->o = o;
    snprintf(p->name, sizeof(p->name), "%s", o.name ? o.name : "pool");
    p->o.name = p->name;
    int ncpu = concur_cpu_count();
    int share = atomic_load_explicit(&concur__cpu_share, memory_order_relaxed);
    p->spin_cpus = share > 0 && share < ncpu ? share : ncpu;
    p->max_workers = o.max_workers            ? o.max_workers
                     : cls->default_workers_fn ? cls->default_workers_fn()
                     : cls->default_workers    ? cls->default_workers
                                               : ncpu;
    p->idle_ns = o.idle_timeout > 0 ? (uint64_t)(o.idle_timeout * 1e9) : 0;
    if (p->idle_ns == 0 && o.idle_timeout > 0)
        p->idle_ns = 1;
    p->head = &p->stub;
    atomic_init(&p->tail, &p->stub);
    /* Workers hold qmu for a few instructions: spin briefly before sleeping on it. */
    pthread_mutexattr_t ma;
    CHECK_PTHREAD(pthread_mutexattr_init(&ma));
    CHECK_PTHREAD(pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP));
    CHECK_PTHREAD(pthread_mutex_init(&p->qmu, &ma));
    pthread_mutexattr_destroy(&ma);
    CHECK_PTHREAD(pthread_mutex_init(&p->mu, NULL));
    pthread_condattr_t ca;
    CHECK_PTHREAD(pthread_condattr_init(&ca));
    CHECK_PTHREAD(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC));
    CHECK_PTHREAD(pthread_cond_init(&p->cv, &ca));
    CHECK_PTHREAD(pthread_cond_init(&p->wcv, &ca));
    pthread_condattr_destroy(&ca);
    if (cls->slots) {
        p->slot_used = calloc((size_t)p->max_workers, sizeof(*p->slot_used));
        if (!p->slot_used) {
            concur_pool_destroy(p);
            return CONCUR_ENOMEM;
        }
    }
    int rc = cls->create(p, &o, &p->es);
    if (rc) {
        concur_pool_destroy(p);
        return rc;
    }
    if (o.task_timeout > 0 && !cls->own_timeouts) {
        p->expired = calloc((size_t)p->max_workers, sizeof(*p->expired));
        if (!p->expired) {
            concur_pool_destroy(p);
            return CONCUR_ENOMEM;
        }
        p->watchdog_on = true;
        sigset_t all, old;
        sigfillset(&all);
        CHECK_PTHREAD(pthread_sigmask(SIG_SETMASK, &all, &old));
        rc = pthread_create(&p->watchdog, NULL, watchdog_main, p);
        CHECK_PTHREAD(pthread_sigmask(SIG_SETMASK, &old, NULL));
        if (rc) {
            p->watchdog_on = false;
            concur_pool_destroy(p);
            return -rc;
        }
    }
    CHECK_PTHREAD(pthread_once(&g_exit_once, exit_once));
    concur__big_hold();
    mu_lock(&g_reg_mu);
    p->reg_next = g_reg;
    if (g_reg)
        g_reg->reg_prev = p;
    g_reg = p;
    mu_unlock(&g_reg_mu);
    *out = p;
    return 0;
}

bool concur__pool_remote_code(const concur_pool *p)
{
    return p->cls->remote_code;
}

bool concur__pool_shares_memory(const concur_pool *p)
{
    return p->cls->shares_memory;
}

bool concur__pool_code_ok(const concur_pool *p, const void *fn)
{
    return !p->cls->code_ok || p->cls->code_ok(p->es, fn);
}

static int refused(const concur_pool *p, uint64_t v)
{
    if (v & ADM_CLOSED)
        return CONCUR_ECLOSED;
    if (v & ADM_BROKEN)
        return atomic_load_explicit(&p->broken_code, memory_order_acquire);
    return CONCUR_EBUSY;
}

/* Admits @n tasks; *first_id receives the id of the first. */
static int admit(concur_pool *p, size_t n, uint64_t *first_id)
{
    uint64_t v = atomic_load_explicit(&p->admitted, memory_order_relaxed);
    for (;;) {
        if (unlikely(v & ADM_FLAGS))
            return refused(p, v);
        if (p->o.queue_limit && pending_of(p) + n > p->o.queue_limit)
            return CONCUR_EFULL;
        if (atomic_compare_exchange_weak_explicit(&p->admitted, &v, v + n, memory_order_seq_cst,
                                                  memory_order_relaxed))
            break;
    }
    *first_id = adm_count(v) + 1;
    return 0;
}

static void record_drop(concur_future *f)
{
    concur__buf_free(&f->in);
    atomic_store_explicit(&f->refs, 1, memory_order_relaxed);
    concur_future_release(f);
}

int concur_pool_submit(concur_pool *p, concur_fn fn, const void *in, size_t len,
                       concur_future **out)
{
    return concur__pool_submit_as(p, fn, in, len, 0, out);
}

int concur__pool_submit_as(concur_pool *p, concur_fn fn, const void *in, size_t len,
                           uint64_t as_id, concur_future **out)
{
    if (!p || !fn || (!in && len))
        return CONCUR_EINVAL;
    if (unlikely(p->cls->code_ok != NULL) && !p->cls->code_ok(p->es, fn))
        return CONCUR_ENOTLOADED;
    concur_future *f = concur__future_alloc();
    if (!f)
        return CONCUR_ENOMEM;
    if (len) {
        if (len <= CONCUR_INLINE_BYTES) {
            f->in.len = len;
            memcpy(f->in.u.inl, in, len);
        } else if (concur__buf_set(&f->in, in, len)) {
            record_drop(f);
            return CONCUR_ENOMEM;
        }
    }
    uint64_t id = 0;
    int rc = admit(p, 1, &id);
    if (unlikely(rc)) {
        record_drop(f);
        return rc;
    }
    future_init_engine(f, &p->engine, fn, as_id ? as_id : id, now_ns());
    if (out)
        *out = f;
    else
        atomic_store_explicit(&f->refs, 1, memory_order_relaxed);
    if (!(atomic_load_explicit(&p->nspinning, memory_order_relaxed) && handoff(p, f))) {
        q_push_chain(p, f, f);
        after_push(p, 1);
    }
    return 0;
}

int concur_pool_submit_batch(concur_pool *p, concur_fn fn, const concur_input *ins, size_t n,
                             concur_future **out)
{
    if (!p || !fn || (!ins && n))
        return CONCUR_EINVAL;
    if (unlikely(p->cls->code_ok != NULL) && !p->cls->code_ok(p->es, fn))
        return CONCUR_ENOTLOADED;
    for (size_t i = 0; i < n; i++)
        if (!ins[i].data && ins[i].len)
            return CONCUR_EINVAL;
    if (n == 0)
        return concur_pool_check(p);
    concur_future *first = NULL, *last = NULL;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        concur_future *f = concur__future_alloc();
        if (!f || concur__buf_set(&f->in, ins[i].data, ins[i].len)) {
            if (f)
                record_drop(f);
            rc = CONCUR_ENOMEM;
            break;
        }
        if (last)
            atomic_store_explicit(&last->next, f, memory_order_relaxed);
        else
            first = f;
        last = f;
    }
    uint64_t id = 0;
    if (!rc)
        rc = admit(p, n, &id);
    if (rc) {
        for (concur_future *f = first, *nx; f; f = nx) {
            nx = f == last ? NULL : atomic_load_explicit(&f->next, memory_order_relaxed);
            record_drop(f);
        }
        return rc;
    }
    uint64_t t = now_ns();
    size_t i = 0;
    for (concur_future *f = first;; f = atomic_load_explicit(&f->next, memory_order_relaxed)) {
        future_init_engine(f, &p->engine, fn, id + i, t);
        if (out)
            out[i] = f;
        else
            atomic_store_explicit(&f->refs, 1, memory_order_relaxed);
        i++;
        if (f == last)
            break;
    }
    q_push_chain(p, first, last);
    after_push(p, n);
    return 0;
}

int concur_pool_run(concur_pool *p, concur_fn fn, const void *in, size_t len, double timeout,
                    concur_future **out)
{
    if (!p)
        return CONCUR_EINVAL;
    if (in_own_worker(p) && p->max_workers == 1)
        return CONCUR_EDEADLK;
    concur_future *f;
    int rc = concur_pool_submit(p, fn, in, len, &f);
    if (rc)
        return rc;
    rc = concur_future_collect(f, timeout, NULL, NULL);
    if (out)
        *out = f;
    else
        concur_future_release(f);
    return rc;
}

int concur_pool_check(const concur_pool *p)
{
    if (!p)
        return CONCUR_EINVAL;
    uint64_t v = atomic_load_explicit(&p->admitted, memory_order_acquire);
    if (v & (ADM_CLOSED | ADM_BROKEN))
        return refused(p, v);
    return 0;
}

const char *concur_pool_error_message(const concur_pool *p)
{
    if (!p || !atomic_load_explicit(&p->broken_code, memory_order_acquire))
        return NULL;
    return p->broken_msg ? p->broken_msg : concur_strerror(p->broken_code);
}

bool concur_pool_is_broken(const concur_pool *p)
{
    return p && atomic_load_explicit(&p->broken_code, memory_order_acquire) != 0;
}

bool concur_pool_is_closed(const concur_pool *p)
{
    return p && (atomic_load_explicit(&p->admitted, memory_order_acquire) & ADM_CLOSED);
}

int concur_pool_max_workers(const concur_pool *p)
{
    return p ? p->max_workers : 0;
}

void concur_pool_counts_get(const concur_pool *p_, concur_pool_counts *c)
{
    if (!c)
        return;
    memset(c, 0, sizeof(*c));
    concur_pool *p = (concur_pool *)p_;
    if (!p)
        return;
    mu_lock(&p->mu);
    for (concur__worker *w = p->live; w; w = w->next) {
        c->workers++;
        if (atomic_load_explicit(&w->busy, memory_order_relaxed))
            c->busy++;
    }
    mu_unlock(&p->mu);
    /* A worker between two tasks or popping shows as busy only while it holds one. */
    c->pending = (size_t)pending_of(p);
    if (c->busy > c->workers)
        c->busy = c->workers;
    c->free = c->workers - c->busy;
    if (p->cls->counts)
        p->cls->counts(p, c);
}

int concur_pool_spawn_workers(concur_pool *p, size_t n)
{
    int rc = concur_pool_check(p);
    if (rc)
        return rc;
    mu_lock(&p->mu);
    reap_dead_locked(p);
    int started = 0;
    while ((size_t)started < n &&
           atomic_load_explicit(&p->nworkers, memory_order_relaxed) < p->max_workers) {
        rc = spawn_one_locked(p);
        if (rc)
            break;
        started++;
    }
    mu_unlock(&p->mu);
    return started ? started : (rc ? rc : 0);
}

/* Cancels everything queued, in queue order, until all @target admitted tasks were popped. */
static void cancel_queued(concur_pool *p, uint64_t target)
{
    while (atomic_load_explicit(&p->popped, memory_order_seq_cst) < target) {
        bool popped;
        /* With cancel_all nothing is returned: each record is cancelled or dropped. */
        (void)pop_task(p, true, &popped, NULL);
        if (!popped)
            cpu_relax(); /* a producer admitted before the flag is still linking */
    }
}

static bool all_idle_locked(concur_pool *p)
{
    for (concur__worker *w = p->live; w; w = w->next)
        if (atomic_load_explicit(&w->busy, memory_order_seq_cst))
            return false;
    return true;
}

/* Under mu: waits until every worker has exited (or the deadline), then joins them. */
static int workers_gone_locked(concur_pool *p, uint64_t deadline)
{
    int rc = 0;
    while (atomic_load_explicit(&p->nworkers, memory_order_seq_cst) > 0) {
        if (deadline != UINT64_MAX && now_ns() >= deadline) {
            rc = CONCUR_ETIMEDOUT;
            break;
        }
        cond_wait_until(&p->cv, &p->mu, deadline);
    }
    reap_dead_locked(p);
    return rc;
}

int concur_pool_join(concur_pool *p, double timeout)
{
    if (!p)
        return CONCUR_EINVAL;
    if (in_own_worker(p))
        return CONCUR_EDEADLK;
    uint64_t v = atomic_load_explicit(&p->admitted, memory_order_relaxed);
    do {
        if (v & ADM_FLAGS)
            return refused(p, v);
    } while (!atomic_compare_exchange_weak_explicit(&p->admitted, &v, v | ADM_JOINING,
                                                    memory_order_seq_cst, memory_order_relaxed));
    uint64_t target = adm_count(v), deadline = concur__deadline_ns(timeout);
    int rc = 0;
    atomic_fetch_add_explicit(&p->waiters, 1, memory_order_seq_cst);
    mu_lock(&p->mu);
    while (
        !(atomic_load_explicit(&p->popped, memory_order_seq_cst) >= target && all_idle_locked(p))) {
        if (deadline != UINT64_MAX && now_ns() >= deadline) {
            rc = CONCUR_ETIMEDOUT;
            break;
        }
        cond_wait_until(&p->cv, &p->mu, deadline);
    }
    if (!rc) {
        atomic_fetch_add_explicit(&p->stop_gen, 1, memory_order_seq_cst);
        wake(p, INT_MAX);
        rc = workers_gone_locked(p, deadline);
    }
    mu_unlock(&p->mu);
    atomic_fetch_sub_explicit(&p->waiters, 1, memory_order_seq_cst);
    atomic_fetch_and_explicit(&p->admitted, ~ADM_JOINING, memory_order_seq_cst);
    return rc;
}

static int wait_workers_gone(concur_pool *p, uint64_t deadline)
{
    atomic_fetch_add_explicit(&p->waiters, 1, memory_order_seq_cst);
    mu_lock(&p->mu);
    int rc = workers_gone_locked(p, deadline);
    mu_unlock(&p->mu);
    atomic_fetch_sub_explicit(&p->waiters, 1, memory_order_seq_cst);
    return rc;
}

int concur_pool_shutdown(concur_pool *p, int flags, double timeout)
{
    if (!p || (flags & ~CONCUR_SHUTDOWN_CANCEL))
        return CONCUR_EINVAL;
    mu_lock(&p->mu);
    bool again = p->shut;
    p->shut = true;
    mu_unlock(&p->mu);
    if (again)
        return CONCUR_ECLOSED;
    uint64_t v = atomic_fetch_or_explicit(&p->admitted, ADM_CLOSED, memory_order_seq_cst);
    if (flags & CONCUR_SHUTDOWN_CANCEL) {
        atomic_store_explicit(&p->stop_running, 1, memory_order_seq_cst);
        if (p->cls->stop)
            p->cls->stop(p->es); /* tasks out of reach of stop_running */
        cancel_queued(p, adm_count(v));
    }
    wake(p, INT_MAX);
    if (timeout == 0)
        return atomic_load_explicit(&p->nworkers, memory_order_seq_cst) ? CONCUR_ETIMEDOUT : 0;
    if (in_own_worker(p))
        return CONCUR_EDEADLK;
    return wait_workers_gone(p, concur__deadline_ns(timeout));
}

size_t concur_pool_cancelled(const concur_pool *p_, size_t i, concur_future **out)
{
    concur_pool *p = (concur_pool *)p_;
    if (!p)
        return 0;
    mu_lock(&p->qmu);
    size_t n = p->ncancelled;
    if (out && i < n)
        *out = p->cancelled[i];
    mu_unlock(&p->qmu);
    return n;
}

void concur_pool_destroy(concur_pool *p)
{
    if (!p || in_own_worker(p))
        return;
    concur_pool_shutdown(p, 0, CONCUR_FOREVER);
    wait_workers_gone(p, UINT64_MAX);
    if (p->watchdog_on) {
        mu_lock(&p->mu);
        p->wstop = true;
        CHECK_PTHREAD(pthread_cond_signal(&p->wcv));
        mu_unlock(&p->mu);
        CHECK_PTHREAD(pthread_join(p->watchdog, NULL));
    }
    mu_lock(&g_reg_mu);
    if (p->reg_prev)
        p->reg_prev->reg_next = p->reg_next;
    else if (g_reg == p)
        g_reg = p->reg_next;
    if (p->reg_next)
        p->reg_next->reg_prev = p->reg_prev;
    mu_unlock(&g_reg_mu);
    for (size_t i = 0; i < p->ncancelled; i++)
        concur_future_release(p->cancelled[i]);
    if (p->cls)
        p->cls->destroy(p->es); /* the workers are gone */
    free(p->cancelled);
    free(p->expired);
    free(p->slot_used);
    free(p->broken_msg);
    pthread_cond_destroy(&p->wcv);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->qmu);
    free(p);
    concur__big_unhold(); /* the last pool: the big buffers kept for reuse go back */
}
