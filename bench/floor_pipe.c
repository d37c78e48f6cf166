/* floor_pipe - the speed floor of the pp_latency* and pp_startup benches.
 *
 *   floor_pipe BENCH      BENCH: pp_latency | pp_latency_busy | pp_startup
 *
 * The least a process pool must do to get one small result from another process: a parent
 * and a forked child exchange one int (x -> 2x+1) over a pair of pipes, blocking read()
 * and write() on both sides, nothing else (no queue, no futures, no proxy thread, no
 * framing). Prints "RESULT BENCH floor <metric> <value> <unit>".
 *
 *   pp_latency       one child; 2 ms of sleep before each round trip (the child is blocked
 *                    in read() when the request comes); 100 warm-up, median of 1,000.
 *   pp_latency_busy  one child; round trips back to back; 1,000 warm-up, median of 10,000.
 *   pp_startup       fork() a child and do one round trip with it, the child then exits
 *                    (reaped, not timed); one warm-up, median of 20.
 *
 * The RESULT of the latency benches leaves the placement of the two processes to the
 * scheduler, like a pool does; on a VM the figure then depends mostly on whether the two
 * end up on the same CPU (a wake-up there is a context switch) or on two (a cross-CPU
 * wake-up of an idle vCPU, tens of us). So they also print NOTE lines with the same
 * measurement pinned to one CPU, pinned to two CPUs, and (pp_latency_busy) pinned to two
 * CPUs with both sides spinning on non-blocking reads instead of sleeping in read().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>

#include "bench_util.h"

static void die(const char *what)
{
    fprintf(stderr, "floor_pipe: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int read_int(int fd, int *x)
{
    ssize_t r;
    do
        r = read(fd, x, sizeof(*x));
    while (r < 0 && errno == EINTR);
    return r == (ssize_t)sizeof(*x) ? 0 : -1;
}

static void write_int(int fd, int x)
{
    ssize_t w;
    do
        w = write(fd, &x, sizeof(x));
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)sizeof(x))
        die("write");
}

/* Placement of the parent and the child: left to the scheduler (the RESULT), or pinned. */
typedef struct {
    int parent_cpu, child_cpu; /* -1: not pinned */
    bool spin;                 /* both sides busy-poll non-blocking reads */
} placement;

static const placement FREE = {-1, -1, false};

typedef struct {
    pid_t pid;
    int to, from; /* parent's ends: requests to the child, answers from it */
    bool spin;
} child_t;

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set))
        die("sched_setaffinity");
}

/* Reads one int; when spinning the fd is non-blocking and we retry on EAGAIN. */
static int get_int(int fd, int *x, bool spin)
{
    if (!spin)
        return read_int(fd, x);
    for (;;) {
        ssize_t r = read(fd, x, sizeof(*x));
        if (r == (ssize_t)sizeof(*x))
            return 0;
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        return -1;
    }
}

/* Forks a child that answers each int x on its request pipe with 2x+1, until EOF. */
static child_t start_child(placement m)
{
    int req[2], ans[2];
    int fl = O_CLOEXEC | (m.spin ? O_NONBLOCK : 0);
    if (pipe2(req, fl) || pipe2(ans, fl))
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        pin(m.child_cpu);
        close(req[1]);
        close(ans[0]);
        int x;
        while (get_int(req[0], &x, m.spin) == 0)
            write_int(ans[1], x * 2 + 1);
        _exit(0);
    }
    close(req[0]);
    close(ans[1]);
    return (child_t){pid, req[1], ans[0], m.spin};
}

static void stop_child(child_t c)
{
    close(c.to);
    close(c.from);
    while (waitpid(c.pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

static uint64_t round_trip(child_t c, int i)
{
    int y;
    uint64_t t0 = bench_now_ns();
    write_int(c.to, i);
    if (get_int(c.from, &y, c.spin))
        die("read");
    uint64_t dt = bench_now_ns() - t0;
    if (y != i * 2 + 1) {
        fprintf(stderr, "floor_pipe: wrong result\n");
        exit(1);
    }
    return dt;
}

static double latency_us(placement m, int warm, int n, long sleep_ns)
{
    cpu_set_t saved;
    if (sched_getaffinity(0, sizeof(saved), &saved))
        die("sched_getaffinity");
    uint64_t *t = malloc(sizeof(*t) * (size_t)n);
    if (!t)
        die("malloc");
    child_t c = start_child(m);
    pin(m.parent_cpu);
    struct timespec idle = {0, sleep_ns};
    for (int i = -warm; i < n; i++) {
        if (sleep_ns)
            nanosleep(&idle, NULL);
        uint64_t dt = round_trip(c, i);
        if (i >= 0)
            t[i] = dt;
    }
    stop_child(c);
    if (sched_setaffinity(0, sizeof(saved), &saved))
        die("sched_setaffinity");
    double us = bench_median_u64(t, (size_t)n) / 1000.0;
    free(t);
    return us;
}

static void latency(const char *bench, int warm, int n, long sleep_ns)
{
    bench_result(bench, "floor", "median_us", latency_us(FREE, warm, n, sleep_ns), "us");
    /* The pinned variants, on the first two CPUs we may run on. */
    cpu_set_t set;
    int cpus[2], k = 0;
    if (sched_getaffinity(0, sizeof(set), &set))
        die("sched_getaffinity");
    for (int i = 0; i < CPU_SETSIZE && k < 2; i++)
        if (CPU_ISSET(i, &set))
            cpus[k++] = i;
    if (k < 1)
        return;
    printf("NOTE %s floor: same CPU %.1f us", bench,
           latency_us((placement){cpus[0], cpus[0], false}, warm, n, sleep_ns));
    if (k == 2) {
        printf(", two CPUs %.1f us",
               latency_us((placement){cpus[0], cpus[1], false}, warm, n, sleep_ns));
        if (!sleep_ns)
            printf(", two CPUs spinning %.1f us",
                   latency_us((placement){cpus[0], cpus[1], true}, warm, n, sleep_ns));
    }
    printf(" (median round trip)\n");
    fflush(stdout);
}

static void startup(void)
{
    enum { N = 20 };
    uint64_t t[N];
    for (int k = -1; k < N; k++) {
        uint64_t t0 = bench_now_ns();
        child_t c = start_child(FREE);
        round_trip(c, k);
        uint64_t dt = bench_now_ns() - t0;
        stop_child(c);
        if (k >= 0)
            t[k] = dt;
    }
    bench_result("pp_startup", "floor", "first_result_ms", bench_median_u64(t, N) / 1e6, "ms");
}

int main(int argc, char **argv)
{
    const char *b = argc > 1 ? argv[1] : "";
    if (!strcmp(b, "pp_latency"))
        latency(b, 100, 1000, 2 * 1000000L);
    else if (!strcmp(b, "pp_latency_busy"))
        latency(b, 1000, 10000, 0);
    else if (!strcmp(b, "pp_startup"))
        startup();
    else {
        bench_usage(argv[0], "pp_latency pp_latency_busy pp_startup");
        return 2;
    }
    return 0;
}
