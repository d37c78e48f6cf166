/*
 * runner_spawn.c - the runner's commands: spawning a program, capturing its output, feeding
 * its input, reaping it, and a command's part of its record.
 *
 * Flow of one command: argv/envp are built (borrowing the command's strings) -> capture
 * pipes (read ends non-blocking, ours) and, for input, a socket pair (a child that closes
 * its stdin never raises SIGPIPE here: we send with MSG_NOSIGNAL) are made -> sys/os.h
 * spawns the program into a process group of its own with only fds 0, 1 and 2 -> its pidfd,
 * pipes and input socket join the runner's loop, tagged with the job's slot -> output is
 * appended to the job's captures (or handed to on_output), input is sent as the socket
 * takes it -> the pidfd becomes readable at exit and the child is reaped -> once exited and
 * both pipes are at EOF, the job is over (runner.c delivers it). Pipes still open after the
 * exit (held by a process that outlived the child, such as a daemon it started) get
 * OUTPUT_GRACE_NS more, then are closed: a job ends with its process.
 *
 * Captures: up to output_cap bytes in memory; past that the bytes go to an unlinked
 * O_TMPFILE and the whole stream is mapped read-only at the end, so the record still points
 * at one contiguous, exact copy without holding it in anonymous memory.
 *
 * Invariants: every fd is O_CLOEXEC and unwatched before it is closed; a job's fds are -1
 * once closed (EOF, the child gone, or the job released).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "forms/run_state.h"

extern char **environ;

/* ---------------------------------------------------------------- captures */

void concur__cap_init(struct capture *c)
{
    memset(c, 0, sizeof(*c));
    c->spill_fd = -1;
}

void concur__cap_free(concur_runner *r, struct capture *c)
{
    if (c->mapped)
        munmap(c->buf, c->len);
    else if (r && c->buf && c->cap >= POOL_MIN && c->cap <= POOL_MAX && r->npool < POOL_BUFS) {
        r->pool[r->npool] = c->buf;
        r->pool_cap[r->npool++] = c->cap;
    } else
        free(c->buf);
    concur__close(&c->spill_fd);
    concur__cap_init(c);
}

/* An unlinked file in the runner's temporary directory: O_TMPFILE, or where the file system
 * lacks it, a file made with mkstemp and unlinked at once. The fd or -errno. */
static int tmp_file(const concur_runner *r)
{
    int fd = open(r->tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC | O_EXCL, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
        return fd >= 0 ? fd : -errno;
    char *path;
    if (asprintf(&path, "%s/concur-XXXXXX", r->tmpdir) < 0)
        return CONCUR_ENOMEM;
    fd = mkostemp(path, O_CLOEXEC);
    int rc = fd >= 0 ? fd : -errno;
    if (fd >= 0 && unlink(path) < 0) {
        rc = -errno;
        concur__close(&fd);
    }
    free(path);
    return rc;
}

/* Past the cap: everything so far and from now on goes to an unlinked file. */
static int cap_spill(concur_runner *r, struct capture *c, const void *data, size_t n)
{
    int fd = tmp_file(r);
    if (fd < 0)
        return fd;
    int rc = concur__write_all(fd, c->buf, c->len);
    if (!rc)
        rc = concur__write_all(fd, data, n);
    if (rc) {
        concur__close(&fd);
        return rc;
    }
    free(c->buf);
    c->buf = NULL;
    c->cap = 0;
    c->spill_fd = fd;
    c->len += n;
    return 0;
}

static int cap_append(concur_runner *r, struct capture *c, const void *data, size_t n)
{
    size_t limit = r->o.output_cap;
    if (c->spill_fd >= 0) {
        int rc = concur__write_all(c->spill_fd, data, n);
        if (!rc)
            c->len += n;
        return rc;
    }
    if (c->len + n > limit) {
        if (!(r->o.flags & CONCUR_RUN_TRUNCATE))
            return cap_spill(r, c, data, n);
        c->truncated = true;
        n = limit - c->len;
        if (!n)
            return 0;
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
    concur__close(&c->spill_fd);
    c->buf = m;
    c->mapped = true;
    return 0;
}

/* ---------------------------------------------------------------- argv and envp */

/* argv of a job: the command's own, or prefix + arg. Returned array is malloc'd (the strings
 * are borrowed). */
static char **job_argv(const concur_runner *r, const concur_cmd *cmd)
{
    const char *const *base = cmd->argv ? cmd->argv : r->o.prefix;
    const char *last = cmd->argv ? NULL : cmd->arg;
    size_t n = 0;
    while (base && base[n])
        n++;
    char **v = malloc((n + 2) * sizeof(*v));
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++)
        v[i] = (char *)base[i];
    v[n] = (char *)last;
    v[n + (last ? 1 : 0)] = NULL;
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

/* ---------------------------------------------------------------- spawning */

/* An input larger than INPUT_SNDBUF_MIN gets a socket send buffer of its size (at most
 * INPUT_SNDBUF_MAX, and the system's net.core.wmem_max): a block of a megabyte then goes in
 * one or two sends instead of one per default buffer (about 200 KiB), each a wake-up of
 * the loop and of the child. Measured with concur --pipe --block 1M wc -l over 1 GB: 1.48 s
 * with the default buffer, 1.20 s with this. */
enum { INPUT_SNDBUF_MIN = 64 << 10, INPUT_SNDBUF_MAX = 4 << 20 };

/* The fds of one spawn: [0] ours (read ends of the captures, our end of the input socket),
 * [1] the child's. */
struct job_fds {
    int out[2], err[2], in[2];
};

static void fds_close(struct job_fds *p)
{
    int *all[] = {&p->out[0], &p->out[1], &p->err[0], &p->err[1], &p->in[0], &p->in[1]};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        concur__close(all[i]);
}

static int fds_open(const concur_runner *r, const struct job *j, struct job_fds *p)
{
    int rc = 0;
    if (!(r->o.flags & CONCUR_RUN_NO_CAPTURE)) {
        rc = concur__pipe(p->out, true);
        if (!rc && !(r->o.flags & CONCUR_RUN_MERGE_STDERR))
            rc = concur__pipe(p->err, true);
    }
    if (!rc && j->cmd.input) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p->in) < 0)
            rc = -errno;
        else
            rc = concur__set_nonblock(p->in[0]); /* ours only: the child's end blocks */
        if (!rc && j->cmd.input_len > INPUT_SNDBUF_MIN) {
            int sz = j->cmd.input_len < INPUT_SNDBUF_MAX ? (int)j->cmd.input_len : INPUT_SNDBUF_MAX;
            if (setsockopt(p->in[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)) < 0) {
                /* Not an error: the default buffer carries the input too, in more sends. */
            }
        }
    }
    return rc;
}

