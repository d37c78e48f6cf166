/*
 * cli.h - the pieces of the concur command-line tool and how they fit.
 *
 * concur runs a command once per input argument, several at a time, with the common syntax
 * of GNU parallel. It is built on the public API only (include/concur.h), the way curl's
 * tool is built on libcurl; nothing here reaches into src/.
 *
 * main.c reads the command line (opts.c) and sets up one run, whose state main.c, jobs.c
 * and complete.c share (run.h). The flow of one job:
 *   input.c     pulls the next record (one element of every input group, split on --colsep)
 *   pipe.c      --pipe instead: cuts standard input into blocks, each the stdin of a job
 *   jobs.c      gathers records into a job (-n, -X), skips it if --resume says it is done,
 *               and hands it to the runner from the runner's source callback
 *   template.c  turns the job into an argv: the command words with the placeholders
 *               replaced, exec'd directly when the line is simple, else $SHELL -c LINE
 *   (runner)    spawns, captures, times out, retries: concur_runner_run()
 *   complete.c  takes the ended job back from the runner: retry, log, print, --halt
 *   output.c    writes the job's output (grouped, line-buffered or ungrouped, tagged,
 *               in input order with -k, or as JSON)
 *   joblog.c    appends the job's line to --joblog; reads it back for --resume
 *   results.c   stores the job's output under --results
 *   progress.c  keeps --bar / --eta / --progress up to date on stderr
 *
 * Everything runs in one thread: the runner calls the source and the callbacks from its
 * loop, so no state here needs a lock. Memory is flat in the number of input lines: inputs
 * are read lazily and job records are recycled through a free list.
 *
 * Errors: functions return 0 or a negative errno-style code; growable buffers have a sticky
 * failure flag (see struct buf) checked once where a piece of work ends.
 */
#ifndef CONCUR_CLI_H
#define CONCUR_CLI_H

#include <concur.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* ------------------------------------------------------------------ exit statuses */

enum {
    EXIT_USAGE = 2,     /* bad option or value */
    EXIT_FAILMAX = 101, /* "more than 100 jobs failed" */
    EXIT_OTHER = 255,   /* an error of concur itself: I/O, memory, unreadable input */
};

/* ------------------------------------------------------------------ util.c */

/* A growable byte buffer. Appends never fail loudly: on a failed allocation the buffer
 * keeps what it had and sets `failed`; callers check it once (buf_ok) when a piece of work
 * is done. The content is kept NUL-terminated when len < cap. */
struct buf {
    char *p;
    size_t len, cap;
    bool failed;
};

bool buf_reserve(struct buf *b, size_t extra);
void buf_add(struct buf *b, const void *data, size_t n);
void buf_addc(struct buf *b, char c);
void buf_adds(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) CONCUR_PRINTF(2, 3);
void buf_addnul(struct buf *b); /* appends a '\0' that counts in len */
static inline void buf_reset(struct buf *b)
{
    b->len = 0;
    b->failed = false;
}
static inline bool buf_ok(const struct buf *b)
{
    return !b->failed;
}
void buf_free(struct buf *b);

/* A buffered writer on a file descriptor (stdout, stderr, a results file). Small writes
 * are gathered; large ones go straight through. Errors are sticky in `err` (a positive
 * errno value): after the first failed write, nothing more is written. */
struct writer {
    int fd;
    const char *name; /* for messages: "standard output", a file name */
    char *buf;
    size_t len, cap;
    int err;
    bool closed; /* the descriptor was closed when concur started: writing is an error */
};

void wr_init(struct writer *w, int fd, const char *name);
void wr_add(struct writer *w, const void *data, size_t n);
void wr_adds(struct writer *w, const char *s);
int wr_flush(struct writer *w); /* 0 or -errno */
void wr_free(struct writer *w);

/* Writes all of data to fd (retrying on EINTR and short writes). 0 or -errno. */
int write_all(int fd, const void *data, size_t n);
/* Appends one record (a joblog line, a --results row) to the regular file fd, opened with
 * O_APPEND, with a single write(2): on a failed or short write (a full disk) the file is
 * truncated back to where the record started, so no partial record is ever left. Only one
 * writer may append to the file. 0 or -errno (-ENOSPC for a short write). */
int append_record(int fd, const void *data, size_t n);

/* The path a descriptor is open on (/proc/self/fd), for messages: false when unknown. */
bool fd_path(int fd, char *out, size_t n);

