/*
 * pipe.c - --pipe: standard input cut into blocks, each block the stdin of one job.
 *
 * The cuts are GNU parallel's. Input is read a round at a time: the unconsumed bytes are
 * topped up to the next multiple of the block size (--block, 1M by default), or to the end
 * of the input. Then, in one round:
 *   - by default, one block ends after the last record separator of the buffer (--recend
 *     followed by --recstart; "\n" when neither is given), and the partial record after it
 *     starts the next round; at the end of the input, what is left is the last block;
 *   - with -N (or -n) N, as many blocks of exactly N records as the buffer holds (the
 *     search for separators starts at the second byte, so a record is never empty at the
 *     start of a block); with -L too, N * L records;
 *   - with -L L alone, one block of the most whole groups of L lines the buffer holds.
 * A round that cuts nothing (a record longer than the block) grows the block size by 30%
 * with a warning, and reads on. Blocks are never empty: empty input runs no job.
 *
 * Reading never holds up the jobs when standard input is a pipe or a socket: the runner
 * then watches it (CONCUR_RUN_SOURCE_WAIT), and pipe_next() answers CONCUR_EAGAIN instead of
 * waiting for data, going on where it was at the next call; running jobs are fed and their
 * output read meanwhile. A regular file is read as it comes (it never makes us wait).
 *
 * --header: the header (what its regexp matches at the start of the input; ':' the first
 * line, N the first N lines) is taken out of the first round and put in front of every block.
 *
 * Memory: a block stays with its job until the job is over (retries run it again), then
 * comes back to the free list (pipe_put). The runner asks for a block only when a slot is
 * free, so at most one block per running job plus the one being read are held at once,
 * each about the block size: memory does not grow with the input.
 *
 * Cutting a block out of the buffer moves whichever side is smaller: the block is copied
 * into a buffer of its own when it is the small part (-N 1 over a large round), else the
 * buffer becomes the block and the partial record is copied to a fresh buffer.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#ifdef CONCUR_HAVE_PCRE2
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#endif
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A pipe on stdin is grown to this (the unprivileged limit by default, fs.pipe-max-size):
 * the producer and concur then trade up to a megabyte at a wake-up instead of 64 KiB.
 * Measured with cat of 1 GB into --pipe --block 1M wc -l on 2 cores: the same wall time
 * (the copies through the pipe bound it), about 15% less system time. */
enum { PIPE_SIZE = 1 << 20 };

struct pipe_in {
    int fd;
    int intr_fd;
    struct pblock *cur; /* the round's bytes: cur->mem[start, end) */
    size_t start, end;
    struct pblock *free_list;
    size_t bs; /* the block size now (grows past long records) */
    char *sep; /* recend followed by recstart */
    size_t sep_len, recend_len;
    bool rrs; /* --rrs: the separators are taken out of the blocks */
    /* --pipepart: the file, mapped; the next block starts at part_pos */
    bool part;
    const char *map;
    size_t map_size, part_pos;
    /* --group-by N: records are runs of lines with the same column N, split on colsep (a
     * plain string, or with PCRE2 a regular expression: re_col) */
    size_t group_col;
    const char *colsep;
#ifdef CONCUR_HAVE_PCRE2
    pcre2_code *re_col;
#endif
#ifdef CONCUR_HAVE_PCRE2
    /* --regexp: recend then recstart (captured, in a lookahead); recstart alone (matched at
     * the start of a block, for --rrs); recend at the end of a block */
    pcre2_code *re_sep, *re_start, *re_end;
    pcre2_match_data *md;
#endif
    size_t nrec;  /* -N (times -L): records per block; 0: cut by size */
    size_t lines; /* -L without -N: lines per record */
    /* --header: wanted (its regexp, or a number of lines), then the header taken */
    bool header_wanted, header_taken, header_re_set;
    regex_t header_re;
    size_t header_lines;
    char *header;
    size_t header_len;
    bool eof, done;
    bool may_wait; /* the runner waits for stdin: CONCUR_EAGAIN rather than a blocking read */
    bool filling;  /* a round is being read: `want` bytes more */
    size_t want;
    bool in_round; /* the round's buffer is being cut */
    bool wrote;    /* a block was cut in this round */
    bool cut_any;  /* a block was cut */
};

