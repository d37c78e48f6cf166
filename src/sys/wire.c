/*
 * wire.c - the codec of sys/wire.h: RESULT frames out, answers (RESULT or CRASH) in, the
 * crash handler of the processes the library owns, and the description of a process's fate.
 *
 * The receiver is a state machine over the parts of one answer: the frame header, then for
 * a RESULT its head, result bytes, message length and message, for a CRASH the signal and
 * the text until EOF. Each part has a known size (but the text), so concur__rx_room never
 * asks for more than the current part: whatever follows the answer on the stream stays
 * unread. A part is checked as soon as it is whole; anything inconsistent makes the answer
 * BAD at once, before a length from it is trusted for an allocation.
 *
 * The crash handler's state is process-wide (signal dispositions are): the report fd, the
 * process it belongs to (a process the task forks must not report in its parent's name),
 * the id to report and the mute flag. The handler only reads them, with lock-free atomics.
 */
#include "sys/wire.h"

#include <errno.h>
#include <execinfo.h>
#include <limits.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sys/os.h"

/* ---------------------------------------------------------------- sending a RESULT */

struct iovec *concur__result_frame(concur__result_tx *tx, uint64_t id, int rc,
                                   const concur_task *t)
{
    tx->rh = (concur__result_head){.code = rc == 0 ? 0 : (rc < 0 ? rc : CONCUR_ETASK)};
    const void *out = NULL;
    if (tx->rh.code == 0 && t->out.len) {
        out = buf_data(&t->out);
        tx->rh.out_len = t->out.len;
    }
    const char *msg = tx->rh.code && t->msg ? t->msg : NULL;
    const char *bt = tx->rh.code && t->bt ? t->bt : NULL;
    if (bt && !msg)
        msg = "";
    size_t mlen = msg ? strlen(msg) : 0, blen = bt ? strlen(bt) : 0;
    tx->msg_len = mlen + (bt ? 1 + blen : 0);
    tx->h = (concur__frame){.type = CONCUR__FR_RESULT,
                            .id = id,
                            .len = sizeof(tx->rh) + tx->rh.out_len + sizeof(tx->msg_len) +
                                   tx->msg_len};
    tx->iov[0] = (struct iovec){&tx->h, sizeof(tx->h)};
    tx->iov[1] = (struct iovec){&tx->rh, sizeof(tx->rh)};
    tx->iov[2] = (struct iovec){(void *)out, (size_t)tx->rh.out_len};
    tx->iov[3] = (struct iovec){&tx->msg_len, sizeof(tx->msg_len)};
    tx->iov[4] = (struct iovec){(void *)msg, mlen};
    tx->iov[5] = (struct iovec){(void *)"", bt ? 1 : 0}; /* the NUL between the two */
    tx->iov[6] = (struct iovec){(void *)bt, blen};
    return tx->iov;
}

/* ---------------------------------------------------------------- receiving an answer */

enum { RX_HEAD, RX_RHEAD, RX_OUT, RX_MLEN, RX_MSG, RX_DONE, RX_SIG, RX_TEXT, RX_BAD };

/* The fixed bytes of a RESULT payload besides its out and msg bytes. */
#define RESULT_FIXED (sizeof(concur__result_head) + sizeof(uint64_t))

void concur__rx_init(concur__rx *rx, uint64_t id, bool want_out)
{
    memset(rx, 0, sizeof(*rx));
    rx->id = id;
    rx->want_out = want_out;
    rx->state = RX_HEAD;
}

void concur__rx_free(concur__rx *rx)
{
    concur__buf_free(&rx->out);
    free(rx->text);
    rx->text = NULL;
    rx->text_len = 0;
}

static void guard(const concur__rx *rx, bool enter)
{
    if (rx->guard)
        rx->guard(rx->guard_arg, enter);
}

/* A text buffer of @cap bytes and its NUL (NULL: the text is dropped). */
static void text_alloc(concur__rx *rx, size_t cap)
{
    guard(rx, true);
    rx->text = malloc(cap + 1);
    guard(rx, false);
    if (rx->text)
        rx->text[0] = '\0';
}

