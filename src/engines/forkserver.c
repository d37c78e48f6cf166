/*
 * forkserver.c - the fork server of a process pool, and the code map that says which
 * function pointers are valid in its workers.
 *
 * Why a fork server. fork() copies only the calling thread: a lock that another thread held
 * at that instant (malloc's, stdio's, the application's) stays locked forever in the child.
 * A process pool therefore forks the caller exactly once, at pool creation: that child is
 * the fork server, a single-threaded process that does nothing but fork worker processes on
 * request. Workers are forks of the server, so starting or replacing a worker at any later
 * time never forks the caller's (by then multithreaded) process. Locks held by other threads
 * of the caller at the moment of creation do stay held in the server and in every worker:
 * pool.h asks for process pools to be created early, before other threads take locks.
 *
 * Why the code map. Every worker is a fork of a fork of the caller's image as it was at pool
 * creation, so a function pointer into code mapped at that moment is the same function in
 * every worker; that is what lets tasks travel as plain pointers. concur__fs_create records
 * the executable mappings (from /proc/self/maps) just before forking the server, and submit
 * refuses functions outside them (say, in a library loaded later, or in a data buffer).
 *
 * Protocol. The parent and the server talk over a SOCK_SEQPACKET socketpair (message
 * boundaries kept), one request at a time under fs->mu:
 *
 *   server -> parent, once at start   int64 0 (ready), or -errno (setup failed; it exits)
 *   parent -> server, SPAWN           uint32 OP_SPAWN, with SCM_RIGHTS [worker socket,
 *                                      write end of the worker's status pipe, and the
 *                                      memfd of its answer ring and the write end of
 *                                      its bell if it has them]
 *   server -> parent, reply           int64 the worker's pid, or -errno
 *
 * The server forks the worker, which runs concur__worker_main on its socket (its other fds
 * are closed). The server keeps each worker's status pipe; SIGCHLD is blocked and read from
 * a signalfd, and on each one the server reaps with wait4(-1, WNOHANG) and writes every
 * reaped worker's concur__wstatus (wait status and CPU time) to that worker's pipe, then
 * closes it. So the proxy in
 * the parent learns how its process ended without being its parent, and no worker stays a
 * zombie. EOF on the request socket (the pool was destroyed; or the parent died or exec'd:
 * the parent's end is close-on-exec) makes the server SIGKILL and reap the workers left and
 * _exit; the parent reaps the server, which is its child.
 *
 * Children of a multithreaded fork. The server runs only system calls and async-signal-safe
 * functions (no malloc, no stdio, no locks): its table of workers lives in mmap'd memory. It
 * and the workers leave with _exit, so the caller's atexit handlers (and a sanitizer's leak
 * check) never run there. Both keep only their one socket and stdin/stdout/stderr (a missing
 * one is opened on /dev/null, so a task's printf can never write into a frame stream), with
 * the signal mask cleared and every disposition at its default; workers also die with their
 * server (PR_SET_PDEATHSIG, checked against the race with getppid()).
 *
 * Limits and the stop word. The pool's per-worker limits (RLIMIT_AS, RLIMIT_CPU) are set by
 * each worker on itself, never by the server; the server checks at start that they do not
 * exceed the hard limits it inherited (-EPERM otherwise, as its ready reply). The server
 * reaps with wait4(), so each status it reports carries the worker's CPU time, which tells
 * a kill at the CPU hard limit from other SIGKILLs. The stop word is one int in a
 * MAP_SHARED anonymous page mapped before the server is forked: the caller, the server and
 * every worker share it, the caller sets it (shutdown with cancel) and tasks read it. The
 * same mapping holds one cancel word per worker slot (process_pool.h).
 */
#include "engines/forkserver.h"
#include "engines/proc_chan.h"
#include "sys/os.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum { OP_SPAWN = 1 };

struct range {
    uintptr_t lo, hi; /* [lo, hi) */
};

struct concur__fs {
    pthread_mutex_t mu; /* one request at a time on req */
    int req;            /* the parent's end of the request socket */
    pid_t pid;          /* the server */
    concur__limits lim;
    _Atomic int *stop; /* the shared stop word (MAP_SHARED), or NULL */
    size_t shared_len; /* the mapping: the stop word, then one cancel word per slot */
    int nslots;
    size_t nranges;
    struct range *ranges; /* code mapped at creation: sorted, adjacent ones merged */
};

/* ---------------------------------------------------------------- the code map */

