/*
 * main.c - concur: run commands concurrently from the shell (GNU parallel's common syntax).
 *
 * The run is one concur_runner_run() call. The runner's loop, in this thread, pulls jobs
 * from next_job() (the source callback) whenever a slot is free, and reports each finished
 * command to job_done(). So:
 *   - inputs are read lazily, one job ahead of the free slots: memory does not grow with
 *     the number of input lines. Job records are recycled through a free list, so a
 *     steady run allocates nothing per job;
 *   - a job's sequence number ({#}, the joblog's Seq) counts every job built, including
 *     those --resume skips; the runner's index counts the jobs actually run, and -k
 *     prints in that order;
 *   - -k keeps finished jobs whose turn has not come (and only those) in a ring indexed by
 *     the runner's index, with their output copied out of the runner's buffers.
 *
 * Signals: SIGINT, SIGTERM and SIGHUP are blocked and read from a signalfd, which the
 * runner watches as its stop_fd. When one arrives, the runner starts nothing more, sends
 * the term sequence to every running job's process group and returns CONCUR_ECANCELED
 * once all are reaped; concur then writes what is pending and exits 128 + the signal.
 * Jobs killed that way are neither printed nor logged (they are not done, and --resume
 * runs them again). SIGPIPE is blocked too, so that a closed stdout is a failed write
 * (EPIPE) that concur reports, stopping the run, instead of a silent death. The runner
 * gives every child a clean signal mask and default dispositions.
 *
 * Exit status (GNU parallel's): 0 when every job succeeded, else the number of failed jobs
 * up to 101; with --halt, the status --halt defines; 2 for a usage error; 128 + signal
 * after a signal; 255 for an error of concur itself (I/O, memory, unreadable input).
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* GNU parallel's default limit on the length of a command line (-X, -m). */
enum { MAX_LINE = 130000 };

/* One job: its arguments, what it runs and, once over, what it did. */
struct job {
    struct job *next;  /* free list, or the list of kept jobs (--report) */
    size_t seq;        /* {#}, 1-based */
    size_t index;      /* the runner's index */
    unsigned slot;     /* {%}, 1-based */
    struct buf argbuf; /* the arguments' bytes, each NUL-terminated */
    struct field *args;
    size_t nargs, capargs;
    struct buf strs, vec; /* argv strings and pointers */
    struct buf line;      /* the command line as shown (joblog, --dry-run, messages) */
    bool have_line;
    struct buf out, err; /* -k: output waiting for its turn; --line-buffer: partial lines */
    struct buf tag;
    bool have_tag;
    struct buf report_arg; /* --report: the arguments, joined */
    char key[24];          /* --report: the sequence number */
    bool finished;         /* over; with -k, waiting to be printed */
    bool print;            /* its output is to be printed (not an interrupted job) */
};

/* A record waiting to become part of a job (-X reads ahead). */
struct qrec {
    struct qrec *next;
    size_t n;
    struct field f[]; /* followed by the bytes */
};

/* Log-spaced histogram of successful run times, for --timeout N% (flat memory). */
enum { HIST_N = 3200 };
#define HIST_MIN 1e-6
#define HIST_STEP 1.01

struct app {
    struct cli_opts o;
    struct tpl *tpl, *tagtpl;
    struct input *in;
    struct record rec;
    struct joblog *jl;
    struct results *res;
    struct progress *prog;
    struct output out;
    concur_runner *runner;
    int sigfd;

    /* building jobs */
    size_t next_seq;
    bool input_done;
    struct job *free_jobs, *kept_jobs;
    struct qrec *qhead, *qcur; /* -X: records read ahead; the one being copied */
    size_t per_job;            /* records per job */
    bool budget;               /* -X / -m: also limited by MAX_LINE */
    bool need_line;            /* build the command line with every job */
    size_t total_jobs;         /* for --bar/--eta/--halt N%: 0 when unknown */

    /* running */
    unsigned char *slots;
    size_t nslots;
    size_t running;
    struct job **ring; /* by runner index: jobs that may still get output or print */
    size_t ring_cap, ring_lo, next_index;
    size_t next_print; /* -k: the runner index whose output comes next */
    bool use_ring;

