/*
 * output.c - writing the jobs' output to concur's stdout and stderr.
 *
 * Three modes, as in GNU parallel:
 *   grouped (default)  a job's whole stdout, then its whole stderr, written when it ends,
 *                      so two jobs' output never interleave;
 *   --line-buffer      complete lines as they arrive (a partial last line waits in the
 *                      job's buffer until the newline or the end of the job);
 *   -u                 bytes as they arrive.
 * With --tag / --tagstring every line starts with the tag and a TAB.
 *
 * Ordering (-k) is decided by the caller (main.c), which calls these functions only when a
 * job's output may be written. Every write goes through a struct writer, so a failed write
 * (stdout closed: EPIPE, since SIGPIPE is blocked; a full disk: ENOSPC) is remembered and
 * reported by output_flush(); the caller then stops the run.
 *
 * While a live progress line is on the terminal, it is taken away before job output is
 * written and drawn again after, so the two do not mix.
 */
#include "cli.h"

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void output_init(struct output *o, struct progress *prog)
{
    wr_init(&o->out, 1, "standard output");
    wr_init(&o->err, 2, "standard error");
    o->prog = prog;
}

static struct writer *stream_writer(struct output *o, int stream)
{
    return stream == CONCUR_STDERR ? &o->err : &o->out;
}

/* A mapped output is written (or copied into the writer) a step at a time, and the pages
 * behind are dropped: they are clean pages of the spill file, read back if ever touched. */
enum { DROP_STEP = 1 << 20 };

/* Drops the pages wholly inside [from, to) of a mapping (from is page-aligned: the start of
 * the mapping, or a point reached before). Best effort: a failure only costs memory. */
static void drop_pages(const char *from, const char *to)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)from + page - 1) & ~(page - 1), b = (uintptr_t)to & ~(page - 1);
    if (b > a)
        (void)madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Writes data, each line (and a last partial one) prefixed with "tag\t"; drops the pages
 * of a mapped buffer as it goes. --ctag (o->ctag): the colour the tag starts is reset at
 * the end of each line. */
static void put_tagged(const struct output *o, struct writer *w, const char *data, size_t n,
                       const char *tag, size_t tag_len, bool mapped)
{
    const char *base = data, *dropped = data;
    while (n) {
        size_t len;
        bool nl_end = false;
        if (tag) {
            const char *nl = memchr(data, '\n', n);
            len = nl ? (size_t)(nl - data) + 1 : n;
            wr_add(w, tag, tag_len);
            wr_add(w, "\t", 1);
            nl_end = nl != NULL;
        } else {
            len = mapped && n > DROP_STEP ? DROP_STEP : n;
        }
        if (tag && o->ctag) { /* the line, the colour's end, its newline */
            wr_add(w, data, len - nl_end);
            wr_add(w, "\033[m", 3);
            if (nl_end)
                wr_add(w, "\n", 1);
        } else {
            wr_add(w, data, len); /* written, or copied into the writer: done with */
        }
        data += len;
        n -= len;
        if (mapped && (size_t)(data - dropped) >= DROP_STEP) {
            drop_pages(base, data);
            dropped = data;
        }
    }
}

void output_group(struct output *o, const struct jobdone *d, const char *tag, size_t tag_len)
{
    if (!d->out_len && !d->err_len)
        return;
    if (o->prog)
        progress_clear(o->prog);
    /* the stderr of the jobs before first: with both streams on one file (2>&1) each
     * job's output then comes whole, in the order the jobs are printed */
    if (d->out_len)
        wr_flush(&o->err);
    put_tagged(o, &o->out, d->out, d->out_len, tag, tag_len, d->out_mapped);
    /* stdout first, whole, before any of the job's stderr */
    if (d->err_len) {
        wr_flush(&o->out);
        put_tagged(o, &o->err, d->err, d->err_len, tag, tag_len, d->err_mapped);
    }
}

void output_lines(struct output *o, int stream, struct buf *pending, const char *tag,
                  size_t tag_len, bool final)
{
    if (!pending->len)
        return;
    const char *nl =
        final ? pending->p + pending->len - 1 : memrchr(pending->p, '\n', pending->len);
    if (!nl)
        return;
    size_t n = (size_t)(nl - pending->p) + 1;
    if (o->prog)
        progress_clear(o->prog);
    struct writer *w = stream_writer(o, stream);
    put_tagged(o, w, pending->p, n, tag, tag_len, false);
    /* Lines from different streams and jobs must come out whole: flush now. */
    wr_flush(w);
    memmove(pending->p, pending->p + n, pending->len - n);
    pending->len -= n;
}

void output_raw(struct output *o, int stream, const void *data, size_t n)
{
    if (o->prog)
        progress_clear(o->prog);
    struct writer *w = stream_writer(o, stream);
    wr_add(w, data, n);
    wr_flush(w);
}

int output_flush(struct output *o)
{
    int a = wr_flush(&o->out);
    int b = wr_flush(&o->err);
    if (o->prog)
        progress_redraw(o->prog);
    return a ? a : b;
}

int output_error(const struct output *o, const char **name, int *fd)
{
    const struct writer *w = o->out.err ? &o->out : o->err.err ? &o->err : NULL;
    if (!w)
        return 0;
    *name = w->name;
    *fd = w->fd;
    return -w->err;
}

void output_free(struct output *o)
{
    wr_free(&o->out);
    wr_free(&o->err);
}
