/*
 * engines/mpi.c - the MPI engine on rank 0: each worker of the pool core is a slot bound to
 * one serving rank (engines/mpi_rank.c runs the other side). libconcur_mpi only.
 *
 *   create       sends OPEN to every serving rank: each makes a local pool (processes, or
 *                threads with mpi_in_process) with as many workers as this pool has slots
 *                on it, task_timeout, limits and hooks translated to its own addresses
 *   worker_run   sends TASK {function as (object, offset), input}, and while tasks are
 *                short and more are queued than the other slots would take, up to WINDOW
 *                more; then receives outcomes on the slot's own tag, in whatever order
 *                the rank finishes them, and completes each future from its record
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

_Atomic int concur__mpi_open_pools;
static _Atomic uint32_t g_pool_no;
static uint32_t g_chan; /* under g_rx_mu */

struct engine {
    uint32_t no;
    int max_workers;
    _Atomic(const void *) last_ok; /* the function code_ok accepted last */
};

/* A slot: the worker thread's channel to its rank and the tasks it has there. */
typedef struct slot {
    int rank, tag;
    uint32_t pool;
    pthread_mutex_t mu; /* guards fl/n against kill and cancel from other threads */
    concur_future *fl[WINDOW];
    unsigned n;
    uint64_t last_run_ns; /* UINT64_MAX: none yet */
    const void *last_fn;  /* the function of the last task, and its reference */
    concur__code_ref last_ref;
    char *buf; /* the message being built: records {u64 len, mpi_req, input} */
    size_t len, cap;
    unsigned nbatch; /* tasks in it (the last nbatch of fl) */
    /* Outcomes the receiver took for this slot (under g_rx_mu), and the word the slot
     * sleeps on until one is there. */
    struct rxmsg *inbox, **inbox_tail;
    _Atomic uint32_t seq;
} slot;

/* ---- receiving: one thread probes for every slot ----
 *
 * Several threads polling MPI back to back fight over its progress lock and take the CPUs
 * from the ranks (four spinning slots on 2 CPUs cut throughput by four). So one receiver
 * thread per process, started with the first MPI pool, probes for any outcome from any
 * rank and puts it in its slot's inbox, waking the slot, which sleeps on it. While no task
 * is in flight the receiver sleeps until one is sent; otherwise it polls back to back
 * after a message and with growing sleeps when none comes (mpi_poll_pause). */

typedef struct rxmsg {
    struct rxmsg *next;
    size_t len;
    char data[];
} rxmsg;

static pthread_mutex_t g_rx_mu = PTHREAD_MUTEX_INITIALIZER;
static slot *g_by_tag[TAG_UB]; /* the live slots by tag (under g_rx_mu) */
static pthread_t g_rx_thread;
static bool g_rx_started;       /* under g_rx_mu */
static _Atomic bool g_rx_stop;  /* the receiver leaves */
static _Atomic int g_rx_err;    /* MPI failed in the receiver: every wait fails */
static _Atomic int g_inflight;  /* tasks sent and not received */
static _Atomic uint32_t g_rx_seq; /* the receiver sleeps on it while nothing is in flight */

static void inbox_put_locked(slot *s, rxmsg *m)
{
    m->next = NULL;
    *s->inbox_tail = m;
    s->inbox_tail = &m->next;
    atomic_fetch_add_explicit(&s->seq, 1, memory_order_seq_cst);
    concur__futex_wake(&s->seq, 1);
}

static rxmsg *inbox_take_locked(slot *s)
{
    rxmsg *m = s->inbox;
    if (m && !(s->inbox = m->next))
        s->inbox_tail = &s->inbox;
    return m;
}

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
    rxmsg *m = malloc(sizeof(*m) + (size_t)len);
    if (!m) {
        (void)MPI_Mrecv(NULL, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE); /* truncated: dropped */
        *rc = CONCUR_ENOMEM;
        return NULL;
    }
    if (MPI_Mrecv(m->data, len, MPI_BYTE, &msg, MPI_STATUS_IGNORE) != MPI_SUCCESS) {
        free(m);
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
        if (rc == CONCUR_EIO) {
            mu_lock(&g_rx_mu);
            atomic_store(&g_rx_err, CONCUR_EIO);
            wake_all_locked();
            mu_unlock(&g_rx_mu);
            break;
        }
        uint64_t now = now_ns();
        if (m) {
            mu_lock(&g_rx_mu);
            slot *to = tag >= 0 && tag < TAG_UB ? g_by_tag[tag] : NULL;
            if (to)
                inbox_put_locked(to, m);
            mu_unlock(&g_rx_mu);
            if (!to)
                free(m); /* for a slot that is gone */
            last = now;
            continue;
        }
        uint64_t pause = mpi_poll_pause(now - last);
        if (!pause) {
            (void)sched_yield(); /* cannot fail on Linux */
        } else {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)pause};
            (void)nanosleep(&ts, NULL); /* EINTR: poll again */
        }
    }
    return NULL;
}

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
        if (g_rx_started)
            pthread_setname_np(g_rx_thread, "concur-mpi-rx"); /* cosmetic */
    }
    mu_unlock(&g_rx_mu);
    return rc;
}

void concur__mpi_rx_stop(void)
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