/* ------------------------------------------------------------------ buffers */

static struct pblock *block_get(struct pipe_in *p, size_t cap)
{
    struct pblock *b = p->free_list;
    if (b) {
        p->free_list = b->next;
    } else if (!(b = calloc(1, sizeof(*b)))) {
        return NULL;
    }
    b->next = NULL;
    if (b->cap < cap) {
        char *m = realloc(b->mem, cap);
        if (!m) {
            b->next = p->free_list;
            p->free_list = b;
            return NULL;
        }
        b->mem = m;
        b->cap = cap;
    }
    b->data = b->mem;
    b->len = 0;
    return b;
}

void pipe_put(struct pipe_in *p, struct pblock *b)
{
    if (!b)
        return;
    b->next = p->free_list;
    p->free_list = b;
}

void pblock_free(struct pblock *b)
{
    if (b) {
        free(b->mem);
        free(b);
    }
}

/* ------------------------------------------------------------------ reading */

/* Reads the rest of the round into cur->mem[end, end + want): less only at the end of the
 * input. 0; CONCUR_EAGAIN when the runner waits for stdin (may_wait) and it has nothing
 * now: the next call goes on; CONCUR_EINTR (a signal while waiting); or -errno after a
 * message. */
static int read_more(struct pipe_in *p)
{
    char *dst = p->cur->mem;
    while (p->want > 0) {
        if (p->may_wait) { /* never block: the runner's loop watches stdin and signals */
            struct pollfd pf = {.fd = p->fd, .events = POLLIN};
            int n = poll(&pf, 1, 0);
            if (n < 0 && errno != EINTR) {
                int e = errno;
                cli_error("error reading standard input: %s", strerror(e));
                return -e;
            }
            if (n == 0)
                return CONCUR_EAGAIN;
        } else if (p->intr_fd >= 0) { /* wait for input and for a signal (see input.c) */
            struct pollfd pf[2] = {{.fd = p->fd, .events = POLLIN},
                                   {.fd = p->intr_fd, .events = POLLIN}};
            if (poll(pf, 2, -1) < 0 && errno != EINTR) {
                int e = errno;
                cli_error("error reading standard input: %s", strerror(e));
                return -e;
            }
            if (pf[1].revents & POLLIN)
                return CONCUR_EINTR;
        }
        ssize_t n = read(p->fd, dst + p->end, p->want);
        if (n > 0) {
            p->end += (size_t)n;
            p->want -= (size_t)n;
        } else if (n == 0) {
            p->eof = true;
            return 0;
        } else if (errno != EINTR) {
            int e = errno;
            cli_error("error reading standard input: %s", strerror(e));
            return -e;
        }
    }
    return 0;
}

/* Starts a round: the unconsumed bytes are moved to the front, to be topped up to the next
 * multiple of the block size (GNU parallel's read_block) by read_more(). */
static int begin_round(struct pipe_in *p)
{
    size_t have = p->end - p->start;
    size_t want = p->bs - have % p->bs;
    if (have + want < have) {
        cli_error("--block is too large");
        return CONCUR_EINVAL;
    }
    if (!p->cur || p->cur->cap < have + want) {
        struct pblock *b = block_get(p, have + want);
        if (!b) {
            cli_error("out of memory reading standard input (block of %zu bytes)", have + want);
            return CONCUR_ENOMEM;
        }
        if (have)
            memcpy(b->mem, p->cur->mem + p->start, have);
        pipe_put(p, p->cur);
        p->cur = b;
    } else if (p->start > 0) {
        memmove(p->cur->mem, p->cur->mem + p->start, have);
    }
    p->start = 0;
    p->end = have;
    p->want = want;
    p->filling = true;
    return 0;
}

/* ------------------------------------------------------------------ cutting */

/* Perl's index(): the first @sep at or after @from in [s, s+n), or -1. An empty @sep is
 * found at min(from, n). */
