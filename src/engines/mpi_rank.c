/*
 * engines/mpi_rank.c - a serving rank of the MPI engine (libconcur_mpi only): the loop that
 * concur_mpi_init enters on every rank but 0 and that ends with the process.
 *
 * For each pool of rank 0 the rank keeps a local pool (OPEN): a process pool, so a task
 * that crashes or hangs fails only its own future, or with mpi_in_process a thread pool.
 * A TASK's function is looked up by (object, offset) and submitted there; a callback on the
 * local future pushes the task on a lock-free stack and wakes the loop, which sends the
 * outcome record back on the task's channel with MPI_Isend (never a blocking send: rank 0's
 * slot may itself be sending to this rank at that moment). CANCEL and KILL find the local
 * future by (pool, id); STOP shuts the local pool down with CONCUR_SHUTDOWN_CANCEL; CLOSE
 * destroys it; EXIT destroys what is left, finishes the sends and leaves with exit(0).
 * An MPI failure here ends the rank with exit(1), which ends the job (mpirun's rule).
 */
#include "engines/mpi_proto.h"

#include <errno.h>
#include <sched.h>
#include <unistd.h>

typedef struct rpool {
    uint32_t no;
    concur_pool *p; /* NULL: it could not be made (err, msg) */
    int err;
    char *msg;
    bool own_errors; /* tasks run in threads here: their errors are their own */
    struct rpool *next;
} rpool;

typedef struct rtask {
    concur_future *f;
    uint64_t id;
    uint32_t pool, chan;
    bool own_errors;
    bool listed;        /* in the table (a local task) */
    struct rtask *hnext; /* the table's chain */
    struct rtask *dnext; /* the done stack */
} rtask;

typedef struct sent {
    MPI_Request req;
    char *buf;
    struct sent *next;
} sent;

enum { TABLE = 1024 };

static rpool *g_pools;
static rtask *g_table[TABLE];
static rtask *_Atomic g_done;
static _Atomic uint32_t g_seq;
static _Atomic int g_sleeping;
static sent *g_sent;

_Noreturn static void mpi_failed(void)
{
    exit(1);
}

static rtask **slot_of(uint32_t pool, uint64_t id)
{
    return &g_table[(id * 31u + pool) % TABLE];
}

static rtask *find_task(uint32_t pool, uint64_t id)
{
    for (rtask *t = *slot_of(pool, id); t; t = t->hnext)
        if (t->pool == pool && t->id == id)
            return t;
    return NULL;
}

static void unlist(rtask *rt)
{
    for (rtask **pp = slot_of(rt->pool, rt->id); *pp; pp = &(*pp)->hnext) {
        if (*pp == rt) {
            *pp = rt->hnext;
            return;
        }
    }
}

static rpool *find_pool(uint32_t no)
{
    for (rpool *rp = g_pools; rp; rp = rp->next)
        if (rp->no == no)
            return rp;
    return NULL;
}

/* ---------------------------------------------------------------- outcomes */

static void push_done(rtask *rt)
{
    rtask *head = atomic_load_explicit(&g_done, memory_order_relaxed);
    do
        rt->dnext = head;
    while (!atomic_compare_exchange_weak_explicit(&g_done, &head, rt, memory_order_release,
                                                  memory_order_relaxed));
    atomic_fetch_add_explicit(&g_seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&g_sleeping, memory_order_seq_cst))
        concur__futex_wake(&g_seq, 1);
}

/* The local future completed (in a thread of its pool, or here). */
static void on_done(concur_future *f, void *arg)
{
    (void)f;
    push_done(arg);
}

/* A task that fails here without running: a standalone future with the error. */
static void fail_here(rtask *rt, int code, const char *msg)
{
    if (concur_future_create(&rt->f) != 0)
        mpi_failed(); /* no memory for 200 bytes: the rank cannot go on */
    (void)concur_future_set_error(rt->f, code, msg);
    push_done(rt);
}

/* The outcomes going to one channel: records {u64 len, mpi_reply, outcome}. */
typedef struct batch {
    uint32_t chan;
    char *buf;
    size_t len, cap;
} batch;

enum { BATCHES = 64 };
#define BATCH_BYTES ((size_t)256 << 10) /* a bigger outcome goes alone */

