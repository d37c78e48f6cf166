/*
 * sys/fiber.c - fibers on Boost.Context's fcontext, and the stack slab (see sys/fiber.h for
 * the model and the stack overflow policy).
 *
 * A switch is one jump_fcontext: it saves the callee-saved registers on the current stack,
 * stores that stack pointer as the context it returns to the other side, and loads the
 * other side's. The side that arrives keeps the context left behind for whoever jumped:
 * the scheduler (s->from NULL) or the fiber that switched to it (s->from), whether it
 * arrives in entry() (a first start) or back in a suspension or a switch.
 */
#include "sys/fiber.h"
#include "sys/os.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define FIBER_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define FIBER_TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(FIBER_ASAN)
#define FIBER_ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(FIBER_TSAN)
#define FIBER_TSAN 1
#endif
#endif

#ifdef FIBER_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#define ASAN_START(save, bottom, size) __sanitizer_start_switch_fiber(save, bottom, size)
#define ASAN_FINISH(save, bottom, size) __sanitizer_finish_switch_fiber(save, bottom, size)
#else
#define ASAN_START(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#define ASAN_FINISH(save, bottom, size) ((void)(save), (void)(bottom), (void)(size))
#endif

#ifdef FIBER_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#define TSAN_SWITCH(fib) __tsan_switch_to_fiber(fib, 0)
#else
#define TSAN_SWITCH(fib) ((void)(fib))
#endif

/* ---------------------------------------------------------------- the switch */

#ifdef CONCUR_HAVE_FCONTEXT
#include "sys/fcontext.h"

bool concur__fiber_supported(void)
{
    return true;
}

/* A coroutine's stack can no longer be trusted: the process stops, saying why. */
static _Noreturn void stack_lost(const char *msg)
{
    ssize_t n = write(STDERR_FILENO, msg, strlen(msg));
    (void)n;
    abort();
}

static void check_canary(const concur__fiber *f)
{
    if (f->canary && *f->canary != CONCUR__CANARY)
        stack_lost("concur: coroutine stack overflow (stack canary overwritten)\n");
}

/* Arrived in fiber @f by a jump that left @fctx behind: it belongs to whoever jumped (the
 * scheduler, or the fiber that switched here), and ASan learns which stack was left. */
static void arrived(concur__fiber_sched *s, concur__fiber *f, void *fake, fcontext_t fctx)
{
    concur__fiber *jumper = s->from;
    if (jumper) {
        jumper->ctx = fctx;
        ASAN_FINISH(fake, NULL, NULL);
    } else {
        s->ctx = fctx;
        ASAN_FINISH(fake, &s->asan_bottom, &s->asan_size);
    }
    s->cur = f;
}

static _Noreturn void entry(transfer_t t)
{
    concur__fiber_sched *s = t.data;
    concur__fiber *f = s->cur;
    arrived(s, f, NULL, t.fctx);
    f->fn(f->arg);
    f->finished = true;
    s->from = f;
    /* No fake stack to keep: this stack is done. */
    ASAN_START(NULL, s->asan_bottom, s->asan_size);
    TSAN_SWITCH(s->tsan);
    ctx_jump(s->ctx, s);
    abort(); /* a finished fiber is never resumed */
}

/* ---- shared stacks (sys/fiber.h) */

#ifdef FIBER_ASAN
#define UNPOISON(p, n) __asan_unpoison_memory_region(p, n)
#else
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* What a suspension pushes below the point where the fiber reserved its image: the frames
 * of the calls down to the switch, and the registers the switch saves. */
#if defined(FIBER_ASAN) || defined(FIBER_TSAN)
enum { SUSPEND_MARGIN = 2048 };
#else
enum { SUSPEND_MARGIN = 256 };
#endif

static char *stack_top(const concur__fiber_stack *ss)
{
    return (char *)ss->lo + ss->size;
}

/* Makes @f's image buffer hold @need bytes; its contents are not kept (the frames are on
 * the stack whenever it grows). */
static bool img_grow(concur__fiber *f, size_t need)
{
    if (need <= f->img_cap)
        return true;
    size_t cap = f->img_cap * 2 > need ? f->img_cap * 2 : need;
    cap = (cap + 63) & ~(size_t)63;
    unsigned char *p = malloc(cap);
    if (!p)
        return false;
    if (f->img_heap)
        free(f->img);
    f->img = p;
    f->img_cap = cap;
    f->img_heap = true;
    return true;
}

