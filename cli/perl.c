/*
 * perl.c - GNU parallel's {= perl expression =} replacement strings.
 *
 * As in GNU parallel, the expression is Perl code run with $_ set to the argument; the
 * value of $_ afterwards replaces the string. All the expressions of a run share one
 * interpreter, so state (a counter, a hash) persists from job to job.
 *
 * That interpreter is ONE perl process per run, started when the first template with a
 * {= is compiled, and fed over two pipes: requests on its descriptor 3, replies on its
 * descriptor 4 (its standard output and error stay concur's, so what an expression prints
 * shows as it would under GNU parallel; its standard input is /dev/null). The driver it
 * runs (below) compiles each expression once, when the template is compiled (a syntax
 * error stops concur before any job runs), and then evaluates them on request.
 *
 * The protocol: a line of words, then the bytes whose lengths the line gives.
 *   C LEN \n SRC                 compile SRC; reply "0 0 0" or "1 0 LEN\nMESSAGE"
 *   J SEQ NARGS LEN1 .. LENn \n ARGS   the job the next evaluations are for (no reply)
 *   E ID POS SLOT TOTAL DONE \n  evaluate expression ID with $_ = argument POS (0-based;
 *                                -1: none); reply "STATUS FLAGS LEN\nVALUE", FLAGS
 *                                1: uq() was called, 2: skip() was called
 * One evaluation is one round trip. Values are cached per job (and argument): the command
 * line is expanded more than once for some jobs (the line for the joblog, the argv), and
 * an expression with side effects must still run once per job and argument, as in GNU
 * parallel.
 *
 * The process is reaped by perl_end(): closing its request pipe ends it (it reads EOF);
 * after a signal it is also sent SIGTERM. Should concur die without that, the same EOF
 * ends it.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The driver. Package Arg comes first, before any lexical of the driver exists, so that
 * the expressions (compiled there, as GNU parallel compiles them) see none of them. */
static const char driver[] =
    "package Arg;\n"
    "sub concur_compile { eval('sub { no strict; no warnings; my $job = shift; '.$_[0].\"\\n}\") }\n"
    "our (@arg, $concur_uq, $concur_skip, $concur_seq, $concur_slot, $concur_total);\n"
    "sub Q($) { my $s = $_[0]; return \"''\" if !defined $s || $s eq '';\n"
    "  return $s if $s !~ /[^-_.+a-z0-9\\/]/i;\n"
    "  $s =~ s/'/'\"'\"'/g; $s = \"'$s'\"; $s =~ s/^''//; $s =~ s/''$//; $s }\n"
    "sub pQ($) { my $s = $_[0]; $s =~ s/[\\\\\\\"\\$\\@]/\\\\$&/g if defined $s; $s }\n"
    "sub uq() { $concur_uq = 1 }\n"
    "sub skip() { $concur_skip = 1 }\n"
    "sub seq() { $concur_seq }\n"
    "sub slot() { $concur_slot }\n"
    "sub total_jobs() { $concur_total }\n"
    "sub hash($) { require B; B::hash(@_) }\n"
    "sub concur_t { require POSIX; POSIX::strftime($_[0], localtime(time())) }\n"
    "sub yyyy_mm_dd_hh_mm_ss() { concur_t('%Y-%m-%dT%H:%M:%S') }\n"
    "sub yyyy_mm_dd_hh_mm() { concur_t('%Y-%m-%dT%H:%M') }\n"
    "sub yyyy_mm_dd() { concur_t('%Y-%m-%d') }\n"
    "sub hh_mm_ss() { concur_t('%H:%M:%S') }\n"
    "sub hh_mm() { concur_t('%H:%M') }\n"
    "sub yyyymmddhhmmss() { concur_t('%Y%m%d%H%M%S') }\n"
    "sub yyyymmddhhmm() { concur_t('%Y%m%d%H%M') }\n"
    "sub yyyymmdd() { concur_t('%Y%m%d') }\n"
    "sub hhmmss() { concur_t('%H%M%S') }\n"
    "sub hhmm() { concur_t('%H%M') }\n"
    "package Concur::Job;\n"
    "sub seq { $Arg::concur_seq } sub slot { $Arg::concur_slot }\n"
    "sub skip { $Arg::concur_skip = 1 }\n"
    "package main;\n"
    "use strict; use warnings; no warnings 'once'; use Fcntl; use IO::Handle;\n"
    "open(my $in, '<&=', 3) or die \"concur's perl: fd 3: $!\\n\";\n"
    "open(my $out, '>&=', 4) or die \"concur's perl: fd 4: $!\\n\";\n"
    "for my $fh ($in, $out) { binmode $fh; my $f = fcntl($fh, F_GETFD, 0);\n"
    "  fcntl($fh, F_SETFD, $f | FD_CLOEXEC) or die \"concur's perl: fcntl: $!\\n\" }\n"
    "$out->autoflush(1);\n"
    "my (@code, @args);\n"
    "my $job = bless {}, 'Concur::Job';\n"
    "sub get { my $s = ''; while (length $s < $_[0]) {\n"
    "  my $r = read($in, $s, $_[0] - length $s, length $s); exit 0 unless $r } $s }\n"
    "sub put { print {$out} \"$_[0] $_[1] \", length($_[2]), \"\\n\", $_[2] }\n"
    "while (defined(my $h = <$in>)) {\n"
    "  chomp $h; my @w = split / /, $h;\n"
    "  if ($w[0] eq 'C') {\n"
    "    my $c = Arg::concur_compile(get($w[1]));\n"
    "    push @code, $c; $c ? put(0, 0, '') : put(1, 0, \"$@\");\n"
    "  } elsif ($w[0] eq 'J') {\n"
    "    $Arg::concur_seq = $w[1]; @args = map { get($_) } @w[3 .. $#w];\n"
    "  } elsif ($w[0] eq 'E') {\n"
    "    ($Arg::concur_slot, $Arg::concur_total, $Global::total_completed) = @w[3 .. 5];\n"
    "    @Arg::arg = (undef, @args); $Arg::concur_uq = $Arg::concur_skip = 0;\n"
    "    local $_ = $w[2] >= 0 ? $args[$w[2]] : '';\n"
    "    my $ok = eval { $code[$w[1]]->($job); 1 };\n"
    "    my $v = $ok ? (defined $_ ? \"$_\" : '') : \"$@\";\n"
    "    put($ok ? 0 : 1, ($Arg::concur_uq ? 1 : 0) | ($Arg::concur_skip ? 2 : 0), $v);\n"
    "  }\n"
    "}\n";