/* Reads /proc/self/maps into a NUL-terminated malloc'd string. */
static int read_maps(char **out)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    int rc = buf ? 0 : CONCUR_ENOMEM;
    while (!rc) {
        if (cap - len < 2) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = CONCUR_ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n > 0)
            len += (size_t)n;
        else if (n == 0)
            break;
        else if (errno != EINTR)
            rc = -errno;
    }
    (void)close(fd); /* read-only: nothing to lose */
    if (rc) {
        free(buf);
        return rc;
    }
    buf[len] = '\0';
    *out = buf;
    return 0;
}

/* The executable mappings of this process, in address order ("lo-hi r-xp ..." lines). */
static int code_map(struct range **out, size_t *nout)
{
    char *text = NULL;
    int rc = read_maps(&text);
    if (rc)
        return rc;
    size_t lines = 1;
    for (const char *c = text; *c; c++)
        lines += *c == '\n';
    struct range *r = malloc(lines * sizeof(*r));
    if (!r) {
        free(text);
        return CONCUR_ENOMEM;
    }
    size_t n = 0;
    for (char *line = text; *line;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        char *p;
        unsigned long long lo = strtoull(line, &p, 16), hi = 0;
        if (*p == '-')
            hi = strtoull(p + 1, &p, 16);
        /* p: " rwxp ...": the x bit is the third permission character */
        if (*p == ' ' && strlen(p) >= 4 && p[3] == 'x' && hi > lo) {
            if (n && r[n - 1].hi == (uintptr_t)lo)
                r[n - 1].hi = (uintptr_t)hi;
            else
                r[n++] = (struct range){(uintptr_t)lo, (uintptr_t)hi};
        }
        if (!end)
            break;
        line = end + 1;
    }
    free(text);
    *out = r;
    *nout = n;
    return 0;
}

bool concur__fs_code_ok(const concur__fs *fs, uintptr_t addr)
{
    size_t lo = 0, hi = fs->nranges; /* the first range with ranges[i].hi > addr */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (fs->ranges[mid].hi <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < fs->nranges && fs->ranges[lo].lo <= addr;
}

/* ---------------------------------------------------------------- in the children */

/* Closes every fd except 0-2 and @keep. */
/* Closes every fd above stdio but @a and @b (-1: none). */
static int close_others(int a, int b)
{
    int lo = a < b ? a : b, hi = a < b ? b : a;
    unsigned from = 3;
    for (int k = 0; k < 2; k++) {
        int keep = k ? hi : lo;
        if (keep < 0)
            continue;
        if ((unsigned)keep > from && close_range(from, (unsigned)keep - 1, 0) != 0)
            return -errno;
        from = (unsigned)keep + 1;
    }
    return close_range(from, ~0u, 0) != 0 ? -errno : 0;
}

/* Makes sure @fd is above stdio (moving it when the caller ran with 0-2 closed). The fd or -1
 * (then @fd is closed). */
static int above_stdio(int fd)
{
    if (fd < 0 || fd >= 3)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    (void)close(fd); /* a valid fd we own */
    return nfd;
}

/* Makes sure @fd and @also (-1: none) are above stdio, closes everything else, and opens
 * any missing stdio fd on /dev/null. Returns the fd or -1; *also may have moved. */
static int isolate_fd(int fd, int *also)
{
    fd = above_stdio(fd);
    *also = above_stdio(*also);
    if (fd < 0 || close_others(fd, *also))
        return -1;
    for (int s = 0; s < 3; s++)
        if (fcntl(s, F_GETFD) < 0) {
            int nfd = open("/dev/null", O_RDWR); /* takes the lowest free fd: s */
            if (nfd != s)
                return -1;
        }
    return fd;
}

/* Every disposition back to the default (the server and workers are our processes, started
 * from whatever the caller had installed). */
static int reset_signals(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int s = 1; s < NSIG; s++) {
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        /* EINVAL: a signal the C library reserves for itself, nothing to reset */
        if (sigaction(s, &dfl, NULL) != 0 && errno != EINVAL)
            return -errno;
    }
    return 0;
}

