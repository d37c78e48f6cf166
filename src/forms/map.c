/*
 * map.c - the map family: one function over many items, in chunk tasks on any pool.
 *
 * This is a "form": it is written against the public engine API (concur_pool_submit,
 * concur_pool_submit_batch) and futures only, never against one engine's insides.
 *
 * What flows through it. Items are grouped chunk_size at a time into one task. The task's
 * input bytes are a chunk header (the per-item function, the sizes, the item count, the
 * chunk's first item index and a slot tag) followed by the chunk's items, copied. The chunk
 * task (chunk_task) runs the per-item function on each item and writes the outputs straight
 * into its result buffer (concur_task_result_alloc): a result header (the same tag and base,
 * how many items succeeded, the error of the item it stopped at and that error's message
 * length), then the outputs, then the message. Everything travels as bytes, so the same map
 * runs unchanged on an engine that crosses a process boundary (the function pointer is valid
 * there because every worker is a fork of the same image).
 *
 * Delivery. Ordered maps deliver the chunk at the head of the window (slot = chunk % cap, the
 * chunks in flight being consecutive); unordered maps take finished futures from an fqueue
 * (completion order) and find their slot through the tag echoed in the result (a future that
 * failed as a whole has no result: its slot is found by a scan, once per map since that
 * error ends it). A lazy map keeps at most buffer_size chunks in flight, counting the one
 * being delivered, and refills the window when that one is exhausted; an eager map submits
 * every chunk at start with one batch submit. Errors after which no item can come (an item
 * error, a failed chunk, the source's error, a refused submit, a timeout) end the map: next
 * keeps returning the same code. Errors of the source or of a submit are deferred until every
 * chunk already submitted has been delivered, so they surface at their position in the input.
 *
 * concur_map() (the eager map into an array) is the fast path: it submits chunks in batches
 * of about 1 MiB of input, keeps a window of about 8 MiB (at least two chunks per worker) in
 * flight and copies each chunk's outputs once into the caller's array as it collects them in
 * input order. The window is what keeps the cost per item low on big inputs: the memory of
 * collected chunks is reused by the next ones instead of being faulted in afresh.
 *
 * Chunks over the caller's memory. The range form (concur_parallel_for) and concur_map() on
 * a thread pool with non-overlapping arrays do not copy: a chunk task's input is 16 bytes, a
 * pointer to the loop's shared job and the chunk's number, and the task works on the caller's
 * arrays in place (a range function loops over its indexes itself; concur_map()'s chunk runs
 * the per-item function over items and outputs where they are). The caller keeps a window of
 * chunk futures, submitted in order with batch submits and collected as a prefix; it sleeps
 * on the newest chunk once all are submitted, so it wakes about once per loop, not once per
 * chunk. Failures are kept by position: the job's stop_at is the lowest chunk known to have
 * failed, chunks after it do not start and those in flight are cancelled, chunks before it
 * still run, so the failure reported is the lowest one (for concur_map(), the first failing
 * item in input order, every output before it written, as on the copying path). The job is
 * reference counted and counts the tasks that may still touch the caller's memory: a chunk
 * past the pool's task_timeout has a failed future but goes on running, and the call
 * returns only once it has left.
 *
 * Threads. A map is used by one thread at a time; nothing here is shared with the workers
 * except through futures (the chunk task only sees its input and its result), so the map
 * itself needs no lock. The in-place loops share their job with the workers through atomics
 * only (stop_at, the counters), and the arrays through the futures' completion.
 */
#include <limits.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "core/concur_impl.h"
#include "sys/code.h"

/* ------------------------------------------------------------------------------------ */
/* The wire format of a chunk: input and result headers (64 and 48 bytes), multiples of any
 * fundamental alignment, so items and outputs that follow them are as aligned as the
 * buffer holding them. */

typedef struct chunk_hdr {
    concur_map_fn fn; /* NULL when it travels as fn_ref instead */
    uint64_t in_size;
    uint64_t out_size;
    uint64_t count; /* items in the chunk */
    uint64_t base;  /* input index of the chunk's first item */
    uint64_t tag;   /* the map's slot number, echoed in the result */
    /* fn for a pool whose workers have their own address layout (MPI ranks): (object,
     * offset), looked up where the chunk runs (sys/code.h). */
    concur__code_ref fn_ref;
} chunk_hdr;

typedef struct result_hdr {
    uint64_t tag;
    uint64_t base;
    uint64_t count;   /* items in the chunk */
    uint64_t nok;     /* items that succeeded (their outputs follow the header) */
    int64_t err;      /* 0, or the error of item nok */
    uint64_t msg_len; /* bytes of that error's message, after the outputs (NUL follows) */
} result_hdr;

#define ALIGN_MAX alignof(max_align_t)

/* Items between two checks of concur_task_should_stop() in a chunk (a power of two). */
#define STOP_CHECK_EVERY 256u

/* concur_map() stages about this many input bytes per batch submit, so the workers start
 * on the first chunks while the caller stages the next ones. */
#define STAGE_GROUP_BYTES ((size_t)1 << 20)

/* concur_map() keeps about this many input bytes of chunks in flight (at least two chunks per
 * worker): the memory of collected chunks is then reused by the next ones instead of the
 * heap growing to the whole input and being trimmed afterwards, which costs a page fault per
 * 4 KiB on every call. */
#define WINDOW_BYTES ((size_t)8 << 20)

/* The message the per-item function gave with concur_task_fail(), or the code's text. */
static const char *item_message(const concur_task *t, int code)
{
    const char *m = concur_task_message(t);
    return m ? m : concur_strerror(code);
}

static bool is_aligned(const void *p)
{
    return ((uintptr_t)p % ALIGN_MAX) == 0;
}

/*
 * The hot loop: fn over @p count items at @p ip (in_size bytes apart) into @p op (out_size
 * apart), nothing per item but the call, its test and two additions; the stop flag is read
 * once per block of STOP_CHECK_EVERY items. Returns 0, or the error of item *done (the items
 * before it succeeded; a positive value becomes CONCUR_ETASK); sets *stop and returns 0 when
 * the task was asked to stop before the end.
 */
static int apply(concur_task *t, concur_map_fn fn, const unsigned char *ip, unsigned char *op,
                 size_t in_size, size_t out_size, size_t count, size_t *done, bool *stop)
{
    size_t i = 0;
    int err = 0;
    while (i < count) {
        size_t end = count - i > STOP_CHECK_EVERY ? i + STOP_CHECK_EVERY : count;
        for (; i < end; i++) {
            err = fn(t, ip, op);
            if (err)
                goto out;
            ip += in_size;
            op += out_size;
        }
        if (i < count && concur_task_should_stop(t)) {
            *stop = true;
            break;
        }
    }
out:
    *done = i;
    return err > 0 ? CONCUR_ETASK : err;
}

/*
 * The chunk task. Runs fn on each item; the result is written in place. An item error stops
 * the chunk at that item and becomes part of the result (the task itself succeeds), so the
 * outputs before it are kept. The task fails only when it cannot run at all (bad input, no
 * memory) or when it is asked to stop (its result would be dropped anyway).
 */
