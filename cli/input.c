/*
 * input.c - input sources: ::: groups, :::: / -a files, standard input; --colsep.
 *
 * A record is one element of the cartesian product of the input groups, the last group
 * varying fastest (GNU parallel's order). Groups joined by :::+ / ::::+ form a "unit" that
 * advances element-wise and ends with its shortest member. The first unit is streamed: a
 * file there is read block by block and each element is handed out once, so memory does
 * not grow with the number of input lines. The other units are read in full when the input
 * is opened, because the product walks through them again for every element of the first
 * one (they are small in practice).
 *
 * Elements end with the delimiter (newline, NUL with -0, any string with -d); the last one
 * may lack it. With --colsep each element is split further into columns on a Perl-compatible
 * regular expression (PCRE2, with limits on each match), with Perl's split rules as GNU
 * parallel uses them: empty trailing columns are kept, and a pattern matching the empty
 * string splits between characters. A pattern without regex syntax is matched as a plain
 * string.
 *
 * Invariant: the fields of the record returned last point into the current block of the
 * stream, into the in-memory groups, or into argv, and stay valid until the next call.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#ifdef CONCUR_HAVE_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#endif
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

enum { BLOCK = 64 * 1024 };

/* GNU parallel's check of DOS line ends: of the first three elements read from files and
 * standard input (all of them together), with the default newline delimiter. */
struct crnl {
    unsigned cr, nl;
    bool decided;
};

/* A delimited stream read in blocks. Data lives in buf[start, end); buf[end] is always
 * writable so the last element can be NUL-terminated. */
struct reader {
    int fd;
    bool own_fd;
    const char *name;
    char *buf;
    size_t cap, start, end, scan;
    bool eof;
    off_t origin; /* the file offset of the first element (-1: unknown, a pipe) */
    bool header;  /* --header: the first element was taken as the header */
    const char *delim;
    size_t dlen;
    int intr_fd;       /* readable: stop reading (a signalfd), or -1 */
    struct crnl *crnl; /* the input's CR-NL check (NULL: not with this delimiter) */
    const char *eof_str; /* -E: the element that ends this source (NULL: none) */
    bool eof_seen;       /* it was read: the source has ended */
};

struct item {
    const char *p;
    size_t len;
};

struct igroup {
    bool linked;
    bool stream; /* read lazily (first unit only) */
    struct reader rd;
    struct item *items; /* in memory: argv items, or the elements of a file read in full */
    size_t n;
    char *data;      /* storage of a file read in full */
    size_t next;     /* next item to hand out (first unit, in memory) */
    struct item cur; /* the current element (first unit) */
};

struct unit {
    size_t first, count; /* groups [first, first + count) */
    size_t len, pos;     /* units after the first: shortest member, position */
};

struct input {
    struct igroup *g;
    size_t ng;
    struct unit *u;
    size_t nu;
    bool started, done;
    bool skip_blank;            /* -r */
    bool split_on_delim;        /* -d: split ::: arguments on the delimiter */
    bool trim_left, trim_right; /* --trim, --colsep */
    bool link; /* --link: one unit of groups read in full, the shorter ones wrapping */
    size_t link_len, link_pos; /* --link: the longest group's length (0: a group is empty) */
    const char *delim;
    size_t dlen;
    const char *eof_str; /* -E */
    /* --colsep */
    int intr_fd;
    bool colsep, use_re;
#ifdef CONCUR_HAVE_PCRE2
    pcre2_code *re;
    pcre2_match_data *md;
    pcre2_match_context *mc;
#endif
    const char *pattern;
    const char *lit;
    size_t litlen;
    /* --header: the first element of each group, copied, and the names it gives */
    struct buf hdr;
    struct record names;
    /* the elements of the record being built, and NUL bytes replaced in them */
    struct item *items;
    struct buf nulfix;
    bool nul_warned;
    struct crnl crnl;
    /* --shuf: every record, read at the first input_next (each: its number of fields, then
     * per field its column, length and bytes), and the order they are handed out in */
    bool shuf, shuf_loaded;
    struct buf shuf_data;
    size_t *shuf_at; /* the offset of each record in shuf_data, shuffled */
    size_t shuf_n, shuf_next;
};

/* ------------------------------------------------------------------ reading */

