/*
 * sys/wire.h - the one codec for what crosses a process boundary: frames, the result
 * record, the crash record and its handler, and the description of how a process ended.
 *
 * Frames (native byte order: both ends are the same program on the same machine). Every
 * message on a stream (a socket or a pipe) is a 24-byte header {u32 type, u32 flags,
 * u64 id, u64 len} and len payload bytes:
 *   SETUP, TASK, INIT, FINAL  requests of the process pool (payloads its own);
 *   RESULT  {i32 code, u32 0, u64 out_len} out_len bytes, u64 msg_len, msg_len bytes: the
 *           answer of a task (or hook) with the frame's id; code 0 with its result, or the
 *           task's negative code with its message (out_len 0);
 *   CRASH   flag TO_EOF (len 0, meaningless): {i32 signal} then backtrace text until EOF,
 *           written by the crash handler of a process that is dying of that signal.
 *
 * Sending a RESULT: concur__result_frame lays it out as an iovec. Receiving an answer
 * (RESULT or CRASH): concur__rx, a receiver that is fed bytes and says where the next ones
 * go (concur__rx_room), so a caller reads straight into the result buffer whether it blocks
 * (a proxy) or reads what is there when a loop says so (the fork-call supervisor); it never
 * asks for a byte past its frame, so frames that follow on the stream stay unread.
 *
 * Crash handling (in a process the library owns: a worker, a fork-call child):
 * concur__crash_setup installs SA_RESETHAND handlers on an alternate stack for SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL, SIGABRT and SIGXCPU that write a CRASH frame and re-raise, so the
 * wait status names the real signal.
 *
 * Fates: concur__fate_describe turns how a process ended (a wait status or waitid's
 * siginfo, its CPU time, its limits) into the error of the task it was running:
 * CONCUR_ECRASHED, "worker died: killed by signal 11 (Segmentation fault)", "child process
 * exited with status 3 before reporting", the signal, the exit status.
 */
#ifndef CONCUR_SYS_WIRE_H
#define CONCUR_SYS_WIRE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/concur_impl.h"

/* ---------------------------------------------------------------- frames */

enum concur__frame_type {
    CONCUR__FR_SETUP = 1,
    CONCUR__FR_TASK,
    CONCUR__FR_INIT,
    CONCUR__FR_FINAL,
    CONCUR__FR_RESULT,
    CONCUR__FR_CRASH,
    CONCUR__FR_PAD, /* answer ring only (engines/proc_chan.h): len bytes to skip, to its end */
};
enum {
    CONCUR__FRF_TO_EOF = 1,    /* the payload runs until EOF (len is meaningless) */
    CONCUR__FRF_BACKTRACE = 2, /* SETUP: a failing task's concur_task_fail records a backtrace */
};

typedef struct concur__frame {
    uint32_t type, flags;
    uint64_t id; /* the task id (TASK, its RESULT, CRASH); 0 otherwise */
    uint64_t len;
} concur__frame;

typedef struct concur__result_head {
    int32_t code; /* 0 or the negative code the task / hook returned */
    uint32_t reserved;
    uint64_t out_len;
} concur__result_head;

_Static_assert(sizeof(concur__frame) == 24 && sizeof(concur__result_head) == 16, "wire layout");

enum {
    CONCUR__MSG_CAP = 4096,    /* message bytes kept from a RESULT (tasks send <= 1 KiB) */
    CONCUR__BT_CAP = 64 << 10, /* backtrace bytes kept from a CRASH */
    CONCUR__BT_FRAMES = 64,    /* frames in a crash report's backtrace */
    CONCUR__RESULT_IOV = 7,    /* iovec entries of a RESULT frame */
};
/* Message bytes a receiver keeps: the message, and the backtrace that may follow it after a
 * NUL (concur__result_frame). */
#define CONCUR__MSG_KEEP ((size_t)CONCUR__MSG_CAP + CONCUR__BT_CAP)

/* ---------------------------------------------------------------- sending a RESULT */

typedef struct concur__result_tx {
    concur__frame h;
    concur__result_head rh;
    uint64_t msg_len;
    struct iovec iov[CONCUR__RESULT_IOV];
} concur__result_tx;