static int chunk_task(concur_task *t, const void *in, size_t len)
{
    chunk_hdr h;
    if (len < sizeof h)
        return concur_task_fail(t, CONCUR_EINVAL, "map chunk: input of %zu bytes", len);
    memcpy(&h, in, sizeof h);
    if (!h.fn && h.fn_ref.module &&
        !(h.fn = (concur_map_fn)(uintptr_t)concur__code_unpack(NULL, &h.fn_ref)))
        return concur_task_fail(t, CONCUR_ENOTLOADED,
                                "map chunk: the per-item function is not loaded here");
    size_t count = (size_t)h.count, in_size = (size_t)h.in_size, out_size = (size_t)h.out_size;
    if (!h.fn || h.count != count || h.in_size != in_size || h.out_size != out_size ||
        (in_size && count > (SIZE_MAX - sizeof h) / in_size) || len != sizeof h + count * in_size ||
        (out_size && count > (SIZE_MAX - sizeof(result_hdr)) / out_size))
        return concur_task_fail(t, CONCUR_EINVAL, "map chunk: malformed input");

    const unsigned char *items = (const unsigned char *)in + sizeof h;
    unsigned char *items_copy = NULL, *outs_tmp = NULL;
    if (in_size && count && !is_aligned(items)) {
        /* Items must be as aligned for fn as they were in the caller's array. */
        items_copy = malloc(count * in_size);
        if (!items_copy)
            return concur_task_fail(t, CONCUR_ENOMEM, "map chunk: out of memory");
        memcpy(items_copy, items, count * in_size);
        items = items_copy;
    }
    size_t res_len = sizeof(result_hdr) + count * out_size;
    unsigned char *res = concur_task_result_alloc(t, res_len);
    if (!res) {
        free(items_copy);
        return concur_task_fail(t, CONCUR_ENOMEM, "map chunk: out of memory");
    }
    unsigned char *outs = res + sizeof(result_hdr);
    if (out_size && count && !is_aligned(outs)) {
        outs_tmp = malloc(count * out_size);
        if (!outs_tmp) {
            free(items_copy);
            return concur_task_fail(t, CONCUR_ENOMEM, "map chunk: out of memory");
        }
    }

    size_t i = 0;
    bool stop = false;
    int err = apply(t, h.fn, items, outs_tmp ? outs_tmp : outs, in_size, out_size, count, &i,
                    &stop);
    free(items_copy);
    if (stop) {
        free(outs_tmp);
        return CONCUR_ECANCELED;
    }

    result_hdr r = {.tag = h.tag, .base = h.base, .count = h.count, .nok = i, .err = err};
    if (err) {
        /* Rebuild the result with room for the message: header, the i outputs, message. */
        const char *msg = item_message(t, err);
        size_t mlen = strlen(msg);
        unsigned char *keep = outs_tmp;
        if (!keep && i && out_size) {
            keep = malloc(i * out_size);
            if (!keep)
                return concur_task_fail(t, CONCUR_ENOMEM, "map chunk: out of memory");
            memcpy(keep, outs, i * out_size);
        }
        /* Copy the message too: it may live in the task context, which the next
         * result_alloc does not touch, but be safe about its lifetime. */
        char *mcopy = malloc(mlen + 1);
        if (!mcopy) {
            if (keep != outs_tmp)
                free(keep);
            free(outs_tmp);
            return concur_task_fail(t, CONCUR_ENOMEM, "map chunk: out of memory");
        }
        memcpy(mcopy, msg, mlen + 1);
        res = concur_task_result_alloc(t, sizeof(result_hdr) + i * out_size + mlen + 1);
        if (!res) {
            if (keep != outs_tmp)
                free(keep);
            free(outs_tmp);
            free(mcopy);
            return concur_task_fail(t, CONCUR_ENOMEM, "map chunk: out of memory");
        }
        if (i && out_size)
            memcpy(res + sizeof r, keep, i * out_size);
        memcpy(res + sizeof r + i * out_size, mcopy, mlen + 1);
        r.msg_len = mlen;
        if (keep != outs_tmp)
            free(keep);
        free(mcopy);
    } else if (outs_tmp) {
        memcpy(outs, outs_tmp, count * out_size);
    }
    free(outs_tmp);
    memcpy(res, &r, sizeof r);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Chunk helpers. */

CONCUR_API size_t concur_chunk_count(size_t n, size_t chunk_size)
{
    if (!chunk_size || !n)
        return 0;
    return n / chunk_size + (n % chunk_size != 0);
}

CONCUR_API int concur_chunk_bounds(size_t n, size_t chunk_size, size_t i, size_t *begin,
                                   size_t *end)
{
    if (i >= concur_chunk_count(n, chunk_size))
        return CONCUR_EINVAL;
    size_t b = i * chunk_size;
    size_t e = n - b < chunk_size ? n : b + chunk_size;
    if (begin)
        *begin = b;
    if (end)
        *end = e;
    return 0;
}

/* Decodes a DONE chunk future's result; 0 or CONCUR_EINVAL when it is not a chunk result. */
static int decode(concur_future *f, size_t out_size, result_hdr *r, const unsigned char **outs,
                  const char **msg)
{
    const void *data = NULL;
    size_t len = 0;
    int rc = concur_future_result(f, &data, &len);
    if (rc)
        return rc;
    if (len < sizeof *r || !data)
        return CONCUR_EINVAL;
    memcpy(r, data, sizeof *r);
    const unsigned char *p = data;
    /* The output size is not in the result header: check what can be checked. */
    size_t room = len - sizeof *r; /* outputs and message */
    if (r->nok > r->count || (r->err == 0) != (r->nok == r->count) || r->err > 0 ||
        r->err < INT_MIN || (r->err && (r->msg_len >= room || p[len - 1] != '\0')))
        return CONCUR_EINVAL;
    if (out_size != SIZE_MAX && out_size &&
        (r->nok > room / out_size || r->nok * out_size > room - (r->err ? r->msg_len + 1 : 0)))
        return CONCUR_EINVAL;
    *outs = p + sizeof *r;
    *msg = r->err ? (const char *)p + len - r->msg_len - 1 : NULL;
    return 0;
}

/* concur_map_chunk_result(), checking the result's size when out_size is known. */
static int chunk_result(concur_future *f, size_t out_size, const void **outs, size_t *count,
                        const char **msg)
{
    result_hdr r;
    const unsigned char *o = NULL;
    const char *m = NULL;
    int rc = decode(f, out_size, &r, &o, &m);
    if (rc == CONCUR_EAGAIN)
        return rc;
    if (rc) {
        /* The task itself failed (or was cancelled): no outputs. */
        if (outs)
            *outs = NULL;
        if (count)
            *count = 0;
        if (msg)
            *msg = concur_future_error_message(f);
        if (msg && !*msg)
            *msg = concur_strerror(rc);
        return rc;
    }
    if (outs)
        *outs = o;
    if (count)
        *count = (size_t)r.nok;
    if (msg)
        *msg = m;
    return (int)r.err;
}

CONCUR_API int concur_map_chunk_result(concur_future *f, const void **outs, size_t *count,
                                       const char **msg)
{
    if (!f)
        return CONCUR_EINVAL;
    return chunk_result(f, SIZE_MAX, outs, count, msg);
}

/* ------------------------------------------------------------------------------------ */
/* Sources and staging. */

enum src_kind { SRC_ARRAY, SRC_ZIP, SRC_GEN };

typedef struct source {
    enum src_kind kind;
    size_t in_size;
    const unsigned char *items; /* SRC_ARRAY */
    const void **arrays;        /* SRC_ZIP: copies of the caller's pointer and size arrays */
    size_t *sizes;
    size_t narrays;
    concur_gen_fn gen; /* SRC_GEN */
    void *gen_arg;
} source;

/* Copies items [first, first + count) of an array or zip source to @p dst. */
static void copy_items(const source *s, size_t first, size_t count, unsigned char *dst)
{
    if (!s->in_size || !count)
        return;
    if (s->kind == SRC_ARRAY) {
        memcpy(dst, s->items + first * s->in_size, count * s->in_size);
        return;
    }
    for (size_t i = first; i < first + count; i++)
        for (size_t k = 0; k < s->narrays; k++) {
            if (!s->sizes[k])
                continue;
            memcpy(dst, (const unsigned char *)s->arrays[k] + i * s->sizes[k], s->sizes[k]);
            dst += s->sizes[k];
        }
}

static void put_hdr(unsigned char *dst, concur_pool *p, concur_map_fn fn, const concur_map_opts *o,
                    size_t in_size, size_t base, size_t count, size_t tag)
{
    chunk_hdr h = {.fn = fn,
                   .in_size = in_size,
                   .out_size = o->out_size,
                   .count = count,
                   .base = base,
                   .tag = tag};
    /* check_opts made sure the function has a reference */
    const void *ptr;
    concur__code_pack((const void *)(uintptr_t)fn, concur__pool_remote_code(p), &ptr, &h.fn_ref);
    h.fn = (concur_map_fn)(uintptr_t)ptr;
    memcpy(dst, &h, sizeof h);
}

/* Bytes of chunk input for @p count items, or 0 on overflow. */
static size_t chunk_bytes(size_t count, size_t in_size)
{
    if (in_size && count > (SIZE_MAX - sizeof(chunk_hdr)) / in_size)
        return 0;
    return sizeof(chunk_hdr) + count * in_size;
}

/* Staging memory, reused from one group of chunks to the next: a fresh buffer per group
 * would cost its page faults every time (they dominate copying at these sizes). */
typedef struct stager {
    unsigned char *buf;
    size_t cap;
    concur_input *ins;
    size_t ins_cap;
} stager;

static void stager_free(stager *st)
{
    free(st->buf);
    free(st->ins);
}

/*
 * Stages chunks [c0, c0 + nch) of an n-item array/zip source into one buffer and submits
 * them with one batch submit; futs[i] receives chunk c0 + i's future. Tags are the chunk
 * numbers. All or nothing.
 */
static int submit_group(concur_pool *p, concur_map_fn fn, const concur_map_opts *o, const source *s,
                        size_t n, size_t c0, size_t nch, concur_future **futs, stager *st)
{
    size_t k = o->chunk_size, total = 0;
    for (size_t c = c0; c < c0 + nch; c++) {
        size_t b = 0, e = 0;
        concur_chunk_bounds(n, k, c, &b, &e);
        size_t bytes = chunk_bytes(e - b, s->in_size);
        if (!bytes || total > SIZE_MAX - bytes)
            return CONCUR_ENOMEM;
        total += bytes;
    }
    if (total > st->cap) {
        unsigned char *b = realloc(st->buf, total);
        if (!b)
            return CONCUR_ENOMEM;
        st->buf = b;
        st->cap = total;
    }
    if (nch > st->ins_cap) {
        if (nch > SIZE_MAX / sizeof *st->ins)
            return CONCUR_ENOMEM;
        concur_input *in = realloc(st->ins, nch * sizeof *in);
        if (!in)
            return CONCUR_ENOMEM;
        st->ins = in;
        st->ins_cap = nch;
    }
    concur_input *ins = st->ins;
    unsigned char *w = st->buf;
    for (size_t c = c0; c < c0 + nch; c++) {
        size_t b = 0, e = 0;
        concur_chunk_bounds(n, k, c, &b, &e);
        put_hdr(w, p, fn, o, s->in_size, b, e - b, c);
        copy_items(s, b, e - b, w + sizeof(chunk_hdr));
        ins[c - c0].data = w;
        ins[c - c0].len = sizeof(chunk_hdr) + (e - b) * s->in_size;
        w += ins[c - c0].len;
    }
    return nch == 1 ? concur_pool_submit(p, chunk_task, ins[0].data, ins[0].len, futs)
                    : concur_pool_submit_batch(p, chunk_task, ins, nch, futs);
}

/* Cancels (pending ones never run, running ones are asked to stop), awaits and releases. */
static void abandon(concur_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fs[i])
            concur_future_cancel(fs[i]);
    for (size_t i = 0; i < n; i++)
        if (fs[i]) {
            concur_future_wait(fs[i], CONCUR_FOREVER);
            concur_future_release(fs[i]);
            fs[i] = NULL;
        }
}