static unsigned on_head(concur__rx *rx)
{
    const concur__frame *h = &rx->h;
    if (h->type == CONCUR__FR_CRASH && (h->flags & CONCUR__FRF_TO_EOF)) {
        text_alloc(rx, CONCUR__BT_CAP);
        return RX_SIG;
    }
    if (h->type != CONCUR__FR_RESULT || h->id != rx->id || h->len < RESULT_FIXED)
        return RX_BAD;
    return RX_RHEAD;
}

static unsigned on_result_head(concur__rx *rx)
{
    const concur__result_head *rh = &rx->rh;
    if (rh->code > 0 || rh->out_len > rx->h.len - RESULT_FIXED || (rh->out_len && rh->code) ||
        (rh->out_len && !rx->want_out) || rh->out_len > SIZE_MAX / 2)
        return RX_BAD;
    if (!rh->out_len)
        return RX_MLEN;
    guard(rx, true);
    rx->nomem = !concur__buf_alloc(&rx->out, (size_t)rh->out_len);
    guard(rx, false);
    return RX_OUT;
}

static unsigned on_msg_len(concur__rx *rx)
{
    if (rx->msg_len != rx->h.len - RESULT_FIXED - rx->rh.out_len)
        return RX_BAD;
    if (!rx->msg_len)
        return RX_DONE;
    text_alloc(rx, rx->msg_len < CONCUR__MSG_KEEP ? (size_t)rx->msg_len : CONCUR__MSG_KEEP);
    return RX_MSG;
}

/* Bytes of a part of @size still due (0 when it is whole). */
static uint64_t due(const concur__rx *rx, uint64_t size)
{
    return size - rx->got;
}

static size_t clamp(uint64_t n, size_t cap)
{
    return n < cap ? (size_t)n : cap;
}

/* Room in the text buffer of capacity @cap for @left more bytes, or 0 (drop them). */
static size_t text_room(concur__rx *rx, size_t cap, uint64_t left, void **dst)
{
    if (!rx->text || rx->got >= cap)
        return 0;
    *dst = rx->text + rx->got;
    return clamp(left, cap - (size_t)rx->got);
}

size_t concur__rx_room(concur__rx *rx, void *scratch, size_t cap, void **dst)
{
    size_t k = 0;
    uint64_t left = UINT64_MAX;
    *dst = scratch;
    switch (rx->state) {
    case RX_HEAD:
        *dst = (char *)&rx->h + rx->got;
        return (size_t)due(rx, sizeof(rx->h));
    case RX_RHEAD:
        *dst = (char *)&rx->rh + rx->got;
        return (size_t)due(rx, sizeof(rx->rh));
    case RX_MLEN:
        *dst = (char *)&rx->msg_len + rx->got;
        return (size_t)due(rx, sizeof(rx->msg_len));
    case RX_SIG:
        *dst = (char *)&rx->sig_part + rx->got;
        return (size_t)due(rx, sizeof(rx->sig_part));
    case RX_OUT:
        left = due(rx, rx->rh.out_len);
        if (!rx->nomem) {
            *dst = (char *)buf_wdata(&rx->out) + rx->got;
            return clamp(left, SSIZE_MAX);
        }
        break;
    case RX_MSG:
        left = due(rx, rx->msg_len);
        k = text_room(rx, CONCUR__MSG_KEEP, left, dst);
        break;
    case RX_TEXT:
        k = text_room(rx, CONCUR__BT_CAP, left, dst);
        break;
    default: /* DONE, BAD: nothing more belongs to this answer */
        return 0;
    }
    if (k)
        return k;
    *dst = scratch;
    return clamp(left, cap);
}

/* The text grew to @got bytes (of which up to @cap are kept): keep it NUL-terminated. */
static void text_grew(concur__rx *rx, size_t cap)
{
    if (!rx->text)
        return;
    rx->text_len = clamp(rx->got, cap);
    rx->text[rx->text_len] = '\0';
}