static const char *find_delim(const char *p, size_t n, const char *d, size_t dlen)
{
    if (dlen == 1)
        return memchr(p, d[0], n);
    return memmem(p, n, d, dlen);
}

static int open_file(const char *name, int *fd, bool *own)
{
    if (!strcmp(name, "-")) {
        *fd = 0;
        *own = false;
        return 0;
    }
    int f = open(name, O_RDONLY | O_CLOEXEC);
    if (f < 0) {
        int e = errno;
        cli_error("cannot open '%s': %s", name, strerror(e));
        return -e;
    }
    *fd = f;
    *own = true;
    return 0;
}

static int reader_fill(struct reader *r)
{
    if (r->start > 0) { /* move the partial element to the front */
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    if (r->cap - r->end < BLOCK / 2 + 1) {
        size_t cap = r->cap ? r->cap * 2 : BLOCK;
        char *b = realloc(r->buf, cap);
        if (!b) {
            cli_error("out of memory reading '%s'", r->name);
            return CONCUR_ENOMEM;
        }
        r->buf = b;
        r->cap = cap;
    }
    for (;;) {
        /* Input may be a terminal or a slow pipe: wait for it and for a signal together,
         * so that Ctrl-C is not held up by a read that blocks. */
        if (r->intr_fd >= 0) {
            struct pollfd pf[2] = {{.fd = r->fd, .events = POLLIN},
                                   {.fd = r->intr_fd, .events = POLLIN}};
            if (poll(pf, 2, -1) < 0 && errno != EINTR) {
                int e = errno;
                cli_error("error reading '%s': %s", r->name, strerror(e));
                return -e;
            }
            if (pf[1].revents & POLLIN)
                return CONCUR_EINTR;
        }
        ssize_t n = read(r->fd, r->buf + r->end, r->cap - 1 - r->end);
        if (n > 0) {
            r->end += (size_t)n;
            return 0;
        }
        if (n == 0) {
            r->eof = true;
            return 0;
        }
        if (errno != EINTR) {
            int e = errno;
            cli_error("error reading '%s': %s", r->name, strerror(e));
            return -e;
        }
    }
}

/* As GNU parallel: when the first three elements end in CR (lines ending in CR-NL, from a
 * DOS file), the CR is part of each argument, which is seldom wanted: a warning says so. */
static void check_crnl(struct crnl *c, const struct item *it)
{
    if (!c || c->decided)
        return;
    if (it->len && it->p[it->len - 1] == '\r')
        c->cr++;
    else
        c->nl++;
    if (c->cr == 3 || c->nl == 3) {
        c->decided = true;
        if (c->nl == 0)
            cli_warn("The first three values end in CR-NL. Consider using -d \"\\r\\n\"");
    }
}

static int reader_next_raw(struct reader *r, struct item *it);

/* Whether an element is the -E string, which ends its input source. */
static bool is_eof_str(const char *eof_str, const char *p, size_t n)
{
    return eof_str && strlen(eof_str) == n && !memcmp(eof_str, p, n);
}

/* Next element: 1, 0 at the end (or at the -E string), or a negative code. */
static int reader_next(struct reader *r, struct item *it)
{
    if (r->eof_seen)
        return 0;
    int rc = reader_next_raw(r, it);
    if (rc > 0 && is_eof_str(r->eof_str, it->p, it->len)) {
        r->eof_seen = true;
        return 0;
    }
    return rc;
}

static int reader_next_raw(struct reader *r, struct item *it)
{
    for (;;) {
        size_t avail = r->end - r->start;
        if (avail > r->scan) {
            const char *d =
                find_delim(r->buf + r->start + r->scan, avail - r->scan, r->delim, r->dlen);
            if (d) {
                it->p = r->buf + r->start;
                it->len = (size_t)(d - it->p);
                r->buf[r->start + it->len] = '\0';
                r->start += it->len + r->dlen;
                r->scan = 0;
                check_crnl(r->crnl, it);
                return 1;
            }
            /* A delimiter may straddle the end of what we have. */
            r->scan = avail >= r->dlen ? avail - (r->dlen - 1) : 0;
        }
        if (r->eof) {
            if (r->end == r->start)
                return 0;
            it->p = r->buf + r->start;
            it->len = r->end - r->start;
            r->buf[r->end] = '\0';
            r->start = r->end;
            check_crnl(r->crnl, it);
            return 1;
        }
        int rc = reader_fill(r);
        if (rc)
            return rc;
    }
}

/* Reads a whole group file into memory and splits it into items. */
static int load_group(struct igroup *g, struct reader *r)
{
    size_t cap = 0;
    struct item it;
    int rc;
    /* Read everything first (the items point into one block that must not move). */
    while (!r->eof)
        if ((rc = reader_fill(r)) != 0)
            return rc;
    while ((rc = reader_next(r, &it)) > 0) {
        if (g->n == cap) {
            cap = cap ? cap * 2 : 16;
            struct item *a = realloc(g->items, cap * sizeof(*a));
            if (!a) {
                cli_error("out of memory reading '%s'", r->name);
                return CONCUR_ENOMEM;
            }
            g->items = a;
        }
        g->items[g->n++] = it;
    }
    if (rc < 0)
        return rc;
    g->data = r->buf; /* the items point into it */
    r->buf = NULL;
    if (r->own_fd)
        close(r->fd);
    r->own_fd = false;
    r->fd = -1;
    return 0;
}

/* Counts the elements of a regular file from its current offset, without consuming it. */
static int count_file(struct reader *r, size_t *count)
{
    off_t off = r->origin >= 0 ? r->origin : lseek(r->fd, 0, SEEK_CUR);
    if (off < 0)
        return -errno;
    char *blk = malloc(BLOCK + 16);
    if (!blk)
        return CONCUR_ENOMEM;
    size_t n = 0, keep = 0;
    bool pending = false; /* bytes after the last delimiter */
    for (;;) {
        ssize_t got = pread(r->fd, blk + keep, BLOCK, off);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            free(blk);
            return -e;
        }
        if (got == 0)
            break;
        off += got;
        size_t len = keep + (size_t)got, pos = 0;
        const char *d;
        while ((d = find_delim(blk + pos, len - pos, r->delim, r->dlen)) != NULL) {
            n++;
            pos = (size_t)(d - blk) + r->dlen;
        }
        pending = len > pos;
        /* Keep a tail that may start a delimiter cut by the block end. */
        keep = r->dlen > 1 && len - pos >= r->dlen - 1 ? r->dlen - 1 : 0;
        if (keep)
            memmove(blk, blk + len - keep, keep);
    }
    free(blk);
    *count = n + (pending ? 1 : 0);
    if (r->header && *count) /* --header: taken already */
        (*count)--;
    return 0;
}

