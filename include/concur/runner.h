/*
 * concur/runner.h - running many commands (or C functions) concurrently, with a result
 * record per task.
 *
 * A runner executes commands (programs, no shell) with a limit on how many run at once and
 * a per-command timeout, and reports one result record per command: exit status or signal,
 * stdout and stderr as exact bytes, start time, run time and queue wait.
 *
 * A task may be a C function instead of a program (pyconcurrent's callable tasks): a
 * concur_run_fn called with the task's key and arguments, which returns a status and sets an
 * answer (bytes). Function tasks run on a pool (include/concur/pool.h) of worker threads or
 * worker processes, chosen with one option (concur_runner_opts.engine), and produce the
 * same result records as commands; see concur_run_fn and docs/runner.md.
 *
 * Engine: the calling thread runs one epoll loop over each child's pidfd, its output pipes
 * and the timers. Children are started with posix_spawn (no shell) into a process group of
 * their own, get only fds 0, 1 and 2 (stdin is /dev/null unless the command supplies input),
 * and inherit the environment unless the command replaces or extends it. No signal handler
 * is installed and SIGCHLD is not used; every child is reaped. A timeout sends the term
 * signal (SIGTERM by default) to the whole process group, then SIGKILL after a grace period.
 * A command is over when its child has exited and its output pipes are at end of file, or
 * 250 ms after the exit at the latest: pipes still held by a process that outlived the child
 * (a daemon in a session of its own) are then read once more and closed.
 *
 * Two ways to use it:
 *  - concur_run_batch(): an array of commands in, an array of results out, in input order;
 *  - concur_runner_run(): commands pulled from a source as slots free up, each result handed
 *    to a callback in completion order (and, with CONCUR_RUN_KEEP_RESULTS, kept). Memory then
 *    does not grow with the number of commands.
 *
 * Captured output: each stream of each command keeps at most output_cap bytes in memory;
 * past it, the bytes go to an unlinked temporary file (O_TMPFILE in $TMPDIR or /tmp), so
 * nothing is lost and nothing is left behind (where O_TMPFILE is not supported, a file made
 * with mkstemp and unlinked at once). When that file cannot be written (the directory is
 * full or missing), the command's record gets the error and an error_message naming the
 * directory, success is false, and the run fails with that error (stopping as
 * CONCUR_STOP_TERM). CONCUR_RUN_TRUNCATE keeps the first output_cap bytes and drops the rest
 * instead (the result says it was truncated).
 */
#ifndef CONCUR_RUNNER_H
#define CONCUR_RUNNER_H

#include <stdio.h>
#include <sys/types.h>

#include "common.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A function task (pyconcurrent's `fn(key, args)`). It runs in a worker of the run's pool: a
 * thread of this process (CONCUR_ENGINE_THREADS), a worker process (CONCUR_ENGINE_PROCESSES)
 * or a coroutine (CONCUR_ENGINE_COROUTINES), never in the runner's thread, and several run at once, so it must be thread-safe.
 *
 * @p key is the task's key (may be NULL); @p argv holds @p argc arguments, NULL-terminated:
 * the task's own argv when it has one, else the runner's prefix followed by the task's arg
 * (when not NULL). Both are a fresh copy per task, valid during the call only, and the
 * prefix itself is never touched. On the process engine they are copies in the worker.
 *
 * It sets its answer with concur_task_return() or concur_task_result_alloc() (exact bytes,
 * any size; none: the record's answer is NULL) and returns:
 *  - 0: success;
 *  - a positive value: an unsuccessful run (success false, timeout false, no error): the
 *    value is the record's returncode and exit_code, and the answer is kept;
 *  - a negative code, e.g. `return concur_task_fail(t, CONCUR_ETASK, "bad input %s", a)`:
 *    an error (pyconcurrent's exception): the record's error and error_message are set, its
 *    answer is dropped. The message of concur_task_fail() counts only with this return.
 *
 * A long function should poll concur_task_should_stop(t): it becomes true on the thread
 * engine when the task's timeout expires or the run is stopped (the record is delivered at
 * the deadline, but the thread stays busy, and its slot taken, until the function returns).
 * On the process engine the worker process is killed instead. On the coroutine engine the
 * function runs as a coroutine: it should wait with concur/coro.h, whose calls then return
 * CONCUR_ECANCELED, and the record is delivered at the deadline as a timeout.
 *
 * On the process engine the function is called through its pointer in a fork of the
 * program: it must be code loaded when the run's pool was created (the program, or a library
 * loaded by then; any other pointer fails its record with CONCUR_ENOTLOADED); it sees the
 * memory of the program as of that moment, and its side effects stay in the worker. A crash
 * (signal) or exit() in it fails only its own record.
 */
