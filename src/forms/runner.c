/*
 * runner.c - the command runner: many children, one thread, one epoll loop.
 *
 * Flow of one command: the source fills a concur_cmd when a slot is free -> the runner builds
 * argv/envp and posix_spawns the program into a new process group with stdout/stderr pipes
 * (and a socket for input, so a child that closes its stdin never raises SIGPIPE here) ->
 * the pidfd, the pipes and the input socket join the epoll set -> output is appended to the
 * job's captures (or handed to on_output) -> the pidfd becomes readable at exit and the child
 * is reaped with waitid(P_PIDFD) -> once exited and both pipes are at EOF, the result is
 * built and handed to on_done -> the slot is free for the next command.
 *
 * Invariants: every child started is reaped before run() returns, whatever happens (errors
 * stop the run as CONCUR_STOP_TERM and keep looping until the last child is gone); every fd
 * is O_CLOEXEC and the child keeps only 0, 1 and 2 (closefrom in the spawn actions); no
 * signal disposition of the process is touched. A timeout, or a stop, sends the term signal to
 * the child's process group and SIGKILL after the grace period.
 *
 * Captures: up to output_cap bytes in memory; past that the bytes go to an unlinked O_TMPFILE
 * and the whole stream is mapped read-only at the end, so the result still points at one
 * contiguous, exact copy without holding it in anonymous memory.
 *
 * Function tasks: the job's key and arguments are laid out as bytes (struct fn_head, then
 * NUL-terminated strings) and submitted to a concur_pool as the task fn_task, which unpacks
 * them in the worker (a thread, or a worker process: the bytes travel there), calls the
 * concur_run_fn, and appends the function's status to its answer (struct fn_trailer). The
 * future's completion callback writes an eventfd that is in the epoll set; the loop then
 * finds the finished futures among its jobs and delivers their records like commands'. The
 * callback holds a reference on that eventfd's owner (struct fn_note), not on the runner, so
 * a callback still running in a pool thread after the run can never touch freed memory.
 * At most fn_limit function tasks are in the pool at once (the pool has that many workers),
 * so a task handed over starts at once, and its timeout counts from there. A timeout cancels
 * the task with concur_future_cancel_kill: a worker process is killed and the future fails
 * at once; a thread is only flagged (concur_task_should_stop), so its record is delivered at
 * the deadline and its future moves to the stale list, which still counts against the
 * limits until the thread returns. A run ends only when the stale list is empty too.
 */
#include "core/concur_impl.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

extern char **environ;

enum { TAG_PID = 0, TAG_OUT = 1, TAG_ERR = 2, TAG_IN = 3, TAG_BITS = 2 };
/* epoll data of the runner's own descriptors (job events are slot << TAG_BITS | tag). */
#define EV_STOP UINT64_MAX
#define EV_STOP_FD (UINT64_MAX - 1)
#define EV_FN_DONE (UINT64_MAX - 2)
enum { READ_CHUNK = 65536, DEFAULT_CAP = 16u << 20 };
/* How often the loop looks at function futures it could not register a callback on. */
#define FN_POLL_NS 10000000u
/* Capture buffers of finished jobs are kept for the next ones (a run of many jobs with
 * large output would otherwise map, fault in and unmap fresh memory for every job). */
enum { POOL_BUFS = 16, POOL_MIN = 64u << 10, POOL_MAX = 4u << 20 };

struct capture {
    unsigned char *buf; /* heap, or the mapping once spilled and finished */
    size_t len, cap;
    int spill_fd; /* -1 until the cap is passed */
    bool mapped;  /* buf is a mapping of spill_fd's file */
    bool truncated;
};

struct job {
    size_t index;
    concur_cmd cmd;
    unsigned attempts;
    pid_t pid;
    int pidfd, out_fd, err_fd, in_fd;
    size_t in_off;
    bool exited, timed_out;
    bool stopped;    /* signalled by a stop of the run, not by its own timeout */
    int status_code; /* si_code of waitid: CLD_EXITED, CLD_KILLED, CLD_DUMPED */
    int status;
    int kill_stage; /* 0: none; k in 1..nseq: step k sent; nseq + 1: SIGKILL sent */
    uint64_t t_ready, t_start, deadline, kill_at;
    double wall_start;
    struct capture out, err;
    concur_result res; /* filled at the end */
    char *errmsg;
    struct job *next;   /* retry queue */
    concur_run_fn fn;   /* non-NULL: a function task */
    concur_future *fut; /* a function task's future (one reference) */
    bool expired;       /* a function task's deadline was handled */
};

/* The completion eventfd of function tasks, shared with the completion callbacks: each
 * registered callback holds a reference, so the last one out closes it. */
struct fn_note {
    _Atomic unsigned refs;
    int efd;
};

struct concur_runner {
    concur_runner_opts o;
    int ep;
    int stop_efd;
    concur_term_step *seq; /* the termination sequence, nseq >= 1 steps */
    size_t nseq;
    struct job **slots; /* running jobs; NULL entries are free */
    size_t nslots, running;
    struct job *retry_head, *retry_tail;
    int stop_level;
    _Atomic int stop_req; /* set by concur_runner_stop (also from handlers), applied in the loop */
    bool stop_fd_armed;   /* the caller's stop_fd is in the epoll set */
    uint64_t next_start_ok;
    uint64_t run_start; /* monotonic: queue waits count from here */
    double wall_start, wall_end;
    concur_result *kept;
    size_t nkept, capkept;
    struct job **keptjobs; /* owners of kept results' buffers */
    const char *tmpdir;
    unsigned char *pool[POOL_BUFS];
    size_t pool_cap[POOL_BUFS];
    size_t npool;
    /* function tasks */
    concur_pool *fn_pool; /* the caller's (o.pool) or the run's own (fn_pool_owned) */
    bool fn_pool_owned;
    bool fn_unwatched;     /* a callback could not be registered: poll the futures */
    struct fn_note *note;  /* created at the first function task, kept until destroy */
    size_t fn_limit;       /* function tasks at once (the pool's size) */
    size_t fn_running;     /* function jobs in slots */
    concur_future **stale; /* futures of thread tasks that timed out and still run */
    size_t nstale, capstale;
    struct job *held; /* a function job pulled while no function slot was free */
};

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* ---------------------------------------------------------------- captures */

static void cap_init(struct capture *c)
{
    memset(c, 0, sizeof(*c));
    c->spill_fd = -1;
}

static void cap_free(concur_runner *r, struct capture *c)
{
    if (c->mapped)
        munmap(c->buf, c->len);
    else if (r && c->buf && c->cap >= POOL_MIN && c->cap <= POOL_MAX && r->npool < POOL_BUFS) {
        r->pool[r->npool] = c->buf;
        r->pool_cap[r->npool++] = c->cap;
    } else
        free(c->buf);
    close_fd(&c->spill_fd);
    cap_init(c);
}