static int check_opts(concur_pool *p, concur_map_fn fn, const concur_map_opts *o)
{
    if (!p || !fn || !o || !o->chunk_size)
        return CONCUR_EINVAL;
    /* The per-item function travels inside the chunks: a process pool checks it here. */
    return concur__pool_code_ok(p, (const void *)(uintptr_t)fn) ? 0 : CONCUR_ENOTLOADED;
}

/* ------------------------------------------------------------------------------------ */
/* Chunks over the caller's memory: the range form, and concur_map() on a thread pool. */

/* Chunks of one loop in flight at most (4 per worker when that is more): bounds the futures
 * a loop holds, whatever its length. */
#define RANGE_WINDOW 1024u
#define RANGE_WINDOW_MAX ((size_t)1 << 20)

/*
 * What the chunk tasks of one loop share. On the heap, reference counted: a chunk past the
 * pool's task_timeout has a failed future but goes on running (a thread cannot be stopped),
 * so the job outlives the caller's last look at the futures until that task has left.
 */
typedef struct range_job {
    /* Submitted chunk tasks that have not left: until then they may touch the caller's
     * memory. The caller returns only at 0. */
    _Atomic uint32_t live;
    _Atomic uint32_t waiting; /* the caller sleeps on live (wake it at 0) */
    _Atomic uint32_t refs;    /* the caller's and one per submitted task; the last one frees */
    /* The lowest chunk known to have failed (SIZE_MAX: none): chunks after it do not start,
     * chunks before it still run, so the failure reported is the lowest one. */
    _Atomic size_t stop_at;
    size_t first, n, grain; /* the indexes [first, first + n), grain per chunk */
    concur_range_fn range_fn; /* the range form, with its arg */
    void *arg;
    concur_map_fn map_fn; /* concur_map(): items read and outputs written in place */
    const unsigned char *items;
    unsigned char *out;
    size_t in_size, out_size;
} range_job;

/* A chunk task's input, 16 bytes: it fits in the task record, so a submit copies no more. */
typedef struct chunk_ref {
    range_job *job;
    size_t chunk;
} chunk_ref;

/* True when the pool's tasks run in this process and may use the caller's memory. */
static bool shares_memory(const concur_pool *p)
{
    return concur__pool_shares_memory(p);
}

static void lower_stop(range_job *j, size_t chunk)
{
    size_t v = atomic_load_explicit(&j->stop_at, memory_order_relaxed);
    while (chunk < v && !atomic_compare_exchange_weak_explicit(&j->stop_at, &v, chunk,
                                                               memory_order_relaxed,
                                                               memory_order_relaxed))
        ;
}

static void job_release(range_job *j, uint32_t k)
{
    if (atomic_fetch_sub_explicit(&j->refs, k, memory_order_acq_rel) == k)
        free(j);
}

