/*
 * complete.c - what happens when a job ends: output delivery, the joblog, --results and
 * --json, and the decisions to retry, to halt or to stop.
 *
 * The runner calls job_done() (its on_done callback) once per attempt of a command, and
 * job_output() (on_output, --line-buffer only) as output arrives. What flows through, for
 * one ended job:
 *
 *   concur_runner result -> retry? (another attempt, while --retries allows and concur is
 *   not stopping) -> how it ended (exit value, signal, or why it could not start, which
 *   becomes its stderr) -> counted, timed (--timeout N%), its command line and --json
 *   object made -> --halt -> delivered now, or with -k kept until its turn: its --results
 *   entry or its output written and flushed, and only then its joblog line -> its record
 *   back to the free list
 *
 * The ring maps the runner's index to jobs that may still get output or print: the jobs
 * running when --line-buffer is on, and with -k also the finished jobs whose turn has not
 * come (and only those), with their output copied out of the runner's buffers. ring_lo is
 * the lowest index that may still be in it; with -k it is the next to print.
 *
 * Jobs killed because concur is stopping (a signal, --halt now, a write error, a failure of
 * the runner) and jobs whose output could not be kept (a full TMPDIR) are not done:
 * neither counted, logged nor printed, and --resume runs them again. Nor is a job whose
 * output could not be written logged.
 */
#include "run.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ the ring */

