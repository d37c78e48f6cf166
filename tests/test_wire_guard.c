/*
 * test_wire_guard.c - a process pool's channel to a worker survives tasks that write into it.
 *
 * A task runs in its worker process, where the socket to the pool is an open fd like any
 * other: a task may write frames into it, by mistake or on purpose. The pool checks every
 * frame against the task it expects (its id, type and length), and what a task wrote is read
 * before its answer, even when that answer comes through shared memory; a violation kills that
 * worker, fails only the task that ran there (or none, when the stream shows that an
 * earlier task broke it) and hands the innocent ones to the replacement; a worker that dies
 * in the middle of a frame is reported with its signal, as any crash.
 */
#include "testutil.h"

#include "sys/wire.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(wireguard, .timeout = TU_TIMEOUT, .fini = tu_fini);

enum { FORGE_OTHER = 1, FORGE_OWN, FORGE_CRASH, HALF_THEN_SEGV, PLAIN };

typedef struct {
    int kind;
    int value;
} job;

/* The worker's channel: its only socket. -1 when there is none or more than one. */
static int channel_fd(void)
{
    int found = -1;
    for (int fd = 3; fd < 1024; fd++) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) {
            if (found >= 0)
                return -1;
            found = fd;
        }
    }
    return found;
}

static bool write_all(int fd, const void *p, size_t len)
{
    const char *c = p;
    while (len) {
        ssize_t w = write(fd, c, len);
        if (w <= 0)
            return false;
        c += w;
        len -= (size_t)w;
    }
    return true;
}

/* Writes a well-formed RESULT frame with @id carrying the int @v. */
static bool forge_result(int fd, uint64_t id, int v)
{
    struct {
        concur__frame h;
        concur__result_head rh;
        int v;
        uint64_t msg_len;
    } __attribute__((packed)) fr = {
        .h = {.type = CONCUR__FR_RESULT, .id = id, .len = sizeof(concur__result_head) + 4 + 8},
        .rh = {.code = 0, .out_len = 4},
        .v = v,
    };
    return write_all(fd, &fr, sizeof fr);
}

static int task_hostile(concur_task *t, const void *in, size_t len)
{
    job j;
    if (len != sizeof j)
        return concur_task_fail(t, CONCUR_EINVAL, "len %zu", len);
    memcpy(&j, in, sizeof j);
    int fd = j.kind == PLAIN ? 0 : channel_fd();
    if (fd < 0)
        return concur_task_fail(t, CONCUR_EINVAL, "no single socket in the worker");
    uint64_t id = concur_task_id(t);
    switch (j.kind) {
    case FORGE_OTHER: /* an answer for the task submitted after this one */
        if (!forge_result(fd, id + 1, 7777))
            return CONCUR_EIO;
        break;
    case FORGE_OWN: /* an answer of its own before the real one */
        if (!forge_result(fd, id, 1111))
            return CONCUR_EIO;
        break;
    case FORGE_CRASH: { /* a crash report, and the process goes on living */
        concur__frame h = {.type = CONCUR__FR_CRASH, .flags = CONCUR__FRF_TO_EOF, .id = id};
        int32_t sig = SIGSEGV;
        if (!write_all(fd, &h, sizeof h) || !write_all(fd, &sig, sizeof sig) ||
            !write_all(fd, "not a backtrace\n", 16))
            return CONCUR_EIO;
        break;
    }
    case HALF_THEN_SEGV: { /* the first bytes of a frame, then a real crash */
        concur__frame h = {.type = CONCUR__FR_RESULT, .id = id, .len = 1u << 20};
        if (!write_all(fd, &h, 10))
            return CONCUR_EIO;
        volatile uintptr_t addr = 16; /* a real fault (not NULL: UBSan would step in) */
        *(volatile int *)addr = 1;
        break;
    }
    default:
        break;
    }
    int v = j.value * 3;
    return concur_task_return(t, &v, sizeof v);
}

static concur_pool *one_worker_pool(void)
{
    concur_pool_opts o = {.engine = CONCUR_ENGINE_PROCESSES, .max_workers = 1, .name = "wg"};
    return tu_pool_opts(&o);
}

static concur_future *submit_job(concur_pool *p, int kind, int value)
{
    job j = {kind, value};
    return tu_submit(p, task_hostile, &j, sizeof j);
}

