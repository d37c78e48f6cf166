/*
 * results.c - --results PATH: keeping every job's output, and the JSON form of a job.
 *
 * PATH decides the form:
 *   *.json  one JSON object per line per job, GNU parallel's: Seq, Host, Starttime,
 *           JobRuntime, Send, Receive, Exitval, Signal, Command, V (the arguments),
 *           Stdout, Stderr;
 *   *.csv   a header, then one row per job (GNU parallel's columns: Seq, Host,
 *           Starttime, JobRuntime, Send, Receive, Exitval, Signal, Command, V1..Vn,
 *           Stdout, Stderr), fields quoted when they hold a quote, a blank or a comma;
 *   *.tsv   the same with TABs;
 *   -.json, -.csv, -.tsv  these on standard output (GNU parallel's special names);
 *   with a replacement string ({}, {1}, {#}...), as GNU parallel: each job's expanded
 *           PATH names its files: PATH, PATH.err and PATH.seq, or, when it ends in /,
 *           PATH/stdout, PATH/stderr and PATH/seq;
 *   else    a directory laid out as GNU parallel does: PATH/1/<arg 1>/2/<arg 2>/ holds
 *           the files stdout, stderr and seq of the job with these arguments (in an
 *           argument, \ becomes \\, TAB \t, and / becomes \_; as GNU parallel does, a
 *           name longer than the file system allows, usually 255 bytes, is cut there).
 * Jobs are written when they are delivered (in completion order, or in input order with
 * -k), before their joblog line. Files are written with write(2) and every write and close
 * is checked; a row of a .json/.csv/.tsv file is written with one write, and truncated
 * away if that write is cut short (a full disk).
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

enum rkind { R_JSON, R_CSV, R_DIR, R_TPL };

struct results {
    enum rkind kind;
    char sep;
    int fd;
    struct writer *w; /* -.json, -.csv, -.tsv: standard output's writer (fd is -1) */
    char *path;
    bool header_done;
    size_t name_max; /* the longest file name in the directory */
    const struct field *names; /* --header: the columns' names */
    size_t nnames;
    struct tpl *tpl; /* R_TPL: PATH with its replacement strings */
    struct buf b;
    struct buf order; /* a directory's levels: the arguments' indexes in order (size_t[]) */
    const char *zprog; /* --compress: the program that compresses the stdout and stderr files */
};

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && !strcasecmp(s + n - m, suffix);
}


static const char *find_compressor(void);

int results_open(struct results **out, const char *path, struct writer *stdout_w,
                 const struct cli_opts *o)
{
    struct results *r = calloc(1, sizeof(*r));
    int rc = 0;
    *out = NULL;
    if (!r || !(r->path = strdup(path))) {
        free(r);
        cli_error("out of memory");
        return CONCUR_ENOMEM;
    }
    r->fd = -1;
    if (ends_with(path, ".json") || ends_with(path, ".csv") || ends_with(path, ".tsv")) {
        r->kind = ends_with(path, ".json") ? R_JSON : R_CSV;
        r->sep = ends_with(path, ".tsv") ? '\t' : ',';
        if (!strcmp(path, "-.json") || !strcmp(path, "-.csv") || !strcmp(path, "-.tsv")) {
            r->w = stdout_w;
            *out = r;
            return 0;
        }
        r->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0666);
        if (r->fd < 0)
            rc = -errno;
    } else if ((rc = tpl_compile_plain(&r->tpl, path, strlen(path), o)) == 0 &&
               tpl_has_placeholder(r->tpl)) {
        r->kind = R_TPL; /* the files are made job by job */
    } else if (rc) {
        if (rc == CONCUR_ENOMEM) /* (a bad {= perl =} had its message) */
            cli_error("out of memory");
        results_close(r);
        return rc;
    } else {
        r->kind = R_DIR;
        rc = mkdir_p(r->path);
        long max = rc ? -1 : pathconf(r->path, _PC_NAME_MAX);
        r->name_max = max > 0 ? (size_t)max : 255;
    }
    if (rc) {
        cli_error("cannot create the results '%s': %s", path, strerror(-rc));
        results_close(r);
        return rc;
    }
    r->zprog = o->compress ? find_compressor() : NULL;
    *out = r;
    return 0;
}

/* ------------------------------------------------------------------ JSON */