/* Whether p[0..n) is only blanks (space, \t, \n, \r, \f, \v), as -r sees them. */
bool only_blanks(const char *p, size_t n);

/* Messages name the program "parallel" when argv[0]'s base name is parallel (a drop-in
 * link), else "concur"; cli_name() is that name. */
void cli_set_name(const char *argv0);
const char *cli_name(void);
/* Whether concur runs as "parallel": some messages then use GNU parallel's own words. */
bool cli_gnu(void);

/* "concur: " + message on stderr (unbuffered, best effort). */
void cli_error(const char *fmt, ...) CONCUR_PRINTF(1, 2);
void cli_warn(const char *fmt, ...) CONCUR_PRINTF(1, 2);
/* "parallel: Error: " + message: GNU parallel's form, for the messages the "parallel"
 * persona words as GNU parallel does. */
void cli_gnu_error(const char *fmt, ...) CONCUR_PRINTF(1, 2);

/* Time: wall clock in seconds since the epoch, monotonic seconds. */
double wall_now(void);
double mono_now(void);

/* Parses a duration: "1.5", "2s", "3m", "1h", "1d". Returns false if malformed. */
bool parse_duration(const char *s, double *out);

/* Starts argv[0] (looked up in $PATH) with a clean signal mask and default dispositions
 * (concur blocks some), each fds[i][0] as its descriptor fds[i][1] (-1: /dev/null, read
 * only). The source descriptors must not be any of the targets. 0 with *pid set, or an
 * errno value (ENOENT: no such program). */
int spawn_fds(pid_t *pid, char *const argv[], const int fds[][2], size_t nfds);
/* mkdir -p: path and its missing parents (path is changed while it runs). 0 or -errno. */
int mkdir_p(char *path);
/* Whether a program called name (no slash) is in $PATH, executable. */
bool in_path(const char *name);

/* --wd: the working directory of job seq: wd itself, or for "..." a directory of its own,
 * $HOME/.parallel/tmp/HOST-PID-SEQ (as GNU parallel names it), which the job's end removes. */
void wd_dir(struct buf *b, const char *wd, size_t seq);
/* Makes a new file DIR/PREFIX + nrand random characters + SUFFIX (O_EXCL, mode 0600), its
 * name in *path (NUL-terminated, counted in len): its descriptor, or -errno. */
int temp_file(struct buf *path, const char *dir, const char *prefix, size_t nrand,
              const char *suffix);
/* rm -rf path (not following symbolic links). 0 or -errno (a missing path is not an error). */
int remove_tree(const char *path);

/* GNU parallel's shell quoting of one word ('...' when needed, '' for empty). */
void shell_quote(struct buf *b, const char *s, size_t n);

/* ------------------------------------------------------------------ opts.c */

enum out_mode { OUT_GROUP, OUT_LINE, OUT_UNGROUP };
enum halt_when { HALT_NEVER, HALT_SOON, HALT_NOW };
enum halt_on { HALT_FAIL, HALT_SUCCESS, HALT_DONE };

/* One input group: the arguments after a ::: (or each file after ::::, or each -a). */
struct group_spec {
    bool is_file;
    bool linked;  /* :::+ / ::::+ : element-wise with the previous group */
    char **items; /* ::: the arguments; :::: one file name (items[0]) */
    size_t n;
};

