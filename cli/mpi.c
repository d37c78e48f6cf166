/*
 * mpi.c - concur --mpi: the jobs of one run on the ranks of an MPI job (docs/mpi.md).
 *
 * `mpirun -n N concur --mpi [options] CMD ::: args` starts concur on every rank. The concur
 * command does not load MPI itself: with --mpi it replaces itself (execv) by concur-mpi,
 * the same tool linked with libconcur_mpi and installed beside it, so a plain run never
 * pays for MPI. In concur-mpi every rank but 0 stays in concur_mpi_init(), serving; rank 0
 * runs the command line as a local run would, and runs -j jobs itself as a local run does;
 * the other jobs are function tasks (run_remote) on an MPI pool of -j slots per serving
 * rank, so that every rank runs -j jobs at a time. The rank that takes a job runs
 * its command with the runner (capture, --timeout, --termseq; a cancel from rank 0 stops it
 * as a signal stops a local run) and answers with the job's record (struct rec), which rank
 * 0 reads back into the result its callbacks handle for a local job (mpi_result): output,
 * -k, --tag, --joblog (its Host column names the rank's host), --results, --halt,
 * --retries and --resume work unchanged.
 *
 * Output comes back when a job ends, so -u, --line-buffer and --pipe are refused, as is
 * --report. Without a launcher, or with one rank, the run is local.
 */
#include "run.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ the record */

/* A job's record as a rank sends it back: this header, then the stdout and stderr bytes,
 * then the error message and the host name, each NUL-terminated (the NUL counted). */
enum { REC_MAGIC = 0x6d727563 }; /* "curm" */
enum { R_SUCCESS = 1, R_TIMEOUT = 2, R_STOPPED = 4, R_SPAWNED = 8 };

struct rec {
    uint32_t magic, flags;
    int32_t exit_code, sig, error, pad;
    double start, run;
    uint64_t out_len, err_len, msg_len, host_len;
};

/* Reads the record of an MPI job into *out (a copy of @res with the command's outcome; its
 * buffers point into @res's answer) and its host into *host. A job that has no record (it
 * never reached a rank, or the run was stopped before it answered) is a failed start,
 * except that a cancel (the run's stop) is a job stopped by a signal. Returns the result to
 * use. */
const concur_result *mpi_result(const concur_result *res, concur_result *out, const char **host)
{
    struct rec h;
    *out = *res;
    *host = NULL;
    if (!res->function)
        return res;
    if (!res->answer || res->answer_len < sizeof(h)) {
        if (res->error == CONCUR_ECANCELED) {
            out->spawned = true; /* stopped by the run's stop: neither printed nor logged */
            out->stopped = true;
            out->signal = SIGTERM;
            out->error = 0;
        } else {
            out->spawned = false;
            if (!out->error)
                out->error = CONCUR_EIO;
        }
        return out;
    }
    memcpy(&h, res->answer, sizeof(h));
    const unsigned char *p = res->answer + sizeof(h);
    uint64_t room = res->answer_len - sizeof(h);
    if (h.magic != REC_MAGIC || h.out_len > room || h.err_len > room - h.out_len ||
        h.msg_len > room - h.out_len - h.err_len ||
        h.host_len != room - h.out_len - h.err_len - h.msg_len ||
        (h.msg_len && p[h.out_len + h.err_len + h.msg_len - 1]) ||
        (h.host_len && p[room - 1])) {
        out->spawned = false;
        out->error = CONCUR_EIO;
        out->error_message = "concur: a malformed job record came back from its rank";
        return out;
    }
    out->success = h.flags & R_SUCCESS;
    out->timeout = h.flags & R_TIMEOUT;
    out->stopped = h.flags & R_STOPPED;
    out->spawned = h.flags & R_SPAWNED;
    out->exit_code = h.exit_code;
    out->signal = h.sig;
    out->returncode = h.sig ? -h.sig : h.exit_code;
    out->error = h.error;
    out->time_start = h.start;
    out->time_run = h.run;
    out->out = p;
    out->out_len = (size_t)h.out_len;
    out->err = p + h.out_len;
    out->err_len = (size_t)h.err_len;
    out->out_mapped = out->err_mapped = false;
    out->error_message = h.msg_len > 1 ? (const char *)p + h.out_len + h.err_len : NULL;
    *host = h.host_len > 1 ? (const char *)p + room - h.host_len : NULL;
    out->answer = NULL;
    out->answer_len = 0;
    return out;
}

#ifdef CONCUR_CLI_MPI

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>