/* The job's arguments as the items of a JSON array: "a","b" (the brackets are the caller's). */
static void json_args(struct buf *b, const struct jobdone *d)
{
    for (size_t i = 0; i < d->nargs; i++) {
        buf_add(b, i ? ",\"" : "\"", i ? 2 : 1);
        json_string(b, d->args[i].p, d->args[i].len);
        buf_addc(b, '"');
    }
}

void json_job(struct buf *b, const struct jobdone *d)
{
    buf_printf(b, "{\"seq\":%zu,\"args\":[", d->seq);
    json_args(b, d);
    buf_adds(b, "],\"command\":\"");
    json_string(b, d->cmd, d->cmd_len);
    buf_printf(b,
               "\",\"exitcode\":%d,\"signal\":%d,\"timeout\":%s,\"start\":%.3f,"
               "\"runtime\":%.3f,\"stdout\":\"",
               d->exitcode, d->sig, d->timeout ? "true" : "false", d->start, d->runtime);
    json_string(b, d->out, d->out_len);
    buf_adds(b, "\",\"stderr\":\"");
    json_string(b, d->err, d->err_len);
    buf_adds(b, "\"}\n");
}

/* GNU parallel's object for --results FILE.json. */
static void json_gnu(struct buf *b, const struct jobdone *d)
{
    const char *host = d->host ? d->host : ":";
    buf_printf(b, "{ \"Seq\": %zu, \"Host\": \"", d->seq);
    json_string(b, host, strlen(host));
    buf_printf(b,
               "\", \"Starttime\": %.3f, \"JobRuntime\": %.3f, \"Send\": 0, \"Receive\": %zu, "
               "\"Exitval\": %d, \"Signal\": %d, \"Command\": \"",
               d->start, d->runtime, d->out_len + d->err_len, d->exitval, d->sig);
    json_string(b, d->cmd, d->cmd_len);
    buf_adds(b, "\", \"V\": [ ");
    json_args(b, d);
    buf_adds(b, " ], \"Stdout\": \"");
    json_string(b, d->out, d->out_len);
    buf_adds(b, "\", \"Stderr\": \"");
    json_string(b, d->err, d->err_len);
    buf_adds(b, "\" }\n");
}

/* ------------------------------------------------------------------ CSV */

/* GNU parallel's combine_ref: quotes doubled; quoted when holding a quote, a blank or the
 * separator. */
static void csv_field(struct buf *b, const void *data, size_t n, char sep)
{
    const char *s = data;
    bool quote = false;
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == '"' || s[i] == sep || s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r');
    if (!quote) {
        buf_add(b, s, n);
        return;
    }
    buf_addc(b, '"');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            buf_addc(b, '"');
        buf_addc(b, s[i]);
    }
    buf_addc(b, '"');
}

static void csv_row(struct results *r, const struct jobdone *d)
{
    struct buf *b = &r->b;
    char sep = r->sep;
    if (!r->header_done) {
        buf_printf(b, "Seq%cHost%cStarttime%cJobRuntime%cSend%cReceive%cExitval%cSignal%cCommand",
                   sep, sep, sep, sep, sep, sep, sep, sep);
        for (size_t i = 0; i < d->nargs; i++)
            buf_printf(b, "%cV%zu", sep, i + 1);
        buf_printf(b, "%cStdout%cStderr\n", sep, sep);
        r->header_done = true;
    }
    const char *host = d->host ? d->host : ":";
    buf_printf(b, "%zu%c", d->seq, sep);
    csv_field(b, host, strlen(host), sep);
    buf_printf(b, "%c%.3f%c%.3f%c0%c%zu%c%d%c%d%c", sep, d->start, sep, d->runtime, sep, sep,
               d->out_len + d->err_len, sep, d->exitval, sep, d->sig, sep);
    csv_field(b, d->cmd, d->cmd_len, sep);
    for (size_t i = 0; i < d->nargs; i++) {
        buf_addc(b, sep);
        csv_field(b, d->args[i].p, d->args[i].len, sep);
    }
    buf_addc(b, sep);
    csv_field(b, d->out, d->out_len, sep);
    buf_addc(b, sep);
    csv_field(b, d->err, d->err_len, sep);
    buf_addc(b, '\n');
}

/* ------------------------------------------------------------------ directory */

static int write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return -errno;
    int rc = write_all(fd, data, n);
    if (close(fd) < 0 && !rc)
        rc = -errno;
    return rc;
}

