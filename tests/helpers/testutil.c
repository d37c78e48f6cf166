/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static atomic_int live_gates;

static void quick_exit_handler(void)
{
    _exit(0);
}

void tu_fini(void)
{
    if (atomic_load(&live_gates) > 0)
        atexit(quick_exit_handler);
}

double tu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tu_sleep(double s)
{
    if (!(s > 0))
        return;
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

void tu_nap(void)
{
    tu_sleep(0.001);
}

/* ---- gates ------------------------------------------------------------------------ */

static void abs_deadline(struct timespec *ts, double timeout)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    double whole = (double)(time_t)timeout;
    ts->tv_sec += (time_t)timeout;
    ts->tv_nsec += (long)((timeout - whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

void tu_gate_init(tu_gate *g)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->open = false;
    g->arrived = 0;
    atomic_fetch_add(&live_gates, 1);
}

void tu_gate_destroy(tu_gate *g)
{
    atomic_fetch_sub(&live_gates, 1);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

void tu_gate_open(tu_gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void tu_gate_arrive(tu_gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->arrived++;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

bool tu_gate_wait_open(tu_gate *g, double timeout)
{
    struct timespec dl;
    abs_deadline(&dl, timeout);
    pthread_mutex_lock(&g->mu);
    int rc = 0;
    while (!g->open && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &dl);
    bool open = g->open;
    pthread_mutex_unlock(&g->mu);
    return open;
}

void tu_gate_pass(tu_gate *g)
{
    tu_gate_arrive(g);
    tu_gate_wait_open(g, TU_SAFETY);
}

bool tu_gate_await(tu_gate *g, int n, double timeout)
{
    struct timespec dl;
    abs_deadline(&dl, timeout);
    pthread_mutex_lock(&g->mu);
    int rc = 0;
    while (g->arrived < n && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &dl);
    bool ok = g->arrived >= n;
    pthread_mutex_unlock(&g->mu);
    return ok;
}

bool tu_gate_is_open(tu_gate *g)
{
    pthread_mutex_lock(&g->mu);
    bool open = g->open;
    pthread_mutex_unlock(&g->mu);
    return open;
}

int tu_gate_arrivals(tu_gate *g)
{
    pthread_mutex_lock(&g->mu);
    int n = g->arrived;
    pthread_mutex_unlock(&g->mu);
    return n;
}

/* ---- inputs and tasks ---------------------------------------------------------------- */

void *tu_in_ptr(const void *in, size_t len)
{
    void *p = NULL;
    if (in && len == sizeof p)
        memcpy(&p, in, sizeof p);
    return p;
}

int tu_task_gate(concur_task *t, const void *in, size_t len)
{
    (void)t;
    tu_gate *g = tu_in_ptr(in, len);
    if (!g)
        return -EINVAL;
    tu_gate_pass(g);
    return 0;
}

int tu_task_echo(concur_task *t, const void *in, size_t len)
{
    return concur_task_return(t, in, len);
}

int tu_task_noop(concur_task *t, const void *in, size_t len)
{
    (void)t;
    (void)in;
    (void)len;
    return 0;
}

int tu_task_count(concur_task *t, const void *in, size_t len)
{
    (void)t;
    atomic_int *c = tu_in_ptr(in, len);
    if (!c)
        return -EINVAL;
    atomic_fetch_add(c, 1);
    return 0;
}

int tu_task_sleep(concur_task *t, const void *in, size_t len)
{
    (void)t;
    double s;
    if (len != sizeof s)
        return -EINVAL;
    memcpy(&s, in, sizeof s);
    tu_sleep(s);
    return 0;
}

/* ---- pools --------------------------------------------------------------------------- */

concur_pool *tu_pool(int max_workers)
{
    concur_pool_opts o = {0};
    o.max_workers = max_workers;
    return tu_pool_opts(&o);
}

concur_pool *tu_pool_opts(const concur_pool_opts *opts)
{
    concur_pool *p = NULL;
    int rc = concur_pool_create(&p, opts);
    cr_assert_eq(rc, 0, "concur_pool_create: %s", concur_strerror(rc));
    cr_assert_not_null(p);
    return p;
}

concur_future *tu_submit(concur_pool *p, concur_fn fn, const void *in, size_t len)
{
    concur_future *f = NULL;
    int rc = concur_pool_submit(p, fn, in, len, &f);
    cr_assert_eq(rc, 0, "concur_pool_submit: %s (%s)", concur_err_name(rc), concur_strerror(rc));
    cr_assert_not_null(f);
    return f;
}

concur_future *tu_submit_gate(concur_pool *p, tu_gate *g)
{
    return tu_submit(p, tu_task_gate, TU_PTR_IN(g));
}

concur_pool_counts tu_counts(concur_pool *p)
{
    concur_pool_counts c;
    memset(&c, 0xab, sizeof c);
    concur_pool_counts_get(p, &c);
    return c;
}