/* The worker, just forked by the server @server. */
static _Noreturn void worker_child(int sock, int ring_fd, int bell, pid_t server,
                                   const concur__limits *lim, const _Atomic int *stop)
{
    /* Die with the server; if it died before prctl took effect we were re-parented. What
     * the tasks leave running is re-parented here while the worker lives (and to the server,
     * which kills it, when the worker ends: kill_strays). */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != server)
        _exit(127);
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1); /* EINVAL (before Linux 3.4): they go to the
                                              server, which kills them when a worker ends */
    void *ring = NULL; /* none: every answer goes on the socket */
    if (ring_fd >= 0) {
        ring = mmap(NULL, RING_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd, 0);
        if (ring == MAP_FAILED)
            ring = NULL;
        (void)close(ring_fd); /* a valid fd we own */
    }
    if (!ring && bell >= 0) {
        (void)close(bell); /* a valid fd we own */
        bell = -1;
    }
    sock = isolate_fd(sock, &bell);
    sigset_t none;
    sigemptyset(&none);
    if (sock < 0 || (ring && bell < 0) || sigprocmask(SIG_SETMASK, &none, NULL) != 0)
        _exit(127);
    concur__worker_main(sock, ring, bell, lim, stop);
}

/* The server's table of live workers, in mmap'd memory (no malloc in the server). */
struct entry {
    pid_t pid;
    int status_fd;
};

struct table {
    struct entry *e;
    size_t n, cap;
};

static bool table_grow(struct table *t)
{
    size_t cap = t->cap * 2;
    void *m = mmap(NULL, cap * sizeof(struct entry), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return false;
    memcpy(m, t->e, t->n * sizeof(struct entry));
    if (t->e)
        (void)munmap(t->e, t->cap * sizeof(struct entry)); /* our own mapping */
    t->e = m;
    t->cap = cap;
    return true;
}

/* Hands a reaped worker's wait status and CPU time to its proxy and forgets the worker. */
static void report(struct table *t, pid_t pid, int status, const struct rusage *ru)
{
    concur__wstatus ws = {
        .status = status,
        .cpu_us = (uint64_t)ru->ru_utime.tv_sec * 1000000u + (uint64_t)ru->ru_utime.tv_usec +
                  (uint64_t)ru->ru_stime.tv_sec * 1000000u + (uint64_t)ru->ru_stime.tv_usec};
    for (size_t i = 0; i < t->n; i++) {
        if (t->e[i].pid != pid)
            continue;
        ssize_t w;
        do
            w = write(t->e[i].status_fd, &ws, sizeof(ws));
        while (w < 0 && errno == EINTR);
        /* EPIPE: the proxy is gone already and nobody asks; 16 bytes into an empty pipe
         * cannot be partial. */
        (void)close(t->e[i].status_fd);
        t->e[i] = t->e[--t->n];
        return;
    }
}

static bool is_worker(const struct table *t, pid_t pid)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->e[i].pid == pid)
            return true;
    return false;
}

static void kill_stray(pid_t pid, void *arg)
{
    const struct table *t = arg;
    if (pid <= 0 || is_worker(t, pid))
        return;
    /* Our child, not reaped yet: its pid (and the group it leads) cannot be reused. */
    if (getpgid(pid) == pid)
        (void)kill(-pid, SIGKILL); /* a command the runner started: its whole group */
    (void)kill(pid, SIGKILL);
}

/*
 * Processes a worker left running when it ended (the commands of a killed task, a daemon a
 * task started) are re-parented to the server, the subreaper of the workers' trees: every
 * child of the server that is not a worker is killed, with the process group it leads, and
 * is reaped as it dies (report ignores it). The children are listed by
 * /proc/PID/task/PID/children (concur__for_each_child: no malloc, no stdio); a kernel
 * without it (no CONFIG_PROC_CHILDREN) leaves them running, re-parented here until the
 * server ends.
 */
static void kill_strays(const struct table *t, pid_t self)
{
    (void)concur__for_each_child(self, self, kill_stray, (void *)t);
}

static void reap(struct table *t, int sfd, pid_t self)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) > 0) /* drain; EAGAIN ends it */
        ;
    bool reaped = false;
    for (;;) {
        int status;
        struct rusage ru;
        pid_t pid = wait4(-1, &status, WNOHANG, &ru);
        if (pid > 0) {
            reaped = true;
            report(t, pid, status, &ru);
        } else if (pid < 0 && errno == EINTR) {
            continue;
        } else {
            break; /* 0: none ended; ECHILD: no children */
        }
    }
    /* A worker, or a stray, ended: what it left is re-parented here by now (before its
     * SIGCHLD). Living workers keep their own trees' leftovers: whatever comes here is a
     * dead worker's. */
    if (reaped)
        kill_strays(t, self);
}

static bool reply(int req, int64_t v)
{
    for (;;) {
        if (send(req, &v, sizeof(v), MSG_NOSIGNAL) == (ssize_t)sizeof(v))
            return true;
        if (errno != EINTR)
            return false; /* the parent is gone */
    }
}

