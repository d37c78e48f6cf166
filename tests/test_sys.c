/*
 * test_sys.c - the OS layer (src/sys): fd helpers, the event loop (timers, wake-ups, fd
 * events), process spawning and reaping, the wire codec (frames and crash records through
 * real sockets) and the descriptions of a process's fate.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/concur_impl.h"
#include "sys/os.h"
#include "sys/wire.h"
#include "testutil.h"

TestSuite(sys, .timeout = TU_TIMEOUT);

/* ---- fds ------------------------------------------------------------------------------ */

Test(sys, pipe_flags_and_whole_transfers)
{
    int p[2];
    cr_assert_eq(concur__pipe(p, true), 0);
    cr_assert(fcntl(p[0], F_GETFD) & FD_CLOEXEC);
    cr_assert(fcntl(p[1], F_GETFD) & FD_CLOEXEC);
    cr_assert(fcntl(p[0], F_GETFL) & O_NONBLOCK, "the read end does not block");
    cr_assert_not(fcntl(p[1], F_GETFL) & O_NONBLOCK, "the write end blocks");
    char buf[8];
    cr_assert_eq(concur__read_some(p[0], buf, sizeof buf), -EAGAIN);
    char a[] = "abc", b[] = "defgh";
    struct iovec iov[3] = {{a, 3}, {NULL, 0}, {b, 5}};
    cr_assert_eq(concur__writev_all(p[1], iov, 3), 0);
    cr_assert_eq(concur__write_all(p[1], "!", 1), 0);
    concur__close(&p[1]);
    cr_assert_eq(p[1], -1, "closed fds read -1");
    cr_assert_eq(concur__read_full(p[0], buf, sizeof buf), 8);
    cr_assert_arr_eq(buf, "abcdefgh", 8);
    cr_assert_eq(concur__read_full(p[0], buf, sizeof buf), 1, "short only at EOF");
    cr_assert_eq(buf[0], '!');
    concur__close(&p[0]);
    concur__close(&p[0]); /* closing twice is a no-op */
}

Test(sys, send_all_to_a_gone_peer_is_epipe_not_sigpipe)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    concur__close(&sv[1]);
    cr_assert_eq(concur__send_all(sv[0], "x", 1), -EPIPE);
    concur__close(&sv[0]);
    int p[2];
    cr_assert_eq(concur__pipe(p, false), 0);
    cr_assert_eq(concur__send_all(p[1], "yz", 2), 0, "a pipe gets write()");
    char buf[2];
    cr_assert_eq(concur__read_full(p[0], buf, 2), 2);
    concur__close(&p[0]);
    concur__close(&p[1]);
}

/* ---- the loop --------------------------------------------------------------------------- */

/* Collects up to @want events, waiting. */
static int collect(concur__loop *l, concur__event *ev, int want)
{
    int got = 0;
    double dl = tu_now() + TU_SAFETY;
    while (got < want && tu_now() < dl) {
        int n = concur__loop_wait(l, ev + got, want - got, false);
        cr_assert_geq(n, 0);
        got += n;
    }
    return got;
}

Test(sys, timers_fire_in_deadline_order)
{
    concur__loop l;
    cr_assert_eq(concur__loop_init(&l), 0);
    enum { N = 8 };
    concur__timer t[N];
    memset(t, 0, sizeof t);
    static const int order[N] = {5, 2, 7, 0, 3, 6, 1, 4}; /* ms offsets x 4, shuffled */
    uint64_t base = now_ns();
    for (int i = 0; i < N; i++)
        concur__timer_arm(&l, &t[i], base + (uint64_t)(order[i] + 1) * 4000000u, (uint64_t)i);
    /* A re-arm moves a timer; a cancelled one never fires. */
    concur__timer_arm(&l, &t[0], base + 40000000u, 0); /* the last now */
    concur__timer_cancel(&l, &t[3]);
    cr_assert_not(t[3].armed);
    concur__event ev[N];
    int n = collect(&l, ev, N - 1);
    cr_assert_eq(n, N - 1);
    uint64_t prev = 0;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ev[i].events, 0u, "a timer's event");
        cr_assert_neq(ev[i].tag, 3u, "the cancelled timer fired");
        uint64_t when = t[ev[i].tag].when;
        cr_assert_geq(when, prev, "timer %llu fired out of order", (unsigned long long)ev[i].tag);
        cr_assert_leq(when, now_ns(), "fired before its deadline");
        cr_assert_not(t[ev[i].tag].armed, "a fired timer is disarmed");
        prev = when;
    }
    cr_assert_eq(ev[n - 1].tag, 0u, "the re-armed timer fires last");
    cr_assert_eq(concur__loop_next(&l), UINT64_MAX);
    concur__loop_fini(&l);
}