static int write_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int cap_append(concur_runner *r, struct capture *c, const void *data, size_t n)
{
    size_t limit = r->o.output_cap;
    if (c->spill_fd >= 0) {
        int rc = write_all(c->spill_fd, data, n);
        if (!rc)
            c->len += n;
        return rc;
    }
    if (c->len + n > limit) {
        if (r->o.flags & CONCUR_RUN_TRUNCATE) {
            size_t keep = limit - c->len;
            c->truncated = true;
            n = keep;
            if (!n)
                return 0;
        } else {
            /* Spill: everything so far and from now on goes to an unlinked file. */
            int fd = open(r->tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC | O_EXCL, 0600);
            if (fd < 0)
                return -errno;
            int rc = write_all(fd, c->buf, c->len);
            if (!rc)
                rc = write_all(fd, data, n);
            if (rc) {
                close(fd);
                return rc;
            }
            free(c->buf);
            c->buf = NULL;
            c->cap = 0;
            c->spill_fd = fd;
            c->len += n;
            return 0;
        }
    }
    if (!c->buf && r->npool) { /* a buffer left by an earlier job */
        c->buf = r->pool[--r->npool];
        c->cap = r->pool_cap[r->npool];
    }
    if (c->len + n > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n)
            cap *= 2;
        if (cap > limit && limit >= c->len + n)
            cap = limit;
        unsigned char *b = realloc(c->buf, cap);
        if (!b)
            return CONCUR_ENOMEM;
        c->buf = b;
        c->cap = cap;
    }
    memcpy(c->buf + c->len, data, n);
    c->len += n;
    return 0;
}

/* At the end of a job: a spilled stream becomes one read-only mapping. */
static int cap_finish(struct capture *c)
{
    if (c->spill_fd < 0 || c->len == 0)
        return 0;
    void *m = mmap(NULL, c->len, PROT_READ, MAP_PRIVATE, c->spill_fd, 0);
    if (m == MAP_FAILED)
        return -errno;
    close_fd(&c->spill_fd);
    c->buf = m;
    c->mapped = true;
    return 0;
}

/* ---------------------------------------------------------------- spawning */

/* argv of a job: the command's own, or prefix + arg. Returned array is malloc'd (the strings
 * are borrowed). */
static char **job_argv(concur_runner *r, const concur_cmd *cmd)
{
    if (cmd->argv) {
        size_t n = 0;
        while (cmd->argv[n])
            n++;
        char **v = malloc((n + 1) * sizeof(*v));
        if (!v)
            return NULL;
        memcpy(v, cmd->argv, (n + 1) * sizeof(*v));
        return v;
    }
    size_t n = 0;
    if (r->o.prefix)
        while (r->o.prefix[n])
            n++;
    char **v = malloc((n + 2) * sizeof(*v));
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++)
        v[i] = (char *)r->o.prefix[i];
    v[n] = (char *)cmd->arg;
    v[n + (cmd->arg ? 1 : 0)] = NULL;
    return v;
}

static size_t key_len(const char *kv)
{
    const char *eq = strchr(kv, '=');
    return eq ? (size_t)(eq - kv) : strlen(kv);
}

/* envp: the command's replacement, or environ (or the replacement) with additions. */
static char **job_envp(const concur_cmd *cmd, bool *owned)
{
    char **base = cmd->env ? (char **)cmd->env : environ;
    *owned = false;
    if (!cmd->env_add || !cmd->env_add[0])
        return base;
    size_t nb = 0, na = 0;
    while (base && base[nb])
        nb++;
    while (cmd->env_add[na])
        na++;
    char **v = malloc((nb + na + 1) * sizeof(*v));
    if (!v)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < nb; i++) {
        bool overridden = false;
        for (size_t j = 0; j < na && !overridden; j++)
            overridden = key_len(base[i]) == key_len(cmd->env_add[j]) &&
                         !strncmp(base[i], cmd->env_add[j], key_len(base[i]));
        if (!overridden)
            v[k++] = base[i];
    }
    for (size_t j = 0; j < na; j++)
        v[k++] = (char *)cmd->env_add[j];
    v[k] = NULL;
    *owned = true;
    return v;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