static ptrdiff_t find_from(const char *s, size_t n, const char *sep, size_t sep_len, size_t from)
{
    if (from > n)
        from = n;
    if (sep_len == 0)
        return (ptrdiff_t)from;
    const char *hit = sep_len == 1 ? memchr(s + from, sep[0], n - from)
                                   : memmem(s + from, n - from, sep, sep_len);
    return hit ? hit - s : -1;
}

/* Perl's rindex(): the last @sep in [s, s+n), or -1. An empty @sep is found at n. */
static ptrdiff_t find_last(const char *s, size_t n, const char *sep, size_t sep_len)
{
    if (sep_len == 0)
        return (ptrdiff_t)n;
    if (sep_len == 1) {
        const char *hit = memrchr(s, sep[0], n);
        return hit ? hit - s : -1;
    }
    for (size_t i = n >= sep_len ? n - sep_len + 1 : 0; i-- > 0;)
        if (s[i] == sep[0] && !memcmp(s + i, sep, sep_len))
            return (ptrdiff_t)i;
    return -1;
}

/* --group-by: the next column separator in line[from, n): its start and end, or false. */
static bool next_colsep(const struct pipe_in *p, const char *line, size_t n, size_t from,
                        size_t *ms, size_t *me)
{
#ifdef CONCUR_HAVE_PCRE2
    if (p->re_col) {
        if (pcre2_match(p->re_col, (PCRE2_SPTR)line, n, from, 0, p->md, NULL) <= 0)
            return false;
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
        if (ov[1] == ov[0]) /* an empty match splits nothing */
            return false;
        *ms = ov[0];
        *me = ov[1];
        return true;
    }
#endif
    size_t len = strlen(p->colsep);
    const char *hit = from <= n ? memmem(line + from, n - from, p->colsep, len) : NULL;
    if (!hit)
        return false;
    *ms = (size_t)(hit - line);
    *me = *ms + len;
    return true;
}

/* --group-by: whether lines a and b (without their newlines) have the same column. */
static bool same_group(const struct pipe_in *p, const char *a, size_t an, const char *b,
                       size_t bn)
{
    const char *line[2] = {a, b};
    size_t n[2] = {an, bn}, ks[2] = {0, 0}, ke[2];
    for (int k = 0; k < 2; k++) {
        size_t ms = 0, me = 0, col = 1;
        ke[k] = n[k];
        while (col <= p->group_col && next_colsep(p, line[k], n[k], ks[k], &ms, &me)) {
            if (col == p->group_col) {
                ke[k] = ms;
                break;
            }
            ks[k] = me;
            col++;
        }
        if (col < p->group_col) /* no such column: an empty one */
            ks[k] = ke[k] = n[k];
    }
    return ke[0] - ks[0] == ke[1] - ks[1] && !memcmp(a + ks[0], b + ks[1], ke[0] - ks[0]);
}

/* --group-by: the first newline at or after `from` that ends a run of lines with the same
 * column (the line after it must be whole, or the input at its end). */
static bool find_group(const struct pipe_in *p, const char *s, size_t n, size_t from,
                       size_t *start, size_t *cut)
{
    const char *nl0 = from ? memrchr(s, '\n', from < n ? from : n) : NULL;
    size_t ls = nl0 ? (size_t)(nl0 - s) + 1 : 0;
    for (;;) {
        const char *e = memchr(s + ls, '\n', n - ls);
        if (!e)
            return false;
        size_t i = (size_t)(e - s), ns = i + 1;
        const char *e2 = ns < n ? memchr(s + ns, '\n', n - ns) : NULL;
        size_t ne = e2 ? (size_t)(e2 - s) : n;
        if (!e2 && !(p->eof && ns < n))
            return false;
        if (i >= from && !same_group(p, s + ls, i - ls, s + ns, ne - ns)) {
            *start = i;
            *cut = ns;
            return true;
        }
        ls = ns;
    }
}

/* The first record separator that starts at or after `from` in s[0, n): true with *start
 * set to where it starts and *cut to where the record before it ends (after --recend). */
