/*
 * sys/fcontext.h - Boost.Context's fcontext, declared for C (internal).
 *
 * The three functions have C linkage in Boost (boost/context/detail/fcontext.hpp); their
 * objects are taken from the static libboost_context.a at build time (root CMakeLists.txt).
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
transfer_t jump_fcontext(fcontext_t const to, void *vp);
fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));

#endif