static int ep_add(concur_runner *r, int fd, uint32_t events, size_t slot, int tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = ((uint64_t)slot << TAG_BITS) | tag};
    return epoll_ctl(r->ep, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* After a start: the next one waits start_delay. */
static void delay_next_start(concur_runner *r)
{
    r->next_start_ok = r->o.start_delay > 0 ? now_ns() + (uint64_t)(r->o.start_delay * 1e9) : 0;
}

/* The deadline of a job started at j->t_start (0: none). */
static uint64_t job_deadline(const concur_runner *r, const struct job *j)
{
    double timeout = j->cmd.timeout > 0 ? j->cmd.timeout : (j->cmd.timeout < 0 ? 0 : r->o.timeout);
    return timeout > 0 ? j->t_start + (uint64_t)(timeout * 1e9) : 0;
}

/* Starts job @j in slot @slot. A failed start is not an error of the run: the job is then
 * marked exited with j->res.error set. Returns a negative code only for failures of the
 * runner itself (out of memory, epoll). */
static int job_spawn(concur_runner *r, struct job *j, size_t slot)
{
    int rc = 0, outp[2] = {-1, -1}, errp[2] = {-1, -1}, inp[2] = {-1, -1};
    bool capture = !(r->o.flags & CONCUR_RUN_NO_CAPTURE);
    bool envp_owned = false;
    char **argv = job_argv(r, &j->cmd);
    char **envp = argv ? job_envp(&j->cmd, &envp_owned) : NULL;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    bool fa_ok = false, at_ok = false;
    if (!argv || !envp) {
        rc = CONCUR_ENOMEM;
        goto out;
    }
    if (!argv[0]) {
        j->res.error = CONCUR_EINVAL;
        j->errmsg = strdup("empty command");
        goto failed_start;
    }
    if (capture && (pipe2(outp, O_CLOEXEC) < 0 ||
                    (!(r->o.flags & CONCUR_RUN_MERGE_STDERR) && pipe2(errp, O_CLOEXEC) < 0))) {
        rc = -errno;
        goto out;
    }
    if (j->cmd.input && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, inp) < 0) {
        rc = -errno;
        goto out;
    }
    if ((rc = posix_spawn_file_actions_init(&fa)) != 0) {
        rc = -rc;
        goto out;
    }
    fa_ok = true;
    if ((rc = posix_spawnattr_init(&at)) != 0) {
        rc = -rc;
        goto out;
    }
    at_ok = true;
    if (j->cmd.input)
        rc = posix_spawn_file_actions_adddup2(&fa, inp[1], 0);
    else if (!(r->o.flags & CONCUR_RUN_INHERIT_STDIN))
        rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (!rc && capture)
        rc = posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
    if (!rc && capture)
        rc = posix_spawn_file_actions_adddup2(&fa, errp[1] >= 0 ? errp[1] : outp[1], 2);
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    if (!rc && j->cmd.cwd)
        rc = posix_spawn_file_actions_addchdir_np(&fa, j->cmd.cwd);
    /* A new process group (so a timeout reaches the whole tree), default signal
     * dispositions and an empty mask, whatever this process blocks or ignores. */
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    if (!rc)
        rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                               POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawnattr_setpgroup(&at, 0);
    if (!rc)
        rc = posix_spawnattr_setsigmask(&at, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&at, &all);
    if (rc) {
        rc = -rc;
        goto out;
    }
    j->t_start = now_ns();
    j->wall_start = wall_now();
    pid_t pid;
    int src = posix_spawnp(&pid, argv[0], &fa, &at, argv, envp);
    if (src) {
        j->res.error = -src;
        if (asprintf(&j->errmsg, "%s: %s", argv[0], strerror(src)) < 0)
            j->errmsg = NULL;
        goto failed_start;
    }
    j->pid = pid;
    delay_next_start(r);
    j->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (j->pidfd < 0) {
        rc = -errno;
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        j->pid = 0;
        goto out;
    }
    /* pidfds are created close-on-exec. */
    if (capture) {
        j->out_fd = outp[0];
        outp[0] = -1;
        if (errp[0] >= 0) {
            j->err_fd = errp[0];
            errp[0] = -1;
        }
    }
    if (j->cmd.input) {
        j->in_fd = inp[0];
        inp[0] = -1;
    }
    j->deadline = job_deadline(r, j);
    if ((rc = ep_add(r, j->pidfd, EPOLLIN, slot, TAG_PID)) != 0)
        goto out;
    if (j->out_fd >= 0 &&
        ((rc = set_nonblock(j->out_fd)) || (rc = ep_add(r, j->out_fd, EPOLLIN, slot, TAG_OUT))))
        goto out;
    if (j->err_fd >= 0 &&
        ((rc = set_nonblock(j->err_fd)) || (rc = ep_add(r, j->err_fd, EPOLLIN, slot, TAG_ERR))))
        goto out;
    if (j->in_fd >= 0) {
        if (j->cmd.input_len == 0) {
            close_fd(&j->in_fd); /* empty input: EOF at once */
        } else if ((rc = set_nonblock(j->in_fd)) ||
                   (rc = ep_add(r, j->in_fd, EPOLLOUT, slot, TAG_IN))) {
            goto out;
        }
    }
    goto out;

failed_start:
    j->t_start = j->t_start ? j->t_start : now_ns();
    if (j->wall_start == 0)
        j->wall_start = wall_now();
    j->exited = true;
out:
    close_fd(&outp[0]);
    close_fd(&outp[1]);
    close_fd(&errp[0]);
    close_fd(&errp[1]);
    close_fd(&inp[0]);
    close_fd(&inp[1]);
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (at_ok)
        posix_spawnattr_destroy(&at);
    free(argv);
    if (envp_owned)
        free(envp);
    return rc;
}

/* ---------------------------------------------------------------- function tasks */

/* The input of a function task, as it travels to its worker (a thread, or a worker process:
 * the pool copies it there): this head, the key with its NUL when has_key, then argc
 * NUL-terminated arguments. Both ends are the same program, so the function pointer is
 * passed as it is (the process pool's rule for task functions applies to it). */
struct fn_head {
    concur_run_fn fn;
    uint32_t argc;
    uint32_t has_key;
};

/* Appended to the answer by fn_task when the function returned a status (>= 0); the runner
 * takes it off again. */
struct fn_trailer {
    int32_t status;
    uint32_t magic;
};

#define FN_MAGIC 0x636e7566u /* "func" */
enum { FN_STACK_IN = 512, FN_STACK_ARGV = 32 };

/* Appends the trailer to the task's result buffer (the answer). This is the buffer that
 * concur_task_return() fills (concur_impl.h): it grows in place (realloc), so a large answer
 * is not copied once more. */
static int fn_put_status(concur_task *t, int status)
{
    struct fn_trailer tr = {status, FN_MAGIC};
    concur__buf *b = &t->out;
    size_t n = b->len, m = n + sizeof(tr);
    unsigned char *p;
    if (m <= CONCUR_INLINE_BYTES) {
        p = b->u.inl;
    } else if (n > CONCUR_INLINE_BYTES) {
        p = realloc(b->u.ptr, m);
        if (!p)
            return concur_task_fail(t, CONCUR_ENOMEM, "no memory to return the answer");
        b->u.ptr = p;
    } else {
        p = malloc(m);
        if (!p)
            return concur_task_fail(t, CONCUR_ENOMEM, "no memory to return the answer");
        if (n)
            memcpy(p, b->u.inl, n);
        b->u.ptr = p;
    }
    memcpy(p + n, &tr, sizeof(tr));
    b->len = m;
    return 0;
}

/* The next NUL-terminated string of an input, or NULL when none is left in [*p, end). */
static const char *next_str(const char **p, const char *end)
{
    const char *s = *p;
    const char *nul = s < end ? memchr(s, '\0', (size_t)(end - s)) : NULL;
    if (!nul)
        return NULL;
    *p = nul + 1;
    return s;
}

/* The pool task of every function task: unpacks key and arguments (pointing into the
 * input, which is this task's own copy) and calls the function. */
static int fn_task(concur_task *t, const void *in, size_t len)
{
    struct fn_head h;
    if (len < sizeof(h))
        return concur_task_fail(t, CONCUR_EINVAL, "malformed function task");
    memcpy(&h, in, sizeof(h));
    const char *p = (const char *)in + sizeof(h), *end = (const char *)in + len;
    const char *stack_argv[FN_STACK_ARGV];
    const char **argv = stack_argv;
    if (h.argc >= FN_STACK_ARGV && !(argv = malloc((h.argc + (size_t)1) * sizeof(*argv))))
        return concur_task_fail(t, CONCUR_ENOMEM, "no memory for the function's arguments");
    const char *key = h.has_key ? next_str(&p, end) : NULL;
    bool ok = !h.has_key || key;
    for (uint32_t i = 0; ok && i < h.argc; i++)
        ok = (argv[i] = next_str(&p, end)) != NULL;
    int rc;
    if (!ok || h.argc > INT_MAX) {
        rc = concur_task_fail(t, CONCUR_EINVAL, "malformed function task");
    } else {
        argv[h.argc] = NULL;
        rc = h.fn(t, key, (int)h.argc, argv);
    }
    if (argv != stack_argv)
        free(argv);
    return rc < 0 ? rc : fn_put_status(t, rc);
}