void results_set_names(struct results *r, const struct field *names, size_t n)
{
    r->names = names;
    r->nnames = n;
}

/* One level of a results directory: an argument or a column's name, escaped as GNU
 * parallel does and cut to the longest file name. */
static void dir_level(struct results *r, const char *p, size_t len)
{
    struct buf *b = &r->b;
    size_t name = b->len;
    for (size_t k = 0; k < len && b->len - name < r->name_max; k++) {
        char c = p[k];
        if (c == '\\')
            buf_add(b, "\\\\", 2);
        else if (c == '\t')
            buf_add(b, "\\t", 2);
        else if (c == '/')
            buf_add(b, "\\_", 2);
        else
            buf_addc(b, c);
    }
    if (b->len - name > r->name_max) /* as GNU parallel: cut to the longest file name */
        b->len = name + r->name_max;
}

/* --compress: data[0, n) compressed by `prog -c -1` into the file path. 0 or -errno
 * (CONCUR_EIO when the program failed). */
static int write_compressed(const char *path, const void *data, size_t n, const char *prog)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666), p[2], rc = 0;
    if (fd < 0)
        return -errno;
    if (pipe2(p, O_CLOEXEC) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    static char c[] = "-c", one[] = "-1";
    char *argv[] = {(char *)prog, c, one, NULL};
    const int fds[][2] = {{p[0], 0}, {fd, 1}};
    pid_t pid;
    int err = spawn_fds(&pid, argv, fds, 2);
    close(p[0]);
    if (close(fd) < 0)
        rc = -errno;
    if (err) {
        close(p[1]);
        return -err;
    }
    int wrc = write_all(p[1], data, n), st = 0;
    if (close(p[1]) < 0 && !wrc)
        wrc = -errno;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            rc = rc ? rc : -errno;
            break;
        }
    }
    if (!rc && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        rc = CONCUR_EIO;
    return rc ? rc : wrc;
}

/* --compress: the first of GNU parallel's compressors found in $PATH (NULL: none, the
 * files are then written as they are, as GNU parallel's fallback, cat, does). */
static const char *find_compressor(void)
{
    static const char *const progs[] = {"pzstd", "lbzip2", "pbzip2", "zstd", "pixz", "lz4",
                                        "pigz",  "lzop",   "plzip",  "lzip", "gzip", "lrz",
                                        "pxz",   "bzip2",  "lzma",   "xz",   "clzip"};
    for (size_t i = 0; i < sizeof(progs) / sizeof(progs[0]); i++)
        if (in_path(progs[i]))
            return progs[i];
    return NULL;
}

/* The job's stdout, stderr and sequence number in b's path + each of suffix[]; with
 * --compress, the first two compressed. */
static int write_three(struct results *r, const struct jobdone *d, const char *const suffix[3])
{
    struct buf *b = &r->b;
    size_t base = b->len;
    char seq[32];
    int sn = snprintf(seq, sizeof(seq), "%zu", d->seq);
    const void *data[] = {d->out, d->err, seq};
    size_t len[] = {d->out_len, d->err_len, (size_t)sn};
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        b->len = base;
        buf_adds(b, suffix[i]);
        if (!buf_ok(b))
            rc = CONCUR_ENOMEM;
        else if (i < 2 && r->zprog)
            rc = write_compressed(b->p, data[i], len[i], r->zprog);
        else
            rc = write_file(b->p, data[i], len[i]);
    }
    return rc;
}

/* PATH with replacement strings: the expanded path names the job's files. */
static int tpl_job(struct results *r, const struct jobdone *d)
{
    static const char *const in_dir[] = {"stdout", "stderr", "seq"};
    static const char *const beside[] = {"", ".err", ".seq"};
    struct buf *b = &r->b;
    struct jobview v = {d->args, d->nargs, d->seq, 1};
    tpl_plain(r->tpl, &v, b);
    buf_addnul(b);
    if (!buf_ok(b))
        return CONCUR_ENOMEM;
    b->len--;
    bool dir = b->len && b->p[b->len - 1] == '/';
    char *slash = strrchr(b->p, '/');
    int rc = 0;
    if (dir) {
        rc = mkdir_p(b->p);
    } else if (slash && slash != b->p) {
        *slash = '\0';
        rc = mkdir_p(b->p);
        *slash = '/';
    }
    return rc ? rc : write_three(r, d, dir ? in_dir : beside);
}

