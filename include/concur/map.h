/*
 * concur/map.h - the map family: one function over many items, in chunk tasks on a pool.
 *
 * Items are fixed-size records of in_size bytes (a struct holds several arguments: that is
 * the starmap form); each produces a fixed-size output of out_size bytes. Items are grouped
 * chunk_size per task, and a chunk is one task of the pool, so a map costs one task per
 * chunk, not per item, on every engine (chunks travel as bytes, like any task input).
 *
 * Sources: a caller's array, several arrays zipped (starmap over parallel arrays; the
 * shortest one bounds the map), or a generator the map pulls from lazily.
 *
 * Delivery: an iterator (concur_map_next) in input order, or in completion order with
 * opts.unordered. A lazy map keeps at most buffer_size chunks submitted ahead of the
 * consumer, so memory stays bounded on endless input; an eager map (opts.eager, asyncpal's
 * map_all) submits every chunk at start. An item's error surfaces at that item: every earlier
 * result (in delivery order) is delivered first. opts.timeout bounds the whole iteration.
 *
 * The range form (concur_parallel_for, as TBB's parallel_for and OpenMP's `for`) hands each
 * chunk task an index range of the caller's loop instead of items: the function loops itself
 * and reads and writes the caller's memory in place, so a chunk costs one task and nothing per
 * index. It needs workers that share the caller's memory: thread pools only.
 */
#ifndef CONCUR_MAP_H
#define CONCUR_MAP_H

#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * The per-item function: reads the item at @p in (in_size bytes), writes out_size bytes at
 * @p out. Returns 0, or a negative code (with concur_task_fail() for a message) that stops
 * its chunk at this item. Runs in a worker, with the chunk's task context @p t; it must not
 * call concur_task_return() or concur_task_result_alloc() (the chunk owns the result).
 * Items and outputs are packed back to back, so they may be unaligned: read and write them
 * with memcpy unless in_size/out_size keep the alignment the element type needs.
 */
typedef int (*concur_map_fn)(concur_task *t, const void *in, void *out);

/**
 * A generator: writes the next item (in_size bytes) at @p item and returns 1, returns 0 at
 * the end, or a negative code to end the map with that error. Called only from the thread
 * that calls concur_map_next() (or concur_map_start*()), never concurrently.
 */
typedef int (*concur_gen_fn)(void *arg, void *item);

/** Map options. Start from CONCUR_MAP_OPTS_INIT. */
typedef struct concur_map_opts {
    size_t in_size;     /**< bytes per item (0 is allowed: items carry no data) */
    size_t out_size;    /**< bytes per output (0 allowed) */
    size_t chunk_size;  /**< items per task, >= 1 (0 is CONCUR_EINVAL) */
    size_t buffer_size; /**< lazy maps: chunks in flight ahead of the consumer; 0 acts as 1 */
    bool unordered;     /**< deliver in completion order instead of input order */
    bool eager;         /**< submit every chunk at start (array sources only) */
    double timeout;     /**< seconds for the whole iteration; 0: none */
} concur_map_opts;

#define CONCUR_MAP_OPTS_INIT                                                                \
    {                                                                                       \
        .in_size = 0, .out_size = 0, .chunk_size = 1, .buffer_size = 1, .unordered = false, \
        .eager = false, .timeout = 0                                                        \
    }

/** A running map. Use from one thread at a time. */
typedef struct concur_map_iter concur_map_iter;

/**
 * Starts a map over @p n items of the array @p items (opts->in_size bytes each; the array must
 * stay valid until the map is destroyed). Returns 0, or CONCUR_EINVAL (NULL fn/opts, chunk_size
 * 0, NULL items with n > 0 and in_size > 0), CONCUR_ENOMEM, or the pool's submit error.
 */
CONCUR_API int concur_map_start(concur_map_iter **out, concur_pool *p, concur_map_fn fn,
                                const concur_map_opts *opts, const void *items, size_t n);

/**
 * Starts a starmap over @p narrays parallel arrays: item i is the concatenation of element i
 * of each array, arrays[k] having sizes[k] bytes per element (opts->in_size is ignored: it is
 * the sum of sizes). @p n is the length of the shortest array. Errors as concur_map_start().
 */