/* Copies the frames of @ss's owner, suspended, off the stack into its image. */
static void stack_out(concur__fiber_stack *ss)
{
    concur__fiber *o = ss->owner;
    ss->owner = NULL;
    if (!o || o->finished)
        return;
    char *sp = o->ctx; /* the switch saved its registers there, below its frames */
    size_t len = (size_t)(stack_top(ss) - sp);
    if (!img_grow(o, len)) /* reserved before it suspended: only past the margin */
        stack_lost("concur: no memory to save a suspended coroutine's stack\n");
    UNPOISON(sp, len);
    memcpy(o->img, sp, len);
    o->img_len = len;
}

/* Puts @f's frames on its shared stack (a first start: its context is made there). */
static void stack_in(concur__fiber *f)
{
    concur__fiber_stack *ss = f->shared;
    if (ss->owner == f)
        return;
    stack_out(ss);
    UNPOISON(ss->lo, ss->size); /* whatever the previous owner's frames left in the shadow */
    if (!f->ctx)
        f->ctx = ctx_make(stack_top(ss), ss->size, entry);
    else
        memcpy(stack_top(ss) - f->img_len, f->img, f->img_len);
    ss->owner = f;
}

static void fiber_init(concur__fiber *f, void *lo, size_t size, const uint64_t *canary,
                       void (*fn)(void *arg), void *arg)
{
    f->lo = lo;
    f->size = size;
    f->canary = canary;
    f->finished = false;
    f->fn = fn;
    f->arg = arg;
    f->asan_fake = NULL;
    f->ctx = NULL;
    f->shared = NULL;
    f->img = NULL;
    f->img_len = f->img_cap = 0;
    f->img_heap = false;
#ifdef FIBER_TSAN
    f->tsan = __tsan_create_fiber(0);
#else
    f->tsan = NULL;
#endif
}

void concur__fiber_make_shared(concur__fiber *f, concur__fiber_stack *ss, void *img, size_t cap,
                               void (*fn)(void *arg), void *arg)
{
    fiber_init(f, ss->lo, ss->size, ss->canary, fn, arg);
    f->shared = ss;
    f->img = img;
    f->img_cap = cap;
}

__attribute__((noinline)) bool concur__fiber_reserve(concur__fiber_sched *s)
{
    concur__fiber *f = s->cur;
    if (!f || !f->shared)
        return true;
    char *here = __builtin_frame_address(0);
    return img_grow(f, (size_t)(stack_top(f->shared) - here) + SUSPEND_MARGIN);
}

void concur__fiber_make(concur__fiber *f, void *lo, size_t size, const uint64_t *canary,
                        void (*fn)(void *arg), void *arg)
{
    fiber_init(f, lo, size, canary, fn, arg);
    f->ctx = ctx_make((char *)lo + size, size, entry);
}

concur__fiber *concur__fiber_resume(concur__fiber_sched *s, concur__fiber *f)
{
    if (f->shared)
        stack_in(f);
    s->cur = f;
    s->from = NULL;
    ASAN_START(&s->asan_fake, f->lo, f->size);
    TSAN_SWITCH(f->tsan);
    transfer_t r = ctx_jump(f->ctx, s);
    ASAN_FINISH(s->asan_fake, NULL, NULL);
    concur__fiber *back = s->from; /* only fibers jump to the scheduler */
    back->ctx = r.fctx;
    s->cur = NULL;
    check_canary(back);
    if (back->finished && back->shared && back->shared->owner == back)
        back->shared->owner = NULL; /* its frames are gone: nothing to copy out */
    return back;
}

void concur__fiber_suspend(concur__fiber_sched *s)
{
    concur__fiber *f = s->cur;
    s->from = f;
    ASAN_START(&f->asan_fake, s->asan_bottom, s->asan_size);
    TSAN_SWITCH(s->tsan);
    transfer_t r = ctx_jump(s->ctx, s);
    arrived(s, f, f->asan_fake, r.fctx);
}