Test(sys, timer_heap_orders_many_and_ties_by_arming)
{
    concur__loop l;
    cr_assert_eq(concur__loop_init(&l), 0);
    enum { N = 500 };
    static concur__timer t[N];
    memset(t, 0, sizeof t);
    unsigned seed = 12345;
    /* Deadlines in the past (all due), many equal; random re-arms and cancels between. */
    for (int i = 0; i < N; i++)
        concur__timer_arm(&l, &t[i], 1 + rand_r(&seed) % 50, (uint64_t)i);
    for (int k = 0; k < N; k++) {
        int i = rand_r(&seed) % N;
        if (k % 3 == 0)
            concur__timer_cancel(&l, &t[i]);
        else
            concur__timer_arm(&l, &t[i], 1 + rand_r(&seed) % 50, (uint64_t)i);
    }
    int armed = 0;
    for (int i = 0; i < N; i++)
        armed += t[i].armed;
    concur__event ev[64];
    int got = 0;
    uint64_t pw = 0, ps = 0;
    for (;;) {
        int n = concur__loop_wait(&l, ev, 64, true);
        cr_assert_geq(n, 0);
        if (!n)
            break;
        for (int k = 0; k < n; k++) {
            const concur__timer *x = &t[ev[k].tag];
            cr_assert(x->when > pw || (x->when == pw && x->seq > ps),
                      "due timers come earliest first, equal ones in arming order");
            pw = x->when;
            ps = x->seq;
        }
        got += n;
    }
    cr_assert_eq(got, armed, "every armed timer fires once");
    concur__loop_fini(&l);
}

static void *waker(void *arg)
{
    tu_sleep(0.05); /* the main thread is (most likely) asleep in the wait by then */
    if (concur__loop_wake(arg) != 0) /* no cr_assert off the test's thread */
        abort();
    return NULL;
}

Test(sys, wakeup_from_another_thread)
{
    concur__loop l;
    cr_assert_eq(concur__loop_init(&l), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, waker, &l), 0);
    concur__event ev[4];
    int n = concur__loop_wait(&l, ev, 4, false); /* no timer: waits for the wake-up only */
    cr_assert_eq(n, 1);
    cr_assert_eq(ev[0].tag, CONCUR__LOOP_WAKE);
    pthread_join(th, NULL);
    /* Wake-ups before a wait coalesce into one event, and are consumed by it. */
    cr_assert_eq(concur__loop_wake(&l), 0);
    cr_assert_eq(concur__loop_wake(&l), 0);
    cr_assert_eq(concur__loop_wait(&l, ev, 4, true), 1);
    cr_assert_eq(concur__loop_wait(&l, ev, 4, true), 0);
    concur__loop_fini(&l);
    cr_assert_eq(l.ep, -1);
    cr_assert_eq(l.wake, -1);
}

Test(sys, fd_events_carry_their_tag_and_come_before_timers)
{
    concur__loop l;
    cr_assert_eq(concur__loop_init(&l), 0);
    int p[2];
    cr_assert_eq(concur__pipe(p, true), 0);
    cr_assert_eq(concur__loop_add(&l, p[0], EPOLLIN, 42), 0);
    concur__timer t = {0};
    concur__timer_arm(&l, &t, 1, 7); /* due */
    cr_assert_eq(concur__write_all(p[1], "x", 1), 0);
    concur__event ev[4];
    cr_assert_eq(concur__loop_wait(&l, ev, 4, false), 2);
    cr_assert_eq(ev[0].tag, 42u);
    cr_assert(ev[0].events & EPOLLIN);
    cr_assert_eq(ev[1].tag, 7u);
    cr_assert_eq(concur__loop_mod(&l, p[0], EPOLLIN, 43), 0);
    cr_assert_eq(concur__loop_wait(&l, ev, 1, false), 1);
    cr_assert_eq(ev[0].tag, 43u);
    concur__loop_close(&l, &p[0]);
    cr_assert_eq(p[0], -1);
    cr_assert_eq(concur__loop_wait(&l, ev, 4, true), 0, "an unwatched fd reports nothing");
    concur__close(&p[1]);
    concur__loop_fini(&l);
}

/* The ring's reads and writes, with the loop's fds and timers beside them; @poll: a ring
 * polled by a kernel thread (coroutine_io_poll). */