/* @p k tasks are done with the caller's memory: they returned, or will never run. */
static void job_leave(range_job *j, uint32_t k)
{
    /* seq_cst: pairs with the caller's store to waiting, then load of live (wait_live). */
    if (atomic_fetch_sub_explicit(&j->live, k, memory_order_seq_cst) == k &&
        atomic_load_explicit(&j->waiting, memory_order_seq_cst))
        concur__futex_wake(&j->live, 1);
    job_release(j, k);
}

static void wait_live(range_job *j)
{
    if (!atomic_load_explicit(&j->live, memory_order_acquire))
        return;
    atomic_store_explicit(&j->waiting, 1, memory_order_seq_cst);
    uint32_t v;
    while ((v = atomic_load_explicit(&j->live, memory_order_seq_cst)) != 0)
        concur__futex_wait(&j->live, v, UINT64_MAX);
}

/* concur_map()'s chunk in place. An item error goes into the result as in chunk_task, with
 * no outputs before the message (they are in the caller's array already). */
static int items_body(range_job *j, concur_task *t, size_t chunk, size_t b, size_t e)
{
    size_t done = 0;
    bool stop = false;
    int err = apply(t, j->map_fn, j->items + b * j->in_size, j->out + b * j->out_size,
                    j->in_size, j->out_size, e - b, &done, &stop);
    if (stop)
        return CONCUR_ECANCELED;
    if (!err)
        return 0;
    lower_stop(j, chunk);
    const char *msg = item_message(t, err);
    size_t mlen = strlen(msg);
    unsigned char *res = concur_task_result_alloc(t, sizeof(result_hdr) + mlen + 1);
    if (!res)
        return concur_task_fail(t, CONCUR_ENOMEM, "map chunk: out of memory");
    result_hdr r = {.count = e - b, .nok = done, .err = err, .msg_len = mlen};
    memcpy(res, &r, sizeof r);
    memcpy(res + sizeof r, msg, mlen + 1);
    return 0;
}

/*
 * The chunk task of both forms. A chunk after a failed one returns at once. The range form's
 * error fails the task (code and message travel in its future); concur_map()'s item error
 * is the task's result. Leaving the job is the last thing it does with the caller's memory.
 */
static int range_chunk_task(concur_task *t, const void *in, size_t len)
{
    chunk_ref r;
    if (len != sizeof r)
        return concur_task_fail(t, CONCUR_EINVAL, "range chunk: input of %zu bytes", len);
    memcpy(&r, in, sizeof r);
    range_job *j = r.job;
    int rc = 0;
    if (r.chunk <= atomic_load_explicit(&j->stop_at, memory_order_relaxed)) {
        size_t b = 0, e = 0;
        concur_chunk_bounds(j->n, j->grain, r.chunk, &b, &e);
        if (j->range_fn) {
            rc = j->range_fn(t, j->first + b, j->first + e, j->arg);
            if (rc)
                lower_stop(j, r.chunk);
        } else {
            rc = items_body(j, t, r.chunk, b, e);
        }
    }
    job_leave(j, 1);
    return rc;
}

/* The caller's side of one loop: a window of chunk futures, submitted in order and collected
 * as a prefix. */
typedef struct range_run {
    concur_pool *p;
    range_job *j;
    size_t nch, cap, group; /* chunks; the window; chunks per batch submit */
    concur_future **ring;   /* chunk c's future at c % cap */
    chunk_ref *refs;        /* a batch's inputs */
    concur_input *ins;
    size_t sub, col;    /* chunks submitted; chunks collected */
    size_t cancel_from; /* the chunks in flight from here on were cancelled */
    double deadline;
    bool first_run; /* submit the first chunk with concur_pool_run (a one-worker pool) */
    /* The failure at the lowest position so far (fail_chunk SIZE_MAX: none). */
    size_t fail_chunk, fail_item;
    int fail_code;
    char *msg; /* its message goes here (NULL: not kept) */
    size_t msg_cap;
} range_run;

static size_t chunk_first(const range_run *r, size_t c)
{
    size_t b = 0;
    concur_chunk_bounds(r->j->n, r->j->grain, c, &b, NULL);
    return b;
}

static concur_future *ring_at(const range_run *r, size_t c)
{
    return r->ring[c % r->cap];
}

static bool finished(const concur_future *f)
{
    concur_state s = concur_future_state(f);
    return s == CONCUR_DONE || s == CONCUR_FAILED || s == CONCUR_CANCELLED;
}

/* Records a failure at chunk @p c, item @p item (relative to the range's start), unless one
 * at a lower chunk is known; later chunks stop. */
static void note(range_run *r, size_t c, size_t item, int code, const char *msg)
{
    if (c >= r->fail_chunk)
        return;
    r->fail_chunk = c;
    r->fail_item = item;
    r->fail_code = code;
    if (r->msg)
        snprintf(r->msg, r->msg_cap, "%s", msg ? msg : concur_strerror(code));
    lower_stop(r->j, c);
}

/* Chunks worth submitting: none after a failed one. */
static size_t sub_limit(const range_run *r)
{
    size_t stop = atomic_load_explicit(&r->j->stop_at, memory_order_relaxed);
    return stop < r->nch ? stop : r->nch;
}

/* Reads the outcome of finished chunk @p c and releases its future. */
static void collect(range_run *r, size_t c)
{
    concur_future *f = ring_at(r, c);
    size_t b = chunk_first(r, c);
    concur_state s = concur_future_state(f);
    if (s == CONCUR_CANCELLED) {
        job_leave(r->j, 1); /* it never ran and never will */
        note(r, c, b, CONCUR_ECANCELED, NULL);
    } else if (s == CONCUR_FAILED) {
        note(r, c, b, concur_future_error(f), concur_future_error_message(f));
    } else if (!r->j->range_fn) {
        const void *data = NULL;
        size_t len = 0, nok = 0;
        const char *msg = NULL;
        concur_future_result(f, &data, &len);
        int rc = len ? chunk_result(f, 0, NULL, &nok, &msg) : 0;
        if (rc)
            note(r, c, b + nok, rc, msg);
    }
    concur_future_release(f);
    r->ring[c % r->cap] = NULL;
}

/* Cancels the chunks in flight from @p from on: those not started never run, running ones
 * are asked to stop. */
static void cancel_from(range_run *r, size_t from)
{
    if (from < r->col)
        from = r->col;
    for (size_t c = from; c < r->sub && c < r->cancel_from; c++)
        if (!finished(ring_at(r, c)))
            concur_future_cancel(ring_at(r, c));
    if (from < r->cancel_from)
        r->cancel_from = from;
}

/* Submits @p g chunks from r->sub on, into consecutive ring slots. */
static int submit_chunks(range_run *r, size_t g)
{
    concur_future **futs = r->ring + r->sub % r->cap;
    for (size_t i = 0; i < g; i++) {
        r->refs[i] = (chunk_ref){.job = r->j, .chunk = r->sub + i};
        r->ins[i] = (concur_input){.data = &r->refs[i], .len = sizeof r->refs[i]};
    }
    atomic_fetch_add_explicit(&r->j->refs, (uint32_t)g, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->j->live, (uint32_t)g, memory_order_relaxed);
    int rc;
    if (r->first_run) {
        /* One worker: if it is the caller itself, the chunks could never run. run refuses
         * that (CONCUR_EDEADLK, nothing submitted); otherwise it submits and waits for this
         * chunk, which the loop then collects. */
        r->first_run = false;
        *futs = NULL;
        rc = concur_pool_run(r->p, range_chunk_task, r->ins[0].data, r->ins[0].len,
                             concur_remaining(r->deadline), futs);
        rc = *futs ? 0 : rc;
    } else if (g == 1) {
        rc = concur_pool_submit(r->p, range_chunk_task, r->ins[0].data, r->ins[0].len, futs);
    } else {
        rc = concur_pool_submit_batch(r->p, range_chunk_task, r->ins, g, futs);
    }
    if (rc)
        job_leave(r->j, (uint32_t)g); /* nothing was queued */
    else
        r->sub += g;
    return rc;
}

