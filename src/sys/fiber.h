/*
 * sys/fiber.h - fibers: a stack of their own and a context switch (internal).
 *
 * The switch is Boost.Context's fcontext (make_fcontext / jump_fcontext, a few lines of
 * assembly with C linkage, linked from the static libboost_context.a; see the root
 * CMakeLists.txt). Without it (CONCUR_HAVE_FCONTEXT unset) concur__fiber_supported() is
 * false and nothing here may be called but the stack slab.
 *
 * A thread that runs fibers owns a concur__fiber_sched: it resumes a fiber, the fiber runs
 * until it suspends (back to the scheduler), switches straight to another fiber (which
 * then runs in its place, and may itself suspend or switch), or its function returns.
 * Fibers never move between threads. Every jump says who made it (sched.from), so the
 * side that wakes up knows whose context to keep: the scheduler's, or a fiber's.
 *
 * Stacks (concur__slab, one per thread that runs fibers; no locking). Stacks are slots of
 * mmap'd chunks (MAP_NORESERVE: untouched pages cost no memory), several per mapping, and
 * are reused (last freed, first reused, so the pages in use stay warm). The policy against
 * overflow:
 *   - a slot has a PROT_NONE guard page below its stack while the process's guard budget
 *     lasts: each guarded slot costs two memory mappings, and Linux limits a process to
 *     vm.max_map_count of them (65530 by default), so the budget is (max_map_count - 16384)
 *     / 2 guard pages for the whole process (about 24,500 by default). An overflow of a
 *     guarded stack touches the guard: SIGSEGV, a crash at the faulting instruction;
 *   - beyond the budget, a chunk's stacks are adjacent with one guard page at the chunk's
 *     bottom; each stack above the lowest is checked through a canary word just below it
 *     (the top word of the slot below, a page in use anyway, so the canary costs no
 *     memory), checked each time the fiber suspends or ends: a damaged canary stops the
 *     process (abort, with "coroutine stack overflow" on stderr). An overflow that jumps
 *     past the canary without writing it (a frame over 8 bytes that writes only its far
 *     end), or that returns before the check and leaves the canary whole, is not detected
 *     there, but it then writes into the top of the slot below: keep the guarded budget in
 *     mind when stacks run close to their size.
 * Either way an overflow is a crash, not a result; the stack size is an option
 * (concur_pool_opts.coroutine_stack_size).
 *
 * Shared stacks (concur__fiber_stack): fibers made with concur__fiber_make_shared take
 * turns on one stack. The fiber whose frames are on it (the owner) keeps them there while
 * it is suspended; resuming another fiber first copies the owner's frames out (the bytes
 * from its saved context to the top) into the owner's image buffer, then copies the new
 * fiber's image back in. A fiber resumed right after it suspended, with nobody in between,
 * costs no copy. The price: while a fiber is suspended its stack addresses hold another
 * fiber's frames, so nothing may use the address of a variable on its stack meanwhile.
 * Shared fibers never switch to each other directly (concur__fiber_switch): only through
 * the scheduler, whose stack is not shared. A fiber reserves its image buffer before it
 * suspends (concur__fiber_reserve), so the copy-out at a later resume never allocates.
 *
 * Sanitizers: every switch is announced to ASan (__sanitizer_start/finish_switch_fiber)
 * and TSan (__tsan_switch_to_fiber; a TSan fiber per fiber), so both follow the stacks.
 * ASan's shadow of a shared stack is cleared when its owner changes (frames copied back in
 * lose their redzones; frames pushed afterwards get their own).
 */
#ifndef CONCUR_SYS_FIBER_H
#define CONCUR_SYS_FIBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct concur__fiber concur__fiber;

/* A stack fibers take turns on (see above): [lo, lo + size), from the slab. */
typedef struct concur__fiber_stack {
    void *lo;
    size_t size;
    const uint64_t *canary; /* as concur__slab_get said: NULL (a guard page) or the word */
    concur__fiber *owner;   /* whose frames are on it; NULL: nobody's */
} concur__fiber_stack;

/* A fiber. Zero-initialised, then concur__fiber_make or concur__fiber_make_shared. */
struct concur__fiber {
    void *ctx;      /* fcontext where it resumes */
    void *lo;       /* lowest usable byte of its stack */
    size_t size;    /* usable bytes above lo */
    const uint64_t *canary; /* the canary below its stack to check, or NULL (a guard) */
    bool finished;  /* its function returned */
    void *asan_fake; /* ASan's fake stack while it is suspended */
    void *tsan;      /* its TSan fiber */
    void (*fn)(void *arg);
    void *arg;
    concur__fiber_stack *shared; /* NULL: a stack of its own */
    unsigned char *img;          /* shared: its frames while they are off the stack */
    size_t img_len, img_cap;
    bool img_heap;               /* img was allocated here (else the caller's inline buffer) */
};

