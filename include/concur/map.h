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
 * *err_index when not NULL; the outputs before it are written). @p opts is required (it
 * holds the sizes); opts->eager and opts->unordered are ignored.
 */
CONCUR_API int concur_map(concur_pool *p, concur_map_fn fn, const concur_map_opts *opts,
                          const void *items, size_t n, void *out, size_t *err_index);

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
