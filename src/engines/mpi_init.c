/*
 * engines/mpi_init.c - concur/mpi.h: starting and ending MPI, and which class an MPI pool
 * gets (libconcur_mpi only).
 *
 * MPI is started only under a launcher (mpirun, srun: their environment says so), with
 * MPI_THREAD_MULTIPLE since every rank-0 slot thread talks to its rank itself. All traffic
 * goes through a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN, so the application's
 * own messages never meet concur's and an MPI error is a return code, not an abort. Each
 * rank reports its CPU count to rank 0 (MPI_Gather): the default max_workers of a pool.
 * Ranks that share a node keep their pools' idle spinning to their share of its CPUs
 * (concur__cpu_share).
 */
#include "engines/mpi_proto.h"

#include <stdlib.h>

MPI_Comm concur__mpi_comm = MPI_COMM_NULL;
int concur__mpi_nranks = 1, concur__mpi_myrank = 0;
int *concur__mpi_cpus;

_Atomic int concur__mpi_open_pools;
void (*concur__mpi_before_finalize)(void);

static bool g_inited, g_started, g_finalized;
static bool g_own_mpi; /* concur_mpi_init started MPI (not the program): it ends it too */

/* concur_mpi_init failed once the ranks were counted: a serving rank exits (mpirun ends
 * the job); rank 0 returns @rc, and its MPI pools run locally, as without a launcher,
 * instead of sending to ranks that are gone. */
static int init_failed(int rank, int rc)
{
    if (rank != 0)
        exit(1);
    concur__mpi_nranks = 1;
    return rc;
}

/* How many ranks run on this rank's node (a collective call): 0 or CONCUR_EIO. */
static int ranks_on_node(int *n)
{
    MPI_Comm node;
    if (MPI_Comm_split_type(concur__mpi_comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) !=
        MPI_SUCCESS)
        return CONCUR_EIO;
    int rc = MPI_Comm_size(node, n) == MPI_SUCCESS ? 0 : CONCUR_EIO;
    return MPI_Comm_free(&node) == MPI_SUCCESS ? rc : CONCUR_EIO;
}

/* Whether a launcher started this process (Open MPI, PMIx, PMI-1/2, Slurm's srun). */
static bool under_launcher(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE",
                                       "PMI_RANK", "SLURM_STEP_ID"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (getenv(vars[i]))
            return true;
    return false;
}

static int finalize(bool force);

/* At exit the pools still open were shut down by the core's exit handler (registered after
 * this one, so it ran first): their ranks are told to leave all the same. */
static void at_exit(void)
{
    (void)finalize(true);
}

int concur__mpi_send_one(int rank, const mpi_req *r, const void *extra, size_t len)
{
    uint64_t rec = sizeof(*r) + (uint64_t)len;
    if (rec > MPI_MSG_MAX - sizeof(rec))
        return CONCUR_ESIZE;
    char small[sizeof(rec) + sizeof(*r) + 256];
    char *b = sizeof(rec) + rec <= sizeof(small) ? small : malloc(sizeof(rec) + (size_t)rec);
    if (!b)
        return CONCUR_ENOMEM;
    memcpy(b, &rec, sizeof(rec));
    memcpy(b + sizeof(rec), r, sizeof(*r));
    if (len)
        memcpy(b + sizeof(rec) + sizeof(*r), extra, len);
    int rc = MPI_Send(b, (int)(sizeof(rec) + rec), MPI_BYTE, rank, TAG_REQ, concur__mpi_comm);
    if (b != small)
        free(b);
    return rc == MPI_SUCCESS ? 0 : CONCUR_EIO;
}

/* Tells every serving rank to leave. */
static void send_exit(void)
{
    mpi_req r = {.type = REQ_EXIT};
    for (int k = 1; k < concur__mpi_nranks; k++)
        (void)concur__mpi_send_one(k, &r, NULL, 0);
}