/* Whether column col has a name: --header gave it one that is not empty (as GNU parallel,
 * a column without one is named by its number). */
static bool has_name(const struct results *r, unsigned col)
{
    return col >= 1 && col <= r->nnames && r->names[col - 1].len > 0;
}

/* The name of column col (its number without --header) as Perl sees it as a number: its
 * leading number, or 0. */
static double name_number(const struct results *r, unsigned col)
{
    char tmp[64];
    if (!has_name(r, col))
        return col;
    size_t n = r->names[col - 1].len < sizeof(tmp) - 1 ? r->names[col - 1].len : sizeof(tmp) - 1;
    memcpy(tmp, r->names[col - 1].p, n);
    tmp[n] = '\0';
    return strtod(tmp, NULL);
}

/* Whether column a comes after column b in a results directory: as GNU parallel, the
 * levels are sorted by the columns' names, numerically, then byte by byte. */
static bool name_after(const struct results *r, unsigned a, unsigned b)
{
    double x = name_number(r, a), y = name_number(r, b);
    if (x != y || !has_name(r, a) || !has_name(r, b))
        return x != y ? x > y : a > b;
    const struct field *p = &r->names[a - 1], *q = &r->names[b - 1];
    int c = memcmp(p->p, q->p, p->len < q->len ? p->len : q->len);
    return c ? c > 0 : p->len > q->len;
}

static int dir_job(struct results *r, const struct jobdone *d)
{
    struct buf *b = &r->b;
    buf_adds(b, r->path);
    buf_reset(&r->order);
    for (size_t i = 0; i < d->nargs; i++)
        buf_add(&r->order, &i, sizeof(i));
    if (!buf_ok(&r->order))
        return CONCUR_ENOMEM;
    size_t *ord = (size_t *)r->order.p;
    /* each record's arguments (a run of increasing columns) in the order of their names */
    for (size_t first = 0, i = 1; i < d->nargs; i++) {
        if (d->args[i].col <= d->args[i - 1].col) {
            first = i;
            continue;
        }
        size_t k = i;
        while (k > first && name_after(r, d->args[ord[k - 1]].col, d->args[i].col)) {
            ord[k] = ord[k - 1];
            k--;
        }
        ord[k] = i;
    }
    for (size_t x = 0; x < d->nargs; x++) {
        size_t i = ord[x];
        unsigned col = d->args[i].col;
        buf_addc(b, '/');
        if (has_name(r, col))
            dir_level(r, r->names[col - 1].p, r->names[col - 1].len);
        else
            buf_printf(b, "%u", col);
        buf_addc(b, '/');
        dir_level(r, d->args[i].p, d->args[i].len);
    }
    if (!buf_ok(b))
        return CONCUR_ENOMEM;
    int rc = mkdir_p(b->p);
    static const char *const names[] = {"/stdout", "/stderr", "/seq"};
    return rc ? rc : write_three(r, d, names);
}

int results_write(struct results *r, const struct jobdone *d)
{
    int rc = 0;
    buf_reset(&r->b);
    if (r->kind == R_DIR || r->kind == R_TPL) {
        rc = r->kind == R_DIR ? dir_job(r, d) : tpl_job(r, d);
    } else {
        if (r->kind == R_JSON)
            json_gnu(&r->b, d);
        else
            csv_row(r, d);
        if (!buf_ok(&r->b))
            rc = CONCUR_ENOMEM;
        else if (r->w) /* its errors are the writer's (output_error) */
            wr_add(r->w, r->b.p, r->b.len);
        else
            rc = append_record(r->fd, r->b.p, r->b.len);
    }
    if (rc) /* in a directory, the buffer holds the path that failed */
        cli_error("cannot write the results '%s': %s",
                  r->kind >= R_DIR && buf_ok(&r->b) ? r->b.p : r->path, concur_strerror(rc));
    return rc;
}

int results_close(struct results *r)
{
    int rc = 0;
    if (!r)
        return 0;
    if (r->fd >= 0 && close(r->fd) < 0) {
        rc = -errno;
        cli_error("cannot write the results '%s': %s", r->path, strerror(errno));
    }
    buf_free(&r->b);
    buf_free(&r->order);
    tpl_free(r->tpl);
    free(r->path);
    free(r);
    return rc;
}
