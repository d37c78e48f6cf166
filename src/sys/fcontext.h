/*
 * sys/fcontext.h - the context switch of fibers (internal): concur's own on x86-64
 * (sys/switch_x86_64.S, CONCUR_OWN_SWITCH), Boost.Context's fcontext elsewhere.
 *
 * Boost's functions have C linkage (boost/context/detail/fcontext.hpp); their objects are
 * taken from the static libboost_context.a at build time (root CMakeLists.txt). The own
 * switch has the same calling convention and context layout (ctx_jump, ctx_make below).
 * jump_fcontext saves the callee-saved registers on the current stack, switches to @to and
 * hands it @vp; it returns when something jumps back, with the context it left (fctx) and
 * the data it passed. make_fcontext prepares a context on the stack whose top is @sp that
 * starts @fn at its first jump (fn must never return).
 */
#ifndef CONCUR_SYS_FCONTEXT_H
#define CONCUR_SYS_FCONTEXT_H

#include <stddef.h>

typedef void *fcontext_t;
typedef struct {
    fcontext_t fctx;
    void *data;
} transfer_t;
#ifdef CONCUR_OWN_SWITCH
transfer_t concur__ctx_jump(fcontext_t to, void *vp);
/* A context that starts fn at its first jump, on the stack whose top is @sp. */
fcontext_t concur__ctx_make(void *sp, void (*fn)(transfer_t));
#define ctx_jump(to, vp) concur__ctx_jump(to, vp)
#define ctx_make(sp, size, fn) ((void)(size), concur__ctx_make(sp, fn))
#else
transfer_t jump_fcontext(fcontext_t const to, void *vp);
fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));
#define ctx_jump(to, vp) jump_fcontext(to, vp)
#define ctx_make(sp, size, fn) make_fcontext(sp, size, fn)
#endif

#endif
