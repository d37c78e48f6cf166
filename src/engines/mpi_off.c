/*
 * engines/mpi_off.c - the MPI entry points of a library without MPI (libconcur): the MPI
 * engine is CONCUR_ENOTSUP, and so is concur_mpi_init. libconcur_mpi links engines/mpi*.c
 * instead of this file.
 */
#include "core/pool.h"

const concur__engine_class *concur__mpi_class(const concur_pool_opts *o, int *why)
{
    (void)o;
    *why = CONCUR_ENOTSUP;
    return NULL;
}

int concur_mpi_init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return CONCUR_ENOTSUP;
}

int concur_mpi_finalize(void)
{
    return 0;
}

int concur_mpi_rank(void)
{
    return 0;
}

int concur_mpi_size(void)
{
    return 1;
}
