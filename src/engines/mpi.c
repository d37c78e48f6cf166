/*
 * engines/mpi.c - the MPI engine on rank 0: each worker of the pool core is a slot bound to
 * one serving rank (engines/mpi_rank.c runs the other side). libconcur_mpi only.
 *
 *   create       sends OPEN to every serving rank: each makes a local pool (processes, or
 *                threads with mpi_in_process) with as many workers as this pool has slots
 *                on it, task_timeout, limits and hooks translated to its own addresses
 *   worker_run   sends TASK {function as (object, offset), input}, and while tasks are
 *                short and more are queued than the other slots would take, up to WINDOW
 *                more, in one message; the outcomes come back on the slot's own tag, in
 *                whatever order the rank finishes them, and the receiver thread completes
 *                each future from its record; the slot sleeps until its window has room
 *   kill/cancel  KILL / CANCEL of a task a slot has in flight, to its rank
 *   stop         STOP (shutdown with CONCUR_SHUTDOWN_CANCEL) to every rank
 *   destroy      CLOSE to every rank
 *
 * The rank enforces task_timeout (own_timeouts): its local process pool kills the worker
 * process, and the outcome says so. A crash there is an outcome like any other.
 */
#include "engines/mpi_proto.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>

enum { WINDOW = 32, TAG_UB = 32767 /* the least MPI_TAG_UB the standard allows */ };
/* Tasks of one slot go to its rank together, in one message of up to this many bytes (a
 * bigger input goes alone). */
#define BATCH_BYTES ((size_t)256 << 10)
#define SHORT_NS 200000u /* a task under this is short: the slot may hand over more */

static _Atomic uint32_t g_pool_no;
static uint32_t g_chan; /* under g_rx_mu */

struct engine {
    uint32_t no;
    _Atomic(const void *) last_ok; /* the function code_ok accepted last */
};

/* A slot: the worker thread's channel to its rank and the tasks it has there. */
typedef struct slot {
    int rank, tag;
    uint32_t pool;
    pthread_mutex_t mu; /* guards fl/n against kill and cancel from other threads */
    concur_future *fl[WINDOW];
    unsigned n;
    concur__worker *w;
    /* how long its last task ran on the rank (UINT64_MAX: none yet); the receiver writes it */
    _Atomic uint64_t last_run_ns;
    const void *last_fn;  /* the function of the last task, and its reference */
    concur__code_ref last_ref;
    char *buf; /* the message being built: records {u64 len, mpi_req, input} */
    size_t len, cap;
    unsigned nbatch; /* tasks in it (the last nbatch of fl) */
    /* The receiver completes the slot's futures itself (delivering: it is at it) and wakes
     * the slot, asleep on seq (sleeping), once no more than wake_at tasks are in flight:
     * then the slot hands over more, or leaves when none is. */
    _Atomic int delivering, sleeping;
    _Atomic unsigned wake_at;
    _Atomic uint32_t seq;
    /* The slot's last task in flight, handed back to it to complete (under mu). */
    concur_future *last_f;
    char *last_rec;
    size_t last_len;
} slot;

/* Tasks in flight (the receiver takes them out as they complete). */
static unsigned inflight(slot *s)
{
    mu_lock(&s->mu);
    unsigned n = s->n;
    mu_unlock(&s->mu);
    return n;
}

/* ---- receiving: one thread probes for every slot ----
 *
 * Several threads polling MPI back to back fight over its progress lock and take the CPUs
 * from the ranks (four spinning slots on 2 CPUs cut throughput by four). So one receiver
 * thread per process, started with the first MPI pool, probes for any outcome from any
 * rank and completes the futures of the slot it is for; the slot, asleep meanwhile, is
 * woken only when its window has room again or is empty (a wake-up per message cost more
 * than the rest of a task). While no task is in flight the receiver sleeps until one is
 * sent; otherwise it polls back to back after a message and with growing sleeps when none
 * comes (mpi_poll_pause). Completion callbacks of the futures run in the receiver. */

