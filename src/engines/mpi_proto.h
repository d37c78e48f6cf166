/*
 * engines/mpi_proto.h - what the MPI engine's two sides share (libconcur_mpi only): the
 * communicator, the ranks, the messages and the waiting between polls.
 *
 * Rank 0 (engines/mpi.c) sends requests on TAG_REQ to a serving rank (engines/mpi_rank.c);
 * MPI keeps the order of messages between two ranks on one tag, so a pool's OPEN arrives
 * before its tasks. A task's outcome comes back on the tag of the rank-0 slot that sent it
 * (its channel, >= TAG_CHAN0), so each slot receives only its own with a matched probe
 * (MPI_Improbe + MPI_Mrecv: safe with several threads probing). Messages are bytes in
 * native byte order (every rank runs the same program on the same kind of machine):
 *
 *   rank 0 -> rank r, TAG_REQ   records {u64 len, mpi_req, then: OPEN mpi_open; TASK the
 *                               input bytes}: a slot sends the tasks it hands over at once
 *                               in one message
 *   rank r -> rank 0, channel   records {u64 len, mpi_reply, the outcome record
 *                               (sys/wire.h)}: the outcomes a rank has for a slot at once
 *
 * Nothing here blocks in MPI: waits are MPI_Improbe / MPI_Test polls, first back to back
 * (yielding the CPU) while answers are due soon, then with sleeps growing to POLL_MAX_NS,
 * so that idle ranks and slots cost almost no CPU.
 */
#ifndef CONCUR_ENGINES_MPI_PROTO_H
#define CONCUR_ENGINES_MPI_PROTO_H

#include <limits.h>
#include <mpi.h>

#include "core/pool.h"
#include "sys/code.h"

enum { TAG_REQ = 1, TAG_HELLO = 2, TAG_CHAN0 = 16 };

enum mpi_req_type {
    REQ_OPEN = 1, /* a pool on rank 0 was created: make its local pool */
    REQ_CLOSE,    /* ... destroyed: destroy the local pool */
    REQ_TASK,     /* run fn on the input; answer on chan */
    REQ_CANCEL,   /* concur_future_cancel of a running task */
    REQ_KILL,     /* concur_future_cancel_kill of a running task */
    REQ_STOP,     /* concur_pool_shutdown with CONCUR_SHUTDOWN_CANCEL */
    REQ_EXIT,     /* rank 0 is done: leave */
};

typedef struct mpi_req {
    uint32_t type;
    uint32_t pool; /* the pool's number on rank 0 */
    uint64_t id;   /* TASK, CANCEL, KILL: the task */
    uint32_t chan; /* TASK: the tag of its outcome */
    uint32_t reserved;
    concur__code_ref fn; /* TASK: the function */
} mpi_req;

enum { OPEN_IN_PROCESS = 1, OPEN_BACKTRACE = 2 };

typedef struct mpi_open {
    uint32_t slots; /* the local pool's max_workers */
    uint32_t flags;
    double task_timeout, idle_timeout, cpu_limit;
    uint64_t mem_limit;
    uint64_t max_tasks_per_worker;
    concur__code_ref init, init_arg, final, final_arg, user;
    char name[72];
} mpi_open;

typedef struct mpi_reply {
    uint64_t id;
    uint32_t pool;
    uint32_t reserved;
    uint64_t run_ns; /* how long the task ran on the rank (its local future's run time) */
} mpi_reply;

/* The largest message: MPI counts bytes in an int. */
#define MPI_MSG_MAX ((size_t)INT_MAX)

/* ---- the process's MPI state (engines/mpi_init.c) ---- */

/* The duplicate of MPI_COMM_WORLD all of concur's traffic goes through (errors return). */
extern MPI_Comm concur__mpi_comm;
/* Ranks, and the CPU count of each (gathered at init; NULL on serving ranks). */
extern int concur__mpi_nranks, concur__mpi_myrank;
extern int *concur__mpi_cpus;

/* Sends one request (a message of one record) to @rank: 0, CONCUR_ESIZE, CONCUR_ENOMEM or
 * CONCUR_EIO. Any thread. */
int concur__mpi_send_one(int rank, const mpi_req *r, const void *extra, size_t len);

/* Pools of the MPI engine alive on rank 0 (engines/mpi.c counts them). */
extern _Atomic int concur__mpi_open_pools;
/* Called by concur_mpi_finalize before MPI_Finalize, when set: engines/mpi.c stops its
 * receiver thread there. */
extern void (*concur__mpi_before_finalize)(void);
/* Whether concur_mpi_init was called; whether MPI runs with other ranks (not finalized). */
bool concur__mpi_inited(void);
bool concur__mpi_live(void);

/* The serving rank's loop (engines/mpi_rank.c): never returns. */
_Noreturn void concur__mpi_serve(void);

/* ---- polling ---- */

/* Back-to-back polls for this long after the last message. Longer than a round trip on a
 * loaded machine: a side that sleeps between messages of a back-to-back stream makes the
 * next round trip longer, and so its own next sleep (latency snowballed to 750 us with a
 * window of 200 us on 2 CPUs shared by 3 ranks). */
#define POLL_SPIN_NS 1000000u
#define POLL_MIN_NS 20000u    /* then sleeps from this ... */
#define POLL_MAX_NS 1000000u  /* ... doubling up to this */

/* The pause before the next poll, @quiet_ns after the last message: 0 (yield the CPU and
 * poll again) while it is short, then a sleep that grows with it. */
static inline uint64_t mpi_poll_pause(uint64_t quiet_ns)
{
    if (quiet_ns < POLL_SPIN_NS)
        return 0;
    uint64_t ns = POLL_MIN_NS;
    while (ns < POLL_MAX_NS && ns * 8 < quiet_ns)
        ns *= 2;
    return ns;
}

#endif
