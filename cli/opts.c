/*
 * opts.c - the command line: options, the command words, and the input groups.
 *
 *   concur [OPTION]... [COMMAND [WORD]...] [::: ARG... | :::+ ARG... | :::: FILE... ]...
 *
 * As with GNU parallel (Getopt::Long with bundling and require_order), options come first;
 * the first word that is not an option starts the command, and everything up to the first
 * ::: / :::+ / :::: / ::::+ separator is a command word, even when it starts with '-'.
 * Short options may be bundled (-kj4), take their value glued or as the next word (-j4,
 * -j 4); long ones take it after '=' or as the next word, and may be abbreviated to any
 * unambiguous prefix (--keep for --keep-order).
 *
 * The option table below is the single source of --help; docs/concur.1 has one entry per
 * row with the same text.
 *
 * opts_parse() reads argv in three passes over one cursor (struct parse): the options
 * (parse_options, one long_option or short_options bundle a word, each applied by apply()
 * as it is read), the command words, then the input groups (parse_groups).
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* In the order of the table below, section by section: apply() relies on it. */
enum optid {
    O_ARGFILE,
    O_NULL,
    O_DELIM,
    O_COLSEP,
    O_TRIM,
    O_HEADER,
    O_LINK,
    O_XAPPLY,
    O_EOF,
    O_ARGSEP,
    O_SHUF,
    O_MAXARGS,
    O_MAXCHARS,
    O_X,
    O_M,
    O_QUOTE,
    O_PLUS,
    O_REPLACE,
    O_REPLACE_I,
    O_RENAME_DIR,
    O_RENAME_BASE,
    O_RENAME_EXT,
    O_RENAME_BASEEXT,
    O_SHELL,
    O_ENV,
    O_NORUNEMPTY,
    O_WD,
    O_SHELLQUOTE,
    O_PIPE,
    O_SPREAD,
    O_PIPEPART,
    O_BLOCK,
    O_BLOCKSIZE,
    O_RECEND,
    O_RECSTART,
    O_MAXREPL,
    O_MAXLINES,
    O_MAXLINES_L,
    O_RRS,
    O_REGEXP,
    O_GROUPBY,
    O_JOBS,
    O_TIMEOUT,
    O_TERMSEQ,
    O_RETRIES,
    O_HALT,
    O_NICE,
    O_DELAY,
    O_MPI,
    O_GROUP,
    O_LINEBUF,
    O_UNGROUP,
    O_KEEP,
    O_TAG,
    O_TAGSTRING,
    O_CTAG,
    O_CTAGSTRING,
    O_RESULTS,
    O_JSON,
    O_JOBLOG,
    O_RESUME,
    O_RESUMEF,
    O_RETRYF,
    O_FILES,
    O_BAR,
    O_ETA,
    O_PROGRESS,
    O_DRYRUN,
    O_REPORT,
    O_TMPDIR,
    O_COMPRESS,
    O_TRACE,
    O_VERBOSE,
    O_PROFILE,
    O_WILLCITE,
    O_HELP,
    O_VERSION,
};

struct optdef {
    enum optid id;
    char shortname;       /* 0: none */
    const char *longname; /* NULL: none */
    const char *arg;      /* value name, NULL for flags */
    const char *help;     /* NULL: an alias listed with the previous entry */
    const char *section;  /* printed before this entry when not NULL */
    /* a value that may be left out (arg is then NULL): 'g' only glued (-iSTR) or after '='
     * (--replace=STR); 'n' also the next word when it is a number (-l 4, --max-lines 4) */
    char optional;
};

