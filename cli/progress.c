/*
 * progress.c - --bar, --eta and --progress: one status line on stderr.
 *
 * On a terminal the line is live: redrawn in place ("\r", then the line, then "erase to
 * the end of the line") at most ten times a second, taken away while job output is
 * written (progress_clear / progress_redraw) and left as a final line at the end, once,
 * with the cursor below it. On anything else (a file, a pipe) a plain line is printed at
 * most once a second, and a last one at the end unless the line before says the same, so
 * logs stay readable.
 *
 * The line is updated when jobs start and end; it is driven by the runner's callbacks,
 * so it needs no thread and no timer. The ETA is the time left at the average rate so
 * far: elapsed * (total - done) / done. Without a known total (the input could not be
 * counted) the bar shows counts only.
 *
 *   [##########..........]  50% 500/1000  ETA 12s  running 4  failed 2
 *
 * --eta alone (no --bar) writes what GNU parallel writes: a header naming the computer
 * ("local"), its CPUs and the jobs run at once, then, each time, "\r" and
 *
 *   ETA: 12s Left: 500 AVG: 0.02s  local:4/500/100%/0.0s
 *
 * (jobs running/completed/% of the jobs started/seconds per completed job), with GNU
 * parallel's smoothed estimate, and a newline at the end.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct progress {
    bool bar, eta, counts;
    bool gnu_eta; /* --eta without --bar: GNU parallel's format */
    size_t started;
    double first_done, smoothed; /* GNU parallel's ETA: from the first completed job */
    long last_eta;
    bool tty, shown;
    bool finished; /* the final line is out: nothing more is drawn */
    size_t total, done, failed, running;
    size_t drawn_done, drawn_failed, drawn_running; /* the counts of the last line drawn */
    double t0, last;
    struct buf line;
};

int progress_create(struct progress **out, bool bar, bool eta, bool counts, size_t total, int jobs)
{
    struct progress *p = calloc(1, sizeof(*p));
    if (!p)
        return CONCUR_ENOMEM;
    p->bar = bar;
    p->eta = eta;
    p->counts = counts;
    p->gnu_eta = eta && !bar;
    p->tty = isatty(2);
    p->total = total;
    p->t0 = mono_now();
    p->last = -1;
    *out = p;
    if (p->gnu_eta) { /* GNU parallel's header (its one computer is this one) */
        buf_printf(&p->line,
                   "\nComputers / CPU cores / Max jobs to run\n1:local / %d / %d\n\n"
                   "Computer:jobs running/jobs completed/%%of started jobs/Average seconds to "
                   "complete\n",
                   concur_cpu_count(), jobs);
        if (buf_ok(&p->line))
            (void)write_all(2, p->line.p, p->line.len); /* best effort, as all progress */
    }
    return 0;
}

/* GNU parallel's --eta status (its compute_eta and progress): the time per job is the
 * time since the first job completed over the jobs completed, smoothed as more complete;
 * an estimate less than 10% above the last one keeps the last one. */
static void compose_gnu_eta(struct progress *p, struct buf *b)
{
    double now = mono_now();
    size_t total = p->total > p->done && p->total != SIZE_MAX ? p->total : p->done;
    size_t left = total - p->done;
    double avg = 0;
    long eta = 0;
    if (p->done) {
        double pct = total ? (double)p->done / (double)total : 1;
        avg = (now - p->first_done) / (double)p->done;
        if (p->smoothed == 0)
            p->smoothed = avg;
        p->smoothed = (1 - pct) * p->smoothed + pct * avg;
        eta = (long)((double)left * p->smoothed);
        if ((double)eta * 0.9 < (double)p->last_eta && p->last_eta < eta)
            eta = p->last_eta;
        else
            p->last_eta = eta;
    }
    buf_printf(b, "ETA: %lds Left: %zu AVG: %.2fs  ", eta, left, avg);
    if (p->started)
        buf_printf(b, "local:%zu/%zu/%d%%/%.1fs ", p->running, p->done,
                   (int)((double)(p->running + p->done) * 100 / (double)p->started),
                   p->done ? (now - p->t0) / (double)p->done : 0.0);
}

static void fmt_secs(struct buf *b, double s)
{
    long t = (long)(s + 0.5);
    if (t < 60)
        buf_printf(b, "%lds", t);
    else if (t < 3600)
        buf_printf(b, "%ldm%02lds", t / 60, t % 60);
    else
        buf_printf(b, "%ldh%02ldm", t / 3600, (t / 60) % 60);
}