static void ring_case(bool poll)
{
    concur__loop l;
    cr_assert_eq(concur__loop_init(&l), 0);
    if (concur__loop_ring(&l, poll) != 0) {
        concur__loop_fini(&l);
        cr_skip_test("no io_uring here: the loop works on epoll alone");
    }
    if (poll != concur__loop_ring_polled(&l)) {
        concur__loop_fini(&l);
        cr_skip_test("no SQPOLL here: the polled ring is an ordinary one");
    }
    int a[2], b[2];
    cr_assert_eq(concur__pipe(a, true), 0);
    cr_assert_eq(concur__pipe(b, true), 0);
    char buf[8] = {0}, buf2[8];
    /* A read queued before its data: the wait blocks in the ring until the data comes. */
    cr_assert_eq(concur__loop_rw(&l, false, a[0], buf, sizeof buf, 5), 0);
    cr_assert_eq(concur__loop_wait(&l, (concur__event[4]){0}, 4, true), 0, "nothing yet");
    cr_assert_eq(concur__write_all(a[1], "abc", 3), 0);
    concur__event ev[4];
    cr_assert_eq(collect(&l, ev, 1), 1);
    cr_assert_eq(ev[0].tag, 5u);
    cr_assert_eq(ev[0].res, 3);
    cr_assert_eq(memcmp(buf, "abc", 3), 0);
    /* While a read is in flight, an fd of the set and a timer still come back. */
    cr_assert_eq(concur__loop_rw(&l, false, a[0], buf, sizeof buf, 6), 0);
    cr_assert_eq(concur__loop_add(&l, b[0], EPOLLIN, 42), 0);
    cr_assert_eq(concur__write_all(b[1], "x", 1), 0);
    cr_assert_eq(collect(&l, ev, 1), 1);
    cr_assert_eq(ev[0].tag, 42u);
    cr_assert_eq(read(b[0], buf2, sizeof buf2), 1);
    concur__timer t = {0};
    concur__timer_arm(&l, &t, 1, 7); /* due */
    cr_assert_eq(collect(&l, ev, 1), 1);
    cr_assert_eq(ev[0].tag, 7u);
    /* A cancelled read completes with -ECANCELED and took nothing. */
    cr_assert_eq(concur__loop_rw_cancel(&l, 6), 0);
    cr_assert_eq(collect(&l, ev, 1), 1);
    cr_assert_eq(ev[0].tag, 6u);
    cr_assert_eq(ev[0].res, -ECANCELED);
    cr_assert_eq(concur__write_all(a[1], "d", 1), 0);
    cr_assert_eq(read(a[0], buf2, sizeof buf2), 1);
    /* A write comes back with its byte count. */
    cr_assert_eq(concur__loop_rw(&l, true, a[1], "ef", 2, 8), 0);
    cr_assert_eq(collect(&l, ev, 1), 1);
    cr_assert_eq(ev[0].tag, 8u);
    cr_assert_eq(ev[0].res, 2);
    cr_assert_eq(read(a[0], buf2, sizeof buf2), 2);
    concur__loop_close(&l, &b[0]);
    concur__close(&a[0]);
    concur__close(&a[1]);
    concur__close(&b[1]);
    concur__loop_fini(&l);
    cr_assert_null(l.ring);
}

Test(sys, ring_reads_complete_with_their_tag_and_the_set_still_reports) { ring_case(false); }
Test(sys, polled_ring_reads_complete_with_their_tag_and_the_set_still_reports) { ring_case(true); }

/* ---- processes ------------------------------------------------------------------------ */

/* The fd numbers open in process @pid, as a bit set of the first 64. */
static uint64_t fds_of(pid_t pid, int *count)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    cr_assert_not_null(d);
    uint64_t set = 0;
    *count = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        ++*count;
        if (fd < 64)
            set |= 1ull << fd;
    }
    closedir(d);
    return set;
}

/* The hex mask of a "Sig...:" line of /proc/pid/status. */
static unsigned long long status_mask(pid_t pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    cr_assert_not_null(f);
    unsigned long long v = ~0ull;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl))
            v = strtoull(line + kl, NULL, 16);
    fclose(f);
    return v;
}

