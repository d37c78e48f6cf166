/*
 * pyconcurrent_subprocess.c - pyconcurrent's first example: a program run once per task.
 *
 * The Python original (ProcRunAsyncio; ProcRunMp is the same call without await):
 *
 *     pargs = ['/usr/bin/sleep']
 *     tasks = [(1, 1), (2, 7), (3, 2), (4, 2), (5, 1)]
 *     proc_run = ProcRunAsyncio(pargs, tasks, num_workers=4, timeout=30)
 *     await proc_run.run_all()
 *     proc_run.print_results()
 *
 * In C the prefix is the argv every task starts with, and each task appends its arg. Both
 * Python classes map to the same call: commands always run in child processes, watched by
 * one epoll loop in the calling thread (the engine option only concerns function tasks).
 * The sleeps are a tenth of the original's (0.1 to 0.7 s, timeout 3 s) so that the example
 * runs in under a second.
 *
 * Exit status: 0 when every task succeeded, 1 otherwise.
 */
#include <concur.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
    const char *const pargs[] = {"/usr/bin/sleep", NULL};
    const concur_cmd tasks[] = {
        {.key = "1", .arg = "0.1"}, {.key = "2", .arg = "0.7"}, {.key = "3", .arg = "0.2"},
        {.key = "4", .arg = "0.2"}, {.key = "5", .arg = "0.1"},
    };
    const size_t ntasks = sizeof tasks / sizeof tasks[0];
    concur_runner_opts opts = {.prefix = pargs, .max_workers = 4, .timeout = 3};

    concur_runner *proc_run = NULL;
    int rc = concur_run_batch(tasks, ntasks, &opts, &proc_run); /* run_all() */
    if (rc != 0) {
        fprintf(stderr, "run: %s\n", concur_strerror(rc));
        concur_runner_destroy(proc_run);
        return 1;
    }
    concur_print_results(stdout, proc_run);

    /* One result per task, in input order, whatever order they finished in. */
    int failures = 0;
    for (size_t i = 0; i < ntasks; i++) {
        const concur_result *res = concur_runner_result(proc_run, i);
        if (!res || strcmp(res->key, tasks[i].key) != 0 || !res->success) {
            fprintf(stderr, "task %zu did not succeed\n", i);
            failures++;
        }
    }
    concur_runner_destroy(proc_run);
    return failures ? 1 : 0;
}
