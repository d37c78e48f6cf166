/*
 * run.h - one run of concur: the state shared by the three files that drive it.
 *
 *   main.c      reads the options, opens the inputs, the joblog, --results and the
 *               progress line, creates the runner and turns the outcome into the exit status
 *   jobs.c      the runner's source: gathers input records into jobs, skips those --resume
 *               says are done, and builds each job's argv
 *   complete.c  the runner's callbacks: output as it comes (--line-buffer) and what happens
 *               when a job ends (retry, joblog, --results, --json, printing in turn, --halt)
 *
 * Everything runs in the runner's thread (the source and the callbacks are called from
 * concur_runner_run()), so struct app is used without locks.
 *
 * A job record goes: built by build_job() from a free list, handed to the runner by
 * next_job() (which puts it in the ring when the ring is used), ended by job_done(), and
 * then printed and returned to the free list, or, with -k, kept in the ring until its turn.
 * With --report, records are never reused: the runner's kept results point into them.
 */
#ifndef CONCUR_CLI_RUN_H
#define CONCUR_CLI_RUN_H

#include "cli.h"

/* Buckets of the histogram of successful run times (--timeout N%). */
enum { HIST_N = 3200 };

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
    bool skip;             /* not to run: {uniq}, {choose_k}, a {= perl =} calling skip() */
    bool print;            /* its output is to be printed (not an interrupted job) */
    struct jobdone done;   /* -k: how it ended, kept until its turn */
    size_t received;       /* bytes of stdout (the joblog's Receive) */
    struct pblock *block;  /* --pipe: its stdin, held until it is over */
    size_t sent;           /* --pipe: bytes of its stdin (the joblog's Send) */
    char mpi_ctl[32];      /* --mpi: its timeout, the first word of its task's argv */
    struct buf mpi_vec;    /* --mpi: its task's argv */
    char mpi_host[256];    /* --mpi: the host of the rank that ran it */
    bool mpi_local;        /* --mpi: rank 0 runs it (one of its -j) */
};

struct qrec; /* a record pushed back (jobs.c) */

struct app {
    struct cli_opts o;
    struct tpl *tpl, *tagtpl, *triestpl; /* the command, --tagstring, --retries {...} */
    struct input *in;
    struct pipe_in *pin; /* --pipe: standard input in blocks (then `in` is NULL) */
    struct record rec;
    struct joblog *jl;
    struct results *res;
    struct progress *prog;
    struct output out;
    concur_runner *runner;
    int sigfd;
    concur_pool *mpi_pool; /* --mpi on several ranks: where the jobs run */
    int mpi_ranks;         /* the other ranks, which run jobs too (0: a local run) */
    size_t mpi_per_rank;   /* jobs at once on each rank (-j) */
    size_t mpi_local;      /* jobs rank 0 runs itself now */
    char mpi_host[256];    /* rank 0's host */

    /* building jobs */
    size_t next_seq;
    bool input_done;
    struct job *free_jobs, *kept_jobs;
    struct qrec *qhead, *qcur;      /* records pushed back; the one being copied */
    size_t per_job;                 /* records per job */
    bool budget;                    /* -X / -m: also limited by the length of a command line */
    size_t max_chars;               /* -s: the exact limit on a command line (0: none) */
    size_t first_fields, first_len; /* -s: the job's first record: fields, line length */
    size_t line_len;                /* -s: the length of the job's line as it stands */
    struct buf trial;               /* -s: the fields of a job being built (struct field[]) */
    struct buf recn;                /* -s with -X / -m: the fields of each record of that job */
    bool spread;                    /* -X / -m: the last records were spread over the slots */
    bool need_line;                 /* build the command line with every job */
    size_t total_jobs;              /* for --bar/--eta/--halt N%: 0 when unknown */

    /* running */
    unsigned char *slots;
    size_t nslots;
    size_t running;
    struct job **ring; /* by runner index: jobs that may still get output or print */
    size_t ring_cap, ring_lo, next_index;
    size_t next_print; /* -k: the runner index whose output comes next */
    bool use_ring;
    size_t fd_limit; /* -j0: the jobs the open-file limit allows at once */
    bool fd_warned;