/* The options every rank parsed from the same command line: the serving ranks read the
 * job's --termseq and --tmpdir from them. Set before they start serving. */
static const struct cli_opts *g_opts;
static char g_host[256]; /* this rank's host name, for its jobs' records and the joblog */

/* Signals. mpirun (and srun) pass SIGINT, SIGTERM and SIGHUP on to every rank. The stop
 * signals are blocked before MPI starts its threads, so that none of them dies of one:
 * rank 0 reads them from the signalfd of a local run (main.c), and a serving rank from
 * signal_main, which stops the jobs running there (it makes g_stopfd readable: every job's
 * run watches it as its stop_fd) and refuses new ones. A serving rank then waits for rank 0 to end the job (it got the signal
 * too, stops the run and releases the ranks); if rank 0 does not within STOP_GRACE_MS of
 * the rank's last job ending, the rank dies of the signal. */
enum { STOP_GRACE_MS = 3000 };
static atomic_int g_signal;  /* the signal that stopped this serving rank, or 0 */
static int g_stopfd = -1;    /* readable once g_signal is set (never drained) */
static atomic_int g_running; /* jobs running on this rank */

struct sigwatch {
    int sigfd, quitfd; /* quitfd: readable once rank 0 is past MPI's start: stop watching */
    pthread_t th;
};

/* Whether the quit descriptor became readable within @ms milliseconds. */
static bool quit_within(int quitfd, int ms)
{
    struct pollfd p = {.fd = quitfd, .events = POLLIN};
    int n = poll(&p, 1, ms);
    return n > 0 || (n < 0 && errno != EINTR);
}

static void *signal_main(void *arg)
{
    struct sigwatch *sw = arg;
    struct pollfd p[2] = {{.fd = sw->quitfd, .events = POLLIN}, {.fd = sw->sigfd, .events = POLLIN}};
    struct signalfd_siginfo si;
    for (;;) {
        int n = poll(p, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || p[0].revents)
            return NULL;
        if (read(sw->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
            break;
    }
    atomic_store(&g_signal, (int)si.ssi_signo);
    uint64_t stop = 1;
    if (write(g_stopfd, &stop, sizeof(stop)) != (ssize_t)sizeof(stop)) {
        /* cannot fail: an eventfd written once */
    }
    do { /* the jobs here stop */
        if (quit_within(sw->quitfd, 10))
            return NULL;
    } while (atomic_load(&g_running) > 0);
    if (quit_within(sw->quitfd, STOP_GRACE_MS))
        return NULL;
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, (int)si.ssi_signo);
    signal((int)si.ssi_signo, SIG_DFL);
    raise((int)si.ssi_signo); /* pending: blocked in this thread too */
    pthread_sigmask(SIG_UNBLOCK, &one, NULL); /* and delivered: the rank ends */
    return NULL;
}

/* Blocks the stop signals (and SIGPIPE) before MPI starts its threads, and starts
 * signal_main. 0 or a negative errno. */
static int sigwatch_start(struct sigwatch *sw)
{
    sigset_t set, pipe;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sw->sigfd = sw->quitfd = -1;
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 || sigprocmask(SIG_BLOCK, &pipe, NULL) < 0)
        return -errno;
    if ((sw->sigfd = signalfd(-1, &set, SFD_CLOEXEC)) < 0 ||
        (sw->quitfd = eventfd(0, EFD_CLOEXEC)) < 0 ||
        (g_stopfd < 0 && (g_stopfd = eventfd(0, EFD_CLOEXEC)) < 0))
        return -errno;
    int rc = pthread_create(&sw->th, NULL, signal_main, sw);
    return -rc;
}

/* Rank 0, past MPI's start: the local run reads the signals from now on. A signal that
 * came meanwhile is raised again for it (it stays pending: it is blocked). */
static void sigwatch_stop(struct sigwatch *sw)
{
    uint64_t one = 1;
    if (write(sw->quitfd, &one, sizeof(one)) == (ssize_t)sizeof(one))
        pthread_join(sw->th, NULL);
    close(sw->sigfd);
    close(sw->quitfd);
    int sig = atomic_load(&g_signal);
    if (sig)
        kill(getpid(), sig);
}