typedef struct rxmsg {
    size_t len;
    char data[];
} rxmsg;

static pthread_mutex_t g_rx_mu = PTHREAD_MUTEX_INITIALIZER;
static slot *g_by_tag[TAG_UB]; /* the live slots by tag (under g_rx_mu) */
static pthread_t g_rx_thread;
static bool g_rx_started;       /* under g_rx_mu */
static _Atomic bool g_rx_stop;  /* the receiver leaves */
static _Atomic int g_rx_err;    /* the receiver failed: every wait fails, with this code */
static _Atomic int g_inflight;  /* tasks sent and not received */
static _Atomic uint32_t g_rx_seq; /* the receiver sleeps on it while nothing is in flight */

/* @n tasks went out: the receiver looks for their outcomes. */
static void rx_expect(int n)
{
    if (atomic_fetch_add_explicit(&g_inflight, n, memory_order_seq_cst) == 0) {
        atomic_fetch_add_explicit(&g_rx_seq, 1, memory_order_seq_cst);
        concur__futex_wake(&g_rx_seq, 1);
    }
}

/* Receives one message from any rank: NULL when there is none yet (*rc 0) or MPI failed
 * (*rc CONCUR_EIO, or CONCUR_ENOMEM). */
static rxmsg *probe_any(int *tag, int *rc)
{
    int flag = 0, len = 0;
    MPI_Message msg;
    MPI_Status st;
    *rc = 0;
    if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, concur__mpi_comm, &flag, &msg, &st) !=
            MPI_SUCCESS ||
        (flag && MPI_Get_count(&st, MPI_BYTE, &len) != MPI_SUCCESS)) {
        *rc = CONCUR_EIO;
        return NULL;
    }
    if (!flag)
        return NULL;
    rxmsg *m = concur__big_alloc(sizeof(*m) + (size_t)len);
    if (!m) {
        (void)MPI_Mrecv(NULL, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE); /* truncated: dropped */
        *rc = CONCUR_ENOMEM;
        return NULL;
    }
    if (MPI_Mrecv(m->data, len, MPI_BYTE, &msg, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        concur__big_free(m);
        *rc = CONCUR_EIO;
        return NULL;
    }
    m->len = (size_t)len;
    *tag = st.MPI_TAG;
    return m;
}

/* Wakes every slot (the receiver failed or leaves). */
static void wake_all_locked(void)
{
    for (int i = TAG_CHAN0; i < TAG_UB; i++) {
        slot *o = g_by_tag[i];
        if (o) {
            atomic_fetch_add_explicit(&o->seq, 1, memory_order_seq_cst);
            concur__futex_wake(&o->seq, 1);
        }
    }
}

static void deliver(slot *s, const rxmsg *m);

/* Gives the CPU away between two polls of MPI, @quiet_ns after the last progress: a
 * sched_yield within the spin window, then a sleep of mpi_poll_pause's length. */
static void poll_pause(uint64_t quiet_ns)
{
    uint64_t pause = mpi_poll_pause(quiet_ns);
    if (!pause) {
        (void)sched_yield(); /* cannot fail on Linux */
        return;
    }
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)pause};
    (void)nanosleep(&ts, NULL); /* EINTR: poll again */
}