static const struct optdef optdefs[] = {
    {O_ARGFILE, 'a', "arg-file", "FILE", "read arguments from FILE, one per line", "Input", 0},
    {O_NULL, '0', "null", NULL, "arguments end with a NUL byte, not a newline", NULL, 0},
    {O_DELIM, 'd', "delimiter", "DELIM", "arguments end with DELIM (\\n, \\t, \\0, \\xHH...)",
     NULL, 0},
    {O_COLSEP, 'C', "colsep", "REGEX", "split arguments into columns {1} {2}... on REGEX", NULL, 0},
    {O_TRIM, 0, "trim", "HOW", "strip blanks around arguments: n, l, r, lr (--colsep: lr)", NULL, 0},
    {O_HEADER, 0, "header", ":", "the first input line names the columns: {name} (0: files)", NULL, 0},
    {O_LINK, 0, "link", NULL, "take the input groups in step, not every combination", NULL, 0},
    {O_XAPPLY, 0, "xapply", NULL, NULL, NULL, 0},
    {O_EOF, 'E', NULL, "STR", "an input source ends at a line that is STR", NULL, 0},
    {O_EOF, 'e', "eof", NULL, "as -E, the value glued: -eSTR, --eof=STR", NULL, 'g'},
    {O_ARGSEP, 0, "arg-sep", "SEP", "SEP instead of ::: (and SEP+ instead of :::+)", NULL, 0},
    {O_ARGSEP, 0, "argsep", "SEP", NULL, NULL, 0},
    {O_SHUF, 0, "shuf", NULL, "run the jobs in a random order", NULL, 0},
    {O_MAXARGS, 'n', "max-args", "N", "pass up to N arguments to each command (0: none)",
     "Commands", 0},
    {O_MAXCHARS, 's', "max-chars", "N", "command lines of fewer than N characters", NULL, 0},
    {O_X, 'X', NULL, NULL, "many arguments per command, repeating the word of {}", NULL, 0},
    {O_M, 'm', NULL, NULL, "many arguments per command, all in place of {}", NULL, 0},
    {O_QUOTE, 'q', "quote", NULL, "quote the command words too (no shell syntax)", NULL, 0},
    {O_PLUS, 0, "plus", NULL, "also {+/} {..} {##} {0#} {#re} {/re/str} {:-str} {uniq}... (see man)", NULL, 0},
    {O_REPLACE, 'I', NULL, "STR", "STR stands for the argument instead of {}", NULL, 0},
    {O_REPLACE_I, 'i', "replace", NULL, "as -I {} (-iSTR, --replace=STR: as -I STR)", NULL, 'g'},
    {O_RENAME_DIR, 0, "dirnamereplace", "STR", "STR stands for {//}", NULL, 0},
    {O_RENAME_DIR, 0, "dnr", "STR", NULL, NULL, 0},
    {O_RENAME_BASE, 0, "basenamereplace", "STR", "STR stands for {/}", NULL, 0},
    {O_RENAME_BASE, 0, "bnr", "STR", NULL, NULL, 0},
    {O_RENAME_EXT, 0, "extensionreplace", "STR", "STR stands for {.}", NULL, 0},
    {O_RENAME_EXT, 0, "er", "STR", NULL, NULL, 0},
    {O_RENAME_BASEEXT, 0, "basenameextensionreplace", "STR", "STR stands for {/.}", NULL, 0},
    {O_RENAME_BASEEXT, 0, "bner", "STR", NULL, NULL, 0},
    {O_SHELL, 0, "shell", NULL, "always run the command line with $SHELL -c", NULL, 0},
    {O_ENV, 0, "env", "NAME", "accepted: jobs inherit the whole environment", NULL, 0},
    {O_NORUNEMPTY, 'r', "no-run-if-empty", NULL, "skip input lines that are empty or only blanks",
     NULL, 0},
    {O_WD, 0, "wd", "DIR", "run the jobs in DIR, made if missing (...: a new one per job)", NULL, 0},
    {O_WD, 0, "workdir", "DIR", NULL, NULL, 0},
    {O_SHELLQUOTE, 0, "shellquote", NULL, "print the command lines shell-quoted, run nothing", NULL, 0},
    {O_PIPE, 0, "pipe", NULL, "cut standard input into blocks, each the stdin of a job", "Pipe", 0},
    {O_SPREAD, 0, "spreadstdin", NULL, NULL, NULL, 0},
    {O_PIPEPART, 0, "pipepart", NULL, "as --pipe, the blocks read from the -a / :::: file", NULL,
     0},
    {O_BLOCK, 0, "block", "SIZE",
     "blocks of about SIZE bytes (k, K, M, G...; 1M; --pipepart: -N: N a job slot)",
     NULL, 0},
    {O_BLOCKSIZE, 0, "block-size", "SIZE", NULL, NULL, 0},
    {O_RECEND, 0, "recend", "STR", "records end with STR (default \\n; '' for none)", NULL, 0},
    {O_RECSTART, 0, "recstart", "STR", "records start with STR", NULL, 0},
    {O_MAXREPL, 'N', "max-replace-args", "N", "-n N, and -X for {} (--pipe: N records a job)",
     NULL, 0},
    {O_MAXLINES, 'L', NULL, "N", "as -N (--pipe: a record is N lines)", NULL, 0},
    {O_MAXLINES_L, 'l', "max-lines", NULL, "-lN, -l N: as -L N (alone, or 0: as -L 1)", NULL, 'n'},
    {O_RRS, 0, "remove-rec-sep", NULL, "take --recend and --recstart out of the records", NULL, 0},
    {O_RRS, 0, "rrs", NULL, NULL, NULL, 0},
    {O_REGEXP, 0, "regexp", NULL, "--recend and --recstart are regular expressions", NULL, 0},
    {O_GROUPBY, 0, "group-by", "N", "a record is a run of lines with the same column N (--colsep)",
     NULL, 0},
    {O_JOBS, 'j', "jobs", "N", "N jobs at once (N, N% or +N/-N CPUs; 0: no limit)", "Scheduling", 0},
    {O_JOBS, 'P', "max-procs", "N", NULL, NULL, 0},
    {O_TIMEOUT, 0, "timeout", "T", "kill a job after T seconds (or T% of the median)", NULL, 0},
    {O_TERMSEQ, 0, "termseq", "SEQ", "how to kill a job: SIG,MS,...,KILL", NULL, 0},
    {O_RETRIES, 0, "retries", "N", "run a failing job up to N times (0: until it succeeds)", NULL, 0},
    {O_HALT, 0, "halt", "HOW", "stop early: never, now|soon,fail|success|done=N|N%", NULL, 0},
    {O_HALT, 0, "halt-on-error", "HOW", NULL, NULL, 0},
    {O_NICE, 0, "nice", "N", "run at niceness N (concur and its jobs)", NULL, 0},
    {O_DELAY, 0, "delay", "T", "wait T seconds between two job starts", NULL, 0},
    {O_MPI, 0, "mpi", NULL, "run the jobs on the ranks of an MPI job (mpirun -n N concur --mpi)",
     NULL, 0},
    {O_GROUP, 0, "group", NULL, "print each job's output when it ends (default)", "Output", 0},
    {O_LINEBUF, 0, "line-buffer", NULL, "print whole lines of output as they come", NULL, 0},
    {O_LINEBUF, 0, "lb", NULL, NULL, NULL, 0},
    {O_LINEBUF, 0, "linebuffer", NULL, NULL, NULL, 0},
    {O_UNGROUP, 'u', "ungroup", NULL, "print output as it comes, even half lines", NULL, 0},
    {O_KEEP, 'k', "keep-order", NULL, "print the jobs' output in input order", NULL, 0},
    {O_TAG, 0, "tag", NULL, "prefix output lines with the arguments and a TAB", NULL, 0},
    {O_TAGSTRING, 0, "tagstring", "STR", "prefix lines with STR (\\t \\n \\r \\NNN decoded), a TAB",
     NULL, 0},
    {O_CTAG, 0, "ctag", NULL, "as --tag, the tag in a colour of the job's (ANSI, 256 colours)",
     NULL, 0},
    {O_CTAGSTRING, 0, "ctagstring", "STR", "as --tagstring, in a colour of the job's", NULL, 0},
    {O_RESULTS, 0, "results", "PATH",
     "save output in PATH (.json .csv .tsv, a dir; -.json: stdout)", NULL, 0},
    {O_RESULTS, 0, "res", "PATH", NULL, NULL, 0},
    {O_RESULTS, 0, "result", "PATH", NULL, NULL, 0},
    {O_JSON, 0, "json", NULL, "print a JSON object per job instead of its output", NULL, 0},
    {O_JOBLOG, 0, "joblog", "FILE", "log finished jobs to FILE (+FILE: append; -: stdout)", NULL, 0},
    {O_JOBLOG, 0, "jl", "FILE", NULL, NULL, 0},
    {O_RESUME, 0, "resume", NULL, "skip the jobs the joblog lists", NULL, 0},
    {O_RESUMEF, 0, "resume-failed", NULL, "skip the jobs the joblog lists as succeeded", NULL, 0},
    {O_RETRYF, 0, "retry-failed", NULL, "run again the joblog's failed command lines (only)",
     NULL, 0},
    {O_FILES, 0, "files", NULL, "save each job's output in a file; print its name", NULL, 0},
    {O_BAR, 0, "bar", NULL, "show a progress bar on stderr", NULL, 0},
    {O_ETA, 0, "eta", NULL, "show the estimated time left on stderr", NULL, 0},
    {O_PROGRESS, 0, "progress", NULL, "show job counts on stderr", NULL, 0},
    {O_DRYRUN, 0, "dry-run", NULL, "print the commands instead of running them", NULL, 0},
    {O_DRYRUN, 0, "dryrun", NULL, NULL, NULL, 0},
    {O_REPORT, 0, "report", NULL, "print a report of every job at the end", NULL, 0},
    {O_TMPDIR, 0, "tmpdir", "DIR", "spill large output to DIR instead of $TMPDIR", NULL, 0},
    {O_COMPRESS, 0, "compress", NULL, "compress the --results files (pzstd, zstd, lz4, gzip...)", NULL, 0},
    {O_TRACE, 't', "verbose", NULL, "print each command line on stderr as it starts", NULL, 0},
    {O_VERBOSE, 'v', NULL, NULL, "print each command line on stdout before its output", NULL, 0},
    {O_PROFILE, 'J', "profile", "NAME",
     "options from the profile NAME (in $PARALLEL_HOME or ~/.parallel; or a path)",
     "Other", 0},
    {O_WILLCITE, 0, "will-cite", NULL, "accepted and ignored", NULL, 0},
    {O_HELP, 'h', "help", NULL, "print this help and exit", NULL, 0},
    {O_VERSION, 'V', "version", NULL, "print the version and exit", NULL, 0},
};
enum { NOPTS = sizeof(optdefs) / sizeof(optdefs[0]) };

static void print_help(void)
{
    struct buf b = {0};
    buf_adds(&b, "Usage: concur [OPTION]... [COMMAND [WORD]...] [::: ARG... | :::: FILE...]...\n"
                 "\n"
                 "Runs COMMAND once per input argument, several at a time, as GNU parallel does.\n"
                 "Arguments come from ::: groups (all their combinations; :::+ pairs a group with\n"
                 "the previous one), from :::: or -a files, or from standard input, one per line.\n"
                 "{} in COMMAND is replaced by the argument, quoted; without a placeholder the\n"
                 "arguments are appended. Also: {.} {/} {//} {/.} {#} {%} {1} {2.}...\n"
                 "{= perl expression =} (and {=2 ... =}) is the value of $_ after the perl code\n"
                 "runs with $_ set to the argument.\n");
    for (int i = 0; i < NOPTS; i++) {
        const struct optdef *d = &optdefs[i];
        if (!d->help)
            continue;
        if (d->section)
            buf_printf(&b, "\n%s:\n", d->section);
        char head[96];
        int n;
        if (d->shortname && d->longname)
            n = snprintf(head, sizeof(head), "  -%c, --%s", d->shortname, d->longname);
        else if (d->shortname)
            n = snprintf(head, sizeof(head), "  -%c", d->shortname);
        else
            n = snprintf(head, sizeof(head), "      --%s", d->longname);
        for (int k = i + 1; k < NOPTS && !optdefs[k].help; k++) { /* its aliases */
            const struct optdef *a = &optdefs[k];
            if (a->shortname)
                n += snprintf(head + n, sizeof(head) - (size_t)n, ", -%c", a->shortname);
            if (a->longname)
                n += snprintf(head + n, sizeof(head) - (size_t)n, ", --%s", a->longname);
        }
        if (d->arg)
            snprintf(head + n, sizeof(head) - (size_t)n, " %s", d->arg);
        if (strlen(head) >= 25) /* the help on a line of its own */
            buf_printf(&b, "%s\n%26s%s\n", head, "", d->help);
        else
            buf_printf(&b, "%-26s%s\n", head, d->help);
    }
    buf_adds(&b, "\n"
                 "Exit status: 0 if every job succeeded; else the number of failed jobs (101 for\n"
                 "more than 100); 2 for a usage error; 130 or 143 after SIGINT or SIGTERM; 255\n"
                 "for other errors. See concur(1).\n");
    if (!buf_ok(&b) || write_all(1, b.p, b.len) < 0)
        cli_error("cannot print the help");
    buf_free(&b);
}

