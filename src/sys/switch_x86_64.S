/*
 * sys/switch_x86_64.S - the coroutine context switch on x86-64 (System V ABI), internal.
 *
 * concur__ctx_jump(to, data) has the calling convention of Boost.Context's jump_fcontext
 * (sys/fcontext.h: it returns {the context left behind, data}), and a context has the same
 * layout, but the switch ends with `ret`, not with an indirect jump. The `call` that entered
 * it pushed the return stack buffer of the CPU; the `ret` pops it, so the buffer stays in
 * step with the real stacks. After an indirect jump every later return of the fiber's call
 * chain is predicted from a stale entry and mispredicted: two or three per switch in the
 * coroutine engine (the switch is called a few frames down from concur_co_yield), which
 * cost more than the jump itself. Fibers switch from the same call site, so the `ret` is
 * also predicted right.
 *
 * A saved context, at its stack pointer: MXCSR (4 bytes) and the x87 control word (2; both
 * callee-saved in this ABI), r12, r13, r14, r15, rbx, rbp, then the address to return to.
 * A fresh context (concur__ctx_make, sys/fiber.c) returns into concur__ctx_start with the
 * entry function in r12.
 */
    .text

/* transfer_t concur__ctx_jump(void *to, void *data): rax = the context left, rdx = data */
    .globl  concur__ctx_jump
    .hidden concur__ctx_jump
    .type   concur__ctx_jump, @function
    .p2align 4
concur__ctx_jump:
    .cfi_startproc
    leaq    -0x38(%rsp), %rsp
    .cfi_adjust_cfa_offset 0x38
    stmxcsr (%rsp)
    fnstcw  0x4(%rsp)
    movq    %r12, 0x08(%rsp)
    movq    %r13, 0x10(%rsp)
    movq    %r14, 0x18(%rsp)
    movq    %r15, 0x20(%rsp)
    movq    %rbx, 0x28(%rsp)
    movq    %rbp, 0x30(%rsp)
    movq    %rsp, %rax          /* the context left behind */
    movq    %rdi, %rsp          /* the one to run */
    ldmxcsr (%rsp)
    fldcw   0x4(%rsp)
    movq    0x08(%rsp), %r12
    movq    0x10(%rsp), %r13
    movq    0x18(%rsp), %r14
    movq    0x20(%rsp), %r15
    movq    0x28(%rsp), %rbx
    movq    0x30(%rsp), %rbp
    leaq    0x38(%rsp), %rsp
    movq    %rsi, %rdx          /* transfer_t {rax, rdx} */
    movq    %rax, %rdi          /* and as concur__ctx_start's argument */
    ret
    .cfi_endproc
    .size   concur__ctx_jump, .-concur__ctx_jump

/* The first return into a fresh context: calls r12(transfer_t {rdi, rdx}), which never
 * returns. The return address is undefined here, so that unwinding (backtrace()) stops. */
    .globl  concur__ctx_start
    .hidden concur__ctx_start
    .type   concur__ctx_start, @function
    .p2align 4
concur__ctx_start:
    .cfi_startproc
    .cfi_undefined rip
    movq    %rdx, %rsi
    andq    $-16, %rsp
    xorl    %ebp, %ebp
    call    *%r12
    ud2                         /* the entry function must not return */
    .cfi_endproc
    .size   concur__ctx_start, .-concur__ctx_start

    .section .note.GNU-stack,"",%progbits