static void *rx_main(void *arg)
{
    (void)arg;
    uint64_t last = now_ns();
    while (!atomic_load_explicit(&g_rx_stop, memory_order_acquire)) {
        /* Nothing in flight: after the spin window it sleeps until a task is sent (within
         * the window a task sent back to back finds it polling, without a wake-up). */
        uint32_t seq = atomic_load_explicit(&g_rx_seq, memory_order_seq_cst);
        if (!atomic_load_explicit(&g_inflight, memory_order_seq_cst) &&
            now_ns() - last >= POLL_SPIN_NS) {
            (void)concur__futex_wait(&g_rx_seq, seq, UINT64_MAX);
            last = now_ns();
            continue;
        }
        int tag = -1, rc = 0;
        rxmsg *m = probe_any(&tag, &rc);
        if (rc) { /* MPI failed, or an outcome was lost for want of memory */
            mu_lock(&g_rx_mu);
            atomic_store(&g_rx_err, rc);
            wake_all_locked();
            mu_unlock(&g_rx_mu);
            break;
        }
        uint64_t now = now_ns();
        if (m) {
            mu_lock(&g_rx_mu);
            slot *to = tag >= 0 && tag < TAG_UB ? g_by_tag[tag] : NULL;
            if (to) /* worker_end waits for it: the slot stays */
                atomic_store_explicit(&to->delivering, 1, memory_order_relaxed);
            mu_unlock(&g_rx_mu);
            if (to) {
                deliver(to, m);
                atomic_store_explicit(&to->delivering, 0, memory_order_release);
            }
            concur__big_free(m); /* a message for a slot that is gone is dropped */
            last = now;
            continue;
        }
        poll_pause(now - last);
    }
    return NULL;
}

static void rx_stop(void);

/* Starts the receiver with the first MPI pool. 0 or -errno. */
static int rx_start(void)
{
    int rc = 0;
    mu_lock(&g_rx_mu);
    if (!g_rx_started) {
        sigset_t all, old;
        sigfillset(&all);
        CHECK_PTHREAD(pthread_sigmask(SIG_SETMASK, &all, &old));
        rc = -pthread_create(&g_rx_thread, NULL, rx_main, NULL);
        CHECK_PTHREAD(pthread_sigmask(SIG_SETMASK, &old, NULL));
        g_rx_started = rc == 0;
        if (g_rx_started) {
            pthread_setname_np(g_rx_thread, "concur-mpi-rx"); /* cosmetic */
            concur__mpi_before_finalize = rx_stop;
        }
    }
    mu_unlock(&g_rx_mu);
    return rc;
}

/* Stops the receiver (concur_mpi_finalize, before MPI_Finalize). */
static void rx_stop(void)
{
    mu_lock(&g_rx_mu);
    bool started = g_rx_started;
    g_rx_started = false;
    mu_unlock(&g_rx_mu);
    if (!started)
        return;
    atomic_store_explicit(&g_rx_stop, true, memory_order_release);
    atomic_fetch_add_explicit(&g_rx_seq, 1, memory_order_seq_cst);
    concur__futex_wake(&g_rx_seq, 1);
    CHECK_PTHREAD(pthread_join(g_rx_thread, NULL));
    atomic_store(&g_rx_stop, false);
}

/* A request without payload, from any thread. */
static int send_small(int rank, uint32_t type, uint32_t pool, uint64_t id)
{
    mpi_req r = {.type = type, .pool = pool, .id = id};
    return concur__mpi_send_one(rank, &r, NULL, 0);
}

/* ---------------------------------------------------------------- the pool */

/* Slot i runs on rank 1 + i % (ranks - 1): how many of @max slots that is for @rank. */
static uint32_t slots_on(int rank, int max)
{
    int serving = concur__mpi_nranks - 1;
    int k = rank - 1;
    return (uint32_t)(max / serving + (k < max % serving ? 1 : 0));
}

static int code_of(const void *p, bool exec, concur__code_ref *ref)
{
    return concur__code_ref_of(p, exec, ref) ? CONCUR_EINVAL : 0;
}

