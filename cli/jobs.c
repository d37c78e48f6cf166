/*
 * jobs.c - the runner's source: from input records to the commands the runner starts.
 *
 * The runner's loop calls next_job() whenever a slot is free. A job is built from the input
 * then (build_job): records are read lazily, one job ahead of the free slots, so memory does
 * not grow with the number of input lines. What flows through:
 *
 *   input_next() -> record(s) -> job (-n N records, or with -X / -m as many as fit in one
 *   command line) -> skipped if the --resume joblog says it is done -> slot {%} -> argv
 *   from the template -> the runner
 *
 * Invariants:
 *   - a job's sequence number ({#}, the joblog's Seq) counts every job built, including
 *     those --resume skips; the runner's index counts the jobs actually run (-k prints in
 *     that order);
 *   - job records come from a free list and go back to it (job_put), so a steady run
 *     allocates nothing per job; with --report they are kept instead, since the runner's
 *     kept results point into them;
 *   - a job's argument fields point into its own argbuf (sealed once argbuf stops moving);
 *   - records pushed back (one that did not fit, or those -X / -m spread to later jobs) wait in a
 *     queue that next_record() drains before reading more input.
 */
#include "run.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Says that the limit on open files caps the jobs at @jobs at once (GNU parallel's warning). */
void fd_limit_warning(int jobs)
{
    struct rlimit rl;
    if (cli_gnu()) {
        cli_warn("Only enough file handles to run %d jobs in parallel.", jobs);
        cli_warn("Try running 'parallel -j0 -N %d --pipe parallel -j0'", jobs);
        cli_warn("or increasing 'ulimit -n' (try: ulimit -n `ulimit -Hn`)");
        cli_warn("or increasing 'nofile' in /etc/security/limits.conf");
        cli_warn("or increasing /proc/sys/fs/file-max");
    } else if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        cli_warn("only enough file descriptors (ulimit -n %llu) to run %d jobs at once; "
                 "raise 'ulimit -n' to run more",
                 (unsigned long long)rl.rlim_cur, jobs);
    }
}

/* A record waiting to become part of a job (pushed back). */
struct qrec {
    struct qrec *next;
    size_t n;
    struct field f[]; /* followed by the bytes */
};

/* ------------------------------------------------------------------ job records */

static struct job *job_get(struct app *a)
{
    struct job *j = a->free_jobs;
    if (j) {
        a->free_jobs = j->next;
    } else {
        j = calloc(1, sizeof(*j));
        if (!j)
            return NULL;
    }
    j->next = NULL;
    buf_reset(&j->argbuf);
    buf_reset(&j->out);
    buf_reset(&j->err);
    buf_reset(&j->tag);
    buf_reset(&j->line);
    j->nargs = 0;
    j->received = 0;
    j->block = NULL;
    j->sent = 0;
    j->have_line = j->have_tag = j->finished = j->skip = false;
    j->print = true;
    return j;
}

static void job_free(struct job *j)
{
    buf_free(&j->argbuf);
    buf_free(&j->strs);
    buf_free(&j->vec);
    buf_free(&j->mpi_vec);
    buf_free(&j->line);
    buf_free(&j->out);
    buf_free(&j->err);
    buf_free(&j->tag);
    buf_free(&j->report_arg);
    pblock_free(j->block);
    free(j->args);
    free(j);
}

/* Back to the free list; kept instead with --report (the runner's results point into it).
 * Big buffers are released so that one huge job does not pin its memory. */
void job_put(struct app *a, struct job *j)
{
    pipe_put(a->pin, j->block);
    j->block = NULL;
    if (a->o.report) {
        j->next = a->kept_jobs;
        a->kept_jobs = j;
        return;
    }
    if (j->out.cap > 1 << 20)
        buf_free(&j->out);
    if (j->err.cap > 1 << 20)
        buf_free(&j->err);
    j->next = a->free_jobs;
    a->free_jobs = j;
}

const struct buf *job_line(struct app *a, struct job *j)
{
    if (!j->have_line) {
        struct jobview v = view_of(j);
        int rc = tpl_line(a->tpl, &v, &j->line);
        if (rc < 0)
            return NULL;
        j->skip = rc == TPL_SKIP;
        j->have_line = true;
    }
    return &j->line;
}