/* Serves one request. False when the server should end (EOF, or the parent is gone). */
static bool serve(int req, struct table *t, pid_t self, const concur__limits *lim,
                  const _Atomic int *stop)
{
    uint32_t op = 0;
    union {
        char buf[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } cm;
    struct iovec iov = {.iov_base = &op, .iov_len = sizeof(op)};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof(cm.buf)};
    ssize_t n = recvmsg(req, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN;
    if (n == 0)
        return false; /* EOF */
    int fds[4] = {-1, -1, -1, -1}, nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
            if (nfds < 4)
                fds[nfds++] = fd;
            else
                (void)close(fd);
        }
    }
    int64_t r;
    if (n != (ssize_t)sizeof(op) || op != OP_SPAWN || (nfds != 2 && nfds != 4)) {
        r = -EPROTO;
    } else if (t->n == t->cap && !table_grow(t)) {
        r = -ENOMEM;
    } else {
        pid_t pid = fork();
        if (pid == 0)
            worker_child(fds[0], fds[2], fds[3], self, lim, stop);
        r = pid < 0 ? -errno : pid;
        if (pid > 0) {
            t->e[t->n++] = (struct entry){pid, fds[1]};
            fds[1] = -1;
        }
    }
    for (int i = 0; i < 4; i++)
        if (fds[i] >= 0)
            (void)close(fds[i]);
    return reply(req, r);
}

/* Kills and reaps every worker left, and what they leave running, then leaves. */
static _Noreturn void server_exit(struct table *t, pid_t self, int code)
{
    for (size_t i = 0; i < t->n; i++)
        (void)kill(t->e[i].pid, SIGKILL); /* not reaped yet, so the pid is still ours */
    kill_strays(t, self);
    for (;;) {
        int status;
        struct rusage ru;
        pid_t pid = wait4(-1, &status, 0, &ru);
        if (pid > 0) {
            report(t, pid, status, &ru);
            kill_strays(t, self); /* what it left is ours now: else we would wait for it */
        } else if (errno != EINTR) {
            break; /* ECHILD: all reaped */
        }
    }
    _exit(code);
}

/* 0 when @want (0: none) fits under the hard limit of @res this process has, else -EPERM
 * (the worker could not set it). */
static int limit_fits(int res, uint64_t want)
{
    struct rlimit rl;
    if (getrlimit(res, &rl) != 0)
        return -errno;
    return want && rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max ? -EPERM : 0;
}

static _Noreturn void server_main(int req, int workers, const concur__limits *lim,
                                  const _Atomic int *stop)
{
    int none = -1;
    req = isolate_fd(req, &none);
    if (req < 0)
        _exit(127);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGPIPE); /* a status pipe whose proxy is gone: EPIPE, not death */
    int rc = reset_signals();
    if (!rc)
        rc = limit_fits(RLIMIT_AS, lim->mem);
    if (!rc)
        rc = limit_fits(RLIMIT_CPU, lim->cpu_s ? lim->cpu_s + 1 : 0);
    if (!rc && sigprocmask(SIG_SETMASK, &block, NULL) != 0)
        rc = -errno;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int sfd = rc ? -1 : signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (!rc && sfd < 0)
        rc = -errno;
    struct table t = {.cap = workers > 0 && workers < INT_MAX / 4 ? (size_t)workers * 2 + 8 : 64};
    t.e = rc ? MAP_FAILED
             : mmap(NULL, t.cap * sizeof(struct entry), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!rc && t.e == MAP_FAILED)
        rc = -errno;
    if (rc) {
        (void)reply(req, rc);
        _exit(127);
    }
    if (!reply(req, 0))
        _exit(0);
    pid_t self = getpid();
    /* The workers' leftovers come here when a worker ends (kill_strays). EINVAL (a kernel
     * before 3.4): they go to init, as before. */
    (void)prctl(PR_SET_CHILD_SUBREAPER, 1);
    for (;;) {
        struct pollfd pf[2] = {{.fd = req, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            server_exit(&t, self, 1);
        }
        if (pf[1].revents)
            reap(&t, sfd, self);
        if (pf[0].revents && !serve(req, &t, self, lim, stop))
            server_exit(&t, self, 0);
    }
}

/* ---------------------------------------------------------------- the parent's side */

/* Reads one int64 reply from the server. */
static int read_reply(concur__fs *fs, int64_t *v)
{
    for (;;) {
        ssize_t n = recv(fs->req, v, sizeof(*v), 0);
        if (n == (ssize_t)sizeof(*v))
            return 0;
        if (n == 0)
            return CONCUR_EPIPE; /* the server is gone */
        if (n > 0)
            return CONCUR_EIO;
        if (errno != EINTR)
            return -errno;
    }
}