Test(sys, spawn_own_group_only_stdio_default_signals)
{
    /* A stray fd without O_CLOEXEC, a blocked and an ignored signal: none may reach it. */
    int stray = dup(2);
    cr_assert_geq(stray, 3);
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, &usr1, &old), 0);
    struct sigaction ign = {.sa_handler = SIG_IGN}, prev;
    cr_assert_eq(sigaction(SIGUSR2, &ign, &prev), 0);

    int in[2], out[2];
    cr_assert_eq(concur__pipe(in, false), 0);
    cr_assert_eq(concur__pipe(out, false), 0);
    char *argv[] = {"cat", NULL};
    extern char **environ;
    concur__spawn_req rq = {.argv = argv, .envp = environ, .stdio = {in[0], out[1], CONCUR__STDIO_NULLDEV}};
    pid_t pid;
    int pidfd;
    cr_assert_eq(concur__spawn(&rq, &pid, &pidfd), 0);
    cr_assert_gt(pid, 0);
    cr_assert(fcntl(pidfd, F_GETFD) & FD_CLOEXEC);
    concur__close(&in[0]);
    concur__close(&out[1]);

    cr_assert_eq(getpgid(pid), pid, "the child leads a process group of its own");
    /* cat echoed a line: it is past its start-up (the loader opens and closes files of its
     * own), in its read loop, so its fds and signals are the ones it was given. */
    siginfo_t si;
    cr_assert_eq(concur__reap(pidfd, &si, true), 0, "still running");
    cr_assert_eq(concur__write_all(in[1], "hello", 5), 0);
    char buf[16];
    cr_assert_eq(concur__read_full(out[0], buf, 5), 5);
    cr_assert_arr_eq(buf, "hello", 5);
    int count;
    uint64_t set = fds_of(pid, &count);
    cr_assert_eq(set, 7u, "fds 0, 1, 2 only (set %#llx)", (unsigned long long)set);
    cr_assert_eq(count, 3);
    cr_assert_eq(status_mask(pid, "SigBlk:"), 0ull, "empty signal mask");
    /* glibc's posix_spawn leaves its two internal signals (32 and 33, below SIGRTMIN, which
     * no application can use) ignored: every other one is at its default. */
    unsigned long long ignored = status_mask(pid, "SigIgn:") & ~(3ull << 31);
    cr_assert_eq(ignored, 0ull, "no ignored signal (%#llx)", ignored);

    concur__close(&in[1]); /* EOF: cat ends */
    cr_assert_eq(concur__reap(pidfd, &si, false), 1);
    concur__ended e = concur__ended_siginfo(&si);
    cr_assert_eq(e.how, CONCUR__ENDED_EXITED);
    cr_assert_eq(e.value, 0);
    cr_assert_eq(concur__read_full(out[0], buf, sizeof buf), 0, "nothing more");
    concur__close(&out[0]);
    concur__close(&pidfd);
    close(stray);
    cr_assert_eq(sigaction(SIGUSR2, &prev, NULL), 0);
    cr_assert_eq(pthread_sigmask(SIG_SETMASK, &old, NULL), 0);
}

Test(sys, spawn_of_a_missing_program_is_its_errno)
{
    char *argv[] = {"concur-test-no-such-program", NULL};
    extern char **environ;
    concur__spawn_req rq = {.argv = argv, .envp = environ,
                            .stdio = {CONCUR__STDIO_NULLDEV, CONCUR__STDIO_KEEP, CONCUR__STDIO_KEEP}};
    pid_t pid = 1;
    int pidfd = 1;
    cr_assert_eq(concur__spawn(&rq, &pid, &pidfd), ENOENT);
    cr_assert_eq(pid, 0);
    cr_assert_eq(pidfd, -1);
    cr_assert_eq(waitpid(-1, NULL, WNOHANG), -1, "nothing left to reap");
}

Test(sys, pidfd_kill_and_reap)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        pause();
        _exit(0);
    }
    int pidfd = concur__pidfd_open(pid);
    cr_assert_geq(pidfd, 0);
    cr_assert_eq(concur__pidfd_kill(pidfd, SIGKILL), 0);
    siginfo_t si;
    cr_assert_eq(concur__reap(pidfd, &si, false), 1);
    concur__ended e = concur__ended_siginfo(&si);
    cr_assert_eq(e.how, CONCUR__ENDED_KILLED);
    cr_assert_eq(e.value, SIGKILL);
    cr_assert_eq(concur__pidfd_kill(pidfd, SIGKILL), -ESRCH, "reaped: no signal goes anywhere");
    cr_assert_lt(concur__reap(pidfd, &si, false), 0, "reaped already");
    concur__close(&pidfd);
}

/* ---- the wire codec ------------------------------------------------------------------- */

/* Reads one answer from @fd (blocking) into @rx, as a proxy would. Returns the end. */
static enum concur__rx_end receive(int fd, concur__rx *rx)
{
    char scratch[1024];
    for (;;) {
        void *dst;
        size_t room = concur__rx_room(rx, scratch, sizeof scratch, &dst);
        if (!room)
            break;
        ssize_t r = concur__read_some(fd, dst, room);
        cr_assert_geq(r, 0);
        if (r == 0)
            break;
        concur__rx_feed(rx, (size_t)r);
    }
    return concur__rx_end(rx);
}