/* An expression: its source, and whether perl could not compile it. */
struct pexpr {
    char *src;
    size_t len;
    bool bad;
};

/* A value computed for the current job: expression, argument, flags, bytes in `vals`. */
struct pval {
    int id;
    long pos;
    unsigned flags;
    size_t off, len;
};

static struct {
    pid_t pid;        /* 0: not started */
    int to, from;     /* the request and reply pipes (our ends) */
    bool failed;      /* a message was printed: expansions fail from now on */
    struct buf exprs; /* struct pexpr[] (index: the expression's id) */
    struct buf job;   /* the last job sent (J): its seq and arguments, as a key */
    struct buf cache; /* struct pval[] for that job */
    struct buf vals;  /* their bytes */
    bool skip;        /* an expression asked to skip that job */
    struct buf req, in; /* a request being built; replies read ahead */
    size_t in_pos;
    size_t completed;
    int intr;         /* readable once concur is to stop (its signalfd; -1: none) */
    bool interrupted; /* a wait for perl ended because of it */
} P = {.to = -1, .from = -1, .intr = -1};

#define EXPRS ((struct pexpr *)P.exprs.p)
#define NEXPRS (P.exprs.len / sizeof(struct pexpr))

/* A descriptor moved to 5 or above (so that it is never one of the child's 3 and 4),
 * close-on-exec. -1 with errno on failure (fd is closed either way). */
static int high_fd(int fd)
{
    if (fd >= 5)
        return fd;
    int n = fcntl(fd, F_DUPFD_CLOEXEC, 5);
    int saved = errno;
    close(fd);
    errno = saved;
    return n;
}

static int spawn_driver(int req_r, int rep_w)
{
    static char *argv[] = {"perl", "-e", (char *)driver, NULL};
    const int fds[][2] = {{-1, 0}, {req_r, 3}, {rep_w, 4}};
    return spawn_fds(&P.pid, argv, fds, 3);
}

/* Starts the perl process. 0, or -1 after a message. */
static int start(void)
{
    int req[2], rep[2];
    if (pipe2(req, O_CLOEXEC) < 0) {
        cli_error("cannot start perl for {= =}: pipe: %s", strerror(errno));
        return -1;
    }
    if (pipe2(rep, O_CLOEXEC) < 0) {
        cli_error("cannot start perl for {= =}: pipe: %s", strerror(errno));
        close(req[0]);
        close(req[1]);
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        req[i] = high_fd(req[i]);
        rep[i] = high_fd(rep[i]);
    }
    int rc = req[0] < 0 || req[1] < 0 || rep[0] < 0 || rep[1] < 0 ? errno : 0;
    if (!rc)
        rc = spawn_driver(req[0], rep[1]);
    for (int i = 0; i < 2; i++) { /* the child's ends, and ours on failure */
        if (req[i] >= 0 && (i == 0 || rc))
            close(req[i]);
        if (rep[i] >= 0 && (i == 1 || rc))
            close(rep[i]);
    }
    if (rc) {
        cli_error("cannot run perl, which {= perl expression =} needs: %s", strerror(rc));
        return -1;
    }
    P.to = req[1];
    P.from = rep[0];
    return 0;
}

