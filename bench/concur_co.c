/* concur_co - the coroutine engine's benches (bench/run.sh co_*).
 *
 *   concur_co BENCH     BENCH: co_switch | co_spawn | co_sleep | co_pingpong
 *
 *   co_switch    two coroutines on one loop yield to each other 2,000,000 times each:
 *                ns per switch (one yield hands the loop to the other coroutine).
 *   co_spawn     1,000,000 empty coroutines: submit (batches of 10,000), run, complete,
 *                wait, release: ns per task, the median of 3 passes (a NOTE gives the spread);
 *                from the main thread, and again from a coroutine ("concur_in_loop").
 *   co_sleep [N] N coroutines (default 100,000) each sleeping 1 s, all at once: wall seconds from the
 *                first submit to the last completion, and the process's peak RSS (KiB).
 *   co_pingpong  two coroutines on one loop bounce one byte over a non-blocking socketpair
 *                (concur_co_read / concur_co_write), 20,000 round trips: us per round trip.
 *
 * Every pool has one loop thread (the engine's default). Each bench runs twice, each time in
 * a process of its own: with a stack per coroutine (the default; "RESULT BENCH concur ...")
 * and with shared stacks (coroutine_shared_stack; "RESULT BENCH concur_shared ...");
 * co_pingpong a third time with a polled ring (coroutine_io_poll; "RESULT co_pingpong
 * concur_iopoll ...").
 */
#define _GNU_SOURCE
#include <concur.h>

#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

static void die(const char *what, int rc)
{
    fprintf(stderr, "%s: %s\n", what, concur_strerror(rc));
    exit(1);
}

static bool g_shared;  /* this process measures shared stacks */
static bool g_io_poll; /* ... or a polled io_uring (co_pingpong) */
static const char *g_sys = "concur";

static concur_pool *co_pool(void)
{
    concur_pool *p;
    concur_pool_opts o = {.engine = CONCUR_ENGINE_COROUTINES,
                          .coroutine_shared_stack = g_shared,
                          .coroutine_io_poll = g_io_poll};
    int rc = concur_pool_create(&p, &o);
    if (rc)
        die("concur_pool_create", rc);
    return p;
}

/* n empty inputs and room for n futures. */
static void arrays(size_t n, concur_input **ins, concur_future ***f)
{
    *ins = calloc(n, sizeof(**ins));
    *f = calloc(n, sizeof(**f));
    if (!*ins || !*f)
        die("calloc", CONCUR_ENOMEM);
}

static void wait_release(concur_future **f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = concur_future_collect(f[i], CONCUR_FOREVER, NULL, NULL);
        if (rc)
            die("a coroutine", rc);
        concur_future_release(f[i]);
    }
}

/* ---- co_switch ---- */

enum { SWITCHES = 2000000 };
static uint64_t g_t0, g_t1;

static int yielder(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)in, (void)len;
    if (!g_t0)
        g_t0 = bench_now_ns();
    for (int i = 0; i < SWITCHES; i++)
        if (concur_co_yield() != 0)
            return CONCUR_ETASK;
    g_t1 = bench_now_ns();
    return 0;
}

static void co_switch(void)
{
    concur_pool *p = co_pool();
    concur_future *f[2];
    concur_input ins[2] = {{NULL, 0}, {NULL, 0}};
    /* A warm-up pair, then the measured one. */
    for (int round = 0; round < 2; round++) {
        g_t0 = 0;
        int rc = concur_pool_submit_batch(p, yielder, ins, 2, f);
        if (rc)
            die("submit", rc);
        wait_release(f, 2);
    }
    bench_result("co_switch", g_sys, "ns_per_switch", (double)(g_t1 - g_t0) / (2.0 * SWITCHES),
                 "ns");
    concur_pool_destroy(p);
}

/* ---- co_spawn ---- */

enum { SPAWNS = 1000000, BATCH = 10000 };

static int empty(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)in, (void)len;
    return 0;
}

enum { PASSES = 3 };

typedef struct spawn_job {
    concur_pool *p;
    concur_input *ins;
    concur_future **f;
    uint64_t t[PASSES];
} spawn_job;

/* 5 warm-up batches, then 3 passes of SPAWNS, each timed into j->t. */
static void spawn_passes(spawn_job *j)
{
    for (int pass = -1; pass < PASSES; pass++) {
        int batches = pass < 0 ? 5 : SPAWNS / BATCH;
        uint64_t t0 = bench_now_ns();
        for (int k = 0; k < batches; k++) {
            int rc = concur_pool_submit_batch(j->p, empty, j->ins, BATCH, j->f);
            if (rc)
                die("submit", rc);
            wait_release(j->f, BATCH);
        }
        if (pass >= 0)
            j->t[pass] = bench_now_ns() - t0;
    }
}

static int spawner(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)len;
    spawn_job *j = *(spawn_job *const *)in;
    spawn_passes(j);
    return 0;
}

/* The median pass is the RESULT (the spread between passes is wide on a virtual machine
 * whose idle vCPUs are slow to wake). */