static int usage_error(const char *fmt, const char *a, const char *b)
{
    char msg[512];
    snprintf(msg, sizeof(msg), fmt, a, b);
    cli_error("%s", msg);
    (void)write_all(2, "Try 'concur --help' for more information.\n", 42);
    return EXIT_USAGE;
}

/* A usage error worded as GNU parallel words it under the "parallel" persona (no "Try"
 * line there), else as usage_error. */
static int gnu_usage(const char *gnu_msg, const char *fmt, const char *a, const char *b)
{
    if (!cli_gnu())
        return usage_error(fmt, a, b);
    cli_gnu_error("%s", gnu_msg);
    return EXIT_USAGE;
}

static int oom(void)
{
    cli_error("out of memory");
    return EXIT_OTHER;
}

/* ------------------------------------------------------------------ values */

static bool parse_uint(const char *s, unsigned long *out)
{
    char *end;
    if (!*s || *s == '-' || *s == '+')
        return false;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

/* -j: N, N% of the CPUs (rounded up), +N / -N relative to the CPUs; 0: no limit. */
static bool parse_jobs(const char *s, int *out)
{
    int ncpu = concur_cpu_count();
    unsigned long v;
    size_t len = strlen(s);
    if (len > 1 && s[len - 1] == '%') {
        char tmp[32];
        if (len - 1 >= sizeof(tmp))
            return false;
        memcpy(tmp, s, len - 1);
        tmp[len - 1] = '\0';
        if (!parse_uint(tmp, &v) || v > 100000)
            return false;
        long n = (long)ceil((double)ncpu * (double)v / 100.0);
        *out = n < 1 ? 1 : (int)n;
        return true;
    }
    if (*s == '+' || *s == '-') {
        if (!parse_uint(s + 1, &v) || v > INT_MAX / 2)
            return false;
        long n = *s == '+' ? (long)ncpu + (long)v : (long)ncpu - (long)v;
        *out = n < 1 ? 1 : (int)n;
        return true;
    }
    if (!parse_uint(s, &v) || v > INT_MAX)
        return false;
    *out = (int)v;
    return true;
}

static int signal_number(const char *s)
{
    static const struct {
        const char *name;
        int sig;
    } sigs[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"PIPE", SIGPIPE}, {"ALRM", SIGALRM},
                {"TERM", SIGTERM}, {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"ABRT", SIGABRT}};
    unsigned long v;
    if (parse_uint(s, &v))
        return v > 0 && v < (unsigned long)NSIG ? (int)v : -1;
    if (!strncasecmp(s, "SIG", 3))
        s += 3;
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (!strcasecmp(s, sigs[i].name))
            return sigs[i].sig;
    return -1;
}

/* --timeout: a duration, or N% of the median run time of the jobs that succeeded. */
static bool parse_timeout(const char *val, struct cli_opts *o)
{
    size_t len = strlen(val);
    if (len > 1 && val[len - 1] == '%') {
        char *end;
        double p = strtod(val, &end);
        if (end != val + len - 1 || !(p > 0) || !isfinite(p))
            return false;
        o->timeout_pct = p;
        o->timeout = 0;
    } else if (!parse_duration(val, &o->timeout)) {
        return false;
    } else {
        o->timeout_pct = 0;
    }
    return true;
}

/* --termseq SIG,MS,SIG,MS,...: each signal in turn, each followed by its wait in
 * milliseconds (a missing last wait is 0); the runner sends SIGKILL after the last wait. */
static bool parse_termseq(const char *s, struct cli_opts *o)
{
    char *copy = strdup(s), *save = NULL;
    if (!copy)
        return false;
    bool ok = true;
    size_t n = 0, steps = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && ok; tok = strtok_r(NULL, ",", &save)) {
        if (n % 2 == 0) {
            int sg = signal_number(tok);
            if (sg <= 0 || steps == sizeof(o->termseq) / sizeof(o->termseq[0]))
                ok = false;
            else
                o->termseq[steps++] = (concur_term_step){sg, 0};
        } else {
            char *end;
            double ms = strtod(tok, &end);
            if (*end || !(ms >= 0))
                ok = false;
            else
                o->termseq[steps - 1].wait = ms / 1000.0;
        }
        n++;
    }
    free(copy);
    if (!ok || steps == 0)
        return false;
    o->ntermseq = steps;
    return true;
}

/* --halt: never | 0/1/2/-1/-2 | N% | now|soon,fail|success|done=N|N% (GNU parallel's forms) */
static bool parse_halt(const char *s, struct cli_opts *o)
{
    static const char *const expand[][2] = {{"0", "never"},
                                            {"1", "soon,fail=1"},
                                            {"2", "now,fail=1"},
                                            {"-1", "soon,success=1"},
                                            {"-2", "now,success=1"}};
    char buf[128];
    for (size_t i = 0; i < sizeof(expand) / sizeof(expand[0]); i++)
        if (!strcmp(s, expand[i][0]))
            s = expand[i][1];
    size_t len = strlen(s);
    if (len && s[len - 1] == '%' && strspn(s, "0123456789") == len - 1) {
        snprintf(buf, sizeof(buf), "soon,fail=%s", s);
        s = buf;
    }
    if (!strcmp(s, "never")) {
        o->halt_when = HALT_NEVER;
        return true;
    }
    const char *comma = strchr(s, ',');
    const char *eq = comma ? strchr(comma, '=') : NULL;
    if (!comma || !eq)
        return false;
    size_t wl = (size_t)(comma - s), hl = (size_t)(eq - comma - 1);
    if (wl == 3 && !strncmp(s, "now", 3))
        o->halt_when = HALT_NOW;
    else if (wl == 4 && !strncmp(s, "soon", 4))
        o->halt_when = HALT_SOON;
    else
        return false;
    if (hl == 4 && !strncmp(comma + 1, "fail", 4))
        o->halt_on = HALT_FAIL;
    else if (hl == 7 && !strncmp(comma + 1, "success", 7))
        o->halt_on = HALT_SUCCESS;
    else if (hl == 4 && !strncmp(comma + 1, "done", 4))
        o->halt_on = HALT_DONE;
    else
        return false;
    char *end;
    errno = 0;
    double v = strtod(eq + 1, &end);
    o->halt_pct = *end == '%' && end[1] == '\0';
    if (errno || end == eq + 1 || (*end && !o->halt_pct) || !(v > 0) || (o->halt_pct && v > 100))
        return false;
    o->halt_value = v;
    return true;
}

/* A bad --halt value; under the "parallel" persona in GNU parallel's words for a missing
 * when (never/soon/now) or a missing ",fail" / ",success". */
static int halt_error(const char *val, const char *shown)
{
    size_t when = strcspn(val, ",");
    bool known = (when == 4 && !strncmp(val, "soon", 4)) || (when == 3 && !strncmp(val, "now", 3));
    if (!cli_gnu() || (known && val[when]))
        return usage_error("bad value for %s: '%s'", shown, val);
    if (!known)
        cli_gnu_error("--halt must have 'never', 'soon', or 'now'.");
    else
        cli_gnu_error("--halt %s must be followed by ,success or ,fail.", val);
    return EXIT_USAGE;
}

static const char DELIM_OOM[] = "out of memory";

/* Decodes a -d delimiter: \n \t \r \a \b \f \v \e \\ \0NN (octal) \NNN \xHH. Returns
 * NULL, or why the value is refused (DELIM_OOM when out of memory). */
