/*
 * sys/os.h - the OS layer: file descriptors, processes and the event loop, written once for
 * every form that needs them (the runner, fork calls; a coroutine scheduler later).
 *
 *   sys/fd.c    whole reads and writes (EINTR and partial transfers handled), closing, fd
 *               flags, pipes, eventfds used as wake-ups;
 *   sys/proc.c  pidfds (open, signal, reap with waitid(P_PIDFD)) and posix_spawn of a program
 *               into a process group of its own with only fds 0, 1 and 2;
 *   sys/loop.c  one epoll loop: fds with a user tag, a wake-up eventfd any thread (or a
 *               signal handler) can poke, one-shot timers in a pairing heap, and a wait that
 *               returns the ready fds and then the timers that fell due.
 *
 * Conventions: functions return 0 (or a count, an fd) on success and -errno on failure,
 * unless they say otherwise; every fd they create is O_CLOEXEC; nothing here prints, installs
 * a signal handler or keeps global state. Internal to the library (prefix concur__).
 */
#ifndef CONCUR_SYS_OS_H
#define CONCUR_SYS_OS_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

/* Nanoseconds on CLOCK_MONOTONIC. */
static inline uint64_t concur__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One pause in a spin on memory another CPU writes. */
static inline void concur__cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* ---------------------------------------------------------------- fds (sys/fd.c) */

/* Closes *fd if it is open (>= 0) and sets it to -1. A failed close() still releases the fd
 * on Linux, so there is nothing to report. */
void concur__close(int *fd);

/* Writes all @n bytes to the blocking @fd, continuing after EINTR and partial writes. 0 or
 * -errno. Async-signal-safe. */
int concur__write_all(int fd, const void *p, size_t n);

/* The same with send(MSG_NOSIGNAL) on a socket (a peer that is gone gives -EPIPE, never
 * SIGPIPE) and write() on anything else. Async-signal-safe. */
int concur__send_all(int fd, const void *p, size_t n);

/* Writes all of @iov (@n entries; the array is modified) to the blocking @fd. 0 or -errno.
 * Async-signal-safe. */
int concur__writev_all(int fd, struct iovec *iov, int n);

/* Drops the first @done bytes from the @*n entries at *iov (after a partial writev() or
 * sendmsg()): whole entries are skipped (*iov and *n move on; empty entries too), a partial
 * one is trimmed. */
void concur__iov_advance(struct iovec **iov, int *n, size_t done);

/* One read() of up to @n bytes, retried after EINTR: the count (0 at EOF) or -errno
 * (-EAGAIN on an empty non-blocking fd). */
ssize_t concur__read_some(int fd, void *p, size_t n);

/* Reads until @n bytes arrived or EOF: the count (< n only at EOF) or -errno. */
ssize_t concur__read_full(int fd, void *p, size_t n);

int concur__set_nonblock(int fd);
int concur__set_cloexec(int fd);

/* pipe2(O_CLOEXEC); with @nonblock_read the read end p[0] is also O_NONBLOCK (a loop reads
 * it, a child writes the other end blocking). On failure both are -1. */
int concur__pipe(int p[2], bool nonblock_read);

/* An eventfd used as a wake-up: O_CLOEXEC | O_NONBLOCK, counter 0. The fd or -errno. */
int concur__eventfd(void);
/* Adds one to the counter: 0, or -errno (a full counter is not an error: a wake-up is
 * pending anyway). Async-signal-safe; any thread. */
int concur__event_post(int efd);
/* Resets the counter (the wake-ups so far are consumed). */
void concur__event_drain(int efd);

/* A bell between two processes: a pipe, both ends O_CLOEXEC | O_NONBLOCK (p[0] is polled and
 * drained, p[1] rung). A pipe, not an eventfd: its wake-up is a sync one, which lets the
 * scheduler run the sleeper on the ringer's CPU. 0 or -errno (both -1). */
int concur__bell(int p[2]);
/* Rings the bell through its write end: 0 (also when it is full: a ring is pending), or
 * -errno. Async-signal-safe. */
int concur__bell_ring(int fd);
/* Takes every pending ring from the read end. */
void concur__bell_drain(int fd);

/* Whether everything written into the socket @fd has been read by its peer: 1, 0 (some is
 * unread), or -errno. (SIOCOUTQ: on AF_UNIX it counts the memory of the unread buffers.) */
int concur__sock_drained(int fd);

/* Shared memory another process can map: a memfd (O_CLOEXEC) of @size bytes, mapped
 * read-write and shared at *map with its pages populated (no page fault on first use). The
 * fd in *fd (to pass on, then close); 0 or -errno, with *fd = -1 and *map = NULL. */
int concur__shm_create(size_t size, int *fd, void **map);

/* ---------------------------------------------------------------- processes (sys/proc.c) */

/* A pidfd for @pid (close-on-exec by definition): the fd, or -errno (-ESRCH: already
 * reaped; -ENOSYS: a kernel or libc without pidfds). */
int concur__pidfd_open(pid_t pid);

/* Sends @sig through @pidfd (no pid-reuse race). 0 or -errno (-ESRCH: it has been reaped). */
int concur__pidfd_kill(int pidfd, int sig);