/* Feeds @n bytes from memory to @rx (until it wants no more). Returns the bytes taken. */
static size_t feed(concur__rx *rx, const void *buf, size_t n)
{
    char scratch[64];
    size_t off = 0;
    while (off < n) {
        void *dst;
        size_t room = concur__rx_room(rx, scratch, sizeof scratch, &dst);
        if (!room)
            break;
        size_t k = room < n - off ? room : n - off;
        memcpy(dst, (const char *)buf + off, k);
        concur__rx_feed(rx, k);
        off += k;
    }
    return off;
}

struct sender {
    int fd;
    concur_task *t[2];
    int rc[2];
};

static void *send_two(void *arg)
{
    struct sender *s = arg;
    for (int i = 0; i < 2; i++) {
        concur__result_tx tx;
        struct iovec *iov = concur__result_frame(&tx, 100 + (uint64_t)i, s->rc[i], s->t[i]);
        if (concur__writev_all(s->fd, iov, CONCUR__RESULT_IOV) != 0)
            abort();
    }
    return NULL;
}

Test(sys, result_frames_round_trip_through_a_socket)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    enum { BIG = 3 << 20 };
    concur_task a = {0}, b = {0};
    unsigned char *big = concur__buf_alloc(&a.out, BIG);
    cr_assert_not_null(big);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (unsigned char)(i * 31 + 7);
    b.msg = strdup("it went wrong");
    struct sender s = {.fd = sv[1], .t = {&a, &b}, .rc = {0, CONCUR_EIO}};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, send_two, &s), 0);

    concur__rx rx;
    concur__rx_init(&rx, 100, true);
    cr_assert_eq(receive(sv[0], &rx), CONCUR__RX_RESULT);
    cr_assert_eq(rx.rh.code, 0);
    cr_assert_not(rx.nomem);
    cr_assert_eq(rx.out.len, (size_t)BIG);
    cr_assert_eq(memcmp(buf_data(&rx.out), big, BIG), 0, "the result arrives exactly");
    cr_assert_null(rx.text, "no message with a result");
    concur__rx_free(&rx);
    /* The first answer left the second one on the stream, whole. */
    concur__rx_init(&rx, 101, true);
    cr_assert_eq(receive(sv[0], &rx), CONCUR__RX_RESULT);
    cr_assert_eq(rx.rh.code, CONCUR_EIO);
    cr_assert_eq(rx.out.len, 0u);
    cr_assert_str_eq(rx.text, "it went wrong");
    concur__rx_free(&rx);
    pthread_join(th, NULL);
    concur__buf_free(&a.out);
    free(b.msg);
    concur__close(&sv[0]);
    concur__close(&sv[1]);
}

Test(sys, result_frame_rules)
{
    /* A positive code travels as CONCUR_ETASK; a result goes only with code 0, a message
     * only with an error. */
    concur_task t = {.msg = "m"};
    cr_assert_eq(concur__buf_set(&t.out, "xyz", 3), 0);
    concur__result_tx tx;
    struct iovec *iov = concur__result_frame(&tx, 9, 3, &t);
    cr_assert_eq(tx.rh.code, CONCUR_ETASK);
    cr_assert_eq(iov[2].iov_len, 0u);
    cr_assert_eq(iov[4].iov_len, 1u);
    iov = concur__result_frame(&tx, 9, 0, &t);
    cr_assert_eq(iov[2].iov_len, 3u);
    cr_assert_eq(iov[4].iov_len, 0u);
    cr_assert_eq(tx.h.len, 16u + 3 + 8);
    cr_assert_eq(tx.h.type, (uint32_t)CONCUR__FR_RESULT);
    cr_assert_eq(tx.h.id, 9u);
    concur__buf_free(&t.out);
}

/* A whole RESULT frame in @buf (at most @cap bytes) from the parts. Returns its length. */
static size_t make_result(unsigned char *buf, uint64_t id, int32_t code, const char *out,
                          uint64_t out_len, const char *msg, uint64_t msg_len)
{
    concur__frame h = {.type = CONCUR__FR_RESULT, .id = id, .len = 16 + out_len + 8 + msg_len};
    concur__result_head rh = {.code = code, .out_len = out_len};
    size_t off = 0;
    memcpy(buf + off, &h, sizeof h);
    off += sizeof h;
    memcpy(buf + off, &rh, sizeof rh);
    off += sizeof rh;
    memcpy(buf + off, out, (size_t)out_len);
    off += (size_t)out_len;
    memcpy(buf + off, &msg_len, 8);
    off += 8;
    memcpy(buf + off, msg, (size_t)msg_len);
    return off + (size_t)msg_len;
}

