/*
 * run_state.h - the runner's internal header: its records and the seams between its three
 * files.
 *
 *   runner.c        the loop: pulls commands from the source into free slots, waits on the
 *                   sys/os.h loop (the jobs' fds, the stop wake-up, timers), applies stops,
 *                   timeouts and the termination sequence, builds and delivers records;
 *   runner_spawn.c  commands: argv/envp, the spawn (sys/os.h) with capture pipes and an
 *                   input socket, output capture (memory, then an unlinked file), input
 *                   writing, reaping, a command's part of its record;
 *   runner_fn.c     function tasks: their input layout, the pool task that unpacks and calls
 *                   them, the completion wake-up, timeouts, a function's part of its record.
 *
 * Loop tags: a job's fds and its timer are tagged slot << TAG_BITS | kind; the runner's own
 * (the caller's stop fd, the function-completion eventfd, its timers) use the EV_* tags at
 * the top of the range, below CONCUR__LOOP_WAKE (which is how concur_runner_stop wakes it).
 */
#ifndef CONCUR_FORMS_RUN_STATE_H
#define CONCUR_FORMS_RUN_STATE_H

#include "core/concur_impl.h"
#include "sys/os.h"
#include "sys/wire.h"

enum { TAG_PID = 0, TAG_OUT = 1, TAG_ERR = 2, TAG_IN = 3, TAG_TIMER = 4, TAG_BITS = 3 };
#define EV_STOP_FD (UINT64_MAX - 1) /* the caller's stop fd */
#define EV_FN_DONE (UINT64_MAX - 2) /* a function task ended */
#define EV_START (UINT64_MAX - 3)   /* the start delay is over */
#define EV_FN_POLL (UINT64_MAX - 4) /* time to look at unwatched function futures */
#define EV_SOURCE (UINT64_MAX - 5)  /* the source's fd is readable (CONCUR_RUN_SOURCE_WAIT) */

static inline uint64_t job_tag(size_t slot, int kind)
{
    return ((uint64_t)slot << TAG_BITS) | (uint64_t)kind;
}

enum { READ_CHUNK = 65536, DEFAULT_CAP = 16u << 20 };
/* How long output may still arrive once a command's process has ended: what its exit left
 * in the pipes is read at once, and a process that outlives it while holding the pipes (a
 * daemon started by the job, in a session of its own) holds the job no longer than this. */
#define OUTPUT_GRACE_NS 250000000u
/* How often the loop looks at function futures it could not register a callback on. */
#define FN_POLL_NS 10000000u
/* Capture buffers of finished jobs are kept for the next ones (a run of many jobs with
 * large output would otherwise map, fault in and unmap fresh memory for every job). */
enum { POOL_BUFS = 16, POOL_MIN = 64u << 10, POOL_MAX = 4u << 20 };

struct capture {
    unsigned char *buf; /* heap, or the mapping once spilled and finished */
    size_t len, cap;
    int spill_fd; /* -1 until the cap is passed */
    bool mapped;  /* buf is a mapping of spill_fd's file */
    bool truncated;
};

struct job {
    size_t index;
    size_t slot; /* in r->slots while it runs */
    concur_cmd cmd;
    unsigned attempts;
    pid_t pid;
    int pidfd, out_fd, err_fd, in_fd;
    size_t in_off;
    bool exited, timed_out;
    bool stopped;        /* signalled by a stop of the run, not by its own timeout */
    concur__ended ended; /* how the child ended, once exited */
    int kill_stage;      /* 0: none; k in 1..nseq: step k sent; nseq + 1: SIGKILL sent */
    uint64_t t_ready, t_start, deadline; /* deadline 0: none */
    concur__timer timer; /* the deadline, then the next step of the termination sequence */
    double wall_start;
    struct capture out, err;
    concur_result res; /* filled at the end */
    char *errmsg;
    struct job *next;   /* retry queue */
    concur_run_fn fn;   /* non-NULL: a function task */
    concur_future *fut; /* a function task's future (one reference) */
    bool expired;       /* a function task's deadline was handled */
};

/* The completion eventfd of function tasks, shared with the completion callbacks: each
 * registered callback holds a reference, so the last one out closes it. */
struct fn_note {
    _Atomic unsigned refs;
    int efd;
};