struct cli_opts {
    /* the command and its inputs */
    char **cmd; /* command words (borrowed from argv); may be empty */
    int ncmd;
    struct group_spec *groups;
    size_t ngroups;
    char **argfiles; /* the -a file names (owned array of borrowed strings) */
    /* input splitting */
    char *delim; /* decoded -d / -0 delimiter (default "\n") */
    size_t delim_len;
    bool delim_given;           /* -d: it splits ::: arguments too */
    const char *colsep;         /* --colsep regexp, or NULL */
    bool trim_left, trim_right; /* --trim (with --colsep: both by default) */
    bool trim_set;              /* --trim given */
    bool link;                  /* --link: groups in step, the shorter ones wrapping around */
    const char *eof_str;        /* -E: an input source ends at an element that is this */
    bool shuf;                  /* --shuf: the jobs in a random order */
    bool header;           /* --header (not 0): the first element of each group names its columns */
    const char *header_re; /* --header's value (--pipe: what the header is) */
    bool header_files;     /* --header 0: the names of the :::: / -a files name columns */
    /* --header: the names of the columns, as fields whose col is their column (set from
     * input_header() once the input is open; they point into the input) */
    const struct field *names;
    size_t nnames;
    /* building commands */
    size_t max_args;      /* -n N (0: not given) */
    bool zero_args;       /* -n 0, or -N 0 / -L 0 without --pipe: read an argument, pass none */
    size_t max_chars;     /* -s N: command lines shorter than N bytes (0: not given) */
    bool ctx_replace;     /* -X */
    bool multi;           /* -m */
    bool quote;           /* -q */
    bool plus;            /* --plus: GNU parallel's extra replacement strings */
    const char *replace;  /* -I STR: STR instead of {} (NULL: not given) */
    /* --dnr, --bnr, --er, --bner: strings that stand for {//}, {/}, {.}, {/.} (NULL: none) */
    const char *rename[4];
    const char *wd;       /* --wd DIR: the jobs' working directory ("...": one per job) */
    bool shellquote;      /* --shellquote: print the lines quoted, run nothing */
    bool no_run_if_empty; /* -r: skip records that are only blanks */
    /* --pipe */
    bool pipe;
    size_t block_size;       /* --block (default 1M) */
    bool block_per_slot;     /* --block -N (--pipepart): N blocks a job slot */
    bool pipepart;           /* --pipepart: the blocks are read from pipepart_file */
    const char *pipepart_file;
    char *recend, *recstart; /* decoded (--recend default "\n") */
    size_t recend_len, recstart_len;
    size_t max_lines; /* -L N (0: not given) */
    bool line_cont;   /* -L / -l without --pipe: a line ending in a blank goes on */
    bool rrs;         /* --rrs: --recend / --recstart taken out of the records */
    bool regexp;      /* --regexp: --recend / --recstart are regular expressions */
    size_t group_by;  /* --group-by N: records are runs of lines with the same column N */
    bool shell;       /* --shell: always run the line with the shell */
    /* the shell that runs lines: $PARALLEL_SHELL, $SHELL or /bin/sh */
    const char *shell_path;
    /* $PARALLEL_ENV (its file's content when it names a file, \001 read as a newline): shell
     * code run before every command line (owned; NULL: none) */
    char *penv;
    size_t penv_len;
    /* scheduling */
    int jobs;                     /* resolved -j (0: no limit) */
    double timeout;               /* seconds, 0: none */
    double timeout_pct;           /* --timeout N%: percent of the median run time, 0: not used */
    concur_term_step termseq[32]; /* from --termseq; none: the runner's default */
    size_t ntermseq;
    unsigned tries;        /* --retries N: total runs per job (1: no retry; 0: until it succeeds) */
    const char *tries_tpl; /* --retries with replacement strings ({}, {//}...): per job */
    enum halt_when halt_when;
    enum halt_on halt_on;
    double halt_value; /* count, or percent when halt_pct */
    bool halt_pct;
    double delay;  /* --delay seconds */
    bool mpi;      /* --mpi: the jobs run on the ranks of an MPI job */
    int nice;      /* --nice N: the niceness of concur and its jobs */
    bool nice_set; /* --nice given */
    /* output */
    enum out_mode out;
    bool keep_order;
    bool tag;
    bool ctag;       /* --ctag / --ctagstring: the tag in a colour of the job's */
    char *tagstring; /* --tagstring, its \t \n \r \NNN decoded (owned), or NULL */
    size_t tagstring_len;
    const char *results;
    bool compress; /* --compress: the --results files are compressed */
    bool json;
    const char *joblog;
    const char *tmpdir; /* --tmpdir: where output past the memory cap spills */
    bool resume, resume_failed;
    bool retry_failed; /* --retry-failed: the joblog's failed command lines run again */
    char **retry_items; /* --retry-failed: the joblog's command lines (the input group) */
    struct buf profile_words; /* -J: the profiles' words, each NUL-terminated */
    char **profile_argv;      /* -J: argv with those words in front of the options */
    char *retry_store;
    bool files;        /* --files: each job's output to a file, whose name is printed */
    bool bar, eta, progress;
    bool dry_run, report;
    bool trace;   /* -t: each command line on stderr as it starts */
    bool verbose; /* -v: each command line on stdout, before the job's output */
};