/* Calls fn(child, arg) for each child of thread @tid of process @pid, as
 * /proc/PID/task/TID/children lists them; reads it without malloc or stdio (usable in the
 * fork server). 0, or -errno when the list cannot be read (-ENOENT: the thread is gone, or
 * the kernel lacks CONFIG_PROC_CHILDREN). */
int concur__for_each_child(pid_t pid, pid_t tid, void (*fn)(pid_t child, void *arg), void *arg);

/* Kills the process of @pidfd (pid @pid) and what it runs: it is stopped (SIGSTOP), so it
 * starts nothing more; each of its children is killed (SIGKILL) with the process group it
 * leads (the runner's commands), round after round while new ones appear (a subreaper gets
 * its descendants' orphans as they die; each round waits for the last one's deaths, 2 s at
 * most in all); then the process gets SIGKILL. Returns the last signal's result: 0, or
 * -errno (-ESRCH: it had been reaped). A kernel without the children lists kills the
 * process alone. */
int concur__pidfd_kill_tree(int pidfd, pid_t pid);

/* Reaps the child of @pidfd with waitid(P_PIDFD, WEXITED), retried after EINTR; @nohang:
 * WNOHANG. Returns 1 with *si filled when it was reaped, 0 when it still runs (@nohang),
 * or -errno (-ECHILD: someone else reaped it, e.g. SIGCHLD ignored). */
int concur__reap(int pidfd, siginfo_t *si, bool nohang);

/* What a spawned program's fd 0, 1 or 2 becomes: an fd of the caller (>= 0, dup2'ed), the
 * caller's own (KEEP), or /dev/null (NULLDEV). */
enum { CONCUR__STDIO_KEEP = -1, CONCUR__STDIO_NULLDEV = -2 };

typedef struct concur__spawn_req {
    char *const *argv; /* argv[0] is searched in $PATH (posix_spawnp) */
    char *const *envp;
    const char *cwd; /* NULL: this process's */
    int stdio[3];
} concur__spawn_req;

/*
 * Starts a program with posix_spawnp: in a new process group of its own (so that a signal
 * to the group reaches its whole tree), with only fds 0, 1 and 2 (closefrom(3) in the spawn
 * actions, on top of O_CLOEXEC), every signal at its default action and an empty signal
 * mask, whatever this process ignores or blocks. Returns:
 *   0             started: *pid and *pidfd are set;
 *   a positive    errno: posix_spawnp failed to start it (ENOENT, EACCES, ...): the
 *                 program's failure, nothing is left behind;
 *   a negative    code: the set-up failed (or no pidfd could be opened: the child was then
 *                 killed and reaped); nothing is left behind.
 */
int concur__spawn(const concur__spawn_req *rq, pid_t *pid, int *pidfd);

/* ---------------------------------------------------------------- the loop (sys/loop.c) */

/*
 * A one-shot timer, embedded in its owner (no allocation: arming never fails). Armed, it is
 * a node of its loop's pairing heap, ordered by (when, arming order); it fires once, at the
 * first wait that ends at or after @when, and is then disarmed. Zero-initialised is
 * disarmed.
 */
typedef struct concur__timer {
    uint64_t when; /* CLOCK_MONOTONIC ns */
    uint64_t seq;  /* arming order: equal deadlines fire first armed, first fired */
    uint64_t tag;  /* reported in the timer's event */
    struct concur__timer *child, *next, *prev; /* prev: previous sibling, or the parent */
    bool armed;
} concur__timer;

/*
 * The loop. One per thread: its wait and its timers belong to the thread that waits on it.
 * add / mod / del / close and wake are plain syscalls and may be called from any thread
 * (wake also from a signal handler), as long as the loop exists.
 */
typedef struct concur__loop {
    int ep;   /* epoll fd, or -1 */
    int wake; /* eventfd in the set with tag CONCUR__LOOP_WAKE, or -1 */
    concur__timer *root;
    uint64_t seq;
    int parked_rc; /* set by concur__loop_wait when a coroutine's wait was interrupted */
    struct concur__ring *ring; /* io_uring beside the epoll set (sys/ring.c), or NULL */
} concur__loop;

/* A coroutine's wait for a loop, set by the coroutine engine on its loop threads: suspends
 * the calling coroutine until @fd (an epoll fd) is readable or @timeout_ms passes (-1: no
 * limit), so a loop run inside a coroutine (the runner's) lets the other coroutines run.
 * Returns 0 (ready, or the time passed), 1 when the caller is no coroutine (wait the
 * thread's way), or CONCUR_ECANCELED / CONCUR_ETASKTIMEOUT when the coroutine was
 * interrupted: concur__loop_wait then returns no events at once and sets parked_rc, and
 * later waits of that loop block the thread (the loop's owner is expected to wind down). */
extern _Thread_local int (*concur__loop_park)(int fd, int timeout_ms);

/* A loop that owns nothing (what concur__loop_fini leaves). */
#define CONCUR__LOOP_NONE ((concur__loop){.ep = -1, .wake = -1})