typedef int (*concur_run_fn)(concur_task *t, const char *key, int argc, const char *const *argv);

/** One command. Every pointer is borrowed: it must stay valid until the command's result
 *  was delivered (for concur_run_batch: until it returns). */
typedef struct concur_cmd {
    /** The whole argv, NULL-terminated. When NULL, the command is the runner's prefix
     *  followed by @ref arg (pyconcurrent's (key, arg) form). */
    const char *const *argv;
    const char *arg;        /**< appended to the prefix when argv is NULL (may be NULL) */
    const char *key;        /**< the caller's name for the task, echoed in the result */
    const void *input;      /**< bytes written to the child's stdin, then closed; NULL:
                                 stdin is /dev/null (unless CONCUR_RUN_INHERIT_STDIN) */
    size_t input_len;       /**< bytes at input */
    const char *const *env; /**< NULL-terminated "K=V" list replacing the environment, or NULL */
    const char *const *env_add; /**< "K=V" entries added to (overriding) the environment */
    const char *cwd;        /**< working directory, or NULL */
    double timeout;         /**< seconds; 0: the runner's timeout; negative: none */
    void *user;             /**< echoed in the result */
    /** Makes this task a function task: @ref fn is called with argv (when not NULL) or the
     *  runner's prefix plus @ref arg as its arguments. input, env, env_add and cwd do not
     *  apply to functions. NULL: a command, unless argv is NULL and the runner has a
     *  function (concur_runner_opts.fn). */
    concur_run_fn fn;
} concur_cmd;

/**
 * The record of one command or function task.
 *
 * For a function task (field function): success = it returned 0; returncode and exit_code =
 * its non-negative return value, else -1 (an error, a timeout, or it never ran), or for a
 * worker process that died: -signal / the exit status (error CONCUR_ECRASHED, with signal or
 * exit_code set); error / error_message = its own negative code and message, CONCUR_ECRASHED,
 * CONCUR_ECANCELED (a stop cancelled it), or why it could not be handed to its pool (spawned
 * false); timeout = it ran past its timeout (error 0, as for commands); pid is 0; out/err are
 * empty; answer is its answer. time_start is when it was handed to its pool (where a worker
 * takes it at once, see concur_runner_opts.pool for a caller's pool), time_wait the wait for
 * a slot before that, time_run from there to its end (to the deadline for a thread that
 * timed out and still runs).
 */
typedef struct concur_result {
    size_t index;          /**< position of the command in input order (0-based) */
    const char *key;       /**< as given (borrowed) */
    const char *arg;       /**< as given (borrowed) */
    void *user;            /**< concur_cmd.user, as given */
    bool success;          /**< exited with status 0 */
    bool timeout;          /**< killed because it ran past its timeout */
    bool stopped;          /**< signalled because the run was stopped (concur_runner_stop,
                                stop_fd, or an error of the runner) */
    bool spawned;          /**< the program was started */
    int exit_code;         /**< exit status when it exited, else -1 */
    int signal;            /**< the signal that ended it, else 0 */
    int returncode;        /**< exit status, or -signal, or -1 when not started */
    int error;             /**< 0, or a negative code: why it could not start (e.g. -ENOENT) */
    const char *error_message; /**< "execvp: No such file or directory: 'nosuch'"-like text */
    pid_t pid;             /**< the child's pid (0 if not started) */
    double time_start;     /**< wall-clock time of the start, seconds since the epoch */
    double time_run;       /**< seconds from start to exit (or to the failed start) */
    double time_wait;      /**< seconds from the start of the run (for a retry: from its
                                re-queue) to the command's start: the wait for a slot */
    const unsigned char *out; /**< captured stdout (exact bytes, not NUL-terminated) */
    size_t out_len;           /**< bytes at out */
    const unsigned char *err; /**< captured stderr */
    size_t err_len;           /**< bytes at err */
    bool out_truncated;       /**< with CONCUR_RUN_TRUNCATE, stdout bytes were dropped */
    bool err_truncated;       /**< with CONCUR_RUN_TRUNCATE, stderr bytes were dropped */
    unsigned attempts;     /**< how many times it was run (retries) */
    bool function;         /**< a function task (concur_run_fn), not a command */
    /** A function's answer: exact bytes (not NUL-terminated), NULL when it set none (or an
     *  empty one), and after an error or a timeout (a late answer is discarded). */
    const unsigned char *answer;
    size_t answer_len; /**< bytes at answer */
    /** The stream went past output_cap and out (err) is a read-only private mapping of its
     *  unlinked file. A caller that reads a large output once may drop the pages it has
     *  read with madvise(MADV_DONTNEED), so its memory stays bounded: they would be read
     *  back from the file if touched again. */
    bool out_mapped;
    bool err_mapped; /**< as out_mapped, for err */
} concur_result;