void concur__rx_feed(concur__rx *rx, size_t k)
{
    rx->got += k;
    unsigned next = rx->state;
    switch (rx->state) {
    case RX_HEAD:
        if (rx->got == sizeof(rx->h))
            next = on_head(rx);
        break;
    case RX_RHEAD:
        if (rx->got == sizeof(rx->rh))
            next = on_result_head(rx);
        break;
    case RX_OUT:
        if (rx->got == rx->rh.out_len)
            next = RX_MLEN;
        break;
    case RX_MLEN:
        if (rx->got == sizeof(rx->msg_len))
            next = on_msg_len(rx);
        break;
    case RX_MSG:
        text_grew(rx, CONCUR__MSG_KEEP);
        if (rx->got == rx->msg_len)
            next = RX_DONE;
        break;
    case RX_SIG:
        if (rx->got == sizeof(rx->sig_part)) {
            rx->sig = rx->sig_part;
            next = RX_TEXT;
        }
        break;
    case RX_TEXT:
        text_grew(rx, CONCUR__BT_CAP);
        break;
    default:
        break;
    }
    if (next != rx->state) {
        rx->state = next;
        rx->got = 0;
    }
}

enum concur__rx_end concur__rx_end(const concur__rx *rx)
{
    switch (rx->state) {
    case RX_DONE:
        return CONCUR__RX_RESULT;
    case RX_SIG:
    case RX_TEXT:
        return CONCUR__RX_CRASH;
    case RX_BAD:
        return CONCUR__RX_BAD;
    default:
        return CONCUR__RX_NONE;
    }
}

/* ---------------------------------------------------------------- crash reports */

enum { ALTSTACK = 64 << 10 }; /* the crash handler's stack */

static _Atomic int g_crash_fd = -1;
static _Atomic pid_t g_crash_pid;     /* the process the handler reports for */
static _Atomic uint64_t g_crash_id;   /* the running task's id (0: none) */
static atomic_bool g_crash_muted;     /* a record is being written: no CRASH frame */

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_INT_LOCK_FREE == 2,
               "the crash handler reads these atomics: they must be lock-free");

void concur__crash_report(int fd, const void *head, size_t len)
{
    if (concur__send_all(fd, head, len) != 0)
        return; /* the reader is gone: nothing to tell */
    void *frames[CONCUR__BT_FRAMES];
    int n = backtrace(frames, CONCUR__BT_FRAMES);
    backtrace_symbols_fd(frames, n, fd);
}

_Noreturn void concur__die_of_signal(int sig)
{
    /* SA_RESETHAND put the default action back: unblock the signal and die of it, so that
     * the wait status names it. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    (void)sigprocmask(SIG_UNBLOCK, &set, NULL);
    (void)raise(sig);
    _exit(128 + sig); /* not reached */
}

static void on_fatal(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    if (getpid() == atomic_load_explicit(&g_crash_pid, memory_order_relaxed) &&
        !atomic_exchange_explicit(&g_crash_muted, true, memory_order_relaxed)) {
        struct {
            concur__frame h;
            int32_t sig;
        } head = {{.type = CONCUR__FR_CRASH,
                   .flags = CONCUR__FRF_TO_EOF,
                   .id = atomic_load_explicit(&g_crash_id, memory_order_relaxed)},
                  sig};
        concur__crash_report(atomic_load_explicit(&g_crash_fd, memory_order_relaxed), &head,
                             sizeof(head.h) + sizeof(head.sig));
    }
    concur__die_of_signal(sig);
}

static pthread_once_t g_prime_once = PTHREAD_ONCE_INIT;

static void prime(void)
{
    void *frames[1];
    (void)backtrace(frames, 1);
}

void concur__crash_prime(void)
{
    CHECK_PTHREAD(pthread_once(&g_prime_once, prime));
}

/* This thread's alternate stack: its own if it has one big enough, else a fresh one. */
static int altstack(void)
{
    stack_t old;
    if (sigaltstack(NULL, &old) != 0)
        return -errno;
    if (!(old.ss_flags & SS_DISABLE) && old.ss_size >= ALTSTACK)
        return 0;
    stack_t ss = {.ss_size = ALTSTACK, .ss_flags = 0};
    ss.ss_sp = mmap(NULL, ALTSTACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ss.ss_sp == MAP_FAILED)
        return -errno;
    if (sigaltstack(&ss, NULL) != 0) {
        int e = -errno;
        (void)munmap(ss.ss_sp, ALTSTACK);
        return e;
    }
    return 0;
}