/* Sends the request built in P.req. 0 or -1 after a message. */
static int send_req(void)
{
    if (!buf_ok(&P.req)) {
        cli_error("out of memory");
        return -1;
    }
    int rc = write_all(P.to, P.req.p, P.req.len);
    buf_reset(&P.req);
    if (rc) {
        cli_error("cannot write to perl (for {= =}): %s", strerror(-rc));
        return -1;
    }
    return 0;
}

/* Reads until P.in holds `want` bytes past P.in_pos. 0, or -1 at the end or on error. */
static int fill(size_t want)
{
    if (P.in_pos && P.in_pos == P.in.len) {
        buf_reset(&P.in);
        P.in_pos = 0;
    }
    while (P.in.len - P.in_pos < want) {
        if (!buf_reserve(&P.in, 4096))
            return -1;
        /* a signal for concur ends the wait (a slow expression must not hold it up) */
        struct pollfd pf[2] = {{.fd = P.from, .events = POLLIN}, {.fd = P.intr, .events = POLLIN}};
        int ready = poll(pf, P.intr >= 0 ? 2 : 1, -1);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0)
            return -1;
        if (!pf[0].revents && (pf[1].revents & POLLIN)) {
            P.interrupted = true;
            return -1;
        }
        ssize_t n = read(P.from, P.in.p + P.in.len, P.in.cap - P.in.len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        P.in.len += (size_t)n;
        P.in.p[P.in.len] = '\0'; /* (for sscanf: a buf's content ends with a NUL) */
    }
    return 0;
}

/* Reads a reply: status, flags, and the value (*val into P.in, valid until the next read). */
static int read_reply(int *status, unsigned *flags, const char **val, size_t *len)
{
    char *nl;
    for (;;) {
        nl = P.in.len > P.in_pos ? memchr(P.in.p + P.in_pos, '\n', P.in.len - P.in_pos) : NULL;
        if (nl)
            break;
        if (fill(P.in.len - P.in_pos + 1) != 0)
            goto broken;
    }
    unsigned long st, fl, n;
    if (sscanf(P.in.p + P.in_pos, "%lu %lu %lu", &st, &fl, &n) != 3)
        goto broken;
    P.in_pos = (size_t)(nl + 1 - P.in.p);
    if (fill(n) != 0)
        goto broken;
    *status = (int)st;
    *flags = (unsigned)fl;
    *val = P.in.p + P.in_pos;
    *len = n;
    P.in_pos += n;
    return 0;
broken:
    if (!P.interrupted) /* (interrupted: concur stops, quietly, as for any signal) */
        cli_error("the perl process of {= =} ended%s", P.in.failed ? " (out of memory)" : "");
    return -1;
}

/* The length of a perl message to show: without its trailing newline, at most 2000 bytes. */
static int msg_len(const char *m, size_t n)
{
    while (n && (m[n - 1] == '\n' || m[n - 1] == ' '))
        n--;
    return n > 2000 ? 2000 : (int)n;
}

int perl_expr(const char *src, size_t n)
{
    for (size_t i = 0; i < NEXPRS; i++)
        if (EXPRS[i].len == n && !memcmp(EXPRS[i].src, src, n))
            return EXPRS[i].bad ? -1 : (int)i;
    if (P.failed || (!P.pid && start() != 0)) {
        P.failed = true;
        return -1;
    }
    struct pexpr e = {.src = malloc(n + 1), .len = n};
    if (!e.src || !buf_reserve(&P.exprs, sizeof(e))) {
        free(e.src);
        cli_error("out of memory");
        P.failed = true;
        return -1;
    }
    memcpy(e.src, src, n);
    e.src[n] = '\0';
    buf_printf(&P.req, "C %zu\n", n);
    buf_add(&P.req, src, n);
    int status;
    unsigned flags;
    const char *msg;
    size_t len;
    if (send_req() != 0 || read_reply(&status, &flags, &msg, &len) != 0) {
        free(e.src);
        P.failed = true;
        return -1;
    }
    e.bad = status != 0;
    buf_add(&P.exprs, &e, sizeof(e));
    if (e.bad) {
        cli_error("cannot use the perl expression {=%s=}: %.*s", e.src, msg_len(msg, len), msg);
        P.failed = true;
        return -1;
    }
    return (int)(NEXPRS - 1);
}