static bool find_sep(const struct pipe_in *p, const char *s, size_t n, size_t from,
                     size_t *start, size_t *cut)
{
    if (p->group_col)
        return find_group(p, s, n, from, start, cut);
#ifdef CONCUR_HAVE_PCRE2
    if (p->re_sep) {
        if (from > n ||
            pcre2_match(p->re_sep, (PCRE2_SPTR)s, n, from, 0, p->md, NULL) <= 0)
            return false;
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md);
        *start = ov[0];
        *cut = ov[1];
        return true;
    }
#endif
    ptrdiff_t i = find_from(s, n, p->sep, p->sep_len, from);
    if (i < 0)
        return false;
    *start = (size_t)i;
    *cut = (size_t)i + p->recend_len;
    return true;
}

/* Where the record before the last separator of s[0, n) ends, or -1 if there is none. */
static ptrdiff_t last_cut(const struct pipe_in *p, const char *s, size_t n)
{
    bool scan = p->group_col > 0;
#ifdef CONCUR_HAVE_PCRE2
    scan = scan || p->re_sep;
#endif
    if (scan) {
        ptrdiff_t last = -1;
        size_t start, cut;
        for (size_t from = 0; find_sep(p, s, n, from, &start, &cut); from = start + 1)
            last = (ptrdiff_t)cut;
        return last;
    }
    ptrdiff_t i = find_last(s, n, p->sep, p->sep_len);
    return i < 0 ? -1 : i + (ptrdiff_t)p->recend_len;
}

/* Where the next block of this round ends (bytes from the start of the round's data), or
 * 0 when the round cuts no (more) block. */
static size_t next_cut(struct pipe_in *p)
{
    if (!p->cur || p->end == p->start) /* nothing left in the round */
        return 0;
    const char *s = p->cur->mem + p->start;
    size_t n = p->end - p->start;
    if (p->lines) { /* -L: the most whole groups of L lines; once a round */
        if (p->wrote)
            return 0;
        size_t count = 0;
        for (const char *q = s; (q = memchr(q, '\n', (size_t)(s + n - q))) != NULL; q++)
            count++;
        size_t want = count / p->lines * p->lines, cut = 0;
        for (size_t k = 0; k < want; k++)
            cut = (size_t)((const char *)memchr(s + cut, '\n', n - cut) - s) + 1;
        return cut;
    }
    if (p->nrec) {
        /* -N: the N-th separator, the search starting at the second byte. --regexp: at the
         * first (but a record is never empty there either), and as in GNU parallel, what
         * comes before the input's first separator is a block of its own. */
        size_t start = 0, cut = 0, prev = 0, from = 1, nrec = p->nrec;
#ifdef CONCUR_HAVE_PCRE2
        if (p->re_sep) {
            from = 0;
            nrec = p->cut_any ? nrec : 1;
        }
#endif
        bool found = true;
        for (size_t k = 0; k < nrec && found; k++, prev = cut)
            do {
                found = find_sep(p, s, n, from, &start, &cut);
                from = start + 1;
            } while (found && cut <= prev);
        return found ? cut : 0;
    }
    if (p->eof || p->wrote) /* by size: once a round, and the end goes whole */
        return 0;
    ptrdiff_t cut = last_cut(p, s, n);
    return cut < 0 ? 0 : (size_t)cut;
}

/* --rrs: whether the block's data d[0, n) starts with --recstart (its length in *len). */
static bool starts_with_recstart(const struct pipe_in *p, const char *d, size_t n, size_t *len)
{
    size_t rs = p->sep_len - p->recend_len;
#ifdef CONCUR_HAVE_PCRE2
    if (p->re_start) {
        if (pcre2_match(p->re_start, (PCRE2_SPTR)d, n, 0, PCRE2_ANCHORED, p->md, NULL) <= 0)
            return false;
        *len = pcre2_get_ovector_pointer(p->md)[1];
        return true;
    }
#endif
    *len = rs;
    return rs && n >= rs && !memcmp(d, p->sep + p->recend_len, rs);
}