void concur__fiber_switch(concur__fiber_sched *s, concur__fiber *to)
{
    concur__fiber *f = s->cur;
    check_canary(f);
    s->from = f;
    s->cur = to;
    ASAN_START(&f->asan_fake, to->lo, to->size);
    TSAN_SWITCH(to->tsan);
    transfer_t r = ctx_jump(to->ctx, s);
    arrived(s, f, f->asan_fake, r.fctx);
}

#else /* no fcontext: nothing may run (callers check concur__fiber_supported) */

bool concur__fiber_supported(void)
{
    return false;
}

void concur__fiber_make(concur__fiber *f, void *lo, size_t size, const uint64_t *canary,
                        void (*fn)(void *arg), void *arg)
{
    (void)f, (void)lo, (void)size, (void)canary, (void)fn, (void)arg;
    abort();
}

void concur__fiber_make_shared(concur__fiber *f, concur__fiber_stack *ss, void *img, size_t cap,
                               void (*fn)(void *arg), void *arg)
{
    (void)f, (void)ss, (void)img, (void)cap, (void)fn, (void)arg;
    abort();
}

bool concur__fiber_reserve(concur__fiber_sched *s)
{
    (void)s;
    return true;
}

concur__fiber *concur__fiber_resume(concur__fiber_sched *s, concur__fiber *f)
{
    (void)s, (void)f;
    abort();
}

void concur__fiber_suspend(concur__fiber_sched *s)
{
    (void)s;
    abort();
}

void concur__fiber_switch(concur__fiber_sched *s, concur__fiber *to)
{
    (void)s, (void)to;
    abort();
}
#endif

void concur__fiber_sched_init(concur__fiber_sched *s)
{
    memset(s, 0, sizeof(*s));
#ifdef FIBER_TSAN
    s->tsan = __tsan_get_current_fiber();
#endif
}

void concur__fiber_release(concur__fiber *f)
{
#ifdef FIBER_TSAN
    if (f->tsan)
        __tsan_destroy_fiber(f->tsan);
#endif
    f->tsan = NULL;
    if (f->shared) {
        if (f->shared->owner == f)
            f->shared->owner = NULL;
        if (f->img_heap)
            free(f->img);
        f->img = NULL;
        f->img_heap = false;
    }
}

/* ---------------------------------------------------------------- the stack slab */

enum { DEFAULT_STACK = 64 * 1024, CHUNK_BYTES = 8 << 20, MAPS_KEPT = 16384 };

struct concur__slab_chunk {
    void *base;
    size_t len;
    struct concur__slab_chunk *next;
};

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/* Faults in the top page of a stack about to be used for the first time (where the
 * coroutine's record and first frames go) with one madvise: on some virtual machines a page
 * fault taken by the first write costs twice as much. Older kernels refuse it (EINVAL):
 * the page then faults in on first use, as usual. */
static _Atomic int g_no_populate;

static void populate_top(char *lo, size_t usable, size_t pg)
{
    if (!atomic_load_explicit(&g_no_populate, memory_order_relaxed) &&
        madvise(lo + usable - pg, pg, MADV_POPULATE_WRITE) != 0 && errno == EINVAL)
        atomic_store_explicit(&g_no_populate, 1, memory_order_relaxed);
}

/* The guard pages the whole process may still add (each costs two mappings). */
static _Atomic long g_guards_left = -1;

static long guard_budget(void)
{
    long v = atomic_load_explicit(&g_guards_left, memory_order_relaxed);
    if (v >= 0)
        return v;
    long max = 65530; /* Linux's default, when the setting cannot be read */
    int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char b[32];
        ssize_t n = concur__read_some(fd, b, sizeof(b) - 1);
        if (n > 0) {
            b[n] = '\0';
            long m = strtol(b, NULL, 10);
            if (m > 0)
                max = m;
        }
        concur__close(&fd);
    }
    long budget = max > MAPS_KEPT ? (max - MAPS_KEPT) / 2 : 0;
    long expect = -1;
    atomic_compare_exchange_strong_explicit(&g_guards_left, &expect, budget, memory_order_relaxed,
                                            memory_order_relaxed);
    return atomic_load_explicit(&g_guards_left, memory_order_relaxed);
}