static int open_msg(const concur_pool_opts *o, mpi_open *m)
{
    memset(m, 0, sizeof(*m));
    m->flags = (o->mpi_in_process ? OPEN_IN_PROCESS : 0) |
               (o->error_backtrace ? OPEN_BACKTRACE : 0);
    m->task_timeout = o->task_timeout;
    m->idle_timeout = o->idle_timeout;
    m->cpu_limit = o->worker_cpu_limit;
    m->mem_limit = o->worker_memory_limit;
    m->max_tasks_per_worker = o->max_tasks_per_worker;
    snprintf(m->name, sizeof(m->name), "%s", o->name ? o->name : "pool");
    int rc = code_of((const void *)(uintptr_t)o->initializer, true, &m->init);
    if (!rc)
        rc = code_of((const void *)(uintptr_t)o->finalizer, true, &m->final);
    if (!rc)
        rc = code_of(o->init_arg, false, &m->init_arg);
    if (!rc)
        rc = code_of(o->final_arg, false, &m->final_arg);
    if (!rc)
        rc = code_of(o->user, false, &m->user);
    return rc;
}

static int create(concur_pool *p, const concur_pool_opts *o, void **state)
{
    *state = NULL;
    if (o->coroutine_stack_size != 0 || o->coroutine_shared_stack || o->coroutine_io_poll ||
        (o->mpi_in_process && (o->worker_cpu_limit != 0 || o->worker_memory_limit != 0)))
        return CONCUR_EINVAL;
    mpi_open m;
    int rc = open_msg(o, &m);
    if (rc)
        return rc;
    if ((rc = rx_start()) != 0)
        return rc;
    struct engine *e = calloc(1, sizeof(*e));
    if (!e)
        return CONCUR_ENOMEM;
    e->no = atomic_fetch_add(&g_pool_no, 1) + 1;
    for (int k = 1; k < concur__mpi_nranks && !rc; k++) {
        m.slots = slots_on(k, concur__pool_max_workers(p));
        mpi_req r = {.type = REQ_OPEN, .pool = e->no};
        rc = concur__mpi_send_one(k, &r, &m, sizeof(m));
    }
    if (rc) {
        free(e);
        return rc;
    }
    atomic_fetch_add(&concur__mpi_open_pools, 1);
    *state = e;
    return 0;
}

static void destroy(void *state)
{
    struct engine *e = state;
    if (!e)
        return;
    for (int k = 1; k < concur__mpi_nranks; k++)
        (void)send_small(k, REQ_CLOSE, e->no, 0);
    atomic_fetch_sub(&concur__mpi_open_pools, 1);
    free(e);
}

static void stop(void *state)
{
    struct engine *e = state;
    for (int k = 1; k < concur__mpi_nranks; k++)
        (void)send_small(k, REQ_STOP, e->no, 0);
}

static bool code_ok(const void *state, const void *fn)
{
    struct engine *e = (struct engine *)state;
    if (atomic_load_explicit(&e->last_ok, memory_order_relaxed) == fn)
        return true;
    concur__code_ref ref;
    if (concur__code_ref_of(fn, true, &ref) != 0)
        return false;
    atomic_store_explicit(&e->last_ok, fn, memory_order_relaxed);
    return true;
}

/* ---------------------------------------------------------------- a slot */

static int worker_start(concur__worker *w, concur_task *t, bool *hook_failed)
{
    (void)t;
    *hook_failed = false;
    struct engine *e = concur__pool_engine_state(w->pool);
    slot *s = calloc(1, sizeof(*s));
    if (!s)
        return CONCUR_ENOMEM;
    s->rank = 1 + w->slot % (concur__mpi_nranks - 1);
    s->pool = e->no;
    s->w = w;
    atomic_init(&s->last_run_ns, UINT64_MAX);
    CHECK_PTHREAD(pthread_mutex_init(&s->mu, NULL));
    /* A tag of its own: the next free one after the last given out. */
    mu_lock(&g_rx_mu);
    for (int k = 0; k < TAG_UB - TAG_CHAN0; k++) {
        int tag = TAG_CHAN0 + (int)(g_chan++ % (uint32_t)(TAG_UB - TAG_CHAN0));
        if (!g_by_tag[tag]) {
            g_by_tag[tag] = s;
            s->tag = tag;
            break;
        }
    }
    mu_unlock(&g_rx_mu);
    if (!s->tag) { /* 32,751 slots alive in one process */
        pthread_mutex_destroy(&s->mu);
        free(s);
        return CONCUR_EAGAIN;
    }
    concur__worker_set_ctx(w, s);
    return 0;
}

