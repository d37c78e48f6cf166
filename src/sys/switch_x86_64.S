/*
 * sys/switch_x86_64.S - how concur enters Boost.Context's jump_fcontext on x86-64 (internal).
 *
 * concur__ctx_jump(to, data) is jump_fcontext(to, data) (sys/fcontext.h), entered so that
 * the CPU's return-address predictor stays in step with the stacks. jump_fcontext resumes
 * the other context with an indirect jump to its saved return address, not with `ret`, so
 * the entry that the `call` pushed on the predictor's stack is never popped: after each
 * switch every later return of the fiber's call chain is predicted from a stale entry and
 * mispredicted (two or three per coroutine switch, more than the switch itself costs).
 *
 * Here the context saved by jump_fcontext returns to the local label 1 below, entered by a
 * `push` and a `jmp` (no predictor entry); the indirect jump back to it always has that one
 * target, which the branch predictor learns. Label 1 then leaves with `ret`, which pops the
 * entry of the `call` that entered concur__ctx_jump: one push, one pop per switch. Fibers
 * switch from the same call site (sys/fiber.c), so that `ret` is also predicted right.
 * The switch itself (registers, MXCSR, x87 control word, stack) is Boost's, unchanged.
 */
    .text

/* transfer_t concur__ctx_jump(fcontext_t to, void *data) */
    .globl  concur__ctx_jump
    .hidden concur__ctx_jump
    .type   concur__ctx_jump, @function
    .p2align 4
concur__ctx_jump:
    .cfi_startproc
    leaq    1f(%rip), %rax
    pushq   %rax                /* jump_fcontext's return address: label 1 */
    .cfi_adjust_cfa_offset 8
    jmp     jump_fcontext@PLT
1:  /* back here, in this context, when something jumps to it: {rax, rdx} is the result */
    .cfi_adjust_cfa_offset -8
    ret
    .cfi_endproc
    .size   concur__ctx_jump, .-concur__ctx_jump

    .section .note.GNU-stack,"",%progbits
