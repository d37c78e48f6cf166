/*
 * test_coro.c - the coroutine engine and concur/coro.h: suspension and its order, fds,
 * cancellation and task_timeout at every kind of suspension, many coroutines, wake-ups
 * from other threads, several loop threads, the stall counter, the stack guard.
 */
#include "testutil.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <fenv.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sys/os.h"

TestSuite(coro, .timeout = TU_TIMEOUT);

#ifdef TU_CO_EPOLL
/* test_coro_epoll: the same suite with the loops' rings off, so that concur_co_read and
 * concur_co_write take the epoll way (as without liburing, or where io_uring is refused). */
__attribute__((constructor)) static void rings_off(void)
{
    concur__ring_off = true;
}
#endif

/* Whether a loop gets a ring here (liburing built in, io_uring allowed, not switched off). */
static bool rings_on(void)
{
    concur__loop l;
    if (concur__loop_init(&l))
        return false;
    bool on = concur__loop_ring(&l, false) == 0;
    concur__loop_fini(&l);
    return on;
}

static concur_pool *co_pool(int workers, double task_timeout)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_COROUTINES,
                          .max_workers = workers,
                          .task_timeout = task_timeout,
                          .name = "co"};
    return tu_pool_opts(&o);
}

static void wait_ok(concur_future *f)
{
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
}

static void socket_pair(int sv[2])
{
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* ---------------------------------------------------------------- basics */

Test(coro, engine_defaults_and_outside_a_coroutine)
{
    concur_pool *p = co_pool(0, 0);
    cr_assert_eq(concur_pool_max_workers(p), 1, "one loop thread by default");
    concur_pool_destroy(p);

    cr_assert_not(concur_co_in_coroutine());
    cr_assert_null(concur_co_task());
    double t0 = tu_now();
    cr_assert_eq(concur_co_sleep(0.05), 0);
    cr_assert_geq(tu_now() - t0, 0.05 - TU_EPS);
    cr_assert_eq(concur_co_yield(), 0);
    int sv[2];
    socket_pair(sv);
    t0 = tu_now();
    cr_assert_eq(concur_co_wait_fd(sv[0], CONCUR_CO_READ, 0.05), CONCUR_ETIMEDOUT);
    cr_assert_geq(tu_now() - t0, 0.05 - TU_EPS);
    cr_assert_eq(concur_co_wait_fd(sv[1], CONCUR_CO_WRITE, 0), CONCUR_CO_WRITE);
    cr_assert_eq(concur_co_wait_fd(sv[0], 0, 0), CONCUR_EINVAL);
    cr_assert_eq(concur_co_sleep(0.0 / 0.0), CONCUR_EINVAL);
    close(sv[0]);
    close(sv[1]);
}

Test(coro, bad_options)
{
    concur_pool *p = NULL;
    concur_pool_opts o = {.engine = CONCUR_ENGINE_COROUTINES, .worker_cpu_limit = 1};
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o = (concur_pool_opts){.engine = CONCUR_ENGINE_COROUTINES,
                           .coroutine_stack_size = ((size_t)1 << 30) + 1};
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o = (concur_pool_opts){.engine = CONCUR_ENGINE_THREADS, .coroutine_stack_size = 65536};
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o = (concur_pool_opts){.engine = CONCUR_ENGINE_THREADS, .coroutine_shared_stack = true};
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o = (concur_pool_opts){.engine = CONCUR_ENGINE_PROCESSES, .coroutine_shared_stack = true};
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o = (concur_pool_opts){.engine = CONCUR_ENGINE_THREADS, .coroutine_io_poll = true};
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
    o = (concur_pool_opts){.engine = CONCUR_ENGINE_PROCESSES, .coroutine_io_poll = true};
    cr_assert_eq(concur_pool_create(&p, &o), CONCUR_EINVAL);
}

static int task_identity(concur_task *t, const void *in, size_t len)
{
    (void)in, (void)len;
    bool ok = concur_co_in_coroutine() && concur_co_task() == t &&
              strstr(concur_task_worker_name(t), "-coroutine-worker-") != NULL;
    return concur_task_return(t, &ok, sizeof(ok));
}

Test(coro, runs_tasks_as_coroutines)
{
    concur_pool *p = co_pool(0, 0);
    concur_future *f = tu_submit(p, task_identity, NULL, 0);
    const void *d;
    size_t n;
    cr_assert_eq(concur_future_collect(f, TU_SAFETY, &d, &n), 0);
    cr_assert_eq(n, sizeof(bool));
    cr_assert(*(const bool *)d, "in a coroutine, with its own task context and worker name");
    concur_future_release(f);
    concur_pool_destroy(p);
}

/* ---------------------------------------------------------------- order */

static _Atomic int g_seq;
static int g_order[8];

typedef struct order_in {
    int i;
    double t0;
} order_in;

static int task_sleep_then_note(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)len;
    const order_in *o = in;
    /* Until a common deadline, however late each one starts. */
    if (concur_co_sleep(o->t0 + 0.1 * (5 - o->i) - tu_now()) != 0)
        return CONCUR_ETASK;
    int i = o->i;
    g_order[atomic_fetch_add(&g_seq, 1)] = i;
    return 0;
}

Test(coro, sleeps_end_in_deadline_order_and_overlap)
{
    concur_pool *p = co_pool(0, 0);
    concur_future *f[5];
    double t0 = tu_now();
    order_in in[5];
    for (int i = 0; i < 5; i++) {
        in[i] = (order_in){i, t0};
        f[i] = tu_submit(p, task_sleep_then_note, &in[i], sizeof(in[i]));
    }
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(concur_future_collect(f[i], TU_SAFETY, NULL, NULL), 0);
        concur_future_release(f[i]);
    }
    double took = tu_now() - t0;
    for (int k = 0; k < 5; k++)
        cr_assert_eq(g_order[k], 4 - k, "position %d: task %d", k, g_order[k]);
    /* One loop thread, sleeping together: about 0.5 s, not the 1.5 s of the sum. */
    cr_assert_geq(took, 0.5 - TU_EPS);
    cr_assert_lt(took, TU_TSAN ? 3.0 : 1.4);
    concur_pool_destroy(p);
}

static char g_log[64];
static _Atomic int g_logn;

static int task_yield_log(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)len;
    char c = *(const char *)in;
    for (int i = 0; i < 4; i++) {
        g_log[atomic_fetch_add(&g_logn, 1)] = c;
        if (concur_co_yield() != 0)
            return CONCUR_ETASK;
    }
    return 0;
}

Test(coro, yield_interleaves)
{
    concur_pool *p = co_pool(1, 0);
    concur_future *f[2];
    const concur_input ins[2] = {{"A", 1}, {"B", 1}};
    cr_assert_eq(concur_pool_submit_batch(p, task_yield_log, ins, 2, f), 0);
    wait_ok(f[0]);
    wait_ok(f[1]);
    g_log[atomic_load(&g_logn)] = '\0';
    /* The loop takes B from the queue after A's first pass (a task that blocks its thread
     * from the start must not hold tasks another worker could run); from then on each
     * yield hands over to the other. */
    cr_assert_str_eq(g_log, "AABABABB");
    concur_future_release(f[0]);
    concur_future_release(f[1]);
    concur_pool_destroy(p);
}

/* Each coroutine keeps its own floating-point control state (rounding mode: the x87 control
 * word and MXCSR are callee-saved, so a switch saves and restores them): a task rounds
 * the way it asked to across yields to a task that asked otherwise, and a new task starts
 * with the loop thread's default. */
static _Atomic int g_round_bad;

static int task_rounding(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)len;
    int mode = *(const char *)in == 'U' ? FE_UPWARD : FE_DOWNWARD;
    if (fegetround() != FE_TONEAREST || fesetround(mode) != 0)
        atomic_fetch_add(&g_round_bad, 1);
    for (int i = 0; i < 4; i++) {
        if (concur_co_yield() != 0)
            return CONCUR_ETASK;
        volatile double one = 1.0, three = 3.0;
        double third = one / three; /* SSE: rounded by MXCSR */
        volatile double back = third * three;
        bool up = back >= 1.0 && third > 0.333333333333333314829616256247390992939472198486328125;
        if (fegetround() != mode || up != (mode == FE_UPWARD))
            atomic_fetch_add(&g_round_bad, 1);
    }
    return 0;
}