/*
 * Lays out the RESULT frame with @id of a task (or hook) that returned @rc with context @t
 * in tx->iov (CONCUR__RESULT_IOV entries, pointing into @tx and @t: both must stay as they
 * are until it is sent). A positive @rc is sent as CONCUR_ETASK; the result bytes go only
 * with code 0, the message (t->msg) only with a negative code, and with it the task's
 * backtrace (t->bt) when it has one: the message bytes are then "message NUL backtrace" (a
 * reader that takes the message as a string sees the message). Returns tx->iov.
 */
struct iovec *concur__result_frame(concur__result_tx *tx, uint64_t id, int rc,
                                   const concur_task *t);

/* ---------------------------------------------------------------- receiving an answer */

/* How far a receiver got (concur__rx_end). */
enum concur__rx_end {
    CONCUR__RX_NONE,   /* no whole answer: more bytes are due, or the stream ended early */
    CONCUR__RX_RESULT, /* a whole RESULT: rh.code; out (code 0); text = its message */
    CONCUR__RX_CRASH,  /* a CRASH frame: sig (0 if cut short); text = the backtrace so far */
    CONCUR__RX_BAD,    /* a malformed frame: the stream cannot be trusted any more */
};

typedef struct concur__rx {
    /* Set by concur__rx_init; guard may be set after it. */
    uint64_t id;   /* the id a RESULT must carry */
    bool want_out; /* a RESULT may carry result bytes (false: a hook's answer) */
    /* Optional: called with true before and false after each allocation the receiver
     * makes (a caller whose process forks from other threads takes its lock there). */
    void (*guard)(void *arg, bool enter);
    void *guard_arg;
    /* What arrived. The caller may move out and text away (set text to NULL). */
    concur__frame h;
    concur__result_head rh;
    int32_t sig;     /* the signal a CRASH frame named (0: cut short) */
    bool nomem;      /* no memory for the result: its bytes were dropped */
    concur__buf out; /* the result (RESULT, code 0) */
    char *text;      /* message (RESULT) or backtrace (CRASH), NUL-terminated; NULL: none
                        (or no memory for it) */
    size_t text_len;
    /* Private. */
    unsigned state;
    uint64_t got, msg_len;
    int32_t sig_part;
} concur__rx;

void concur__rx_init(concur__rx *rx, uint64_t id, bool want_out);
/* Frees what the receiver still holds (out, text). */
void concur__rx_free(concur__rx *rx);

/*
 * Where the next bytes go: returns how many to read at most and sets *dst; @scratch (@cap
 * bytes) receives bytes that are dropped (past a cap, or with no memory). Returns 0 once
 * the answer is over (a whole RESULT, or a malformed frame): nothing more belongs to it.
 * A CRASH text never ends before EOF.
 */
size_t concur__rx_room(concur__rx *rx, void *scratch, size_t cap, void **dst);
/* @k bytes were read where concur__rx_room said. */
void concur__rx_feed(concur__rx *rx, size_t k);
enum concur__rx_end concur__rx_end(const concur__rx *rx);

/* ---------------------------------------------------------------- crash reports */

/*
 * Installs the crash handler in this process (a worker or a fork-call child), reporting to
 * @fd (a socket or a pipe, blocking): for SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT and
 * SIGXCPU, on an alternate stack (this thread's own, if it has one of at least 64 KiB), with
 * SA_RESETHAND. The handler writes a CRASH frame (the id of concur__crash_set_id, then the
 * backtrace) unless muted or in a process the task forked, then dies of the signal.
 * @keep_handlers: only where the disposition is the default (or ours, in a nested child),
 * so that handlers of the application stay. Returns 0 or -errno: no alternate stack (the
 * handlers are installed anyway and run on the thread's stack), or a failed sigaction
 * (the handlers installed before it stay).
 */
int concur__crash_setup(int fd, bool keep_handlers);
/* The id a CRASH frame carries from now on (the running task's; 0: none). */
void concur__crash_set_id(uint64_t id);
/* A record is being written on the report fd (true) or no longer (false): a crash while
 * muted sends nothing, since its frame would cut into the other. */
void concur__crash_mute(bool mute);
/* backtrace() loads libgcc on first use, which allocates: a process calls this once
 * outside any handler (before it forks the children that report), so that the handlers
 * never load it. Thread-safe; cheap after the first call. */
void concur__crash_prime(void);