int job_show_line(struct app *a, struct job *j, int stream)
{
    const struct buf *line = job_line(a, j);
    if (!line)
        return CONCUR_ENOMEM;
    output_raw(&a->out, stream, line->p, line->len);
    output_raw(&a->out, stream, "\n", 1);
    return 0;
}

static void free_list(struct job *j)
{
    for (struct job *n; j; j = n) {
        n = j->next;
        job_free(j);
    }
}

void jobs_free(struct app *a)
{
    free_list(a->free_jobs);
    free_list(a->kept_jobs);
    for (size_t i = 0; a->ring && i < a->ring_cap; i++)
        if (a->ring[i])
            job_free(a->ring[i]);
    for (struct qrec *q = a->qhead, *n; q; q = n) {
        n = q->next;
        free(q);
    }
    free(a->qcur);
    a->free_jobs = a->kept_jobs = NULL;
    a->qhead = a->qcur = NULL;
}

/* ------------------------------------------------------------------ building jobs */

/* Copies a record into a queue entry (a record pushed back). */
static struct qrec *qrec_new(const struct field *f, size_t n)
{
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += f[i].len + 1;
    struct qrec *q = malloc(sizeof(*q) + n * sizeof(struct field) + bytes);
    if (!q)
        return NULL;
    char *p = (char *)(q->f + n);
    q->next = NULL;
    q->n = n;
    for (size_t i = 0; i < n; i++) {
        memcpy(p, f[i].p, f[i].len);
        p[f[i].len] = '\0';
        q->f[i] = (struct field){p, f[i].len, f[i].col};
        p += f[i].len + 1;
    }
    return q;
}

/* The next record: pushed back ones first. 1, 0 at the end, or a negative code. */
static int next_record(struct app *a, const struct field **f, size_t *n)
{
    free(a->qcur);
    a->qcur = NULL;
    if (a->qhead) {
        a->qcur = a->qhead;
        a->qhead = a->qhead->next;
        *f = a->qcur->f;
        *n = a->qcur->n;
        return 1;
    }
    if (a->input_done)
        return 0;
    int rc = input_next(a->in, &a->rec);
    if (rc <= 0) {
        a->input_done = true;
        return rc;
    }
    *f = a->rec.f;
    *n = a->rec.n;
    return 1;
}

/* GNU parallel finds the longest command line it can run ("echo ccc...", run by a shell: on
 * Linux, one argument of at most 32 pages) by a search that stops within 1%, and keeps
 * (that - 3000) / 2 for its command lines ("3000 for wrapping, div 2 for hexing"). The same
 * search on the same limit gives the same number (63664 with 4 kB pages). */
size_t gnu_usable_line(void)
{
    long page = sysconf(_SC_PAGESIZE), argmax = sysconf(_SC_ARG_MAX);
    size_t limit = (size_t)(page > 0 ? page : 4096) * 32 - 1; /* MAX_ARG_STRLEN, its NUL */
    if (argmax > 0 && (size_t)argmax < limit)
        limit = (size_t)argmax;
    size_t len = 324, lower = len, upper;
    while (len <= 100000000 && len * 16 <= limit) /* GNU's upper bound: 100 MB */
        len *= 16;
    if (len > 100000000)
        return (len - 3000) / 2;
    lower = len;
    upper = len * 16;
    /* GNU's binary_find_max: until the bounds are 1 apart or within 1% */
    while (lower + 1 < upper && (double)lower / (double)upper <= 0.99) {
        size_t mid = lower + (upper - lower) / 2;
        if (mid <= limit)
            lower = mid;
        else
            upper = mid;
    }
    return (lower - 3000) / 2;
}