Test(coro, each_coroutine_keeps_its_rounding_mode)
{
    concur_pool *p = co_pool(1, 0);
    concur_future *f[3];
    const concur_input ins[2] = {{"U", 1}, {"D", 1}};
    cr_assert_eq(concur_pool_submit_batch(p, task_rounding, ins, 2, f), 0);
    wait_ok(f[0]);
    wait_ok(f[1]);
    cr_assert_eq(atomic_load(&g_round_bad), 0);
    /* The same loop thread, after both: a new task starts rounding to nearest */
    cr_assert_eq(concur_pool_submit(p, task_rounding, "U", 1, &f[2]), 0);
    wait_ok(f[2]);
    cr_assert_eq(atomic_load(&g_round_bad), 0);
    for (int i = 0; i < 3; i++)
        concur_future_release(f[i]);
    concur_pool_destroy(p);
}

/* ---------------------------------------------------------------- fds */

typedef struct fd_job {
    int fd;
    int peer; /* the socket pair's other end, where a task needs it */
    int rc;
    double waited;
} fd_job;

static int task_wait_readable(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)len;
    fd_job *j = tu_in_ptr(in, len);
    double t0 = tu_now();
    j->rc = concur_co_wait_fd(j->fd, CONCUR_CO_READ, 0.1);
    j->waited = tu_now() - t0;
    return 0;
}

static int task_write_later(concur_task *t, const void *in, size_t len)
{
    (void)t;
    fd_job *j = tu_in_ptr(in, len);
    j->rc = concur_co_sleep(0.03);
    if (j->rc == 0 && write(j->fd, "x", 1) != 1)
        j->rc = -errno;
    return 0;
}

Test(coro, wait_fd_times_out_then_sees_data)
{
    int sv[2];
    socket_pair(sv);
    concur_pool *p = co_pool(1, 0);
    fd_job a = {.fd = sv[0]};
    concur_future *f = tu_submit(p, task_wait_readable, TU_PTR_IN(&a));
    wait_ok(f);
    concur_future_release(f);
    cr_assert_eq(a.rc, CONCUR_ETIMEDOUT);
    cr_assert_geq(a.waited, 0.1 - TU_EPS);

    fd_job w = {.fd = sv[1]}, r = {.fd = sv[0]};
    concur_future *fr = tu_submit(p, task_wait_readable, TU_PTR_IN(&r));
    concur_future *fw = tu_submit(p, task_write_later, TU_PTR_IN(&w));
    wait_ok(fr);
    wait_ok(fw);
    cr_assert_eq(w.rc, 0);
    cr_assert_eq(r.rc, CONCUR_CO_READ, "got %d", r.rc);
    cr_assert_lt(r.waited, 0.1, "woken by the data, not the timeout");
    concur_future_release(fr);
    concur_future_release(fw);
    concur_pool_destroy(p);
    close(sv[0]);
    close(sv[1]);
}

/* The engine keeps an fd's epoll registration between waits (one shot, re-armed). An fd
 * number closed and given to a new file must still be watched (the old file open elsewhere,
 * so its disabled registration lingers), and an event on the old file must wake no one. */
static int task_fd_reuse(concur_task *t, const void *in, size_t len)
{
    (void)t;
    fd_job *j = tu_in_ptr(in, len);
    int a[2], b[2], keep;
    socket_pair(a);
    socket_pair(b);
    j->rc = -1000;
    if (write(a[1], "x", 1) != 1 || concur_co_wait_fd(a[0], CONCUR_CO_READ, TU_SAFETY) !=
                                        CONCUR_CO_READ)
        return 0;
    int num = a[0];
    if ((keep = dup(a[0])) < 0 || dup2(b[0], num) != num) /* num: now the new file */
        return 0;
    close(b[0]);
    j->rc = -2000;
    if (write(b[1], "y", 1) != 1 || concur_co_wait_fd(num, CONCUR_CO_READ, TU_SAFETY) !=
                                        CONCUR_CO_READ)
        return 0;
    char c;
    j->rc = -3000;
    if (read(num, &c, 1) != 1 || c != 'y' || write(a[1], "z", 1) != 1)
        return 0;
    j->rc = concur_co_wait_fd(num, CONCUR_CO_READ, 0.05); /* the old file's byte: not this fd */
    close(num);
    close(keep);
    close(a[1]);
    close(b[1]);
    return 0;
}

static int task_wait_long(concur_task *t, const void *in, size_t len)
{
    (void)t;
    fd_job *j = tu_in_ptr(in, len);
    j->rc = concur_co_wait_fd(j->fd, CONCUR_CO_READ, TU_SAFETY);
    return 0;
}

/* Runs while task_wait_long waits on the same fd: gets -EEXIST, then writes its peer. */
static int task_second_waiter(concur_task *t, const void *in, size_t len)
{
    (void)t;
    fd_job *j = tu_in_ptr(in, len);
    j->rc = concur_co_wait_fd(j->fd, CONCUR_CO_READ, TU_SAFETY);
    if (write(j->peer, "x", 1) != 1)
        j->rc = -1000;
    return 0;
}

Test(coro, fd_registrations_survive_reuse_and_one_waiter_per_fd)
{
    concur_pool *p = co_pool(1, 0);
    fd_job r = {0};
    concur_future *f = tu_submit(p, task_fd_reuse, TU_PTR_IN(&r));
    wait_ok(f);
    concur_future_release(f);
    cr_assert_eq(r.rc, CONCUR_ETIMEDOUT, "got %d", r.rc);

    int sv[2];
    socket_pair(sv);
    fd_job first = {.fd = sv[0]}, second = {.fd = sv[0], .peer = sv[1]};
    concur_future *ff = tu_submit(p, task_wait_long, TU_PTR_IN(&first));
    concur_future *fs = tu_submit(p, task_second_waiter, TU_PTR_IN(&second));
    wait_ok(ff);
    wait_ok(fs);
    cr_assert_eq(second.rc, -EEXIST, "got %d", second.rc);
    cr_assert_eq(first.rc, CONCUR_CO_READ, "got %d", first.rc);
    concur_future_release(ff);
    concur_future_release(fs);
    concur_pool_destroy(p);
    close(sv[0]);
    close(sv[1]);
}

enum { BULK = 1 << 20 };

typedef struct bulk_job {
    int fd;
    ssize_t rc;
    uint64_t sum;
} bulk_job;

static int task_bulk_write(concur_task *t, const void *in, size_t len)
{
    (void)t;
    bulk_job *j = tu_in_ptr(in, len);
    unsigned char *b = malloc(BULK);
    if (!b)
        return CONCUR_ENOMEM;
    for (size_t i = 0; i < BULK; i++) {
        b[i] = (unsigned char)(i * 7 + 3);
        j->sum += b[i];
    }
    j->rc = concur_co_write(j->fd, b, BULK, TU_SAFETY);
    free(b);
    shutdown(j->fd, SHUT_WR);
    return 0;
}

static int task_bulk_read(concur_task *t, const void *in, size_t len)
{
    (void)t;
    bulk_job *j = tu_in_ptr(in, len);
    unsigned char b[4096];
    size_t total = 0;
    for (;;) {
        ssize_t n = concur_co_read(j->fd, b, sizeof(b), TU_SAFETY);
        if (n <= 0) {
            j->rc = n < 0 ? n : (ssize_t)total;
            return 0;
        }
        for (ssize_t i = 0; i < n; i++)
            j->sum += b[i];
        total += (size_t)n;
    }
}