/* ------------------------------------------------------------------ --colsep */

/* Limits on one --colsep match, so that a pattern with stacked quantifiers fails fast with
 * a message instead of backtracking for ever: steps of the matcher, and its depth. */
enum { COLSEP_MATCH_LIMIT = 10000000, COLSEP_DEPTH_LIMIT = 100000 };

/* --colsep: a Perl-compatible regular expression (PCRE2), as in GNU parallel; a pattern
 * without regex syntax is matched as a plain string. */
static int compile_colsep(struct input *in, const char *pat)
{
    if (!strpbrk(pat, ".[]()*+?{}|^$\\")) {
        in->lit = pat;
        in->litlen = strlen(pat);
        return 0;
    }
#ifndef CONCUR_HAVE_PCRE2
    cli_error("bad --colsep '%s': this concur was built without PCRE2, so --colsep takes a "
              "plain string (no regular expression syntax)",
              pat);
    return CONCUR_EINVAL;
#else
    int err;
    PCRE2_SIZE off;
    in->re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
    if (!in->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        cli_error("bad --colsep '%s': %s at offset %zu", pat, (const char *)msg, (size_t)off);
        return CONCUR_EINVAL;
    }
    in->pattern = pat;
    in->md = pcre2_match_data_create_from_pattern(in->re, NULL);
    in->mc = pcre2_match_context_create(NULL);
    if (!in->md || !in->mc || pcre2_set_match_limit(in->mc, COLSEP_MATCH_LIMIT) != 0 ||
        pcre2_set_depth_limit(in->mc, COLSEP_DEPTH_LIMIT) != 0)
        return CONCUR_ENOMEM;
    in->use_re = true;
    return 0;
#endif
}