    /* outcome */
    size_t completed, failed, succeeded;
    bool halted, stop_term, no_more, interrupted;
    int halt_status;
    int fatal; /* an error of concur itself: exit 255 */
    int signo;
    uint32_t *hist;
    size_t hist_count;
    struct buf scratch; /* messages */
    struct buf errmsg;  /* why a job could not start */
    struct buf json;    /* --json: the finished job's object */
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
    j->have_line = j->have_tag = j->finished = false;
    j->print = true;
    return j;
}

static void job_free(struct job *j)
{
    buf_free(&j->argbuf);
    buf_free(&j->strs);
    buf_free(&j->vec);
    buf_free(&j->line);
    buf_free(&j->out);
    buf_free(&j->err);
    buf_free(&j->tag);
    buf_free(&j->report_arg);
    free(j->args);
    free(j);
}

/* Back to the free list; kept instead with --report (the runner's results point into it).
 * Big buffers are released so that one huge job does not pin its memory. */
static void job_put(struct app *a, struct job *j)
{
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

static struct jobview view_of(const struct job *j)
{
    return (struct jobview){j->args, j->nargs, j->seq, j->slot};
}

/* The job's command line as shown (built on demand). NULL when out of memory. */
static const struct buf *job_line(struct app *a, struct job *j)
{
    if (!j->have_line) {
        struct jobview v = view_of(j);
        if (tpl_line(a->tpl, &v, &j->line) != 0)
            return NULL;
        j->have_line = true;
    }
    return &j->line;
}

/* The tag of --tag (the arguments, space-separated) or --tagstring. NULL: no tag. */
static const struct buf *job_tag(struct app *a, struct job *j)
{
    if (!a->o.tag && !a->o.tagstring)
        return NULL;
    if (!j->have_tag) {
        buf_reset(&j->tag);
        if (a->tagtpl) {
            struct jobview v = view_of(j);
            tpl_plain(a->tagtpl, &v, &j->tag);
        } else {
            for (size_t i = 0; i < j->nargs; i++) {
                if (i)
                    buf_addc(&j->tag, ' ');
                buf_add(&j->tag, j->args[i].p, j->args[i].len);
            }
        }
        buf_addc(&j->tag, '\0');
        j->tag.len--; /* a valid empty string even when there are no arguments */
        j->have_tag = true;
    }
    return &j->tag;
}

/* ------------------------------------------------------------------ building jobs */

/* Copies a record into a queue entry (-X read-ahead, or a record pushed back). */
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

/* The next record: read ahead ones first. 1, 0 at the end, or a negative code. */
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

static size_t records_cost(struct app *a, const struct field *f, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += tpl_arg_cost(a->tpl, f[i].len);
    return c;
}

/* -X / -m without -n: read ahead up to one command line's worth. If the input ends
 * within it, spread the records evenly over the job slots (GNU parallel's behaviour);
 * otherwise fill each command line. */
static int plan_multi(struct app *a)
{
    struct qrec **tail = &a->qhead;
    size_t count = 0, bytes = 0;
    int rc = 1;
    while (bytes <= MAX_LINE) {
        const struct field *f;
        size_t n;
        if ((rc = input_next(a->in, &a->rec)) <= 0)
            break;
        f = a->rec.f;
        n = a->rec.n;
        struct qrec *q = qrec_new(f, n);
        if (!q)
            return CONCUR_ENOMEM;
        *tail = q;
        tail = &q->next;
        count++;
        bytes += records_cost(a, f, n);
    }
    if (rc < 0)
        return rc;
    if (rc == 0) {
        a->input_done = true;
        size_t slots = a->o.jobs > 0 ? (size_t)a->o.jobs : (count ? count : 1);
        a->per_job = count ? (count + slots - 1) / slots : 1;
    } else {
        a->per_job = SIZE_MAX;
    }
    return 0;
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

/* Builds the next job from the input. 1 with *out set, 0 at the end, or a negative code. */
static int build_job(struct app *a, struct job **out)
{
    const struct field *f;
    size_t n, nrec = 0, bytes = 0;
    struct job *j = NULL;
    int rc;
    while (nrec < a->per_job) {
        if ((rc = next_record(a, &f, &n)) <= 0) {
            if (rc < 0)
                goto fail;
            break;
        }
        if (a->budget && nrec > 0) {
            size_t c = records_cost(a, f, n);
            if (bytes + c > MAX_LINE) { /* does not fit: first of the next job */
                struct qrec *q = qrec_new(f, n);
                if (!q) {
                    rc = CONCUR_ENOMEM;
                    goto fail;
                }
                q->next = a->qhead;
                a->qhead = q;
                break;
            }
            bytes += c;
        } else if (a->budget) {
            bytes += records_cost(a, f, n);
        }
        if (!j && !(j = job_get(a))) {
            rc = CONCUR_ENOMEM;
            goto fail;
        }
        job_add_record(j, f, n);
        nrec++;
    }
    if (!j)
        return 0;
    if (!buf_ok(&j->argbuf)) {
        rc = CONCUR_ENOMEM;
        goto fail;
    }
    job_seal(j);
    j->seq = ++a->next_seq;
    *out = j;
    return 1;
fail:
    if (j)
        job_put(a, j);
    return rc;
}

/* ------------------------------------------------------------------ slots, ring */

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

static void slot_give(struct app *a, unsigned slot)
{
    if (slot >= 1 && slot <= a->nslots)
        a->slots[slot - 1] = 0;
}

static struct job **ring_at(struct app *a, size_t index)
{
    if (index < a->ring_lo || index - a->ring_lo >= a->ring_cap)
        return NULL;
    return &a->ring[index % a->ring_cap];
}

static int ring_put(struct app *a, size_t index, struct job *j)
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

/* Without -k, the ring only maps indexes to running jobs: forget finished ones. */
static void ring_drop(struct app *a, size_t index)
{
    struct job **p = ring_at(a, index);
    if (p)
        *p = NULL;
    while (a->ring_lo < a->next_index && !a->ring[a->ring_lo % a->ring_cap])
        a->ring_lo++;
}

/* ------------------------------------------------------------------ timeouts: N% */

static void hist_add(struct app *a, double secs)
{
    if (!a->hist)
        return;
    size_t i = secs <= HIST_MIN ? 0 : (size_t)(log(secs / HIST_MIN) / log(HIST_STEP));
    a->hist[i < HIST_N ? i : HIST_N - 1]++;
    a->hist_count++;
}

static double hist_median(const struct app *a)
{
    size_t half = (a->hist_count + 1) / 2, seen = 0;
    for (size_t i = 0; i < HIST_N; i++) {
        seen += a->hist[i];
        if (seen >= half)
            return HIST_MIN * pow(HIST_STEP, (double)i + 0.5);
    }
    return 0;
}

/* ------------------------------------------------------------------ errors and stops */

static void stop_run(struct app *a, int how)
{
    /* The runner applies a stop before its next start; the source also hands out nothing
     * more, which covers a stop asked for before the runner exists (a fatal setup error). */
    a->no_more = true;
    if (how == CONCUR_STOP_TERM)
        a->stop_term = true;
    if (a->runner)
        concur_runner_stop(a->runner, how);
}

static void fail_fatal(struct app *a, int rc)
{
    if (!a->fatal)
        a->fatal = rc ? rc : CONCUR_EIO;
    stop_run(a, CONCUR_STOP_TERM);
}

/* After writing output: a failed write to stdout/stderr stops everything. */
static void check_output(struct app *a)
{
    const char *name;
    int rc = output_error(&a->out, &name);
    if (rc && !a->fatal) {
        cli_error("cannot write to %s: %s", name, strerror(-rc));
        fail_fatal(a, rc);
    }
}

static bool signal_pending(struct app *a)
{
    if (a->interrupted)
        return true;
    struct pollfd pf = {.fd = a->sigfd, .events = POLLIN};
    if (a->sigfd >= 0 && poll(&pf, 1, 0) > 0)
        a->interrupted = true;
    return a->interrupted;
}

/* A message on stderr, in the flow of the output (the progress line is taken away). */
static void note(struct app *a, const char *what, struct job *j)
{
    const struct buf *line = job_line(a, j);
    buf_reset(&a->scratch);
    buf_printf(&a->scratch, "concur: %s: ", what);
    if (line)
        buf_add(&a->scratch, line->p, line->len);
    buf_addc(&a->scratch, '\n');
    if (buf_ok(&a->scratch))
        output_raw(&a->out, CONCUR_STDERR, a->scratch.p, a->scratch.len);
}

/* ------------------------------------------------------------------ the source */

static int next_job(void *arg, size_t index, concur_cmd *cmd)
{
    struct app *a = arg;
    struct job *j;
    int rc;
    if (a->no_more)
        return 0;
    for (;;) {
        rc = build_job(a, &j);
        if (rc == CONCUR_EINTR) { /* a signal while waiting for input */
            stop_run(a, CONCUR_STOP_TERM);
            return 0;
        }
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
        job_put(a, j);
    }
    j->index = index;
    j->slot = slot_take(a);
    struct jobview v = view_of(j);
    char **argv;
    /* Build the line with the argv when it will be needed anyway, or it is the argv. */
    if ((rc = tpl_build(a->tpl, &v, &j->strs, &j->vec, &argv, &j->line,
                        a->need_line && !j->have_line)) != 0)
        goto fail;
    j->have_line = j->have_line || a->need_line || !tpl_is_direct(a->tpl);
    cmd->argv = (const char *const *)argv;
    cmd->user = j;
    if (a->o.timeout_pct > 0 && a->hist_count)
        cmd->timeout = hist_median(a) * a->o.timeout_pct / 100.0;
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
    if (a->prog)
        progress_started(a->prog);
    return 1;
fail:
    slot_give(a, j->slot);
    job_put(a, j);
    cli_error("out of memory");
    a->fatal = rc;
    return rc;
}

/* ------------------------------------------------------------------ output */

/* --line-buffer: output as it arrives (the runner then captures nothing). */
static void on_output(concur_runner *r, size_t index, int stream, const void *data, size_t len,
                      void *arg)
{
    struct app *a = arg;
    (void)r;
    struct job **p = ring_at(a, index), *j = p ? *p : NULL;
    if (!j)
        return;
    struct buf *pending = stream == CONCUR_STDERR ? &j->err : &j->out;
    buf_add(pending, data, len);
    if (!buf_ok(pending)) {
        cli_error("out of memory");
        fail_fatal(a, CONCUR_ENOMEM);
        return;
    }
    if (a->o.keep_order && index != a->next_print)
        return; /* not its turn: keep it */
    const struct buf *tag = job_tag(a, j);
    output_lines(&a->out, stream, pending, tag ? tag->p : NULL, tag ? tag->len : 0, false);
    output_flush(&a->out);
    check_output(a);
}

/* Prints what a finished job has to say, from the given buffers. */
static void print_job(struct app *a, struct job *j, const void *out, size_t out_len,
                      const void *err, size_t err_len)
{
    if (!j->print || a->o.report || a->o.results) /* GNU parallel prints nothing with --results */
        return;
    const struct buf *tag = a->o.json ? NULL : job_tag(a, j);
    if (a->o.out == OUT_LINE && !a->o.json) {
        /* the partial lines left: complete lines went out as they came */
        output_lines(&a->out, CONCUR_STDOUT, &j->out, tag ? tag->p : NULL, tag ? tag->len : 0,
                     true);
        output_lines(&a->out, CONCUR_STDERR, &j->err, tag ? tag->p : NULL, tag ? tag->len : 0,
                     true);
    } else {
        output_group(&a->out, out, out_len, err, err_len, tag ? tag->p : NULL, tag ? tag->len : 0);
    }
}

/* -k: prints the jobs whose turn has come, in order. */
static void print_ready(struct app *a)
{
    struct job **p;
    while ((p = ring_at(a, a->next_print)) && *p && (*p)->finished) {
        struct job *j = *p;
        print_job(a, j, j->out.p, j->out.len, j->err.p, j->err.len);
        *p = NULL;
        a->ring_lo = ++a->next_print;
        job_put(a, j);
    }
    /* --line-buffer: the next job, still running, now writes its lines as they come. */
    if (a->o.out == OUT_LINE && (p = ring_at(a, a->next_print)) && *p) {
        const struct buf *tag = job_tag(a, *p);
        output_lines(&a->out, CONCUR_STDOUT, &(*p)->out, tag ? tag->p : NULL, tag ? tag->len : 0,
                     false);
        output_lines(&a->out, CONCUR_STDERR, &(*p)->err, tag ? tag->p : NULL, tag ? tag->len : 0,
                     false);
    }
}

/* ------------------------------------------------------------------ a finished job */

static void check_halt(struct app *a, struct job *j, bool failed, int exitval, int sig)
{
    const struct cli_opts *o = &a->o;
    if (o->halt_when == HALT_NEVER || a->halted)
        return;
    size_t count;
    if (o->halt_on == HALT_FAIL && failed) {
        note(a, "this job failed", j);
        count = a->failed;
    } else if (o->halt_on == HALT_SUCCESS && !failed) {
        note(a, "this job succeeded", j);
        count = a->succeeded;
    } else if (o->halt_on == HALT_DONE) {
        note(a, "this job finished", j);
        count = a->completed;
    } else {
        return;
    }
    double need = o->halt_value;
    if (o->halt_pct) {
        if (!a->total_jobs)
            return;
        need = (double)a->total_jobs * o->halt_value / 100.0;
    }
    if ((double)count < need)
        return;
    a->halted = true;
    if (o->halt_on == HALT_SUCCESS) {
        a->halt_status = 0;
    } else if (o->halt_pct) {
        a->halt_status = (int)ceil((double)a->failed / (double)a->total_jobs * 100.0);
    } else if (o->halt_value == 1) {
        /* the job's own status, as bash reports it */
        a->halt_status = exitval > 0 ? exitval : sig ? 128 + sig : exitval < 0 ? 255 : 0;
    } else {
        a->halt_status = a->failed < EXIT_FAILMAX ? (int)a->failed : EXIT_FAILMAX;
    }
    if (o->halt_when == HALT_NOW) {
        stop_run(a, CONCUR_STOP_TERM);
    } else {
        stop_run(a, CONCUR_STOP_START);
        if (a->running > 1) {
            buf_reset(&a->scratch);
            buf_printf(&a->scratch, "concur: starting no more jobs; waiting for %zu to finish\n",
                       a->running - 1);
            if (buf_ok(&a->scratch))
                output_raw(&a->out, CONCUR_STDERR, a->scratch.p, a->scratch.len);
        }
    }
}

static int job_done(concur_runner *r, const concur_result *res, void *arg)
{
    struct app *a = arg;
    struct job *j = res->user;
    const struct cli_opts *o = &a->o;
    (void)r;
    bool failed = !res->success;
    /* Another try? (The runner allows it while attempts <= retries.) */
    if (failed && res->attempts < o->tries && !a->stop_term && !signal_pending(a)) {
        buf_reset(&j->out);
        buf_reset(&j->err);
        return 1;
    }
    a->running--;
    /* Killed because concur is stopping (a signal, --halt now, a write error): not done. */
    bool interrupted = res->signal && !res->timeout && (a->stop_term || signal_pending(a));
    const void *out = res->out, *err = res->err;
    size_t out_len = res->out_len, err_len = res->err_len;
    int exitval, exitcode, sig = res->signal;
    if (!res->spawned)
        exitcode = res->error == CONCUR_ENOENT ? 127 : 126; /* as a shell says it */
    else
        exitcode = res->signal ? -1 : res->exit_code;
    /* The joblog's Exitval, as GNU parallel writes it: 0 when killed, -1 on a timeout. */
    exitval = res->timeout ? -1 : res->signal ? 0 : exitcode;
    if (!res->spawned) {
        /* The reason, as the job's stderr (where the shell would have put it). */
        buf_reset(&a->errmsg);
        buf_printf(&a->errmsg, "concur: %s\n",
                   res->error_message ? res->error_message : concur_strerror(res->error));
        err = a->errmsg.p;
        err_len = buf_ok(&a->errmsg) ? a->errmsg.len : 0;
    }
    j->print = !interrupted;
    if (!interrupted) {
        a->completed++;
        if (failed)
            a->failed++;
        else
            a->succeeded++;
        if (!failed)
            hist_add(a, res->time_run);
        if (res->timeout)
            note(a, "warning: this job timed out and was killed", j);
        if (a->jl || a->res || o->json) {
            const struct buf *line = job_line(a, j);
            if (!line) {
                fail_fatal(a, CONCUR_ENOMEM);
                return 0;
            }
            struct jobdone d = {.seq = j->seq,
                                .args = j->args,
                                .nargs = j->nargs,
                                .cmd = line->p,
                                .cmd_len = line->len,
                                .exitval = exitval,
                                .exitcode = exitcode,
                                .sig = sig,
                                .timeout = res->timeout,
                                .start = res->time_start,
                                .runtime = res->time_run,
                                .out = out,
                                .err = err,
                                .out_len = out_len,
                                .err_len = err_len};
            if (a->jl) {
                size_t received = o->out == OUT_LINE ? 0 : out_len + err_len;
                int rc = joblog_write(a->jl, j->seq, res->time_start, res->time_run, received,
                                      exitval, sig, line->p, line->len);
                if (rc) {
                    cli_error("cannot write the joblog '%s': %s", o->joblog, concur_strerror(rc));
                    fail_fatal(a, rc);
                }
            }
            if (a->res && results_write(a->res, &d) != 0)
                fail_fatal(a, CONCUR_EIO);
            if (o->json) { /* the JSON object is the job's output */
                buf_reset(&a->json);
                json_job(&a->json, &d);
                if (!buf_ok(&a->json)) {
                    fail_fatal(a, CONCUR_ENOMEM);
                    return 0;
                }
                out = a->json.p;
                out_len = a->json.len;
                err = NULL;
                err_len = 0;
            }
        }
        if (a->prog)
            progress_done(a->prog, failed);
        check_halt(a, j, failed, exitval, sig);
    }
    slot_give(a, j->slot);
    if (o->keep_order && j->index != a->next_print) {
        /* Not its turn: keep a copy of what it has to print. */
        j->finished = true;
        if (j->print && o->out != OUT_LINE) {
            buf_reset(&j->out);
            buf_reset(&j->err);
            buf_add(&j->out, out, out_len);
            buf_add(&j->err, err, err_len);
            if (!buf_ok(&j->out) || !buf_ok(&j->err)) {
                cli_error("out of memory");
                fail_fatal(a, CONCUR_ENOMEM);
            }
        }
    } else {
        print_job(a, j, out, out_len, err, err_len);
        if (a->use_ring) {
            if (o->keep_order) {
                struct job **p = ring_at(a, j->index);
                if (p)
                    *p = NULL;
                a->ring_lo = ++a->next_print;
            } else {
                ring_drop(a, j->index);
            }
        }
        job_put(a, j);
        if (o->keep_order)
            print_ready(a);
    }
    output_flush(&a->out);
    check_output(a);
    return 0;
}

/* At the end of an interrupted run: what finished still gets printed, in order. */
static void print_leftovers(struct app *a)
{
    if (!a->o.keep_order || !a->ring)
        return;
    for (size_t i = a->ring_lo; i < a->next_index; i++) {
        struct job **p = ring_at(a, i);
        if (p && *p) {
            if ((*p)->finished)
                print_job(a, *p, (*p)->out.p, (*p)->out.len, (*p)->err.p, (*p)->err.len);
            job_put(a, *p);
            *p = NULL;
        }
    }
    output_flush(&a->out);
    check_output(a);
}

/* ------------------------------------------------------------------ setup */

static int setup_signals(struct app *a)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -errno;
    a->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (a->sigfd < 0)
        return -errno;
    /* A closed stdout must be a write error (EPIPE) we can report, not a silent death. */
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    if (sigprocmask(SIG_BLOCK, &pipe, NULL) < 0)
        return -errno;
    return 0;
}

/* The signal that stopped us (0 if none). */
static int received_signal(struct app *a)
{
    struct signalfd_siginfo si;
    if (a->sigfd >= 0) {
        ssize_t n = read(a->sigfd, &si, sizeof(si));
        if (n == (ssize_t)sizeof(si))
            return (int)si.ssi_signo;
    }
    return 0;
}

static int dry_run(struct app *a)
{
    struct job *j;
    int rc;
    while ((rc = build_job(a, &j)) > 0) {
        bool skip = false;
        j->slot = (unsigned)(a->o.jobs > 0 ? (j->seq - 1) % (size_t)a->o.jobs + 1 : j->seq);
        const struct buf *line = job_line(a, j);
        if (!line) {
            job_put(a, j);
            return CONCUR_ENOMEM;
        }
        if (a->jl && (a->o.resume || a->o.resume_failed))
            skip = joblog_done(a->jl, j->seq, line->p, line->len);
        if (!skip) {
            wr_add(&a->out.out, line->p, line->len);
            wr_add(&a->out.out, "\n", 1);
        }
        job_put(a, j);
        if (a->out.out.err)
            break;
    }
    output_flush(&a->out);
    check_output(a);
    return rc == CONCUR_EINTR ? 0 : rc;
}

static int run(struct app *a)
{
    const struct cli_opts *o = &a->o;
    concur_runner_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.max_workers = o->jobs;
    ro.timeout = o->timeout;
    ro.term_seq = o->ntermseq ? o->termseq : NULL;
    ro.term_seq_len = o->ntermseq;
    ro.retries = o->tries > 1 ? o->tries - 1 : 0;
    ro.start_delay = o->delay;
    ro.on_done = job_done;
    ro.cb_arg = a;
    ro.stop_fd = a->sigfd;
    if (o->out == OUT_UNGROUP)
        ro.flags |= CONCUR_RUN_NO_CAPTURE;
    if (o->out == OUT_LINE)
        ro.on_output = on_output;
    if (o->report)
        ro.flags |= CONCUR_RUN_KEEP_RESULTS;
    int rc = concur_runner_create(&a->runner, &ro);
    if (rc) {
        cli_error("cannot start: %s", concur_strerror(rc));
        return rc;
    }
    rc = concur_runner_run(a->runner, next_job, a);
    if (rc == CONCUR_ECANCELED || rc == CONCUR_EINTR)
        rc = 0; /* a stop we asked for, or a signal: told apart by the caller */
    else if (rc && !a->fatal)
        cli_error("the run failed: %s", concur_strerror(rc));
    print_leftovers(a);
    if (a->prog)
        progress_finish(a->prog);
    if (o->report && !a->fatal) {
        if (output_flush(&a->out) == 0 && concur_print_results(stdout, a->runner) != 0) {
            cli_error("cannot write to standard output: %s", strerror(errno));
            a->fatal = CONCUR_EIO;
        }
    }
    return rc;
}

/* Decides how output is handled once the options are known. */
static void settle_modes(struct app *a)
{
    struct cli_opts *o = &a->o;
    /* These need each job's whole output at its end: grouped capture. */
    if (o->json || o->results || o->report)
        o->out = OUT_GROUP;
    if (o->out == OUT_UNGROUP)
        o->keep_order = false; /* children write straight to our stdout */
    a->use_ring = o->keep_order || o->out == OUT_LINE;
    a->need_line = o->joblog || o->json || o->results;
    a->per_job = o->max_args ? o->max_args : 1;
    a->budget = (o->ctx_replace || o->multi) && !o->max_args;
}

/* Standard descriptors that are closed at start would otherwise be reused by the first
 * files concur opens (a signalfd as "stdout"...). They are pointed at /dev/null, and a
 * closed stdout or stderr is remembered as a failed write, reported if output comes. */
static void guard_std_fds(struct output *out)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        int nfd = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        if (nfd >= 0 && nfd != fd)
            close(nfd); /* not the lowest free descriptor: leave it */
        if (fd == 1)
            out->out.closed = true;
        else if (fd == 2)
            out->err.closed = true;
    }
}