Test(coro, read_and_write_wait_on_eagain)
{
    int sv[2];
    socket_pair(sv);
    concur_pool *p = co_pool(1, 0);
    bulk_job w = {.fd = sv[0]}, r = {.fd = sv[1]};
    /* The writer first: it fills the socket buffer (1 MiB is far more than it holds) and
     * must wait for the reader on the same loop thread. */
    concur_future *fw = tu_submit(p, task_bulk_write, TU_PTR_IN(&w));
    concur_future *fr = tu_submit(p, task_bulk_read, TU_PTR_IN(&r));
    wait_ok(fw);
    wait_ok(fr);
    cr_assert_eq(w.rc, BULK);
    cr_assert_eq(r.rc, BULK);
    cr_assert_eq(r.sum, w.sum);
    concur_future_release(fw);
    concur_future_release(fr);
    concur_pool_destroy(p);
    close(sv[0]);
    close(sv[1]);
}

typedef struct rt_job {
    int fd, peer;
    ssize_t first, second;
    char got[8];
} rt_job;

/* A read that times out, then a read of what the peer wrote after that. */
static int task_read_timeout(concur_task *t, const void *in, size_t len)
{
    (void)t;
    rt_job *j = tu_in_ptr(in, len);
    char scratch[8]; /* a stale read into it would leave got empty */
    j->first = concur_co_read(j->fd, scratch, sizeof(scratch), 0.05);
    if (write(j->peer, "abc", 3) != 3)
        return CONCUR_EIO;
    j->second = concur_co_read(j->fd, j->got, sizeof(j->got), TU_SAFETY);
    return 0;
}

Test(coro, a_read_that_timed_out_took_nothing)
{
    int sv[2];
    socket_pair(sv);
    concur_pool *p = co_pool(1, 0);
    rt_job j = {.fd = sv[0], .peer = sv[1]};
    concur_future *f = tu_submit(p, task_read_timeout, TU_PTR_IN(&j));
    wait_ok(f);
    cr_assert_eq(j.first, CONCUR_ETIMEDOUT, "%zd", j.first);
    /* What came after the timeout went to the next read, not to the one that timed out. */
    cr_assert_eq(j.second, 3, "%zd", j.second);
    cr_assert_eq(memcmp(j.got, "abc", 3), 0);
    concur_future_release(f);
    concur_pool_destroy(p);
    close(sv[0]);
    close(sv[1]);
}

static int task_read_blocking(concur_task *t, const void *in, size_t len)
{
    (void)t;
    rt_job *j = tu_in_ptr(in, len);
    j->first = concur_co_read(j->fd, j->got, sizeof(j->got), TU_SAFETY);
    return 0;
}

static int task_write_blocking(concur_task *t, const void *in, size_t len)
{
    (void)t;
    rt_job *j = tu_in_ptr(in, len);
    j->second = concur_co_write(j->peer, "hi", 2, TU_SAFETY);
    return 0;
}

/* ---- coroutine_io_poll ---- */

/* Whether a loop gets a polled ring here (io_uring with SQPOLL allowed). */
static bool polled_rings_on(void)
{
    concur__loop l;
    if (concur__loop_init(&l))
        return false;
    bool on = concur__loop_ring(&l, true) == 0 && concur__loop_ring_polled(&l);
    concur__loop_fini(&l);
    return on;
}

/* The ring-polling kernel threads of this process ("iou-sqp-PID" in /proc/self/task). */
static int sqpoll_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[300], comm[32] = {0};
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue; /* the thread ended meanwhile */
        if (fgets(comm, sizeof comm, f) && !strncmp(comm, "iou-sqp", 7))
            n++;
        fclose(f);
    }
    closedir(d);
    return n;
}

enum { EXCHANGES = 2000 };

typedef struct xchg_job {
    int fd, side;
    int bad; /* the first exchange that went wrong, +1; 0: none */
} xchg_job;

/* Side 0 sends i and expects i+1 back; side 1 answers each byte with the byte + 1. */
static int task_exchange(concur_task *t, const void *in, size_t len)
{
    (void)t;
    xchg_job *j = tu_in_ptr(in, len);
    for (int i = 0; i < EXCHANGES && !j->bad; i++) {
        unsigned char b = (unsigned char)i, got = 0;
        if (j->side == 0) {
            if (concur_co_write(j->fd, &b, 1, TU_SAFETY) != 1 ||
                concur_co_read(j->fd, &got, 1, TU_SAFETY) != 1 || got != (unsigned char)(b + 1))
                j->bad = i + 1;
        } else {
            if (concur_co_read(j->fd, &got, 1, TU_SAFETY) != 1 || got != b)
                j->bad = i + 1;
            got++;
            if (!j->bad && concur_co_write(j->fd, &got, 1, TU_SAFETY) != 1)
                j->bad = i + 1;
        }
    }
    return 0;
}

/* Runs the exchange on @p (two coroutines of one loop) and checks it; the pool stays. */
static void exchange_on(concur_pool *p)
{
    int sv[2];
    socket_pair(sv);
    xchg_job a = {.fd = sv[0], .side = 0}, b = {.fd = sv[1], .side = 1};
    concur_future *fa = tu_submit(p, task_exchange, TU_PTR_IN(&a));
    concur_future *fb = tu_submit(p, task_exchange, TU_PTR_IN(&b));
    wait_ok(fa);
    wait_ok(fb);
    cr_assert_eq(a.bad, 0, "side 0 went wrong at exchange %d", a.bad - 1);
    cr_assert_eq(b.bad, 0, "side 1 went wrong at exchange %d", b.bad - 1);
    concur_future_release(fa);
    concur_future_release(fb);
    close(sv[0]);
    close(sv[1]);
}

Test(coro, io_poll_exchanges_through_a_polled_ring)
{
    if (!polled_rings_on())
        cr_skip_test("no io_uring with SQPOLL here (or rings off): the ring is an ordinary one");
    /* The probe's ring is gone; its kernel thread ends on its own time. */
    bool gone;
    TU_POLL_UNTIL(gone, sqpoll_threads() == 0, TU_SAFETY);
    cr_assert(gone);
#ifndef TU_CO_IOPOLL
    /* Without the option: the same exchange, and no polling thread. */
    concur_pool *plain = co_pool(1, 0);
    exchange_on(plain);
    cr_assert_eq(sqpoll_threads(), 0, "an ordinary ring has no kernel thread");
    concur_pool_destroy(plain);
#endif
    concur_pool_opts o = {.engine = CONCUR_ENGINE_COROUTINES, .coroutine_io_poll = true};
    concur_pool *p = tu_pool_opts(&o);
    exchange_on(p);
    /* The loop's ring lives as long as the loop: its kernel thread too. */
    cr_assert_eq(sqpoll_threads(), 1, "one polling thread for the pool's one loop");
    exchange_on(p); /* and again, after the kernel thread may have gone idle */
    concur_pool_destroy(p);
}

static int task_read_idle(concur_task *t, const void *in, size_t len)
{
    (void)t;
    rt_job *j = tu_in_ptr(in, len);
    j->first = concur_co_read(j->fd, j->got, sizeof(j->got), 0.5);
    return 0;
}