/* --rrs: whether the block's data d[0, n) ends with --recend (where it starts in *at). */
static bool ends_with_recend(const struct pipe_in *p, const char *d, size_t n, size_t *at)
{
#ifdef CONCUR_HAVE_PCRE2
    if (p->re_end) {
        if (pcre2_match(p->re_end, (PCRE2_SPTR)d, n, 0, 0, p->md, NULL) <= 0)
            return false;
        *at = pcre2_get_ovector_pointer(p->md)[0];
        return true;
    }
#endif
    *at = n - p->recend_len;
    return p->recend_len && n >= p->recend_len && !memcmp(d + *at, p->sep, p->recend_len);
}

/* --rrs: the record separators taken out of a block, in place: --recstart at its start,
 * --recend at its end, and both at every separator in between. */
static void remove_seps(const struct pipe_in *p, struct pblock *b)
{
    char *d = b->mem + (b->data - b->mem);
    size_t n = b->len, from = 0, out = 0, start, cut, at;
    if (ends_with_recend(p, d, n, &at))
        n = at;
    if (!starts_with_recstart(p, d, n, &from))
        from = 0;
    size_t keep = from; /* copy from here */
    while (keep < n && find_sep(p, d, n, from, &start, &cut)) {
        size_t rs_end = cut + (p->sep_len - p->recend_len);
#ifdef CONCUR_HAVE_PCRE2
        if (p->re_sep) /* the recstart the lookahead captured */
            rs_end = pcre2_get_ovector_pointer(p->md)[3];
#endif
        if (rs_end == start) { /* an empty separator: nothing to take out */
            from = start + 1;
            continue;
        }
        memmove(d + out, d + keep, start - keep);
        out += start - keep;
        keep = from = rs_end;
    }
    if (keep < n)
        memmove(d + out, d + keep, n - keep);
    out += keep < n ? n - keep : 0;
    b->data = d;
    b->len = out;
}

/* Hands out the first @len bytes of the round as a block, moving the smaller side. */
static int cut_block(struct pipe_in *p, size_t len, struct pblock **out)
{
    size_t rest = p->end - p->start - len;
    struct pblock *b = NULL;
    if (rest > 0 && !(b = block_get(p, len <= rest ? len : p->cur->cap))) {
        cli_error("out of memory reading standard input");
        return CONCUR_ENOMEM;
    }
    if (len <= rest) { /* the block is the small part: copy it out */
        memcpy(b->mem, p->cur->mem + p->start, len);
        b->len = len;
        p->start += len;
        *out = b;
        return 1;
    }
    /* The round's buffer becomes the block; the rest (if any) moves to a buffer of its own
     * (none: the next round takes one). */
    struct pblock *blk = p->cur;
    blk->data = blk->mem + p->start;
    blk->len = len;
    if (rest)
        memcpy(b->mem, blk->data + len, rest);
    p->cur = b;
    p->start = 0;
    p->end = rest;
    *out = blk;
    return 1;
}

/* The next block is the first `len` bytes of the round (cut_block), its separators taken
 * out with --rrs. */
static int hand_out(struct pipe_in *p, size_t len, struct pblock **out)
{
    int rc = cut_block(p, len, out);
    if (rc == 1 && p->rrs)
        remove_seps(p, *out);
    return rc;
}


/* --header: the header is taken out of the first round. 0 or CONCUR_ENOMEM. */
static int take_header(struct pipe_in *p)
{
    const char *s = p->cur->mem + p->start;
    size_t n = p->end - p->start, len = 0;
    p->header_taken = true;
    if (!p->header_re_set) {
        for (size_t k = 0; k < p->header_lines && len < n; k++) {
            const char *nl = memchr(s + len, '\n', n - len);
            len = nl ? (size_t)(nl - s) + 1 : n;
        }
    } else {
        char *text = malloc(n + 1); /* regexec wants a string */
        if (!text) {
            cli_error("out of memory reading standard input");
            return CONCUR_ENOMEM;
        }
        memcpy(text, s, n);
        text[n] = '\0';
        regmatch_t m;
        if (regexec(&p->header_re, text, 1, &m, 0) == 0 && m.rm_so == 0)
            len = (size_t)m.rm_eo;
        free(text);
    }
    if (len && !(p->header = malloc(len))) {
        cli_error("out of memory reading standard input");
        return CONCUR_ENOMEM;
    }
    if (len)
        memcpy(p->header, s, len);
    p->header_len = len;
    p->start += len;
    return 0;
}