static void worker_end(concur__worker *w)
{
    slot *s = w->ctx;
    concur__worker_set_ctx(w, NULL);
    if (!s)
        return;
    mu_lock(&g_rx_mu);
    g_by_tag[s->tag] = NULL;
    mu_unlock(&g_rx_mu);
    /* The receiver may still be in deliver() for this slot (its last outcome): wait. */
    while (atomic_load_explicit(&s->delivering, memory_order_acquire))
        (void)sched_yield(); /* cannot fail on Linux */
    pthread_mutex_destroy(&s->mu);
    free(s->buf);
    free(s);
}

static int worker_final(concur__worker *w, concur_task *t)
{
    (void)w;
    (void)t;
    return 0; /* the finalizer runs in the ranks' local workers as they end */
}

static unsigned flush(slot *s);

/* Adds @f's task to the slot's next message (flushing the message first when it would grow
 * past BATCH_BYTES). On failure @f fails at once: false. */
static bool queue_task(slot *s, concur_future *f)
{
    const uint32_t running = STATE_BIT(CONCUR_RUNNING);
    if (f->fn != s->last_fn) {
        if (concur__code_ref_of((const void *)(uintptr_t)f->fn, true, &s->last_ref) != 0) {
            concur__future_fail(f, running, CONCUR_ENOTLOADED, NULL);
            return false;
        }
        s->last_fn = (const void *)(uintptr_t)f->fn;
    }
    uint64_t rec = sizeof(mpi_req) + (uint64_t)f->in.len;
    if (rec > MPI_MSG_MAX - sizeof(rec)) {
        concur__future_fail(f, running, CONCUR_ESIZE, "the input is too big for one MPI message");
        return false;
    }
    if (s->len && s->len + sizeof(rec) + rec > BATCH_BYTES)
        (void)flush(s);
    size_t need = s->len + sizeof(rec) + (size_t)rec;
    if (need > s->cap) {
        size_t c = need < 4096 ? 4096 : need;
        char *nb = realloc(s->buf, c);
        if (!nb) {
            concur__future_fail(f, running, CONCUR_ENOMEM, "no memory to send the task");
            return false;
        }
        s->buf = nb;
        s->cap = c;
    }
    mpi_req r = {.type = REQ_TASK, .pool = s->pool, .id = f->id, .chan = (uint32_t)s->tag,
                 .fn = s->last_ref};
    char *w = s->buf + s->len;
    memcpy(w, &rec, sizeof(rec));
    memcpy(w + sizeof(rec), &r, sizeof(r));
    if (f->in.len)
        memcpy(w + sizeof(rec) + sizeof(r), buf_data(&f->in), f->in.len);
    s->len = need;
    s->nbatch++;
    f->t_start = now_ns();
    mu_lock(&s->mu);
    s->fl[s->n++] = f;
    mu_unlock(&s->mu);
    return true;
}

/* MPI_Send, without its busy wait: a blocking send whose receiver is slow to take it (its
 * rank not running: 3 ranks on 2 CPUs) spins in Open MPI, on the CPU that receiver needs.
 * This one polls the request and gives the CPU away between polls (sched_yield, then the
 * receiver's growing pauses). */
static int send_yielding(const void *buf, int len, int rank)
{
    MPI_Request req;
    int rc = MPI_Isend(buf, len, MPI_BYTE, rank, TAG_REQ, concur__mpi_comm, &req);
    uint64_t t0 = 0;
    for (int done = 0; rc == MPI_SUCCESS;) {
        if ((rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE)) != MPI_SUCCESS || done)
            break;
        uint64_t now = now_ns();
        if (!t0)
            t0 = now;
        poll_pause(now - t0);
    }
    return rc;
}