struct concur_runner {
    concur_runner_opts o;
    concur__loop loop; /* its wake-up is the stop request's */
    concur__timer start_timer, poll_timer;
    concur_term_step *seq; /* the termination sequence, nseq >= 1 steps */
    size_t nseq;
    /* Where output is read into (READ_CHUNK bytes, made at the first read): not on the
     * stack, which inside a coroutine is small. */
    unsigned char *rbuf;
    struct job **slots; /* running jobs; NULL entries are free */
    size_t nslots, running;
    struct job *retry_head, *retry_tail;
    int stop_level;
    _Atomic int stop_req; /* set by concur_runner_stop (also from handlers), applied in the loop */
    bool stop_fd_armed;   /* the caller's stop_fd is in the loop */
    uint64_t next_start_ok;
    uint64_t run_start; /* monotonic: queue waits count from here */
    double wall_start, wall_end;
    concur_result *kept;
    size_t nkept, capkept;
    struct job **keptjobs; /* owners of kept results' buffers */
    char *tmpdir; /* opts.tmpdir, $TMPDIR or /tmp; owned */
    unsigned char *pool[POOL_BUFS];
    size_t pool_cap[POOL_BUFS];
    size_t npool;
    /* function tasks */
    concur_pool *fn_pool; /* the caller's (o.pool) or the run's own (fn_pool_owned) */
    bool fn_pool_owned;
    bool fn_unwatched;     /* a callback could not be registered: poll the futures */
    struct fn_note *note;  /* created at the first function task, kept until destroy */
    size_t fn_limit;       /* function tasks at once (the pool's size) */
    size_t fn_running;     /* function jobs in slots */
    concur_future **stale; /* futures of thread tasks that timed out and still run */
    size_t nstale, capstale;
    struct job *held; /* a function job pulled while no function slot was free */
};

/* ---- small helpers of every runner file ---- */
static inline double concur__wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void concur__runner_delay_next(concur_runner *r)
{
    r->next_start_ok = r->o.start_delay > 0 ? now_ns() + (uint64_t)(r->o.start_delay * 1e9) : 0;
    if (r->next_start_ok)
        concur__timer_arm(&r->loop, &r->start_timer, r->next_start_ok, EV_START);
}

static inline void concur__runner_arm_deadline(concur_runner *r, struct job *j)
{
    double timeout = j->cmd.timeout > 0 ? j->cmd.timeout : (j->cmd.timeout < 0 ? 0 : r->o.timeout);
    j->deadline = timeout > 0 ? j->t_start + (uint64_t)(timeout * 1e9) : 0;
    if (j->deadline)
        concur__timer_arm(&r->loop, &j->timer, j->deadline, job_tag(j->slot, TAG_TIMER));
}

/* ---- runner_spawn.c ---- */
void concur__cap_init(struct capture *c);
/* Gives a capture's memory back (to the runner's buffer pool when @r and it fits). */
void concur__cap_free(concur_runner *r, struct capture *c);
/* Starts command job @j in its slot (j->slot). A failed start is not an error of the run: the job
 * is then marked exited with j->res.error set. Returns a negative code only for failures of the
 * runner itself (out of memory, the loop). */
int concur__job_spawn(concur_runner *r, struct job *j);
/* A loop event of kind @tag for command job @j. Returns a failure of the runner (e.g. a
 * full disk while spilling). */
int concur__job_event(concur_runner *r, struct job *j, int tag);
/* The output grace of an exited command is over: reads what its pipes hold now, then
 * closes them (the job is then over). Returns as concur__job_event. */
int concur__job_close_output(concur_runner *r, struct job *j);
/* A command's part of its record (exit status, captures). */
void concur__job_cmd_result(struct job *j);

/* ---- runner_fn.c ---- */
/* Hands function job @j to the pool. Whatever fails here fails only this job. */
void concur__fn_start(concur_runner *r, struct job *j);
/* Function job @j reached its deadline. */
void concur__fn_expire(concur_runner *r, struct job *j);
/* Lets go of stale futures whose thread returned at last. */
void concur__fn_prune_stale(concur_runner *r);
/* A function's part of its record. */
void concur__fn_result(struct job *j);
void concur__fn_note_release(struct fn_note *n);

#endif