CONCUR_API int concur_map_start_zip(concur_map_iter **out, concur_pool *p, concur_map_fn fn,
                                    const concur_map_opts *opts, const void *const *arrays,
                                    const size_t *sizes, size_t narrays, size_t n);

/**
 * Starts a lazy map over a generator. opts->eager is not allowed (CONCUR_EINVAL).
 */
CONCUR_API int concur_map_start_gen(concur_map_iter **out, concur_pool *p, concur_map_fn fn,
                                    const concur_map_opts *opts, concur_gen_fn gen, void *arg);

/**
 * The next output. Returns 1 with *out pointing at out_size bytes (valid until the next call
 * or destroy) and *index the item's position in the input; 0 at the end; a negative code at
 * a failed item (its index in *index; message with concur_map_error_message()), after which
 * the map is over (next keeps returning that error). CONCUR_ETIMEDOUT when opts.timeout
 * expired; CONCUR_ECLOSED if the pool was shut down under a lazy map that still needed it.
 * Either pointer may be NULL.
 */
CONCUR_API int concur_map_next(concur_map_iter *m, const void **out, size_t *index);

/** The message of the error concur_map_next() returned, or NULL. */
CONCUR_API const char *concur_map_error_message(const concur_map_iter *m);

/**
 * Ends the map: chunks not started are cancelled, running ones are awaited, everything is
 * freed. Accepts NULL.
 */
CONCUR_API void concur_map_destroy(concur_map_iter *m);

/**
 * Eager, ordered map into a caller array: out[i] (out_size bytes each) = fn(items[i]).
 * Returns 0 when all items succeeded, or the first failure in input order (its index in
 * *err_index when not NULL; the outputs before it are written, later ones may be written
 * or not). @p opts is required (it holds the sizes); opts->eager and opts->unordered are
 * ignored. opts->timeout bounds the call (CONCUR_ETIMEDOUT at the first item not known to
 * be done); chunks still running then are asked to stop and awaited before it returns.
 * On a thread pool, when @p items and @p out do not overlap, the chunks read the items and
 * write the outputs in place (the range form's path: no copies); otherwise items travel
 * in the chunks' inputs and outputs in their results, as on every engine.
 */
CONCUR_API int concur_map(concur_pool *p, concur_map_fn fn, const concur_map_opts *opts,
                          const void *items, size_t n, void *out, size_t *err_index);

/* ------------------------------------------------------------------------------------ */
/* The range form: a loop over an index range, one task per chunk of indexes. */

/**
 * The loop body of concur_parallel_for(): runs indexes [@p begin, @p end) of one chunk, with
 * the @p arg given to the call, reading and writing the caller's memory directly. Returns 0,
 * or a negative code (with concur_task_fail() for a message; a positive value counts as
 * CONCUR_ETASK) that stops the loop. Runs in a worker of the pool with the chunk's own task
 * context @p t: concur_task_user(), concur_task_worker_name() and concur_task_id() work as
 * in any task, and concur_task_should_stop() becomes true when the loop is abandoned (a
 * failure in an earlier chunk, the call's timeout, the pool's task_timeout or a cancelling
 * shutdown); a long chunk may poll it. Chunks run concurrently and in any order, each at
 * most once; their ranges never overlap. A result set with concur_task_return() is ignored.
 */
typedef int (*concur_range_fn)(concur_task *t, size_t begin, size_t end, void *arg);

/** Bytes of concur_range_error.message, its NUL included. */
#define CONCUR_RANGE_MSG_MAX 1024

/** Where and why concur_parallel_for() stopped. */
typedef struct concur_range_error {
    size_t begin; /**< the chunk the error is about: indexes [begin, end) */
    size_t end;   /**< one past the chunk's last index */
    /** The function's concur_task_fail() message, or the code's text; NUL-terminated,
     *  truncated to fit. */
    char message[CONCUR_RANGE_MSG_MAX];
} concur_range_error;