static enum concur__rx_end rx_of(const void *buf, size_t n, uint64_t id, bool want_out)
{
    concur__rx rx;
    concur__rx_init(&rx, id, want_out);
    feed(&rx, buf, n);
    enum concur__rx_end e = concur__rx_end(&rx);
    concur__rx_free(&rx);
    return e;
}

Test(sys, malformed_answers_are_bad_at_once)
{
    static unsigned char buf[8192];
    size_t n = make_result(buf, 5, 0, "ab", 2, "", 0);
    cr_assert_eq(rx_of(buf, n, 5, true), CONCUR__RX_RESULT);
    cr_assert_eq(rx_of(buf, n - 1, 5, true), CONCUR__RX_NONE, "cut short");
    cr_assert_eq(rx_of(buf, n, 6, true), CONCUR__RX_BAD, "another task's id");
    cr_assert_eq(rx_of(buf, n, 5, false), CONCUR__RX_BAD, "a hook answers without bytes");
    n = make_result(buf, 5, CONCUR_EIO, "ab", 2, "", 0);
    cr_assert_eq(rx_of(buf, n, 5, true), CONCUR__RX_BAD, "result bytes with an error");
    n = make_result(buf, 5, 7, "", 0, "", 0);
    cr_assert_eq(rx_of(buf, n, 5, true), CONCUR__RX_BAD, "a positive code");
    n = make_result(buf, 5, 0, "", 0, "", 0);
    ((concur__frame *)(void *)buf)->type = 77;
    cr_assert_eq(rx_of(buf, n, 5, true), CONCUR__RX_BAD, "an unknown type");
    n = make_result(buf, 5, 0, "ab", 2, "", 0);
    ((concur__frame *)(void *)buf)->len += 1; /* lengths disagree */
    cr_assert_eq(rx_of(buf, n, 5, true), CONCUR__RX_BAD);
    n = make_result(buf, 5, 0, "", 0, "", 0);
    ((concur__result_head *)(void *)(buf + 24))->out_len = 1ull << 62; /* past the frame */
    cr_assert_eq(rx_of(buf, n, 5, true), CONCUR__RX_BAD, "no allocation from a bad length");
}

Test(sys, long_messages_are_capped_and_the_rest_skipped)
{
    static unsigned char buf[3 * CONCUR__MSG_KEEP];
    static char msg[2 * CONCUR__MSG_KEEP];
    memset(msg, 'm', sizeof msg);
    size_t n = make_result(buf, 1, CONCUR_EIO, "", 0, msg, sizeof msg);
    concur__rx rx;
    concur__rx_init(&rx, 1, true);
    cr_assert_eq(feed(&rx, buf, n), n, "the whole frame is consumed");
    cr_assert_eq(concur__rx_end(&rx), CONCUR__RX_RESULT);
    cr_assert_eq(rx.text_len, CONCUR__MSG_KEEP);
    cr_assert_eq(strlen(rx.text), CONCUR__MSG_KEEP);
    concur__rx_free(&rx);
}

static int g_guards;
static void count_guard(void *arg, bool enter)
{
    (void)arg;
    g_guards += enter ? 1 : -1;
    cr_assert(g_guards == 0 || g_guards == 1, "guard calls pair up");
}

Test(sys, crash_record_through_a_socket)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    concur__crash_prime();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(sv[0]);
        if (concur__crash_setup(sv[1], false) != 0)
            _exit(90);
        concur__crash_set_id(77);
        raise(SIGSEGV);
        _exit(91);
    }
    concur__close(&sv[1]);
    int pidfd = concur__pidfd_open(pid);
    cr_assert_geq(pidfd, 0);
    concur__rx rx;
    concur__rx_init(&rx, 1, true);
    rx.guard = count_guard;
    cr_assert_eq(receive(sv[0], &rx), CONCUR__RX_CRASH, "read to EOF");
    cr_assert_eq(rx.sig, SIGSEGV);
    cr_assert_eq(rx.h.id, 77u);
    cr_assert(rx.h.flags & CONCUR__FRF_TO_EOF);
    cr_assert_not_null(rx.text);
    cr_assert_gt(rx.text_len, 0u, "a backtrace");
    cr_assert_eq(strlen(rx.text), rx.text_len);
    cr_assert_eq(g_guards, 0);
    siginfo_t si;
    cr_assert_eq(concur__reap(pidfd, &si, false), 1);
    concur__ended e = concur__ended_siginfo(&si);
    concur__fate_ctx ctx = {.who = "child process", .when = " before reporting"};
    concur__fate fa;
    concur__fate_describe(&fa, &e, &ctx);
    cr_assert_str_eq(fa.text, "child process died before reporting: killed by signal 11 "
                              "(Segmentation fault)",
                     "the process died of the signal itself: %s", fa.text);
    cr_assert_eq(fa.signal, SIGSEGV);
    cr_assert_eq(fa.code, CONCUR_ECRASHED);
    concur__rx_free(&rx);
    concur__close(&pidfd);
    concur__close(&sv[0]);
}