/** Flags for concur_runner_opts.flags. */
enum {
    CONCUR_RUN_KEEP_RESULTS = 1 << 0, /**< concur_runner_run keeps every result */
    CONCUR_RUN_NO_CAPTURE = 1 << 1,   /**< children write to the parent's stdout/stderr */
    CONCUR_RUN_TRUNCATE = 1 << 2,     /**< cap captured output instead of spilling to a file */
    CONCUR_RUN_INHERIT_STDIN = 1 << 3, /**< children without input inherit stdin */
    CONCUR_RUN_MERGE_STDERR = 1 << 4, /**< stderr goes to the stdout capture */
    /** The source may answer CONCUR_EAGAIN (no command yet): see concur_source_fn and
     *  concur_runner_opts.source_fd. */
    CONCUR_RUN_SOURCE_WAIT = 1 << 5,
};

/** Which stream an output callback receives. */
enum { CONCUR_STDOUT = 1, CONCUR_STDERR = 2 };

typedef struct concur_runner concur_runner;

/** Called in the runner's thread when a command has started (pid > 0) or failed to (pid 0),
 *  and when a function task was handed to its pool, or failed to be (pid 0 for both: its
 *  result tells). */
typedef void (*concur_start_fn)(concur_runner *r, size_t index, const concur_cmd *cmd,
                                pid_t pid, void *arg);
/**
 * Called in the runner's thread with output as it arrives, in order per stream. When set,
 * output is handed to it instead of being captured (result out/err stay empty).
 */
typedef void (*concur_output_fn)(concur_runner *r, size_t index, int stream, const void *data,
                                 size_t len, void *arg);
/**
 * Called in the runner's thread when a command (or function task) is over, in completion
 * order; for a thread whose function task timed out, at the deadline. The result and
 * its buffers are valid during the call (and until the runner is destroyed with
 * CONCUR_RUN_KEEP_RESULTS or concur_run_batch). It may call concur_runner_stop(). Return 0,
 * or non-zero to have the command run again (only while res->attempts <= retries; otherwise
 * the return value is ignored).
 */
typedef int (*concur_done_fn)(concur_runner *r, const concur_result *res, void *arg);

/** One step of a termination sequence: send @p signal, then wait @p wait seconds for the
 *  command to end before the next step. */
typedef struct concur_term_step {
    int signal;  /**< sent to the command's process group */
    double wait; /**< seconds to wait for it to end before the next step */
} concur_term_step;

