/*
 * readme_fork.c - the README's fork-call example, as printed there, with what it needs
 * around it: twelve items, each squared in a child process of its own, at most 3 in flight.
 * Exit status: 0 when every item came back squared.
 */
#include <concur.h>
#include <stdio.h>

static int work(concur_task *t, const void *in, size_t len)
{
    int x;
    int rc = CONCUR_TASK_INPUT(t, in, len, &x);
    return rc ? rc : CONCUR_TASK_RETURN_VALUE(t, x * x);
}

int main(void)
{
    int items[12], sum = 0, want = 0;
    size_t nitems = 12;
    for (size_t i = 0; i < nitems; i++) {
        items[i] = (int)i + 1;
        want += items[i] * items[i];
    }
    concur_future *active[3];
    size_t n = 0, next = 0;
    concur_waitfor it;
    concur_waitfor_init(&it, active, &n, 3);             /* at most 3 in flight */
    concur_future *f;
    int rc;
    while ((rc = concur_waitfor_next(&it, CONCUR_FOREVER, &f)) > 0) {
        if (rc == CONCUR_WAITFOR_FUTURE) {               /* finished, out of the array */
            int sq;
            if (CONCUR_FUTURE_GET(f, 0, &sq) == 0)       /* or concur_future_error_message(f) */
                sum += sq;
            concur_future_release(f);
        } else if (next < nitems &&                      /* CONCUR_WAITFOR_MORE */
                   concur_fork_call(&active[n], work, &items[next], sizeof items[next], NULL) == 0) {
            n++;
            next++;
        }
    }
    printf("sum of squares: %d\n", sum);
    return rc == 0 && sum == want ? 0 : 1;
}