Test(sys, a_muted_crash_sends_nothing)
{
    int p[2];
    cr_assert_eq(concur__pipe(p, false), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(p[0]);
        if (concur__crash_setup(p[1], false) != 0)
            _exit(90);
        concur__crash_mute(true); /* as while a RESULT is being written */
        abort();
    }
    concur__close(&p[1]);
    char c;
    cr_assert_eq(concur__read_full(p[0], &c, 1), 0, "EOF, no CRASH frame");
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
    concur__close(&p[0]);
}

/* ---- fates ---------------------------------------------------------------------------- */

static const char *fate_of(concur__ended e, const concur__fate_ctx *ctx, concur__fate *fa)
{
    concur__fate_describe(fa, &e, ctx);
    return fa->text;
}

Test(sys, fate_descriptions)
{
    concur__fate fa;
    concur__fate_ctx w = {.who = "worker"};
    cr_assert_str_eq(fate_of(concur__ended_wstatus(SIGSEGV, 0), &w, &fa),
                     "worker died: killed by signal 11 (Segmentation fault)");
    cr_assert_eq(fa.signal, 11);
    cr_assert_eq(fa.exit_status, -1);
    cr_assert_not(fa.limit);
    cr_assert_str_eq(fate_of(concur__ended_wstatus(3 << 8, 0), &w, &fa),
                     "worker exited with status 3");
    cr_assert_eq(fa.signal, 0);
    cr_assert_eq(fa.exit_status, 3);
    cr_assert_str_eq(fate_of(concur__ended_wstatus(-1, 0), &w, &fa),
                     "worker ended (its exit status is unknown)");
    cr_assert_eq(fa.code, CONCUR_ECRASHED);

    concur__fate_ctx c = {.who = "child process", .when = " before reporting"};
    cr_assert_str_eq(fate_of(concur__ended_wstatus(4 << 8, 0), &c, &fa),
                     "child process exited with status 4 before reporting");
    cr_assert_str_eq(fate_of(concur__ended_siginfo(NULL), &c, &fa),
                     "child process ended before reporting (its exit status is unknown)");
    siginfo_t si = {.si_code = CLD_DUMPED, .si_status = SIGABRT};
    cr_assert_str_eq(fate_of(concur__ended_siginfo(&si), &c, &fa),
                     "child process died before reporting: killed by signal 6 (Aborted)");

    /* Limits: SIGXCPU, or SIGKILL with the CPU time at the limit, is the CPU limit; a
     * SIGKILL before it is not. A memory limit is named on anything else. */
    concur__fate_ctx lim = {.who = "worker", .cpu_limit_s = 2, .mem_limit = 1 << 20};
    cr_assert_str_eq(fate_of(concur__ended_wstatus(SIGXCPU, 0), &lim, &fa),
                     "worker exceeded its CPU time limit of 2 s");
    cr_assert(fa.limit);
    cr_assert_str_eq(fate_of(concur__ended_wstatus(SIGKILL, 2000000), &lim, &fa),
                     "worker exceeded its CPU time limit of 2 s");
    cr_assert(fa.limit);
    cr_assert_str_eq(fate_of(concur__ended_wstatus(SIGKILL, 1999999), &lim, &fa),
                     "worker died: killed by signal 9 (Killed) (memory limit of 1048576 bytes)");
    cr_assert_not(fa.limit);
    cr_assert_str_eq(fate_of(concur__ended_wstatus(1 << 8, 0), &lim, &fa),
                     "worker exited with status 1 (memory limit of 1048576 bytes)");
}

/* ---- big buffers kept for reuse (core/base.c) ----------------------------------------- */