/* Takes @n guard pages from the budget: true when there were that many. */
static bool take_guards(long n)
{
    long v = guard_budget();
    while (v >= n)
        if (atomic_compare_exchange_weak_explicit(&g_guards_left, &v, v - n, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    return false;
}

static size_t page_size(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096;
}

void concur__slab_init(concur__slab *s, size_t stack_size)
{
    size_t pg = page_size();
    if (stack_size == 0)
        stack_size = DEFAULT_STACK;
    memset(s, 0, sizeof(*s));
    s->usable = (stack_size + CONCUR__SLAB_RESERVED + pg - 1) / pg * pg;
    s->stack = s->usable - CONCUR__SLAB_RESERVED;
    s->pg = pg;
    s->per_chunk = CHUNK_BYTES / (s->usable + pg);
    if (s->per_chunk < 1)
        s->per_chunk = 1;
}

void concur__slab_fini(concur__slab *s)
{
    while (s->chunks) {
        struct concur__slab_chunk *c = s->chunks;
        s->chunks = c->next;
        (void)munmap(c->base, c->len); /* cannot fail for a whole mapping of ours */
        free(c);
    }
    s->free = NULL;
}

/* The reserved top of a slot: the free-list link while free, and the canary word of the
 * slot above it (its last 8 bytes) in an unguarded chunk. */
typedef struct slot_top {
    void *next;
    uint64_t *canary; /* the word below this slot's stack to check, or NULL */
} slot_top;

static slot_top *top_of(const concur__slab *s, void *lo)
{
    return (slot_top *)((char *)lo + s->stack);
}

static void push_free(concur__slab *s, void *lo, uint64_t *canary)
{
    slot_top *n = top_of(s, lo);
    n->next = s->free;
    n->canary = canary;
    s->free = lo;
}

/*
 * Maps one more chunk; its slots are then handed out in order (bump allocation), so a
 * slot's pages are touched only when it is first used. A guarded chunk is
 * [guard][stack][guard][stack]...; when the budget cannot cover a whole chunk, the chunk is
 * [guard][stack][stack]... with one guard at its bottom (if any is left), and each stack
 * but the lowest is checked through the canary word at the top of the slot below it.
 */
static bool add_chunk(concur__slab *s)
{
    struct concur__slab_chunk *c = malloc(sizeof(*c));
    if (!c)
        return false;
    bool guarded = take_guards((long)s->per_chunk);
    size_t stride = guarded ? s->usable + s->pg : s->usable;
    c->len = s->pg + stride * s->per_chunk - (guarded ? s->pg : 0);
    c->base = mmap(NULL, c->len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (c->base == MAP_FAILED) {
        free(c);
        return false;
    }
    c->next = s->chunks;
    s->chunks = c;
    char *first = (char *)c->base + s->pg;
    if (!guarded && take_guards(1) && mprotect(c->base, s->pg, PROT_NONE) != 0)
        atomic_store_explicit(&g_guards_left, 0, memory_order_relaxed);
    for (size_t i = 0; guarded && i < s->per_chunk; i++)
        if (mprotect(first + i * stride - s->pg, s->pg, PROT_NONE) != 0)
            atomic_store_explicit(&g_guards_left, 0, memory_order_relaxed); /* went on */
    s->bump = first;
    s->bump_first = first;
    s->bump_left = s->per_chunk;
    s->bump_stride = stride;
    s->bump_guarded = guarded;
    return true;
}

void *concur__slab_get(concur__slab *s, uint64_t **canary)
{
    char *lo = s->free;
    if (lo) {
        slot_top *n = top_of(s, lo);
        s->free = n->next;
        *canary = n->canary;
    } else {
        if (!s->bump_left && !add_chunk(s))
            return NULL;
        lo = s->bump;
        s->bump += s->bump_stride;
        s->bump_left--;
        *canary = s->bump_guarded || lo == s->bump_first ? NULL : (uint64_t *)lo - 1;
        populate_top(lo, s->usable, s->pg);
    }
    if (*canary)
        **canary = CONCUR__CANARY; /* the top of the slot below: its page is in use anyway */
    return lo;
}

void concur__slab_put(concur__slab *s, void *lo, uint64_t *canary)
{
#ifdef FIBER_ASAN
    /* Frames that never returned (a fiber's entry) leave their redzones poisoned. */
    __asan_unpoison_memory_region(lo, s->stack);
#endif
    push_free(s, lo, canary);
}