static int add_field(struct record *rec, const char *p, size_t len, unsigned col)
{
    if (rec->n == rec->cap) {
        size_t cap = rec->cap ? rec->cap * 2 : 8;
        struct field *f = realloc(rec->f, cap * sizeof(*f));
        if (!f)
            return CONCUR_ENOMEM;
        rec->f = f;
        rec->cap = cap;
    }
    rec->f[rec->n++] = (struct field){p, len, col};
    return 0;
}

/* Next separator match in s[from, n): sets *ms, *me and returns 1; 0 if none; CONCUR_EINVAL
 * after a message when the pattern reached its match limits. */
static int colsep_match(struct input *in, const char *s, size_t n, size_t from, size_t *ms,
                        size_t *me)
{
    if (from > n)
        return 0;
    if (!in->use_re) {
        const char *d = memmem(s + from, n - from, in->lit, in->litlen);
        if (!d)
            return 0;
        *ms = (size_t)(d - s);
        *me = *ms + in->litlen;
        return 1;
    }
#ifndef CONCUR_HAVE_PCRE2
    return 0; /* not reached: without PCRE2 every pattern is a plain string */
#else
    int rc = pcre2_match(in->re, (PCRE2_SPTR)s, n, from, 0, in->md, in->mc);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        cli_error("--colsep '%s' gave up on an input line: %s (simplify the pattern: nested "
                  "or stacked quantifiers backtrack without end)",
                  in->pattern, (const char *)msg);
        return CONCUR_EINVAL;
    }
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(in->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
#endif
}

static int split_columns(struct input *in, struct record *rec, const char *s, size_t n,
                         unsigned *col)
{
    size_t start = 0, from = 0, ms, me;
    int rc;
    while (from <= n && (rc = colsep_match(in, s, n, from, &ms, &me)) != 0) {
        if (rc < 0)
            return rc;
        if (me == ms) {
            /* An empty match: never at the start of a field, nor at the very end. */
            if (ms == start || ms >= n) {
                from = ms + 1;
                continue;
            }
        }
        if ((rc = add_field(rec, s + start, ms - start, ++*col)) != 0)
            return rc;
        start = me;
        from = me > ms ? me : me + 1;
    }
    return add_field(rec, s + start, n - start, ++*col);
}

/* ------------------------------------------------------------------ groups */

/* The items of a ::: group. With -d, as GNU parallel does, each argument is split further
 * on the delimiter, every piece kept: "a,b," with -d , gives a, b and an empty argument.
 * Without -d an argument stays whole (GNU parallel splits it on newlines). */
static int split_args(const struct input *in, struct igroup *g, const struct group_spec *spec)
{
    size_t n = 0;
    size_t dlen = in->split_on_delim ? in->dlen : 0;
    for (int pass = 0; pass < 2; pass++) {
        bool ended = false; /* -E: at the end-of-file string */
        for (size_t i = 0; i < spec->n && !ended; i++) {
            const char *p = spec->items[i], *end = p + strlen(p), *d;
            for (bool last = false; !last && !ended; p = d + dlen) {
                d = dlen ? find_delim(p, (size_t)(end - p), in->delim, dlen) : NULL;
                last = !d;
                d = d ? d : end;
                if ((ended = is_eof_str(in->eof_str, p, (size_t)(d - p))))
                    break;
                if (pass)
                    g->items[g->n++] = (struct item){p, (size_t)(d - p)};
                n++;
            }
        }
        if (pass == 0 && n && !(g->items = malloc(n * sizeof(*g->items))))
            return CONCUR_ENOMEM;
    }
    return 0;
}

static int open_group(struct input *in, struct igroup *g, const struct group_spec *spec,
                      bool stream)
{
    g->linked = spec->linked;
    if (!spec->is_file)
        return split_args(in, g, spec);
    struct reader *r = &g->rd;
    r->name = strcmp(spec->items[0], "-") ? spec->items[0] : "standard input";
    r->delim = in->delim;
    r->dlen = in->dlen;
    r->intr_fd = in->intr_fd;
    /* GNU parallel checks the default newline delimiter only (not -d, not -0) */
    r->crnl = in->dlen == 1 && in->delim[0] == '\n' && !in->split_on_delim ? &in->crnl : NULL;
    r->eof_str = in->eof_str;
    r->fd = -1;
    int rc = open_file(spec->items[0], &r->fd, &r->own_fd);
    if (rc)
        return rc;
    r->origin = lseek(r->fd, 0, SEEK_CUR);
    if (stream) {
        g->stream = true;
        return 0;
    }
    return load_group(g, r);
}

