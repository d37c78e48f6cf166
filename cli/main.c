/*
 * main.c - concur: run commands concurrently from the shell (GNU parallel's common syntax).
 *
 * main() parses the options, settles how output is handled, opens what the run reads and
 * writes (open_run), and then either prints the commands (--dry-run) or runs them: the run
 * is one concur_runner_run() call (run). The runner's loop, in this thread, pulls jobs from
 * next_job() (jobs.c, the source callback) whenever a slot is free, and reports each
 * finished command to job_done() (complete.c). At the end, finish() turns the outcome into
 * the exit status and app_free() releases everything.
 *
 * Signals: SIGINT, SIGTERM and SIGHUP are blocked and read from a signalfd, which the
 * runner watches as its stop_fd. When one arrives, the runner starts nothing more, sends
 * the term sequence to every running job's process group and returns CONCUR_ECANCELED
 * once all are reaped; concur then writes what is pending and exits 128 + the signal.
 * Jobs killed that way are neither printed nor logged (they are not done, and --resume
 * runs them again). SIGPIPE is blocked too, so that a closed stdout is a failed write
 * (EPIPE) that stops the run (quietly, as GNU parallel) instead of a death. The runner
 * gives every child a clean signal mask and default dispositions.
 *
 * Exit status (GNU parallel's): 0 when every job succeeded, else the number of failed jobs
 * up to 101; with --halt, the status --halt defines; 2 for a usage error; 128 + signal
 * after a signal; 255 for an error of concur itself (I/O, memory, unreadable input).
 */
#include "run.h"

#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* ------------------------------------------------------------------ setup */

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
    a->need_line = o->joblog || o->json || o->results || o->trace || o->verbose;
    a->per_job = o->max_args && !o->pipe ? o->max_args : 1;
    a->budget = (o->ctx_replace || o->multi) && !o->max_args && !o->pipe;
    a->max_chars = o->pipe ? 0 : o->max_chars;
    /* GNU parallel's limit on a command line: -X / -m fill lines up to it, and -s cannot
     * raise it (GNU parallel warns and keeps its own). */
    size_t usable = o->pipe ? 0 : gnu_usable_line();
    if (a->max_chars > usable && usable) {
        cli_warn("value for option -s should be < %zu", usable);
        a->max_chars = usable;
    }
    if ((o->ctx_replace || o->multi) && !a->max_chars)
        a->max_chars = usable;
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

/* Blocks the signals that stop concur and reads them from a signalfd (see the top). */
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
    /* A closed stdout must be a write error (EPIPE) that stops the run, not a death. */
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    if (sigprocmask(SIG_BLOCK, &pipe, NULL) < 0)
        return -errno;
    return 0;
}

/* --nice N: the niceness the jobs run at, absolute as in GNU parallel (which sets it in
 * each child). concur sets its own and the jobs inherit it: the library starts them with
 * no hook in the child. Lowering it needs privileges: a failure is a warning. */
static void set_nice(const struct cli_opts *o)
{
    if (o->nice_set && !o->dry_run && setpriority(PRIO_PROCESS, 0, o->nice) < 0)
        cli_warn("cannot set the niceness to %d: %s", o->nice, strerror(errno));
}

/* Opens what the run reads and writes, up to the joblog (--dry-run reads it too). Returns 0
 * or a negative code, after a message when one is due. */
