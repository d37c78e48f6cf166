/*
 * map.c - one function over many items: the map family and the split helpers.
 *
 * add(x, y) over x = y = 0..99, computed on a pool of 4 worker threads in every form the
 * map family offers, each checked against the serial result:
 *   - lazy starmap over two parallel arrays (concur_map_start_zip), chunks of 25;
 *   - concur_map: eager and ordered, straight into an output array;
 *   - the range form (concur_parallel_for): the function loops over a range of indexes of
 *     the arrays itself, reading and writing them in place;
 *   - unordered delivery (completion order);
 *   - eager iteration (asyncpal's map_all / starmap_all);
 *   - a lazy map pulling its items from a generator, with a bounded buffer;
 *   - the split helpers: one future per chunk, then concur_wait_all, concur_collect_all,
 *     concur_map_chunk_result and concur_as_done;
 *   - an item that fails: its error arrives at that item, after every earlier result.
 *
 * Exit status: 0 when every form agrees with the serial result, 1 otherwise.
 */
#include <concur.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 100
#define CHUNK 25

/* An item of the starmap: the arguments of one call. Items are bytes of a fixed size, so
 * several arguments are one struct (or one element of each of several arrays, zipped). */
struct pair {
    int x, y;
};

static int add(int x, int y)
{
    return x + y;
}

/* The per-item function: in = one struct pair (in_size bytes), out = one int. */
static int add_item(concur_task *t, const void *in, void *out)
{
    struct pair p;
    (void)t;
    memcpy(&p, in, sizeof p); /* item bytes may not be aligned for the struct */
    int r = add(p.x, p.y);
    memcpy(out, &r, sizeof r);
    return 0;
}

/* The same, failing at x == 42: the chunk stops there with an error and a message. */
static int add_item_fail_42(concur_task *t, const void *in, void *out)
{
    struct pair p;
    memcpy(&p, in, sizeof p);
    if (p.x == 42)
        return concur_task_fail(t, CONCUR_EINVAL, "refusing to add %d and %d", p.x, p.y);
    return add_item(t, in, out);
}

/* A generator: hands out (i, i) for i in 0..N-1, then ends. */
static int gen_pairs(void *arg, void *item)
{
    int *next = arg;
    if (*next >= N)
        return 0;
    struct pair p = {*next, *next};
    memcpy(item, &p, sizeof p);
    (*next)++;
    return 1;
}

static int xs[N], ys[N], expected[N];
static struct pair pairs[N];

/* Reports a failed check and returns -1. */
static int fail(const char *what, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "map: %s: ", what);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -1;
}

/*
 * Drains a map and checks every output against the serial result: in input order when
 * @ordered, else each index exactly once. Destroys the map.
 */
static int drain(concur_map_iter *m, bool ordered, const char *what)
{
    bool seen[N] = {false};
    size_t count = 0, index;
    const void *out;
    int rc, v;

    while ((rc = concur_map_next(m, &out, &index)) == 1) {
        memcpy(&v, out, sizeof v);
        if (index >= N || seen[index] || (ordered && index != count)) {
            concur_map_destroy(m);
            return fail(what, "unexpected index %zu after %zu outputs", index, count);
        }
        if (v != expected[index]) {
            concur_map_destroy(m);
            return fail(what, "item %zu gave %d", index, v);
        }
        seen[index] = true;
        count++;
    }
    concur_map_destroy(m);
    if (rc < 0) {
        fprintf(stderr, "map: %s: %s\n", what, concur_strerror(rc));
        return -1;
    }
    if (count != N)
        return fail(what, "%zu outputs instead of %d", count, N);
    printf("%-34s %zu results ok\n", what, count);
    return 0;
}

static int lazy_starmap(concur_pool *pool)
{
    /* Item i is xs[i] followed by ys[i]: the bytes of a struct pair. */
    const void *arrays[] = {xs, ys};
    const size_t sizes[] = {sizeof xs[0], sizeof ys[0]};
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.out_size = sizeof(int);
    o.chunk_size = CHUNK; /* 4 tasks of 25 items instead of 100 tasks of 1 */
    concur_map_iter *m;
    int rc = concur_map_start_zip(&m, pool, add_item, &o, arrays, sizes, 2, N);
    if (rc < 0)
        return fail("starmap (zip)", "start failed: %s", concur_strerror(rc));
    return drain(m, true, "lazy starmap over two arrays");
}