    /* outcome */
    size_t completed, failed, succeeded;
    size_t resumed; /* jobs --resume skipped (done in an earlier run) */
    bool halted, stop_term, no_more, interrupted;
    int halt_status;
    int fatal; /* an error of concur itself: exit 255 */
    int signo;
    uint32_t *hist; /* HIST_N buckets, with --timeout N% */
    size_t hist_count;
    struct buf scratch;  /* messages */
    struct buf halt_msg; /* --halt's notes on the job that just ended, printed after it */
    struct buf errmsg;   /* why a job could not start */
    struct buf json;     /* --json: the finished job's object */
    struct buf files;    /* --files: the name of the finished job's output file, a newline */
};

/* What a template is expanded with for job j. */
static inline struct jobview view_of(const struct job *j)
{
    return (struct jobview){j->args, j->nargs, j->seq, j->slot};
}

/* ------------------------------------------------------------------ jobs.c */

/* GNU parallel's default limit on the length of a -X / -m command line (and the most -s
 * may give): what it computes on this machine, --show-limits' "Maximal usable size". */
size_t gnu_usable_line(void);
/* Builds the next job from the input. 1 with *out set, 0 at the end, or a negative code
 * (CONCUR_EINTR: a signal while waiting for input). */
int build_job(struct app *a, struct job **out);
/* The runner's source (concur_runner_run's callback). */
int next_job(void *arg, size_t index, concur_cmd *cmd);
/* Back to the free list (kept instead with --report). */
void job_put(struct app *a, struct job *j);
/* The job's command line as shown (built on demand). NULL when out of memory. */
const struct buf *job_line(struct app *a, struct job *j);
/* -t / -v: writes the job's command line and a newline to `stream` (CONCUR_STDOUT or
 * CONCUR_STDERR) through a->out. 0 or CONCUR_ENOMEM. */
int job_show_line(struct app *a, struct job *j, int stream);
void slot_give(struct app *a, unsigned slot);
/* Warns that the limit on open files allows only `jobs` jobs at once (main.c). */
void fd_limit_warning(int jobs);
/* Releases every job record and record pushed back, wherever it is. */
void jobs_free(struct app *a);

/* ------------------------------------------------------------------ complete.c */

/* The runner's on_done callback: a job ended. */
int job_done(concur_runner *r, const concur_result *res, void *arg);
/* The runner's on_output callback (--line-buffer). */
void job_output(concur_runner *r, size_t index, int stream, const void *data, size_t len,
                void *arg);
/* At the end of an interrupted run: what finished still gets printed, in order. */
void print_leftovers(struct app *a);
/* Puts a started job in the ring at the runner's index. 0 or CONCUR_ENOMEM. */
/* The histogram of --timeout N%: log-spaced buckets from HIST_MIN seconds, each HIST_STEP
 * times the previous one; flat memory whatever the number of jobs. */
#define HIST_MIN 1e-6
#define HIST_STEP 1.01

int ring_put(struct app *a, size_t index, struct job *j);
/* The median run time of the jobs that succeeded so far (--timeout N%). */
double hist_median(const struct app *a);
/* Stops the run: how is CONCUR_STOP_START or CONCUR_STOP_TERM. */
void stop_run(struct app *a, int how);
/* An error of concur itself: the run stops and concur exits 255. */
void fail_fatal(struct app *a, int rc);
/* After writing output: a failed write to stdout/stderr stops everything. */
void check_output(struct app *a);

/* ------------------------------------------------------------------ mpi.c */

/* --mpi, right after the options are read: in concur, replaces the process by concur-mpi;
 * in concur-mpi, starts MPI (the serving ranks never return) and checks what cannot go with
 * it. 0 to go on (a local run when there is no other rank), or an exit status. */
int mpi_begin(struct app *a, int *argc, char ***argv);
/* The runner options and the pool of ranks of an MPI run (nothing for a local run). 0 or a
 * negative code, after a message. */
int mpi_setup(struct app *a, concur_runner_opts *ro);
/* Runs the job on rank 0 when it has room for one more of its own, else makes its command a
 * task for another rank. 0 or CONCUR_ENOMEM. */
int mpi_cmd(struct app *a, struct job *j, concur_cmd *cmd);
/* The job is over (not to be retried): rank 0's room, if it ran there. */
void mpi_job_over(struct app *a, struct job *j);
/* The result of an MPI job as a local job's (see mpi.c); *host: the rank's host or NULL. */
const concur_result *mpi_result(const concur_result *res, concur_result *out, const char **host);
/* Destroys the pool of ranks and ends MPI. */
void mpi_end(struct app *a);

#endif