int concur__crash_setup(int fd, bool keep_handlers)
{
    atomic_store_explicit(&g_crash_fd, fd, memory_order_relaxed);
    atomic_store_explicit(&g_crash_pid, getpid(), memory_order_relaxed);
    atomic_store_explicit(&g_crash_id, 0, memory_order_relaxed);
    atomic_store_explicit(&g_crash_muted, false, memory_order_relaxed);
    prime(); /* a plain call, not the once: a fork may have copied it half-done */
    int rc = altstack(); /* without one, the handlers still run on the thread's stack */
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGXCPU};
    struct sigaction ours = {.sa_sigaction = on_fatal,
                             .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND};
    sigemptyset(&ours.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction cur;
        if (keep_handlers &&
            (sigaction(sigs[i], NULL, &cur) != 0 ||
             ((cur.sa_flags & SA_SIGINFO) ? cur.sa_sigaction != on_fatal
                                          : cur.sa_handler != SIG_DFL)))
            continue; /* the application's own handler (or ignored) stays */
        if (sigaction(sigs[i], &ours, NULL) != 0)
            return -errno;
    }
    return rc;
}

void concur__crash_set_id(uint64_t id)
{
    atomic_store_explicit(&g_crash_id, id, memory_order_relaxed);
}

void concur__crash_mute(bool mute)
{
    atomic_store_explicit(&g_crash_muted, mute, memory_order_relaxed);
}

/* ---------------------------------------------------------------- fates */

concur__ended concur__ended_wstatus(int status, uint64_t cpu_us)
{
    concur__ended e = {.how = CONCUR__ENDED_UNKNOWN, .cpu_us = cpu_us};
    if (status != -1 && WIFSIGNALED(status))
        e = (concur__ended){CONCUR__ENDED_KILLED, WTERMSIG(status), cpu_us};
    else if (status != -1 && WIFEXITED(status))
        e = (concur__ended){CONCUR__ENDED_EXITED, WEXITSTATUS(status), cpu_us};
    return e;
}

concur__ended concur__ended_siginfo(const siginfo_t *si)
{
    concur__ended e = {.how = CONCUR__ENDED_UNKNOWN};
    if (si && si->si_code == CLD_EXITED)
        e = (concur__ended){CONCUR__ENDED_EXITED, si->si_status, 0};
    else if (si && (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED))
        e = (concur__ended){CONCUR__ENDED_KILLED, si->si_status, 0};
    return e;
}

void concur__fate_describe(concur__fate *fa, const concur__ended *e, const concur__fate_ctx *ctx)
{
    *fa = (concur__fate){.code = CONCUR_ECRASHED, .exit_status = -1};
    const char *who = ctx->who, *when = ctx->when ? ctx->when : "";
    if (e->how == CONCUR__ENDED_KILLED) {
        fa->signal = e->value;
        /* SIGXCPU at the soft limit; SIGKILL at the hard one (the task caught or ignored
         * SIGXCPU), told from other kills by the CPU time it used. */
        fa->limit = ctx->cpu_limit_s &&
                    (fa->signal == SIGXCPU ||
                     (fa->signal == SIGKILL && e->cpu_us >= ctx->cpu_limit_s * 1000000u));
        const char *d = sigdescr_np(fa->signal);
        if (fa->limit)
            snprintf(fa->text, sizeof(fa->text), "%s exceeded its CPU time limit of %llu s", who,
                     (unsigned long long)ctx->cpu_limit_s);
        else
            snprintf(fa->text, sizeof(fa->text), "%s died%s: killed by signal %d (%s)", who, when,
                     fa->signal, d ? d : "unknown signal");
    } else if (e->how == CONCUR__ENDED_EXITED) {
        fa->exit_status = e->value;
        snprintf(fa->text, sizeof(fa->text), "%s exited with status %d%s", who, e->value, when);
    } else {
        snprintf(fa->text, sizeof(fa->text), "%s ended%s (its exit status is unknown)", who,
                 when);
    }
    if (ctx->mem_limit && !fa->limit) {
        size_t n = strlen(fa->text);
        snprintf(fa->text + n, sizeof(fa->text) - n, " (memory limit of %llu bytes)",
                 (unsigned long long)ctx->mem_limit);
    }
}