static void assert_violation(concur_future *f)
{
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    concur_error_info ei;
    cr_assert_eq(concur_future_error_info(f, &ei), 0);
    cr_assert_eq(ei.code, CONCUR_ECRASHED, "code %d (%s)", ei.code, ei.message);
    cr_assert(strstr(ei.message, "wrote into its worker's channel"), "message: %s", ei.message);
    cr_assert(strstr(ei.message, "the worker was killed"), "message: %s", ei.message);
}

/* Submits the hostile job, then innocent ones behind it; they must all get their own
 * results, and the pool must go on working with a fresh worker. */
static void run_case(int kind, void (*check_hostile)(concur_future *))
{
    concur_pool *p = one_worker_pool();
    concur_future *warm = submit_job(p, PLAIN, 1); /* the worker exists and is measured */
    tu_assert_int_result(warm, 3, "warm-up");
    concur_future *h = submit_job(p, kind, 10);
    concur_future *after[4];
    for (int i = 0; i < 4; i++)
        after[i] = submit_job(p, PLAIN, 100 + i);
    check_hostile(h);
    for (int i = 0; i < 4; i++)
        tu_assert_int_result(after[i], (100 + i) * 3, "a task behind the hostile one");
    concur_future *later = submit_job(p, PLAIN, 7);
    tu_assert_int_result(later, 21, "a task after the replacement");
    concur_future_release(warm);
    concur_future_release(h);
    for (int i = 0; i < 4; i++)
        concur_future_release(after[i]);
    concur_future_release(later);
    concur_pool_destroy(p);
}

Test(wireguard, an_answer_forged_for_another_task_fails_only_the_forger)
{
    run_case(FORGE_OTHER, assert_violation);
}

static void own_answer(concur_future *f)
{
    /* What a task sends about itself is its own business: the first answer with its id. */
    tu_assert_int_result(f, 1111, "the task that answered for itself");
}

Test(wireguard, an_extra_answer_of_a_task_fails_no_innocent_task)
{
    run_case(FORGE_OWN, own_answer);
}

Test(wireguard, a_crash_report_from_a_living_worker_does_not_hang_the_pool)
{
    run_case(FORGE_CRASH, assert_violation);
}

static void crashed_with_its_signal(concur_future *f)
{
    cr_assert_eq(concur_future_wait(f, TU_SAFETY), 0);
    concur_error_info ei;
    cr_assert_eq(concur_future_error_info(f, &ei), 0);
    cr_assert_eq(ei.code, CONCUR_ECRASHED, "code %d (%s)", ei.code, ei.message);
    cr_assert_eq(ei.signal, SIGSEGV, "signal %d (%s)", ei.signal, ei.message);
    char want[128];
    snprintf(want, sizeof want, "worker died: killed by signal %d (%s)", SIGSEGV,
             sigdescr_np(SIGSEGV));
    cr_assert_str_eq(ei.message, want);
}

Test(wireguard, a_worker_that_crashes_in_the_middle_of_a_frame_is_reported_as_the_crash)
{
    run_case(HALF_THEN_SEGV, crashed_with_its_signal);
}

/* The same in the middle of a stream of short tasks that the worker runs back to back,
 * answering through shared memory: what the forger wrote is read before its answer, whichever
 * way that answer comes, so the forger fails and no task around it does. */
static void run_in_stream(int kind, void (*check_hostile)(concur_future *))
{
    concur_pool *p = one_worker_pool();
    concur_future *warm = submit_job(p, PLAIN, 1); /* short tasks: handed over in batches */
    tu_assert_int_result(warm, 3, "warm-up");
    concur_future_release(warm);
    enum { N = 200, BAD = 100 };
    concur_future *fs[N];
    for (int i = 0; i < N; i++)
        fs[i] = submit_job(p, i == BAD ? kind : PLAIN, i);
    for (int i = 0; i < N; i++) {
        if (i == BAD)
            check_hostile(fs[i]);
        else
            tu_assert_int_result(fs[i], i * 3, "a task around the hostile one");
        concur_future_release(fs[i]);
    }
    concur_pool_destroy(p);
}

Test(wireguard, an_answer_forged_in_a_stream_fails_only_the_forger)
{
    run_in_stream(FORGE_OTHER, assert_violation);
}

Test(wireguard, an_extra_answer_in_a_stream_fails_no_innocent_task)
{
    run_in_stream(FORGE_OWN, own_answer);
}
