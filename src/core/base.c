/*
 * base.c - the small pieces everything else stands on: error texts, the panic for broken
 * invariants, the futex wrappers, deadlines, byte buffers, version and CPU count.
 */
#include "core/concur_impl.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <malloc.h>
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

void concur__buf_free(concur__buf *b)
{
    if (b->len >= CONCUR__BIG_MIN)
        concur__big_free(b->u.ptr);
    else if (b->len > CONCUR_INLINE_BYTES)
        free(b->u.ptr);
    b->len = 0;
}

void *concur__buf_alloc(concur__buf *b, size_t len)
{
    concur__buf_free(b);
    if (len > CONCUR_INLINE_BYTES) {
        void *p = len >= CONCUR__BIG_MIN ? concur__big_alloc(len) : malloc(len);
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

/* ---------------------------------------------------------------- big buffers */

#if defined(__SANITIZE_ADDRESS__)
#define BIG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BIG_ASAN 1
#endif
#endif
#ifdef BIG_ASAN
#include <sanitizer/asan_interface.h>
#endif

/* Classes 2^16 (CONCUR__BIG_MIN) to 2^25 bytes, BIG_SLOTS blocks each: a block is kept in
 * the class of its usable size rounded down to a power of two, and is taken again for a
 * request of that class it is big enough for (a map's chunks all ask the same size). Blocks
 * are malloc()'ed at the size asked, never rounded up. */
enum { BIG_LOW = 16, BIG_HIGH = 25, BIG_SLOTS = 32 };
#define BIG_KEEP ((size_t)64 << 20)

static void *_Atomic g_big[BIG_HIGH - BIG_LOW + 1][BIG_SLOTS];
static _Atomic size_t g_big_bytes; /* the usable sizes of the cached blocks */
static _Atomic long g_big_holds;   /* the pools alive: blocks are kept while there is one */

static int log2_floor(size_t v)
{
    return (int)(sizeof(unsigned long long) * CHAR_BIT) - 1 - __builtin_clzll(v);
}

/* Drops a block taken out of the cache: it is no longer counted (nor poisoned). */
static void big_taken(void *p, size_t u)
{
    atomic_fetch_sub_explicit(&g_big_bytes, u, memory_order_relaxed);
#ifdef BIG_ASAN
    __asan_unpoison_memory_region(p, u);
#else
    (void)p;
#endif
}

/* Keeps @p (usable size @u, class @c) in a free slot of its class: false when the cache is
 * full (the caller frees it). */
static bool big_put(void *p, size_t u, int c)
{
    if (atomic_fetch_add_explicit(&g_big_bytes, u, memory_order_relaxed) + u > BIG_KEEP) {
        atomic_fetch_sub_explicit(&g_big_bytes, u, memory_order_relaxed);
        return false;
    }
#ifdef BIG_ASAN
    __asan_poison_memory_region(p, u); /* a use after free stays an error */
#endif
    for (int i = 0; i < BIG_SLOTS; i++) {
        void *none = NULL;
        if (atomic_compare_exchange_strong_explicit(&g_big[c - BIG_LOW][i], &none, p,
                                                    memory_order_seq_cst, memory_order_relaxed)) {
            /* The last pool may have ended meanwhile, its drain already past this slot:
             * then the block must not stay. */
            if (atomic_load_explicit(&g_big_holds, memory_order_seq_cst) == 0)
                concur__big_drain();
            return true;
        }
    }
    big_taken(p, u);
    return false;
}

void *concur__big_alloc(size_t len)
{
    int c = len ? log2_floor(len) : 0;
    if (c < BIG_LOW || c > BIG_HIGH)
        return malloc(len);
    void *_Atomic *slot = g_big[c - BIG_LOW];
    for (int i = 0; i < BIG_SLOTS; i++) {
        if (!atomic_load_explicit(&slot[i], memory_order_relaxed))
            continue;
        void *p = atomic_exchange_explicit(&slot[i], NULL, memory_order_acquire);
        if (!p)
            continue;
        size_t u = malloc_usable_size(p);
        big_taken(p, u);
        if (u >= len)
            return p;
        if (!big_put(p, u, c)) /* too small for this request: kept for another one */
            free(p);
    }
    return malloc(len);
}

void concur__big_free(void *p)
{
    if (!p)
        return;
    size_t u = malloc_usable_size(p);
    int c = u ? log2_floor(u) : 0;
    if (c >= BIG_LOW && c <= BIG_HIGH &&
        atomic_load_explicit(&g_big_holds, memory_order_relaxed) > 0 && big_put(p, u, c))
        return;
    free(p);
}

void concur__big_hold(void)
{
    atomic_fetch_add_explicit(&g_big_holds, 1, memory_order_relaxed);
}

void concur__big_unhold(void)
{
    /* seq_cst with the slot stores of concur__big_free: a block put in a slot after this
     * drain went past it is drained by its freer, which then sees no holder. */
    if (atomic_fetch_sub_explicit(&g_big_holds, 1, memory_order_seq_cst) == 1)
        concur__big_drain();
}

void *concur__big_realloc(void *p, size_t keep, size_t len)
{
    void *n = concur__big_alloc(len);
    if (!n)
        return NULL;
    if (keep)
        memcpy(n, p, keep < len ? keep : len);
    concur__big_free(p);
    return n;
}

void concur__big_drain(void)
{
    for (int c = 0; c <= BIG_HIGH - BIG_LOW; c++)
        for (int i = 0; i < BIG_SLOTS; i++) {
            void *p = atomic_exchange_explicit(&g_big[c][i], NULL, memory_order_seq_cst);
            if (p) {
                big_taken(p, malloc_usable_size(p));
                free(p);
            }
        }
}

size_t concur__big_kept(void)
{
    return atomic_load_explicit(&g_big_bytes, memory_order_relaxed);
}