static const char *decode_delim(const char *s, char **out, size_t *len)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1), *p = d;
    if (!d)
        return DELIM_OOM;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) {
            *p++ = s[i];
            continue;
        }
        char c = s[++i];
        switch (c) {
        case 'n':
            *p++ = '\n';
            break;
        case 't':
            *p++ = '\t';
            break;
        case 'r':
            *p++ = '\r';
            break;
        case 'a':
            *p++ = '\a';
            break;
        case 'b':
            *p++ = '\b';
            break;
        case 'f':
            *p++ = '\f';
            break;
        case 'v':
            *p++ = '\v';
            break;
        case 'e':
            *p++ = '\033';
            break;
        case 'x': {
            unsigned v = 0, k = 0;
            while (k < 2 && i + 1 < n && strchr("0123456789abcdefABCDEF", s[i + 1]) && s[i + 1]) {
                char h = s[++i];
                v = v * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
                k++;
            }
            if (!k) {
                free(d);
                return "\\x needs one or two hexadecimal digits, as in \\x1F";
            }
            *p++ = (char)v;
            break;
        }
        default:
            if (c >= '0' && c <= '7') {
                unsigned v = (unsigned)(c - '0'), k = 1;
                while (k < 3 && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '7') {
                    v = v * 8 + (unsigned)(s[++i] - '0');
                    k++;
                }
                *p++ = (char)v;
            } else {
                *p++ = c; /* \\ and any other escaped character */
            }
        }
    }
    *len = (size_t)(p - d);
    *p = '\0';
    *out = d;
    return *len > 0 ? NULL : "empty delimiter";
}

/* A size with GNU parallel's unit prefixes: k m g t p are powers of 1000, K M G T P powers
 * of 1024 ("1M", "10k", "1.5K"); the value is rounded down. false when malformed or below
 * 1. */
static bool parse_size(const char *s, size_t *out)
{
    static const char units[] = "kmgtpKMGTP";
    char *end;
    if (!*s || *s == '-' || *s == '+')
        return false;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v))
        return false;
    if (*end) {
        const char *u = strchr(units, *end);
        if (!u || end[1])
            return false;
        int k = (int)(u - units);
        double base = k < 5 ? 1000.0 : 1024.0;
        for (int i = 0; i <= k % 5; i++)
            v *= base;
    }
    if (!(v >= 1) || v >= 0x1p62)
        return false;
    *out = (size_t)v;
    return true;
}

/* --recend / --recstart: as GNU parallel, \0 \n \r \t \' \" and \\ are decoded, any
 * other backslash is kept. Returns false when out of memory. */
static bool decode_recsep(const char *s, char **out, size_t *len)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1), *p = d;
    if (!d)
        return false;
    static const char keys[] = "0nrt'\"\\";
    static const char plain[] = {'\0', '\n', '\r', '\t', '\'', '"', '\\'};
    for (size_t i = 0; i < n; i++) {
        const char *esc = i + 1 < n && s[i] == '\\' ? strchr(keys, s[i + 1]) : NULL;
        if (!esc || !*esc) {
            *p++ = s[i];
            continue;
        }
        *p++ = plain[esc - keys];
        i++;
    }
    *p = '\0';
    free(*out);
    *out = d;
    *len = (size_t)(p - d);
    return true;
}

/* One pass of GNU parallel's unquote_printf: every "\\" + `key` (key 'd': one digit, 'D':
 * three) replaced, left to right; digits are octal, as Perl reads "\\NNN". */
static void unquote_pass(struct buf *out, const char *s, size_t n, char key, char to)
{
    for (size_t i = 0; i < n; i++) {
        size_t digits = key == 'D' ? 3 : key == 'd' ? 1 : 0, k = 0;
        unsigned v = 0;
        if (s[i] == '\\' && digits) {
            while (k < digits && i + 1 + k < n && s[i + 1 + k] >= '0' && s[i + 1 + k] <= '7')
                v = v * 8 + (unsigned)(s[i + 1 + k++] - '0');
            if (k == digits) {
                buf_addc(out, (char)v);
                i += k;
                continue;
            }
        } else if (s[i] == '\\' && i + 1 < n && s[i + 1] == key) {
            buf_addc(out, to);
            i++;
            continue;
        }
        buf_addc(out, s[i]);
    }
}

/* GNU parallel's unquote_printf (--tagstring): \t, \n, \r, then \NNN and \N (octal), each
 * a pass over the result of the one before. A malloc'd string (it may hold NUL bytes: its
 * length in *len), or NULL when out of memory. */
static char *unquote_printf(const char *s, size_t *len)
{
    static const char keys[][2] = {{'t', '\t'}, {'n', '\n'}, {'r', '\r'}, {'D', 0}, {'d', 0}};
    struct buf a = {0}, b = {0};
    buf_adds(&a, s);
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        buf_reset(&b);
        unquote_pass(&b, a.p ? a.p : "", a.len, keys[k][0], keys[k][1]);
        struct buf t = a;
        a = b;
        b = t;
    }
    buf_addc(&a, '\0');
    bool ok = buf_ok(&a) && buf_ok(&b);
    buf_free(&b);
    if (!ok) {
        buf_free(&a);
        return NULL;
    }
    *len = a.len - 1;
    return a.p;
}

/* ------------------------------------------------------------------ parsing */

/* --arg-sep (default :::) */
static const char *arg_sep = ":::";

static int separator(const char *s)
{
    size_t n = strlen(arg_sep);
    if (!strcmp(s, arg_sep))
        return 1;
    if (!strncmp(s, arg_sep, n) && !strcmp(s + n, "+"))
        return 2;
    if (!strcmp(s, "::::"))
        return 3;
    if (!strcmp(s, "::::+"))
        return 4;
    return 0;
}

static bool add_group(struct cli_opts *o, bool is_file, bool linked, char **items, size_t n)
{
    struct group_spec *g = realloc(o->groups, (o->ngroups + 1) * sizeof(*g));
    if (!g)
        return false;
    o->groups = g;
    g[o->ngroups++] = (struct group_spec){is_file, linked, items, n};
    return true;
}

/* Reading the command line: the options, the words of the command, the input groups. */
struct parse {
    struct cli_opts *o;
    int argc;
    char **argv;
    int i;           /* the word being read */
    char **argfiles; /* the -a file names, in the order given */
    size_t nargfiles;
    char pipe_only[128]; /* a --pipe option given, as written (refused without --pipe) */
    bool recend_set, recstart_set;
    bool n_set, l_set; /* -N / -L given: without --pipe they mean -n, and -X for {} */
};

/* The options of the Input section (see apply). */
static int apply_input(struct parse *p, const struct optdef *d, const char *val, const char *shown)
{
    struct cli_opts *o = p->o;
    const char *why;
    switch (d->id) {
    case O_ARGFILE: {
        char **a = realloc(p->argfiles, (p->nargfiles + 1) * sizeof(*a));
        if (!a)
            return oom();
        a[p->nargfiles++] = (char *)val;
        p->argfiles = a;
        break;
    }
    case O_NULL:
        free(o->delim);
        o->delim = NULL;
        if (decode_delim("\\0", &o->delim, &o->delim_len))
            return oom();
        break;
    case O_DELIM:
        o->delim_given = true;
        free(o->delim);
        o->delim = NULL;
        if ((why = decode_delim(val, &o->delim, &o->delim_len)) != NULL) {
            char fmt[160]; /* the reason has no % in it */
            snprintf(fmt, sizeof(fmt), "bad value for %%s: '%%s' (%s)", why);
            return why == DELIM_OOM ? oom() : usage_error(fmt, shown, val);
        }
        break;
    case O_COLSEP:
        if (!*val)
            return usage_error("bad value for %s: '%s'", shown, val);
        o->colsep = val;
        break;
    case O_HEADER:
        /* As GNU parallel without --pipe: any value (its regexp matters with --pipe only)
         * takes the first line, but 0, with which the files' names name the columns. */
        o->header = strcmp(val, "0") != 0;
        o->header_files = !o->header;
        o->header_re = val;
        break;
    case O_TRIM:
        if (strcmp(val, "n") && strcmp(val, "l") && strcmp(val, "r") && strcmp(val, "lr") &&
            strcmp(val, "rl"))
            return gnu_usage("--trim must be one of: r l rl lr.",
                             "bad value for %s: '%s' (n, l, r, lr or rl)", shown, val);
        o->trim_set = true;
        o->trim_left = strchr(val, 'l') != NULL;
        o->trim_right = strchr(val, 'r') != NULL;
        break;
    case O_LINK:
    case O_XAPPLY:
        o->link = true;
        break;
    case O_EOF: /* -e / --eof alone: no end-of-file string */
        o->eof_str = val && *val ? val : NULL;
        break;
    case O_ARGSEP:
        if (!*val)
            return usage_error("bad value for %s: '%s'", shown, val);
        arg_sep = val;
        break;
    case O_SHUF:
        o->shuf = true;
        break;
    default:
        break;
    }
    return 0;
}