/* Appends a record's fields to the job's arguments. */
static void job_add_record(struct job *j, const struct field *f, size_t n)
{
    if (j->nargs + n > j->capargs) {
        size_t cap = j->capargs ? j->capargs : 4;
        while (cap < j->nargs + n)
            cap *= 2;
        struct field *p = realloc(j->args, cap * sizeof(*p));
        if (!p) {
            j->argbuf.failed = true;
            return;
        }
        j->args = p;
        j->capargs = cap;
    }
    for (size_t i = 0; i < n; i++) {
        /* The offset now; the pointer once argbuf stops moving (job_seal). */
        j->args[j->nargs++] =
            (struct field){(const char *)(uintptr_t)j->argbuf.len, f[i].len, f[i].col};
        buf_add(&j->argbuf, f[i].p, f[i].len);
        buf_addnul(&j->argbuf);
    }
}

static void job_seal(struct job *j)
{
    for (size_t i = 0; i < j->nargs; i++)
        j->args[i].p = j->argbuf.p + (uintptr_t)j->args[i].p;
}

/* --pipe: the job's stdin is the next block; its one argument is empty ({} is '' on the
 * command line, as with GNU parallel). With -r, a block of blanks only runs nothing (GNU
 * parallel's "if the stdin only contains whitespace, do not run the command"). */
static int build_pipe_job(struct app *a, struct job **out)
{
    struct pblock *b = NULL;
    if (a->input_done)
        return 0;
    int rc;
    for (;;) {
        rc = pipe_next(a->pin, &b);
        if (rc <= 0) {
            a->input_done = rc != CONCUR_EAGAIN; /* EAGAIN: no data yet (the runner waits) */
            return rc;
        }
        if (!a->o.no_run_if_empty || !only_blanks(b->data, b->len))
            break;
        pipe_put(a->pin, b);
    }
    if ((rc = pipe_header(a->pin, &b)) != 0) {
        pipe_put(a->pin, b);
        return rc;
    }
    struct job *j = job_get(a);
    if (!j) {
        pipe_put(a->pin, b);
        return CONCUR_ENOMEM;
    }
    static const struct field empty = {"", 0, 1};
    job_add_record(j, &empty, 1);
    if (!buf_ok(&j->argbuf)) {
        job_put(a, j);
        pipe_put(a->pin, b);
        return CONCUR_ENOMEM;
    }
    job_seal(j);
    j->block = b;
    j->sent = b->len;
    j->seq = ++a->next_seq;
    *out = j;
    return 1;
}

/* -s: the length of the command line of job j's first `first` fields followed by its fields
 * from `from` on (its fields not sealed yet; j->line is used as scratch). 0 or
 * CONCUR_ENOMEM. */
static int trial_len(struct app *a, struct job *j, size_t first, size_t from, size_t *len)
{
    size_t n = first + (j->nargs - from);
    buf_reset(&a->trial);
    if (!buf_reserve(&a->trial, n * sizeof(struct field)))
        return CONCUR_ENOMEM;
    struct field *f = (struct field *)a->trial.p;
    for (size_t i = 0, k = 0; i < j->nargs; i++) {
        if (i >= first && i < from)
            continue;
        f[k] = j->args[i];
        f[k++].p = j->argbuf.p + (uintptr_t)j->args[i].p;
    }
    struct jobview v = {f, n, a->next_seq + 1, 1};
    int rc = tpl_line(a->tpl, &v, &j->line);
    *len = j->line.len;
    return rc == TPL_SKIP ? 0 : rc;
}

/* -s: whether the record just added (n fields) keeps j's command line shorter than the
 * limit, as GNU parallel counts it (the line with its quoting). 1: it fits; 0: it does not
 * and was taken back out; CONCUR_ENOMEM; or -E2BIG, after a message, when one record alone
 * is too long (GNU parallel stops there too).
 *
 * Building the whole line for each record would be quadratic (-X fills lines of 60 kB with
 * 10000 records). A record adds the same length whatever the other records are (its words,
 * quoted, in each place the template repeats; GNU parallel counts lengths this way too), so
 * that length is measured on the line of the first record and this one alone. */