/* Fills the window. A pool whose queue_limit refuses a batch gets smaller ones, then the
 * loop waits for its oldest chunk; a refusal with nothing of the loop in flight is the
 * failure of the first chunk not submitted. */
static void top_up(range_run *r)
{
    for (;;) {
        size_t limit = sub_limit(r);
        if (r->sub >= limit || r->sub - r->col >= r->cap)
            return;
        size_t g = limit - r->sub;
        size_t room = r->col + r->cap - r->sub, to_wrap = r->cap - r->sub % r->cap;
        g = g < room ? g : room;
        g = g < to_wrap ? g : to_wrap;
        g = g < r->group ? g : r->group;
        if (r->first_run)
            g = 1;
        int rc = submit_chunks(r, g);
        if (rc == 0)
            continue;
        if (rc == CONCUR_EFULL && g > 1) {
            r->group = g / 2;
            continue;
        }
        if ((rc == CONCUR_EFULL || rc == CONCUR_EBUSY) && r->col < r->sub)
            return;
        note(r, r->sub, chunk_first(r, r->sub), rc, NULL);
        return;
    }
}

/* The future to sleep on: the newest once all are submitted (submission order is about
 * the order the workers take them, so the caller wakes about once per loop), else the middle
 * of the window (it wakes in time to refill); the oldest when that one has finished. */
static concur_future *pick_wait(const range_run *r)
{
    size_t c = r->sub >= sub_limit(r) ? r->sub - 1 : r->col + (r->sub - r->col) / 2;
    if (finished(ring_at(r, c)))
        c = r->col;
    return ring_at(r, c);
}

/* The deadline passed: the failure is at the first chunk not done. False when every chunk
 * is done after all. */
static bool time_out(range_run *r)
{
    size_t c = r->col;
    while (c < r->sub && finished(ring_at(r, c)))
        c++;
    if (c == r->sub && c >= sub_limit(r))
        return false;
    note(r, c, chunk_first(r, c), CONCUR_ETIMEDOUT, NULL);
    cancel_from(r, c);
    return true;
}

static void run_window(range_run *r)
{
    for (;;) {
        top_up(r);
        size_t stop = atomic_load_explicit(&r->j->stop_at, memory_order_relaxed);
        if (stop != SIZE_MAX)
            cancel_from(r, stop + 1);
        if (r->col == r->sub)
            break;
        if (concur_future_wait(pick_wait(r), concur_remaining(r->deadline)) && time_out(r))
            break;
        while (r->col < r->sub && finished(ring_at(r, r->col)))
            collect(r, r->col++);
    }
    /* After a timeout: what still runs was asked to stop; wait for it. */
    for (; r->col < r->sub; r->col++) {
        concur_future_wait(ring_at(r, r->col), CONCUR_FOREVER);
        collect(r, r->col);
    }
    wait_live(r->j);
}

/*
 * Runs the chunks of job @p j (its fields set, its counters zero) on @p p until all are
 * done or the first failure, and frees the job. Returns 0 or the failure at the lowest
 * position: its chunk and item in *fail_chunk and *fail_item, its message in @p msg.
 */
static int run_job(concur_pool *p, range_job *j, double deadline, bool probe_deadlock,
                   char *msg, size_t msg_cap, size_t *fail_chunk, size_t *fail_item)
{
    atomic_init(&j->refs, 1);
    atomic_init(&j->stop_at, SIZE_MAX);
    int workers = concur_pool_max_workers(p);
    range_run r = {.p = p,
                   .j = j,
                   .nch = concur_chunk_count(j->n, j->grain),
                   .cap = RANGE_WINDOW,
                   .cancel_from = SIZE_MAX,
                   .deadline = deadline,
                   .first_run = probe_deadlock && workers == 1,
                   .fail_chunk = SIZE_MAX,
                   .msg = msg,
                   .msg_cap = msg_cap};
    if (workers > 0 && (size_t)workers * 4 > r.cap)
        r.cap = (size_t)workers * 4 < RANGE_WINDOW_MAX ? (size_t)workers * 4 : RANGE_WINDOW_MAX;
    if (r.cap > r.nch)
        r.cap = r.nch;
    r.group = r.cap;
    r.ring = calloc(r.cap, sizeof *r.ring);
    r.refs = malloc(r.cap * sizeof *r.refs);
    r.ins = malloc(r.cap * sizeof *r.ins);
    if (r.ring && r.refs && r.ins)
        run_window(&r);
    else
        note(&r, 0, 0, CONCUR_ENOMEM, NULL);
    *fail_chunk = r.fail_chunk;
    *fail_item = r.fail_item;
    free(r.ring);
    free(r.refs);
    free(r.ins);
    job_release(j, 1);
    return r.fail_chunk == SIZE_MAX ? 0 : r.fail_code;
}

/* True when every element of @p size bytes from @p p on is as aligned as the copying path
 * makes it: to the largest power of two dividing the size, at most ALIGN_MAX (so whatever
 * type has that size is aligned as it needs). */
static bool elements_aligned(const void *p, size_t size)
{
    size_t a = size & -size;
    if (!size)
        return true;
    return (uintptr_t)p % (a < ALIGN_MAX ? a : ALIGN_MAX) == 0;
}

/* concur_map() on a thread pool, when the arrays allow it: aligned as the copying path would
 * align them, not overlapping (an output never lands on an item another chunk has yet to
 * read; an array mapped onto itself takes the copying path, where each chunk's items are
 * copied before any output is written back). */
static bool in_place_ok(const void *items, size_t in_size, const void *out, size_t out_size,
                        size_t n)
{
    size_t il, ol;
    if (!items || !out || !elements_aligned(items, in_size) ||
        !elements_aligned(out, out_size) || __builtin_mul_overflow(n, in_size, &il) ||
        __builtin_mul_overflow(n, out_size, &ol))
        return false;
    uintptr_t i0 = (uintptr_t)items, o0 = (uintptr_t)out;
    return !il || !ol || i0 >= o0 + ol || o0 >= i0 + il;
}

static int map_in_place(concur_pool *p, concur_map_fn fn, const concur_map_opts *o,
                        const void *items, size_t n, void *out, size_t *err_index)
{
    range_job *j = calloc(1, sizeof *j);
    if (!j) {
        if (err_index)
            *err_index = 0;
        return CONCUR_ENOMEM;
    }
    j->n = n;
    j->grain = o->chunk_size;
    j->map_fn = fn;
    j->items = items;
    j->out = out;
    j->in_size = o->in_size;
    j->out_size = o->out_size;
    size_t fc, fi;
    int rc = run_job(p, j, o->timeout > 0 ? concur_deadline(o->timeout) : -1, false, NULL, 0,
                     &fc, &fi);
    if (rc && err_index)
        *err_index = fi;
    return rc;
}