/* Parses argv into *o. Returns 0 to run, 1 when --help or --version was printed (exit 0),
 * EXIT_USAGE after printing a message naming the bad option, or EXIT_OTHER when out of
 * memory. */
int opts_parse(int argc, char **argv, struct cli_opts *o);
void opts_free(struct cli_opts *o);
/* Takes PARALLEL_ENV out of the environment (once --mpi has re-executed, if it does), so
 * that the jobs do not get it; a warning when that fails. */
void opts_drop_penv(const struct cli_opts *o);

/* ------------------------------------------------------------------ input.c */

/* One argument of a record: bytes (not NUL-terminated: a --colsep column ends where the next
 * begins) and its column number within its record (1-based: the input group, or the
 * --colsep column). */
struct field {
    const char *p;
    size_t len;
    unsigned col;
};

/* One element of the product of the input groups. */
struct record {
    struct field *f;
    size_t n, cap;
};

struct input;

/* Opens the input sources of *o (stdin when there is none). Groups after the first are read
 * in full (a cartesian product needs them again and again); the first one is streamed.
 * Reads wait on intr_fd too (a signalfd; -1: none): once it is readable they fail with
 * CONCUR_EINTR, without a message. Returns 0 or a negative code (after printing a message
 * unless CONCUR_EINTR). */
int input_open(struct input **out, const struct cli_opts *o, int intr_fd);
/* Fills *rec with the next record. Its fields stay valid until the next call. Returns 1, 0
 * at the end, or a negative code after printing a message. */
int input_next(struct input *in, struct record *rec);
/* Number of records in all (for --bar, --eta and --halt N%). May read the first group in
 * full when it cannot be counted otherwise (a pipe). Call before input_next(). */
int input_count(struct input *in, size_t *total);
/* --header: the column names (fields whose col is the column they name); none without it. */
void input_header(const struct input *in, const struct field **names, size_t *n);
void input_close(struct input *in);

/* ------------------------------------------------------------------ pipe.c */

/* A block of standard input (--pipe): data[0, len) within mem[0, cap). */
struct pblock {
    struct pblock *next;
    char *mem;
    size_t cap;
    const char *data;
    size_t len;
};

struct pipe_in;

/* Prepares to cut standard input into blocks as *o says (--block, --recend, --recstart,
 * -N / -n, -L). Reads wait on intr_fd too (as input_open). 0 or CONCUR_ENOMEM (after a
 * message). */
int pipe_open(struct pipe_in **out, const struct cli_opts *o, int intr_fd);
/* The next block: 1 with *out set (the caller's until pipe_put), 0 at the end of the input,
 * CONCUR_EAGAIN (after pipe_can_wait: no data now, call again once stdin is readable),
 * CONCUR_EINTR (a signal while waiting), or another negative code after a message. */
int pipe_next(struct pipe_in *p, struct pblock **out);
/* Whether stdin can be waited for by the runner's loop (a pipe or a socket): if so,
 * pipe_next() never blocks from now on and answers CONCUR_EAGAIN instead. */
bool pipe_can_wait(struct pipe_in *p);
/* --header: *b with the header in front, in a block of its own (*b goes back to the free
 * list); nothing without a header. 0 or CONCUR_ENOMEM. */
int pipe_header(struct pipe_in *p, struct pblock **b);
/* A block back to the free list (NULL accepted). */
void pipe_put(struct pipe_in *p, struct pblock *b);
/* Frees a block that no pipe_in will take back (NULL accepted). */
void pblock_free(struct pblock *b);
/* Frees *p and its free list (not the blocks handed out). NULL accepted. */
void pipe_close(struct pipe_in *p);

/* ------------------------------------------------------------------ template.c */

/* What a template is expanded with: one job. */
struct jobview {
    const struct field *args;
    size_t nargs;
    size_t seq;    /* {#} */
    unsigned slot; /* {%} */
};

struct tpl;

/* Compiles the command words of *o into a template. Returns 0 or CONCUR_ENOMEM. */
int tpl_compile(struct tpl **out, const struct cli_opts *o);
/* Compiles a --tagstring of n bytes (placeholders expanded without quoting), with the -I
 * and --plus of *o. */
int tpl_compile_plain(struct tpl **out, const char *s, size_t n, const struct cli_opts *o);
void tpl_free(struct tpl *t);

/* What tpl_build() and tpl_line() return for a job that is not to run: --plus's {uniq} or
 * {choose_k}, or a {= perl expression =} that called skip(). (They also return
 * CONCUR_EIO when perl failed, after a message.) */