static int fits_max_chars(struct app *a, struct job *j, size_t n, size_t nrec)
{
    size_t len, pair;
    if (!buf_ok(&j->argbuf))
        return CONCUR_ENOMEM;
    if (nrec == 0) {
        if (trial_len(a, j, n, n, &len) != 0)
            return CONCUR_ENOMEM;
        a->first_fields = n;
        a->first_len = len;
    } else {
        if (trial_len(a, j, a->first_fields, j->nargs - n, &pair) != 0)
            return CONCUR_ENOMEM;
        len = a->line_len + (pair - a->first_len);
    }
    if (len < a->max_chars) {
        a->line_len = len;
        return 1;
    }
    if (nrec == 0) {
        /* (the fields hold offsets into argbuf until the job is sealed) */
        const char *arg = j->argbuf.p + (uintptr_t)j->args[0].p;
        size_t cut = j->args[0].len > 50 ? 50 : j->args[0].len;
        if (cli_gnu()) /* GNU parallel cuts the argument at 50 characters */
            cli_gnu_error("Command line too long (%zu >= %zu) at input 0: %.*s%s", len,
                          a->max_chars, (int)cut, arg, cut < j->args[0].len ? "..." : "");
        else
            cli_error("command line too long (%zu >= %zu): %s", len, a->max_chars, j->line.p);
        return -E2BIG;
    }
    j->nargs -= n;
    j->argbuf.len = (uintptr_t)j->args[j->nargs].p;
    return 0;
}

/* Pushes a record back: the first of the next job. 0 or CONCUR_ENOMEM. */
static int push_back(struct app *a, const struct field *f, size_t n)
{
    struct qrec *q = qrec_new(f, n);
    if (!q)
        return CONCUR_ENOMEM;
    q->next = a->qhead;
    a->qhead = q;
    return 0;
}

/* -s with -X / -m: the input ended while job j was filled with its nrec records. As GNU
 * parallel does, once: the records per job become nrec / jobs slots (rounded up), and j
 * keeps that many; the others are pushed back. 0 or CONCUR_ENOMEM. */
static int spread_last(struct app *a, struct job *j, size_t *nrec)
{
    size_t slots = a->o.jobs > 0 ? (size_t)a->o.jobs : *nrec;
    const size_t *recn = (const size_t *)a->recn.p;
    a->spread = true;
    a->per_job = (*nrec + slots - 1) / slots;
    for (; *nrec > a->per_job; (*nrec)--) {
        size_t n = recn[*nrec - 1];
        struct field *f = j->args + j->nargs - n;
        size_t start = (uintptr_t)f[0].p;
        for (size_t i = 0; i < n; i++)
            f[i].p = j->argbuf.p + (uintptr_t)f[i].p;
        if (push_back(a, f, n) != 0)
            return CONCUR_ENOMEM;
        j->nargs -= n;
        j->argbuf.len = start;
    }
    return 0;
}

/* -L / -l without --pipe (as xargs and GNU parallel): whether a record is a line that ends
 * in a blank, which continues on the next line (it does not count as a line). */
static bool continued(const struct app *a, const struct field *f, size_t n)
{
    return a->o.line_cont && n == 1 && f[0].len &&
           (f[0].p[f[0].len - 1] == ' ' || f[0].p[f[0].len - 1] == '\t');
}

/* The blanks that continued the job's last argument on the next line are taken off it (as
 * GNU parallel, they stay when the input ends there). */
static void trim_continued(struct job *j)
{
    struct field *f = &j->args[j->nargs - 1];
    char *p = j->argbuf.p + (uintptr_t)f->p; /* (an offset until job_seal) */
    while (f->len && (p[f->len - 1] == ' ' || p[f->len - 1] == '\t'))
        f->len--;
    p[f->len] = '\0';
}

/* Records are added until the job has per_job of them, or (-X / -m, -s) until the next one
 * would make the command line too long: that one is pushed back for the next job. */
