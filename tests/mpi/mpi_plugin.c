/* A task function in a library that only rank 0 loads (test_mpi's CONCUR_ENOTLOADED case). */
#include <concur.h>

int mpi_plugin_task(concur_task *t, const void *in, size_t len);

int mpi_plugin_task(concur_task *t, const void *in, size_t len)
{
    return concur_task_return(t, in, len);
}