/* The options of the Commands section (see apply). */
static int apply_command(struct cli_opts *o, const struct optdef *d, const char *val,
                         const char *shown)
{
    unsigned long v;
    switch (d->id) {
    case O_MAXARGS: /* 0: each command reads an argument and is given none (GNU parallel) */
        if (!parse_uint(val, &v) || v > 1000000)
            return usage_error("bad value for %s: '%s'", shown, val);
        o->max_args = v ? v : 1;
        o->zero_args = v == 0;
        break;
    case O_MAXCHARS:
        if (!parse_uint(val, &v) || v == 0 || v > (1ul << 30))
            return usage_error("bad value for %s: '%s'", shown, val);
        o->max_chars = v;
        break;
    case O_X:
        o->ctx_replace = true;
        o->multi = false;
        break;
    case O_M:
        o->multi = true;
        o->ctx_replace = false;
        break;
    case O_QUOTE:
        o->quote = true;
        break;
    case O_PLUS:
        o->plus = true;
        break;
    case O_REPLACE:
        if (!*val)
            return usage_error("bad value for %s: '%s'", shown, val);
        o->replace = val;
        break;
    case O_REPLACE_I: /* -i alone, as xargs: -I {} */
        o->replace = val && *val ? val : "{}";
        break;
    case O_RENAME_DIR:
    case O_RENAME_BASE:
    case O_RENAME_EXT:
    case O_RENAME_BASEEXT:
        if (!*val)
            return usage_error("bad value for %s: '%s'", shown, val);
        o->rename[d->id - O_RENAME_DIR] = val;
        break;
    case O_SHELL:
        o->shell = true;
        break;
    case O_ENV: /* the jobs inherit concur's environment: NAME reaches them if exported */
        if (!*val)
            return usage_error("bad value for %s: '%s'", shown, val);
        break;
    case O_NORUNEMPTY:
        o->no_run_if_empty = true;
        break;
    case O_WD:
        if (!*val)
            return usage_error("bad value for %s: '%s'", shown, val);
        o->wd = val;
        break;
    case O_SHELLQUOTE: /* a dry run whose lines are quoted */
        o->shellquote = o->dry_run = true;
        break;
    default:
        break;
    }
    return 0;
}

/* The options of the Pipe section. */
static int apply_pipe(struct parse *p, const struct optdef *d, const char *val, const char *shown)
{
    struct cli_opts *o = p->o;
    unsigned long v;
    if (d->id != O_PIPE && d->id != O_SPREAD && d->id != O_PIPEPART && d->id != O_MAXREPL &&
        d->id != O_MAXLINES && d->id != O_MAXLINES_L)
        snprintf(p->pipe_only, sizeof(p->pipe_only), "%s", shown);
    switch (d->id) {
    case O_PIPE:
    case O_SPREAD:
    case O_PIPEPART:
        o->pipe = true;
        o->pipepart = o->pipepart || d->id == O_PIPEPART;
        break;
    case O_BLOCK:
    case O_BLOCKSIZE: /* -SIZE (--pipepart): so many blocks a job slot, as GNU parallel */
        o->block_per_slot = val[0] == '-';
        if (!parse_size(val + o->block_per_slot, &o->block_size))
            return usage_error("bad value for %s: '%s'", shown, val);
        break;
    case O_RECEND:
    case O_RECSTART: {
        bool end = d->id == O_RECEND;
        if (!decode_recsep(val, end ? &o->recend : &o->recstart,
                           end ? &o->recend_len : &o->recstart_len))
            return oom();
        *(end ? &p->recend_set : &p->recstart_set) = true;
        break;
    }
    case O_MAXREPL: /* 0 is refused with --pipe, in settle_pipe */
    case O_MAXLINES:
        if (!parse_uint(val, &v) || v > 1000000)
            return usage_error("bad value for %s: '%s'", shown, val);
        *(d->id == O_MAXREPL ? &o->max_args : &o->max_lines) = v;
        *(d->id == O_MAXREPL ? &p->n_set : &p->l_set) = true;
        break;
    case O_MAXLINES_L: /* -l: -L 1 alone; -l0 is -l1 too (GNU parallel's --tollef legacy) */
        if (val && (!parse_uint(val, &v) || v > 1000000))
            return usage_error("bad value for %s: '%s'", shown, val);
        o->max_lines = val && v ? v : 1;
        p->l_set = true;
        break;
    case O_RRS:
        o->rrs = true;
        break;
    case O_REGEXP:
        o->regexp = true;
        break;
    case O_GROUPBY:
        if (!parse_uint(val, &v) || v == 0 || v > 1000000)
            return usage_error("bad value for %s: '%s' (a column number, from 1)", shown, val);
        o->group_by = v;
        break;
    default:
        break;
    }
    return 0;
}

/* --pipepart: the file is the first -a / :::: one; as GNU parallel, ::: groups are not
 * used. Blocks are cut by size only; by default 10 a job slot. 0 or EXIT_USAGE. */
static int settle_pipepart(struct parse *p)
{
    struct cli_opts *o = p->o;
    for (size_t i = 0; i < o->ngroups && !o->pipepart_file; i++)
        if (o->groups[i].is_file)
            o->pipepart_file = o->groups[i].items[0];
    if (!o->pipepart_file || !strcmp(o->pipepart_file, "-"))
        return usage_error("--pipepart reads a file: give it with -a FILE or :::: FILE%s%s", "",
                           "");
    if (p->n_set || p->l_set || o->header)
        return usage_error("--pipepart cuts blocks by size: %s is not supported with it%s",
                           o->header ? "--header" : p->n_set ? "-N" : "-L", "");
    o->ngroups = 0;
    if (!o->block_size) {
        o->block_size = 10;
        o->block_per_slot = true;
    }
    return 0;
}

/* --pipe's defaults and what cannot go with it. 0 or the exit status of a usage error. */
static int settle_pipe(struct parse *p)
{
    struct cli_opts *o = p->o;
    if (!o->pipe) {
        if (p->pipe_only[0])
            return usage_error("%s needs --pipe%s", p->pipe_only, "");
        if (p->n_set || p->l_set) {
            /* As GNU parallel: -N N / -L N take N arguments (lines) a command, {} stands
             * for each of them as with -X; 0: each command reads one and is given none. */
            size_t n = (p->n_set ? o->max_args : 1) * (p->l_set ? o->max_lines : 1);
            o->line_cont = p->l_set && !p->n_set;
            o->max_lines = 0;
            o->max_args = n ? n : 1;
            o->zero_args = n == 0;
            o->ctx_replace = n != 0;
            o->multi = false;
        }
        return 0;
    }
    if ((p->n_set && !o->max_args) || (p->l_set && !o->max_lines) || o->zero_args)
        return usage_error("bad value for %s: '%s'",
                           o->zero_args               ? "-n"
                           : p->n_set && !o->max_args ? "-N"
                                                      : "-L",
                           "0");
    if (o->pipepart) {
        int rc = settle_pipepart(p);
        if (rc)
            return rc;
    } else if (o->block_per_slot) {
        return usage_error("a negative --block needs %s%s", "--pipepart", "");
    }
    if (o->ngroups)
        return usage_error("--pipe reads standard input: it cannot be used with %s%s",
                           "::: or :::: groups", " or -a");
    if (o->header_files)
        return usage_error("--header 0 is not supported with %s%s", "--pipe", "");
    if (o->ncmd == 0)
        return gnu_usage("--pipe/--pipepart must have a command to pipe into (e.g. 'cat').",
                         "--pipe needs a command%s%s", "", "");
    if (o->halt_pct && o->halt_when != HALT_NEVER)
        return usage_error("--halt with a percentage needs the number of jobs, which %s%s",
                           "--pipe does not know", " (give a count instead)");
    if (!o->block_size)
        o->block_size = 1 << 20;
    /* Neither given: records end with a newline; one given: the other is empty. */
    if (!p->recend_set && !decode_recsep(p->recstart_set ? "" : "\\n", &o->recend, &o->recend_len))
        return oom();
    if (!p->recstart_set && !decode_recsep("", &o->recstart, &o->recstart_len))
        return oom();
    return 0;
}