/* The CPU time this process has used (every thread: the ring's kernel thread is one). */
static double cpu_seconds(void)
{
    struct rusage ru;
    cr_assert_eq(getrusage(RUSAGE_SELF, &ru), 0);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

Test(coro, io_poll_sleeps_while_nothing_comes)
{
    if (!polled_rings_on())
        cr_skip_test("no io_uring with SQPOLL here (or rings off): the ring is an ordinary one");
    int sv[2];
    socket_pair(sv);
    concur_pool_opts o = {.engine = CONCUR_ENGINE_COROUTINES, .coroutine_io_poll = true};
    concur_pool *p = tu_pool_opts(&o);
    rt_job j = {.fd = sv[0], .peer = sv[1]};
    double cpu0 = cpu_seconds(), t0 = tu_now();
    concur_future *f = tu_submit(p, task_read_idle, TU_PTR_IN(&j));
    wait_ok(f);
    double cpu = cpu_seconds() - cpu0, wall = tu_now() - t0;
    cr_assert_eq(j.first, CONCUR_ETIMEDOUT, "%zd", j.first);
    cr_assert_geq(wall, 0.5 - TU_EPS);
    /* The loop watches for 50 us and the kernel thread for 10 ms, then both sleep: a read
     * that waits half a second costs a few ms of CPU, not half a second. */
    cr_assert_lt(cpu, 0.2, "%.3f s of CPU in %.3f s", cpu, wall);
    concur_future_release(f);
    concur_pool_destroy(p);
    close(sv[0]);
    close(sv[1]);
}

Test(coro, with_a_ring_a_blocking_fd_does_not_block_the_loop)
{
    if (!rings_on())
        cr_skip_test("no io_uring here (or rings off): a blocking fd blocks the loop");
    int pf[2];
    cr_assert_eq(pipe2(pf, O_CLOEXEC), 0); /* blocking on purpose */
    concur_pool *p = co_pool(1, 0);
    rt_job j = {.fd = pf[0], .peer = pf[1]};
    /* One loop thread: the reader suspends in its read, then the writer runs. */
    concur_future *fr = tu_submit(p, task_read_blocking, TU_PTR_IN(&j));
    concur_future *fw = tu_submit(p, task_write_blocking, TU_PTR_IN(&j));
    wait_ok(fw);
    wait_ok(fr);
    cr_assert_eq(j.second, 2, "%zd", j.second);
    cr_assert_eq(j.first, 2, "%zd", j.first);
    cr_assert_eq(memcmp(j.got, "hi", 2), 0);
    concur_future_release(fr);
    concur_future_release(fw);
    concur_pool_destroy(p);
    close(pf[0]);
    close(pf[1]);
}

/* The same, with the read's buffer and the write's bytes on the coroutine's own stack. */
static int task_read_blocking_on_stack(concur_task *t, const void *in, size_t len)
{
    (void)t;
    rt_job *j = tu_in_ptr(in, len);
    char b[sizeof(j->got)];
    memset(b, 0, sizeof(b));
    j->first = concur_co_read(j->fd, b, sizeof(b), TU_SAFETY);
    memcpy(j->got, b, sizeof(b));
    return 0;
}

static int task_write_blocking_on_stack(concur_task *t, const void *in, size_t len)
{
    (void)t;
    rt_job *j = tu_in_ptr(in, len);
    char b[2] = {'o', 'k'};
    j->second = concur_co_write(j->peer, b, sizeof(b), TU_SAFETY);
    return 0;
}

Test(coro, shared_stack_io_on_the_stack_goes_through_the_ring)
{
    if (!rings_on())
        cr_skip_test("no io_uring here (or rings off): a blocking fd blocks the loop");
    int pf[2];
    cr_assert_eq(pipe2(pf, O_CLOEXEC), 0); /* blocking on purpose */
    concur_pool_opts o = {.engine = CONCUR_ENGINE_COROUTINES, .coroutine_shared_stack = true};
    concur_pool *p = tu_pool_opts(&o);
    rt_job j = {.fd = pf[0], .peer = pf[1]};
    /* One loop, one shared stack: the reader suspends in its read (through a copy of its
     * buffer), then the writer runs on the same stack. A read() of the blocking pipe would
     * hold the loop, and the writer would never run. */
    concur_future *fr = tu_submit(p, task_read_blocking_on_stack, TU_PTR_IN(&j));
    concur_future *fw = tu_submit(p, task_write_blocking_on_stack, TU_PTR_IN(&j));
    int rc = concur_future_wait(fw, TU_SAFETY);
    if (rc) /* the loop is stuck in read(): let it go before failing */
        cr_assert_eq(write(pf[1], "xx", 2), 2);
    cr_assert_eq(rc, 0, "the writer never ran: the read blocked the loop");
    wait_ok(fr);
    cr_assert_eq(j.second, 2, "%zd", j.second);
    cr_assert_eq(j.first, 2, "%zd", j.first);
    cr_assert_eq(memcmp(j.got, "ok", 2), 0);
    concur_future_release(fr);
    concur_future_release(fw);
    concur_pool_destroy(p);
    close(pf[0]);
    close(pf[1]);
}

/* ---------------------------------------------------------------- cancel and timeout */

enum { K_SLEEP, K_YIELD, K_FD, K_READ, K_WRITE };

/* K_WRITE: more than a socket buffer holds, with nobody reading. */
static char g_fill[8 << 20];

typedef struct stop_job {
    int kind;
    int fd;
    _Atomic int started;
    _Atomic int rc;
    _Atomic int stopped; /* concur_task_should_stop() after the suspension returned */
    _Atomic int again;   /* what the next suspension returned */
    double at;           /* when the suspension returned */
} stop_job;

static int suspend_kind(const stop_job *j)
{
    switch (j->kind) {
    case K_SLEEP:
        return concur_co_sleep(100);
    case K_YIELD:
        for (;;) {
            int rc = concur_co_yield();
            if (rc)
                return rc;
        }
    case K_READ: {
        char b[16];
        ssize_t n = concur_co_read(j->fd, b, sizeof(b), -1);
        return n < 0 ? (int)n : CONCUR_EIO; /* nothing is ever written */
    }
    case K_WRITE: {
        ssize_t n = concur_co_write(j->fd, g_fill, sizeof(g_fill), -1);
        return n < 0 ? (int)n : CONCUR_EIO;
    }
    default:
        return concur_co_wait_fd(j->fd, CONCUR_CO_READ, -1);
    }
}

static int task_suspend(concur_task *t, const void *in, size_t len)
{
    stop_job *j = tu_in_ptr(in, len);
    atomic_store(&j->started, 1);
    int rc = suspend_kind(j);
    j->at = tu_now();
    atomic_store(&j->stopped, concur_task_should_stop(t));
    atomic_store(&j->again, concur_co_sleep(0.001));
    atomic_store(&j->rc, rc);
    return 0; /* dropped: the future failed already */
}

/* Submits task_suspend and waits until it runs. */
static concur_future *submit_started(concur_pool *p, stop_job *j)
{
    concur_future *f = tu_submit(p, task_suspend, TU_PTR_IN(j));
    bool ok;
    TU_POLL_UNTIL(ok, atomic_load(&j->started), TU_SAFETY);
    cr_assert(ok);
    return f;
}

/* The checks after a stop case, and the clean-up. */
static void check_stopped(stop_job *j, concur_future *f, int code, concur_pool *p, int sv[2])
{
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    cr_assert_eq(concur_future_error(f), code, "%s", concur_strerror(concur_future_error(f)));
    cr_assert_eq(atomic_load(&j->rc), code, "suspension returned %d", atomic_load(&j->rc));
    cr_assert_eq(atomic_load(&j->again), code, "the next suspension returns it again");
    cr_assert(atomic_load(&j->stopped));
    if (j->kind == K_READ) {
        /* The interrupted read took nothing: what comes now is still there. */
        cr_assert_eq(write(sv[1], "z", 1), 1);
        char b[4];
        cr_assert_eq(read(sv[0], b, sizeof(b)), 1);
        cr_assert_eq(b[0], 'z');
    }
    concur_future_release(f);
    concur_pool_destroy(p);
    close(sv[0]);
    close(sv[1]);
}

static void cancel_kind(int kind)
{
    int sv[2];
    socket_pair(sv);
    concur_pool *p = co_pool(1, 0);
    stop_job j = {.kind = kind, .fd = sv[0]};
    concur_future *f = submit_started(p, &j);
    cr_assert_eq(concur_future_state(f), CONCUR_RUNNING);
    double t0 = tu_now();
    cr_assert_not(concur_future_cancel(f), "a running task is not cancelled by the queue");
    /* It failed at once, before the coroutine even resumed. */
    cr_assert_eq(concur_future_state(f), CONCUR_FAILED);
    cr_assert_eq(concur_pool_shutdown(p, 0, TU_SAFETY), 0);
    cr_assert_lt(j.at - t0, TU_LOOSE(0.5));
    check_stopped(&j, f, CONCUR_ECANCELED, p, sv);
}

Test(coro, cancel_interrupts_sleep) { cancel_kind(K_SLEEP); }
Test(coro, cancel_interrupts_yield) { cancel_kind(K_YIELD); }
Test(coro, cancel_interrupts_wait_fd) { cancel_kind(K_FD); }
Test(coro, cancel_interrupts_read) { cancel_kind(K_READ); }
Test(coro, cancel_interrupts_write) { cancel_kind(K_WRITE); }

static void timeout_kind(int kind)
{
    int sv[2];
    socket_pair(sv);
    concur_pool *p = co_pool(1, 0.2);
    stop_job j = {.kind = kind, .fd = sv[0]};
    double t0 = tu_now();
    concur_future *f = tu_submit(p, task_suspend, TU_PTR_IN(&j));
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    double failed = tu_now() - t0;
    cr_assert_eq(concur_pool_shutdown(p, 0, TU_SAFETY), 0);
    cr_assert_geq(failed, 0.2 - TU_EPS);
    cr_assert_lt(failed, TU_LOOSE(0.2));
    check_stopped(&j, f, CONCUR_ETASKTIMEOUT, p, sv);
}

Test(coro, timeout_interrupts_sleep) { timeout_kind(K_SLEEP); }
Test(coro, timeout_interrupts_yield) { timeout_kind(K_YIELD); }
Test(coro, timeout_interrupts_wait_fd) { timeout_kind(K_FD); }
Test(coro, timeout_interrupts_read) { timeout_kind(K_READ); }
Test(coro, timeout_interrupts_write) { timeout_kind(K_WRITE); }

Test(coro, shutdown_cancel_interrupts_sleepers)
{
    concur_pool *p = co_pool(1, 0);
    stop_job j = {.kind = K_SLEEP};
    concur_future *f = submit_started(p, &j);
    double t0 = tu_now();
    cr_assert_eq(concur_pool_shutdown(p, CONCUR_SHUTDOWN_CANCEL, TU_SAFETY), 0);
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.5), "the 100 s sleep was interrupted");
    cr_assert_eq(atomic_load(&j.rc), CONCUR_ECANCELED);
    cr_assert(atomic_load(&j.stopped));
    /* A shutdown does not fail the future: the task's own return stands. */
    cr_assert_eq(concur_future_state(f), CONCUR_DONE);
    concur_future_release(f);
    concur_pool_destroy(p);
}