/* The handler's two halves, async-signal-safe once primed. concur__crash_report writes @len
 * bytes of @head to @fd (no SIGPIPE on a socket), then the calling thread's backtrace as
 * text, up to CONCUR__BT_FRAMES frames. concur__die_of_signal ends the process by @sig
 * itself (the handler was installed with SA_RESETHAND), so that its wait status names the
 * signal. */
void concur__crash_report(int fd, const void *head, size_t len);
_Noreturn void concur__die_of_signal(int sig);

/* ---------------------------------------------------------------- outcome records */

/*
 * How a task ended in another process, as one record (MPI ranks send it back whole): the
 * head, then out_len result bytes, msg_len message bytes and bt_len backtrace bytes (no
 * NULs). state is CONCUR_DONE (the result), CONCUR_FAILED (code, message and the rest of
 * concur_error_info) or CONCUR_CANCELLED (cancelled there before it ran).
 */
typedef struct concur__outcome_head {
    int32_t state, code, signal, exit_status;
    uint32_t flags; /* CONCUR__OUT_REMOTE, CONCUR__OUT_LIMIT */
    uint32_t reserved;
    uint64_t out_len, msg_len, bt_len;
} concur__outcome_head;
enum { CONCUR__OUT_REMOTE = 1, CONCUR__OUT_LIMIT = 2 };
_Static_assert(sizeof(concur__outcome_head) == 48, "wire layout");

/* The record of the terminal future @f, written at @dst when it is not NULL; returns its
 * size either way (call once without @dst to size the buffer). @own_errors: the task ran
 * in the sender's own process (a thread), so an error that concur did not make (a crash, a
 * timeout, a cancel) is the task's own and is marked remote for the receiver. */
size_t concur__outcome_encode(concur_future *f, bool own_errors, void *dst);

/* Completes the RUNNING future @f with the record @rec of @len bytes (the outcome of its
 * task elsewhere), at @t_end. A record that is malformed fails @f with CONCUR_EIO. Returns
 * false when @f was completed by someone else first (the outcome is dropped). */
bool concur__outcome_apply(concur_future *f, const void *rec, size_t len, uint64_t t_end);

/* ---------------------------------------------------------------- fates */

/* How a process ended, from a wait status or from waitid's siginfo. */
enum { CONCUR__ENDED_UNKNOWN, CONCUR__ENDED_EXITED, CONCUR__ENDED_KILLED };
typedef struct concur__ended {
    int how;
    int value;       /* the exit status (EXITED), the signal (KILLED) */
    uint64_t cpu_us; /* user + system CPU time, when known (0 otherwise) */
} concur__ended;

/* @status: a wait status, -1 when unknown (the reaper is gone). */
concur__ended concur__ended_wstatus(int status, uint64_t cpu_us);
/* @si: what waitid filled in; NULL when the process could not be reaped here (someone else
 * did: SIGCHLD ignored, a waitpid(-1) of the application). */
concur__ended concur__ended_siginfo(const siginfo_t *si);

/* Who ended, and the limits it ran under. */
typedef struct concur__fate_ctx {
    const char *who;      /* "worker", "child process" */
    const char *when;     /* "" or " before reporting": what it had not done yet */
    uint64_t mem_limit;   /* bytes; 0: none */
    uint64_t cpu_limit_s; /* seconds; 0: none */
} concur__fate_ctx;

/* The error of the task a process was running when it ended. */
typedef struct concur__fate {
    int code;        /* CONCUR_ECRASHED */
    int signal;      /* 0: none */
    int exit_status; /* -1: none */
    bool limit;      /* it died of its CPU limit */
    char text[224];
} concur__fate;

/*
 * "<who> died<when>: killed by signal N (description)", "<who> exited with status N<when>",
 * "<who> ended<when> (its exit status is unknown)", or for a process killed at its CPU limit
 * (SIGXCPU at the soft limit, or SIGKILL at the hard one, told from other kills by its CPU
 * time) "<who> exceeded its CPU time limit of N s"; under a memory limit, other than a CPU
 * limit's death, " (memory limit of N bytes)" is appended, since a failed allocation is the
 * likely cause, though nothing tells it for sure.
 */
void concur__fate_describe(concur__fate *fa, const concur__ended *e, const concur__fate_ctx *ctx);

/* Fails the RUNNING future @f with @fa and @backtrace (NULL: none; copied). True when this
 * call completed it. */
bool concur__fate_fail(concur_future *f, const concur__fate *fa, const char *backtrace);

#endif