/* The tag of the wake-up's event. Tags are the user's otherwise (any other value). */
#define CONCUR__LOOP_WAKE UINT64_MAX

/* A ready fd (events: the EPOLL* bits that happened), a timer that fell due (events 0) or
 * a finished read or write of the ring (events 0, res: its result). */
typedef struct concur__event {
    uint64_t tag;
    uint32_t events;
    int32_t res; /* ring completions: the byte count or -errno; 0 otherwise */
} concur__event;

int concur__loop_init(concur__loop *l);
/* Closes the loop's fds and disarms the timers still armed (their owners must still exist).
 * Accepts CONCUR__LOOP_NONE. */
void concur__loop_fini(concur__loop *l);

/* Watches @fd for @events (EPOLLIN, EPOLLOUT, ...), reported with @tag. */
int concur__loop_add(concur__loop *l, int fd, uint32_t events, uint64_t tag);
int concur__loop_mod(concur__loop *l, int fd, uint32_t events, uint64_t tag);
int concur__loop_del(concur__loop *l, int fd);
/* Unwatches *fd, then closes it (concur__close). An fd is unwatched before it is closed:
 * a copy held by another process (a fork) would keep its registration alive. */
void concur__loop_close(concur__loop *l, int *fd);

/* Makes the current or next wait return (with an event tagged CONCUR__LOOP_WAKE). Any
 * thread; async-signal-safe. 0 or -errno. */
int concur__loop_wake(concur__loop *l);

/* Arms @t (re-arms it if armed) to fire at @when with @tag. The loop's thread only. */
void concur__timer_arm(concur__loop *l, concur__timer *t, uint64_t when, uint64_t tag);
/* Disarms @t (nothing if it is not armed). The loop's thread only. */
void concur__timer_cancel(concur__loop *l, concur__timer *t);
/* The earliest armed deadline, UINT64_MAX when no timer is armed. */
uint64_t concur__loop_next(const concur__loop *l);

/*
 * Waits until an fd is ready, the loop is woken or the nearest timer is due (without a
 * timer and without @poll: indefinitely; @poll: returns at once). Fills @ev with up to @max
 * events, the ready fds first (a wake-up is drained and reported as CONCUR__LOOP_WAKE), then
 * the timers due, earliest first (they are disarmed; those that do not fit stay armed, due,
 * for the next wait). Returns the count, 0 after a signal interrupted the wait (EINTR), or
 * -errno.
 */
int concur__loop_wait(concur__loop *l, concur__event *ev, int max, bool poll);

/* ---------------------------------------------------------------- the ring (sys/ring.c) */

/*
 * An io_uring beside a loop's epoll set, for reads and writes that complete in the kernel:
 * a read is submitted without first trying it, and the wait for its data costs no epoll_ctl
 * and no extra syscall (the loop waits in io_uring_enter, with the epoll set watched by a
 * poll request of the ring). Optional: without liburing at build time, or on a kernel that
 * lacks what it needs (Linux 5.11: IORING_FEAT_EXT_ARG, NODROP, RW_CUR_POS) or refuses
 * io_uring, concur__loop_ring fails and the loop works on epoll alone. The loop's thread
 * only, as the wait.
 */

/* Tests set it (before any loop is made) to run the epoll way where a ring would be used:
 * concur__loop_ring then fails with -ENOSYS. */
extern bool concur__ring_off;

/* Gives @l a ring; with @poll, one that a kernel thread polls (SQPOLL; an ordinary one where
 * the kernel refuses that), whose waits watch for completions for a while before they
 * sleep. 0, or -ENOSYS (not built in, or the kernel lacks a feature), or -errno of
 * io_uring_setup (EPERM where it is disabled, ENOMEM). concur__loop_fini frees it. */
int concur__loop_ring(concur__loop *l, bool poll);

/* Whether @l's ring is polled by a kernel thread (tests). */
bool concur__loop_ring_polled(const concur__loop *l);

/* Queues a read (@write false) or a write of up to @n bytes at @fd's file position, with
 * @buf, which must stay valid until its completion comes back from concur__loop_wait as an
 * event tagged @tag (events 0, res: what read()/write() would return, as -errno). 0, or
 * -EBUSY when the ring cannot take it (try the epoll way). Submitted at the next wait. */
int concur__loop_rw(concur__loop *l, bool write, int fd, void *buf, size_t n, uint64_t tag);

/* Asks the kernel to cancel the read or write tagged @tag: its completion still comes, with
 * res -ECANCELED (or its result, if it was done first). 0 or -EBUSY. */
int concur__loop_rw_cancel(concur__loop *l, uint64_t tag);

/* For sys/loop.c: true when reads or writes are in flight or queued, so the wait goes
 * through the ring; and that wait (timeout @ms as epoll_wait's), which puts the ring's
 * completions in @ev (at most @max) and sets *@ep_ready when the epoll set has events. */
bool concur__ring_busy(const struct concur__ring *r);
int concur__ring_wait(struct concur__ring *r, int ep, int ms, concur__event *ev, int max,
                      bool *ep_ready);
void concur__ring_free(struct concur__ring *r);

#endif