/* The options of the Scheduling section. */
static int apply_sched(struct cli_opts *o, const struct optdef *d, const char *val,
                       const char *shown)
{
    unsigned long v;
    switch (d->id) {
    case O_JOBS:
        if (!parse_jobs(val, &o->jobs))
            return usage_error("bad value for %s: '%s'", shown, val);
        break;
    case O_TIMEOUT:
        if (!parse_timeout(val, o))
            return usage_error("bad value for %s: '%s'", shown, val);
        break;
    case O_TERMSEQ:
        if (!parse_termseq(val, o))
            return usage_error("bad value for %s: '%s'", shown, val);
        break;
    case O_RETRIES:
        /* As GNU parallel, the value may hold replacement strings ({}, {//}...): it is
         * expanded for each job (complete.c). */
        o->tries_tpl = strchr(val, '{') ? val : NULL;
        if (!o->tries_tpl && (!parse_uint(val, &v) || v > 1000000))
            return usage_error("bad value for %s: '%s' (a number, 0: until it succeeds)", shown,
                               val);
        o->tries = o->tries_tpl ? 1 : (unsigned)v;
        break;
    case O_HALT:
        if (!parse_halt(val, o))
            return halt_error(val, shown);
        break;
    case O_NICE: {
        char *end;
        errno = 0;
        long n = strtol(val, &end, 10);
        if (errno || end == val || *end || n < -20 || n > 19)
            return usage_error("bad value for %s: '%s' (-20 to 19)", shown, val);
        o->nice = (int)n;
        o->nice_set = true;
        break;
    }
    case O_DELAY:
        if (!parse_duration(val, &o->delay))
            return usage_error("bad value for %s: '%s'", shown, val);
        break;
    case O_MPI:
        o->mpi = true;
        break;
    default:
        break;
    }
    return 0;
}

/* The options of the Output section. */
static int apply_output(struct cli_opts *o, const struct optdef *d, const char *val,
                        const char *shown)
{
    switch (d->id) {
    case O_GROUP:
        o->out = OUT_GROUP;
        break;
    case O_LINEBUF:
        o->out = OUT_LINE;
        break;
    case O_UNGROUP:
        o->out = OUT_UNGROUP;
        break;
    case O_KEEP:
        o->keep_order = true;
        break;
    case O_TAG:
        o->tag = true;
        break;
    case O_CTAG:
        o->tag = o->ctag = true;
        break;
    case O_CTAGSTRING:
    case O_TAGSTRING:
        o->ctag = o->ctag || d->id == O_CTAGSTRING;
        free(o->tagstring);
        if (!(o->tagstring = unquote_printf(val, &o->tagstring_len)))
            return oom();
        break;
    case O_RESULTS:
        if (!*val)
            return usage_error("bad value for %s: '%s'", shown, val);
        o->results = val;
        break;
    case O_JSON:
        o->json = true;
        break;
    case O_JOBLOG:
        if (!*val)
            return usage_error("bad value for %s: '%s'", shown, val);
        o->joblog = val;
        break;
    case O_RESUME:
        o->resume = true;
        break;
    case O_RESUMEF:
        o->resume_failed = true;
        break;
    case O_RETRYF:
        o->retry_failed = true;
        break;
    case O_FILES:
        o->files = true;
        break;
    case O_BAR:
        o->bar = true;
        break;
    case O_ETA:
        o->eta = true;
        break;
    case O_PROGRESS:
        o->progress = true;
        break;
    case O_DRYRUN:
        o->dry_run = true;
        break;
    case O_REPORT:
        o->report = true;
        break;
    case O_TMPDIR:
        o->tmpdir = val;
        break;
    case O_COMPRESS: /* the --results files (spilled output is not compressed) */
        o->compress = true;
        break;
    case O_TRACE:
        o->trace = true;
        break;
    case O_VERBOSE:
        o->verbose = true;
        break;
    default:
        break;
    }
    return 0;
}

/* Applies one option. `val` is its value (NULL for flags). Returns 0, 1 (help/version
 * printed), EXIT_USAGE or EXIT_OTHER (out of memory). `shown` names the option as the user
 * wrote it. Each section of --help has its own function (enum optid follows the sections). */
static int apply(struct parse *p, const struct optdef *d, const char *val, const char *shown)
{
    if (d->id <= O_SHUF)
        return apply_input(p, d, val, shown);
    if (d->id <= O_SHELLQUOTE)
        return apply_command(p->o, d, val, shown);
    if (d->id <= O_GROUPBY)
        return apply_pipe(p, d, val, shown);
    if (d->id <= O_MPI)
        return apply_sched(p->o, d, val, shown);
    if (d->id <= O_VERBOSE)
        return apply_output(p->o, d, val, shown);
    switch (d->id) {
    case O_WILLCITE:
        break;
    case O_HELP:
        print_help();
        return 1;
    case O_VERSION: {
        char line[128];
        int n = snprintf(line, sizeof(line), "concur %s\n", concur_version());
        if (n < 0 || write_all(1, line, (size_t)n) < 0)
            cli_error("cannot print the version");
        return 1;
    }
    default:
        break;
    }
    return 0;
}

static const struct optdef *find_long(const char *name, size_t len, bool *ambiguous)
{
    const struct optdef *hit = NULL;
    *ambiguous = false;
    for (int i = 0; i < NOPTS; i++) {
        const char *ln = optdefs[i].longname;
        if (!ln || strncmp(ln, name, len))
            continue;
        if (ln[len] == '\0')
            return &optdefs[i]; /* exact */
        if (hit && hit->id != optdefs[i].id)
            *ambiguous = true;
        if (!hit)
            hit = &optdefs[i];
    }
    return *ambiguous ? NULL : hit;
}

static const struct optdef *find_short(char c)
{
    for (int i = 0; i < NOPTS; i++)
        if (optdefs[i].shortname == c)
            return &optdefs[i];
    return NULL;
}

/* The value of an option that takes one: glued (`glued`, NULL if none) or the next word.
 * NULL, after a message, when there is none. */
static const char *option_value(struct parse *p, const char *glued, const char *shown)
{
    if (glued)
        return glued;
    if (p->i + 1 < p->argc)
        return p->argv[++p->i];
    usage_error("option '%s' needs a value%s", shown, "");
    return NULL;
}

/* An optional value that is not glued: the next word when the option takes a number and
 * the word is one (as Getopt::Long's optional integers); else none. */
static const char *optional_value(struct parse *p, const struct optdef *d)
{
    const char *next = p->i + 1 < p->argc ? p->argv[p->i + 1] : NULL;
    if (d->optional != 'n' || !next || !*next || strspn(next, "0123456789") != strlen(next))
        return NULL;
    p->i++;
    return next;
}

/* --name[=value] (any unambiguous prefix of a name). */
static int long_option(struct parse *p, const char *word)
{
    const char *name = word + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    bool amb;
    const struct optdef *d = find_long(name, len, &amb);
    char shown[128];
    snprintf(shown, sizeof(shown), "--%.*s", (int)(len < 100 ? len : 100), name);
    if (!d)
        return usage_error(amb ? "ambiguous option '%s'%s" : "unknown option '%s'%s", shown, "");
    snprintf(shown, sizeof(shown), "--%s", d->longname);
    const char *val = NULL;
    if (d->optional) {
        val = eq ? eq + 1 : optional_value(p, d);
    } else if (d->arg) {
        if (!(val = option_value(p, eq ? eq + 1 : NULL, shown)))
            return EXIT_USAGE;
    } else if (eq) {
        return usage_error("option '%s' takes no value%s", shown, "");
    }
    return apply(p, d, val, shown);
}