bool concur__fate_fail(concur_future *f, const concur__fate *fa, const char *backtrace)
{
    return concur__future_fail_info(f, STATE_BIT(CONCUR_RUNNING), fa->code, fa->text, fa->signal,
                                    fa->exit_status, backtrace, false, fa->limit);
}

/* ---------------------------------------------------------------- outcome records */

static char *put(char *p, const void *src, size_t n)
{
    if (p && n)
        memcpy(p, src, n);
    return p ? p + n : NULL;
}

size_t concur__outcome_encode(concur_future *f, bool own_errors, void *dst)
{
    concur__outcome_head h = {.state = (int32_t)concur_future_state(f), .exit_status = -1};
    const void *out = NULL;
    size_t out_len = 0;
    concur_error_info info = {0};
    if (h.state == CONCUR_DONE) {
        (void)concur_future_result(f, &out, &out_len); /* DONE: cannot fail */
        h.out_len = out_len;
    } else if (h.state == CONCUR_FAILED) {
        (void)concur_future_error_info(f, &info); /* FAILED: cannot fail */
        h.code = info.code;
        h.signal = info.signal;
        h.exit_status = info.exit_status;
        bool made = info.code == CONCUR_ECRASHED || info.code == CONCUR_ETASKTIMEOUT ||
                    info.code == CONCUR_ECANCELED || info.code == CONCUR_EINITIALIZER ||
                    info.code == CONCUR_EBROKEN || info.code == CONCUR_ECLOSED ||
                    info.code == CONCUR_ENOTLOADED;
        h.flags = (info.remote || (own_errors && !made) ? CONCUR__OUT_REMOTE : 0) |
                  (info.limit ? CONCUR__OUT_LIMIT : 0);
        h.msg_len = info.message ? strlen(info.message) : 0;
        h.bt_len = info.backtrace ? strlen(info.backtrace) : 0;
    }
    char *p = put(dst, &h, sizeof(h));
    p = put(p, out, out_len);
    p = put(p, info.message, h.msg_len);
    (void)put(p, info.backtrace, h.bt_len);
    return sizeof(h) + out_len + h.msg_len + h.bt_len;
}

/* A copy of @n bytes at @p as a string, or NULL (none, or no memory). */
static char *text_dup(const char *p, uint64_t n)
{
    return n ? strndup(p, n) : NULL;
}

bool concur__outcome_apply(concur_future *f, const void *rec, size_t len, uint64_t t_end)
{
    const uint32_t running = STATE_BIT(CONCUR_RUNNING);
    concur__outcome_head h;
    if (len < sizeof(h))
        return concur__future_fail(f, running, CONCUR_EIO, "a malformed outcome record");
    memcpy(&h, rec, sizeof(h));
    const char *p = (const char *)rec + sizeof(h);
    size_t rest = len - sizeof(h);
    if (h.out_len > rest || h.msg_len > rest - h.out_len ||
        h.bt_len != rest - h.out_len - h.msg_len)
        return concur__future_fail(f, running, CONCUR_EIO, "a malformed outcome record");
    if (h.state == CONCUR_DONE) {
        concur_task t = {.f = f};
        if (concur__buf_set(&t.out, p, h.out_len) != 0)
            return concur__future_fail(f, running, CONCUR_ENOMEM, "no memory for the result");
        return concur__task_complete(&t, 0, t_end);
    }
    if (h.state == CONCUR_CANCELLED)
        return concur__future_fail(f, running, CONCUR_ECANCELED,
                                   "cancelled where it was sent, before it ran");
    if (h.state != CONCUR_FAILED || h.code >= 0)
        return concur__future_fail(f, running, CONCUR_EIO, "a malformed outcome record");
    char *msg = text_dup(p + h.out_len, h.msg_len);
    char *bt = text_dup(p + h.out_len + h.msg_len, h.bt_len);
    bool mine = concur__future_fail_info(f, running, h.code, msg, h.signal, h.exit_status, bt,
                                         h.flags & CONCUR__OUT_REMOTE, h.flags & CONCUR__OUT_LIMIT);
    free(msg);
    free(bt);
    return mine;
}