/* The scheduler side of a thread. */
typedef struct concur__fiber_sched {
    void *ctx;             /* fcontext of the scheduler while a fiber runs */
    concur__fiber *cur;    /* the running fiber, or NULL */
    concur__fiber *from;   /* the fiber that made the last jump; NULL: the scheduler */
    const void *asan_bottom; /* the scheduler's stack, for ASan */
    size_t asan_size;
    void *asan_fake;
    void *tsan; /* the thread's own TSan fiber */
} concur__fiber_sched;

/* True when fibers can run in this build. */
bool concur__fiber_supported(void);

/* Sets up the calling thread's scheduler. */
void concur__fiber_sched_init(concur__fiber_sched *s);

/* Prepares @f to run fn(arg) on the stack [lo, lo + size) (from concur__slab_get, with its
 * canary; size a multiple of 16). The first concur__fiber_resume starts it. */
void concur__fiber_make(concur__fiber *f, void *lo, size_t size, const uint64_t *canary,
                        void (*fn)(void *arg), void *arg);

/* Prepares @f to run fn(arg) on the shared stack @ss, its frames kept in @img (@cap bytes,
 * the caller's; a bigger buffer is allocated when they outgrow it) while it is off the
 * stack. Its context is made at its first resume, when the stack is its own. */
void concur__fiber_make_shared(concur__fiber *f, concur__fiber_stack *ss, void *img, size_t cap,
                               void (*fn)(void *arg), void *arg);

/* From inside the running fiber, before anything it will suspend for is set up: makes sure
 * a shared fiber's image buffer can hold its frames as deep as the caller's plus a margin
 * for the suspension itself. False when no memory (nothing changed); true at once for a
 * fiber with a stack of its own. */
bool concur__fiber_reserve(concur__fiber_sched *s);

/* Runs @f until a fiber comes back to the scheduler: @f or, after switches, another one
 * (returned) that suspended or returned (its finished flag). The scheduler's thread only.
 * Stops the process when that fiber's stack canary was overwritten (see above). */
concur__fiber *concur__fiber_resume(concur__fiber_sched *s, concur__fiber *f);

/* From inside the running fiber: back to the scheduler; returns when resumed (by the
 * scheduler or by another fiber's switch). */
void concur__fiber_suspend(concur__fiber_sched *s);

/* From inside the running fiber: straight to @to (started, or resumed where it stopped)
 * without going through the scheduler; returns when this fiber is resumed. The running
 * fiber's canary is checked first. */
void concur__fiber_switch(concur__fiber_sched *s, concur__fiber *to);

/* Releases what the sanitizers keep for a finished (or never started) fiber, and a shared
 * fiber's image buffer if it was allocated here. */
void concur__fiber_release(concur__fiber *f);

/* ---- the stack slab ---- */

/* The top bytes of each slot the slab keeps for itself (free-list link, canary). */
#define CONCUR__SLAB_RESERVED 64
#define CONCUR__CANARY 0xc0de57ac4b0770feull

typedef struct concur__slab {
    size_t stack;    /* stack bytes per slot: [lo, lo + stack) is the caller's */
    size_t usable;   /* bytes per slot without a guard page (stack + reserved) */
    size_t pg;
    size_t per_chunk;
    void *free;      /* slots given back, linked through the word at each slot's top */
    char *bump;      /* the newest chunk's next slot never used */
    char *bump_first; /* that chunk's lowest slot */
    size_t bump_left, bump_stride;
    bool bump_guarded;
    struct concur__slab_chunk *chunks;
} concur__slab;

/* A slab of stacks of @stack_size bytes (rounded up to whole pages; 0: 64 KiB). */
void concur__slab_init(concur__slab *s, size_t stack_size);
/* Unmaps every chunk: every stack must have been put back (or be unused from now on). */
void concur__slab_fini(concur__slab *s);
/* A stack: its lowest byte (s->stack bytes above it are the caller's), and the canary to
 * check (NULL: a guard page protects it). NULL when no memory could be mapped. */
void *concur__slab_get(concur__slab *s, uint64_t **canary);
/* Gives back a stack from concur__slab_get (@canary as it said). */
void concur__slab_put(concur__slab *s, void *lo, uint64_t *canary);

#endif