Test(sys, a_freed_big_block_is_taken_again_by_its_class)
{
    concur__big_hold(); /* as a pool does */
    cr_assert_eq(concur__big_kept(), 0);
    size_t mib = (size_t)1 << 20;
    unsigned char *p = concur__big_alloc(mib + 1); /* class 1 MiB */
    cr_assert_not_null(p);
    memset(p, 0xab, mib + 1);
    concur__big_free(p);
    cr_assert(concur__big_kept() > mib && concur__big_kept() < 2 * mib);
    unsigned char *big = concur__big_alloc(mib + mib / 2); /* the same class, too big */
    cr_assert_neq(big, p, "a kept block smaller than the request is not taken");
    cr_assert(concur__big_kept() > mib, "and stays kept");
    unsigned char *q = concur__big_alloc(mib + 1);
    cr_assert_eq(q, p, "the kept block comes back");
    cr_assert_eq(q[0], 0xab, "with its pages (not a fresh block)");
    cr_assert_eq(concur__big_kept(), 0);
    q = concur__big_realloc(q, 3, 4 * mib); /* another class: a new block */
    cr_assert_not_null(q);
    cr_assert(q[0] == 0xab && q[2] == 0xab, "realloc keeps the bytes asked for");
    cr_assert(concur__big_kept() > mib && concur__big_kept() < 2 * mib,
              "the old block went to the cache");
    concur__big_free(q);
    concur__big_free(big);
    concur__big_unhold();
    cr_assert_eq(concur__big_kept(), 0, "the last unhold gives them back");
    p = concur__big_alloc(2 * mib);
    cr_assert_not_null(p);
    concur__big_free(p);
    cr_assert_eq(concur__big_kept(), 0, "nothing is kept without a holder");
}

Test(sys, small_and_huge_blocks_are_not_kept)
{
    concur__big_hold();
    void *s = concur__big_alloc(1000), *h = concur__big_alloc((size_t)64 << 20);
    cr_assert(s && h);
    concur__big_free(s);
    concur__big_free(h);
    concur__big_free(NULL);
    cr_assert_eq(concur__big_kept(), 0);
    concur__big_unhold();
}

Test(sys, the_cache_holds_64_MiB_at_most)
{
    enum { N = 20 };
    void *b[N];
    concur__big_hold();
    for (int i = 0; i < N; i++)
        cr_assert_not_null(b[i] = concur__big_alloc((size_t)4 << 20)); /* 80 MiB */
    for (int i = 0; i < N; i++)
        concur__big_free(b[i]);
    cr_assert(concur__big_kept() <= (size_t)64 << 20 && concur__big_kept() > (size_t)56 << 20,
              "%zu bytes kept", concur__big_kept());
    concur__big_drain();
    cr_assert_eq(concur__big_kept(), 0);
    concur__big_unhold();
}

static int twice_plus_one(concur_task *t, const void *in, void *out)
{
    (void)t;
    *(int *)out = *(const int *)in * 2 + 1;
    return 0;
}

static int echo_big(concur_task *t, const void *in, size_t len)
{
    return concur_task_return(t, in, len);
}

Test(sys, big_buffers_are_kept_while_a_pool_lives_and_freed_with_the_last)
{
    concur_pool *p;
    concur_pool_opts po = {.engine = CONCUR_ENGINE_PROCESSES, .max_workers = 2};
    cr_assert_eq(concur_pool_create(&p, &po), 0);
    size_t n = 1 << 20;
    int *in = malloc(n * sizeof(int)), *out = malloc(n * sizeof(int));
    cr_assert(in && out);
    for (size_t i = 0; i < n; i++)
        in[i] = (int)i;
    concur_map_opts o = CONCUR_MAP_OPTS_INIT;
    o.in_size = o.out_size = sizeof(int);
    o.chunk_size = 1 << 16; /* 256 KiB chunks: their inputs and results are big blocks */
    for (int pass = 0; pass < 2; pass++) {
        memset(out, 0, n * sizeof(int));
        cr_assert_eq(concur_map(p, twice_plus_one, &o, in, n, out, NULL), 0);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(out[i], (int)i * 2 + 1, "pass %d, item %zu", pass, i);
        cr_assert_gt(concur__big_kept(), 0, "pass %d: the chunks' buffers are kept", pass);
    }
    concur_future *f; /* a result freed after the last pool is gone is not kept */
    concur_pool *q;
    cr_assert_eq(concur_pool_create(&q, &po), 0);
    static char big[256 << 10];
    cr_assert_eq(concur_pool_submit(q, echo_big, big, sizeof big, &f), 0);
    cr_assert_eq(concur_future_wait(f, CONCUR_FOREVER), 0);
    concur_pool_destroy(q);
    concur_pool_destroy(p);
    cr_assert_eq(concur__big_kept(), 0, "the last pool's end gives them back");
    concur_future_release(f); /* its 256 KiB input and result */
    cr_assert_eq(concur__big_kept(), 0, "and later frees go back to malloc");
    free(in);
    free(out);
}