/* -abc: bundled short options; one taking a value takes the rest or the next word. */
static int short_options(struct parse *p, const char *word)
{
    int rc = 0;
    for (const char *c = word + 1; *c && !rc; c++) {
        const struct optdef *d = find_short(*c);
        char shown[8] = {'-', *c, '\0'};
        if (!d)
            return usage_error("unknown option '%s'%s", shown, "");
        if (d->optional)
            return apply(p, d, c[1] ? c + 1 : optional_value(p, d), shown);
        if (!d->arg) {
            rc = apply(p, d, NULL, shown);
            continue;
        }
        const char *val = option_value(p, c[1] ? c + 1 : NULL, shown);
        return val ? apply(p, d, val, shown) : EXIT_USAGE;
    }
    return rc;
}

/* The options, up to the first word that is not one (or after "--"). */
static int parse_options(struct parse *p)
{
    int rc = 0;
    while (p->i < p->argc && !rc) {
        const char *a = p->argv[p->i];
        if (!strcmp(a, "--")) {
            p->i++;
            break;
        }
        if (a[0] != '-' || a[1] == '\0' || separator(a))
            break;
        rc = a[1] == '-' ? long_option(p, a) : short_options(p, a);
        p->i++;
    }
    return rc;
}

/* The input groups: the -a files first, then the groups after the command, in the order
 * given. */
static int parse_groups(struct parse *p)
{
    struct cli_opts *o = p->o;
    char **argv = p->argv;
    int i = p->i;
    for (size_t k = 0; k < p->nargfiles; k++)
        if (!add_group(o, true, false, &p->argfiles[k], 1))
            return oom();
    while (i < p->argc) {
        int sep = separator(argv[i++]);
        int start = i;
        while (i < p->argc && !separator(argv[i]))
            i++;
        /* As GNU parallel: a :::+ / ::::+ with no group before it starts the first. */
        if (sep <= 2) {
            if (!add_group(o, false, sep == 2 && o->ngroups, argv + start, (size_t)(i - start)))
                return oom();
            continue;
        }
        if (i == start)
            return usage_error("'%s' needs a file name%s", argv[start - 1], "");
        for (int k = start; k < i; k++) /* ::::+ links each of its files */
            if (!add_group(o, true, sep == 4 && o->ngroups, argv + k, 1))
                return oom();
    }
    return 0;
}

/* Whether a shell takes another syntax than sh's: GNU parallel quotes arguments for csh,
 * fish and rc; concur quotes for sh only, so it runs those users' lines with /bin/sh. */
static bool foreign_shell(const char *path)
{
    static const char *const names[] = {"csh", "tcsh", "bsd-csh", "fish", "rc"};
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(base, names[i]))
            return true;
    return false;
}

/* The shell that runs command lines, as GNU parallel picks it: $PARALLEL_SHELL, else
 * $SHELL, else /bin/sh (GNU parallel first looks for the shell it was started from; concur
 * does not). A name without a slash is looked up in $PATH. 0, or EXIT_OTHER after a
 * message when it cannot be executed. */
static int pick_shell(struct cli_opts *o)
{
    const char *s = getenv("PARALLEL_SHELL");
    if (!s || !*s)
        s = getenv("SHELL");
    if (!s || !*s)
        s = "/bin/sh";
    if (strchr(s, '/') ? access(s, X_OK) != 0 : !in_path(s)) {
        if (cli_gnu())
            cli_gnu_error("Shell '%s' not found.", s);
        else
            cli_error("shell '%s' not found (from $PARALLEL_SHELL or $SHELL)", s);
        return EXIT_OTHER;
    }
    o->shell_path = foreign_shell(s) ? "/bin/sh" : s; /* (one that is there, as GNU parallel) */
    return 0;
}

/* $PARALLEL_ENV, as GNU parallel reads it: shell code put before every command line, or
 * the name of a file (a fifo too) that holds it; \001 stands for a newline. It stays in
 * the environment until opts_drop_penv (concur --mpi re-executes concur-mpi, which reads
 * it again). 0, or EXIT_OTHER after a message. */
static int read_penv(struct cli_opts *o)
{
    const char *v = getenv("PARALLEL_ENV");
    struct stat st;
    struct buf b = {0};
    if (!v || !*v)
        return 0;
    if (stat(v, &st) == 0) {
        int fd = open(v, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : 0;
        while (fd >= 0 && buf_reserve(&b, 4096) &&
               ((n = read(fd, b.p + b.len, b.cap - b.len - 1)) > 0 || (n < 0 && errno == EINTR)))
            b.len += n > 0 ? (size_t)n : 0;
        int err = errno;
        if (fd >= 0)
            close(fd);
        if (n < 0) {
            cli_error("cannot read $PARALLEL_ENV's file %s: %s", v, strerror(err));
            buf_free(&b);
            return EXIT_OTHER;
        }
    } else {
        buf_adds(&b, v);
    }
    if (!buf_ok(&b)) {
        buf_free(&b);
        return oom();
    }
    for (size_t i = 0; i < b.len; i++)
        if (b.p[i] == '\001')
            b.p[i] = '\n';
    o->penv = b.p ? b.p : NULL;
    o->penv_len = b.len;
    return 0; /* taken out of the environment later: opts_drop_penv */
}

void opts_drop_penv(const struct cli_opts *o)
{
    if (o->penv && unsetenv("PARALLEL_ENV") != 0)
        cli_warn("cannot remove PARALLEL_ENV from the environment: %s", strerror(errno));
}

/* --retry-failed: the jobs are the joblog's, each command line the one it logged (the
 * command and the input sources given are not used); --resume-failed then skips those that
 * succeeded. Without a joblog file to read (none yet, or -), a --resume-failed run. 0, or
 * EXIT_USAGE / EXIT_OTHER after a message. */
static int retry_input(struct cli_opts *o)
{
    if (!o->joblog)
        return usage_error("%s needs --joblog FILE%s", "--retry-failed", "");
    o->resume_failed = true;
    const char *path = o->joblog + (o->joblog[0] == '+');
    if (!strcmp(o->joblog, "-"))
        return 0;
    size_t n;
    int rc = joblog_commands(path, &o->retry_items, &n, &o->retry_store);
    if (rc) {
        cli_error("cannot read the joblog '%s': %s", path, concur_strerror(rc));
        return EXIT_OTHER;
    }
    if (!n)
        return 0;
    free(o->groups);
    o->groups = NULL;
    o->ngroups = 0;
    o->ncmd = 0; /* each argument is a command line */
    return add_group(o, false, false, o->retry_items, n) ? 0 : oom();
}

/* $PARALLEL_HOME: GNU parallel makes the directory when it is missing (it keeps its own
 * files there); concur makes it too (it reads profiles from it, and its config file under
 * the name "parallel"), or warns that it cannot. */
static void make_home(void)
{
    const char *h = getenv("PARALLEL_HOME");
    if (!h || !*h)
        return;
    char *p = strdup(h);
    int rc = p ? mkdir_p(p) : -ENOMEM;
    if (rc)
        cli_warn("$PARALLEL_HOME (%s) does not exist and cannot be made: %s", h, strerror(-rc));
    free(p);
}

/* The -J / --profile values among the options of argv (scanned as parse_options reads
 * them, values skipped, up to the first word that is not an option or one it does not
 * know), each given to add(). 0 or what add() returned. */
static int scan_profiles(int argc, char **argv, int (*add)(struct cli_opts *, const char *),
                         struct cli_opts *o)
{
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0' || !strcmp(a, "--") || separator(a))
            break;
        const struct optdef *d = NULL;
        const char *val = NULL;
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            bool amb;
            if (!(d = find_long(name, eq ? (size_t)(eq - name) : strlen(name), &amb)))
                break;
            if (d->arg && !eq && i + 1 < argc)
                val = argv[++i];
            else if (d->arg)
                val = eq ? eq + 1 : NULL;
        } else {
            for (const char *c = a + 1; *c; c++) {
                if (!(d = find_short(*c)))
                    return rc;
                if (d->arg || d->optional) {
                    val = c[1] ? c + 1 : d->arg && i + 1 < argc ? argv[++i] : NULL;
                    break;
                }
            }
        }
        if (d && d->id == O_PROFILE && val)
            rc = add(o, val);
    }
    return rc;
}

