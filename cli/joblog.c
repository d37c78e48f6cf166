/*
 * joblog.c - --joblog FILE in GNU parallel's format, and --resume / --resume-failed.
 *
 * The file starts with the header
 *   Seq  Host  Starttime  JobRuntime  Send  Receive  Exitval  Signal  Command
 * (TAB-separated) and gets one line per finished job, in the order the jobs' output is
 * delivered, written with a single write(2) once the job's output (or its --results
 * entry) was written without error, so that after a crash, a kill or a full disk the file
 * lists only jobs whose output is safe. A write cut short (a full disk) is truncated away,
 * so a line is either whole or absent; a torn last line left by a kill in the middle of a
 * write is ignored when the file is read back (with a warning) and removed before new lines
 * are appended. Host is ":" (this machine) or, with --mpi, the host of the rank that ran
 * the job; Starttime is
 * seconds since the epoch with 3 decimals, JobRuntime is "%10.3f", Send is 0 (no stdin is
 * sent), Receive counts the bytes of output, Exitval is the exit status (-1 for a job
 * killed by its timeout, as GNU parallel logs it) and Signal the signal that ended it.
 * Jobs killed because concur itself was interrupted are not logged: they are not done.
 *
 * --joblog +FILE appends to FILE and writes no header; --joblog - writes the header and the
 * lines to standard output, each line after its job's output (as GNU parallel does).
 *
 * Resuming reads the file back first. A job is identified by its sequence number:
 * --resume skips every job the file lists; --resume-failed skips only those that
 * succeeded (Exitval 0, Signal 0) with the same command line, so failed and changed jobs
 * run again. A later line for the same Seq overrides an earlier one. The file is then
 * appended to rather than truncated. Memory: one 24-byte entry per logged job.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct entry {
    uint64_t seq; /* 0: empty slot */
    uint64_t hash;
    bool ok;
};

struct joblog {
    int fd;
    bool retry;       /* --retry-failed: an empty command line is a job the joblog lacks */
    struct buf *cmds; /* joblog_commands(): each line's seq, command length and command */
    struct writer *w; /* --joblog -: standard output's writer (fd is -1) */
    char *path;
    bool resume_failed;
    struct entry *tab; /* open addressing, power-of-two size */
    size_t cap, n;
    struct buf line;
};

/* The hash of a command line as the joblog has it: a newline counts as the NUL byte that
 * stands for it there. */
static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i] == '\n' ? 0u : (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static struct entry *lookup(const struct joblog *jl, uint64_t seq)
{
    if (!jl->cap)
        return NULL;
    size_t mask = jl->cap - 1, i = (size_t)(seq * 0x9E3779B97F4A7C15ull) & mask;
    while (jl->tab[i].seq && jl->tab[i].seq != seq)
        i = (i + 1) & mask;
    return &jl->tab[i];
}

static int remember(struct joblog *jl, uint64_t seq, uint64_t hash, bool ok)
{
    if ((jl->n + 1) * 2 > jl->cap) {
        size_t cap = jl->cap ? jl->cap * 2 : 1024;
        struct entry *old = jl->tab;
        size_t oldcap = jl->cap;
        jl->tab = calloc(cap, sizeof(*jl->tab));
        if (!jl->tab) {
            jl->tab = old;
            return CONCUR_ENOMEM;
        }
        jl->cap = cap;
        jl->n = 0;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i].seq) {
                *lookup(jl, old[i].seq) = old[i];
                jl->n++;
            }
        free(old);
    }
    struct entry *e = lookup(jl, seq);
    if (!e->seq)
        jl->n++;
    *e = (struct entry){seq, hash, ok};
    return 0;
}

/* One line of a joblog: remembers its job. Lines that do not parse are ignored. */
static int parse_line(struct joblog *jl, char *s, size_t n)
{
    char *f[9];
    size_t k = 0;
    char *p = s, *end = s + n;
    while (k < 8) {
        char *tab = memchr(p, '\t', (size_t)(end - p));
        if (!tab)
            return 0;
        *tab = '\0';
        f[k++] = p;
        p = tab + 1;
    }
    f[8] = p; /* the command: the rest of the line */
    char *e1, *e2, *e3;
    errno = 0;
    unsigned long long seq = strtoull(f[0], &e1, 10);
    long ev = strtol(f[6], &e2, 10);
    long sg = strtol(f[7], &e3, 10);
    if (errno || *e1 || *e2 || *e3 || seq == 0 || e1 == f[0])
        return 0;
    if (jl->cmds) {
        size_t len = (size_t)(end - f[8]);
        buf_add(jl->cmds, &seq, sizeof(seq));
        buf_add(jl->cmds, &len, sizeof(len));
        buf_add(jl->cmds, f[8], len);
        buf_addc(jl->cmds, '\0');
    }
    return remember(jl, seq, fnv1a(f[8], (size_t)(end - f[8])), ev == 0 && sg == 0);
}