/* --trim (and --colsep's default): white space (Perl's \s) taken off each argument. */
static void trim_fields(const struct input *in, struct record *rec)
{
    static const char blanks[] = " \t\n\r\f\v";
    for (size_t i = 0; i < rec->n; i++) {
        struct field *f = &rec->f[i];
        while (in->trim_left && f->len && memchr(blanks, f->p[0], sizeof(blanks) - 1)) {
            f->p++;
            f->len--;
        }
        while (in->trim_right && f->len && memchr(blanks, f->p[f->len - 1], sizeof(blanks) - 1))
            f->len--;
    }
}

/* The lengths the product goes by: with --link the longest group (none if one is empty),
 * else each unit's shortest member. */
static void set_lengths(struct input *in)
{
    in->link_len = 0;
    for (size_t i = 0; in->link && i < in->ng; i++)
        if (in->g[i].n > in->link_len)
            in->link_len = in->g[i].n;
    for (size_t i = 0; in->link && i < in->ng; i++)
        if (in->g[i].n == 0)
            in->link_len = 0;
    for (size_t k = 1; k < in->nu; k++) {
        struct unit *u = &in->u[k];
        u->len = SIZE_MAX;
        for (size_t i = u->first; i < u->first + u->count; i++)
            if (in->g[i].n < u->len)
                u->len = in->g[i].n;
    }
}

/* --header: the first element of every group is its header, not an argument. The headers
 * are copied to in->hdr and split into in->names as a record would be (--colsep columns,
 * --trim): the names of the columns {1} {2}... Then the lengths the product goes by are
 * set again. 0 or a negative code. */
static int take_header(struct input *in)
{
    size_t *len = calloc(in->ng, sizeof(*len));
    int rc = len ? 0 : CONCUR_ENOMEM;
    for (size_t i = 0; i < in->ng && !rc; i++) {
        struct igroup *g = &in->g[i];
        struct item it = {"", 0};
        if (g->stream) {
            rc = reader_next(&g->rd, &it);
            g->rd.header = rc > 0;
            rc = rc < 0 ? rc : 0;
        } else if (g->n) {
            it = g->items[0];
            memmove(g->items, g->items + 1, --g->n * sizeof(*g->items));
        }
        len[i] = it.len;
        if (len[i] && it.p[len[i] - 1] == '\r') /* GNU parallel: a DOS line end is not a name */
            len[i]--;
        buf_add(&in->hdr, it.p, len[i]);
    }
    if (!rc && !buf_ok(&in->hdr))
        rc = CONCUR_ENOMEM;
    unsigned col = 0;
    const char *p = in->hdr.p;
    for (size_t i = 0; i < in->ng && !rc; i++) {
        rc = in->colsep ? split_columns(in, &in->names, p, len[i], &col)
                        : add_field(&in->names, p, len[i], ++col);
        p += len[i];
    }
    free(len);
    if (rc)
        return rc;
    trim_fields(in, &in->names);
    set_lengths(in);
    return 0;
}

void input_header(const struct input *in, const struct field **names, size_t *n)
{
    *names = in->names.f;
    *n = in->names.n;
}