/** Runner options. A zeroed struct gives the defaults. */
typedef struct concur_runner_opts {
    /** Tasks at once, commands and functions together (a function thread still running
     *  after its timeout counts until it returns); 0: no limit for commands, and at most
     *  concur_cpu_count() function tasks at once (the size of the run's pool); negative:
     *  CONCUR_EINVAL. */
    int max_workers;
    double timeout;            /**< seconds per task; 0 (or less): none */
    double kill_grace;         /**< seconds from the term signal to SIGKILL; 0: 2 s */
    int term_signal;           /**< signal sent first on timeout or stop; 0: SIGTERM */
    /** A whole termination sequence (GNU parallel's --termseq), copied; when set it replaces
     *  term_signal and kill_grace. Each step's signal goes to the command's process group;
     *  after the last step's wait, SIGKILL. */
    const concur_term_step *term_seq;
    size_t term_seq_len; /**< steps at term_seq */
    const char *const *prefix; /**< prefix argv for concur_cmd.arg tasks (NULL-terminated) */
    size_t output_cap;         /**< bytes kept in memory per stream; 0: 16 MiB */
    unsigned retries;          /**< extra runs a command may get (see concur_done_fn) */
    double start_delay;        /**< at least this many seconds between two starts */
    unsigned flags;            /**< CONCUR_RUN_* */
    concur_start_fn on_start;  /**< may be NULL */
    concur_output_fn on_output; /**< may be NULL */
    concur_done_fn on_done;    /**< may be NULL */
    void *cb_arg;              /**< passed to the callbacks */
    /** A descriptor the loop watches (it never reads it): once readable, the runner stops
     *  as concur_runner_stop(r, CONCUR_STOP_TERM). For example a signalfd for SIGINT and
     *  SIGTERM, so Ctrl-C stops a run without any signal handler. 0 or negative: none. */
    int stop_fd;
    /** The function of (key, arg) tasks (pyconcurrent's callable first element of the
     *  prefix): every concur_cmd without argv and fn calls it, with @ref prefix as its
     *  leading arguments (the prefix then holds arguments only, no program). NULL: such
     *  tasks are commands. */
    concur_run_fn fn;
    /** Where function tasks run: CONCUR_ENGINE_THREADS (default),
     *  CONCUR_ENGINE_PROCESSES or CONCUR_ENGINE_COROUTINES. The runner creates a pool of
     *  that engine at the first function task of a run, with max_workers workers (no limit:
     *  concur_cpu_count(); coroutines: one loop thread, max_workers still bounds how many
     *  tasks run at once), and destroys it at the end of the run. Commands are not
     *  affected. */
    concur_engine engine;
    /** A pool of the caller's for function tasks instead (borrowed; engine is then unused).
     *  At most its max_workers function tasks are handed to it at once; a timeout counts
     *  from the hand-over, so tasks queued behind other work of the pool may time out
     *  before they start. It must stay open during runs and not be destroyed during one. */
    concur_pool *pool;
    /** With CONCUR_RUN_SOURCE_WAIT: the descriptor the source reads its commands from (0
     *  for standard input). When the source answers CONCUR_EAGAIN, the loop watches it (it
     *  never reads it) and calls the source again once it is readable or hung up; meanwhile
     *  running commands are fed, drained and reaped. It must be a descriptor epoll accepts
     *  (a pipe, a socket, a terminal; not a regular file or /dev/null: the run then fails
     *  with -EPERM), open during runs. Unused without the flag. */
    int source_fd;
    /** The directory where output past output_cap spills (an unlinked file per stream);
     *  copied. NULL or "": $TMPDIR, else /tmp. */
    const char *tmpdir;
} concur_runner_opts;

/** Creates a runner. Returns 0, CONCUR_EINVAL (a bad option, an engine that does not exist)
 *  or CONCUR_ENOMEM. The options are copied (the pool pointer is borrowed). */
CONCUR_API int concur_runner_create(concur_runner **out, const concur_runner_opts *opts);

/** Frees the runner and the results it kept. Accepts NULL. Not during a run. */
CONCUR_API void concur_runner_destroy(concur_runner *r);

/**
 * A source of commands: fills *cmd with command number @p index (0, 1, 2...) and returns 1,
 * returns 0 when there are no more, or a negative code to end the run with that error (the
 * commands already started still finish). Called in the runner's thread when a slot is free.
 * *cmd starts zeroed.
 *
 * With CONCUR_RUN_SOURCE_WAIT, CONCUR_EAGAIN is not an error: there is no command yet (the
 * source would have to block, e.g. on a pipe with no data). The runner then calls it again,
 * for the same index, once concur_runner_opts.source_fd is readable, and keeps running the
 * commands started meanwhile. A source that blocks instead holds up the whole loop: no input
 * is fed, no output read, no timeout applied while it waits.
 */
typedef int (*concur_source_fn)(void *arg, size_t index, concur_cmd *cmd);

/**
 * Runs commands from @p src until it ends and every started command is over, calling the
 * callbacks. Blocks; the loop runs in this thread. Returns 0; the source's error;
 * CONCUR_ECANCELED when stopped (concur_runner_stop or stop_fd, or, in a run made by a
 * task of a pool, that task should stop: concur_task_should_stop()); CONCUR_ENOMEM or another
 * system error (the run is then stopped as by CONCUR_STOP_TERM: no child is left behind).
 * A command that cannot start (missing program, bad cwd) is not an error of the run: its
 * result says why; so is a function task that fails in any way, or cannot be handed to its
 * pool. The run ends when every function task has returned too, including threads whose
 * task timed out (their record was delivered at the deadline; concur_task_should_stop()
 * tells them to end), and the pool the run created is then destroyed. A runner runs one run
 * at a time; it can run again afterwards.
 */