static void send_batch(batch *g)
{
    if (!g->len)
        return;
    sent *s = malloc(sizeof(*s));
    if (!s)
        mpi_failed(); /* no memory for 24 bytes: the rank cannot go on */
    s->buf = g->buf;
    if (MPI_Isend(g->buf, (int)g->len, MPI_BYTE, 0, (int)g->chan, concur__mpi_comm,
                  &s->req) != MPI_SUCCESS)
        mpi_failed();
    s->next = g_sent;
    g_sent = s;
    g->buf = NULL;
    g->len = g->cap = 0;
}

/* Appends the outcome of @rt to the batch of its channel (sending the batch first when it
 * would grow past BATCH_BYTES) and frees @rt. */
static void add_outcome(batch *groups, unsigned *ng, rtask *rt)
{
    batch *g = NULL;
    for (unsigned i = 0; i < *ng && !g; i++)
        if (groups[i].chan == rt->chan)
            g = &groups[i];
    if (!g) {
        if (*ng == BATCHES) { /* a 65th channel at once: the first batch goes now */
            send_batch(&groups[0]);
            groups[0] = groups[--*ng];
        }
        g = &groups[(*ng)++];
        *g = (batch){.chan = rt->chan};
    }
    uint64_t rl = sizeof(mpi_reply) + concur__outcome_encode(rt->f, rt->own_errors, NULL);
    if (rl > MPI_MSG_MAX - sizeof(rl)) {
        /* A result past MPI's size: its task fails instead. */
        concur_future_release(rt->f);
        fail_here(rt, CONCUR_ESIZE, "the result is too big for one MPI message");
        return;
    }
    if (g->len && g->len + sizeof(rl) + rl > BATCH_BYTES)
        send_batch(g);
    size_t need = g->len + sizeof(rl) + (size_t)rl;
    if (need > g->cap) {
        size_t c = need < 4096 ? 4096 : need;
        char *nb = concur__big_realloc(g->buf, g->len, c);
        if (!nb)
            mpi_failed(); /* the rank cannot report: mpirun ends the job */
        g->buf = nb;
        g->cap = c;
    }
    double pending = 0, running = 0;
    concur_future_durations(rt->f, &pending, &running);
    mpi_reply h = {.id = rt->id, .pool = rt->pool, .run_ns = (uint64_t)(running * 1e9)};
    char *w = g->buf + g->len;
    memcpy(w, &rl, sizeof(rl));
    memcpy(w + sizeof(rl), &h, sizeof(h));
    (void)concur__outcome_encode(rt->f, rt->own_errors, w + sizeof(rl) + sizeof(h));
    g->len = need;
    concur_future_release(rt->f);
    free(rt);
}

/* Sends the outcome of every task done so far, one message per channel. True when there
 * was one. */
static bool drain_done(void)
{
    rtask *rt = atomic_exchange_explicit(&g_done, NULL, memory_order_acquire);
    if (!rt)
        return false;
    rtask *fifo = NULL; /* the stack holds the newest first */
    while (rt) {
        rtask *next = rt->dnext;
        rt->dnext = fifo;
        fifo = rt;
        rt = next;
    }
    batch groups[BATCHES];
    unsigned ng = 0;
    for (rt = fifo; rt;) {
        rtask *next = rt->dnext;
        if (rt->listed)
            unlist(rt);
        rt->listed = false;
        rpool *rp = find_pool(rt->pool);
        if (concur_future_state(rt->f) == CONCUR_CANCELLED && rp && rp->p &&
            concur_pool_is_broken(rp->p)) {
            /* Cancelled because the local pool broke (its initializer failed): rank 0
             * gets the pool's error, and breaks its pool the same way. */
            concur_future_release(rt->f);
            fail_here(rt, concur_pool_check(rp->p), concur_pool_error_message(rp->p));
        } else {
            add_outcome(groups, &ng, rt); /* may push rt again, as a failure */
        }
        rt = next;
    }
    for (unsigned i = 0; i < ng; i++)
        send_batch(&groups[i]);
    return true;
}

/* Frees the sends that completed; with @all waits for every one. */
static void reap_sent(bool all)
{
    for (sent **pp = &g_sent; *pp;) {
        sent *s = *pp;
        int flag = 0;
        int rc = all ? MPI_Wait(&s->req, MPI_STATUS_IGNORE)
                     : MPI_Test(&s->req, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS)
            mpi_failed();
        if (all || flag) {
            *pp = s->next;
            concur__big_free(s->buf);
            free(s);
        } else {
            pp = &s->next;
        }
    }
}

/* ---------------------------------------------------------------- requests */