/* The job's record as its answer (see struct rec). 0 or CONCUR_ENOMEM. */
static int answer_record(concur_task *t, const concur_result *res, const char *host)
{
    const char *msg = res->error_message ? res->error_message : "";
    struct rec h = {
        .magic = REC_MAGIC,
        .flags = (res->success ? R_SUCCESS : 0) | (res->timeout ? R_TIMEOUT : 0) |
                 (res->stopped ? R_STOPPED : 0) | (res->spawned ? R_SPAWNED : 0),
        .exit_code = res->exit_code,
        .sig = res->signal,
        .error = res->error,
        .start = res->time_start,
        .run = res->time_run,
        .out_len = res->out_len,
        .err_len = res->err_len,
        .msg_len = strlen(msg) + 1,
        .host_len = strlen(host) + 1,
    };
    size_t total = sizeof(h) + res->out_len + res->err_len + h.msg_len + h.host_len;
    unsigned char *p = concur_task_result_alloc(t, total);
    if (!p)
        return CONCUR_ENOMEM;
    memcpy(p, &h, sizeof(h));
    p += sizeof(h);
    if (res->out_len)
        memcpy(p, res->out, res->out_len);
    p += res->out_len;
    if (res->err_len)
        memcpy(p, res->err, res->err_len);
    p += res->err_len;
    memcpy(p, msg, h.msg_len);
    memcpy(p + h.msg_len, host, h.host_len);
    return 0;
}

static int run_job(concur_task *t, const char *const *argv);

/* Runs one job on this rank: argv[0] is its timeout (seconds, 0: none), the rest its
 * command. Answers the job's record; fails only when the job could not be run at all. */
static int run_remote(concur_task *t, const char *key, int argc, const char *const *argv)
{
    (void)key;
    if (argc < 2)
        return concur_task_fail(t, CONCUR_EINVAL, "a job without a command");
    atomic_fetch_add(&g_running, 1);
    int rc = run_job(t, argv);
    atomic_fetch_sub(&g_running, 1);
    return rc;
}

static int run_job(concur_task *t, const char *const *argv)
{
    if (atomic_load(&g_signal)) /* this rank is stopping */
        return concur_task_fail(t, CONCUR_ECANCELED, "the rank was stopped by a signal");
    char *end;
    double timeout = strtod(argv[0], &end);
    /* A cancel of this task (rank 0's --halt, a stop) ends the run by itself (a run inside
     * a pool task stops with it); a signal to this rank through g_stopfd. */
    concur_runner_opts ro;
    memset(&ro, 0, sizeof(ro));
    ro.max_workers = 1;
    ro.timeout = *end == '\0' && timeout > 0 ? timeout : 0;
    ro.output_cap = 1 << 20;
    ro.tmpdir = g_opts->tmpdir;
    ro.term_seq = g_opts->ntermseq ? g_opts->termseq : NULL;
    ro.term_seq_len = g_opts->ntermseq;
    ro.stop_fd = g_stopfd;
    concur_cmd c = {.argv = argv + 1}; /* argv is NULL-terminated: the command's own */
    concur_runner *r = NULL;
    int rc = concur_run_batch(&c, 1, &ro, &r);
    const concur_result *res = r ? concur_runner_result(r, 0) : NULL;
    if (res)
        rc = answer_record(t, res, g_host);
    concur_runner_destroy(r);
    if (rc)
        return concur_task_fail(t, rc, "running the job: %s", concur_strerror(rc));
    return 0;
}

int mpi_begin(struct app *a, int *argc, char ***argv)
{
    g_opts = &a->o;
    if (gethostname(g_host, sizeof(g_host)) != 0)
        strcpy(g_host, "?");
    g_host[sizeof(g_host) - 1] = '\0';
    static struct sigwatch sw; /* the serving ranks' signal_main uses it until they exit */
    int rc = sigwatch_start(&sw);
    if (rc) {
        cli_error("--mpi: cannot set up signals: %s", strerror(-rc));
        return EXIT_OTHER;
    }
    opts_drop_penv(&a->o); /* before the serving ranks stay in concur_mpi_init: their jobs
                              do not get PARALLEL_ENV either (rank 0 adds its code) */
    rc = concur_mpi_init(argc, argv); /* the serving ranks stay in there */
    sigwatch_stop(&sw);
    if (rc) {
        cli_error("--mpi: cannot start MPI: %s", concur_strerror(rc));
        return EXIT_OTHER;
    }
    if (concur_mpi_size() <= 1)
        return 0; /* no other rank: a local run */
    const struct cli_opts *o = &a->o;
    const char *bad = o->pipe                 ? "--pipe"
                      : o->out == OUT_UNGROUP ? "-u"
                      : o->out == OUT_LINE    ? "--line-buffer"
                      : o->report             ? "--report"
                                              : NULL;
    if (bad) {
        cli_error("--mpi returns each job's output when it ends: it cannot be used with %s",
                  bad);
        return EXIT_USAGE;
    }
    a->mpi_ranks = concur_mpi_size() - 1;
    memcpy(a->mpi_host, g_host, sizeof(a->mpi_host));
    return 0;
}

