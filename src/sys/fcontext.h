/*
 * sys/fcontext.h - Boost.Context's fcontext, declared for C (internal).
 *
 * The three functions have C linkage in Boost (boost/context/detail/fcontext.hpp); their
 * objects are taken from the static libboost_context.a at build time (root CMakeLists.txt).
 * jump_fcontext saves the callee-saved registers on the current stack, switches to @to and
 * hands it @vp; it returns when something jumps back, with the context it left (fctx) and
 * the data it passed. make_fcontext prepares a context on the stack whose top is @sp that
 * starts @fn at its first jump (fn must never return).
 *
 * On x86-64 (CONCUR_SWITCH_STUB) jump_fcontext is entered through concur__ctx_jump
 * (sys/switch_x86_64.S), which keeps the CPU's return-address predictor in step; elsewhere
 * it is called directly. ctx_jump and ctx_make name whichever applies.
 */
#ifndef CONCUR_SYS_FCONTEXT_H
#define CONCUR_SYS_FCONTEXT_H

#include <stddef.h>

typedef void *fcontext_t;
typedef struct {
    fcontext_t fctx;
    void *data;
} transfer_t;
transfer_t jump_fcontext(fcontext_t const to, void *vp);
fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));

#ifdef CONCUR_SWITCH_STUB
transfer_t concur__ctx_jump(fcontext_t to, void *vp);
#define ctx_jump(to, vp) concur__ctx_jump(to, vp)
#else
#define ctx_jump(to, vp) jump_fcontext(to, vp)
#endif
#define ctx_make(sp, size, fn) make_fcontext(sp, size, fn)

#endif