/* The address of @ref here, or fails the pool with CONCUR_ENOTLOADED. */
static bool resolve(rpool *rp, const concur__code_ref *ref, bool exec, void **out,
                    const char *what)
{
    *out = concur__code_addr(ref, exec);
    if (*out || !ref->module)
        return true;
    rp->err = CONCUR_ENOTLOADED;
    char m[160];
    snprintf(m, sizeof(m), "the pool's %s is not in code or data loaded in rank %d", what,
             concur__mpi_myrank);
    rp->msg = strdup(m);
    return false;
}

static void open_pool(uint32_t no, const mpi_open *m)
{
    rpool *rp = calloc(1, sizeof(*rp));
    if (!rp)
        mpi_failed();
    rp->no = no;
    rp->own_errors = m->flags & OPEN_IN_PROCESS;
    void *init = NULL, *init_arg = NULL, *fin = NULL, *fin_arg = NULL, *user = NULL;
    if (resolve(rp, &m->init, true, &init, "initializer") &&
        resolve(rp, &m->init_arg, false, &init_arg, "init_arg") &&
        resolve(rp, &m->final, true, &fin, "finalizer") &&
        resolve(rp, &m->final_arg, false, &fin_arg, "final_arg") &&
        resolve(rp, &m->user, false, &user, "user pointer")) {
        char name[80];
        snprintf(name, sizeof(name), "%.50s-r%d", m->name, concur__mpi_myrank);
        concur_pool_opts o = {
            .engine = rp->own_errors ? CONCUR_ENGINE_THREADS : CONCUR_ENGINE_PROCESSES,
            .max_workers = m->slots ? (int)m->slots : 1,
            .name = name,
            .idle_timeout = m->idle_timeout,
            .max_tasks_per_worker = (unsigned)m->max_tasks_per_worker,
            .initializer = (concur_worker_fn)(uintptr_t)init,
            .init_arg = init_arg,
            .finalizer = (concur_worker_fn)(uintptr_t)fin,
            .final_arg = fin_arg,
            .task_timeout = m->task_timeout,
            .user = user,
            .error_backtrace = m->flags & OPEN_BACKTRACE,
            .worker_memory_limit = (size_t)m->mem_limit,
            .worker_cpu_limit = m->cpu_limit,
        };
        rp->err = concur_pool_create(&rp->p, &o);
        if (rp->err)
            rp->msg = strdup("the pool could not be created on its rank");
    }
    rp->next = g_pools;
    g_pools = rp;
}

static void close_pool(uint32_t no)
{
    for (rpool **pp = &g_pools; *pp; pp = &(*pp)->next) {
        rpool *rp = *pp;
        if (rp->no != no)
            continue;
        *pp = rp->next;
        concur_pool_destroy(rp->p);
        free(rp->msg);
        free(rp);
        return;
    }
}

/* Why a task cannot be submitted here (0: it can), with the message in @m. */
static int refuse(const mpi_req *r, rpool *rp, void **fn, char *m, size_t cap)
{
    if (!rp) {
        snprintf(m, cap, "no such pool on rank %d", concur__mpi_myrank);
        return CONCUR_EINVAL;
    }
    if (!rp->p) {
        snprintf(m, cap, "%s", rp->msg ? rp->msg : concur_strerror(rp->err));
        return rp->err;
    }
    if (!(*fn = concur__code_addr(&r->fn, true))) {
        snprintf(m, cap, "the function is not in code loaded in rank %d", concur__mpi_myrank);
        return CONCUR_ENOTLOADED;
    }
    return 0;
}

static void run_task(const mpi_req *r, const void *in, size_t len)
{
    rtask *rt = calloc(1, sizeof(*rt));
    if (!rt)
        mpi_failed();
    rt->id = r->id;
    rt->pool = r->pool;
    rt->chan = r->chan;
    rpool *rp = find_pool(r->pool);
    rt->own_errors = rp && rp->own_errors;
    void *fn = NULL;
    char m[200];
    int rc = refuse(r, rp, &fn, m, sizeof(m));
    if (!rc && (rc = concur__pool_submit_as(rp->p, (concur_fn)(uintptr_t)fn, in, len, r->id,
                                                &rt->f)))
        snprintf(m, sizeof(m), "%s", concur_pool_error_message(rp->p));
    if (rc) {
        fail_here(rt, rc, m);
        return;
    }
    rt->listed = true;
    rtask **head = slot_of(rt->pool, rt->id);
    rt->hnext = *head;
    *head = rt;
    if (concur_future_add_callback(rt->f, on_done, rt) != 0) {
        /* No memory for the callback: wait for the task here (the loop stalls, the rank
         * goes on). */
        (void)concur_future_wait(rt->f, CONCUR_FOREVER);
        push_done(rt);
    }
}