/* pyconcurrent's function timeout: sleeps of 1, 10 and 2 s with a timeout of 5 s. */
static int task_sleep_secs(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)len;
    return concur_co_sleep(*(const double *)in);
}

Test(coro, function_timeout_case)
{
    concur_pool *p = co_pool(0, 5);
    const double secs[3] = {1, 10, 2};
    concur_future *f[3];
    double t0 = tu_now();
    for (int i = 0; i < 3; i++)
        f[i] = tu_submit(p, task_sleep_secs, &secs[i], sizeof(double));
    int ok = 0;
    for (int i = 0; i < 3; i++) {
        int rc = concur_future_collect(f[i], TU_SAFETY, NULL, NULL);
        if (rc == 0)
            ok++;
        else
            cr_assert(i == 1 && rc == CONCUR_ETASKTIMEOUT, "task %d: %s", i, concur_strerror(rc));
    }
    double took = tu_now() - t0;
    cr_assert_eq(ok, 2);
    cr_assert_geq(took, 5.0 - TU_EPS);
    cr_assert_lt(took, TU_SANITIZED ? 8.0 : 6.0, "took %.3f s", took);
    for (int i = 0; i < 3; i++)
        concur_future_release(f[i]);
    concur_pool_destroy(p);
}

/* ---------------------------------------------------------------- scale and threads */

static int task_sleep_1s(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)in, (void)len;
    return concur_co_sleep(1.0);
}

Test(coro, many_coroutines_sleep_at_once, .timeout = 120)
{
    /* 100,000 in the release build; fewer under the sanitizers: ASan's shadow makes each
     * one heavier, and each TSan fiber costs about 1 MB and milliseconds to create. */
    const size_t n = TU_TSAN ? 300 : TU_ASAN ? 10000 : 100000;
    concur_pool *p = co_pool(1, 0);
    concur_input *ins = calloc(n, sizeof(*ins));
    concur_future **f = calloc(n, sizeof(*f));
    cr_assert(ins && f);
    double t0 = tu_now();
    cr_assert_eq(concur_pool_submit_batch(p, task_sleep_1s, ins, n, f), 0);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(concur_future_collect(f[i], TU_SAFETY, NULL, NULL), 0);
        concur_future_release(f[i]);
    }
    double took = tu_now() - t0;
    cr_assert_geq(took, 1.0 - TU_EPS);
    /* Loose: the first use of each stack costs a page fault (about 20 us on some virtual
     * machines); bench/co_sleep measures the wall time with warm stacks. */
    cr_assert_lt(took, TU_SANITIZED ? 40.0 : 10.0, "took %.3f s", took);
    free(ins);
    free(f);
    concur_pool_destroy(p);
}

static _Atomic int g_count;

static int task_count(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)in, (void)len;
    atomic_fetch_add(&g_count, 1);
    return 0;
}

enum { SUBMITTERS = 4, PER_SUBMITTER = 200 };

static void *submitter(void *arg)
{
    concur_pool *p = arg;
    for (int i = 0; i < PER_SUBMITTER; i++) {
        concur_future *f = NULL;
        if (concur_pool_submit(p, task_count, NULL, 0, &f) != 0)
            return (void *)1;
        /* Each waits for its own task: the loop must wake for every one. */
        int rc = concur_future_wait(f, TU_SAFETY);
        concur_future_release(f);
        if (rc)
            return (void *)1;
    }
    return NULL;
}

Test(coro, submits_from_threads_wake_the_sleeping_loop)
{
    int sv[2];
    socket_pair(sv);
    concur_pool *p = co_pool(1, 0);
    /* A coroutine waits on an fd nobody writes: the loop sleeps in epoll, never idle. */
    stop_job j = {.kind = K_FD, .fd = sv[0]};
    concur_future *blocker = submit_started(p, &j);
    pthread_t th[SUBMITTERS];
    for (int i = 0; i < SUBMITTERS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, submitter, p), 0);
    for (int i = 0; i < SUBMITTERS; i++) {
        void *r;
        cr_assert_eq(pthread_join(th[i], &r), 0);
        cr_assert_null(r);
    }
    cr_assert_eq(atomic_load(&g_count), SUBMITTERS * PER_SUBMITTER);
    cr_assert_eq(concur_future_state(blocker), CONCUR_RUNNING, "still waiting on its fd");
    cr_assert_eq(write(sv[1], "x", 1), 1);
    wait_ok(blocker);
    cr_assert_eq(atomic_load(&j.rc), CONCUR_CO_READ);
    concur_future_release(blocker);
    concur_pool_destroy(p);
    close(sv[0]);
    close(sv[1]);
}

static int task_gate(concur_task *t, const void *in, size_t len)
{
    (void)t;
    tu_gate *g = tu_in_ptr(in, len);
    tu_gate_arrive(g);
    /* Blocks its loop thread: the other task can only run on the other loop. */
    return tu_gate_wait_open(g, TU_SAFETY) ? 0 : CONCUR_ETIMEDOUT;
}

Test(coro, two_loop_threads)
{
    concur_pool *p = co_pool(2, 0);
    tu_gate *g = tu_gate_new();
    concur_future *a = tu_submit(p, task_gate, TU_PTR_IN(g));
    concur_future *b = tu_submit(p, task_gate, TU_PTR_IN(g));
    cr_assert(tu_gate_await(g, 2, TU_SAFETY), "both run at once, one per loop thread");
    cr_assert_eq(tu_counts(p).workers, 2);
    tu_gate_open(g);
    cr_assert_eq(concur_future_collect(a, TU_SAFETY, NULL, NULL), 0);
    cr_assert_eq(concur_future_collect(b, TU_SAFETY, NULL, NULL), 0);
    concur_future_release(a);
    concur_future_release(b);
    concur_pool_destroy(p);
    tu_gate_destroy(g);
}

/* ---------------------------------------------------------------- stalls, overflow */

static int task_spin(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)in, (void)len;
    double t0 = tu_now();
    while (tu_now() - t0 < 0.3)
        ;
    return concur_co_yield();
}

