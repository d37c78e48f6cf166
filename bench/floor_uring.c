/* floor_uring - the speed floor of co_pingpong: one thread, one io_uring, nothing else.
 *
 *   floor_uring co_pingpong
 *
 * Two sides of a non-blocking socketpair bounce one byte, as concur_co's two coroutines do,
 * but with no loop, no coroutines and no epoll set: each half round trip is one
 * io_uring_enter that submits this side's write and its next read and waits for the other
 * side's read to complete. 1,000 warm-up round trips, then 20,000. Prints "RESULT
 * co_pingpong floor us_per_rt V us".
 *
 * Then the same with a ring that a kernel thread polls (SQPOLL, as concur's
 * coroutine_io_poll): submitting costs no system call, and each side watches the completion
 * queue instead of waiting in io_uring_enter. Prints "NOTE co_pingpong floor: polled ring
 * V us per round trip" (or why it could not run).
 */
#include "bench_util.h"

#include <liburing.h>
#include <stdbool.h>
#include <sys/socket.h>

enum { ROUNDS = 20000, WARM = 1000 };

/* Queues side @s's write of one byte and its next read, then waits for the other side's
 * read (tag 1 - s). Returns 0, or 1 when the ring misbehaves. */
static bool g_polled; /* the ring is SQPOLL: watch the completion queue, no waiting enter */

/* The next completion: from the queue as soon as it is there (polled ring), or by waiting
 * in io_uring_enter after submitting. */
static int next_cqe(struct io_uring *r, struct io_uring_cqe **c)
{
    if (!g_polled)
        return io_uring_submit_and_wait(r, 1) < 0 ? -1 : io_uring_wait_cqe(r, c);
    if (io_uring_submit(r) < 0)
        return -1;
    while (io_uring_peek_cqe(r, c) != 0) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    return 0;
}

static int half(struct io_uring *r, const int *sv, int s, char *bufs)
{
    struct io_uring_sqe *w = io_uring_get_sqe(r), *rd = io_uring_get_sqe(r);
    if (!w || !rd)
        return 1;
    io_uring_prep_write(w, sv[s], &bufs[2 + s], 1, (uint64_t)-1);
    io_uring_sqe_set_data64(w, 10 + (unsigned)s);
    w->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_prep_read(rd, sv[s], &bufs[s], 1, (uint64_t)-1);
    io_uring_sqe_set_data64(rd, (unsigned)s);
    for (;;) {
        struct io_uring_cqe *c;
        if (next_cqe(r, &c) < 0)
            return 1;
        uint64_t tag = io_uring_cqe_get_data64(c);
        int res = c->res;
        io_uring_cqe_seen(r, c);
        if (res != 1)
            return 1;
        if (tag == (uint64_t)(1 - s))
            return 0;
    }
}

/* Runs the exchange on a fresh ring set up with @flags: us per round trip, or -1 when the
 * ring cannot be made (-2: it failed midway). */
static double exchange(unsigned flags)
{
    int sv[2];
    struct io_uring r;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return -2;
    struct io_uring_params pa = {.flags = flags, .sq_thread_idle = 10};
    if (io_uring_queue_init_params(64, &r, &pa) < 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    g_polled = flags & IORING_SETUP_SQPOLL;
    char bufs[4] = {0, 0, 'a', 'b'};
    double us = -2;
    /* Side 1's first read waits in the kernel before side 0 writes. */
    struct io_uring_sqe *rd = io_uring_get_sqe(&r);
    io_uring_prep_read(rd, sv[1], &bufs[1], 1, (uint64_t)-1);
    io_uring_sqe_set_data64(rd, 1);
    if (io_uring_submit(&r) >= 0) {
        uint64_t t0 = 0;
        int i;
        for (i = -WARM; i < ROUNDS; i++) {
            if (i == 0)
                t0 = bench_now_ns();
            if (half(&r, sv, 0, bufs) || half(&r, sv, 1, bufs))
                break;
        }
        if (i == ROUNDS)
            us = (double)(bench_now_ns() - t0) / 1e3 / ROUNDS;
    }
    io_uring_queue_exit(&r);
    close(sv[0]);
    close(sv[1]);
    return us;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "co_pingpong") != 0) {
        bench_usage(argv[0], "co_pingpong");
        return 2;
    }
    double us = exchange(0);
    if (us == -1) {
        printf("SKIPPED io_uring is not available here\n");
        return 0;
    }
    if (us < 0) {
        fprintf(stderr, "floor_uring: the ring failed\n");
        return 1;
    }
    bench_result("co_pingpong", "floor", "us_per_rt", us, "us");
    double polled = exchange(IORING_SETUP_SQPOLL);
    if (polled >= 0)
        printf("NOTE co_pingpong floor: polled ring (SQPOLL) %.3f us per round trip\n", polled);
    else
        printf("NOTE co_pingpong floor: no polled ring here (SQPOLL %s)\n",
               polled == -1 ? "refused" : "failed midway");
    return 0;
}
