/*
 * pyconcurrent_func.c - pyconcurrent's function example: a C function instead of a program.
 *
 * The Python original (ProcRunAsyncio):
 *
 *     async def test_func_async(key, args) -> (bool, []):
 *         success = True
 *         nap = args[-1]                  # pull off the last argument
 *         await asyncio.sleep(nap)
 *         answer = {'key': key, 'args': args, 'success': success,
 *                   'result': 'test_func done'}
 *         return (success, answer)
 *
 *     pargs = [test_func_async, 'dummy-arg']
 *     tasks = [(1, 1), (2, 7), (3, 2), (4, 2), (5, 1)]
 *     proc_run = ProcRunAsyncio(pargs, tasks, num_workers=4, timeout=30)
 *     await proc_run.run_all()
 *     proc_run.print_results()
 *
 * In C the function is opts.fn and the rest of pargs is the prefix: each task's args are
 * the prefix followed by its arg. The function's return value is its success (0), and its
 * answer is bytes set with concur_task_return(); here the text of the Python dictionary.
 * "For the equivalent multiprocessor version simply replace ProcRunAsyncio with ProcRunMp":
 * here the example runs on coroutines (ProcRunAsyncio: the tasks share one loop thread, and
 * concur_task_sleep suspends only the sleeping one, as asyncio.sleep does), then on worker
 * processes (ProcRunMp), then on worker threads; only opts.engine differs. The sleeps are a tenth of the original's (0.1 to 0.7 s, timeout 3 s)
 * so that the example runs in under two seconds.
 *
 * Exit status: 0 when every task succeeded with the expected answer, 1 otherwise.
 */
#include <concur.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int test_func(concur_task *t, const char *key, int argc, const char *const *args)
{
    double secs = atof(args[argc - 1]); /* pull off the last argument */
    /* A thread or a coroutine cannot be killed: when its task times out (or the run is
     * stopped), concur_task_should_stop() becomes true and concur_task_sleep() returns
     * early. On coroutines the sleep suspends this task only. */
    if (concur_task_sleep(t, secs) != 0)
        return concur_task_fail(t, CONCUR_ECANCELED, "stopped after its timeout");
    char answer[256];
    int n = snprintf(answer, sizeof answer, "{'key': %s, 'args': [", key);
    for (int i = 0; i < argc && n < (int)sizeof answer; i++)
        n += snprintf(answer + n, sizeof answer - (size_t)n, "%s'%s'", i ? ", " : "", args[i]);
    if (n < (int)sizeof answer)
        n += snprintf(answer + n, sizeof answer - (size_t)n,
                      "], 'success': True, 'result': 'test_func done'}");
    if (n >= (int)sizeof answer)
        return concur_task_fail(t, CONCUR_EINVAL, "answer too long");
    return concur_task_return(t, answer, (size_t)n); /* 0: success */
}

/* Runs the example on @engine: the only line that differs between ProcRunAsyncio
 * (coroutines) and ProcRunMp (processes). Returns the number of tasks that did not answer as expected. */
static int run_all(concur_engine engine)
{
    const char *const pargs[] = {"dummy-arg", NULL};
    const concur_cmd tasks[] = {
        {.key = "1", .arg = "0.1"}, {.key = "2", .arg = "0.7"}, {.key = "3", .arg = "0.2"},
        {.key = "4", .arg = "0.2"}, {.key = "5", .arg = "0.1"},
    };
    const size_t ntasks = sizeof tasks / sizeof tasks[0];
    concur_runner_opts opts = {.fn = test_func, .prefix = pargs, .max_workers = 4, .timeout = 3};
    opts.engine = engine;

    concur_runner *proc_run = NULL;
    int rc = concur_run_batch(tasks, ntasks, &opts, &proc_run);
    if (rc != 0) {
        fprintf(stderr, "run: %s\n", concur_strerror(rc));
        concur_runner_destroy(proc_run);
        return (int)ntasks;
    }
    concur_print_results(stdout, proc_run);

    int failures = 0;
    for (size_t i = 0; i < ntasks; i++) {
        const concur_result *res = concur_runner_result(proc_run, i);
        char want[256];
        snprintf(want, sizeof want,
                 "{'key': %s, 'args': ['dummy-arg', '%s'], 'success': True, "
                 "'result': 'test_func done'}",
                 tasks[i].key, tasks[i].arg);
        if (!res || !res->success || res->answer_len != strlen(want) ||
            memcmp(res->answer, want, res->answer_len) != 0) {
            fprintf(stderr, "task %zu: unexpected result\n", i);
            failures++;
        }
    }
    concur_runner_destroy(proc_run);
    return failures;
}

int main(void)
{
    printf("-- ProcRunAsyncio: coroutines\n");
    int failures = run_all(CONCUR_ENGINE_COROUTINES);
    printf("-- ProcRunMp: worker processes\n");
    failures += run_all(CONCUR_ENGINE_PROCESSES);
    printf("-- worker threads\n");
    failures += run_all(CONCUR_ENGINE_THREADS);
    return failures ? 1 : 0;
}