Test(coro, longest_stall_is_counted)
{
    concur_pool *p = co_pool(1, 0);
    cr_assert_eq(tu_counts(p).max_stall_ns, 0);
    concur_future *f = tu_submit(p, task_spin, NULL, 0);
    wait_ok(f);
    concur_future_release(f);
    uint64_t stall = tu_counts(p).max_stall_ns;
    cr_assert_geq(stall, 250000000u, "stall %llu ns", (unsigned long long)stall);
    cr_assert_lt(stall, (uint64_t)(TU_LOOSE(0.3) * 1e9));
    concur_pool_destroy(p);
}

__attribute__((noinline)) static int deep(volatile char *prev, int n)
{
    volatile char frame[1024];
    frame[0] = (char)n;
    frame[sizeof(frame) - 1] = prev ? prev[0] : 0;
    if (n == 0)
        return frame[0];
    return deep(frame, n - 1) + frame[sizeof(frame) - 1];
}

static int task_overflow(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)in, (void)len;
    return deep(NULL, 1 << 20);
}

Test(coro, stack_overflow_hits_the_guard)
{
    if (TU_TSAN)
        cr_skip("TSan does not support starting threads in the fork of a threaded process");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        concur_pool_opts o = {.engine = CONCUR_ENGINE_COROUTINES, .coroutine_stack_size = 16384};
        concur_pool *p = NULL;
        if (concur_pool_create(&p, &o) != 0)
            _exit(3);
        concur_future *f = NULL;
        if (concur_pool_submit(p, task_overflow, NULL, 0, &f) != 0)
            _exit(4);
        concur_future_wait(f, 60);
        _exit(5); /* not reached: the overflow crashes the process */
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st), "status %#x", st);
    /* ASan reports the fault itself and then aborts (abort_on_error). */
    if (TU_ASAN)
        cr_assert(WTERMSIG(st) == SIGSEGV || WTERMSIG(st) == SIGABRT, "signal %d", WTERMSIG(st));
    else
        cr_assert_eq(WTERMSIG(st), SIGSEGV);
}

/* ---------------------------------------------------------------- shared stacks */

static concur_pool *shared_pool(void)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_COROUTINES, .coroutine_shared_stack = true};
    return tu_pool_opts(&o);
}

enum { FRAME_BYTES = 256, FRAMES_MAX = 24 };

/* Level @lvl of coroutine @id's recursion: a frame of its own bytes, checked after every
 * suspension; depth varies by coroutine (up to FRAMES_MAX frames, several KiB: more than a
 * record's inline image). Returns the number of damaged frames seen. */
static int __attribute__((noinline)) frames_deep(int id, int lvl, int depth)
{
    volatile unsigned char mine[FRAME_BYTES];
    unsigned char v = (unsigned char)(id * 7 + lvl);
    for (int i = 0; i < FRAME_BYTES; i++)
        mine[i] = (unsigned char)(v + i);
    int bad = 0;
    int rc = (id + lvl) % 2 ? concur_co_yield() : concur_co_sleep(0.001);
    if (rc)
        return 1000;
    if (lvl + 1 < depth)
        bad += frames_deep(id, lvl + 1, depth);
    for (int i = 0; i < FRAME_BYTES; i++)
        if (mine[i] != (unsigned char)(v + i)) {
            bad++;
            break;
        }
    rc = concur_co_yield();
    return rc ? 1000 : bad;
}

typedef struct frames_out {
    uintptr_t frame_addr; /* the task function's frame (on the real stack even where ASan
                           * keeps locals on a fake stack of its own) */
    int bad;
} frames_out;

static int task_frames(concur_task *t, const void *in, size_t len)
{
    (void)len;
    int id = *(const int *)in;
    volatile int anchor = id;
    frames_out o = {.frame_addr = (uintptr_t)__builtin_frame_address(0)};
    o.bad = frames_deep(id, 0, 1 + id % FRAMES_MAX);
    o.bad += anchor != id;
    return concur_task_return(t, &o, sizeof(o));
}

/* Many coroutines suspended at every depth on one loop: each finds its frames as it left
 * them, and all of them ran at the same stack addresses (the stack really is shared). */
Test(coro, shared_stacks_keep_every_coroutines_frames)
{
    enum { N = 200 };
    concur_pool *p = shared_pool();
    concur_future *f[N];
    int ids[N];
    for (int i = 0; i < N; i++) {
        ids[i] = i;
        f[i] = tu_submit(p, task_frames, &ids[i], sizeof(int));
    }
    uintptr_t addr0 = 0;
    for (int i = 0; i < N; i++) {
        const void *d;
        size_t n;
        cr_assert_eq(concur_future_collect(f[i], TU_SAFETY, &d, &n), 0, "task %d", i);
        cr_assert_eq(n, sizeof(frames_out));
        frames_out o;
        memcpy(&o, d, sizeof(o));
        cr_assert_eq(o.bad, 0, "task %d: %d damaged frames", i, o.bad);
        if (i == 0)
            addr0 = o.frame_addr;
        cr_assert_eq(o.frame_addr, addr0, "task %d ran on a stack of its own", i);
        concur_future_release(f[i]);
    }
    concur_pool_destroy(p);
}

typedef struct sread_job {
    int sv[2];
    _Atomic int started;
} sread_job;

static int task_read_stack_buf(concur_task *t, const void *in, size_t len)
{
    sread_job *j = tu_in_ptr(in, len);
    char buf[64];
    memset(buf, 0, sizeof(buf));
    atomic_fetch_add(&j->started, 1);
    ssize_t n = concur_co_read(j->sv[0], buf, sizeof(buf), TU_SAFETY);
    if (n < 0)
        return (int)n;
    return concur_task_return(t, buf, (size_t)n);
}

static int readers_started(sread_job *j, int n)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += atomic_load(&j[i].started);
    return c;
}

/* Writes its own bytes over its frame between yields, on the stack the readers share. */
static int task_scribble(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)in, (void)len;
    volatile char junk[512];
    for (int r = 0; r < 200; r++) {
        for (size_t i = 0; i < sizeof(junk); i++)
            junk[i] = (char)(r + (int)i);
        if (concur_co_yield() != 0)
            return CONCUR_ETASK;
    }
    return junk[0] == (char)199 ? 0 : CONCUR_ETASK;
}

/* A read into a buffer on a shared stack, waiting while other coroutines run on that
 * stack: the bytes land in the reader's buffer, not in whoever's frames are on the stack
 * when they arrive (the loop's io_uring must not be handed such a buffer). */
Test(coro, shared_stack_reads_into_a_stack_buffer_while_others_run)
{
    enum { N = 8 };
    concur_pool *p = shared_pool();
    sread_job *j = calloc(N, sizeof(*j));
    cr_assert_not_null(j);
    concur_future *r[N], *s[N];
    for (int i = 0; i < N; i++) {
        socket_pair(j[i].sv);
        r[i] = tu_submit(p, task_read_stack_buf, TU_PTR_IN(&j[i]));
        s[i] = tu_submit(p, task_scribble, NULL, 0);
    }
    bool ok;
    TU_POLL_UNTIL(ok, readers_started(j, N) == N, TU_SAFETY);
    cr_assert(ok);
    for (int i = 0; i < N; i++) {
        char msg[32];
        int len = snprintf(msg, sizeof(msg), "reader %d's bytes", i);
        cr_assert_eq(write(j[i].sv[1], msg, (size_t)len), len);
    }
    for (int i = 0; i < N; i++) {
        const void *d;
        size_t n;
        cr_assert_eq(concur_future_collect(r[i], TU_SAFETY, &d, &n), 0, "reader %d", i);
        char want[32];
        int len = snprintf(want, sizeof(want), "reader %d's bytes", i);
        cr_assert_eq(n, (size_t)len);
        cr_assert_arr_eq(d, want, (size_t)len, "reader %d got other bytes", i);
        cr_assert_eq(concur_future_collect(s[i], TU_SAFETY, NULL, NULL), 0);
        concur_future_release(r[i]);
        concur_future_release(s[i]);
        close(j[i].sv[0]);
        close(j[i].sv[1]);
    }
    concur_pool_destroy(p);
    free(j);
}