/* Copies @s with its NUL to @b + @off (only counts when @b is NULL; nothing for a NULL
 * @s). Returns the offset past it. */
static size_t put_str(unsigned char *b, size_t off, const char *s)
{
    if (!s)
        return off;
    size_t n = strlen(s) + 1;
    if (b)
        memcpy(b + off, s, n);
    return off + n;
}

/* Writes (or, with @b NULL, measures) the strings of function job @j's input after its
 * head: the key, then the arguments (the job's argv, or the prefix followed by its arg).
 * Returns the total length; the argument count in *argc. */
static size_t fn_layout(const concur_runner *r, const struct job *j, unsigned char *b,
                        uint32_t *argc)
{
    const char *const *args = j->cmd.argv ? j->cmd.argv : r->o.prefix;
    const char *last = j->cmd.argv ? NULL : j->cmd.arg;
    size_t off = put_str(b, sizeof(struct fn_head), j->cmd.key);
    uint32_t n = 0;
    for (; args && args[n]; n++)
        off = put_str(b, off, args[n]);
    if (last) {
        off = put_str(b, off, last);
        n++;
    }
    *argc = n;
    return off;
}

/* Lays out the input of function job @j: in @buf when it fits in @cap bytes, else in a
 * malloc'd buffer returned in *heap. Returns the length, or 0 when out of memory. */
static size_t fn_encode(const concur_runner *r, const struct job *j, unsigned char *buf, size_t cap,
                        unsigned char **heap)
{
    struct fn_head h = {.fn = j->fn, .argc = 0, .has_key = j->cmd.key != NULL};
    size_t len = fn_layout(r, j, NULL, &h.argc);
    unsigned char *b = buf;
    if (len > cap && !(b = *heap = malloc(len)))
        return 0;
    fn_layout(r, j, b, &h.argc);
    memcpy(b, &h, sizeof(h));
    return len;
}

static void note_release(struct fn_note *n)
{
    if (n && atomic_fetch_sub_explicit(&n->refs, 1, memory_order_acq_rel) == 1) {
        close(n->efd);
        free(n);
    }
}

/* The completion callback of function tasks (a pool thread, or this one for a cancel): a
 * wake-up for the loop. It touches only the note it holds a reference on. */
static void fn_completed(concur_future *f, void *arg)
{
    (void)f;
    struct fn_note *n = arg;
    uint64_t one = 1;
    if (write(n->efd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is full, so a wake-up is pending anyway. Nothing else fails
         * on an eventfd of ours; the loop also looks at every future whenever it wakes. */
    }
    note_release(n);
}

/* What the first function task of a run needs: the completion eventfd in the epoll set
 * (once per runner) and the pool (the caller's, or one of the run's own). */
static int fn_setup(concur_runner *r)
{
    if (!r->note) {
        struct fn_note *n = malloc(sizeof(*n));
        if (!n)
            return CONCUR_ENOMEM;
        atomic_init(&n->refs, 1);
        n->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV_FN_DONE};
        if (n->efd < 0 || epoll_ctl(r->ep, EPOLL_CTL_ADD, n->efd, &ev) < 0) {
            int e = -errno;
            if (n->efd >= 0)
                close(n->efd);
            free(n);
            return e;
        }
        r->note = n;
    }
    if (!r->fn_pool) {
        concur_pool_opts po = {.engine = r->o.engine,
                               .max_workers = r->fn_limit > INT_MAX ? INT_MAX : (int)r->fn_limit,
                               .name = "run"};
        int rc = concur_pool_create(&r->fn_pool, &po);
        if (rc)
            return rc;
        r->fn_pool_owned = true;
    }
    return 0;
}

/* Hands function job @j to the pool. Whatever fails here fails only this job (its result
 * says why), never the run. */
static void fn_start(concur_runner *r, struct job *j)
{
    const char *what = "cannot start the pool of function tasks";
    int rc = fn_setup(r);
    /* The task's time starts now, after the pool was made (a process pool forks): it is
     * the hand-over, from which its timeout counts. */
    j->t_start = now_ns();
    j->wall_start = wall_now();
    delay_next_start(r);
    if (!rc && !concur__pool_code_ok(r->fn_pool, (const void *)(uintptr_t)j->fn)) {
        /* It travels inside the task's input: the pool checks only its own wrapper. */
        what = "the function is not in the worker processes' code";
        rc = CONCUR_ENOTLOADED;
    }
    if (!rc) {
        unsigned char buf[FN_STACK_IN], *heap = NULL;
        size_t len = fn_encode(r, j, buf, sizeof(buf), &heap);
        what = "cannot hand the function task to its pool";
        rc = len ? concur_pool_submit(r->fn_pool, fn_task, heap ? heap : buf, len, &j->fut)
                 : CONCUR_ENOMEM;
        free(heap);
    }
    if (rc) {
        j->res.error = rc;
        if (asprintf(&j->errmsg, "%s: %s", what, concur_strerror(rc)) < 0)
            j->errmsg = NULL;
        j->exited = true;
        return;
    }
    atomic_fetch_add_explicit(&r->note->refs, 1, memory_order_relaxed);
    if (concur_future_add_callback(j->fut, fn_completed, r->note) != 0) {
        note_release(r->note);
        r->fn_unwatched = true; /* no wake-up will come for this one: poll */
    }
    j->deadline = job_deadline(r, j);
}

/* ---------------------------------------------------------------- the loop */

/* Closes a job's descriptors and gives back its captures and message. */
static void job_release(concur_runner *r, struct job *j)
{
    close_fd(&j->pidfd);
    close_fd(&j->out_fd);
    close_fd(&j->err_fd);
    close_fd(&j->in_fd);
    cap_free(r, &j->out);
    cap_free(r, &j->err);
    free(j->errmsg);
    j->errmsg = NULL;
    concur_future_release(j->fut); /* never cancels: a running task is awaited elsewhere */
    j->fut = NULL;
}

static void job_free(concur_runner *r, struct job *j)
{
    if (!j)
        return;
    job_release(r, j);
    free(j);
}

static struct job *job_new(const concur_runner *r, size_t index, const concur_cmd *cmd)
{
    struct job *j = calloc(1, sizeof(*j));
    if (!j)
        return NULL;
    j->index = index;
    j->cmd = *cmd;
    j->fn = cmd->fn ? cmd->fn : (cmd->argv ? NULL : r->o.fn);
    j->pidfd = j->out_fd = j->err_fd = j->in_fd = -1;
    cap_init(&j->out);
    cap_init(&j->err);
    j->t_ready = 0; /* the run's start: set by start_job */
    return j;
}

