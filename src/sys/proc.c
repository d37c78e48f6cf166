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

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
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