static void compose(struct progress *p, struct buf *b)
{
    size_t base = b->len; /* what precedes the status (a prefix, "\r") */
    double elapsed = mono_now() - p->t0;
    bool known = p->total > 0 && p->total != SIZE_MAX;
    if (p->bar) {
        enum { W = 20 };
        if (known) {
            double f = p->total ? (double)p->done / (double)p->total : 1;
            if (f > 1)
                f = 1;
            size_t fill = (size_t)(f * W);
            buf_addc(b, '[');
            for (size_t i = 0; i < W; i++)
                buf_addc(b, i < fill ? '#' : '.');
            buf_printf(b, "] %3d%% %zu/%zu", (int)(f * 100), p->done, p->total);
            if (!p->eta && p->done > 0 && p->done < p->total) {
                buf_adds(b, "  ETA ");
                fmt_secs(b, elapsed * (double)(p->total - p->done) / (double)p->done);
            }
        } else {
            buf_printf(b, "%zu done", p->done);
        }
    }
    if (p->eta) {
        if (b->len > base)
            buf_adds(b, "  ");
        if (known && p->done > 0) {
            size_t left = p->total > p->done ? p->total - p->done : 0;
            buf_adds(b, "ETA ");
            fmt_secs(b, elapsed * (double)left / (double)p->done);
            buf_printf(b, "  left %zu  avg ", left);
            fmt_secs(b, elapsed / (double)p->done);
        } else if (known) {
            buf_printf(b, "ETA ?  left %zu", p->total);
        } else {
            buf_printf(b, "elapsed ");
            fmt_secs(b, elapsed);
        }
    }
    if (p->counts || (!p->bar && !p->eta)) {
        if (b->len > base)
            buf_adds(b, "  ");
        buf_printf(b, "running %zu  done %zu", p->running, p->done);
    }
    if (p->failed)
        buf_printf(b, "  failed %zu", p->failed);
}

/* Draws the line now if `force` or if enough time passed since the last one. */
static void draw(struct progress *p, bool force)
{
    double now = mono_now();
    if (!force && p->last >= 0 && now - p->last < (p->tty ? 0.1 : 1.0))
        return;
    p->last = now;
    p->drawn_done = p->done;
    p->drawn_failed = p->failed;
    p->drawn_running = p->running;
    buf_reset(&p->line);
    if (p->gnu_eta) { /* "\r" and the status, on a terminal or not, as GNU parallel */
        buf_addc(&p->line, '\r');
        compose_gnu_eta(p, &p->line);
        if (p->tty)
            buf_adds(&p->line, "\033[K");
    } else {
        if (p->tty)
            buf_addc(&p->line, '\r');
        else
            buf_printf(&p->line, "%s: ", cli_name());
        compose(p, &p->line);
        buf_adds(&p->line, p->tty ? "\033[K" : "\n");
    }
    if (buf_ok(&p->line) && write_all(2, p->line.p, p->line.len) == 0 && (p->tty || p->gnu_eta))
        p->shown = true;
}

void progress_started(struct progress *p)
{
    p->running++;
    p->started++;
    draw(p, false);
}

void progress_done(struct progress *p, bool failed)
{
    if (p->running)
        p->running--;
    if (!p->done++)
        p->first_done = mono_now();
    if (failed)
        p->failed++;
    draw(p, false);
}

void progress_skipped(struct progress *p)
{
    if (p->total && p->total != SIZE_MAX)
        p->total--;
}

void progress_clear(struct progress *p)
{
    if (p->shown && p->tty) { /* elsewhere (GNU's --eta) the lines stay as written */
        (void)write_all(2, "\r\033[K", 4);
        p->shown = false;
    }
}

void progress_redraw(struct progress *p)
{
    if (p->tty && !p->shown && !p->finished)
        draw(p, true);
}

/* The final line, once: on a terminal drawn (again, if output took it away) and ended with
 * a newline, so the cursor is left below it; elsewhere printed unless the last line printed
 * says the same already. Nothing is drawn after it. */
void progress_finish(struct progress *p)
{
    if (p->finished)
        return;
    bool same = p->last >= 0 && p->drawn_done == p->done && p->drawn_failed == p->failed &&
                p->drawn_running == p->running;
    if (p->tty ? !p->shown || !same : !same)
        draw(p, true);
    if ((p->tty || p->gnu_eta) && p->shown)
        (void)write_all(2, "\n", 1);
    p->shown = false;
    p->finished = true;
}

void progress_free(struct progress *p)
{
    if (!p)
        return;
    buf_free(&p->line);
    free(p);
}