enum { TPL_SKIP = 1 };

/* Builds what the runner executes for job *j: an argv either of the program and its
 * arguments (simple lines, or -q), or of SHELL -c LINE (o->shell_path). Strings go to
 * `strs` (and `line`), the pointer array to `vec`; *argv points into `vec` and stays valid until
 * these buffers are reset. `line` receives the command line as GNU parallel shows it (joblog,
 * --dry-run) when `want_line`; otherwise it is used only when the line must be run by a
 * shell. Returns 0 or CONCUR_ENOMEM. */
int tpl_build(const struct tpl *t, const struct jobview *j, struct buf *strs, struct buf *vec,
              char ***argv, struct buf *line, bool want_line);
/* Only the command line (for --dry-run, the joblog). */
int tpl_line(const struct tpl *t, const struct jobview *j, struct buf *line);
/* A --tagstring: placeholders replaced by the plain values. */
void tpl_plain(const struct tpl *t, const struct jobview *j, struct buf *out);
/* --plus's {##} and {0#}: whether the template needs the number of jobs, which
 * tpl_set_total() then gives it. */
bool tpl_needs_total(const struct tpl *t);
void tpl_set_total(struct tpl *t, size_t total);
/* Whether the command is exec'd without a shell (for tests and messages). */
bool tpl_is_direct(const struct tpl *t);
/* Whether a template holds a replacement string (one made by tpl_compile_plain). */
bool tpl_has_placeholder(const struct tpl *t);

/* Splits a line into words if it is "simple" (plain words and quoted strings, no shell
 * syntax): appends the words, NUL-terminated, to `strs` and returns their count; returns
 * -1 when the line needs a shell. */
int split_simple(const char *s, size_t n, struct buf *strs);

/* ------------------------------------------------------------------ perl.c */

/* {= perl expression =}: one perl process per run runs them all (started by the first
 * perl_expr()). perl_expr() compiles an expression (n bytes of source; the same source
 * gives the same id): its id, or -1 after a message (no perl, a syntax error). */
int perl_expr(const char *src, size_t n);
/* The value of expression id for job *j with $_ = its argument pos (0-based; -1: none),
 * computed once per job and argument: *val stays valid until the next call. *unquote: the
 * expression called uq(). 0, or -1 after a message. */
int perl_value(int id, const struct jobview *j, long pos, size_t total, const char **val,
               size_t *len, bool *unquote);
/* A descriptor that becomes readable when concur is to stop (its signalfd): a wait for perl
 * then ends, quietly, as a failure. */
void perl_set_intr_fd(int fd);
/* Whether something went wrong with perl (a message was printed): the run must stop. */
bool perl_failed(void);
/* Whether an expression called skip() for job *j. */
bool perl_skipped(const struct jobview *j);
/* $Global::total_completed: the jobs done so far (also those --resume skips). */
void perl_set_completed(size_t n);
/* Ends the perl process (closes its pipes, reaps it; after a signal, kills it first). */
void perl_end(bool interrupted);

/* ------------------------------------------------------------------ json (util.c) */

/* Appends bytes as the inside of a JSON string: valid UTF-8 is kept, control characters
 * and quotes are escaped, and each byte of an invalid sequence becomes \u00XX. */
void json_string(struct buf *b, const void *data, size_t n);

/* ------------------------------------------------------------------ joblog.c */

struct joblog;

/* Opens --joblog FILE: truncated, or appended to with --resume / --resume-failed after
 * reading which jobs are done; +FILE: appended to, no header; -: standard output, through
 * stdout_w. With `readonly` (--dry-run) the file is only read. Returns 0
 * or a negative code after printing a message. */
int joblog_open(struct joblog **out, const char *path, bool resume, bool resume_failed,
                bool readonly, struct writer *stdout_w);
/* --retry-failed: the command lines of the joblog at path, by Seq: (*items)[k] is job k+1's
 * (newlines restored; "" for a Seq it lacks), in *store (free both). 0 with *n = 0 when
 * there is no such file or it lists no job; or a negative code. */