static void range_error(concur_range_error *err, size_t begin, size_t end, int code)
{
    if (!err)
        return;
    err->begin = begin;
    err->end = end;
    snprintf(err->message, sizeof err->message, "%s", concur_strerror(code));
}

CONCUR_API int concur_parallel_for(concur_pool *p, size_t begin, size_t end, size_t grain,
                                   concur_range_fn fn, void *arg, double timeout,
                                   concur_range_error *err)
{
    int rc = !p || !fn || begin > end ? CONCUR_EINVAL : 0;
    if (!rc && !shares_memory(p))
        rc = CONCUR_ENOTSUP;
    if (rc) {
        range_error(err, begin, begin, rc);
        return rc;
    }
    size_t n = end - begin;
    if (!n)
        return 0;
    if (!grain) {
        int w = concur_pool_max_workers(p);
        grain = n / (4 * (size_t)(w > 0 ? w : 1));
        grain = grain ? grain : 1;
    }
    range_job *j = calloc(1, sizeof *j);
    if (!j) {
        range_error(err, begin, begin, CONCUR_ENOMEM);
        return CONCUR_ENOMEM;
    }
    j->first = begin;
    j->n = n;
    j->grain = grain;
    j->range_fn = fn;
    j->arg = arg;
    size_t fc, fi;
    rc = run_job(p, j, concur_deadline(timeout), true, err ? err->message : NULL,
                 err ? sizeof err->message : 0, &fc, &fi);
    if (rc && err) {
        size_t b = 0, e = 0;
        concur_chunk_bounds(n, grain, fc, &b, &e);
        err->begin = begin + b;
        err->end = begin + e;
    }
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Split maps and the eager map into an array. */

CONCUR_API int concur_map_submit_chunks(concur_pool *p, concur_map_fn fn,
                                        const concur_map_opts *opts, const void *items, size_t n,
                                        concur_future **futs)
{
    int rc = check_opts(p, fn, opts);
    if (rc)
        return rc;
    if ((!items && n && opts->in_size) || (!futs && n))
        return CONCUR_EINVAL;
    size_t nch = concur_chunk_count(n, opts->chunk_size);
    if (nch > INT_MAX)
        return CONCUR_EINVAL;
    if (!nch)
        return 0;
    source s = {.kind = SRC_ARRAY, .in_size = opts->in_size, .items = items};
    stager st = {0};
    rc = submit_group(p, fn, opts, &s, n, 0, nch, futs, &st);
    stager_free(&st);
    return rc ? rc : (int)nch;
}

CONCUR_API int concur_map(concur_pool *p, concur_map_fn fn, const concur_map_opts *opts,
                          const void *items, size_t n, void *out, size_t *err_index)
{
    int rc = check_opts(p, fn, opts);
    if (rc)
        return rc;
    if ((!items && n && opts->in_size) || (!out && n && opts->out_size))
        return CONCUR_EINVAL;
    size_t k = opts->chunk_size, out_size = opts->out_size;
    size_t nch = concur_chunk_count(n, k);
    if (!nch)
        return 0;
    if (shares_memory(p) && in_place_ok(items, opts->in_size, out, out_size, n))
        return map_in_place(p, fn, opts, items, n, out, err_index);
    concur_future **futs = calloc(nch, sizeof *futs);
    if (!futs)
        return CONCUR_ENOMEM;
    source s = {.kind = SRC_ARRAY, .in_size = opts->in_size, .items = items};
    double deadline = opts->timeout > 0 ? concur_deadline(opts->timeout) : -1;

    /* Chunks are submitted in groups of about STAGE_GROUP_BYTES of input, so the workers
     * start on the first ones while the next are staged, and collected in input order, each
     * output copied once from its chunk's result. A pool with a queue_limit that refuses a
     * group gets smaller groups, then the oldest chunk is collected before trying again. */
    size_t chunk_in = opts->in_size && k > SIZE_MAX / opts->in_size ? SIZE_MAX : k * opts->in_size;
    size_t per_group = chunk_in >= STAGE_GROUP_BYTES ? 1 : STAGE_GROUP_BYTES / (chunk_in + 1);
    if (per_group < 1)
        per_group = 1;
    int workers = concur_pool_max_workers(p);
    size_t window = chunk_in >= WINDOW_BYTES / 2 ? 2 : WINDOW_BYTES / (chunk_in + 1);
    if (workers > 0 && window < 2 * (size_t)workers)
        window = 2 * (size_t)workers;
    if (window < per_group)
        window = per_group;
    unsigned char *o = out;
    stager st = {0};
    size_t sub = 0, col = 0, fail_at = 0;
    int sub_rc = 0; /* a refused submit: the failure at item sub * k, unless one comes first */
    rc = 0;
    while (col < nch) {
        while (sub < nch && !sub_rc && sub - col < window) {
            size_t g = nch - sub < per_group ? nch - sub : per_group;
            if (sub - col + g > window && sub > col)
                break;
            int sr = submit_group(p, fn, opts, &s, n, sub, g, futs + sub, &st);
            if (sr == 0) {
                sub += g;
                continue;
            }
            if (sr == CONCUR_EFULL && g > 1) {
                per_group = g / 2;
                continue;
            }
            if ((sr == CONCUR_EFULL || sr == CONCUR_EBUSY) && col < sub)
                break;
            sub_rc = sr; /* nothing in flight could make room */
        }
        if (col == sub) {
            rc = sub_rc;
            fail_at = sub * k;
            break;
        }
        int w = concur_future_wait(futs[col], concur_remaining(deadline));
        if (w) {
            rc = w;
            fail_at = col * k;
            break;
        }
        const void *outs = NULL;
        size_t nok = 0;
        int cr = chunk_result(futs[col], out_size, &outs, &nok, NULL);
        if (nok && out_size)
            memcpy(o + col * k * out_size, outs, nok * out_size);
        if (cr) {
            rc = cr;
            fail_at = col * k + nok;
            break;
        }
        concur_future_release(futs[col]);
        futs[col++] = NULL;
    }
    abandon(futs, nch);
    free(futs);
    stager_free(&st);
    if (rc && err_index)
        *err_index = fail_at;
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* The map iterator. */

typedef struct slot {
    concur_future *f; /* one reference, NULL when free */
    size_t base;      /* first item's index */
    size_t count;     /* items */
} slot;

struct concur_map_iter {
    concur_pool *pool;
    concur_map_fn fn;
    concur_map_opts o; /* in_size is the item size of the source (zip: the sum) */
    double deadline;   /* concur_now() value, or -1 */
    source src;
    size_t n; /* array and zip sources: item count */

    /* Input side. */
    size_t next_item;         /* input index of the next item not yet in a submitted chunk */
    size_t next_chunk;        /* chunks submitted so far */
    bool src_done;            /* no item after next_item (+ the staged ones) */
    int src_err;              /* deferred: the source's error or a refused submit */
    bool submit_failed;       /* src_err is the pool's answer to a submit */
    unsigned char *stage;     /* a built chunk that waits for a submit (lazy) */
    size_t stage_cap, staged; /* staged: items in it (0: none) */

    /* In flight. */
    slot *slots;
    size_t cap, inflight;
    size_t *freelist; /* unordered lazy: free slot numbers */
    size_t nfree;
    size_t head; /* ordered: number of chunks fully delivered */
    concur_fqueue *fq;

    /* The chunk being delivered. */
    slot *cur;
    const unsigned char *cur_outs;
    size_t cur_pos, cur_nok;
    int cur_err;
    const char *cur_msg;

    size_t delivered;
    bool over; /* the map ended: next returns err (0: the end) */
    int err;
    size_t err_index;
    char *err_msg;
};

static int set_msg(concur_map_iter *m, const char *msg)
{
    free(m->err_msg);
    m->err_msg = NULL;
    if (!msg)
        return 0;
    size_t l = strlen(msg);
    m->err_msg = malloc(l + 1);
    if (!m->err_msg)
        return CONCUR_ENOMEM;
    memcpy(m->err_msg, msg, l + 1);
    return 0;
}

static int finish(concur_map_iter *m, int err, size_t index, const char *msg)
{
    m->over = true;
    m->err = err;
    m->err_index = index;
    if (err)
        set_msg(m, msg ? msg : concur_strerror(err));
    return err;
}

/* Takes the slot for a new chunk, or NULL if the window is full. */
static slot *take_slot(concur_map_iter *m, size_t chunk, size_t *tag)
{
    if (m->inflight >= m->cap)
        return NULL;
    size_t i = m->o.unordered && m->freelist ? m->freelist[--m->nfree] : chunk % m->cap;
    *tag = i;
    return &m->slots[i];
}

static void free_slot(concur_map_iter *m, slot *s)
{
    if (s->f)
        concur_future_release(s->f);
    s->f = NULL;
    m->inflight--;
    if (m->o.unordered && m->freelist)
        m->freelist[m->nfree++] = (size_t)(s - m->slots);
}

/* Grows the stage to hold @p items items. */
static int stage_reserve(concur_map_iter *m, size_t items)
{
    size_t need = chunk_bytes(items, m->src.in_size);
    if (!need)
        return CONCUR_ENOMEM;
    if (need <= m->stage_cap)
        return 0;
    size_t cap = m->stage_cap ? m->stage_cap : sizeof(chunk_hdr) + 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    unsigned char *s = realloc(m->stage, cap);
    if (!s)
        return CONCUR_ENOMEM;
    m->stage = s;
    m->stage_cap = cap;
    return 0;
}

/*
 * Builds the next chunk into the stage (no-op when one is staged already). Leaves staged 0
 * when the source is exhausted; a source error is recorded in src_err (the items pulled
 * before it are still staged).
 */
static void build_chunk(concur_map_iter *m)
{
    if (m->staged || m->src_done || m->src_err)
        return;
    size_t k = m->o.chunk_size;
    if (m->src.kind != SRC_GEN) {
        size_t cnt = m->n - m->next_item < k ? m->n - m->next_item : k;
        if (!cnt) {
            m->src_done = true;
            return;
        }
        int rc = stage_reserve(m, cnt);
        if (rc) {
            m->src_err = rc;
            return;
        }
        copy_items(&m->src, m->next_item, cnt, m->stage + sizeof(chunk_hdr));
        m->staged = cnt;
        return;
    }
    /* Generator: pull up to k items, growing the stage as they come. */
    size_t cnt = 0;
    while (cnt < k) {
        int rc = stage_reserve(m, cnt + 1);
        if (rc) {
            m->src_err = rc;
            break;
        }
        rc = m->src.gen(m->src.gen_arg, m->stage + sizeof(chunk_hdr) + cnt * m->src.in_size);
        if (rc == 1) {
            cnt++;
            continue;
        }
        if (rc == 0)
            m->src_done = true;
        else
            m->src_err = rc < 0 ? rc : CONCUR_EINVAL;
        break;
    }
    m->staged = cnt;
}

/*
 * Submits the staged chunk. Returns 0 (submitted, or kept staged because the pool is
 * momentarily full and chunks are in flight: retried at the next refill) or the error
 * that ends the input side.
 */
static int submit_staged(concur_map_iter *m)
{
    size_t tag;
    slot *s = take_slot(m, m->next_chunk, &tag);
    if (!s)
        return 0;
    put_hdr(m->stage, m->pool, m->fn, &m->o, m->src.in_size, m->next_item, m->staged, tag);
    concur_future *f = NULL;
    int rc = concur_pool_submit(m->pool, chunk_task, m->stage,
                                sizeof(chunk_hdr) + m->staged * m->src.in_size, &f);
    if (rc == 0 && m->fq) {
        rc = concur_fqueue_put(m->fq, f);
        if (rc)
            abandon(&f, 1);
    }
    if (rc) {
        if (m->o.unordered && m->freelist)
            m->freelist[m->nfree++] = tag;
        if ((rc == CONCUR_EFULL || rc == CONCUR_EBUSY) && m->inflight)
            return 0;
        return rc;
    }
    s->f = f;
    s->base = m->next_item;
    s->count = m->staged;
    m->inflight++;
    m->next_item += m->staged;
    m->next_chunk++;
    m->staged = 0;
    return 0;
}

/* Lazy maps: fills the window up to buffer_size chunks. */
static void refill(concur_map_iter *m)
{
    if (m->o.eager)
        return;
    while (m->inflight < m->cap) {
        if (!m->staged) {
            if (m->src_err || m->src_done)
                return;
            build_chunk(m);
            if (!m->staged)
                return; /* source exhausted, or its error recorded */
        }
        size_t before = m->next_chunk;
        int rc = submit_staged(m);
        if (rc) {
            /* The staged items are dropped: the error surfaces at the first of them. */
            m->src_err = rc;
            m->submit_failed = true;
            m->staged = 0;
            return;
        }
        if (m->next_chunk == before)
            return; /* kept staged: the pool is full for now */
    }
}

/* Makes the chunk future @p s->f the one being delivered. */
static void start_delivery(concur_map_iter *m, slot *s)
{
    const void *outs = NULL;
    size_t nok = 0;
    const char *msg = NULL;
    int rc = chunk_result(s->f, m->o.out_size, &outs, &nok, &msg);
    m->cur = s;
    m->cur_outs = outs;
    m->cur_pos = 0;
    m->cur_nok = nok;
    m->cur_err = rc;
    m->cur_msg = msg;
}

/* Unordered: the slot of a finished future taken from the fqueue. */
static slot *find_slot(concur_map_iter *m, concur_future *f)
{
    result_hdr r;
    const unsigned char *o;
    const char *msg;
    if (decode(f, m->o.out_size, &r, &o, &msg) == 0 && r.tag < m->cap && m->slots[r.tag].f == f)
        return &m->slots[r.tag];
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].f == f)
            return &m->slots[i];
    return NULL;
}