int build_job(struct app *a, struct job **out)
{
    const struct field *f;
    size_t n, nrec = 0;
    struct job *j = NULL;
    int rc;
    bool eof = false, cont = false;
    if (a->pin) /* --pipe: a block of stdin, no arguments */
        return build_pipe_job(a, out);
    buf_reset(&a->recn);
    while (nrec < a->per_job) {
        if ((rc = next_record(a, &f, &n)) <= 0) {
            if (rc < 0)
                goto fail;
            eof = true;
            break;
        }
        if (!j && !(j = job_get(a))) {
            rc = CONCUR_ENOMEM;
            goto fail;
        }
        if (a->o.zero_args) { /* -n 0: the argument is read, and not passed */
            nrec++;
            continue;
        }
        if (cont && buf_ok(&j->argbuf))
            trim_continued(j);
        job_add_record(j, f, n);
        if (a->max_chars && (rc = fits_max_chars(a, j, n, nrec)) <= 0) {
            if (rc < 0 || (rc = push_back(a, f, n)) != 0)
                goto fail;
            break;
        }
        buf_add(&a->recn, &n, sizeof(n));
        if (!(cont = continued(a, f, n)))
            nrec++;
    }
    if (!j)
        return 0;
    if (!buf_ok(&j->argbuf) || !buf_ok(&a->recn)) {
        rc = CONCUR_ENOMEM;
        goto fail;
    }
    if (eof && a->budget && a->max_chars && !a->spread && nrec > 1 &&
        (rc = spread_last(a, j, &nrec)) != 0)
        goto fail;
    job_seal(j);
    j->seq = ++a->next_seq;
    *out = j;
    return 1;
fail:
    if (j)
        job_put(a, j);
    return rc;
}

/* ------------------------------------------------------------------ slots */

static unsigned slot_take(struct app *a)
{
    size_t i = 0;
    while (i < a->nslots && a->slots[i])
        i++;
    if (i == a->nslots) {
        size_t n = a->nslots ? a->nslots * 2 : 16;
        unsigned char *s = realloc(a->slots, n);
        if (!s)
            return (unsigned)i + 1; /* a duplicate slot number is harmless */
        memset(s + a->nslots, 0, n - a->nslots);
        a->slots = s;
        a->nslots = n;
    }
    a->slots[i] = 1;
    return (unsigned)i + 1;
}

void slot_give(struct app *a, unsigned slot)
{
    if (slot >= 1 && slot <= a->nslots)
        a->slots[slot - 1] = 0;
}

/* ------------------------------------------------------------------ the source */

/* The next job to run: built, then skipped while --resume / --resume-failed says the
 * joblog of an earlier run has it done. 1 with *out set, 0 at the end (or when a signal
 * stopped the wait for input), or a negative code (a->fatal set). */
static int pull_job(struct app *a, struct job **out)
{
    struct job *j;
    int rc;
    for (;;) {
        perl_set_completed(a->completed + a->resumed);
        rc = build_job(a, &j);
        if (rc == CONCUR_EINTR) { /* a signal while waiting for input */
            stop_run(a, CONCUR_STOP_TERM);
            return 0;
        }
        if (rc == CONCUR_EAGAIN) /* --pipe: the runner calls again once stdin is readable */
            return rc;
        if (rc <= 0) {
            if (rc < 0)
                a->fatal = rc;
            return rc;
        }
        if (!a->jl || !(a->o.resume || a->o.resume_failed))
            break;
        const struct buf *line = NULL;
        if (joblog_needs_line(a->jl) && !(line = job_line(a, j))) {
            job_put(a, j);
            a->fatal = CONCUR_ENOMEM;
            return CONCUR_ENOMEM;
        }
        if (!joblog_done(a->jl, j->seq, line ? line->p : NULL, line ? line->len : 0))
            break;
        if (a->prog) /* done in an earlier run: skip it */
            progress_skipped(a->prog);
        a->resumed++;
        job_put(a, j);
    }
    *out = j;
    return 1;
}

/* Hands the runner its next command. Ownership of the job record passes with cmd->user:
 * job_done() gets it back when the command ends. */