int concur__fs_create(concur__fs **out, int workers, const concur__limits *lim)
{
    concur__fs *fs = calloc(1, sizeof(*fs));
    if (!fs)
        return CONCUR_ENOMEM;
    fs->req = -1;
    fs->lim = *lim;
    CHECK_PTHREAD(pthread_mutex_init(&fs->mu, NULL));
    int rc = code_map(&fs->ranges, &fs->nranges);
    if (!rc) {
        /* Mapped before the fork: the server and every worker share it with us. */
        size_t len = CONCUR__CANCEL_WORDS_AT + (size_t)workers * sizeof(uint64_t);
        void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            rc = -errno;
        } else {
            fs->stop = m; /* zero-filled: no stop yet, no task cancelled */
            fs->shared_len = len;
            fs->nslots = workers;
        }
    }
    int sv[2];
    if (!rc && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        rc = -errno;
    if (rc) {
        concur__fs_destroy(fs);
        return rc;
    }
    /* Output the caller has buffered would otherwise be written again by every worker
     * process (each is a copy of the server, and flushes its stdio as it leaves). */
    (void)fflush(NULL);
    /* No signal handler of the caller may run in the child before it resets them. */
    sigset_t all, old;
    sigfillset(&all);
    CHECK_PTHREAD(pthread_sigmask(SIG_SETMASK, &all, &old));
    pid_t pid = fork();
    if (pid == 0)
        server_main(sv[1], workers, &fs->lim, fs->stop);
    int fork_errno = errno;
    CHECK_PTHREAD(pthread_sigmask(SIG_SETMASK, &old, NULL));
    (void)close(sv[1]); /* the server's end: ours to drop */
    fs->req = sv[0];
    fs->pid = pid;
    int64_t ready = 0;
    rc = pid < 0 ? -fork_errno : read_reply(fs, &ready);
    if (!rc && ready != 0)
        rc = ready < 0 && ready > INT_MIN ? (int)ready : CONCUR_EIO;
    if (rc) {
        concur__fs_destroy(fs);
        return rc;
    }
    *out = fs;
    return 0;
}

void concur__fs_destroy(concur__fs *fs)
{
    if (!fs)
        return;
    if (fs->req >= 0)
        (void)close(fs->req); /* EOF for the server */
    if (fs->pid > 0) {
        int status;
        /* ECHILD: the application reaped it (waitpid(-1) of its own, or SIGCHLD ignored) */
        while (waitpid(fs->pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    pthread_mutex_destroy(&fs->mu);
    if (fs->stop)
        (void)munmap((void *)fs->stop, fs->shared_len); /* our own mapping */
    free(fs->ranges);
    free(fs);
}

const concur__limits *concur__fs_limits(const concur__fs *fs)
{
    return &fs->lim;
}

_Atomic uint64_t *concur__fs_cancel_word(concur__fs *fs, int slot)
{
    return slot >= 0 && slot < fs->nslots ? concur__cancel_word(fs->stop, slot) : NULL;
}

void concur__fs_stop(concur__fs *fs)
{
    atomic_store_explicit(fs->stop, 1, memory_order_relaxed);
}

int concur__fs_spawn(concur__fs *fs, int sock, int status_w, int ring, int bell, pid_t *pid)
{
    uint32_t op = OP_SPAWN;
    int fds[4] = {sock, status_w, ring, bell}, nfds = ring >= 0 && bell >= 0 ? 4 : 2;
    union {
        char buf[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } cm;
    memset(&cm, 0, sizeof(cm));
    struct iovec iov = {.iov_base = &op, .iov_len = sizeof(op)};
    struct msghdr mh = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = cm.buf,
        .msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int))};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    int rc = 0;
    int64_t r = 0;
    mu_lock(&fs->mu);
    for (;;) {
        if (sendmsg(fs->req, &mh, MSG_NOSIGNAL) == (ssize_t)sizeof(op))
            break;
        if (errno != EINTR) {
            rc = errno == EPIPE || errno == ECONNRESET ? CONCUR_EPIPE : -errno;
            break;
        }
    }
    if (!rc)
        rc = read_reply(fs, &r);
    mu_unlock(&fs->mu);
    if (rc)
        return rc;
    if (r <= 0)
        return r < 0 && r > INT_MIN ? (int)r : CONCUR_EIO;
    *pid = (pid_t)r;
    return 0;
}