/* What the program's fds 0, 1 and 2 are. */
static void fds_stdio(const concur_runner *r, const struct job_fds *p, int stdio[3])
{
    if (p->in[1] >= 0)
        stdio[0] = p->in[1];
    else
        stdio[0] = r->o.flags & CONCUR_RUN_INHERIT_STDIN ? CONCUR__STDIO_KEEP
                                                         : CONCUR__STDIO_NULLDEV;
    stdio[1] = p->out[1] >= 0 ? p->out[1] : CONCUR__STDIO_KEEP;
    stdio[2] = p->err[1] >= 0 ? p->err[1] : stdio[1];
}

static void start_failed(struct job *j, int error)
{
    j->res.error = error;
    if (!j->t_start)
        j->t_start = now_ns();
    if (j->wall_start == 0)
        j->wall_start = concur__wall_now();
    j->exited = true;
}

/* The child runs: the job takes our ends of its fds, and they join the loop. */
static int job_watch(concur_runner *r, struct job *j, struct job_fds *p)
{
    j->out_fd = p->out[0];
    j->err_fd = p->err[0];
    j->in_fd = p->in[0];
    p->out[0] = p->err[0] = p->in[0] = -1;
    size_t s = j->slot;
    int rc = concur__loop_add(&r->loop, j->pidfd, EPOLLIN, job_tag(s, TAG_PID));
    if (!rc && j->out_fd >= 0)
        rc = concur__loop_add(&r->loop, j->out_fd, EPOLLIN, job_tag(s, TAG_OUT));
    if (!rc && j->err_fd >= 0)
        rc = concur__loop_add(&r->loop, j->err_fd, EPOLLIN, job_tag(s, TAG_ERR));
    if (!rc && j->in_fd >= 0) {
        if (j->cmd.input_len == 0)
            concur__close(&j->in_fd); /* empty input: EOF at once */
        else
            rc = concur__loop_add(&r->loop, j->in_fd, EPOLLOUT, job_tag(s, TAG_IN));
    }
    return rc;
}

int concur__job_spawn(concur_runner *r, struct job *j)
{
    struct job_fds p = {{-1, -1}, {-1, -1}, {-1, -1}};
    bool envp_owned = false;
    char **argv = job_argv(r, &j->cmd);
    char **envp = argv ? job_envp(&j->cmd, &envp_owned) : NULL;
    int rc = 0;
    if (!argv || !envp) {
        rc = CONCUR_ENOMEM;
    } else if (!argv[0]) {
        j->errmsg = strdup("empty command");
        start_failed(j, CONCUR_EINVAL);
    } else if ((rc = fds_open(r, j, &p)) == 0) {
        concur__spawn_req rq = {.argv = argv, .envp = envp, .cwd = j->cmd.cwd};
        fds_stdio(r, &p, rq.stdio);
        j->t_start = now_ns();
        j->wall_start = concur__wall_now();
        rc = concur__spawn(&rq, &j->pid, &j->pidfd);
        if (rc > 0) { /* the program's failure, not the runner's */
            if (asprintf(&j->errmsg, "%s: %s", argv[0], strerror(rc)) < 0)
                j->errmsg = NULL;
            start_failed(j, -rc);
            rc = 0;
        } else if (rc == 0) {
            concur__runner_delay_next(r);
            concur__runner_arm_deadline(r, j);
            rc = job_watch(r, j, &p);
        }
    }
    fds_close(&p);
    free(argv);
    if (envp_owned)
        free(envp);
    return rc;
}