static int open_run(struct app *a)
{
    const struct cli_opts *o = &a->o;
    int rc;
    if ((rc = setup_signals(a)) != 0) {
        cli_error("cannot set up signals: %s", strerror(-rc));
        return rc;
    }
    perl_set_intr_fd(a->sigfd); /* a slow {= perl =} does not hold up a signal */
    if (o->pipe)
        rc = pipe_open(&a->pin, o, a->sigfd);
    else
        rc = input_open(&a->in, o, a->sigfd);
    if (rc != 0)
        return rc;
    if (a->in) /* --header: the templates know the columns' names */
        input_header(a->in, &a->o.names, &a->o.nnames);
    if ((rc = tpl_compile(&a->tpl, o)) != 0 ||
        (o->tagstring &&
         (rc = tpl_compile_plain(&a->tagtpl, o->tagstring, o->tagstring_len, o)) != 0) ||
        (o->tries_tpl &&
         (rc = tpl_compile_plain(&a->triestpl, o->tries_tpl, strlen(o->tries_tpl), o)) != 0)) {
        if (rc == CONCUR_ENOMEM) /* (a bad {= perl expression =} had its message) */
            cli_error("out of memory");
        return rc;
    }
    /* The number of jobs is known ahead (--pipe: unknown, 0). */
    bool total = tpl_needs_total(a->tpl) || (a->tagtpl && tpl_needs_total(a->tagtpl)) ||
                 (a->triestpl && tpl_needs_total(a->triestpl));
    if (!o->pipe &&
        (total || o->bar || o->eta || o->progress || (o->halt_pct && o->halt_when != HALT_NEVER))) {
        size_t records = 0;
        if ((rc = input_count(a->in, &records)) != 0)
            return rc;
        a->total_jobs = (records + a->per_job - 1) / a->per_job;
    }
    tpl_set_total(a->tpl, a->total_jobs);
    if (a->tagtpl)
        tpl_set_total(a->tagtpl, a->total_jobs);
    if (a->triestpl)
        tpl_set_total(a->triestpl, a->total_jobs);
    if (a->budget) /* -X / -m: as many records as the line holds (build_job) */
        a->per_job = SIZE_MAX;
    if (o->timeout_pct > 0 && !(a->hist = calloc(HIST_N, sizeof(*a->hist)))) {
        cli_error("out of memory");
        return CONCUR_ENOMEM;
    }
    if (o->joblog && (rc = joblog_open(&a->jl, o->joblog, o->resume, o->resume_failed, o->dry_run,
                                       &a->out.out)) != 0)
        return rc;
    if (a->jl && o->retry_items) /* (the jobs are the joblog's) */
        joblog_retry(a->jl);
    return 0;
}

/* ------------------------------------------------------------------ the run */

/* Bytes of a job's stdout (and of its stderr) kept in memory; past that, the runner spills
 * them to an unlinked file in TMPDIR, and output.c drops the mapped pages as it writes
 * them, so memory stays small whatever a job prints. */
enum { OUTPUT_CAP = 1 << 20 };

/* Descriptors each running job holds: its pidfd, two output pipes and, past the memory
 * cap, two spill files (-u: the pidfd only; --line-buffer: no spill files); with --pipe,
 * also the socket of its stdin. */
static int fds_per_job(const struct cli_opts *o)
{
    return (o->out == OUT_UNGROUP ? 1 : o->out == OUT_LINE ? 3 : 5) + (o->pipe ? 1 : 0);
}

/* Descriptors open now (/proc/self/fd, less the one used to list it). */
static long fds_open(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;
    if (!d)
        return 3;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1;
}

/* How many jobs may run at once within the limit on open files: -j0 (no limit), or a -j
 * above what the descriptors allow, is brought down to it with a warning, as GNU parallel
 * does, rather than failing when the descriptors run out (with -j0 the warning waits until
 * the limit is reached: next_job). */
static int job_limit(const struct cli_opts *o)
{
    enum { RESERVE = 16 }; /* the runner's own, a spawn in progress, --results files */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return o->jobs;
    long room = (long)rl.rlim_cur - fds_open() - RESERVE;
    long fit = room > 0 ? room / fds_per_job(o) : 0;
    if (fit < 1)
        fit = 1;
    if (fit > INT_MAX)
        fit = INT_MAX;
    if (o->jobs > 0 && o->jobs <= fit)
        return o->jobs;
    if (o->jobs > 0)
        fd_limit_warning((int)fit);
    return (int)fit;
}

/* --dry-run: the command lines, one a line, without running them (--resume still skips
 * what the joblog has done); with -t, on stderr as well, as GNU parallel does.
 * --shellquote: each line shell-quoted (one word). */
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
        /* (as GNU parallel, the jobs {uniq}, {choose_k} or skip() skip are shown) */
        if (a->jl && (a->o.resume || a->o.resume_failed))
            skip = joblog_done(a->jl, j->seq, line->p, line->len);
        if (!skip && a->o.shellquote) { /* the line as one word of shell text */
            buf_reset(&a->scratch);
            shell_quote(&a->scratch, line->p, line->len);
            if (!buf_ok(&a->scratch)) {
                job_put(a, j);
                return CONCUR_ENOMEM;
            }
            line = &a->scratch;
        }
        for (int k = 0; !skip && k < 1 + a->o.trace; k++) { /* -t: on stderr too */
            struct writer *w = k ? &a->out.err : &a->out.out;
            wr_add(w, line->p, line->len);
            wr_add(w, "\n", 1);
        }
        job_put(a, j);
        if (a->out.out.err)
            break;
    }
    output_flush(&a->out);
    check_output(a);
    return rc == CONCUR_EINTR ? 0 : rc;
}

/* The run: --results and the progress line are opened, then the runner does the rest,
 * calling back into jobs.c and complete.c. At the end, what -k still holds is printed,
 * and with --report the runner's report. */