static void job_reset_for_retry(concur_runner *r, struct job *j)
{
    job_release(r, j);
    j->pid = 0;
    j->in_off = 0;
    j->exited = j->timed_out = j->stopped = j->expired = false;
    j->kill_stage = 0;
    j->deadline = j->kill_at = 0;
    j->t_start = 0;
    j->wall_start = 0;
    memset(&j->res, 0, sizeof(j->res));
    j->t_ready = now_ns();
}

/* Moves job @j to step @stage of the termination sequence (past the last step: SIGKILL). */
static void signal_job(concur_runner *r, struct job *j, int stage)
{
    if (!j->pid || j->kill_stage >= stage)
        return;
    j->kill_stage = stage;
    /* The group outlives its leader while members remain, and its id cannot be reused
     * while it exists, so this reaches exactly the job's tree. */
    if ((size_t)stage <= r->nseq) {
        const concur_term_step *st = &r->seq[stage - 1];
        kill(-j->pid, st->signal);
        j->kill_at = now_ns() + (uint64_t)(st->wait * 1e9);
    } else {
        kill(-j->pid, SIGKILL);
    }
}

static bool in_sequence(const concur_runner *r, const struct job *j)
{
    return j->kill_stage >= 1 && (size_t)j->kill_stage <= r->nseq;
}

static bool job_over(const struct job *j)
{
    return j->exited && j->out_fd < 0 && j->err_fd < 0;
}

static void apply_stop(concur_runner *r, int level)
{
    if (level <= r->stop_level)
        return;
    r->stop_level = level;
    if (level >= CONCUR_STOP_TERM)
        for (size_t i = 0; i < r->nslots; i++) {
            struct job *j = r->slots[i];
            if (!j || job_over(j))
                continue;
            j->stopped = true;
            if (j->fut) /* a worker process is killed, a thread told to stop */
                concur_future_cancel_kill(j->fut);
            else
                signal_job(r, j, 1);
        }
}