/* Sends the tasks queued in the slot's message, in one MPI message. Returns how many
 * failed (sending failed: they are completed with the error and released). */
static unsigned flush(slot *s)
{
    if (!s->len)
        return 0;
    unsigned k = s->nbatch;
    int rc = send_yielding(s->buf, (int)s->len, s->rank);
    s->len = 0;
    s->nbatch = 0;
    if (rc == MPI_SUCCESS) {
        rx_expect((int)k);
        return 0;
    }
    for (unsigned i = 0; i < k; i++) { /* the batch is the last k of the list */
        mu_lock(&s->mu);
        concur_future *f = s->fl[--s->n];
        mu_unlock(&s->mu);
        concur__future_fail(f, STATE_BIT(CONCUR_RUNNING), CONCUR_EIO,
                            "sending the task to its rank failed");
        concur_future_release(f);
    }
    return k;
}

/* Under s->mu: takes the future with @id out of the slot's list (NULL: none has it). */
static concur_future *take_locked(slot *s, uint64_t id)
{
    for (unsigned i = 0; i < s->n; i++) {
        if (s->fl[i]->id == id) {
            concur_future *f = s->fl[i];
            s->fl[i] = s->fl[--s->n];
            return f;
        }
    }
    return NULL;
}


/* The pool breaks when a rank's local pool cannot run its tasks (its initializer failed,
 * its workers cannot start), as a pool whose own worker failed so: seen in the outcome
 * record @rec before its future completes, so that whoever sees the future failed sees
 * the pool broken too. */
static void maybe_break(concur__worker *w, const char *rec, size_t len)
{
    concur__outcome_head h;
    if (len < sizeof(h))
        return;
    memcpy(&h, rec, sizeof(h));
    if (h.state != CONCUR_FAILED || (h.flags & CONCUR__OUT_REMOTE) ||
        (h.code != CONCUR_EINITIALIZER && h.code != CONCUR_EBROKEN) ||
        h.out_len + h.msg_len > len - sizeof(h))
        return;
    char *msg = h.msg_len ? strndup(rec + sizeof(h) + h.out_len, h.msg_len) : NULL;
    concur__pool_break(w->pool, h.code, h.code == CONCUR_EINITIALIZER ? "initializer" : "rank", w,
                       msg, h.code);
    free(msg);
}

/* In the receiver: takes the task @id out of @s's list, and when it was the last one in
 * flight hands it back to the slot to complete (*handed; its record copied), in the same
 * critical section: a slot that sees none in flight sees the hand-over too. The slot is
 * then awake when the caller, woken by that completion, submits its next task (the round
 * trip of a lone task). Returns the future, or NULL when no task has that id. */
static concur_future *take_outcome(slot *s, uint64_t id, const char *rec, size_t len,
                                   bool *handed)
{
    mu_lock(&s->mu);
    concur_future *f = take_locked(s, id);
    /* One at a time: the slot may not have taken the one before yet. Without memory for
     * the copy, the receiver completes it. */
    char *copy = f && !s->n && !s->last_f ? concur__big_alloc(len ? len : 1) : NULL;
    if (copy) {
        memcpy(copy, rec, len);
        s->last_f = f;
        s->last_rec = copy;
        s->last_len = len;
        *handed = true;
    }
    mu_unlock(&s->mu);
    return f;
}

/* In the receiver, after taking a task out of @s's list: wakes the slot if it waits for as
 * few tasks in flight as there are now. */
static void wake_slot(slot *s)
{
    unsigned n = inflight(s);
    atomic_fetch_add_explicit(&s->seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&s->sleeping, memory_order_seq_cst) &&
        n <= atomic_load_explicit(&s->wake_at, memory_order_relaxed))
        concur__futex_wake(&s->seq, 1);
}

