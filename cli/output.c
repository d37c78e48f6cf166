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

/* Writes data, each line (and a last partial one) prefixed with "tag\t". */
static void put_tagged(struct writer *w, const char *data, size_t n, const char *tag,
                       size_t tag_len)
{
    if (!tag) {
        wr_add(w, data, n);
        return;
    }
    while (n) {
        const char *nl = memchr(data, '\n', n);
        size_t len = nl ? (size_t)(nl - data) + 1 : n;
        wr_add(w, tag, tag_len);
        wr_add(w, "\t", 1);
        wr_add(w, data, len);
        data += len;
        n -= len;
    }
}

void output_group(struct output *o, const void *out, size_t out_len, const void *err,
                  size_t err_len, const char *tag, size_t tag_len)
{
    if (!out_len && !err_len)
        return;
    if (o->prog)
        progress_clear(o->prog);
    put_tagged(&o->out, out, out_len, tag, tag_len);
    /* stdout first, whole, before any of the job's stderr */
    if (err_len) {
        wr_flush(&o->out);
        put_tagged(&o->err, err, err_len, tag, tag_len);
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
    put_tagged(w, pending->p, n, tag, tag_len);
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