static int map_into_array(concur_pool *pool)
{
    int out[N];
    size_t bad = 0;
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = sizeof(struct pair);
    o.out_size = sizeof(int);
    o.chunk_size = CHUNK;
    int rc = concur_map(pool, add_item, &o, pairs, N, out, &bad);
    if (rc < 0) {
        fprintf(stderr, "map: concur_map: item %zu: %s\n", bad, concur_strerror(rc));
        return -1;
    }
    for (int i = 0; i < N; i++)
        if (out[i] != expected[i])
            return fail("concur_map", "item %d gave %d", i, out[i]);
    printf("%-34s %d results ok\n", "concur_map into an array", N);
    return 0;
}

/* The range form's loop body: indexes [begin, end) of xs and ys into the output array. */
static int add_range(concur_task *t, size_t begin, size_t end, void *arg)
{
    int *out = arg;
    (void)t;
    for (size_t i = begin; i < end; i++)
        out[i] = add(xs[i], ys[i]);
    return 0;
}

static int parallel_for(concur_pool *pool)
{
    int out[N];
    concur_range_error err;
    int rc = concur_parallel_for(pool, 0, N, CHUNK, add_range, out, CONCUR_FOREVER, &err);
    if (rc < 0)
        return fail("concur_parallel_for", "[%zu, %zu): %s", err.begin, err.end, err.message);
    for (int i = 0; i < N; i++)
        if (out[i] != expected[i])
            return fail("concur_parallel_for", "index %d gave %d", i, out[i]);
    printf("%-34s %d results ok\n", "concur_parallel_for (range form)", N);
    return 0;
}

static int iterate(concur_pool *pool, bool unordered, bool eager, const char *what)
{
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = sizeof(struct pair);
    o.out_size = sizeof(int);
    o.chunk_size = CHUNK;
    o.unordered = unordered;
    o.eager = eager;
    o.timeout = 42; /* for the whole iteration */
    concur_map_iter *m;
    int rc = concur_map_start(&m, pool, add_item, &o, pairs, N);
    if (rc < 0)
        return fail(what, "start failed: %s", concur_strerror(rc));
    return drain(m, !unordered, what);
}

static int from_generator(concur_pool *pool)
{
    int next = 0;
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = sizeof(struct pair);
    o.out_size = sizeof(int);
    o.chunk_size = 10;
    o.buffer_size = 2; /* at most 2 chunks (20 items) submitted ahead of the consumer */
    concur_map_iter *m;
    int rc = concur_map_start_gen(&m, pool, add_item, &o, gen_pairs, &next);
    if (rc < 0)
        return fail("generator", "start failed: %s", concur_strerror(rc));
    return drain(m, true, "lazy map over a generator");
}