_Noreturn static void leave(void)
{
    while (g_pools)
        close_pool(g_pools->no);
    /* Rank 0 sends EXIT once it has every outcome it waits for: what is left is dropped,
     * and the sends still in progress were received (a send must complete before MPI ends). */
    for (rtask *rt = atomic_exchange(&g_done, NULL), *next; rt; rt = next) {
        next = rt->dnext;
        concur_future_release(rt->f);
        free(rt);
    }
    reap_sent(true);
    (void)MPI_Comm_free(&concur__mpi_comm);
    (void)MPI_Finalize();
    exit(0);
}

static void handle_one(const char *b, size_t len)
{
    mpi_req r;
    if (len < sizeof(r))
        return; /* not a request of ours */
    memcpy(&r, b, sizeof(r));
    const char *payload = b + sizeof(r);
    size_t plen = len - sizeof(r);
    rpool *rp;
    rtask *rt;
    switch (r.type) {
    case REQ_OPEN:
        if (plen >= sizeof(mpi_open)) {
            mpi_open m;
            memcpy(&m, payload, sizeof(m));
            m.name[sizeof(m.name) - 1] = '\0';
            open_pool(r.pool, &m);
        }
        break;
    case REQ_CLOSE:
        close_pool(r.pool);
        break;
    case REQ_TASK:
        run_task(&r, payload, plen);
        break;
    case REQ_CANCEL:
        if ((rt = find_task(r.pool, r.id)))
            (void)concur_future_cancel(rt->f);
        break;
    case REQ_KILL:
        if ((rt = find_task(r.pool, r.id)))
            (void)concur_future_cancel_kill(rt->f);
        break;
    case REQ_STOP:
        if ((rp = find_pool(r.pool)) && rp->p)
            (void)concur_pool_shutdown(rp->p, CONCUR_SHUTDOWN_CANCEL, 0);
        break;
    case REQ_EXIT:
        leave();
    }
}

/* A message of requests: records {u64 len, request}. */
static void handle(const char *b, size_t len)
{
    size_t off = 0;
    while (len - off >= sizeof(uint64_t)) {
        uint64_t rl;
        memcpy(&rl, b + off, sizeof(rl));
        off += sizeof(rl);
        if (rl > len - off)
            return; /* not a message of ours */
        handle_one(b + off, (size_t)rl);
        off += (size_t)rl;
    }
}

/* Receives one request if one is there. True when there was one. */
static bool receive_request(void)
{
    int flag = 0;
    MPI_Message msg;
    MPI_Status st;
    if (MPI_Improbe(0, TAG_REQ, concur__mpi_comm, &flag, &msg, &st) != MPI_SUCCESS)
        mpi_failed();
    if (!flag)
        return false;
    int len = 0;
    if (MPI_Get_count(&st, MPI_BYTE, &len) != MPI_SUCCESS)
        mpi_failed();
    char *b = concur__big_alloc(len > 0 ? (size_t)len : 1);
    if (!b || MPI_Mrecv(b, len, MPI_BYTE, &msg, MPI_STATUS_IGNORE) != MPI_SUCCESS)
        mpi_failed();
    handle(b, (size_t)len);
    concur__big_free(b);
    return true;
}

_Noreturn void concur__mpi_serve(void)
{
    uint64_t last = now_ns();
    for (;;) {
        bool busy = receive_request();
        busy = drain_done() || busy;
        if (g_sent)
            reap_sent(false);
        uint64_t now = now_ns();
        if (busy) {
            last = now;
            continue;
        }
        uint64_t pause = mpi_poll_pause(now - last);
        if (!pause) {
            (void)sched_yield(); /* cannot fail on Linux */
            continue;
        }
        /* A completion wakes the sleep at once; requests are looked for when it ends. */
        atomic_store_explicit(&g_sleeping, 1, memory_order_seq_cst);
        uint32_t seq = atomic_load_explicit(&g_seq, memory_order_seq_cst);
        if (!atomic_load_explicit(&g_done, memory_order_seq_cst))
            (void)concur__futex_wait(&g_seq, seq, now + pause);
        atomic_store_explicit(&g_sleeping, 0, memory_order_relaxed);
    }
}