/* Captured output buffers grow to megabytes and are freed at the end of every job. With
 * glibc's defaults, each one above 128 KiB is a fresh mmap that page-faults in and is
 * unmapped again: for jobs with a lot of output that doubled concur's own CPU time. Keeping
 * such buffers in the heap lets the next job reuse the same pages; memory stays bounded by
 * what the running jobs hold at once. */
static void tune_malloc(void)
{
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

int main(int argc, char **argv)
{
    struct app app, *a = &app;
    tune_malloc();
    memset(a, 0, sizeof(*a));
    a->sigfd = -1;
    int rc = opts_parse(argc, argv, &a->o);
    if (rc)
        return rc == 1 ? 0 : rc;
    struct cli_opts *o = &a->o;
    settle_modes(a);
    output_init(&a->out, NULL);
    guard_std_fds(&a->out);

    if ((rc = setup_signals(a)) != 0) {
        cli_error("cannot set up signals: %s", strerror(-rc));
        goto done;
    }
    if ((rc = tpl_compile(&a->tpl, o)) != 0 ||
        (o->tagstring && (rc = tpl_compile_plain(&a->tagtpl, o->tagstring)) != 0)) {
        cli_error("out of memory");
        goto done;
    }
    if ((rc = input_open(&a->in, o, a->sigfd)) != 0)
        goto done;
    if (o->bar || o->eta || o->progress || (o->halt_pct && o->halt_when != HALT_NEVER)) {
        size_t records = 0;
        if ((rc = input_count(a->in, &records)) != 0)
            goto done;
        a->total_jobs = (records + a->per_job - 1) / a->per_job;
    }
    if (a->budget && (rc = plan_multi(a)) != 0)
        goto done;
    if (o->timeout_pct > 0 && !(a->hist = calloc(HIST_N, sizeof(*a->hist)))) {
        rc = CONCUR_ENOMEM;
        cli_error("out of memory");
        goto done;
    }
    if (o->joblog &&
        (rc = joblog_open(&a->jl, o->joblog, o->resume, o->resume_failed, o->dry_run)) != 0)
        goto done;
    if (o->dry_run) {
        rc = dry_run(a);
        goto done;
    }
    if (o->results && (rc = results_open(&a->res, o->results)) != 0)
        goto done;
    if ((o->bar || o->eta || o->progress) &&
        (rc = progress_create(&a->prog, o->bar, o->eta, o->progress, a->total_jobs)) != 0)
        goto done;
    a->out.prog = a->prog;
    rc = run(a);

done:
    if (rc == CONCUR_EINTR)
        rc = 0;
    a->signo = received_signal(a);
    if (results_close(a->res) != 0 && !a->fatal)
        a->fatal = CONCUR_EIO;
    a->res = NULL;
    if (output_flush(&a->out) != 0)
        check_output(a);

    int status;
    if (a->signo)
        status = 128 + a->signo;
    else if (rc == CONCUR_EINVAL) /* a bad --colsep */
        status = EXIT_USAGE;
    else if (rc || a->fatal)
        status = EXIT_OTHER;
    else if (a->halted)
        status = a->halt_status;
    else
        status = a->failed < EXIT_FAILMAX ? (int)a->failed : EXIT_FAILMAX;

    /* Release everything (keeps leak checkers quiet; the kernel would do it anyway). */
    concur_runner_destroy(a->runner);
    for (struct job *j = a->free_jobs, *n; j; j = n) {
        n = j->next;
        job_free(j);
    }
    for (struct job *j = a->kept_jobs, *n; j; j = n) {
        n = j->next;
        job_free(j);
    }
    for (size_t i = 0; a->ring && i < a->ring_cap; i++)
        if (a->ring[i])
            job_free(a->ring[i]);
    for (struct qrec *q = a->qhead, *n; q; q = n) {
        n = q->next;
        free(q);
    }
    free(a->qcur);
    free(a->ring);
    free(a->slots);
    free(a->hist);
    free(a->rec.f);
    buf_free(&a->scratch);
    buf_free(&a->errmsg);
    buf_free(&a->json);
    progress_free(a->prog);
    joblog_close(a->jl);
    input_close(a->in);
    tpl_free(a->tpl);
    tpl_free(a->tagtpl);
    output_free(&a->out);
    opts_free(o);
    if (a->sigfd >= 0)
        close(a->sigfd);
    return status;
}