static int split(concur_pool *pool)
{
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = sizeof(struct pair);
    o.out_size = sizeof(int);
    o.chunk_size = CHUNK;
    size_t nchunks = concur_chunk_count(N, CHUNK); /* 4 */
    concur_future **futs = calloc(nchunks, sizeof *futs);
    int result[N], placed[N];
    size_t total = 0, failed_at = 0;
    concur_as_done *it = NULL;
    int status = -1;

    if (!futs)
        return fail("split", "out of memory");

    /* One task per chunk; one future each, ours to release. */
    int rc = concur_map_submit_chunks(pool, add_item, &o, pairs, N, futs);
    if (rc < 0 || (size_t)rc != nchunks) {
        fprintf(stderr, "map: submit_chunks: %s\n", rc < 0 ? concur_strerror(rc) : "count");
        if (rc > 0)
            for (int i = 0; i < rc; i++)
                concur_future_release(futs[i]);
        free(futs);
        return -1;
    }

    /* Block until every chunk is done (42 s at most for all of them). */
    rc = concur_wait_all(futs, nchunks, 42);
    if (rc < 0) {
        fprintf(stderr, "map: wait_all: %s\n", concur_strerror(rc));
        goto out;
    }
    /* Or check that all succeeded in one call: the first failure in input order. */
    rc = concur_collect_all(futs, nchunks, 42, &failed_at);
    if (rc < 0) {
        fprintf(stderr, "map: chunk %zu: %s\n", failed_at, concur_strerror(rc));
        goto out;
    }

    /* Concatenate the chunks' outputs in chunk order: that is the map's result. */
    for (size_t c = 0; c < nchunks; c++) {
        const void *outs;
        size_t count;
        const char *msg = NULL;
        rc = concur_map_chunk_result(futs[c], &outs, &count, &msg);
        if (rc < 0 || total + count > N) {
            fprintf(stderr, "map: chunk %zu: %s\n", c, msg ? msg : concur_strerror(rc));
            goto out;
        }
        memcpy(result + total, outs, count * sizeof(int));
        total += count;
    }
    if (total != N) {
        fail("split", "%zu results instead of %d", total, N);
        goto out;
    }
    for (int i = 0; i < N; i++)
        if (result[i] != expected[i]) {
            fail("split", "item %d gave %d", i, result[i]);
            goto out;
        }
    printf("%-34s %d results ok\n", "split: submit_chunks + wait_all", N);

    /* The same chunks taken as they finish (completion order by default): each chunk's
     * bounds say where its outputs go. The futures are borrowed from the array. */
    rc = concur_as_done_create(&it, futs, nchunks, false, 42);
    if (rc < 0) {
        fprintf(stderr, "map: as_done_create: %s\n", concur_strerror(rc));
        goto out;
    }
    memset(placed, 0, sizeof placed);
    concur_future *f;
    size_t c, begin, end, done = 0;
    while ((rc = concur_as_done_next(it, &f, &c)) == 1) {
        const void *outs;
        size_t count;
        if (concur_map_chunk_result(f, &outs, &count, NULL) < 0 ||
            concur_chunk_bounds(N, CHUNK, c, &begin, &end) < 0 || count != end - begin) {
            fail("as_done", "chunk %zu is not complete", c);
            goto out;
        }
        memcpy(placed + begin, outs, count * sizeof(int));
        done++;
    }
    if (rc < 0 || done != nchunks) {
        fprintf(stderr, "map: as_done_next: %s\n", rc < 0 ? concur_strerror(rc) : "count");
        goto out;
    }
    if (memcmp(placed, expected, sizeof placed) != 0) {
        fail("as_done", "outputs differ from the serial map");
        goto out;
    }
    printf("%-34s %d results ok\n", "split: as_done", N);
    status = 0;
out:
    concur_as_done_destroy(it);
    for (size_t i = 0; i < nchunks; i++)
        concur_future_release(futs[i]);
    free(futs);
    return status;
}

static int failing_item(concur_pool *pool)
{
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = sizeof(struct pair);
    o.out_size = sizeof(int);
    o.chunk_size = CHUNK;
    concur_map_iter *m;
    int rc = concur_map_start(&m, pool, add_item_fail_42, &o, pairs, N);
    if (rc < 0)
        return fail("failing item", "start failed: %s", concur_strerror(rc));

    /* Items 0..41 arrive first, in order; then the error, with the failing item's index. */
    size_t index = (size_t)-1, count = 0;
    const void *out;
    while ((rc = concur_map_next(m, &out, &index)) == 1)
        if (index != count++)
            break;
    const char *msg = concur_map_error_message(m);
    int ok = rc == CONCUR_EINVAL && index == 42 && count == 42 && msg != NULL;
    if (ok)
        printf("%-34s %zu results, then item %zu: %s\n", "a failing item", count, index, msg);
    else
        fprintf(stderr, "map: failing item: rc %s, index %zu, %zu results before it\n",
                concur_err_name(rc), index, count);
    /* Once failed, the map is over: next keeps returning the same error. */
    if (ok && concur_map_next(m, &out, &index) != CONCUR_EINVAL) {
        fprintf(stderr, "map: failing item: the error did not stick\n");
        ok = 0;
    }
    concur_map_destroy(m);
    return ok ? 0 : -1;
}

int main(void)
{
    /* The serial result: what every parallel form must reproduce. */
    for (int i = 0; i < N; i++) {
        xs[i] = ys[i] = i;
        pairs[i] = (struct pair){i, i};
        expected[i] = add(i, i);
    }

    concur_pool *pool;
    concur_pool_opts opts = {.max_workers = 4, .name = "map"};
    int rc = concur_pool_create(&pool, &opts);
    if (rc < 0) {
        fprintf(stderr, "map: pool_create: %s\n", concur_strerror(rc));
        return 1;
    }

    int status = 0;
    if (lazy_starmap(pool) < 0 || map_into_array(pool) < 0 || parallel_for(pool) < 0 ||
        iterate(pool, false, false, "lazy map, chunks of 25") < 0 ||
        iterate(pool, true, false, "unordered map") < 0 ||
        iterate(pool, false, true, "eager map (map_all)") < 0 ||
        iterate(pool, true, true, "eager unordered map") < 0 || from_generator(pool) < 0 ||
        split(pool) < 0 || failing_item(pool) < 0)
        status = 1;

    concur_pool_destroy(pool);
    return status;
}