int input_open(struct input **out, const struct cli_opts *o, int intr_fd)
{
    struct input *in = calloc(1, sizeof(*in));
    struct group_spec stdin_spec;
    char *dash[] = {"-"};
    const struct group_spec *specs = o->groups;
    size_t nspecs = o->ngroups;
    int rc = 0;
    *out = NULL;
    if (!in)
        return CONCUR_ENOMEM;
    in->delim = o->delim;
    in->dlen = o->delim_len;
    in->intr_fd = intr_fd;
    in->skip_blank = o->no_run_if_empty;
    in->split_on_delim = o->delim_given;
    in->trim_left = o->trim_left;
    in->trim_right = o->trim_right;
    in->eof_str = o->eof_str;
    in->shuf = o->shuf;
    if (nspecs == 0) { /* no input source: standard input */
        stdin_spec = (struct group_spec){true, false, dash, 1};
        specs = &stdin_spec;
        nspecs = 1;
    }
    in->g = calloc(nspecs, sizeof(*in->g));
    in->u = calloc(nspecs, sizeof(*in->u));
    in->items = calloc(nspecs, sizeof(*in->items));
    if (!in->g || !in->u || !in->items) {
        rc = CONCUR_ENOMEM;
        goto fail;
    }
    in->ng = nspecs;
    in->link = o->link && nspecs > 1;
    for (size_t i = 0; i < nspecs; i++) {
        if (i == 0 || !(specs[i].linked || in->link))
            in->u[in->nu++].first = i;
        in->u[in->nu - 1].count++;
    }
    for (size_t i = 0; i < nspecs; i++) {
        bool first_unit = i < in->u[0].count;
        if ((rc = open_group(in, &in->g[i], &specs[i], first_unit && !in->link)) != 0)
            goto fail;
    }
    set_lengths(in);
    if (o->colsep) {
        in->colsep = true;
        if ((rc = compile_colsep(in, o->colsep)) != 0)
            goto fail;
    }
    if (o->header && (rc = take_header(in)) != 0)
        goto fail;
    /* --header 0: as GNU parallel, the files' names name columns: the first file {1}, the
     * second {2}... (counting files only, as GNU parallel does) */
    unsigned id = 0;
    for (size_t i = 0; o->header_files && i < o->ngroups && !rc; i++)
        if (o->groups[i].is_file)
            rc = add_field(&in->names, o->groups[i].items[0], strlen(o->groups[i].items[0]), ++id);
    if (rc)
        goto fail;
    *out = in;
    return 0;
fail:
    if (rc == CONCUR_ENOMEM)
        cli_error("out of memory");
    input_close(in);
    return rc;
}

int input_count(struct input *in, size_t *total)
{
    if (in->link) {
        *total = in->link_len;
        return 0;
    }
    size_t t = 1, first = SIZE_MAX;
    bool any = false; /* a source that is not empty: the empty ones count as one (fill_empty) */
    for (size_t k = 1; k < in->nu; k++) {
        size_t len = in->u[k].len ? in->u[k].len : 1;
        any = any || in->u[k].len > 0;
        t = t > SIZE_MAX / len ? SIZE_MAX : t * len;
    }
    for (size_t i = 0; i < in->u[0].count; i++) {
        struct igroup *g = &in->g[i];
        size_t n = g->n;
        if (g->stream) {
            struct stat st;
            int rc;
            if (!in->eof_str && fstat(g->rd.fd, &st) == 0 && S_ISREG(st.st_mode) &&
                count_file(&g->rd, &n) == 0) {
                /* counted in place; it stays streamed */
            } else {
                /* A pipe or a terminal: read it in full now (GNU parallel does too). */
                if ((rc = load_group(g, &g->rd)) != 0)
                    return rc;
                g->stream = false;
                n = g->n;
            }
        }
        if (n < first)
            first = n;
    }
    if (!any && !first)
        t = 0;
    first = first ? first : 1;
    *total = t > SIZE_MAX / first ? SIZE_MAX : t * first;
    return 0;
}

/* A NUL byte cannot be passed in an argument (it would end it there, and split it into
 * more arguments when exec'd directly): as GNU parallel does, each one inside an element
 * becomes the two characters \0, with a warning (once). Only -d with a NUL delimiter
 * (-0) reads elements that hold none. The replaced elements live in in->nulfix until the
 * next record. 0 or CONCUR_ENOMEM. */
static int fix_nuls(struct input *in)
{
    size_t need = 0;
    for (size_t i = 0; i < in->ng; i++) {
        const struct item *it = &in->items[i];
        for (const char *p = it->p; (p = memchr(p, '\0', (size_t)(it->p + it->len - p))); p++)
            need++;
        if (need)
            need += it->len;
    }
    if (!need)
        return 0;
    buf_reset(&in->nulfix);
    if (!buf_reserve(&in->nulfix, need + 1))
        return CONCUR_ENOMEM;
    for (size_t i = 0; i < in->ng; i++) {
        struct item *it = &in->items[i];
        if (!memchr(it->p, '\0', it->len))
            continue;
        char *dst = in->nulfix.p + in->nulfix.len; /* reserved: never moves here */
        for (size_t k = 0; k < it->len; k++)
            if (it->p[k])
                buf_addc(&in->nulfix, it->p[k]);
            else
                buf_add(&in->nulfix, "\\0", 2);
        it->len = (size_t)(in->nulfix.p + in->nulfix.len - dst);
        it->p = dst;
    }
    if (!in->nul_warned) {
        in->nul_warned = true;
        if (cli_gnu()) {
            cli_warn("A NUL character in the input was replaced with \\0.");
            cli_warn("NUL cannot be passed through in the argument list.");
            cli_warn("Did you mean to use the --null option?");
        } else {
            cli_warn("a NUL character in the input was replaced with \\0: a NUL cannot be "
                     "passed in an argument (use -0 / --null for NUL-separated input)");
        }
    }
    return 0;
}

