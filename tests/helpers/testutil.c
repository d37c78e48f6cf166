/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_int live_gates;

/* ---- the shared arena ------------------------------------------------------------------ */

/* Pages are only backed when touched; the stress suite uses 3 MiB. It counts in VmSize,
 * which test_process_pool checks before it sets worker_memory_limit: keep it small. */
#define ARENA_SIZE ((size_t)16 << 20)
#define ARENA_ALIGN ((size_t)64)

static char *arena;
static atomic_size_t arena_used;

/* Before main(), hence before any pool forks its fork server: every worker process, a fork
 * of that server, shares these pages. Criterion executes each test in a new process, which
 * runs this again: every test has an arena of its own. */
__attribute__((constructor)) static void arena_map(void)
{
    void *m = mmap(NULL, ARENA_SIZE, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    arena = m == MAP_FAILED ? NULL : m;
}

void *tu_shared_alloc(size_t size)
{
    cr_assert_not_null(arena, "the shared arena could not be mapped");
    size_t rounded = (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    size_t at = atomic_fetch_add(&arena_used, rounded);
    cr_assert_leq(at + rounded, ARENA_SIZE, "the shared arena is full (%zu more bytes)", size);
    return arena + at; /* fresh pages: zero */
}

void tu_shared_mutex_init(pthread_mutex_t *mu)
{
    pthread_mutexattr_t ma;
    cr_assert_eq(pthread_mutexattr_init(&ma), 0);
    cr_assert_eq(pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED), 0);
    cr_assert_eq(pthread_mutex_init(mu, &ma), 0);
    pthread_mutexattr_destroy(&ma);
}

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

/* Sleeps while *word == val, at most until @p deadline (tu_now() seconds). Shared futex
 * (no FUTEX_PRIVATE_FLAG): wakes come from any process that maps the word. Spurious
 * returns are fine, every caller loops. */
static void futex_wait(atomic_int *word, int val, double deadline)
{
    double left = deadline - tu_now();
    if (!(left > 0))
        return;
    struct timespec ts;
    ts.tv_sec = (time_t)left;
    ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
    (void)syscall(SYS_futex, (int *)word, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void futex_wake_all(atomic_int *word)
{
    (void)syscall(SYS_futex, (int *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void tu_gate_init(tu_gate *g)
{
    atomic_init(&g->open, 0);
    atomic_init(&g->arrived, 0);
    atomic_fetch_add(&live_gates, 1);
}

tu_gate *tu_gate_new(void)
{
    tu_gate *g = TU_SHARED(tu_gate);
    tu_gate_init(g);
    return g;
}

void tu_gate_destroy(tu_gate *g)
{
    (void)g;
    atomic_fetch_sub(&live_gates, 1);
}

void tu_gate_open(tu_gate *g)
{
    atomic_store(&g->open, 1);
    futex_wake_all(&g->open);
}

void tu_gate_arrive(tu_gate *g)
{
    atomic_fetch_add(&g->arrived, 1);
    futex_wake_all(&g->arrived);
}

bool tu_gate_wait_open(tu_gate *g, double timeout)
{
    double dl = tu_now() + timeout;
    while (!atomic_load(&g->open) && tu_now() < dl)
        futex_wait(&g->open, 0, dl);
    return atomic_load(&g->open) != 0;
}

void tu_gate_pass(tu_gate *g)
{
    tu_gate_arrive(g);
    tu_gate_wait_open(g, TU_SAFETY);
}

bool tu_gate_await(tu_gate *g, int n, double timeout)
{
    double dl = tu_now() + timeout;
    for (;;) {
        int a = atomic_load(&g->arrived);
        if (a >= n)
            return true;
        if (tu_now() >= dl)
            return false;
        futex_wait(&g->arrived, a, dl);
    }
}

bool tu_gate_is_open(tu_gate *g)
{
    return atomic_load(&g->open) != 0;
}

int tu_gate_arrivals(tu_gate *g)
{
    return atomic_load(&g->arrived);
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

#ifdef TU_CO_SHARED
#include "core/concur_impl.h"
/* test_coro_shared and the _cos builds: every coroutine pool's stacks are shared
 * (coroutine_shared_stack), frames copied off the stack and back at each switch. */
__attribute__((constructor)) static void stacks_shared(void)
{
    concur__co_shared_on = true;
}
#endif

#ifdef TU_CO_IOPOLL
#include "core/concur_impl.h"
/* test_coro_iopoll: every coroutine pool's loops poll their rings (coroutine_io_poll): a
 * kernel thread takes the reads and writes, and waits watch for completions first. */
__attribute__((constructor)) static void rings_polled(void)
{
    concur__co_io_poll_on = true;
}
#endif

concur_pool *tu_pool(int max_workers)
{
    concur_pool_opts o = {.engine = TU_ENGINE, .max_workers = max_workers};
    return tu_pool_opts(&o);
}

concur_pool *tu_pool_opts(const concur_pool_opts *opts)
{
    /* catches options in a _proc build that forgot .engine = TU_ENGINE */
    cr_assert(!(TU_PROC || TU_CO) || (opts && opts->engine == TU_ENGINE),
              "a test's pool options must set .engine = TU_ENGINE");
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

void tu_assert_int_result(concur_future *f, int want, const char *what)
{
    const void *d = NULL;
    size_t len = 0;
    int rc = concur_future_collect(f, TU_SAFETY, &d, &len);
    cr_assert_eq(rc, 0, "%s: rc %d (%s)", what, rc, rc ? concur_future_error_message(f) : "");
    cr_assert_eq(len, sizeof(int), "%s", what);
    int v;
    memcpy(&v, d, sizeof v);
    cr_assert_eq(v, want, "%s: %d != %d", what, v, want);
}

/* ---- commands a task leaves running ----------------------------------------------- */

void tu_fifo_make(char *path, size_t cap)
{
    char dir[] = "/tmp/concur-test-XXXXXX";
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    cr_assert_lt((size_t)snprintf(path, cap, "%s/pid", dir), cap);
    cr_assert_eq(mkfifo(path, 0600), 0, "mkfifo: %s", strerror(errno));
}

void tu_fifo_remove(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    (void)unlink(path);
    if (slash) {
        *slash = '\0';
        (void)rmdir(dir);
    }
}

pid_t tu_fifo_read_pid(const char *path, double timeout)
{
    /* O_RDWR: the open does not wait for a writer; the poll does, with a deadline. */
    int fd = open(path, O_RDWR | O_CLOEXEC);
    cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
    char buf[32];
    size_t n = 0;
    double end = tu_now() + timeout;
    while (n == 0 || buf[n - 1] != '\n') {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        double left = end - tu_now();
        cr_assert_gt(left, 0, "no pid came through %s", path);
        if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0)
            continue; /* EINTR or the time passed: the assertion above tells */
        ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
        cr_assert_gt(r, 0, "read %s", path);
        n += (size_t)r;
        cr_assert_lt(n, sizeof(buf) - 1, "not a pid");
    }
    close(fd);
    buf[n] = '\0';
    pid_t pid = (pid_t)strtol(buf, NULL, 10);
    cr_assert_gt(pid, 0, "not a pid: %s", buf);
    return pid;
}

bool tu_pid_ends_within(pid_t pid, double timeout)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return errno == ESRCH; /* gone already */
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int n;
    do
        n = poll(&pf, 1, (int)(timeout * 1000));
    while (n < 0 && errno == EINTR);
    close(fd);
    return n == 1;
}

int tu_task_run_sleeper(concur_task *t, const void *in, size_t len)
{
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd), "echo $$ > '%.*s'; exec sleep 30", (int)len, (const char *)in);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    concur_prog_output o;
    int rc = concur_run_prog(argv, NULL, 0, NULL, 0, &o);
    concur_prog_output_free(&o);
    return rc ? concur_task_fail(t, rc, "concur_run_prog") : 0;
}

int tu_task_leave_sleeper(concur_task *t, const void *in, size_t len)
{
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd), "sleep 30 </dev/null >/dev/null 2>&1 & echo $! > '%.*s'",
             (int)len, (const char *)in);
    return system(cmd) == 0 ? 0 : concur_task_fail(t, CONCUR_ETASK, "system() failed");
}