static int read_stream(concur_runner *r, struct job *j, int *fd, struct capture *c, int stream)
{
    unsigned char buf[READ_CHUNK];
    /* Read at most a few chunks per wake-up, so one chatty job cannot starve the others. */
    for (int round = 0; round < 4; round++) {
        ssize_t n = read(*fd, buf, sizeof(buf));
        if (n > 0) {
            if (r->o.on_output) {
                r->o.on_output(r, j->index, stream, buf, (size_t)n, r->o.cb_arg);
            } else {
                int rc = cap_append(r, c, buf, (size_t)n);
                if (rc)
                    return rc;
            }
            if ((size_t)n < sizeof(buf))
                return 0;
            continue;
        }
        if (n == 0) {
            close_fd(fd); /* closing removes it from the epoll set */
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            return 0;
        int e = -errno;
        close_fd(fd);
        return e;
    }
    return 0;
}

static void write_input(struct job *j)
{
    while (j->in_off < j->cmd.input_len) {
        ssize_t n = send(j->in_fd, (const char *)j->cmd.input + j->in_off,
                         j->cmd.input_len - j->in_off, MSG_NOSIGNAL);
        if (n > 0) {
            j->in_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        break; /* EPIPE and the like: the child does not read any more */
    }
    close_fd(&j->in_fd);
}

static void reap(struct job *j)
{
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    int rc;
    do
        rc = waitid((idtype_t)P_PIDFD, (id_t)j->pidfd, &si, WEXITED | WNOHANG);
    while (rc < 0 && errno == EINTR);
    if (rc < 0 || si.si_pid == 0)
        return; /* not yet (spurious wake) */
    j->exited = true;
    j->status_code = si.si_code;
    j->status = si.si_status;
    close_fd(&j->pidfd);
}

/* The rest of the record of a function job, after what build_result() fills for every job
 * (see concur_result in runner.h for the mapping). */
static void build_fn_result(struct job *j)
{
    concur_result *res = &j->res;
    concur_future *f = j->fut;
    res->function = true;
    res->pid = 0;
    res->error_message = j->errmsg;
    if (!f) { /* not handed to the pool, or a thread that timed out (and still runs) */
        res->spawned = !res->error;
        return;
    }
    /* The run counts from the hand-over to the pool (as a command's counts from its spawn)
     * to the end the future recorded, which may be earlier than this delivery. */
    concur_state st = concur_future_state(f);
    double pending, running;
    concur_future_durations(f, &pending, &running);
    res->spawned = st != CONCUR_CANCELLED;
    res->time_run = pending + running;
    if (st == CONCUR_DONE) {
        const void *data = NULL;
        size_t len = 0;
        struct fn_trailer tr = {0, 0};
        concur_future_result(f, &data, &len);
        if (len >= sizeof(tr))
            memcpy(&tr, (const unsigned char *)data + len - sizeof(tr), sizeof(tr));
        if (tr.magic != FN_MAGIC) {
            res->error = CONCUR_EIO;
            res->error_message = "the function task returned a malformed answer";
        } else if (!res->timeout) { /* (a late result after a timeout is dropped) */
            res->exit_code = res->returncode = tr.status;
            res->success = tr.status == 0;
            res->answer = len > sizeof(tr) ? data : NULL;
            res->answer_len = len - sizeof(tr);
        }
        return;
    }
    concur_error_info ei;
    concur_future_error_info(f, &ei);
    res->signal = ei.signal;
    if (ei.signal)
        res->returncode = -ei.signal;
    else if (ei.exit_status >= 0)
        res->returncode = res->exit_code = ei.exit_status;
    if (ei.code == CONCUR_ETASKTIMEOUT) /* the task timeout of a caller's pool */
        res->timeout = true;
    if (res->timeout)
        return; /* as for a command: timeout, no error */
    res->error = ei.code;
    if (!res->error_message)
        res->error_message = ei.message;
}

static void build_result(struct job *j)
{
    concur_result *res = &j->res;
    uint64_t end = now_ns();
    res->index = j->index;
    res->key = j->cmd.key;
    res->arg = j->cmd.arg;
    res->user = j->cmd.user;
    res->attempts = j->attempts;
    res->pid = j->pid;
    res->spawned = j->pid > 0;
    res->time_start = j->wall_start;
    res->time_run = j->t_start && end > j->t_start ? (double)(end - j->t_start) / 1e9 : 0;
    res->time_wait = j->t_start > j->t_ready ? (double)(j->t_start - j->t_ready) / 1e9 : 0;
    res->timeout = j->timed_out;
    res->stopped = j->stopped;
    res->exit_code = -1;
    res->returncode = -1;
    if (j->fn) {
        build_fn_result(j);
        return;
    }
    if (res->spawned) {
        if (j->status_code == CLD_EXITED) {
            res->exit_code = j->status;
            res->returncode = j->status;
        } else {
            res->signal = j->status;
            res->returncode = -j->status;
        }
    }
    res->success = res->spawned && res->exit_code == 0 && !res->timeout;
    res->error_message = j->errmsg;
    int rc = cap_finish(&j->out);
    if (!rc)
        rc = cap_finish(&j->err);
    if (rc && !res->error) {
        res->error = rc;
        res->success = false;
    }
    res->out = j->out.buf;
    res->out_len = j->out.len;
    res->err = j->err.buf;
    res->err_len = j->err.len;
    res->out_truncated = j->out.truncated;
    res->err_truncated = j->err.truncated;
}

static int keep_result(concur_runner *r, struct job *j)
{
    if (j->index >= r->capkept) {
        size_t cap = r->capkept ? r->capkept : 64;
        while (cap <= j->index)
            cap *= 2;
        struct job **a = realloc(r->keptjobs, cap * sizeof(*a));
        if (!a)
            return CONCUR_ENOMEM;
        memset(a + r->capkept, 0, (cap - r->capkept) * sizeof(*a));
        r->keptjobs = a;
        r->capkept = cap;
    }
    job_free(r, r->keptjobs[j->index]);
    r->keptjobs[j->index] = j;
    if (j->index >= r->nkept)
        r->nkept = j->index + 1;
    return 0;
}

/* A job whose child exited and whose pipes are at EOF is over: deliver it. Returns a negative
 * code for failures of the runner itself. */
static int finish_job(concur_runner *r, size_t slot)
{
    struct job *j = r->slots[slot];
    r->slots[slot] = NULL;
    r->running--;
    if (j->fn)
        r->fn_running--;
    build_result(j);
    int again = r->o.on_done ? r->o.on_done(r, &j->res, r->o.cb_arg) : 0;
    if (again && j->attempts <= r->o.retries && r->stop_level == 0) {
        job_reset_for_retry(r, j);
        j->next = NULL;
        if (r->retry_tail)
            r->retry_tail->next = j;
        else
            r->retry_head = j;
        r->retry_tail = j;
        return 0;
    }
    if (r->o.flags & CONCUR_RUN_KEEP_RESULTS)
        return keep_result(r, j);
    job_free(r, j);
    return 0;
}

static int free_slot(concur_runner *r, size_t *slot)
{
    for (size_t i = 0; i < r->nslots; i++)
        if (!r->slots[i]) {
            *slot = i;
            return 0;
        }
    size_t n = r->nslots ? r->nslots * 2 : 16;
    struct job **s = realloc(r->slots, n * sizeof(*s));
    if (!s)
        return CONCUR_ENOMEM;
    memset(s + r->nslots, 0, (n - r->nslots) * sizeof(*s));
    *slot = r->nslots;
    r->slots = s;
    r->nslots = n;
    return 0;
}

/* Starts @j; on a start failure the job is delivered at once. */
static int start_job(concur_runner *r, struct job *j)
{
    size_t slot;
    int rc = free_slot(r, &slot);
    if (rc) {
        job_free(r, j);
        return rc;
    }
    r->slots[slot] = j;
    r->running++;
    j->attempts++;
    if (!j->t_ready)
        j->t_ready = r->run_start;
    if (j->fn) {
        r->fn_running++;
        fn_start(r, j); /* fails only the job, if anything */
        if (r->o.on_start)
            r->o.on_start(r, j->index, &j->cmd, 0, r->o.cb_arg);
        return job_over(j) ? finish_job(r, slot) : 0;
    }
    rc = job_spawn(r, j, slot);
    if (j->pid && r->o.on_start)
        r->o.on_start(r, j->index, &j->cmd, j->pid, r->o.cb_arg);
    if (!j->pid && r->o.on_start)
        r->o.on_start(r, j->index, &j->cmd, 0, r->o.cb_arg);
    if (rc) {
        /* The runner failed (not the program): stop, but keep the child for reaping. */
        if (!j->pid) {
            r->slots[slot] = NULL;
            r->running--;
            job_free(r, j);
        }
        return rc;
    }
    if (job_over(j))
        return finish_job(r, slot);
    return 0;
}

static int next_timeout_ms(concur_runner *r, bool can_start_later)
{
    uint64_t now = now_ns(), next = UINT64_MAX;
    for (size_t i = 0; i < r->nslots; i++) {
        struct job *j = r->slots[i];
        if (!j || job_over(j))
            continue;
        if (j->kill_stage == 0 && !j->expired && j->deadline && j->deadline < next)
            next = j->deadline;
        if (in_sequence(r, j) && j->kill_at < next)
            next = j->kill_at;
    }
    if (can_start_later && r->next_start_ok && r->next_start_ok < next)
        next = r->next_start_ok;
    if (r->fn_unwatched && (r->fn_running || r->nstale) && now + FN_POLL_NS < next)
        next = now + FN_POLL_NS;
    if (next == UINT64_MAX)
        return -1;
    if (next <= now)
        return 0;
    uint64_t ms = (next - now + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* Function job @j reached its deadline: cancel it. A pending task is cancelled and a worker
 * process killed, and either future fails at once; a thread cannot be killed, so it is only
 * flagged (concur_task_should_stop), its record is delivered now, and its future waits in
 * the stale list, where it still counts against the limits, until the thread returns. */
static void fn_expire(concur_runner *r, struct job *j)
{
    j->expired = j->timed_out = true;
    if (concur_future_cancel_kill(j->fut))
        return;
    if (concur_future_is_done(j->fut)) {
        j->timed_out = false; /* it ended just in time: its own outcome stands */
        return;
    }
    if (r->nstale == r->capstale) {
        size_t cap = r->capstale ? r->capstale * 2 : 8;
        concur_future **a = realloc(r->stale, cap * sizeof(*a));
        if (!a)
            return; /* keep the job until its thread returns; the record still says timeout */
        r->stale = a;
        r->capstale = cap;
    }
    r->stale[r->nstale++] = j->fut;
    j->fut = NULL;
    j->exited = true;
}

/* Delivers the function jobs whose future is over (or whose thread timed out), and lets go
 * of stale futures whose thread returned at last. Returns a failure of the runner. */
static int fn_check(concur_runner *r)
{
    int result = 0;
    for (size_t i = 0; i < r->nslots && r->fn_running; i++) {
        struct job *j = r->slots[i];
        if (!j || !j->fn)
            continue;
        if (!j->exited && j->fut && concur_future_is_done(j->fut))
            j->exited = true;
        if (j->exited) {
            int rc = finish_job(r, i);
            if (rc && !result)
                result = rc;
        }
    }
    for (size_t i = 0; i < r->nstale;) {
        if (concur_future_is_done(r->stale[i])) {
            concur_future_release(r->stale[i]);
            r->stale[i] = r->stale[--r->nstale];
        } else {
            i++;
        }
    }
    return result;
}

static void check_timers(concur_runner *r)
{
    uint64_t now = now_ns();
    for (size_t i = 0; i < r->nslots; i++) {
        struct job *j = r->slots[i];
        if (j && j->fn && j->fut && !j->expired && j->deadline && now >= j->deadline)
            fn_expire(r, j);
        if (!j || !j->pid)
            continue;
        /* Past the deadline while the job is not over: its child runs, or members of its
         * group still hold the output pipes. */
        if (!job_over(j) && j->kill_stage == 0 && j->deadline && now >= j->deadline) {
            j->timed_out = true;
            signal_job(r, j, 1);
        }
        /* The next step after each wait (SIGKILL after the last), also for a group whose
         * leader is gone but whose members still hold the output pipes. */
        if (in_sequence(r, j) && now >= j->kill_at && !job_over(j))
            signal_job(r, j, j->kill_stage + 1);
    }
}

int concur_runner_run(concur_runner *r, concur_source_fn src, void *arg)
{
    if (!r || !src)
        return CONCUR_EINVAL;
    int result = 0;
    r->stop_level = 0;
    r->wall_start = wall_now();
    r->run_start = now_ns();
    r->next_start_ok = 0;
    bool source_done = false;
    size_t index = 0;
    int limit = r->o.max_workers;
    struct epoll_event evs[64];
    uint64_t drain;
    /* Forget stop requests made before this run. */
    while (read(r->stop_efd, &drain, sizeof(drain)) > 0)
        ;
    atomic_store_explicit(&r->stop_req, 0, memory_order_relaxed);
    /* Function tasks: the pool's size bounds them (the run's own pool is made to measure at
     * the first one). */
    r->fn_pool = r->o.pool;
    r->fn_pool_owned = false;
    r->fn_unwatched = false;
    int pool_size =
        r->o.pool ? concur_pool_max_workers(r->o.pool) : (limit > 0 ? limit : concur_cpu_count());
    r->fn_limit = pool_size > 0 ? (size_t)pool_size : 1;
    for (;;) {
        /* A stop asked for meanwhile (e.g. by on_done) applies before anything starts. */
        int req = atomic_exchange_explicit(&r->stop_req, 0, memory_order_acq_rel);
        if (req) {
            apply_stop(r, req);
            if (!result)
                result = CONCUR_ECANCELED;
        }
        /* Start what may start. */
        while (r->stop_level == 0 && (limit == 0 || r->running + r->nstale < (size_t)limit) &&
               (r->held || r->retry_head || !source_done)) {
            if (r->next_start_ok && now_ns() < r->next_start_ok)
                break;
            struct job *j;
            if (r->held) {
                j = r->held;
                r->held = NULL;
            } else if (r->retry_head) {
                j = r->retry_head;
                r->retry_head = j->next;
                if (!r->retry_head)
                    r->retry_tail = NULL;
            } else {
                concur_cmd cmd;
                memset(&cmd, 0, sizeof(cmd));
                int rc = src(arg, index, &cmd);
                if (rc <= 0) {
                    source_done = true;
                    if (rc < 0) {
                        result = rc;
                        apply_stop(r, CONCUR_STOP_START);
                    }
                    break;
                }
                j = job_new(r, index++, &cmd);
                if (!j) {
                    result = CONCUR_ENOMEM;
                    apply_stop(r, CONCUR_STOP_TERM);
                    break;
                }
            }
            /* A function task also needs a free worker in the pool. */
            if (j->fn && r->fn_running + r->nstale >= r->fn_limit) {
                r->held = j;
                break;
            }
            int rc = start_job(r, j);
            if (rc) {
                result = rc;
                apply_stop(r, CONCUR_STOP_TERM);
            }
        }
        if (r->running == 0 && r->nstale == 0 &&
            (r->stop_level || (source_done && !r->retry_head && !r->held)))
            break;
        bool can_start = r->stop_level == 0 && (r->held || r->retry_head || !source_done);
        int n = epoll_wait(r->ep, evs, 64, next_timeout_ms(r, can_start));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            result = -errno;
            apply_stop(r, CONCUR_STOP_TERM);
            n = 0;
        }
        for (int k = 0; k < n; k++) {
            uint64_t d = evs[k].data.u64;
            if (d == EV_FN_DONE) { /* a function task ended: fn_check() below finds it */
                uint64_t v = 0;
                while (read(r->note->efd, &v, sizeof(v)) > 0)
                    ;
                continue;
            }
            if (d == EV_STOP) { /* the stop eventfd: only a wake-up; stop_req says how */
                uint64_t v = 0;
                while (read(r->stop_efd, &v, sizeof(v)) > 0)
                    ;
                int lvl = atomic_exchange_explicit(&r->stop_req, 0, memory_order_acq_rel);
                if (lvl) {
                    apply_stop(r, lvl);
                    if (!result)
                        result = CONCUR_ECANCELED;
                }
                continue;
            }
            if (d == EV_STOP_FD) { /* the caller's stop fd: watched once per run */
                epoll_ctl(r->ep, EPOLL_CTL_DEL, r->o.stop_fd, NULL);
                r->stop_fd_armed = false;
                apply_stop(r, CONCUR_STOP_TERM);
                if (!result)
                    result = CONCUR_ECANCELED;
                continue;
            }
            size_t slot = (size_t)(d >> TAG_BITS);
            int tag = (int)(d & ((1u << TAG_BITS) - 1));
            struct job *j = slot < r->nslots ? r->slots[slot] : NULL;
            if (!j)
                continue; /* an event for a job already finished in this batch */
            int rc = 0;
            if (tag == TAG_OUT && j->out_fd >= 0)
                rc = read_stream(r, j, &j->out_fd, &j->out, CONCUR_STDOUT);
            else if (tag == TAG_ERR && j->err_fd >= 0)
                rc = read_stream(r, j, &j->err_fd, &j->err, CONCUR_STDERR);
            else if (tag == TAG_IN && j->in_fd >= 0)
                write_input(j);
            else if (tag == TAG_PID && j->pidfd >= 0)
                reap(j);
            if (rc) {
                result = rc; /* e.g. a full disk while spilling: stop, keep reaping */
                apply_stop(r, CONCUR_STOP_TERM);
            }
            if (job_over(j)) {
                close_fd(&j->in_fd);
                rc = finish_job(r, slot);
                if (rc) {
                    result = rc;
                    apply_stop(r, CONCUR_STOP_TERM);
                }
            }
        }
        check_timers(r);
        if (r->fn_running || r->nstale) {
            int rc = fn_check(r);
            if (rc) {
                result = rc;
                apply_stop(r, CONCUR_STOP_TERM);
            }
        }
    }
    /* A job held for a function slot and retries left queued by a stop are dropped. */
    job_free(r, r->held);
    r->held = NULL;
    while (r->retry_head) {
        struct job *j = r->retry_head;
        r->retry_head = j->next;
        job_free(r, j);
    }
    r->retry_tail = NULL;
    /* Every function task has returned: the run's own pool goes (its workers, a process
     * pool's fork server). */
    if (r->fn_pool_owned)
        concur_pool_destroy(r->fn_pool);
    r->fn_pool = NULL;
    r->fn_pool_owned = false;
    if (r->o.stop_fd > 0 && !r->stop_fd_armed) { /* watched again by the next run */
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV_STOP_FD};
        if (epoll_ctl(r->ep, EPOLL_CTL_ADD, r->o.stop_fd, &ev) == 0)
            r->stop_fd_armed = true;
    }
    r->wall_end = wall_now();
    return result;
}

/* ---------------------------------------------------------------- lifecycle */

int concur_runner_create(concur_runner **out, const concur_runner_opts *opts)
{
    if (!out)
        return CONCUR_EINVAL;
    concur_runner_opts o;
    memset(&o, 0, sizeof(o));
    if (opts)
        o = *opts;
    if (o.max_workers < 0 || o.timeout != o.timeout || o.kill_grace < 0 || o.term_signal < 0 ||
        o.term_signal >= NSIG || o.start_delay < 0 ||
        (o.engine != CONCUR_ENGINE_THREADS && o.engine != CONCUR_ENGINE_PROCESSES))
        return CONCUR_EINVAL;
    concur_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return CONCUR_ENOMEM;
    r->o = o;
    if (!r->o.term_signal)
        r->o.term_signal = SIGTERM;
    size_t nseq = o.term_seq && o.term_seq_len ? o.term_seq_len : 1;
    r->seq = calloc(nseq, sizeof(*r->seq));
    r->ep = r->stop_efd = -1;
    if (!r->seq) {
        concur_runner_destroy(r);
        return CONCUR_ENOMEM;
    }
    r->nseq = nseq;
    if (o.term_seq && o.term_seq_len) {
        memcpy(r->seq, o.term_seq, nseq * sizeof(*r->seq));
        for (size_t i = 0; i < nseq; i++)
            if (r->seq[i].signal <= 0 || r->seq[i].signal >= NSIG || !(r->seq[i].wait >= 0)) {
                concur_runner_destroy(r);
                return CONCUR_EINVAL;
            }
    } else {
        r->seq[0] = (concur_term_step){r->o.term_signal, o.kill_grace > 0 ? o.kill_grace : 2.0};
    }
    r->o.term_seq = NULL; /* the copy above is the one in use */
    if (!r->o.output_cap)
        r->o.output_cap = DEFAULT_CAP;
    const char *t = getenv("TMPDIR");
    r->tmpdir = t && *t ? t : "/tmp";
    r->ep = epoll_create1(EPOLL_CLOEXEC);
    r->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int rc = 0;
    if (r->ep < 0 || r->stop_efd < 0)
        rc = -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV_STOP};
    if (!rc && epoll_ctl(r->ep, EPOLL_CTL_ADD, r->stop_efd, &ev) < 0)
        rc = -errno;
    if (!rc && o.stop_fd > 0) {
        struct epoll_event sev = {.events = EPOLLIN, .data.u64 = EV_STOP_FD};
        if (epoll_ctl(r->ep, EPOLL_CTL_ADD, o.stop_fd, &sev) < 0)
            rc = -errno;
        else
            r->stop_fd_armed = true;
    }
    if (rc) {
        concur_runner_destroy(r);
        return rc;
    }
    *out = r;
    return 0;
}

void concur_runner_destroy(concur_runner *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nslots; i++)
        job_free(r, r->slots[i]);
    free(r->slots);
    for (size_t i = 0; i < r->capkept; i++)
        job_free(r, r->keptjobs ? r->keptjobs[i] : NULL);
    free(r->keptjobs);
    while (r->npool)
        free(r->pool[--r->npool]);
    free(r->stale);        /* empty after every run */
    note_release(r->note); /* a callback still holding it (a caller's pool) closes it last */
    free(r->seq);
    if (r->ep >= 0)
        close(r->ep);
    if (r->stop_efd >= 0)
        close(r->stop_efd);
    free(r);
}

