/*
 * engines/proc_worker.h - the worker side of the process engine (proc_worker.c): what a worker
 * process needs to be started by the fork server: its limits, the pool's shared stop and
 * cancel words, and its loop.
 */
#ifndef CONCUR_ENGINES_PROC_WORKER_H
#define CONCUR_ENGINES_PROC_WORKER_H

#include "core/concur_impl.h"

/* Resource limits of every worker process (concur_pool_opts), set in the worker after fork. */
typedef struct concur__limits {
    uint64_t mem;   /* RLIMIT_AS (soft and hard) in bytes; 0: none */
    uint64_t cpu_s; /* RLIMIT_CPU soft limit in whole seconds (hard: one more); 0: none */
} concur__limits;

/* The shared mapping: the stop word at its start, then from CONCUR__CANCEL_WORDS_AT one
 * cancel word per worker slot (slots 0 .. workers-1, one per live proxy): a proxy writes the
 * id of a cancelled task there, and concur_task_should_stop() in its worker process reads
 * it. */
enum { CONCUR__CANCEL_WORDS_AT = 64 };
static inline _Atomic uint64_t *concur__cancel_word(const _Atomic int *stop, int slot)
{
    return (_Atomic uint64_t *)(void *)((char *)(uintptr_t)stop + CONCUR__CANCEL_WORDS_AT +
                                        (size_t)slot * sizeof(uint64_t));
}

/* The loop of a worker process: applies @lim, then serves frames on @sock until EOF, then
 * _exits. @ring: the answer ring mapped (engines/proc_chan.h) and @bell its bell, or NULL
 * and -1. @stop is the pool's shared stop word. Called by the fork server in the freshly
 * forked worker. */
_Noreturn void concur__worker_main(int sock, void *ring, int bell, const concur__limits *lim,
                                   const _Atomic int *stop);

#endif