int mpi_setup(struct app *a, concur_runner_opts *ro)
{
    if (!a->mpi_ranks)
        return 0;
    long per = a->o.jobs > 0 ? a->o.jobs : concur_cpu_count();
    if (per > ro->max_workers && ro->max_workers > 0)
        per = ro->max_workers; /* what the open-file limit allows rank 0's own jobs */
    long total = per * a->mpi_ranks;
    if (total > INT_MAX - per)
        total = INT_MAX - per;
    a->mpi_per_rank = (size_t)per;
    concur_pool_opts po;
    memset(&po, 0, sizeof(po));
    po.engine = CONCUR_ENGINE_MPI;
    po.max_workers = (int)total;
    po.mpi_in_process = true; /* each job is a command in its own process group anyway */
    int rc = concur_pool_create(&a->mpi_pool, &po);
    if (rc) {
        cli_error("--mpi: cannot create the pool of ranks: %s", concur_strerror(rc));
        return rc;
    }
    ro->pool = a->mpi_pool;
    ro->max_workers = (int)(total + per); /* and rank 0's own */
    a->fd_limit = 0; /* the jobs' descriptors are on the ranks */
    return 0;
}

int mpi_cmd(struct app *a, struct job *j, concur_cmd *cmd)
{
    if (a->mpi_local < a->mpi_per_rank) { /* rank 0 has room for one more of its own */
        a->mpi_local++;
        j->mpi_local = true;
        return 0;
    }
    j->mpi_local = false;
    double timeout = cmd->timeout > 0 ? cmd->timeout : a->o.timeout;
    snprintf(j->mpi_ctl, sizeof(j->mpi_ctl), "%.17g", timeout > 0 ? timeout : 0.0);
    buf_reset(&j->mpi_vec);
    const char *ctl = j->mpi_ctl;
    buf_add(&j->mpi_vec, &ctl, sizeof(ctl));
    for (const char *const *p = cmd->argv; *p; p++)
        buf_add(&j->mpi_vec, p, sizeof(*p));
    const char *nul = NULL;
    buf_add(&j->mpi_vec, &nul, sizeof(nul));
    if (!buf_ok(&j->mpi_vec))
        return CONCUR_ENOMEM;
    cmd->argv = (const char *const *)(void *)j->mpi_vec.p;
    cmd->fn = run_remote;
    cmd->timeout = -1; /* timed on its rank: here it would count the transfer too */
    return 0;
}

void mpi_job_over(struct app *a, struct job *j)
{
    if (j->mpi_local) {
        j->mpi_local = false;
        a->mpi_local--;
    }
}

void mpi_end(struct app *a)
{
    concur_pool_destroy(a->mpi_pool);
    a->mpi_pool = NULL;
    if (a->mpi_ranks)
        (void)concur_mpi_finalize();
}

#else /* the concur command: no MPI here */

/* The size of the MPI job this process was started in, from its launcher's environment
 * (Open MPI's mpirun, a PMI launcher such as srun); 0 when none started it. */
static long launcher_size(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return strtol(v, NULL, 10);
    }
    return 0;
}

int mpi_begin(struct app *a, int *argc, char ***argv)
{
    (void)a;
    (void)argc;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash && (size_t)(slash + 1 - self) + sizeof("concur-mpi") <= sizeof(self)) {
            strcpy(slash + 1, "concur-mpi");
            execv(self, *argv); /* returns only on failure */
            if (errno != ENOENT) {
                cli_error("--mpi: cannot run %s: %s", self, strerror(errno));
                return EXIT_OTHER;
            }
        }
    }
    if (launcher_size() > 1) {
        cli_error("--mpi: concur-mpi is not installed beside concur (built without MPI?)");
        return EXIT_USAGE;
    }
    return 0; /* not under a launcher: a local run */
}

int mpi_setup(struct app *a, concur_runner_opts *ro)
{
    (void)a;
    (void)ro;
    return 0;
}

int mpi_cmd(struct app *a, struct job *j, concur_cmd *cmd)
{
    (void)a;
    (void)j;
    (void)cmd;
    return 0;
}

void mpi_job_over(struct app *a, struct job *j)
{
    (void)a;
    (void)j;
}

void mpi_end(struct app *a)
{
    (void)a;
}

#endif