static int run(struct app *a)
{
    const struct cli_opts *o = &a->o;
    int rc;
    if (o->results && (rc = results_open(&a->res, o->results, &a->out.out, o)) != 0)
        return rc;
    if (a->res)
        results_set_names(a->res, o->names, o->nnames);
    if ((o->bar || o->eta || o->progress) &&
        (rc = progress_create(&a->prog, o->bar, o->eta, o->progress, a->total_jobs,
                              job_limit(o))) != 0)
        return rc;
    a->out.prog = a->prog;
    concur_runner_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.max_workers = job_limit(o);
    ro.output_cap = OUTPUT_CAP;
    ro.tmpdir = o->tmpdir; /* NULL: $TMPDIR */
    if (!o->jobs)
        a->fd_limit = (size_t)ro.max_workers;
    ro.timeout = o->timeout;
    ro.term_seq = o->ntermseq ? o->termseq : NULL;
    ro.term_seq_len = o->ntermseq;
    /* --retries 0 (until it succeeds) or per job ({}): complete.c decides each retry. */
    ro.retries = o->tries == 0 || o->tries_tpl ? UINT_MAX : o->tries - 1;
    ro.start_delay = o->delay;
    ro.on_done = job_done;
    ro.cb_arg = a;
    ro.stop_fd = a->sigfd;
    if (o->out == OUT_UNGROUP)
        ro.flags |= CONCUR_RUN_NO_CAPTURE;
    if (o->out == OUT_LINE)
        ro.on_output = job_output;
    if (o->report)
        ro.flags |= CONCUR_RUN_KEEP_RESULTS;
    if (a->pin && pipe_can_wait(a->pin)) { /* --pipe: waiting for stdin holds up no job */
        ro.flags |= CONCUR_RUN_SOURCE_WAIT;
        ro.source_fd = 0;
    }
    if ((rc = mpi_setup(a, &ro)) != 0)
        return rc;
    rc = concur_runner_create(&a->runner, &ro);
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

/* ------------------------------------------------------------------ the end */

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

/* After the run, or a failed set-up (rc): the last output, then the exit status. */
static int finish(struct app *a, int rc)
{
    if (rc == CONCUR_EINTR)
        rc = 0;
    a->signo = received_signal(a);
    if (results_close(a->res) != 0 && !a->fatal)
        a->fatal = CONCUR_EIO;
    a->res = NULL;
    if (output_flush(&a->out) != 0)
        check_output(a);

    if (a->signo)
        return 128 + a->signo;
    if (rc == CONCUR_EINVAL) /* a bad --colsep */
        return EXIT_USAGE;
    if (rc || a->fatal)
        return EXIT_OTHER;
    if (a->halted)
        return a->halt_status;
    return a->failed < EXIT_FAILMAX ? (int)a->failed : EXIT_FAILMAX;
}

/* Releases everything (keeps leak checkers quiet; the kernel would do it anyway). */
static void app_free(struct app *a)
{
    concur_runner_destroy(a->runner);
    mpi_end(a); /* after the runner: it hands the pool its last tasks */
    jobs_free(a);
    pipe_close(a->pin); /* after the jobs: they give their blocks back */
    free(a->ring);
    free(a->slots);
    free(a->hist);
    free(a->rec.f);
    buf_free(&a->scratch);
    buf_free(&a->halt_msg);
    buf_free(&a->trial);
    buf_free(&a->recn);
    buf_free(&a->errmsg);
    buf_free(&a->json);
    buf_free(&a->files);
    progress_free(a->prog);
    joblog_close(a->jl);
    input_close(a->in);
    tpl_free(a->tpl);
    tpl_free(a->tagtpl);
    tpl_free(a->triestpl);
    output_free(&a->out);
    perl_end(a->signo != 0); /* the {= perl =} process, if there is one */
    opts_free(&a->o);
    if (a->sigfd >= 0)
        close(a->sigfd);
}

int main(int argc, char **argv)
{
    struct app app, *a = &app;
    tune_malloc();
    memset(a, 0, sizeof(*a));
    a->sigfd = -1;
    cli_set_name(argc > 0 ? argv[0] : NULL);
    int rc = opts_parse(argc, argv, &a->o);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (a->o.mpi && (rc = mpi_begin(a, &argc, &argv)) != 0) {
        opts_free(&a->o);
        return rc;
    }
    opts_drop_penv(&a->o); /* the jobs do not get PARALLEL_ENV itself */
    settle_modes(a);
    output_init(&a->out, NULL);
    a->out.ctag = a->o.ctag;
    guard_std_fds(&a->out);
    if ((rc = open_run(a)) == 0) {
        set_nice(&a->o);
        rc = a->o.dry_run ? dry_run(a) : run(a);
    }
    int status = finish(a, rc);
    app_free(a);
    return status;
}