/* In the slot: completes the future the receiver handed over, if any. */
static void complete_handed(slot *s)
{
    mu_lock(&s->mu);
    concur_future *f = s->last_f;
    char *rec = s->last_rec;
    size_t len = s->last_len;
    s->last_f = NULL;
    s->last_rec = NULL;
    mu_unlock(&s->mu);
    if (!f)
        return;
    /* Its last task: the slot is free once this completes, and counts so before the caller,
     * woken by the completion, submits its next task (which then starts no other slot).
     * Not earlier: a slot waiting for a long task would count as free, and a task submitted
     * meanwhile would wait for it instead of starting another slot. */
    concur__worker_ready(s->w);
    (void)concur__outcome_apply(f, rec, len, now_ns());
    concur__big_free(rec);
    concur_future_release(f); /* the engine's reference */
    concur__pool_progress(s->w->pool);
}

/* In the receiver: completes the futures of the outcomes in @m ({u64 len, mpi_reply,
 * outcome record} each) that are @s's, waking @s when it waits for that. */
static void deliver(slot *s, const rxmsg *m)
{
    int done = 0;
    size_t off = 0;
    while (off < m->len) {
        uint64_t rl;
        mpi_reply h;
        if (m->len - off < sizeof(rl))
            break;
        memcpy(&rl, m->data + off, sizeof(rl));
        off += sizeof(rl);
        if (rl < sizeof(h) || rl > m->len - off)
            break;
        memcpy(&h, m->data + off, sizeof(h));
        const char *rec = m->data + off + sizeof(h);
        size_t len = (size_t)rl - sizeof(h);
        bool handed = false;
        concur_future *f = take_outcome(s, h.id, rec, len, &handed);
        if (f) {
            /* Its run time on the rank, not since it was sent: the tasks behind it in the
             * window waited there, and a slot that counted that would stop pipelining. */
            atomic_store_explicit(&s->last_run_ns, h.run_ns, memory_order_relaxed);
            maybe_break(s->w, rec, len);
            done++;
            wake_slot(s);
            if (handed)
                continue;
            (void)concur__outcome_apply(f, rec, len, now_ns());
            concur_future_release(f); /* the engine's reference */
            concur__pool_progress(s->w->pool);
        }
        off += (size_t)rl;
    }
    atomic_fetch_sub_explicit(&g_inflight, done, memory_order_relaxed);
}

/* In the slot: waits until no more than @wake_at of its tasks are in flight. 0, or the
 * receiver's failure. */
static int wait_progress(slot *s, unsigned wake_at)
{
    atomic_store_explicit(&s->wake_at, wake_at, memory_order_relaxed);
    for (;;) {
        uint32_t seq = atomic_load_explicit(&s->seq, memory_order_seq_cst);
        atomic_store_explicit(&s->sleeping, 1, memory_order_seq_cst);
        unsigned n = inflight(s);
        int err = atomic_load(&g_rx_err);
        if (n <= wake_at || err) {
            atomic_store_explicit(&s->sleeping, 0, memory_order_relaxed);
            return err;
        }
        (void)concur__futex_wait(&s->seq, seq, UINT64_MAX);
    }
}

/* Fails every task in flight (the channel broke) and returns how many. */
static unsigned fail_all(slot *s)
{
    unsigned n = 0;
    for (;;) {
        mu_lock(&s->mu);
        concur_future *f = s->n ? s->fl[--s->n] : NULL;
        mu_unlock(&s->mu);
        if (!f)
            break;
        concur__future_fail(f, STATE_BIT(CONCUR_RUNNING), CONCUR_EIO,
                            "the outcome from its rank could not be received");
        concur_future_release(f);
        n++;
    }
    atomic_fetch_sub_explicit(&g_inflight, (int)n, memory_order_relaxed);
    return n;
}

static bool wants_more(concur__worker *w, const slot *s);

/* Queues more tasks while they are short and more are queued than the other slots would
 * take (the process engine's pipelining), at most WINDOW in flight and @room in all
 * (@taken so far). Returns how many it took (those that failed at once are complete). */