/* Moves the first unit to its next element: 1, 0 at its end, or a negative code. */
static int advance_first(struct input *in)
{
    if (in->link) {
        if (in->link_pos >= in->link_len)
            return 0;
        for (size_t i = 0; i < in->ng; i++)
            in->g[i].cur = in->g[i].items[in->link_pos % in->g[i].n];
        in->link_pos++;
        return 1;
    }
    for (size_t i = 0; i < in->u[0].count; i++) {
        struct igroup *g = &in->g[i];
        if (g->stream) {
            int rc = reader_next(&g->rd, &g->cur);
            if (rc <= 0)
                return rc;
        } else {
            if (g->next >= g->n)
                return 0;
            g->cur = g->items[g->next++];
        }
    }
    return 1;
}

/* As GNU parallel: an input source that is empty (or that -E ends at once) stands for one
 * empty argument, unless every source is empty. Called with the result of the first unit's
 * first advance_first (rc: 0 when it is empty): 1, or 0 when there is nothing to run, or
 * CONCUR_ENOMEM. */
static int fill_empty(struct input *in, int rc)
{
    static const struct item none = {"", 0};
    bool any = rc > 0;
    for (size_t k = 1; k < in->nu; k++)
        any = any || in->u[k].len > 0;
    if (!any)
        return 0;
    for (size_t k = 1; k < in->nu; k++) {
        const struct unit *u = &in->u[k];
        for (size_t i = u->first; u->len == 0 && i < u->first + u->count; i++) {
            struct igroup *g = &in->g[i];
            free(g->items);
            if (!(g->items = malloc(sizeof(*g->items))))
                return CONCUR_ENOMEM;
            g->items[0] = none;
            g->n = 1;
        }
    }
    set_lengths(in);
    for (size_t i = 0; rc == 0 && i < in->u[0].count; i++)
        in->g[i].cur = none; /* the first unit's one (its next advance_first ends it) */
    return 1;
}

/* Moves to the next element of the product and sets in->items: 1, 0 at the end, or a
 * negative code. */
static int next_items(struct input *in)
{
    int rc;
    if (!in->started) {
        in->started = true;
        rc = advance_first(in);
        if (rc >= 0 && !in->link)
            rc = fill_empty(in, rc);
        if (rc == CONCUR_ENOMEM)
            cli_error("out of memory");
        if (rc == 0)
            in->done = true;
    } else {
        /* The odometer: the last unit turns fastest; a full turn carries to the left. */
        size_t k = in->nu - 1;
        while (k >= 1) {
            if (++in->u[k].pos < in->u[k].len)
                break;
            in->u[k].pos = 0;
            k--;
        }
        rc = k == 0 ? advance_first(in) : 1;
    }
    if (rc <= 0)
        return rc;
    for (size_t k = 0; k < in->nu; k++) {
        const struct unit *u = &in->u[k];
        for (size_t i = u->first; i < u->first + u->count; i++)
            in->items[i] = k == 0 ? in->g[i].cur : in->g[i].items[u->pos];
    }
    return 1;
}

/* -r: whether every element of the record is empty or only blanks (spaces, tabs, newlines). */
static bool items_blank(const struct input *in)
{
    for (size_t i = 0; i < in->ng; i++)
        if (!only_blanks(in->items[i].p, in->items[i].len))
            return false;
    return true;
}

static int next_record(struct input *in, struct record *rec);