/* Reads the joblog at fd: remembers its jobs. *complete is set to the length of its
 * complete lines: a last line without its newline was torn (a full disk, a kill in the
 * middle of a write) and is not trusted. */
static int read_log(struct joblog *jl, int fd, off_t *complete)
{
    struct buf b = {0};
    char blk[65536];
    int rc = 0;
    off_t done = 0;
    for (;;) {
        ssize_t got = read(fd, blk, sizeof(blk));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = -errno;
            break;
        }
        if (got == 0)
            break;
        buf_add(&b, blk, (size_t)got);
        if (!buf_ok(&b)) {
            rc = CONCUR_ENOMEM;
            break;
        }
        /* Parse the complete lines; keep a partial one. */
        char *nl, *start = b.p;
        while ((nl = memchr(start, '\n', b.len - (size_t)(start - b.p))) != NULL) {
            if ((rc = parse_line(jl, start, (size_t)(nl - start))) != 0)
                break;
            done += nl + 1 - start;
            start = nl + 1;
        }
        size_t rest = b.len - (size_t)(start - b.p);
        memmove(b.p, start, rest);
        b.len = rest;
        if (rc)
            break;
    }
    *complete = done;
    buf_free(&b);
    return rc;
}

static const char header[] =
    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n";

int joblog_open(struct joblog **out, const char *path, bool resume, bool resume_failed,
                bool readonly, struct writer *stdout_w)
{
    bool plus = path[0] == '+'; /* +FILE: appended to, without a header */
    struct joblog *jl = calloc(1, sizeof(*jl));
    int rc = 0;
    *out = NULL;
    if (!jl || !(jl->path = strdup(path + plus))) {
        free(jl);
        cli_error("out of memory");
        return CONCUR_ENOMEM;
    }
    path += plus;
    jl->fd = -1;
    jl->resume_failed = resume_failed;
    if (!plus && !strcmp(path, "-")) { /* standard output: nothing to resume from */
        jl->w = stdout_w;
        if (!readonly)
            wr_add(jl->w, header, sizeof(header) - 1);
        *out = jl;
        return 0;
    }
    bool append = resume || resume_failed || plus;
    off_t complete = -1; /* the length of the complete lines of the joblog read */
    if (append) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat rst;
        if (fd >= 0) {
            rc = read_log(jl, fd, &complete);
            if (!rc && fstat(fd, &rst) == 0 && rst.st_size > complete)
                cli_warn("the joblog '%s' ends with an incomplete line (a write that was cut "
                         "short): ignored%s",
                         path, readonly ? "" : ", and removed");
            close(fd);
            if (rc) {
                cli_error("cannot read the joblog '%s': %s", path, concur_strerror(rc));
                joblog_close(jl);
                return rc;
            }
        } else if (errno != ENOENT) {
            rc = -errno;
            cli_error("cannot open the joblog '%s': %s", path, strerror(errno));
            joblog_close(jl);
            return rc;
        }
    }
    if (readonly) {
        *out = jl;
        return 0;
    }
    jl->fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0666);
    struct stat st;
    if (jl->fd < 0 || fstat(jl->fd, &st) < 0 ||
        (complete >= 0 && st.st_size > complete && ftruncate(jl->fd, complete) < 0)) {
        rc = -errno;
        cli_error("cannot open the joblog '%s': %s", path, strerror(errno));
        joblog_close(jl);
        return rc;
    }
    if (complete >= 0 && st.st_size > complete)
        st.st_size = complete;
    if (st.st_size == 0 && !plus) {
        if ((rc = append_record(jl->fd, header, sizeof(header) - 1)) != 0) {
            cli_error("cannot write the joblog '%s': %s", path, strerror(-rc));
            joblog_close(jl);
            return rc;
        }
    }
    *out = jl;
    return 0;
}