/* The next outcome for @s: its message, or NULL with *rc (the receiver failed). */
static rxmsg *wait_outcome(slot *s, int *rc)
{
    *rc = 0;
    mu_lock(&g_rx_mu);
    for (;;) {
        rxmsg *m = inbox_take_locked(s);
        if (m || (*rc = atomic_load(&g_rx_err))) {
            mu_unlock(&g_rx_mu);
            return m;
        }
        uint32_t seq = atomic_load_explicit(&s->seq, memory_order_seq_cst);
        mu_unlock(&g_rx_mu);
        (void)concur__futex_wait(&s->seq, seq, UINT64_MAX);
        mu_lock(&g_rx_mu);
    }
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
    if (o->coroutine_stack_size != 0 ||
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
    e->max_workers = concur__pool_max_workers(p);
    for (int k = 1; k < concur__mpi_nranks && !rc; k++) {
        m.slots = slots_on(k, e->max_workers);
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
    s->last_run_ns = UINT64_MAX;
    s->inbox_tail = &s->inbox;
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
    for (rxmsg *m; (m = inbox_take_locked(s));)
        free(m); /* nothing is in flight: nothing is there */
    mu_unlock(&g_rx_mu);
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

/* Sends the tasks queued in the slot's message, in one MPI message. Returns how many
 * failed (sending failed: they are completed with the error and released). */
static unsigned flush(slot *s)
{
    if (!s->len)
        return 0;
    unsigned k = s->nbatch;
    int rc = MPI_Send(s->buf, (int)s->len, MPI_BYTE, s->rank, TAG_REQ, concur__mpi_comm);
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

/* Takes the future with @id out of the slot's list (NULL: none has it). */
static concur_future *take(slot *s, uint64_t id)
{
    concur_future *f = NULL;
    mu_lock(&s->mu);
    for (unsigned i = 0; i < s->n; i++) {
        if (s->fl[i]->id == id) {
            f = s->fl[i];
            s->fl[i] = s->fl[--s->n];
            break;
        }
    }
    mu_unlock(&s->mu);
    return f;
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

/* Receives one message of outcomes ({u64 len, mpi_reply, outcome record} each) and
 * completes their futures. Returns how many, 0 when the receiver failed or the message
 * was not one (then the slot cannot tell which task it was for). */
static unsigned receive(concur__worker *w, slot *s)
{
    int rc;
    rxmsg *m = wait_outcome(s, &rc);
    if (!m)
        return 0;
    unsigned done = 0;
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
        concur_future *f = take(s, h.id);
        uint64_t end = now_ns();
        if (f) {
            const char *rec = m->data + off + sizeof(h);
            /* Its run time on the rank, not since it was sent: the tasks behind it in the
             * window waited there, and a slot that counted that would stop pipelining. */
            s->last_run_ns = h.run_ns;
            maybe_break(w, rec, (size_t)rl - sizeof(h));
            (void)concur__outcome_apply(f, rec, (size_t)rl - sizeof(h), end);
            concur_future_release(f); /* the engine's reference */
            concur__pool_progress(w->pool);
            done++;
        }
        off += (size_t)rl;
    }
    free(m);
    atomic_fetch_sub_explicit(&g_inflight, (int)done, memory_order_relaxed);
    return done;
}

/* Fails every task in flight (the channel broke) and returns how many. */
static unsigned fail_all(slot *s)
{
    unsigned n = 0;
    while (s->n) {
        concur_future *f = take(s, s->fl[0]->id);
        concur__future_fail(f, STATE_BIT(CONCUR_RUNNING), CONCUR_EIO,
                            "the outcome from its rank could not be received");
        concur_future_release(f);
        n++;
    }
    atomic_fetch_sub_explicit(&g_inflight, (int)n, memory_order_relaxed);
    return n;
}

/* Queues more tasks while they are short and more are queued than the other slots would
 * take (the process engine's pipelining), at most WINDOW in flight and @room in all.
 * Returns how many failed at once (released). */
static unsigned refill(concur__worker *w, slot *s, unsigned ran, unsigned room)
{
    concur_pool *p = w->pool;
    int max = concur__pool_max_workers(p);
    unsigned failed = 0;
    while (s->n < WINDOW && s->n + ran + failed < room && s->last_run_ns < SHORT_NS) {
        int others = concur__pool_nworkers(p) - 1;
        if (others + 1 < max || concur__pool_pending(p) <= (uint64_t)others)
            break;
        bool popped;
        concur_future *g = concur__worker_pop(w, &popped);
        if (g && !queue_task(s, g)) {
            concur_future_release(g);
            failed++;
        } else if (!g && !popped) {
            break;
        }
    }
    return failed;
}

static unsigned worker_run(concur__worker *w, concur_task *t, concur_future *f, unsigned room)
{
    (void)t;
    slot *s = w->ctx;
    unsigned ran = 0;
    if (!queue_task(s, f)) {
        concur_future_release(f);
        ran++;
    }
    for (;;) {
        ran += refill(w, s, ran, room);
        ran += flush(s);
        if (!s->n)
            break;
        if (s->n == 1)
            concur__worker_ready(w); /* its last task: it is free once this completes */
        unsigned k = receive(w, s);
        if (!k) {
            ran += fail_all(s);
            break;
        }
        ran += k;
    }
    return ran;
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

const concur__engine_class concur__mpi_engine_class = {
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