/* ---------------------------------------------------------------- a running command */

/* Output could not be kept (the temporary directory is full, no memory): the job's record
 * says so, naming the directory; the run then fails (and stops) with @rc. */
static void capture_failed(concur_runner *r, struct job *j, int rc)
{
    if (j->res.error)
        return;
    j->res.error = rc;
    free(j->errmsg);
    if (asprintf(&j->errmsg, "cannot keep the output in the temporary directory '%s': %s",
                 r->tmpdir, concur_strerror(rc)) < 0)
        j->errmsg = NULL;
}

static int read_stream(concur_runner *r, struct job *j, int *fd, struct capture *c, int stream)
{
    if (!r->rbuf && !(r->rbuf = malloc(READ_CHUNK))) {
        capture_failed(r, j, CONCUR_ENOMEM);
        return CONCUR_ENOMEM;
    }
    unsigned char *buf = r->rbuf;
    /* Read at most a few chunks per wake-up, so one chatty job cannot starve the others. */
    for (int round = 0; round < 4; round++) {
        ssize_t n = concur__read_some(*fd, buf, READ_CHUNK);
        if (n == -EAGAIN)
            return 0;
        if (n <= 0) {
            concur__loop_close(&r->loop, fd); /* EOF, or an error we report */
            return (int)n;
        }
        if (r->o.on_output) {
            r->o.on_output(r, j->index, stream, buf, (size_t)n, r->o.cb_arg);
        } else {
            int rc = cap_append(r, c, buf, (size_t)n);
            if (rc) {
                capture_failed(r, j, rc);
                return rc;
            }
        }
        if ((size_t)n < READ_CHUNK)
            return 0;
    }
    return 0;
}

static void write_input(concur_runner *r, struct job *j)
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
    concur__loop_close(&r->loop, &j->in_fd);
}

static void reap(concur_runner *r, struct job *j)
{
    siginfo_t si;
    int rc = concur__reap(j->pidfd, &si, true);
    if (rc == 0)
        return; /* not yet (spurious wake) */
    /* rc < 0: someone else reaped it (SIGCHLD ignored): gone, with its status unknown. */
    j->exited = true;
    j->ended = concur__ended_siginfo(rc > 0 ? &si : NULL);
    concur__loop_close(&r->loop, &j->pidfd);
    /* Output still to come gets a bounded grace (the deadline and the termination sequence
     * are over with the process). */
    if (j->out_fd >= 0 || j->err_fd >= 0)
        concur__timer_arm(&r->loop, &j->timer, now_ns() + OUTPUT_GRACE_NS,
                          job_tag(j->slot, TAG_TIMER));
}

int concur__job_close_output(concur_runner *r, struct job *j)
{
    int rc = 0;
    /* What is there now, a bounded amount (a writer may go on), then the pipes close. */
    for (int k = 0; k < 16 && j->out_fd >= 0 && !rc; k++)
        rc = read_stream(r, j, &j->out_fd, &j->out, CONCUR_STDOUT);
    for (int k = 0; k < 16 && j->err_fd >= 0 && !rc; k++)
        rc = read_stream(r, j, &j->err_fd, &j->err, CONCUR_STDERR);
    concur__loop_close(&r->loop, &j->out_fd);
    concur__loop_close(&r->loop, &j->err_fd);
    return rc;
}

int concur__job_event(concur_runner *r, struct job *j, int tag)
{
    if (tag == TAG_OUT && j->out_fd >= 0)
        return read_stream(r, j, &j->out_fd, &j->out, CONCUR_STDOUT);
    if (tag == TAG_ERR && j->err_fd >= 0)
        return read_stream(r, j, &j->err_fd, &j->err, CONCUR_STDERR);
    if (tag == TAG_IN && j->in_fd >= 0)
        write_input(r, j);
    else if (tag == TAG_PID && j->pidfd >= 0)
        reap(r, j);
    return 0;
}

void concur__job_cmd_result(struct job *j)
{
    concur_result *res = &j->res;
    if (res->spawned && j->ended.how == CONCUR__ENDED_EXITED) {
        res->exit_code = j->ended.value;
        res->returncode = j->ended.value;
    } else if (res->spawned && j->ended.how == CONCUR__ENDED_KILLED) {
        res->signal = j->ended.value;
        res->returncode = -j->ended.value;
    }
    res->success = res->spawned && res->exit_code == 0 && !res->timeout && !res->error;
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
    res->out_mapped = j->out.mapped;
    res->err_mapped = j->err.mapped;
    res->err_truncated = j->err.truncated;
}