/* ---------------------------------------------------------------- swarms */

/* Copy i sleeps 0.2 s; with @fail_idx >= 0 that copy fails at once and the others sleep
 * 100 s (FAIL_HARD must interrupt them). */
static int task_swarm_copy(concur_task *t, const void *in, size_t len)
{
    (void)len;
    int fail_idx = *(const int *)in;
    if (concur_swarm_index(t) == fail_idx)
        return concur_task_fail(t, CONCUR_EIO, "copy %d failed", fail_idx);
    return concur_co_sleep(fail_idx >= 0 ? 100 : 0.2);
}

static concur_swarm *co_swarm(int n, concur_swarm_mode mode, int fail_idx)
{
    concur_pool_opts po = {.engine = CONCUR_ENGINE_COROUTINES};
    concur_swarm_opts so = {.mode = mode, .pool = &po};
    concur_swarm *sw = NULL;
    cr_assert_eq(concur_swarm_start(&sw, n, task_swarm_copy, &fail_idx, sizeof(int), &so), 0);
    cr_assert_eq(concur_swarm_engine(sw), CONCUR_ENGINE_COROUTINES);
    return sw;
}

Test(coro, swarm_copies_share_one_loop)
{
    double t0 = tu_now();
    concur_swarm *sw = co_swarm(50, CONCUR_SWARM_COLLECT, -1);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), 0);
    double took = tu_now() - t0;
    cr_assert_geq(took, 0.2 - TU_EPS);
    cr_assert_lt(took, TU_LOOSE(0.2), "50 copies slept together on one loop thread");
    concur_swarm_destroy(sw);
}

Test(coro, swarm_fail_hard_and_stop_interrupt_copies)
{
    double t0 = tu_now();
    concur_swarm *sw = co_swarm(8, CONCUR_SWARM_FAIL_HARD, 3);
    cr_assert_eq(concur_swarm_wait(sw, TU_SAFETY), CONCUR_EIO);
    cr_assert_eq(concur_swarm_errors(sw, 0, NULL), 1, "only the failing copy's error");
    concur_swarm_destroy(sw); /* the 100 s sleeps were interrupted */
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.5));

    t0 = tu_now();
    sw = co_swarm(8, CONCUR_SWARM_COLLECT, 99);
    cr_assert_eq(concur_swarm_stop(sw, TU_SAFETY), 0);
    cr_assert(concur_swarm_done(sw));
    concur_swarm_destroy(sw);
    cr_assert_lt(tu_now() - t0, TU_LOOSE(0.5));
}

/* ---------------------------------------------------------------- awaiting futures */

typedef struct await_job {
    concur_pool *threads, *procs;
    tu_gate *gate; /* the thread task waits for it */
    _Atomic int ticks;      /* a sibling coroutine's progress while the waits go on */
    _Atomic int ticks_seen; /* what the awaiting coroutine saw of it */
    _Atomic int open_at;    /* the ticker opens the gate at this tick (0: not yet asked) */
    _Atomic int done;       /* the awaiter is done: the ticker stops */
    int rc_thread, rc_proc, rc_timeout, rc_any, rc_all;
    size_t any_index;
    int proc_value;
} await_job;

static int task_square(concur_task *t, const void *in, size_t len)
{
    (void)len;
    int v = *(const int *)in;
    v *= v;
    return concur_task_return(t, &v, sizeof(v));
}

static int task_tick(concur_task *t, const void *in, size_t len)
{
    (void)t;
    await_job *j = tu_in_ptr(in, len);
    bool opened = false;
    /* Ticks until the awaiter is done (bounded: a loop that stopped running it fails the
     * test by its waits' timeouts, not by hanging here). */
    for (int i = 0; i < 100000 && !atomic_load(&j->done); i++) {
        int n = atomic_fetch_add(&j->ticks, 1) + 1;
        int at = atomic_load(&j->open_at);
        if (!opened && at && n >= at) {
            tu_gate_open(j->gate); /* ticks were counted while the awaiter was suspended */
            opened = true;
        }
        if (concur_co_sleep(0.001) != 0)
            return CONCUR_ETASK;
    }
    return 0;
}

static int task_await(concur_task *t, const void *in, size_t len)
{
    (void)t;
    await_job *j = tu_in_ptr(in, len);
    concur_future *tf = NULL, *pf = NULL;
    int seven = 7;
    if (concur_pool_submit(j->threads, tu_task_gate, &j->gate, sizeof(j->gate), &tf) != 0 ||
        concur_pool_submit(j->procs, task_square, &seven, sizeof(seven), &pf) != 0)
        return CONCUR_ETASK;
    /* The thread task waits for the gate, which the test opens only after this timeout. */
    j->rc_timeout = concur_future_wait(tf, 0.05);
    concur_future *both[2] = {tf, pf};
    j->rc_any = concur_wait_any(both, 2, TU_SAFETY, &j->any_index); /* the process one */
    /* The sibling opens the gate after 3 more of its ticks: the wait below ends only if
     * the loop ran it while this coroutine was suspended. */
    int from = atomic_load(&j->ticks);
    atomic_store(&j->open_at, from + 3);
    j->rc_all = concur_wait_all(both, 2, TU_SAFETY);
    j->rc_thread = concur_future_collect(tf, TU_SAFETY, NULL, NULL);
    const void *d = NULL;
    size_t n = 0;
    j->rc_proc = concur_future_collect(pf, TU_SAFETY, &d, &n);
    if (j->rc_proc == 0 && n == sizeof(int))
        memcpy(&j->proc_value, d, sizeof(int));
    atomic_store(&j->ticks_seen, atomic_load(&j->ticks) - from);
    atomic_store(&j->done, 1);
    concur_future_release(tf);
    concur_future_release(pf);
    return 0;
}

Test(coro, awaits_thread_and_process_futures_while_others_run)
{
    await_job *j = TU_SHARED(await_job);
    concur_pool_opts po = {.engine = CONCUR_ENGINE_PROCESSES, .max_workers = 1};
    j->procs = tu_pool_opts(&po); /* forked before the other threads start */
    j->threads = tu_pool(1);
    j->gate = tu_gate_new();
    concur_pool *p = co_pool(1, 0);
    concur_future *ticker = tu_submit(p, task_tick, TU_PTR_IN(j));
    concur_future *awaiter = tu_submit(p, task_await, TU_PTR_IN(j));
    wait_ok(awaiter);
    wait_ok(ticker);
    cr_assert_eq(concur_future_error(awaiter), 0);
    cr_assert_eq(j->rc_timeout, CONCUR_ETIMEDOUT);
    cr_assert_eq(j->rc_any, 0);
    cr_assert_eq(j->any_index, 1, "the thread task still waits for its gate");
    cr_assert_eq(j->rc_all, 0);
    cr_assert_eq(j->rc_thread, 0);
    cr_assert_eq(j->rc_proc, 0, "%s", concur_strerror(j->rc_proc));
    cr_assert_eq(j->proc_value, 49);
    /* The ticker kept running on the same loop thread while the other one waited: it
     * opened the gate the wait_all was waiting for, 3 ticks after the wait began. */
    cr_assert_geq(atomic_load(&j->ticks_seen), 3, "ticks %d", atomic_load(&j->ticks_seen));
    cr_assert_eq(concur_future_error(ticker), 0);
    concur_future_release(ticker);
    concur_future_release(awaiter);
    concur_pool_destroy(p);
    concur_pool_destroy(j->threads);
    concur_pool_destroy(j->procs);
    tu_gate_destroy(j->gate);
}

static int task_await_forever(concur_task *t, const void *in, size_t len)
{
    stop_job *j = tu_in_ptr(in, len);
    concur_future *never = NULL;
    if (concur_future_create(&never) != 0)
        return CONCUR_ENOMEM;
    atomic_store(&j->started, 1);
    atomic_store(&j->rc, concur_future_wait(never, -1));
    atomic_store(&j->stopped, concur_task_should_stop(t));
    concur_future_release(never);
    return 0;
}

