/*
 * readme_runner.c - the README's example of C functions in the runner, as printed there,
 * with a main around it: three function tasks on worker processes, pyconcurrent's report.
 * The naps are a tenth of the README's (0.1, 0.7 and 0.2 s) so that it runs quickly.
 * Exit status: 0 when the run succeeded.
 */
#include <concur.h>
#include <stdio.h>
#include <stdlib.h>

static int test_func(concur_task *t, const char *key, int argc, const char *const *args)
{
    (void)key;
    double nap = atof(args[argc - 1]);                /* the task's arg comes last */
    if (concur_task_sleep(t, nap) != 0)               /* ends early when told to stop */
        return concur_task_fail(t, CONCUR_ECANCELED, "stopped");
    return concur_task_return(t, "test_func done", 14);
}

int main(void)
{
    const char *const pargs[] = {"dummy-arg", NULL};
    concur_runner_opts opts = {.fn = test_func, .prefix = pargs, .max_workers = 4, .timeout = 30};
    opts.engine = CONCUR_ENGINE_PROCESSES;                /* threads by default */
    concur_cmd tasks[] = {{.key = "1", .arg = "0.1"}, {.key = "2", .arg = "0.7"}, {.key = "3", .arg = "0.2"}};
    concur_runner *r = NULL;
    int rc = concur_run_batch(tasks, 3, &opts, &r);
    if (rc == 0)
        concur_print_results(stdout, r);                  /* pyconcurrent's report */
    concur_runner_destroy(r);
    return rc == 0 ? 0 : 1;
}