int joblog_commands(const char *path, char ***items, size_t *n, char **store);
/* --retry-failed: a job whose command line is empty (a Seq the joblog lacks) counts as done. */
void joblog_retry(struct joblog *jl);
/* Whether job seq (with this command line) is done according to the joblog read at open. */
bool joblog_done(const struct joblog *jl, size_t seq, const char *line, size_t len);
/* Whether joblog_done needs the command line (only --resume-failed compares it). */
bool joblog_needs_line(const struct joblog *jl);
/* The line of a finished job, built ahead (so that its output's write and the line's write
 * follow each other as closely as they can), then appended with joblog_commit(). 0, or
 * CONCUR_ENOMEM / -errno. */
int joblog_prepare(struct joblog *jl, size_t seq, const char *host, double start, double runtime,
                   size_t sent, size_t received, int exitval, int sig, const char *cmd,
                   size_t cmd_len);
int joblog_commit(struct joblog *jl);
void joblog_close(struct joblog *jl);

/* ------------------------------------------------------------------ results.c */

/* A finished job, as results.c and output.c (--json) see it. */
struct jobdone {
    size_t seq;
    const struct field *args;
    size_t nargs;
    const char *cmd;
    size_t cmd_len;
    int exitval;  /* as the joblog shows it: the exit status, 0 when killed, -1 for a timeout */
    int exitcode; /* for --json: the exit status, -1 when killed, 127/126 when not started */
    int sig;
    bool timeout;
    double start, runtime;
    const void *out, *err;
    size_t out_len, err_len;
    bool out_mapped, err_mapped; /* a spilled output mapped from its file (see output.c) */
    const char *host;            /* --mpi: the host of the rank that ran it (NULL: this one) */
};

struct results;

/* --results PATH: a .json file, a .csv/.tsv file (-.json, -.csv, -.tsv: standard output,
 * through stdout_w), or a directory. 0 or negative. */
int results_open(struct results **out, const char *path, struct writer *stdout_w,
                 const struct cli_opts *o);
int results_write(struct results *r, const struct jobdone *d); /* 0 or -errno */
/* --header: a results directory names its levels by the columns' names, not numbers. */
void results_set_names(struct results *r, const struct field *names, size_t n);
int results_close(struct results *r); /* 0 or -errno */
/* The JSON object of --json and --results FILE.json, with a trailing newline. */
void json_job(struct buf *b, const struct jobdone *d);

/* ------------------------------------------------------------------ output.c */

/* Where job output goes: stdout and stderr through writers, with the progress line (if
 * any) taken away while job output is written to a terminal. */
struct output {
    struct writer out, err;
    struct progress *prog;
    bool ctag; /* --ctag: each tagged line ends the tag's colour */
};

void output_init(struct output *o, struct progress *prog);
/* Grouped: a job's whole stdout, then its whole stderr; each line prefixed with `tag` and a
 * TAB when tag is not NULL. A buffer that is a mapping of a spilled output (d->out_mapped,
 * d->err_mapped) has its pages dropped as they are written, so that a large output does not
 * stay in memory. */
void output_group(struct output *o, const struct jobdone *d, const char *tag, size_t tag_len);
/* --line-buffer: writes the complete lines at the start of *pending (all of it when
 * `final`) to `stream` (CONCUR_STDOUT or CONCUR_STDERR), keeping a last partial line. */
void output_lines(struct output *o, int stream, struct buf *pending, const char *tag,
                  size_t tag_len, bool final);
/* -u: bytes as they come. */
void output_raw(struct output *o, int stream, const void *data, size_t n);
/* Ends a burst of writes: flushes both writers and redraws the progress line. Returns 0,
 * or -errno of the first failed write (stdout closed, disk full). */
int output_flush(struct output *o);
/* The first write error: 0, or -errno; *name and *fd tell which stream. */
int output_error(const struct output *o, const char **name, int *fd);
void output_free(struct output *o);

/* ------------------------------------------------------------------ progress.c */

struct progress;

/* Creates the status line for --bar / --eta / --progress (flags as given). total is the
 * number of jobs, or 0 when unknown. */
int progress_create(struct progress **out, bool bar, bool eta, bool progress, size_t total,
                    int jobs); /* jobs: run at once (--eta's header) */
void progress_started(struct progress *p);
void progress_done(struct progress *p, bool failed);
void progress_skipped(struct progress *p);
/* Around writes of job output to a terminal: take the live line away, then put it back. */
void progress_clear(struct progress *p);
void progress_redraw(struct progress *p);
void progress_finish(struct progress *p); /* the final state, then a newline */
void progress_free(struct progress *p);

#endif