int concur_mpi_init(int *argc, char ***argv)
{
    if (g_inited)
        return CONCUR_EBUSY;
    g_inited = true;
    int already = 0, provided = 0;
    if (MPI_Initialized(&already) != MPI_SUCCESS)
        return CONCUR_EIO;
    if (!already && !under_launcher())
        return 0; /* one process: MPI pools run locally */
    if (already) { /* the program started MPI itself: it also ends it */
        if (MPI_Query_thread(&provided) != MPI_SUCCESS)
            return CONCUR_EIO;
    } else {
        if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
            return CONCUR_EIO;
        g_own_mpi = true;
    }
    g_started = true;
    int rank = 0, size = 1;
    /* The rank first: on an error below, only rank 0 may return to the program. */
    if (MPI_Comm_rank(MPI_COMM_WORLD, &rank) != MPI_SUCCESS)
        return CONCUR_EIO;
    if (provided < MPI_THREAD_MULTIPLE ||
        MPI_Comm_dup(MPI_COMM_WORLD, &concur__mpi_comm) != MPI_SUCCESS ||
        MPI_Comm_set_errhandler(concur__mpi_comm, MPI_ERRORS_RETURN) != MPI_SUCCESS ||
        MPI_Comm_rank(concur__mpi_comm, &rank) != MPI_SUCCESS ||
        MPI_Comm_size(concur__mpi_comm, &size) != MPI_SUCCESS) {
        if (rank != 0)
            exit(1); /* mpirun ends the job */
        return provided < MPI_THREAD_MULTIPLE ? CONCUR_ENOTSUP : CONCUR_EIO;
    }
    concur__mpi_myrank = rank;
    concur__mpi_nranks = size;
    int cpus = concur_cpu_count();
    /* Rank 0 cannot leave the others waiting in the gather: all learn whether it has room
     * for the figures first. */
    int ok = rank != 0 || (concur__mpi_cpus = calloc((size_t)size, sizeof(int))) != NULL;
    int all_ok = 0, local = 0;
    if (MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, concur__mpi_comm) != MPI_SUCCESS ||
        !all_ok ||
        MPI_Gather(&cpus, 1, MPI_INT, concur__mpi_cpus, 1, MPI_INT, 0, concur__mpi_comm) !=
            MPI_SUCCESS ||
        ranks_on_node(&local) != 0)
        return init_failed(rank, ok ? CONCUR_EIO : CONCUR_ENOMEM);
    /* Ranks sharing a node share its CPUs: a pool here spins only within its share. */
    if (local > 1)
        atomic_store(&concur__cpu_share, cpus / local > 0 ? cpus / local : 1);
    if (rank != 0)
        concur__mpi_serve();
    if (atexit(at_exit) != 0) {
        send_exit(); /* without the handler the ranks would wait for ever */
        return init_failed(rank, CONCUR_ENOMEM);
    }
    return 0;
}

int concur_mpi_finalize(void)
{
    return finalize(false);
}

static int finalize(bool force)
{
    if (!g_started || g_finalized || concur__mpi_myrank != 0)
        return 0;
    if (!force && atomic_load(&concur__mpi_open_pools) > 0)
        return CONCUR_EBUSY;
    g_finalized = true;
    if (concur__mpi_before_finalize)
        concur__mpi_before_finalize();
    send_exit();
    (void)MPI_Comm_free(&concur__mpi_comm);
    if (g_own_mpi)
        (void)MPI_Finalize();
    free(concur__mpi_cpus);
    concur__mpi_cpus = NULL;
    concur__mpi_nranks = 1;
    return 0;
}

int concur_mpi_rank(void)
{
    return concur__mpi_myrank;
}

int concur_mpi_size(void)
{
    return concur__mpi_nranks;
}

bool concur__mpi_inited(void)
{
    return g_inited;
}

bool concur__mpi_live(void)
{
    return concur__mpi_nranks > 1 && !g_finalized;
}