int pipe_header(struct pipe_in *p, struct pblock **b)
{
    if (!p->header_len)
        return 0;
    struct pblock *nb = block_get(p, p->header_len + (*b)->len);
    if (!nb) {
        cli_error("out of memory reading standard input");
        return CONCUR_ENOMEM;
    }
    memcpy(nb->mem, p->header, p->header_len);
    memcpy(nb->mem + p->header_len, (*b)->data, (*b)->len);
    nb->len = p->header_len + (*b)->len;
    pipe_put(p, *b);
    *b = nb;
    return 0;
}

/* --pipepart: the next block runs from where the last one ended to the end of the first
 * record that ends at least a block size further (or to the end of the file). */
static int part_next(struct pipe_in *p, struct pblock **out)
{
    size_t from = p->part_pos, start, cut;
    if (from >= p->map_size)
        return 0;
    if (!find_sep(p, p->map, p->map_size, from + p->bs, &start, &cut) || cut <= from)
        cut = p->map_size;
    struct pblock *b = block_get(p, cut - from);
    if (!b) {
        cli_error("out of memory reading '%s' (block of %zu bytes)", "--pipepart", cut - from);
        return CONCUR_ENOMEM;
    }
    memcpy(b->mem, p->map + from, cut - from);
    b->len = cut - from;
    p->part_pos = cut;
    if (p->rrs)
        remove_seps(p, b);
    *out = b;
    return 1;
}

int pipe_next(struct pipe_in *p, struct pblock **out)
{
    int rc;
    if (p->part)
        return part_next(p, out);
    while (!p->done) {
        if (p->in_round) {
            size_t cut = next_cut(p);
            if (cut > 0) {
                p->wrote = p->cut_any = true;
                return hand_out(p, cut, out);
            }
            p->in_round = false;
            if (p->eof) { /* what is left is the last block */
                p->done = true;
                size_t left = p->end - p->start;
                return left ? hand_out(p, left, out) : 0;
            }
            if (!p->wrote) { /* a record longer than the block: read on, in bigger rounds */
                size_t bs = (size_t)ceil((double)p->bs * 1.3 + 1);
                if (cli_gnu())
                    cli_warn("A record was longer than %zu. Increasing to --blocksize %zu.",
                             p->bs, bs);
                else
                    cli_warn("a record is longer than --block %zu; using --block %zu", p->bs,
                             bs);
                p->bs = bs;
            }
        }
        if (!p->filling && (rc = begin_round(p)) != 0)
            return rc;
        if ((rc = read_more(p)) != 0)
            return rc;
        p->filling = false;
        p->in_round = true;
        p->wrote = false;
        if (p->header_wanted && !p->header_taken) {
            if ((rc = take_header(p)) != 0)
                return rc;
            /* As GNU parallel, the first block is read after the header: top the round up */
            if (p->header_len && !p->eof)
                p->in_round = false;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ set-up */

/* --header's value as GNU parallel reads it with --pipe: ':' is the first line, a number N
 * the first N lines, anything else a regexp (\n and \t in it are a newline and a TAB; . does
 * not match a newline). 0, or CONCUR_EINVAL / CONCUR_ENOMEM after a message. */
static int pipe_header_spec(struct pipe_in *p, const char *val)
{
    p->header_wanted = true;
    if (!strcmp(val, ":")) {
        p->header_lines = 1;
        return 0;
    }
    if (*val && strspn(val, "0123456789") == strlen(val)) {
        p->header_lines = strtoul(val, NULL, 10);
        return 0;
    }
    char *re = malloc(strlen(val) + 1), *d = re;
    if (!re) {
        cli_error("out of memory");
        return CONCUR_ENOMEM;
    }
    for (const char *s = val; *s; s++) {
        if (s[0] == '\\' && (s[1] == 'n' || s[1] == 't')) {
            *d++ = *++s == 'n' ? '\n' : '\t';
        } else {
            *d++ = *s;
        }
    }
    *d = '\0';
    int rc = regcomp(&p->header_re, re, REG_EXTENDED | REG_NEWLINE);
    free(re);
    if (rc) {
        cli_error("bad value for --header: '%s' (not a regular expression)", val);
        return CONCUR_EINVAL;
    }
    p->header_re_set = true;
    return 0;
}

#ifdef CONCUR_HAVE_PCRE2
/* One --regexp pattern: pre, the regexp re (n bytes), post (Perl-compatible, ^ and $ at
 * every line). NULL after a message (*oom set when out of memory). */
static pcre2_code *compile_sep(const char *pre, const char *re, size_t n, const char *post,
                               const struct cli_opts *o, bool *oom)
{
    struct buf b = {0};
    buf_adds(&b, pre);
    buf_add(&b, re, n);
    buf_adds(&b, post);
    if (!buf_ok(&b)) {
        *oom = true;
        return NULL;
    }
    int err;
    PCRE2_SIZE off;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)(b.p ? b.p : ""), b.len, PCRE2_MULTILINE,
                                     &err, &off, NULL);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        cli_error("bad --recend / --recstart regular expression '%.*s' / '%.*s': %s",
                  (int)o->recend_len, o->recend, (int)o->recstart_len, o->recstart,
                  (const char *)msg);
    }
    buf_free(&b);
    return code;
}
#endif