static struct job **ring_at(struct app *a, size_t index)
{
    if (index < a->ring_lo || index - a->ring_lo >= a->ring_cap)
        return NULL;
    return &a->ring[index % a->ring_cap];
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

/* ------------------------------------------------------------------ errors and stops */

void fail_fatal(struct app *a, int rc)
{
    if (!a->fatal)
        a->fatal = rc ? rc : CONCUR_EIO;
    stop_run(a, CONCUR_STOP_TERM);
}

void check_output(struct app *a)
{
    const char *name;
    int fd;
    int rc = output_error(&a->out, &name, &fd);
    if (rc && !a->fatal) {
        /* A reader that went away (`concur ... | head`) stops the run quietly, as it
         * stops GNU parallel and other commands: no message for EPIPE on stdout. */
        if (rc != -EPIPE || fd != 1) {
            char path[4096];
            if (fd_path(fd, path, sizeof(path)))
                cli_error("cannot write to %s (%s): %s", name, path, strerror(-rc));
            else
                cli_error("cannot write to %s: %s", name, strerror(-rc));
        }
        fail_fatal(a, rc);
    }
}

/* Whether a signal asked concur to stop (read from the signalfd without consuming it:
 * main() reads it at the end for the exit status). */
static bool signal_pending(struct app *a)
{
    if (a->interrupted)
        return true;
    struct pollfd pf = {.fd = a->sigfd, .events = POLLIN};
    if (a->sigfd >= 0 && poll(&pf, 1, 0) > 0)
        a->interrupted = true;
    return a->interrupted;
}

/* A message in the flow of the output (the progress line is taken away): "concur: WHAT: "
 * and the job's command line on stderr; with `own_line` (GNU parallel's
 * --halt notes), "concur: WHAT:" then the command line on a line of its own, added to
 * a->halt_msg instead: it is printed after the job's output (job_done). */
static void note(struct app *a, const char *what, struct job *j, bool own_line)
{
    const struct buf *line = job_line(a, j);
    struct buf *b = own_line ? &a->halt_msg : &a->scratch;
    if (!own_line)
        buf_reset(b);
    buf_printf(b, "%s: %s:%c", cli_name(), what, own_line ? '\n' : ' ');
    if (line)
        buf_add(b, line->p, line->len);
    buf_addc(b, '\n');
    if (!own_line && buf_ok(b))
        output_raw(&a->out, CONCUR_STDERR, b->p, b->len);
}

/* ------------------------------------------------------------------ output */

/* --ctag: the colour that starts job seq's tag: a background from the 6x6x6 cube of the
 * 256 ANSI colours, picked by a step through it that keeps neighbours apart, and black or
 * white text, whichever reads better on it. Three digits each, so every tag is as wide. */
static void tag_colour(struct buf *b, size_t seq)
{
    unsigned k = (unsigned)((seq * 97) % 216), r = k / 36, g = k / 6 % 6, bl = k % 6;
    bool light = 299 * r + 587 * g + 114 * bl > 2500;
    buf_printf(b, "\033[48;5;%03u;38;5;%03um\033[K", 16 + k, light ? 0u : 231u);
}

/* The tag of --tag (the arguments, space-separated) or --tagstring, with --ctag its colour
 * first. NULL: no tag. */
static const struct buf *job_tag(struct app *a, struct job *j)
{
    if (!a->o.tag && !a->o.tagstring)
        return NULL;
    if (!j->have_tag) {
        buf_reset(&j->tag);
        if (a->o.ctag)
            tag_colour(&j->tag, j->seq);
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

/* --line-buffer: output as it arrives (the runner then captures nothing). */
void job_output(concur_runner *r, size_t index, int stream, const void *data, size_t len, void *arg)
{
    struct app *a = arg;
    (void)r;
    struct job **p = ring_at(a, index), *j = p ? *p : NULL;
    if (!j)
        return;
    struct buf *pending = stream == CONCUR_STDERR ? &j->err : &j->out;
    if (stream == CONCUR_STDOUT)
        j->received += len;
    buf_add(pending, data, len);
    if (!buf_ok(pending)) {
        cli_error("out of memory");
        fail_fatal(a, CONCUR_ENOMEM);
        return;
    }
    if (a->o.keep_order && index != a->next_print)
        return; /* not its turn: keep it */
    if (!memchr(data, '\n', len))
        return; /* no line ends here: the earlier bytes were looked at already (linear) */
    const struct buf *tag = job_tag(a, j);
    output_lines(&a->out, stream, pending, tag ? tag->p : NULL, tag ? tag->len : 0, false);
    output_flush(&a->out);
    check_output(a);
}

/* Prints what a finished job has to say, from d's buffers. */
static void print_job(struct app *a, struct job *j, const struct jobdone *d)
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
        /* -v: tagged too (not with --files, as GNU parallel) */
        if (a->o.verbose && a->o.out == OUT_GROUP && !a->o.json && !a->o.files) {
            if (tag) {
                output_raw(&a->out, CONCUR_STDOUT, tag->p, tag->len);
                output_raw(&a->out, CONCUR_STDOUT, "\t", 1);
            }
            if (job_show_line(a, j, CONCUR_STDOUT) != 0) {
                cli_error("out of memory");
                fail_fatal(a, CONCUR_ENOMEM);
                return;
            }
        }
        output_group(&a->out, d, tag ? tag->p : NULL, tag ? tag->len : 0);
    }
}

/* ------------------------------------------------------------------ a finished job */

/* --halt soon: GNU parallel's words when jobs are still running. */
static void halt_waiting(struct app *a)
{
    if (a->o.halt_when != HALT_SOON || a->running == 0)
        return;
    buf_printf(&a->halt_msg, "%s: Starting no more jobs. Waiting for %zu jobs to finish.\n",
               cli_name(), a->running);
}

/* --halt, after the job's output, with GNU parallel's notes ("This job failed:" and the
 * command line). As GNU parallel, the jobs that end after the halt (soon) are noted too,
 * without changing the exit status. */
static void check_halt(struct app *a, struct job *j, bool failed, int exitval, int sig)
{
    const struct cli_opts *o = &a->o;
    if (o->halt_when == HALT_NEVER)
        return;
    size_t count;
    if (o->halt_on == HALT_FAIL && failed) {
        note(a, "This job failed", j, true);
        count = a->failed;
    } else if (o->halt_on == HALT_SUCCESS && !failed) {
        note(a, "This job succeeded", j, true);
        count = a->succeeded;
    } else if (o->halt_on == HALT_DONE) {
        note(a, "This job finished", j, true);
        count = a->completed;
    } else {
        return;
    }
    if (a->halted) {
        halt_waiting(a);
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
        halt_waiting(a);
    }
}

/* How a finished job ended: what the joblog, --results and --json see (the command line is
 * filled in by prepare_job), and what it has to print (d.out, d.err). */
struct ending {
    bool failed;
    struct jobdone d;
};

static void read_ending(struct app *a, struct job *j, const concur_result *res, struct ending *e)
{
    struct jobdone *d = &e->d;
    e->failed = !res->success;
    *d = (struct jobdone){.seq = j->seq, .args = j->args, .nargs = j->nargs, .sig = res->signal};
    d->timeout = res->timeout;
    d->start = res->time_start;
    d->runtime = res->time_run;
    if (!res->spawned)
        d->exitcode = res->error == CONCUR_ENOENT ? 127 : 126; /* as a shell says it */
    else
        d->exitcode = res->signal ? -1 : res->exit_code;
    /* The joblog's Exitval, as GNU parallel writes it: 0 when killed, -1 on a timeout. */
    d->exitval = res->timeout ? -1 : res->signal ? 0 : d->exitcode;
    d->out = res->out;
    d->out_len = res->out_len;
    if (a->o.out != OUT_LINE) /* --line-buffer counts as the output comes */
        j->received = res->out_len;
    d->err = res->err;
    d->err_len = res->err_len;
    d->out_mapped = res->out_mapped;
    d->err_mapped = res->err_mapped;
    if (!res->spawned) {
        /* The reason, as the job's stderr (where the shell would have put it). */
        buf_reset(&a->errmsg);
        buf_printf(&a->errmsg, "%s: %s\n", cli_name(),
                   res->error_message ? res->error_message : concur_strerror(res->error));
        d->err = a->errmsg.p;
        d->err_len = buf_ok(&a->errmsg) ? a->errmsg.len : 0;
        d->err_mapped = false;
        if (a->o.out == OUT_LINE) /* --line-buffer prints what is pending in j->err */
            buf_add(&j->err, d->err, d->err_len);
    }
}

/* What a done job shows: its command line (joblog, --results, --json) and, with --json
 * (unless --results takes the output), the JSON object instead of its output. false when
 * out of memory: the run is stopping and the job is left as is. */
static bool prepare_job(struct app *a, struct job *j, struct ending *e)
{
    struct jobdone *d = &e->d;
    const struct buf *line = job_line(a, j);
    if (!line) {
        fail_fatal(a, CONCUR_ENOMEM);
        return false;
    }
    d->cmd = line->p;
    d->cmd_len = line->len;
    if (a->o.json && !a->res) { /* the JSON object is the job's output */
        buf_reset(&a->json);
        json_job(&a->json, d);
        if (!buf_ok(&a->json)) {
            fail_fatal(a, CONCUR_ENOMEM);
            return false;
        }
        d->out = a->json.p;
        d->out_len = a->json.len;
        d->err = NULL;
        d->err_len = 0;
        d->out_mapped = d->err_mapped = false;
    }
    return true;
}

/* A job that is done (not interrupted): counted, timed, prepared for its log and output
 * (prepare_job), shown on the progress line, and weighed by --halt; it is logged when it
 * is delivered (emit). false as prepare_job. */
static bool account(struct app *a, struct job *j, struct ending *e)
{
    a->completed++;
    if (e->failed)
        a->failed++;
    else
        a->succeeded++;
    if (!e->failed)
        hist_add(a, e->d.runtime);
    if (e->d.timeout)
        note(a, "warning: this job timed out and was killed", j, false);
    if ((a->jl || a->res || a->o.json) && !prepare_job(a, j, e))
        return false;
    if (a->prog)
        progress_done(a->prog, e->failed);
    check_halt(a, j, e->failed, e->d.exitval, e->d.sig);
    return true;
}

/* ------------------------------------------------------------------ delivery */

/* Delivers a finished job: its --results entry or its output, then, once that was written
 * (flushed) without error, its joblog line. A job is thus never logged as done while its
 * output is lost: after a failed write, a crash or a kill, --resume runs it again. An
 * interrupted job (not done) is neither written nor logged. */
static void emit(struct app *a, struct job *j, const struct jobdone *d)
{
    if (!j->print)
        return;
    int rc = a->jl ? joblog_prepare(a->jl, d->seq, d->host, d->start, d->runtime, j->sent,
                                    j->received, d->exitval, d->sig, d->cmd, d->cmd_len)
                   : 0;
    if (rc) {
        cli_error("out of memory");
        fail_fatal(a, rc);
        return;
    }
    if (a->res) {
        if (a->fatal)
            return;
        if (results_write(a->res, d) != 0) {
            fail_fatal(a, CONCUR_EIO);
            return;
        }
    } else {
        print_job(a, j, d);
    }
    if (!a->jl)
        return; /* without a joblog, output is flushed once per burst (job_done) */
    output_flush(&a->out);
    check_output(a);
    if (a->fatal)
        return;
    if ((rc = joblog_commit(a->jl)) != 0) {
        cli_error("cannot write the joblog '%s': %s", a->o.joblog, concur_strerror(rc));
        fail_fatal(a, rc);
    }
}

/* -k: a job held until its turn, delivered from its copies. */
static void emit_held(struct app *a, struct job *j)
{
    struct jobdone *d = &j->done;
    d->out = j->out.p;
    d->out_len = j->out.len;
    d->err = j->err.p;
    d->err_len = j->err.len;
    d->out_mapped = d->err_mapped = false; /* copies */
    emit(a, j, d);
}

/* -k: delivers the jobs whose turn has come, in order. */
static void print_ready(struct app *a)
{
    struct job **p;
    while ((p = ring_at(a, a->next_print)) && *p && (*p)->finished) {
        struct job *j = *p;
        emit_held(a, j);
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

/* Delivers the job now if its turn has come (then, with -k, those that waited for it), or
 * keeps a copy of what it has to deliver until then. */
static void deliver(struct app *a, struct job *j, const struct jobdone *d)
{
    const struct cli_opts *o = &a->o;
    if (o->keep_order && j->index != a->next_print) {
        /* Not its turn: keep a copy of what it has to deliver. */
        j->finished = true;
        j->done = *d;
        if (j->print && o->out != OUT_LINE) {
            buf_reset(&j->out);
            buf_reset(&j->err);
            buf_add(&j->out, d->out, d->out_len);
            buf_add(&j->err, d->err, d->err_len);
            if (!buf_ok(&j->out) || !buf_ok(&j->err)) {
                cli_error("out of memory");
                fail_fatal(a, CONCUR_ENOMEM);
            }
        }
        return;
    }
    emit(a, j, d);
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

/* How many runs job j may get in all: --retries N (0: until it succeeds), or the value of
 * --retries with replacement strings expanded for j, as GNU parallel does (its test suite
 * runs --retries {//} on 1/11 2/22 3/33). An expansion that is not a number is refused
 * for that job, with a message: GNU parallel reads it as 0 (retry forever), which a typo
 * should not cause. */
static unsigned job_tries(struct app *a, struct job *j)
{
    if (!a->triestpl)
        return a->o.tries ? a->o.tries : UINT_MAX;
    struct jobview v = view_of(j);
    buf_reset(&a->scratch);
    tpl_plain(a->triestpl, &v, &a->scratch);
    buf_addc(&a->scratch, '\0');
    if (!buf_ok(&a->scratch))
        return 1;
    const char *s = a->scratch.p;
    char *end;
    errno = 0;
    unsigned long n = strtoul(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || *s == '+' || n > 1000000) {
        cli_error("--retries %s: '%s' is not a number of tries: job %zu is not retried",
                  a->o.tries_tpl, s, j->seq);
        return 1;
    }
    return n ? (unsigned)n : UINT_MAX;
}

/* --files: the job's output goes to a file of its own, parXXXXX.par in --tmpdir ($TMPDIR,
 * /tmp), as GNU parallel names them; the job then prints its name instead (its stderr is
 * printed as usual). false after a message (the run stops). */
static bool save_output(struct app *a, struct jobdone *d)
{
    const char *dir = a->o.tmpdir ? a->o.tmpdir : getenv("TMPDIR");
    int fd = temp_file(&a->files, dir && *dir ? dir : "/tmp", "par", 5, ".par");
    int rc = fd < 0 ? fd : write_all(fd, d->out, d->out_len);
    if (fd >= 0 && close(fd) < 0 && !rc)
        rc = -errno;
    if (rc) {
        cli_error("cannot save a job's output (--files) in %s: %s",
                  fd >= 0 || buf_ok(&a->files) ? a->files.p : "--tmpdir", strerror(-rc));
        fail_fatal(a, CONCUR_EIO);
        return false;
    }
    a->files.p[a->files.len - 1] = '\n'; /* (its NUL) */
    d->out = a->files.p;
    d->out_len = a->files.len;
    d->out_mapped = false;
    return true;
}

/* --wd ...: the job's own directory is removed once it has ended (a warning if it cannot
 * be). */
static void remove_job_dir(struct app *a, const struct job *j)
{
    if (!a->o.wd || strcmp(a->o.wd, "..."))
        return;
    buf_reset(&a->scratch);
    wd_dir(&a->scratch, a->o.wd, j->seq);
    buf_addnul(&a->scratch);
    int rc = buf_ok(&a->scratch) ? remove_tree(a->scratch.p) : -ENOMEM;
    if (rc)
        cli_warn("cannot remove %s: %s", a->scratch.p ? a->scratch.p : "--wd ...", strerror(-rc));
}

int job_done(concur_runner *r, const concur_result *res, void *arg)
{
    struct app *a = arg;
    struct job *j = res->user;
    concur_result mres;
    const char *host = NULL;
    (void)r;
    if (a->mpi_pool) { /* on another rank, the job's record is the function's answer */
        res = mpi_result(res, &mres, &host);
        if (!res->function)
            host = a->mpi_host; /* rank 0 ran it */
    }
    /* Another try? (The runner allows it while attempts <= retries.) */
    if (!res->success && !a->stop_term && !signal_pending(a) && res->attempts < job_tries(a, j)) {
        buf_reset(&j->out);
        buf_reset(&j->err);
        j->received = 0;
        return 1;
    }
    a->running--;
    mpi_job_over(a, j);
    remove_job_dir(a, j);
    pipe_put(a->pin, j->block); /* --pipe: its stdin is no longer needed */
    j->block = NULL;
    /* Killed because concur is stopping (a signal, --halt now, a write error, a failure of
     * the runner): not done. Nor is a job whose output could not be kept (a full TMPDIR):
     * what it printed is incomplete. */
    bool lost = res->spawned && res->error;
    bool interrupted = lost || (res->signal && !res->timeout &&
                                (res->stopped || a->stop_term || signal_pending(a)));
    if (lost && !a->fatal) {
        cli_error("%s", res->error_message ? res->error_message : concur_strerror(res->error));
        fail_fatal(a, res->error);
    }
    struct ending e;
    read_ending(a, j, res, &e);
    if (host) { /* kept with the job: -k may print it after the record is gone */
        snprintf(j->mpi_host, sizeof(j->mpi_host), "%s", host);
        e.d.host = j->mpi_host;
    }
    j->print = !interrupted;
    if (!interrupted && a->o.files && !a->o.results && !save_output(a, &e.d))
        j->print = false;
    if (!interrupted && !account(a, j, &e))
        return 0;
    slot_give(a, j->slot);
    deliver(a, j, &e.d);
    output_flush(&a->out);
    if (a->halt_msg.len && buf_ok(&a->halt_msg)) /* after the job's output, as GNU parallel */
        output_raw(&a->out, CONCUR_STDERR, a->halt_msg.p, a->halt_msg.len);
    buf_reset(&a->halt_msg);
    check_output(a);
    return 0;
}

void print_leftovers(struct app *a)
{
    if (!a->o.keep_order || !a->ring)
        return;
    for (size_t i = a->ring_lo; i < a->next_index; i++) {
        struct job **p = ring_at(a, i);
        if (p && *p) {
            if ((*p)->finished)
                emit_held(a, *p);
            job_put(a, *p);
            *p = NULL;
        }
    }
    output_flush(&a->out);
    check_output(a);
}