CONCUR_API int concur_map_next(concur_map_iter *m, const void **out, size_t *index)
{
    if (!m)
        return CONCUR_EINVAL;
    for (;;) {
        if (m->over) {
            if (m->err && index)
                *index = m->err_index;
            return m->err;
        }
        if (m->cur) {
            slot *s = m->cur;
            if (m->cur_pos < m->cur_nok) {
                if (out)
                    *out = m->cur_outs + m->cur_pos * m->o.out_size;
                if (index)
                    *index = s->base + m->cur_pos;
                m->cur_pos++;
                m->delivered++;
                return 1;
            }
            if (m->cur_err) {
                finish(m, m->cur_err, s->base + m->cur_nok, m->cur_msg);
                continue;
            }
            m->cur = NULL;
            free_slot(m, s);
            m->head++;
        }
        refill(m);
        if (!m->inflight) {
            finish(m, m->src_err, m->next_item, NULL);
            continue;
        }
        double left = concur_remaining(m->deadline);
        slot *s;
        if (!m->o.unordered) {
            s = &m->slots[m->head % m->cap];
            if (concur_future_wait(s->f, left)) {
                finish(m, CONCUR_ETIMEDOUT, s->base, NULL);
                continue;
            }
        } else {
            concur_future *f = NULL;
            int rc = concur_fqueue_get(m->fq, left, &f);
            if (rc == CONCUR_EAGAIN || rc == CONCUR_ETIMEDOUT) {
                finish(m, CONCUR_ETIMEDOUT, m->delivered, NULL);
                continue;
            }
            if (rc) {
                finish(m, rc, m->delivered, NULL);
                continue;
            }
            s = find_slot(m, f);
            concur_future_release(f); /* the slot holds its own reference */
            if (!s) {
                finish(m, CONCUR_EINVAL, m->delivered, "map: unknown chunk future");
                continue;
            }
        }
        start_delivery(m, s);
    }
}