/* --regexp: --recend and --recstart as regular expressions. 0, or CONCUR_EINVAL /
 * CONCUR_ENOMEM after a message. */
static int compile_seps(struct pipe_in *p, const struct cli_opts *o)
{
#ifdef CONCUR_HAVE_PCRE2
    bool oom = false;
    struct buf sep = {0}; /* (?:recend)(?=(recstart)) */
    buf_adds(&sep, "(?:");
    buf_add(&sep, o->recend, o->recend_len);
    buf_adds(&sep, ")(?=(");
    buf_add(&sep, o->recstart, o->recstart_len);
    buf_adds(&sep, "))");
    if (!buf_ok(&sep))
        oom = true;
    else
        p->re_sep = compile_sep("", sep.p, sep.len, "", o, &oom);
    buf_free(&sep);
    if (!p->re_sep || !(p->re_start = compile_sep("(?:", o->recstart, o->recstart_len, ")", o, &oom)) ||
        !(p->re_end = compile_sep("(?:", o->recend, o->recend_len, ")\\z", o, &oom)))
        goto fail;
    if (!(p->md = pcre2_match_data_create(4, NULL))) {
        oom = true;
        goto fail;
    }
    return 0;
fail:
    if (oom)
        cli_error("out of memory");
    return oom ? CONCUR_ENOMEM : CONCUR_EINVAL;
#else
    (void)p;
    (void)o;
    cli_error("--regexp needs a concur built with PCRE2");
    return CONCUR_EINVAL;
#endif
}

/* --pipepart: the file mapped, and the block size: --block, or with --block -N the file's
 * size over N times the job slots, rounded up (as GNU parallel). 0 or -errno after a
 * message. */
static int part_open(struct pipe_in *p, const struct cli_opts *o)
{
    const char *name = o->pipepart_file;
    struct stat st;
    int fd = open(name, O_RDONLY | O_CLOEXEC), e = 0;
    if (fd < 0 || fstat(fd, &st) < 0)
        e = errno;
    else if (!S_ISREG(st.st_mode))
        e = ESPIPE; /* blocks are cut by seeking */
    if (e) {
        cli_error("--pipepart: cannot read '%s': %s", name,
                  e == ESPIPE ? "not a regular file" : strerror(e));
        if (fd >= 0)
            close(fd);
        return -e;
    }
    p->part = true;
    p->eof = true; /* (the last record need not end with --recend) */
    p->map_size = (size_t)st.st_size;
    if (p->map_size) {
        void *m = mmap(NULL, p->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            e = errno;
            cli_error("--pipepart: cannot map '%s': %s", name, strerror(e));
            close(fd);
            return -e;
        }
        p->map = m;
    }
    close(fd);
    if (o->block_per_slot) {
        size_t slots = o->jobs > 0 ? (size_t)o->jobs : (size_t)concur_cpu_count();
        size_t parts = slots * o->block_size; /* (rounded up, as GNU parallel) */
        p->bs = p->map_size / parts + (p->map_size % parts != 0);
    }
    if (p->bs < 1)
        p->bs = 1;
    return 0;
}