CONCUR_API int concur_runner_run(concur_runner *r, concur_source_fn src, void *arg);

/** How concur_runner_stop() stops. */
enum {
    CONCUR_STOP_START = 1, /**< start nothing more; running commands finish */
    CONCUR_STOP_TERM = 2,  /**< also send the term signal (then SIGKILL) to running ones;
                                running function tasks are cancelled (concur_future_cancel_kill:
                                a worker process is killed, a thread sees should_stop) */
};

/**
 * Asks the run to stop. Safe from any thread and from a signal handler (it writes to an
 * eventfd). Returns 0, or CONCUR_EINVAL.
 */
CONCUR_API int concur_runner_stop(concur_runner *r, int how);

/**
 * Number of results kept (CONCUR_RUN_KEEP_RESULTS or concur_run_batch): one past the highest
 * index of a command that got a record. After a stopped run (CONCUR_ECANCELED) or a failed
 * source, the commands that were never taken have no record: the count may be below the
 * number of commands given, and concur_runner_result() is NULL for any index without one.
 */
CONCUR_API size_t concur_runner_count(const concur_runner *r);

/** The kept result of command @p index (input order), or NULL (no such index, or the command
 *  never started because the run stopped first). Valid until destroy. */
CONCUR_API const concur_result *concur_runner_result(const concur_runner *r, size_t index);

/** Wall-clock start and end of the last run (seconds since the epoch); either may be NULL. */
CONCUR_API void concur_runner_times(const concur_runner *r, double *start, double *end);

/**
 * Runs @p n commands (each started as a slot frees up) and keeps their results, in input
 * order, in a new runner returned in *out (results read with concur_runner_result(), freed
 * with concur_runner_destroy()). @p opts may be NULL. Returns what concur_runner_run()
 * returns; *out is set whenever the runner was created, even on error.
 */
CONCUR_API int concur_run_batch(const concur_cmd *cmds, size_t n, const concur_runner_opts *opts,
                                concur_runner **out);

/**
 * Prints the kept results exactly as pyconcurrent's print_results does: a line of 10 '*',
 * "Test start time : YYYY-mm-dd HH:MM:SS" (local time), " Total run time : X.X", a blank
 * line, then per result a line of 40 '=' and the key, time_start (epoch seconds, X.X),
 * time_run (X.X), success, timeout, exception, arg and returncode lines, each label
 * left-aligned in 20 columns then ": ", with stdout, stderr and answer lines only when not
 * empty. Output and answer bytes are written as they are (a newline is added when the last
 * byte is not one). An error's message is not printed (pyconcurrent has no such line): read
 * it from the result. Returns 0 or a negative errno from writing.
 */
CONCUR_API int concur_print_results(FILE *f, const concur_runner *r);

/** The outcome of concur_run_prog(). Buffers are malloc'd, NUL-terminated for convenience
 *  (the length excludes the NUL), and freed with concur_prog_output_free(). */
typedef struct concur_prog_output {
    int returncode;  /**< exit status, -signal, or 1 when it could not start */
    unsigned char *out; /**< the program's stdout */
    size_t out_len;     /**< bytes at out */
    unsigned char *err; /**< on a failed start, the error text */
    size_t err_len;     /**< bytes at err */
    bool timeout;       /**< killed because it ran past its timeout */
} concur_prog_output;

/**
 * Runs one program (pyconcurrent's run_prog): writes all of @p input to its stdin and closes
 * it, drains stdout and stderr completely (even on a non-zero exit), blocks without spinning.
 * @p env replaces the environment when not NULL. @p timeout as in concur_cmd (0 or negative:
 * none). An empty argv gives returncode 0 and empty outputs. Called by a task of a pool, the
 * program is stopped (term signal, then SIGKILL) once the task should stop
 * (concur_task_should_stop()), and returncode says how it ended. Returns 0 (the program's
 * status is in out->returncode) or CONCUR_EINVAL / CONCUR_ENOMEM.
 */
CONCUR_API int concur_run_prog(const char *const *argv, const void *input, size_t input_len,
                               const char *const *env, double timeout, concur_prog_output *out);

/** Frees the buffers of @p o (not @p o itself). Accepts NULL. */
CONCUR_API void concur_prog_output_free(concur_prog_output *o);

#ifdef __cplusplus
}
#endif
#endif