static void spawn_report(spawn_job *j, const char *sys)
{
    uint64_t lo = j->t[0], hi = j->t[0];
    for (int i = 1; i < PASSES; i++) {
        lo = j->t[i] < lo ? j->t[i] : lo;
        hi = j->t[i] > hi ? j->t[i] : hi;
    }
    printf("NOTE co_spawn %s passes: fastest %.1f, slowest %.1f ns per task\n", sys,
           (double)lo / SPAWNS, (double)hi / SPAWNS);
    bench_result("co_spawn", sys, "ns_per_task", bench_median_u64(j->t, PASSES) / SPAWNS, "ns");
}

/* From the main thread; then (default stacks only, as "concur_in_loop") from a coroutine of
 * the pool itself, as asyncio and gevent spawn: submitting, running and awaiting then stay
 * on the loop's thread, and no future crosses between CPUs. */
static void co_spawn(void)
{
    spawn_job j = {.p = co_pool()};
    arrays(BATCH, &j.ins, &j.f);
    spawn_passes(&j);
    spawn_report(&j, g_sys);
    if (!g_shared) {
        spawn_job *jp = &j;
        concur_future *f;
        int rc = concur_pool_submit(j.p, spawner, &jp, sizeof(jp), &f);
        if (rc)
            die("submit", rc);
        wait_release(&f, 1);
        spawn_report(&j, "concur_in_loop");
    }
    free(j.ins);
    free(j.f);
    concur_pool_destroy(j.p);
}

/* ---- co_sleep ---- */

enum { SLEEPERS = 100000 };

static int sleeper(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)in, (void)len;
    return concur_co_sleep(1.0);
}

static void co_sleep(size_t n)
{
    concur_pool *p = co_pool();
    concur_input *ins;
    concur_future **f;
    arrays(n, &ins, &f);
    uint64_t t0 = bench_now_ns();
    int rc = concur_pool_submit_batch(p, sleeper, ins, n, f);
    if (rc)
        die("submit", rc);
    wait_release(f, n);
    double wall = (double)(bench_now_ns() - t0) / 1e9;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    bench_result("co_sleep", g_sys, "wall_s", wall, "s");
    bench_result("co_sleep", g_sys, "peak_rss_kib", (double)ru.ru_maxrss, "kib");
    free(ins);
    free(f);
    concur_pool_destroy(p);
}

/* ---- co_pingpong ---- */

enum { ROUNDS = 20000 };
static int g_sv[2];

static int ping(concur_task *t, const void *in, size_t len)
{
    (void)t, (void)len;
    int side = *(const int *)in;
    char b = 'x';
    for (int i = 0; i < ROUNDS; i++) {
        if (side == 0 && concur_co_write(g_sv[0], &b, 1, -1) != 1)
            return CONCUR_ETASK;
        if (concur_co_read(g_sv[side], &b, 1, -1) != 1)
            return CONCUR_ETASK;
        if (side == 1 && concur_co_write(g_sv[1], &b, 1, -1) != 1)
            return CONCUR_ETASK;
    }
    return 0;
}

static void co_pingpong(void)
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, g_sv) != 0)
        die("socketpair", CONCUR_EIO);
    concur_pool *p = co_pool();
    int sides[2] = {0, 1};
    concur_input ins[2] = {{&sides[0], sizeof(int)}, {&sides[1], sizeof(int)}};
    concur_future *f[2];
    uint64_t t0 = bench_now_ns();
    int rc = concur_pool_submit_batch(p, ping, ins, 2, f);
    if (rc)
        die("submit", rc);
    wait_release(f, 2);
    bench_result("co_pingpong", g_sys, "us_per_rt",
                 (double)(bench_now_ns() - t0) / 1e3 / ROUNDS, "us");
    concur_pool_destroy(p);
    close(g_sv[0]);
    close(g_sv[1]);
}

static int run(int argc, char **argv)
{
    const char *b = argc > 1 ? argv[1] : "";
    if (!strcmp(b, "co_switch"))
        co_switch();
    else if (!strcmp(b, "co_spawn"))
        co_spawn();
    else if (!strcmp(b, "co_sleep"))
        co_sleep(argc > 2 ? strtoul(argv[2], NULL, 10) : SLEEPERS);
    else if (!strcmp(b, "co_pingpong"))
        co_pingpong();
    else {
        bench_usage(argv[0], "co_switch co_spawn co_sleep co_pingpong");
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int status = 0;
    /* Modes: own stacks, shared stacks, and for co_pingpong a polled ring. */
    int modes = argc > 1 && !strcmp(argv[1], "co_pingpong") ? 3 : 2;
    for (int mode = 0; mode < modes; mode++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
            die("fork", CONCUR_EIO);
        if (pid == 0) {
            g_shared = mode == 1;
            g_io_poll = mode == 2;
            g_sys = mode == 1 ? "concur_shared" : mode == 2 ? "concur_iopoll" : "concur";
            int rc = run(argc, argv);
            fflush(stdout);
            _exit(rc);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            status = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        if (status == 2)
            break; /* usage: once */
    }
    return status;
}
