/*
 * forms/pool_test.c - concur_pool_test(): a pool's self-test, asyncpal's Pool.test().
 *
 * It builds a one-worker copy of the pool (same engine, same options) and runs the forms a
 * user would: one task through concur_pool_run, and two maps (one argument, and a starmap
 * of pairs) through concur_map, checking every result. It lives with the forms it uses, on
 * top of the pool's public API, so the pool core does not depend on the map family.
 */
#include "core/pool.h"

static int test_three(concur_task *t, const void *in, size_t len)
{
    (void)in;
    (void)len;
    int v = 3;
    return concur_task_return(t, &v, sizeof(v));
}

static int test_double(concur_task *t, const void *in, void *out)
{
    (void)t;
    int x;
    memcpy(&x, in, sizeof(x));
    x *= 2;
    memcpy(out, &x, sizeof(x));
    return 0;
}

static int test_add(concur_task *t, const void *in, void *out)
{
    (void)t;
    int xy[2];
    memcpy(xy, in, sizeof(xy));
    int s = xy[0] + xy[1];
    memcpy(out, &s, sizeof(s));
    return 0;
}

static int test_copy(concur_pool *copy)
{
    concur_future *f = NULL;
    int rc = concur_pool_run(copy, test_three, NULL, 0, CONCUR_FOREVER, &f);
    const void *data = NULL;
    size_t len = 0;
    if (!rc &&
        (concur_future_result(f, &data, &len) || len != sizeof(int) || *(const int *)data != 3))
        rc = CONCUR_ETASK;
    concur_future_release(f);
    if (rc)
        return rc;
    int in[10], out[10], pairs[10][2];
    for (int i = 0; i < 10; i++) {
        in[i] = i;
        pairs[i][0] = i;
        pairs[i][1] = i;
    }
    concur_map_opts mo = CONCUR_MAP_OPTS_INIT;
    mo.in_size = sizeof(int);
    mo.out_size = sizeof(int);
    mo.chunk_size = 3;
    rc = concur_map(copy, test_double, &mo, in, 10, out, NULL);
    for (int i = 0; !rc && i < 10; i++)
        if (out[i] != 2 * i)
            rc = CONCUR_ETASK;
    if (rc)
        return rc;
    mo.in_size = sizeof(pairs[0]);
    rc = concur_map(copy, test_add, &mo, pairs, 10, out, NULL);
    for (int i = 0; !rc && i < 10; i++)
        if (out[i] != 2 * i)
            rc = CONCUR_ETASK;
    return rc;
}

int concur_pool_test(concur_pool *p)
{
    if (!p)
        return CONCUR_EINVAL;
    if (concur_pool_is_closed(p))
        return CONCUR_ECLOSED;
    if (concur_pool_is_broken(p))
        return CONCUR_EBROKEN;
    concur_pool_opts o = *concur__pool_opts(p);
    o.max_workers = 1;
    o.queue_limit = 0;
    concur_pool *copy;
    int rc = concur_pool_create(&copy, &o);
    if (rc)
        return rc;
    rc = test_copy(copy);
    concur_pool_shutdown(copy, 0, CONCUR_FOREVER);
    int broken = concur__pool_broken_code(copy);
    concur_pool_destroy(copy);
    return broken ? broken : rc;
}