CONCUR_API const char *concur_map_error_message(const concur_map_iter *m)
{
    return m && m->over && m->err ? m->err_msg : NULL;
}

CONCUR_API void concur_map_destroy(concur_map_iter *m)
{
    if (!m)
        return;
    if (m->slots) {
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].f)
                concur_future_cancel(m->slots[i].f);
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].f)
                concur_future_wait(m->slots[i].f, CONCUR_FOREVER);
    }
    concur_fqueue_destroy(m->fq);
    if (m->slots)
        for (size_t i = 0; i < m->cap; i++)
            concur_future_release(m->slots[i].f);
    free(m->slots);
    free(m->freelist);
    free(m->stage);
    free(m->src.arrays);
    free(m->src.sizes);
    free(m->err_msg);
    free(m);
}

/* Eager start: every chunk in one batch submit (array and zip sources). */
static int start_eager(concur_map_iter *m)
{
    size_t nch = m->cap;
    if (!nch)
        return 0;
    concur_future **futs = calloc(nch, sizeof *futs);
    if (!futs)
        return CONCUR_ENOMEM;
    stager st = {0};
    int rc = submit_group(m->pool, m->fn, &m->o, &m->src, m->n, 0, nch, futs, &st);
    stager_free(&st);
    if (rc) {
        free(futs);
        return rc;
    }
    for (size_t c = 0; c < nch; c++) {
        size_t b = 0, e = 0;
        concur_chunk_bounds(m->n, m->o.chunk_size, c, &b, &e);
        m->slots[c] = (slot){.f = futs[c], .base = b, .count = e - b};
    }
    m->inflight = nch;
    m->next_chunk = nch;
    m->next_item = m->n;
    m->src_done = true;
    for (size_t c = 0; m->fq && c < nch && !rc; c++)
        rc = concur_fqueue_put(m->fq, futs[c]);
    free(futs);
    return rc; /* on error the caller destroys the map, which cancels everything */
}

static int start(concur_map_iter **out, concur_pool *p, concur_map_fn fn,
                 const concur_map_opts *opts, source *src, size_t n)
{
    if (!out)
        return CONCUR_EINVAL;
    *out = NULL;
    int rc = check_opts(p, fn, opts);
    if (rc)
        return rc;
    concur_map_iter *m = calloc(1, sizeof *m);
    if (!m)
        return CONCUR_ENOMEM;
    m->pool = p;
    m->fn = fn;
    m->o = *opts;
    m->o.in_size = src->in_size;
    if (!m->o.buffer_size)
        m->o.buffer_size = 1;
    m->src = *src;
    m->n = n;
    m->deadline = opts->timeout > 0 ? concur_deadline(opts->timeout) : -1;
    rc = CONCUR_ENOMEM;
    if (m->o.eager) {
        m->cap = concur_chunk_count(n, m->o.chunk_size);
    } else {
        m->cap = m->o.buffer_size;
        if (m->src.kind != SRC_GEN) {
            size_t nch = concur_chunk_count(n, m->o.chunk_size);
            if (nch < m->cap)
                m->cap = nch ? nch : 1;
        }
    }
    if (m->cap > SIZE_MAX / sizeof(slot))
        goto fail;
    m->slots = calloc(m->cap ? m->cap : 1, sizeof *m->slots);
    if (!m->slots)
        goto fail;
    if (m->o.unordered) {
        if (concur_fqueue_create(&m->fq))
            goto fail;
        if (!m->o.eager) {
            m->freelist = malloc(m->cap * sizeof *m->freelist);
            if (!m->freelist)
                goto fail;
            for (size_t i = 0; i < m->cap; i++)
                m->freelist[i] = m->cap - 1 - i;
            m->nfree = m->cap;
        }
    }
    if (m->o.eager) {
        rc = start_eager(m);
        if (rc)
            goto fail;
    } else {
        refill(m);
        /* A first chunk the pool refused fails the start with the pool's error; the
         * source's own errors surface through next, at their position. */
        if (!m->inflight && m->submit_failed) {
            rc = m->src_err;
            goto fail;
        }
    }
    *out = m;
    return 0;
fail:
    /* The source's copies belong to the caller until the map exists. */
    m->src.arrays = NULL;
    m->src.sizes = NULL;
    concur_map_destroy(m);
    return rc;
}

CONCUR_API int concur_map_start(concur_map_iter **out, concur_pool *p, concur_map_fn fn,
                                const concur_map_opts *opts, const void *items, size_t n)
{
    if (opts && !items && n && opts->in_size)
        return CONCUR_EINVAL;
    source s = {.kind = SRC_ARRAY, .in_size = opts ? opts->in_size : 0, .items = items};
    return start(out, p, fn, opts, &s, n);
}

CONCUR_API int concur_map_start_zip(concur_map_iter **out, concur_pool *p, concur_map_fn fn,
                                    const concur_map_opts *opts, const void *const *arrays,
                                    const size_t *sizes, size_t narrays, size_t n)
{
    if (!out)
        return CONCUR_EINVAL;
    if (narrays && (!arrays || !sizes))
        return CONCUR_EINVAL;
    size_t in_size = 0;
    for (size_t k = 0; k < narrays; k++) {
        if (n && sizes[k] && !arrays[k])
            return CONCUR_EINVAL;
        if (in_size > SIZE_MAX - sizes[k])
            return CONCUR_EINVAL;
        in_size += sizes[k];
    }
    source s = {.kind = SRC_ZIP, .in_size = in_size, .narrays = narrays};
    if (narrays) {
        s.arrays = malloc(narrays * sizeof *s.arrays);
        s.sizes = malloc(narrays * sizeof *s.sizes);
        if (!s.arrays || !s.sizes) {
            free(s.arrays);
            free(s.sizes);
            return CONCUR_ENOMEM;
        }
        memcpy(s.arrays, arrays, narrays * sizeof *s.arrays);
        memcpy(s.sizes, sizes, narrays * sizeof *s.sizes);
    }
    int rc = start(out, p, fn, opts, &s, n);
    if (rc) {
        free(s.arrays);
        free(s.sizes);
    }
    return rc;
}

CONCUR_API int concur_map_start_gen(concur_map_iter **out, concur_pool *p, concur_map_fn fn,
                                    const concur_map_opts *opts, concur_gen_fn gen, void *arg)
{
    if (!gen || (opts && opts->eager))
        return CONCUR_EINVAL;
    source s = {.kind = SRC_GEN, .in_size = opts ? opts->in_size : 0, .gen = gen, .gen_arg = arg};
    return start(out, p, fn, opts, &s, 0);
}