void perl_set_intr_fd(int fd)
{
    P.intr = fd;
}

bool perl_failed(void)
{
    return P.failed;
}

void perl_set_completed(size_t n)
{
    P.completed = n;
}


/* Makes the job of j the one perl evaluates for (a J request when it is another one; its
 * cached values are then dropped). 0 or -1 after a message. */
static int set_job(const struct jobview *j)
{
    size_t key = sizeof(size_t) * 2;
    for (size_t a = 0; a < j->nargs; a++)
        key += sizeof(size_t) + j->args[a].len;
    bool same = P.job.len == key && !memcmp(P.job.p, &j->seq, sizeof(size_t)) &&
                !memcmp(P.job.p + sizeof(size_t), &j->nargs, sizeof(size_t));
    for (size_t a = 0, at = sizeof(size_t) * 2; same && a < j->nargs; a++) {
        same = !memcmp(P.job.p + at, &j->args[a].len, sizeof(size_t)) &&
               !memcmp(P.job.p + at + sizeof(size_t), j->args[a].p, j->args[a].len);
        at += sizeof(size_t) + j->args[a].len;
    }
    if (same)
        return 0;
    buf_reset(&P.job);
    buf_reset(&P.cache);
    buf_reset(&P.vals);
    P.skip = false;
    buf_add(&P.job, &j->seq, sizeof(size_t));
    buf_add(&P.job, &j->nargs, sizeof(size_t));
    buf_printf(&P.req, "J %zu %zu", j->seq, j->nargs);
    for (size_t a = 0; a < j->nargs; a++) {
        buf_add(&P.job, &j->args[a].len, sizeof(size_t));
        buf_add(&P.job, j->args[a].p, j->args[a].len);
        buf_printf(&P.req, " %zu", j->args[a].len);
    }
    buf_addc(&P.req, '\n');
    for (size_t a = 0; a < j->nargs; a++)
        buf_add(&P.req, j->args[a].p, j->args[a].len);
    if (!buf_ok(&P.job))
        buf_reset(&P.job); /* no key: the job is sent again next time */
    return send_req();
}

int perl_value(int id, const struct jobview *j, long pos, size_t total, const char **val,
               size_t *len, bool *unquote)
{
    if (P.failed || id < 0 || (size_t)id >= NEXPRS)
        return -1;
    if (set_job(j) != 0) {
        P.failed = true;
        return -1;
    }
    const struct pval *c = (const struct pval *)P.cache.p;
    for (size_t i = 0; i < P.cache.len / sizeof(*c); i++)
        if (c[i].id == id && c[i].pos == pos) {
            *val = P.vals.p + c[i].off;
            *len = c[i].len;
            *unquote = c[i].flags & 1;
            return 0;
        }
    buf_printf(&P.req, "E %d %ld %u %zu %zu\n", id, pos, j->slot, total, P.completed);
    int status;
    unsigned flags;
    const char *v;
    size_t n;
    if (send_req() != 0 || read_reply(&status, &flags, &v, &n) != 0) {
        P.failed = true;
        return -1;
    }
    if (status != 0) {
        cli_error("the perl expression {=%s=} failed: %.*s", EXPRS[id].src, msg_len(v, n), v);
        P.failed = true;
        return -1;
    }
    P.skip = P.skip || (flags & 2);
    struct pval e = {.id = id, .pos = pos, .flags = flags, .off = P.vals.len, .len = n};
    buf_add(&P.vals, v, n);
    buf_add(&P.cache, &e, sizeof(e));
    if (!buf_ok(&P.vals) || !buf_ok(&P.cache)) {
        cli_error("out of memory");
        P.failed = true;
        return -1;
    }
    *val = P.vals.p + e.off;
    *len = n;
    *unquote = flags & 1;
    return 0;
}

bool perl_skipped(const struct jobview *j)
{
    if (!P.failed && set_job(j) != 0)
        P.failed = true;
    return P.skip;
}

void perl_end(bool interrupted)
{
    if (P.to >= 0)
        close(P.to); /* EOF: the driver's loop ends */
    if (P.from >= 0)
        close(P.from);
    P.to = P.from = -1;
    if (P.pid > 0) {
        if (interrupted && kill(P.pid, SIGTERM) < 0 && errno != ESRCH)
            cli_warn("cannot stop the perl process: %s", strerror(errno));
        while (waitpid(P.pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    P.pid = 0;
    for (size_t i = 0; i < NEXPRS; i++)
        free(EXPRS[i].src);
    buf_free(&P.exprs);
    buf_free(&P.job);
    buf_free(&P.cache);
    buf_free(&P.vals);
    buf_free(&P.req);
    buf_free(&P.in);
    P.in_pos = 0;
}