/* Once the task of @f has set *started (it is about to suspend), cancels it, shuts the pool
 * down and checks that the suspension returned CONCUR_ECANCELED into *rc. */
static void cancel_once_started(concur_pool *p, concur_future *f, _Atomic int *started,
                                _Atomic int *rc)
{
    bool ok;
    TU_POLL_UNTIL(ok, atomic_load(started), TU_SAFETY);
    cr_assert(ok);
    cr_assert_not(concur_future_cancel(f));
    cr_assert_eq(concur_pool_shutdown(p, 0, TU_SAFETY), 0);
    cr_assert_eq(atomic_load(rc), CONCUR_ECANCELED);
}

Test(coro, cancel_interrupts_a_future_wait)
{
    concur_pool *p = co_pool(1, 0);
    stop_job j = {0};
    concur_future *f = tu_submit(p, task_await_forever, TU_PTR_IN(&j));
    cancel_once_started(p, f, &j.started, &j.rc);
    cr_assert(atomic_load(&j.stopped));
    cr_assert_eq(concur_future_error(f), CONCUR_ECANCELED);
    concur_future_release(f);
    concur_pool_destroy(p);
}

/* ---------------------------------------------------------------- fqueue and commands */

typedef struct co_wait_job {
    concur_fqueue *q;
    concur_future *sig;
    _Atomic int started; /* set by the waiter just before it waits */
    _Atomic int rc;
    concur_future *got;
    int returncode; /* of the command runs */
    char out[8];
    _Atomic int other_done; /* the other coroutine ran to its end meanwhile */
} co_wait_job;

static int task_fq_get(concur_task *t, const void *in, size_t len)
{
    (void)t;
    co_wait_job *j = tu_in_ptr(in, len);
    atomic_store(&j->started, 1);
    atomic_store(&j->rc, concur_fqueue_get(j->q, TU_SAFETY, &j->got));
    return 0;
}

/* Runs once the waiter is suspended (one loop: it ran from `started` to its suspension). */
static int task_fq_complete(concur_task *t, const void *in, size_t len)
{
    (void)t;
    co_wait_job *j = tu_in_ptr(in, len);
    while (!atomic_load(&j->started))
        if (concur_co_yield() != 0)
            return CONCUR_ECANCELED;
    atomic_store(&j->other_done, 1);
    return concur_future_set_result(j->sig, "x", 1);
}

Test(coro, fqueue_get_suspends_only_the_coroutine)
{
    concur_pool *p = co_pool(1, 0);
    co_wait_job j = {0};
    cr_assert_eq(concur_fqueue_create(&j.q), 0);
    cr_assert_eq(concur_future_create(&j.sig), 0);
    cr_assert_eq(concur_fqueue_put(j.q, j.sig), 0);
    concur_future *getter = tu_submit(p, task_fq_get, TU_PTR_IN(&j));
    concur_future *setter = tu_submit(p, task_fq_complete, TU_PTR_IN(&j));
    wait_ok(getter);
    wait_ok(setter);
    cr_assert_eq(concur_future_error(setter), 0);
    cr_assert_eq(atomic_load(&j.rc), 0, "%s", concur_strerror(atomic_load(&j.rc)));
    cr_assert_eq(j.got, j.sig, "the finished future comes out of the queue");
    concur_future_release(j.got);
    /* An interrupted get: the queue holds a future that never finishes. */
    concur_future *never;
    cr_assert_eq(concur_future_create(&never), 0);
    cr_assert_eq(concur_fqueue_put(j.q, never), 0);
    atomic_store(&j.started, 0);
    atomic_store(&j.rc, 1);
    concur_future *f = tu_submit(p, task_fq_get, TU_PTR_IN(&j));
    cancel_once_started(p, f, &j.started, &j.rc);
    concur_future_release(f);
    concur_future_release(getter);
    concur_future_release(setter);
    concur_pool_destroy(p);
    concur_fqueue_destroy(j.q); /* releases never's queue reference */
    concur_future_release(never);
    concur_future_release(j.sig);
}

static int task_run_prog(concur_task *t, const void *in, size_t len)
{
    (void)t;
    co_wait_job *j = tu_in_ptr(in, len);
    concur_prog_output o;
    const char *echo[] = {"echo", "hi", NULL};
    int rc = concur_run_prog(echo, NULL, 0, NULL, 0, &o);
    if (rc)
        return rc;
    snprintf(j->out, sizeof(j->out), "%.*s", (int)o.out_len, (const char *)o.out);
    concur_prog_output_free(&o);
    /* Then one that runs until the test cancels this coroutine. */
    const char *sleeper[] = {"sleep", "300", NULL};
    atomic_store(&j->started, 1);
    rc = concur_run_prog(sleeper, NULL, 0, NULL, 0, &o);
    j->returncode = o.returncode;
    concur_prog_output_free(&o);
    atomic_store(&j->rc, rc);
    return 0;
}

static int task_sleep_meanwhile(concur_task *t, const void *in, size_t len)
{
    (void)t;
    co_wait_job *j = tu_in_ptr(in, len);
    while (!atomic_load(&j->started))
        if (concur_co_sleep(0.001) != 0)
            return CONCUR_ECANCELED;
    for (int i = 0; i < 3; i++) /* the command runs all along */
        if (concur_co_sleep(0.01) != 0)
            return CONCUR_ECANCELED;
    atomic_store(&j->other_done, 1);
    return 0;
}

Test(coro, run_prog_suspends_only_the_coroutine_and_a_cancel_stops_the_command)
{
    concur_pool *p = co_pool(1, 0);
    co_wait_job j = {.rc = 1};
    concur_future *runner = tu_submit(p, task_run_prog, TU_PTR_IN(&j));
    concur_future *other = tu_submit(p, task_sleep_meanwhile, TU_PTR_IN(&j));
    /* With the loop's thread blocked in the 300 s command, this would time out. */
    wait_ok(other);
    cr_assert_eq(concur_future_error(other), 0);
    cr_assert(atomic_load(&j.other_done));
    cr_assert_eq(concur_future_wait(runner, 0), CONCUR_ETIMEDOUT, "the command still runs");
    cr_assert_str_eq(j.out, "hi\n");
    cr_assert_not(concur_future_cancel(runner));
    cr_assert_eq(concur_future_error(runner), CONCUR_ECANCELED);
    /* The coroutine's run stopped: the command got the term signal and was reaped. */
    cr_assert_eq(concur_pool_shutdown(p, 0, TU_SAFETY), 0);
    cr_assert_eq(atomic_load(&j.rc), 0, "%s", concur_strerror(atomic_load(&j.rc)));
    cr_assert_eq(j.returncode, -SIGTERM, "returncode %d", j.returncode);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "no child is left");
    cr_assert_eq(errno, ECHILD);
    concur_future_release(runner);
    concur_future_release(other);
    concur_pool_destroy(p);
}

/* The runner reads a command's output into a buffer of its own, not one on the stack: a
 * coroutine on a small stack runs a command with plenty of output. (Its 64 KiB read buffer
 * was a local: it overflowed every coroutine stack up to 64 KiB.) */
static int task_run_chatty(concur_task *t, const void *in, size_t len)
{
    (void)in, (void)len;
    const char *argv[] = {"head", "-c", "200000", "/dev/zero", NULL};
    concur_prog_output o;
    int rc = concur_run_prog(argv, NULL, 0, NULL, 0, &o);
    if (rc)
        return rc;
    size_t n = o.out_len;
    concur_prog_output_free(&o);
    return concur_task_return(t, &n, sizeof(n));
}

Test(coro, run_prog_fits_a_small_coroutine_stack)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_COROUTINES,
                          .max_workers = 1,
                          .coroutine_stack_size = 16 << 10,
                          .name = "co"};
    concur_pool *p = tu_pool_opts(&o);
    concur_future *f = tu_submit(p, task_run_chatty, NULL, 0);
    size_t n = 0;
    cr_assert_eq(concur_future_get(f, TU_SAFETY, &n, sizeof(n)), 0);
    cr_assert_eq(n, 200000u);
    concur_future_release(f);
    concur_pool_destroy(p);
}
