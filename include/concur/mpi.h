/*
 * concur/mpi.h - pools across MPI ranks (docs/mpi.md).
 *
 * A program that wants the MPI engine links libconcur_mpi (pkg-config concur-mpi, CMake
 * concur::concur_mpi) instead of libconcur, and calls concur_mpi_init() at the top of main.
 * Started as `mpirun -n N prog args...` (or srun), every rank runs main up to that call:
 * rank 0 returns from it and runs the program; every other rank stays inside it, serving
 * the tasks rank 0 sends, and exits when rank 0 is done (its concur_mpi_finalize(), or its
 * exit). This is mpi4py.futures' model (`mpirun -n N python -m mpi4py.futures script`).
 *
 * On rank 0 a pool created with CONCUR_ENGINE_MPI runs its tasks on the other ranks: the
 * same pool API, futures, task-function type, map family, runner function tasks and swarms.
 * max_workers counts worker slots across those ranks (default: the sum of their CPU
 * counts); slot i runs on rank 1 + i % (N - 1). What changes next to a process pool:
 * - Task functions and hooks travel as (loaded object, offset) and are looked up in each
 *   rank, so every rank must run the same executable and have the same libraries loaded
 *   (a function in a library only rank 0 loaded fails its future with CONCUR_ENOTLOADED).
 *   init_arg, final_arg and user must be NULL or point into static data (a global), which
 *   travels the same way; any other pointer makes pool creation fail with CONCUR_EINVAL.
 * - Each rank runs its tasks in a local process pool (fork server, crash-proof worker
 *   processes): a task that crashes, exits or runs past task_timeout fails only its own
 *   future, with the signal, exit status and backtrace, and the rank carries on. With the
 *   option mpi_in_process they run in threads of the rank's own process instead: lower
 *   latency, no isolation (a crash ends the MPI job).
 * - A rank-0 slot keeps up to 32 short tasks in flight on its rank, so faster ranks take
 *   more; an input or result is one MPI message, at most 2 GiB minus 64 bytes (beyond it the
 *   task fails with CONCUR_ESIZE).
 * - A finalizer's failure on another rank is not reported; an initializer's failure there
 *   fails the task that met it with CONCUR_EINITIALIZER and breaks the pool.
 * - Losing a rank (its node fails) ends the whole MPI job under Open MPI 4.
 *
 * Without a launcher (no mpirun: a plain `./prog`), or with one rank, concur_mpi_init()
 * does not start MPI and an MPI pool runs on this machine as a process pool (threads with
 * mpi_in_process): the same program runs with and without mpirun.
 *
 * A library built without MPI keeps these functions: concur_mpi_init() returns
 * CONCUR_ENOTSUP and an MPI pool's creation fails with CONCUR_ENOTSUP.
 */
#ifndef CONCUR_MPI_H
#define CONCUR_MPI_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Starts MPI (MPI_Init_thread with MPI_THREAD_MULTIPLE) when the program was started by an
 * MPI launcher, and makes this process rank 0's coordinator or a serving rank. Call it once,
 * at the top of main, before any thread or pool starts; @p argc and @p argv are main's (MPI
 * may remove its own arguments). A program that started MPI itself (MPI_Init_thread with
 * MPI_THREAD_MULTIPLE) may call it afterwards: concur then uses that MPI and leaves
 * MPI_Finalize to the program on rank 0 (serving ranks still end inside this call).
 * Returns 0 on rank 0 (and without a launcher). On every
 * other rank it does not return: it serves tasks and then calls exit(0) (exit(1) when MPI
 * fails there). Errors on rank 0: CONCUR_ENOTSUP (a library built without MPI, or an MPI
 * without MPI_THREAD_MULTIPLE), CONCUR_EBUSY (called twice), CONCUR_EIO (MPI failed to
 * start), CONCUR_ENOMEM; the serving ranks then exit with status 1, which ends the job
 * under mpirun, and an MPI pool made anyway runs on this machine, as without a launcher.
 * Not thread-safe: call it from main's thread.
 */
CONCUR_API int concur_mpi_init(int *argc, char ***argv);

/**
 * Ends the MPI side on rank 0: every serving rank is told to exit, then MPI_Finalize runs
 * (unless the program started MPI itself: then it calls MPI_Finalize, after this).
 * Pools with CONCUR_ENGINE_MPI must be destroyed first (CONCUR_EBUSY otherwise). Also done
 * at exit() when the program did not call it. Returns 0 (also when MPI was never started
 * or was finalized already). Not thread-safe: call it from main's thread.
 */
CONCUR_API int concur_mpi_finalize(void);

/** This process's rank: 0 on rank 0 and without MPI. Thread-safe. */
CONCUR_API int concur_mpi_rank(void);

/** The number of ranks: 1 without a launcher (and before concur_mpi_init). Thread-safe. */
CONCUR_API int concur_mpi_size(void);

#ifdef __cplusplus
}
#endif

#endif