/**
 * Runs @p fn over the indexes [@p begin, @p end) on the pool, in chunks of @p grain indexes
 * (the last one may be shorter), one task per chunk: fn(t, b, e, arg) for each chunk
 * [b, e). A grain of 0 picks (end - begin) / (4 * max_workers), at least 1.
 *
 * Threads: fn runs only in the pool's workers, never in the calling thread, which blocks
 * until every chunk that started has returned, even on error: fn never runs after the call
 * returned, so @p arg and whatever fn reads and writes need to stay valid only during the
 * call, and everything fn wrote is visible to the caller when it returns. A few chunks are
 * in flight at once (a bounded window), whatever the number of chunks.
 *
 * Errors. The first error stops the loop: chunks after a failed one that have not started
 * are skipped and running ones are asked to stop; chunks before it still run, so the error
 * returned is the one of the lowest failing chunk, the one a serial loop would have met
 * first. When @p err is not NULL it is filled for every error (and left alone on success):
 * the chunk the error is about and its message. Returns 0 when every chunk returned 0, or:
 * - CONCUR_EINVAL: NULL @p p or @p fn, @p begin > @p end (nothing runs);
 * - CONCUR_ENOTSUP: @p p is a process pool, whose workers do not share the caller's memory
 *   (nothing runs; map the range with concur_map() there);
 * - CONCUR_EDEADLK: called from the only worker of a pool with max_workers 1, where the
 *   chunks could never run, as concur_pool_run() (nothing runs). From a worker of a wider
 *   pool the chunks run on the other workers (loops nested as deep as the pool is wide
 *   wait for each other forever, as tasks waiting on their own pool do);
 * - the code fn returned (ETASK for a positive value), at its chunk;
 * - CONCUR_ETIMEDOUT when @p timeout seconds (negative, CONCUR_FOREVER: no limit; 0 does
 *   not wait, as in every call that waits) expired, at the first chunk not done then;
 * - CONCUR_ETASKTIMEOUT for a chunk that ran past the pool's task_timeout (which bounds each
 *   chunk, not the loop), CONCUR_ECANCELED for chunks the pool cancelled (a shutdown with
 *   CONCUR_SHUTDOWN_CANCEL);
 * - a submit error (CONCUR_ECLOSED, the broken code, CONCUR_ENOMEM, CONCUR_EFULL when the
 *   queue_limit leaves no room and nothing of the loop is in flight), at the first chunk
 *   not submitted.
 * An empty range returns 0 at once (after the checks of @p p and @p fn).
 */
CONCUR_API int concur_parallel_for(concur_pool *p, size_t begin, size_t end, size_t grain,
                                   concur_range_fn fn, void *arg, double timeout,
                                   concur_range_error *err);

/* ------------------------------------------------------------------------------------ */
/* Splitting a map into chunk tasks by hand (asyncpal's get_chunks / split_map_task). */

/** Number of chunks of @p chunk_size in @p n items (0 when chunk_size is 0 or n is 0). */
CONCUR_API size_t concur_chunk_count(size_t n, size_t chunk_size);

/**
 * The bounds of chunk @p i: items [*begin, *end). Returns 0 or CONCUR_EINVAL (i out of range,
 * chunk_size 0).
 */
CONCUR_API int concur_chunk_bounds(size_t n, size_t chunk_size, size_t i, size_t *begin,
                                   size_t *end);

/**
 * Submits one task per chunk of the array map (opts->chunk_size items each) and stores the
 * futures in @p futs, which must have room for concur_chunk_count(n, opts->chunk_size)
 * entries (one reference each). All or nothing. Returns the number of futures or a negative
 * error.
 */
CONCUR_API int concur_map_submit_chunks(concur_pool *p, concur_map_fn fn,
                                        const concur_map_opts *opts, const void *items,
                                        size_t n, concur_future **futs);

/**
 * Decodes a finished chunk future: *outs points at the chunk's outputs (count * out_size
 * bytes, valid while the future is held) and *count says how many items succeeded. Returns 0
 * when the whole chunk succeeded; the failing item's error code when the chunk stopped at
 * item *count (its message in *msg when msg is not NULL, valid while the future is held); the
 * future's own error when the task itself failed or was cancelled; CONCUR_EAGAIN when it is
 * unfinished.
 */
CONCUR_API int concur_map_chunk_result(concur_future *f, const void **outs, size_t *count,
                                       const char **msg);

#ifdef __cplusplus
}
#endif
#endif