int concur_runner_stop(concur_runner *r, int how)
{
    if (!r || (how != CONCUR_STOP_START && how != CONCUR_STOP_TERM))
        return CONCUR_EINVAL;
    uint64_t v = (uint64_t)how;
    /* Raise the pending level (a lock-free atomic, fine in a handler), then wake the loop:
     * write(2) on an eventfd is async-signal-safe. A full counter (EAGAIN) means a wake-up is
     * already pending. */
    int cur = atomic_load_explicit(&r->stop_req, memory_order_relaxed);
    while (cur < how && !atomic_compare_exchange_weak_explicit(
                            &r->stop_req, &cur, how, memory_order_acq_rel, memory_order_relaxed))
        ;
    if (write(r->stop_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return -errno;
    return 0;
}

size_t concur_runner_count(const concur_runner *r)
{
    return r ? r->nkept : 0;
}

const concur_result *concur_runner_result(const concur_runner *r, size_t index)
{
    if (!r || index >= r->nkept || !r->keptjobs[index])
        return NULL;
    return &r->keptjobs[index]->res;
}

void concur_runner_times(const concur_runner *r, double *start, double *end)
{
    if (start)
        *start = r ? r->wall_start : 0;
    if (end)
        *end = r ? r->wall_end : 0;
}

/* ---------------------------------------------------------------- batch */

struct batch_src {
    const concur_cmd *cmds;
    size_t n;
};

static int batch_next(void *arg, size_t index, concur_cmd *cmd)
{
    struct batch_src *b = arg;
    if (index >= b->n)
        return 0;
    *cmd = b->cmds[index];
    return 1;
}

int concur_run_batch(const concur_cmd *cmds, size_t n, const concur_runner_opts *opts,
                     concur_runner **out)
{
    if (!out || (!cmds && n))
        return CONCUR_EINVAL;
    concur_runner_opts o;
    memset(&o, 0, sizeof(o));
    if (opts)
        o = *opts;
    o.flags |= CONCUR_RUN_KEEP_RESULTS;
    int rc = concur_runner_create(out, &o);
    if (rc)
        return rc;
    struct batch_src b = {cmds, n};
    return concur_runner_run(*out, batch_next, &b);
}