/* --shuf: appends a record to in->shuf_data, and its offset to in->shuf_at. */
static int shuf_keep(struct input *in, const struct record *rec, size_t *cap)
{
    if (in->shuf_n == *cap) {
        size_t n = *cap ? *cap * 2 : 256;
        size_t *at = realloc(in->shuf_at, n * sizeof(*at));
        if (!at)
            return CONCUR_ENOMEM;
        in->shuf_at = at;
        *cap = n;
    }
    in->shuf_at[in->shuf_n++] = in->shuf_data.len;
    buf_add(&in->shuf_data, &rec->n, sizeof(rec->n));
    for (size_t i = 0; i < rec->n; i++) {
        buf_add(&in->shuf_data, &rec->f[i].col, sizeof(rec->f[i].col));
        buf_add(&in->shuf_data, &rec->f[i].len, sizeof(rec->f[i].len));
        buf_add(&in->shuf_data, rec->f[i].p, rec->f[i].len);
    }
    return buf_ok(&in->shuf_data) ? 0 : CONCUR_ENOMEM;
}

/* --shuf: reads every record, then puts them in a random order (Fisher-Yates). */
static int shuf_load(struct input *in, struct record *rec)
{
    size_t cap = 0;
    int rc;
    while ((rc = next_record(in, rec)) > 0)
        if ((rc = shuf_keep(in, rec, &cap)) != 0) {
            cli_error("out of memory");
            return rc;
        }
    if (rc < 0)
        return rc;
    uint64_t x = 0;
    if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != (ssize_t)sizeof(x))
        x = (uint64_t)getpid() * 0x9E3779B97F4A7C15u ^ (uint64_t)(mono_now() * 1e9);
    for (size_t i = in->shuf_n; i > 1; i--) {
        x ^= x << 13; /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        size_t k = (size_t)(x % i), t = in->shuf_at[i - 1];
        in->shuf_at[i - 1] = in->shuf_at[k];
        in->shuf_at[k] = t;
    }
    in->shuf_loaded = true;
    return 0;
}

/* --shuf: the next record of the shuffled ones. */
static int shuf_next(struct input *in, struct record *rec)
{
    int rc;
    if (!in->shuf_loaded && (rc = shuf_load(in, rec)) != 0)
        return rc;
    if (in->shuf_next == in->shuf_n)
        return 0;
    const char *p = in->shuf_data.p + in->shuf_at[in->shuf_next++];
    size_t n;
    memcpy(&n, p, sizeof(n));
    p += sizeof(n);
    rec->n = 0;
    for (size_t i = 0; i < n; i++) {
        struct field f;
        memcpy(&f.col, p, sizeof(f.col));
        memcpy(&f.len, p + sizeof(f.col), sizeof(f.len));
        p += sizeof(f.col) + sizeof(f.len);
        if ((rc = add_field(rec, p, f.len, f.col)) != 0) {
            cli_error("out of memory");
            return rc;
        }
        p += f.len;
    }
    return 1;
}

int input_next(struct input *in, struct record *rec)
{
    return in->shuf ? shuf_next(in, rec) : next_record(in, rec);
}

static int next_record(struct input *in, struct record *rec)
{
    int rc;
    if (in->done)
        return 0;
    do
        rc = next_items(in);
    while (rc > 0 && in->skip_blank && items_blank(in));
    if (rc <= 0) {
        in->done = true;
        return rc;
    }
    rec->n = 0;
    unsigned col = 0;
    rc = fix_nuls(in);
    for (size_t i = 0; i < in->ng && !rc; i++) {
        const struct item it = in->items[i];
        rc = in->colsep ? split_columns(in, rec, it.p, it.len, &col)
                        : add_field(rec, it.p, it.len, ++col);
    }
    if (rc) {
        if (rc == CONCUR_ENOMEM)
            cli_error("out of memory");
        in->done = true;
        return rc;
    }
    trim_fields(in, rec);
    return 1;
}

void input_close(struct input *in)
{
    if (!in)
        return;
    for (size_t i = 0; i < in->ng; i++) {
        struct igroup *g = &in->g[i];
        if (g->rd.own_fd && g->rd.fd >= 0)
            close(g->rd.fd);
        free(g->rd.buf);
        free(g->items);
        free(g->data);
    }
#ifdef CONCUR_HAVE_PCRE2
    pcre2_code_free(in->re);
    pcre2_match_data_free(in->md);
    pcre2_match_context_free(in->mc);
#endif
    buf_free(&in->shuf_data);
    free(in->shuf_at);
    free(in->g);
    free(in->u);
    free(in->items);
    buf_free(&in->nulfix);
    buf_free(&in->hdr);
    free(in->names.f);
    free(in);
}