/* --group-by N: the column separator (--colsep, else a TAB). 0, or CONCUR_EINVAL /
 * CONCUR_ENOMEM after a message. */
static int group_setup(struct pipe_in *p, const struct cli_opts *o)
{
    const char *sep = o->colsep ? o->colsep : "\t";
    p->group_col = o->group_by;
    if (!strpbrk(sep, ".[]()*+?{}|^$\\")) {
        p->colsep = sep;
        return 0;
    }
#ifdef CONCUR_HAVE_PCRE2
    int err;
    PCRE2_SIZE off;
    if (!(p->re_col = pcre2_compile((PCRE2_SPTR)sep, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL))) {
        cli_error("bad --colsep '%s' (for --group-by)", sep);
        return CONCUR_EINVAL;
    }
    if (!p->md && !(p->md = pcre2_match_data_create(4, NULL))) {
        cli_error("out of memory");
        return CONCUR_ENOMEM;
    }
    return 0;
#else
    cli_error("--group-by with --colsep '%s' needs a concur built with PCRE2", sep);
    return CONCUR_EINVAL;
#endif
}

int pipe_open(struct pipe_in **out, const struct cli_opts *o, int intr_fd)
{
    struct pipe_in *p = calloc(1, sizeof(*p));
    if (!p) {
        cli_error("out of memory");
        return CONCUR_ENOMEM;
    }
    p->fd = 0;
    p->intr_fd = intr_fd;
    p->bs = o->block_size;
    p->recend_len = o->recend_len;
    p->sep_len = o->recend_len + o->recstart_len;
    p->sep = malloc(p->sep_len + 1);
    if (!p->sep) {
        free(p);
        cli_error("out of memory");
        return CONCUR_ENOMEM;
    }
    memcpy(p->sep, o->recend, o->recend_len);
    memcpy(p->sep + o->recend_len, o->recstart, o->recstart_len);
    p->rrs = o->rrs;
    if (o->group_by) {
        int rc = group_setup(p, o);
        if (rc) {
            pipe_close(p);
            return rc;
        }
    }
    if (o->regexp) {
        int rc = compile_seps(p, o);
        if (rc) {
            pipe_close(p);
            return rc;
        }
    }
    if (o->pipepart) {
        int rc = part_open(p, o);
        if (rc) {
            pipe_close(p);
            return rc;
        }
    }
    if (o->max_args)
        p->nrec = o->max_args * (o->max_lines ? o->max_lines : 1);
    else
        p->lines = o->max_lines;
    if (o->header) {
        int rc = pipe_header_spec(p, o->header_re);
        if (rc) {
            pipe_close(p);
            return rc;
        }
    }
    *out = p;
    return 0;
}

bool pipe_can_wait(struct pipe_in *p)
{
    struct stat st;
    if (p->part) /* a file: reading it never waits */
        return false;
    p->may_wait = fstat(p->fd, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
    if (p->may_wait && S_ISFIFO(st.st_mode) && fcntl(p->fd, F_SETPIPE_SZ, PIPE_SIZE) < 0) {
        /* Not an error: the pipe keeps its size, and is read in more, smaller pieces. */
    }
    return p->may_wait;
}

void pipe_close(struct pipe_in *p)
{
    if (!p)
        return;
    if (p->map)
        munmap((void *)p->map, p->map_size);
    pblock_free(p->cur);
    for (struct pblock *b = p->free_list, *n; b; b = n) {
        n = b->next;
        pblock_free(b);
    }
    if (p->header_re_set)
        regfree(&p->header_re);
#ifdef CONCUR_HAVE_PCRE2
    pcre2_code_free(p->re_sep);
    pcre2_code_free(p->re_start);
    pcre2_code_free(p->re_end);
    pcre2_code_free(p->re_col);
    pcre2_match_data_free(p->md);
#endif
    free(p->header);
    free(p->sep);
    free(p);
}
