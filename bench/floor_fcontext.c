/* floor_fcontext - the speed floor of co_switch: Boost.Context's jump_fcontext alone.
 *
 *   floor_fcontext co_switch
 *
 * A context on a malloc'd stack and the main one jump to each other 10,000,000 times: no
 * scheduler, no ready queue, no sanitizer hooks. Prints "RESULT co_switch floor
 * ns_per_switch V ns" (one jump, one direction, as concur's figure counts a yield handing
 * the loop to the other coroutine).
 */
#include "bench_util.h"
#include "../src/sys/fcontext.h"

enum { JUMPS = 10000000, STACK = 64 * 1024 };

static void body(transfer_t t)
{
    for (;;)
        t = jump_fcontext(t.fctx, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "co_switch") != 0) {
        bench_usage(argv[0], "co_switch");
        return 2;
    }
    char *stack = malloc(STACK);
    if (!stack)
        return 1;
    fcontext_t ctx = make_fcontext(stack + STACK, STACK, body);
    for (int i = 0; i < 1000; i++)
        ctx = jump_fcontext(ctx, NULL).fctx;
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < JUMPS / 2; i++)
        ctx = jump_fcontext(ctx, NULL).fctx; /* there and back: two jumps */
    bench_result("co_switch", "floor", "ns_per_switch", (double)(bench_now_ns() - t0) / JUMPS,
                 "ns");
    free(stack);
    return 0;
}
