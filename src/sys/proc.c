/*
 * proc.c - child processes: pidfds (open, signal, reap) and spawning a program.
 *
 * pidfds name one process for good: a signal sent or a wait made through one can never reach
 * another process that was given the same pid later. Every caller keeps a pidfd from the
 * moment its child exists until it has reaped it through that pidfd.
 *
 * Spawning: posix_spawnp (vfork-like in glibc: it returns once the program runs, or with
 * the error that stopped it) into a new process group, with the fd actions that leave the
 * program fds 0, 1 and 2 only, default signal dispositions and an empty mask: a program
 * started here sees none of this process's signal set-up.
 */
#include "sys/os.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int concur__pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : fd;
#else
    (void)pid;
    return -ENOSYS;
#endif
}

int concur__pidfd_kill(int pidfd, int sig)
{
#ifdef SYS_pidfd_send_signal
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) == 0 ? 0 : -errno;
#else
    (void)pidfd;
    (void)sig;
    return -ENOSYS;
#endif
}

/* Appends the decimal digits of @v (> 0) at @p; returns the end. */
static char *put_uint(char *p, pid_t v)
{
    char d[16];
    size_t k = 0;
    for (; v > 0 && k < sizeof(d); v /= 10)
        d[k++] = (char)('0' + v % 10);
    while (k > 0)
        *p++ = d[--k];
    return p;
}

int concur__for_each_child(pid_t pid, pid_t tid, void (*fn)(pid_t child, void *arg), void *arg)
{
    char path[80] = "/proc/", *p = path + 6;
    p = put_uint(p, pid);
    memcpy(p, "/task/", 6);
    p = put_uint(p + 6, tid);
    memcpy(p, "/children", sizeof("/children"));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char buf[512];
    pid_t cur = 0;
    int rc = 0;
    for (;;) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = -errno;
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] >= '0' && buf[i] <= '9') {
                cur = cur * 10 + (buf[i] - '0');
            } else {
                if (cur > 0)
                    fn(cur, arg);
                cur = 0;
            }
        }
    }
    if (cur > 0)
        fn(cur, arg);
    (void)close(fd);
    return rc;
}

/* ---- killing a process with what it runs ---- */

enum { TREE_MAX = 256, TREE_ROUNDS = 16, TREE_WAIT_MS = 2000 };

struct tree {
    pid_t killed[TREE_MAX];
    int pidfd[TREE_MAX]; /* of each one killed, to wait for its end; -1: none */
    size_t n, fresh;     /* fresh: killed this round */
};

/* A child of the stopped process: not reaped (its parent cannot wait), so neither its pid
 * nor the group it leads can be anyone else's yet. */
static void kill_child_of_stopped(pid_t pid, void *arg)
{
    struct tree *t = arg;
    for (size_t i = 0; i < t->n; i++)
        if (t->killed[i] == pid)
            return;
    if (getpgid(pid) == pid)
        (void)kill(-pid, SIGKILL); /* a command the runner started: its whole group */
    (void)kill(pid, SIGKILL);
    if (t->n < TREE_MAX) {
        t->killed[t->n] = pid;
        int fd = concur__pidfd_open(pid);
        t->pidfd[t->n++] = fd >= 0 ? fd : -1;
    }
    t->fresh++;
}

/* Waits (up to @ms in all) until the processes killed this round have died, so that their
 * own children have been re-parented to the stopped subreaper when it is listed again. */
static void wait_round(struct tree *t, size_t from, int ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0); /* cannot fail for this clock */
    for (size_t i = from; i < t->n; i++) {
        if (t->pidfd[i] < 0)
            continue;
        for (;;) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long spent = (long)(now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
            struct pollfd pf = {.fd = t->pidfd[i], .events = POLLIN};
            int n = poll(&pf, 1, spent >= ms ? 0 : (int)(ms - spent));
            if (n >= 0 || errno != EINTR)
                break;
        }
    }
}

static void list_threads_children(pid_t pid, struct tree *t)
{
    char path[40] = "/proc/";
    memcpy(put_uint(path + 6, pid), "/task", sizeof("/task"));
    DIR *d = opendir(path);
    if (!d) {
        (void)concur__for_each_child(pid, pid, kill_child_of_stopped, t);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        long tid = strtol(e->d_name, NULL, 10);
        if (tid > 0)
            (void)concur__for_each_child(pid, (pid_t)tid, kill_child_of_stopped, t);
    }
    (void)closedir(d);
}

int concur__pidfd_kill_tree(int pidfd, pid_t pid)
{
    int rc = concur__pidfd_kill(pidfd, SIGSTOP);
    if (rc != 0)
        return rc; /* reaped already (-ESRCH), or no pidfds */
    struct tree t = {.n = 0};
    for (int round = 0; round < TREE_ROUNDS; round++) {
        size_t from = t.n;
        t.fresh = 0;
        list_threads_children(pid, &t);
        if (!t.fresh)
            break;
        wait_round(&t, from, TREE_WAIT_MS / TREE_ROUNDS);
    }
    for (size_t i = 0; i < t.n; i++)
        if (t.pidfd[i] >= 0)
            (void)close(t.pidfd[i]);
    return concur__pidfd_kill(pidfd, SIGKILL);
}

int concur__reap(int pidfd, siginfo_t *si, bool nohang)
{
    memset(si, 0, sizeof(*si));
    int r;
    do
        r = waitid((idtype_t)P_PIDFD, (id_t)pidfd, si, WEXITED | (nohang ? WNOHANG : 0));
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    return si->si_pid != 0; /* WNOHANG and still running: si_pid stays 0 */
}

/* fd 0, 1 and 2 of the program, then closefrom(3) and the working directory. */
static int file_actions(posix_spawn_file_actions_t *fa, const concur__spawn_req *rq)
{
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        if (rq->stdio[i] >= 0)
            rc = posix_spawn_file_actions_adddup2(fa, rq->stdio[i], i);
        else if (rq->stdio[i] == CONCUR__STDIO_NULLDEV)
            rc = posix_spawn_file_actions_addopen(fa, i, "/dev/null", i ? O_WRONLY : O_RDONLY, 0);
    }
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(fa, 3);
    if (!rc && rq->cwd)
        rc = posix_spawn_file_actions_addchdir_np(fa, rq->cwd);
    return rc;
}

/* A new process group (so a signal to the group reaches the whole tree), default signal
 * dispositions and an empty mask. */
static int attributes(posix_spawnattr_t *at)
{
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    int rc = posix_spawnattr_setflags(at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                              POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawnattr_setpgroup(at, 0);
    if (!rc)
        rc = posix_spawnattr_setsigmask(at, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(at, &all);
    return rc;
}

int concur__spawn(const concur__spawn_req *rq, pid_t *pid, int *pidfd)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    *pid = 0;
    *pidfd = -1;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc)
        return -rc;
    if ((rc = posix_spawnattr_init(&at)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return -rc;
    }
    rc = file_actions(&fa, rq);
    if (!rc)
        rc = attributes(&at);
    if (rc) {
        rc = -rc;
        goto out;
    }
    pid_t p;
    rc = posix_spawnp(&p, rq->argv[0], &fa, &at, rq->argv, rq->envp);
    if (rc) /* positive: the program could not be started */
        goto out;
    int fd = concur__pidfd_open(p);
    if (fd < 0) {
        /* Without a pidfd the child cannot be waited for safely: end its group now. */
        rc = fd;
        (void)kill(-p, SIGKILL);
        while (waitpid(p, NULL, 0) < 0 && errno == EINTR)
            ;
        goto out;
    }
    *pid = p;
    *pidfd = fd;
out:
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    return rc;
}