int next_job(void *arg, size_t index, concur_cmd *cmd)
{
    struct app *a = arg;
    struct job *j;
    int rc;
    if (a->no_more)
        return 0;
    char **argv;
    for (;;) {
        if ((rc = pull_job(a, &j)) <= 0)
            return rc;
        j->index = index;
        j->slot = slot_take(a);
        struct jobview v = view_of(j);
        /* Build the line with the argv when it will be needed anyway, or it is the argv. */
        rc = tpl_build(a->tpl, &v, &j->strs, &j->vec, &argv, &j->line,
                       a->need_line && !j->have_line);
        if (rc != TPL_SKIP && !j->skip)
            break;
        slot_give(a, j->slot); /* {uniq}, {choose_k}, skip(): not run */
        if (a->prog)
            progress_skipped(a->prog);
        job_put(a, j);
    }
    if (rc)
        goto fail;
    j->have_line = j->have_line || a->need_line || !tpl_is_direct(a->tpl);
    /* -t as the job starts; -v too when its output is not printed in one piece at its end. */
    if (a->o.trace && (rc = job_show_line(a, j, CONCUR_STDERR)) != 0)
        goto fail;
    if (a->o.verbose && a->o.out != OUT_GROUP && (rc = job_show_line(a, j, CONCUR_STDOUT)) != 0)
        goto fail;
    if (a->o.trace || (a->o.verbose && a->o.out != OUT_GROUP))
        output_flush(&a->out);
    cmd->argv = (const char *const *)argv;
    cmd->user = j;
    if (j->block) {
        cmd->input = j->block->data;
        cmd->input_len = j->block->len;
    }
    if (a->o.timeout_pct > 0 && a->hist_count)
        cmd->timeout = hist_median(a) * a->o.timeout_pct / 100.0;
    if (a->mpi_pool && (rc = mpi_cmd(a, j, cmd)) != 0)
        goto fail;
    if (a->o.report) {
        snprintf(j->key, sizeof(j->key), "%zu", j->seq);
        buf_reset(&j->report_arg);
        for (size_t i = 0; i < j->nargs; i++) {
            if (i)
                buf_addc(&j->report_arg, ' ');
            buf_add(&j->report_arg, j->args[i].p, j->args[i].len);
        }
        buf_addc(&j->report_arg, '\0');
        if (!buf_ok(&j->report_arg)) {
            rc = CONCUR_ENOMEM;
            goto fail;
        }
        cmd->key = j->key;
        cmd->arg = j->report_arg.p;
    }
    if (a->use_ring && (rc = ring_put(a, index, j)) != 0)
        goto fail;
    a->next_index = index + 1;
    a->running++;
    if (a->fd_limit && a->running == a->fd_limit && !a->fd_warned && !a->input_done) {
        a->fd_warned = true; /* -j0 is held at the limit from now on */
        fd_limit_warning((int)a->fd_limit);
    }
    if (a->prog)
        progress_started(a->prog);
    return 1;
fail:
    slot_give(a, j->slot);
    mpi_job_over(a, j);
    job_put(a, j);
    if (rc == CONCUR_ENOMEM) /* (perl's failures have their message) */
        cli_error("out of memory");
    a->fatal = rc;
    return rc;
}

/* ------------------------------------------------------------------ shared with complete.c */

int ring_put(struct app *a, size_t index, struct job *j)
{
    if (index - a->ring_lo >= a->ring_cap) {
        size_t cap = a->ring_cap ? a->ring_cap * 2 : 64;
        while (index - a->ring_lo >= cap)
            cap *= 2;
        struct job **r = calloc(cap, sizeof(*r));
        if (!r)
            return CONCUR_ENOMEM;
        for (size_t i = a->ring_lo; i < a->ring_lo + a->ring_cap; i++)
            r[i % cap] = a->ring[i % a->ring_cap];
        free(a->ring);
        a->ring = r;
        a->ring_cap = cap;
    }
    a->ring[index % a->ring_cap] = j;
    return 0;
}

double hist_median(const struct app *a)
{
    size_t half = (a->hist_count + 1) / 2, seen = 0;
    for (size_t i = 0; i < HIST_N; i++) {
        seen += a->hist[i];
        if (seen >= half)
            return HIST_MIN * pow(HIST_STEP, (double)i + 0.5);
    }
    return 0;
}

void stop_run(struct app *a, int how)
{
    /* The runner applies a stop before its next start; the source also hands out nothing
     * more, which covers a stop asked for before the runner exists (a fatal setup error). */
    a->no_more = true;
    if (how == CONCUR_STOP_TERM)
        a->stop_term = true;
    if (a->runner)
        concur_runner_stop(a->runner, how);
}
