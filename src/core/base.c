/*
 * base.c - the small pieces everything else stands on: error texts, the panic for broken
 * invariants, the futex wrappers, deadlines, byte buffers, version and CPU count.
 */
#include "core/concur_impl.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

_Noreturn void concur__panic(const char *file, int line, const char *what, int err)
{
    fprintf(stderr, "concur: fatal: %s:%d: %s failed: %s\n", file, line, what, strerror(err));
    abort();
}

const char *concur_version(void)
{
    return CONCUR_VERSION_STRING;
}

int concur_version_number(void)
{
    return CONCUR_VERSION_NUMBER;
}

int concur_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > INT_MAX ? INT_MAX : (int)n);
}

const char *concur_strerror(int code)
{
    switch (code) {
#define CONCUR_ERR_MSG_(name, value, msg)                                                          \
    case value:                                                                                    \
        return msg;
        CONCUR_ERRNO_MAP(CONCUR_ERR_MSG_)
#undef CONCUR_ERR_MSG_
    case 0:
        return "success";
    default:
        break;
    }
    if (code < 0 && code > CONCUR_ERRNO_MAX) {
        static const char unknown[] = "Unknown error";
        /* strerror() of glibc returns static strings for known codes, "Unknown error N"
         * through a thread-local buffer otherwise; both are fine to hand out. */
        const char *s = strerror(-code);
        return s ? s : unknown;
    }
    return "unknown error";
}

const char *concur_err_name(int code)
{
    switch (code) {
#define CONCUR_ERR_NAME_(name, value, msg)                                                         \
    case value:                                                                                    \
        return #name;
        CONCUR_ERRNO_MAP(CONCUR_ERR_NAME_)
#undef CONCUR_ERR_NAME_
    case 0:
        return "OK";
    default:
        return "UNKNOWN";
    }
}

uint64_t concur__deadline_ns(double timeout)
{
    if (timeout < 0 || timeout != timeout)
        return UINT64_MAX;
    uint64_t now = now_ns();
    if (timeout > 1e9) /* about 31 years: forever */
        return UINT64_MAX;
    return now + (uint64_t)(timeout * 1e9);
}

int concur__futex_wait(_Atomic uint32_t *addr, uint32_t val, uint64_t deadline_ns)
{
    struct timespec ts, *tsp = NULL;
    if (deadline_ns != UINT64_MAX) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000u);
        ts.tv_nsec = (long)(deadline_ns % 1000000000u);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. */
    long rc = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, val, tsp,
                      NULL, FUTEX_BITSET_MATCH_ANY);
    if (rc == -1 && errno == ETIMEDOUT)
        return -ETIMEDOUT;
    return 0; /* woken, EAGAIN (value changed) or EINTR: the caller re-checks */
}

_Thread_local bool concur__woke_thread;
_Atomic int concur__cpu_share;

void concur__futex_wake(_Atomic uint32_t *addr, int n)
{
    if (syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, n, NULL, NULL, 0) > 0)
        concur__woke_thread = true;
}

double concur_now(void)
{
    return (double)now_ns() / 1e9;
}

double concur_deadline(double timeout)
{
    return timeout < 0 ? -1.0 : concur_now() + timeout;
}

double concur_remaining(double deadline)
{
    if (deadline < 0)
        return CONCUR_FOREVER;
    double left = deadline - concur_now();
    return left > 0 ? left : 0;
}

void *concur__buf_alloc(concur__buf *b, size_t len)
{
    buf_free(b);
    if (len > CONCUR_INLINE_BYTES) {
        void *p = malloc(len);
        if (!p)
            return NULL;
        b->u.ptr = p;
    }
    b->len = len;
    return buf_wdata(b);
}

int concur__buf_set(concur__buf *b, const void *data, size_t len)
{
    if (!data && len)
        return CONCUR_EINVAL;
    void *p = concur__buf_alloc(b, len);
    if (!p && len)
        return CONCUR_ENOMEM;
    if (len)
        memcpy(p, data, len);
    return 0;
}