bool joblog_needs_line(const struct joblog *jl)
{
    return jl->resume_failed && jl->n > 0;
}

bool joblog_done(const struct joblog *jl, size_t seq, const char *line, size_t len)
{
    const struct entry *e = lookup(jl, seq);
    if (!e || !e->seq)
        return jl->retry && len == 0;
    if (!jl->resume_failed)
        return true;
    return e->ok && e->hash == fnv1a(line, len);
}

int joblog_prepare(struct joblog *jl, size_t seq, const char *host, double start, double runtime,
                   size_t sent, size_t received, int exitval, int sig, const char *cmd,
                   size_t cmd_len)
{
    buf_reset(&jl->line);
    buf_printf(&jl->line, "%zu\t%s\t%.3f\t%10.3f\t%zu\t%zu\t%d\t%d\t", seq, host ? host : ":",
               start, runtime, sent, received, exitval, sig);
    size_t at = jl->line.len;
    buf_add(&jl->line, cmd, cmd_len);
    for (size_t i = at; buf_ok(&jl->line) && i < jl->line.len; i++)
        if (jl->line.p[i] == '\n') /* as GNU parallel: a newline of the command is a NUL */
            jl->line.p[i] = '\0';
    buf_addc(&jl->line, '\n');
    return buf_ok(&jl->line) ? 0 : CONCUR_ENOMEM;
}

int joblog_commit(struct joblog *jl)
{
    if (jl->w) { /* its errors are the writer's (output_error) */
        wr_add(jl->w, jl->line.p, jl->line.len);
        return 0;
    }
    return append_record(jl->fd, jl->line.p, jl->line.len);
}

void joblog_close(struct joblog *jl)
{
    if (!jl)
        return;
    if (jl->fd >= 0)
        close(jl->fd);
    free(jl->tab);
    free(jl->path);
    buf_free(&jl->line);
    free(jl);
}

void joblog_retry(struct joblog *jl)
{
    jl->retry = true;
}

/* The commands of the joblog's lines (data: seq, length, command and a NUL, each) as
 * items by seq (see joblog_commands). */
static int commands_by_seq(const char *data, size_t size, char ***items, size_t *n)
{
    uint64_t max = 0, seq;
    size_t len;
    for (size_t at = 0; at < size; at += sizeof(seq) + sizeof(len) + len + 1) {
        memcpy(&seq, data + at, sizeof(seq));
        memcpy(&len, data + at + sizeof(seq), sizeof(len));
        max = seq > max ? seq : max;
    }
    if (max > SIZE_MAX / sizeof(char *) - 1 || max > (uint64_t)size)
        return CONCUR_EINVAL; /* (a Seq far beyond the lines there are: not a joblog) */
    char **v = calloc((size_t)max + 1, sizeof(*v));
    if (!v)
        return CONCUR_ENOMEM;
    static char none[] = "";
    for (size_t i = 0; i < max; i++)
        v[i] = none;
    for (size_t at = 0; at < size; at += sizeof(seq) + sizeof(len) + len + 1) {
        memcpy(&seq, data + at, sizeof(seq));
        memcpy(&len, data + at + sizeof(seq), sizeof(len));
        char *cmd = (char *)data + at + sizeof(seq) + sizeof(len);
        for (size_t i = 0; i < len; i++)
            if (cmd[i] == '\0') /* the newlines the joblog keeps as NUL bytes */
                cmd[i] = '\n';
        v[seq - 1] = cmd; /* a later line for a seq overrides an earlier one */
    }
    *items = v;
    *n = (size_t)max;
    return 0;
}

int joblog_commands(const char *path, char ***items, size_t *n, char **store)
{
    struct joblog jl = {.fd = -1};
    struct buf cmds = {0};
    off_t complete;
    jl.cmds = &cmds;
    *items = NULL;
    *n = 0;
    *store = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    int rc = read_log(&jl, fd, &complete);
    close(fd);
    free(jl.tab);
    buf_free(&jl.line);
    if (!rc && !buf_ok(&cmds))
        rc = CONCUR_ENOMEM;
    if (!rc && cmds.len)
        rc = commands_by_seq(cmds.p, cmds.len, items, n);
    if (rc || !*n) {
        buf_free(&cmds);
        return rc;
    }
    *store = cmds.p;
    return 0;
}