static unsigned refill(concur__worker *w, slot *s, unsigned taken, unsigned room)
{
    unsigned got = 0;
    while (taken + got < room && inflight(s) < WINDOW && wants_more(w, s)) {
        bool popped;
        concur_future *g = concur__worker_pop(w, &popped);
        if (g) {
            got++;
            if (!queue_task(s, g))
                concur_future_release(g);
        } else if (!popped) {
            break;
        }
    }
    return got;
}

/* Whether the slot would hand over more if its window had room. */
static bool wants_more(concur__worker *w, const slot *s)
{
    concur_pool *p = w->pool;
    int others = concur__pool_nworkers(p) - 1;
    return atomic_load_explicit(&s->last_run_ns, memory_order_relaxed) < SHORT_NS &&
           others + 1 >= concur__pool_max_workers(p) &&
           concur__pool_pending(p) > (uint64_t)others;
}

static unsigned worker_run(concur__worker *w, concur_task *t, concur_future *f, unsigned room)
{
    (void)t;
    slot *s = w->ctx;
    unsigned taken = 1;
    if (!queue_task(s, f))
        concur_future_release(f);
    for (;;) {
        taken += refill(w, s, taken, room);
        (void)flush(s); /* what failed to go is completed with its error */
        unsigned n = inflight(s);
        if (!n) {
            complete_handed(s); /* its last one, if the receiver handed it over */
            break;
        }
        int rc = wait_progress(s, wants_more(w, s) && taken < room ? WINDOW / 2 : 0);
        complete_handed(s);
        if (rc) {
            (void)fail_all(s);
            break;
        }
    }
    return taken; /* every one of them is complete */
}

/* ---------------------------------------------------------------- kill and cancel */

struct find {
    const concur_future *f;
    uint32_t type;
    bool sent;
};

static bool find_op(void *ctx, void *arg)
{
    slot *s = ctx;
    struct find *q = arg;
    bool has = false;
    mu_lock(&s->mu);
    for (unsigned i = 0; i < s->n && !has; i++)
        has = s->fl[i] == q->f;
    mu_unlock(&s->mu);
    if (has)
        q->sent = send_small(s->rank, q->type, s->pool, q->f->id) == 0;
    return has;
}

static bool kill_running(concur_pool *p, concur_future *f)
{
    if (concur__pool_opts(p)->mpi_in_process)
        return false; /* a thread cannot be killed */
    struct find q = {.f = f, .type = REQ_KILL};
    return concur__pool_each_worker(p, find_op, &q) && q.sent;
}

static void cancel_running(concur_pool *p, concur_future *f)
{
    struct find q = {.f = f, .type = REQ_CANCEL};
    (void)concur__pool_each_worker(p, find_op, &q);
}

/* Every serving rank's CPUs. */
static int default_workers(void)
{
    int n = 0;
    for (int k = 1; k < concur__mpi_nranks; k++)
        n += concur__mpi_cpus ? concur__mpi_cpus[k] : 1;
    return n > 0 ? n : 1;
}

static const concur__engine_class mpi_class = {
    .kind = "mpi",
    .own_timeouts = true,
    .slots = true,
    .remote_code = true,
    .default_workers_fn = default_workers,
    .create = create,
    .destroy = destroy,
    .stop = stop,
    .code_ok = code_ok,
    .worker_start = worker_start,
    .worker_run = worker_run,
    .worker_final = worker_final,
    .worker_end = worker_end,
    .kill_running = kill_running,
    .cancel_running = cancel_running,
};

const concur__engine_class *concur__mpi_class(const concur_pool_opts *o, int *why)
{
    *why = 0;
    if (!concur__mpi_inited()) {
        *why = CONCUR_ENOTSUP; /* concur_mpi_init was not called */
        return NULL;
    }
    if (concur__mpi_live())
        return &mpi_class;
    return o->mpi_in_process ? &concur__threads_class : &concur__processes_class;
}
