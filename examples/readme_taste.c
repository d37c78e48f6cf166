/*
 * readme_taste.c - the README's first library example ("A taste of the library"), as it is
 * printed there: a pool, one task with a value in and a value out, its error path.
 * Exit status: 0 when 10 / 2 came back as 5.
 */
#include <concur.h>
#include <stdio.h>

/* A task: bytes in, bytes out. Arguments travel as one struct. */
struct division { long x, y; };

static int divide(concur_task *t, const void *in, size_t len)
{
    struct division d;
    int rc = CONCUR_TASK_INPUT(t, in, len, &d);       /* CONCUR_ESIZE if not a division */
    if (rc)
        return rc;
    if (d.y == 0)
        return concur_task_fail(t, CONCUR_EINVAL, "division by zero");
    return CONCUR_TASK_RETURN_VALUE(t, d.x / d.y);   /* a long, as bytes */
}

int main(void)
{
    concur_pool *pool;
    concur_pool_opts opts = {.max_workers = 4};   /* zero fields mean "default" */
    if (concur_pool_create(&pool, &opts) < 0)
        return 1;

    concur_future *f;
    int rc = CONCUR_SUBMIT_VALUE(pool, divide, ((struct division){10, 2}), &f);
    if (rc == 0) {
        long q;
        rc = CONCUR_FUTURE_GET(f, 42, &q);            /* wait at most 42 s */
        if (rc == 0)
            printf("10 / 2 = %ld\n", q);
        else
            printf("failed: %s\n", concur_future_error_message(f) ? concur_future_error_message(f)
                                                                  : concur_strerror(rc));
        concur_future_release(f);
    }
    concur_pool_destroy(pool);
    return rc == 0 ? 0 : 1;
}