/* The words of the option file @path (each line split as a shell would: plain words and
 * quoted strings; empty lines and # comments skipped), appended to o->profile_words;
 * @what names it in messages ("profile", "configuration"). A missing file is nothing when
 * @missing_ok. 0, or EXIT_USAGE / EXIT_OTHER after a message. */
static int add_option_file(struct cli_opts *o, const char *path, const char *what,
                           bool missing_ok)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        if (missing_ok && errno == ENOENT)
            return 0;
        cli_error("cannot read the %s '%s': %s", what, path, strerror(errno));
        return EXIT_USAGE;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0, lineno = 0;
    while (!rc && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        size_t lead = strspn(line, " \t");
        if (line[lead] == '\0' || line[lead] == '#')
            continue;
        size_t before = o->profile_words.len;
        int k = split_simple(line, (size_t)n, &o->profile_words);
        if (k < 0 && buf_ok(&o->profile_words)) {
            o->profile_words.len = before;
            cli_error("%s '%s', line %d: not options and quoted strings", what, path, lineno);
            rc = EXIT_USAGE;
        } else if (!buf_ok(&o->profile_words)) {
            rc = oom();
        }
    }
    if (!rc && ferror(f)) {
        cli_error("cannot read the %s '%s': %s", what, path, strerror(errno));
        rc = EXIT_OTHER;
    }
    free(line);
    fclose(f);
    return rc;
}

/* The file NAME of the user's GNU parallel directory ($PARALLEL_HOME, else ~/.parallel),
 * or NAME itself when it holds a slash, in @path. 0 or oom(). */
static int parallel_home_file(struct buf *path, const char *name)
{
    const char *home = getenv("PARALLEL_HOME");
    if (strchr(name, '/'))
        buf_adds(path, name);
    else if (home && *home)
        buf_printf(path, "%s/%s", home, name);
    else
        buf_printf(path, "%s/.parallel/%s", getenv("HOME") ? getenv("HOME") : "", name);
    buf_addnul(path);
    return buf_ok(path) ? 0 : oom();
}

/* -J NAME: the profile's words appended to o->profile_words. 0, or EXIT_USAGE /
 * EXIT_OTHER after a message. */
static int add_profile(struct cli_opts *o, const char *name)
{
    struct buf path = {0};
    int rc = parallel_home_file(&path, name);
    if (!rc)
        rc = add_option_file(o, path.p, "profile", false);
    buf_free(&path);
    return rc;
}

/* For scan_profiles: stops at the first -J (returns 1). */
static int found_profile(struct cli_opts *o, const char *name)
{
    (void)o, (void)name;
    return 1;
}

/* Under the name "parallel", without -J: GNU parallel's global and user configuration files
 * (/etc/parallel/config, then $PARALLEL_HOME/config or ~/.parallel/config; missing ones are
 * nothing), whose words go first. 0, or EXIT_USAGE / EXIT_OTHER after a message. */
static int add_gnu_config(struct cli_opts *o)
{
    int rc = add_option_file(o, "/etc/parallel/config", "configuration", true);
    struct buf path = {0};
    if (!rc && !(rc = parallel_home_file(&path, "config")))
        rc = add_option_file(o, path.p, "configuration", true);
    buf_free(&path);
    return rc;
}

/* Under the name "parallel": the words of $PARALLEL, after the files' and the profiles'.
 * 0, or EXIT_USAGE after a message, or oom(). */
static int add_gnu_env(struct cli_opts *o)
{
    const char *v = getenv("PARALLEL");
    if (!v || !*v)
        return 0;
    size_t before = o->profile_words.len;
    if (split_simple(v, strlen(v), &o->profile_words) < 0 && buf_ok(&o->profile_words)) {
        o->profile_words.len = before;
        cli_error("$PARALLEL: not options and quoted strings");
        return EXIT_USAGE;
    }
    return buf_ok(&o->profile_words) ? 0 : oom();
}

/* -J (and, under the name "parallel", GNU parallel's configuration files and $PARALLEL):
 * a new argv, those words in front of the command line's own (which then win). 0 with
 * *argc / *argv replaced (owned by o) when there are such words, or what reading them
 * returned. */
static int use_profiles(int *argc, char ***argv, struct cli_opts *o)
{
    /* GNU parallel's order: the configuration files (only without -J), the profiles,
     * $PARALLEL; under the name "concur" the profiles alone. */
    int rc = 0;
    if (cli_gnu() && !scan_profiles(*argc, *argv, found_profile, o))
        rc = add_gnu_config(o);
    if (!rc)
        rc = scan_profiles(*argc, *argv, add_profile, o);
    if (!rc && cli_gnu())
        rc = add_gnu_env(o);
    if (rc || !o->profile_words.len)
        return rc;
    size_t nw = 0;
    for (size_t i = 0; i < o->profile_words.len; i++)
        nw += o->profile_words.p[i] == '\0';
    char **v = malloc(((size_t)*argc + nw + 1) * sizeof(*v));
    if (!v)
        return oom();
    v[0] = (*argv)[0];
    char *w = o->profile_words.p;
    for (size_t k = 0; k < nw; k++, w += strlen(w) + 1)
        v[1 + k] = w;
    for (int i = 1; i <= *argc; i++) /* (and argv's NULL) */
        v[nw + (size_t)i] = (*argv)[i];
    o->profile_argv = v;
    *argc += (int)nw;
    *argv = v;
    return 0;
}

int opts_parse(int argc, char **argv, struct cli_opts *o)
{
    memset(o, 0, sizeof(*o));
    arg_sep = ":::";
    o->jobs = concur_cpu_count();
    o->tries = 1;
    int rc = use_profiles(&argc, &argv, o);
    struct parse p = {.o = o, .argc = argc, .argv = argv, .i = 1};
    if (rc || (rc = parse_options(&p)) != 0)
        goto out;

    /* The command: words up to the first separator. */
    o->cmd = argv + p.i;
    while (p.i < argc && !separator(argv[p.i]))
        p.i++;
    o->ncmd = (int)(argv + p.i - o->cmd);

    if ((rc = parse_groups(&p)) != 0)
        goto out;
    if (!o->delim && decode_delim("\\n", &o->delim, &o->delim_len)) {
        rc = oom();
        goto out;
    }
    if (o->retry_failed && (rc = retry_input(o)) != 0)
        goto out;
    if ((o->resume || o->resume_failed) && !o->joblog) {
        rc =
            usage_error("%s needs --joblog FILE%s", o->resume ? "--resume" : "--resume-failed", "");
        goto out;
    }
    if (o->colsep && !o->trim_set) /* GNU parallel trims columns unless told */
        o->trim_left = o->trim_right = true;
    /* and --header splits on TAB without --colsep (decided after the trimming, as there:
     * these columns are not trimmed) */
    if ((o->header || o->header_files) && !o->colsep)
        o->colsep = "\\t";
    if ((rc = settle_pipe(&p)) != 0)
        goto out;
    if (o->files) /* each job's whole output goes to its file */
        o->out = OUT_GROUP;
    if ((rc = pick_shell(o)) != 0)
        goto out;
    if ((rc = read_penv(o)) != 0)
        goto out;
    make_home();
out:
    o->argfiles = p.argfiles; /* the -a groups point into it; opts_free releases it */
    if (rc)
        opts_free(o);
    return rc;
}

void opts_free(struct cli_opts *o)
{
    free(o->groups);
    free(o->argfiles);
    free(o->delim);
    free(o->recend);
    free(o->recstart);
    free(o->tagstring);
    free(o->penv);
    free(o->retry_items);
    free(o->profile_argv);
    buf_free(&o->profile_words);
    o->profile_argv = NULL;
    free(o->retry_store);
    o->retry_items = NULL;
    o->retry_store = NULL;
    o->tagstring = o->penv = NULL;
    o->groups = NULL;
    o->argfiles = NULL;
    o->delim = NULL;
    o->recend = o->recstart = NULL;
}
