/*
 * util.c - small tools the rest of the CLI is written with: growable buffers, buffered
 * writers that notice every failed write, messages, clocks, duration parsing, GNU
 * parallel's shell quoting and JSON string escaping.
 *
 * Buffers carry a sticky failure flag instead of returning an error from every append, so
 * that building a command line stays readable; whoever finishes a piece of work checks the
 * flag once. Writers do the same with the errno of the first failed write: once a write to
 * stdout failed (a closed pipe, a full disk), nothing more is written there, and the caller
 * sees the error at the next flush and stops the run.
 */
#include "cli.h"

#include <errno.h>
#include <ftw.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ buffers */

bool buf_reserve(struct buf *b, size_t extra)
{
    if (b->failed)
        return false;
    /* Keep room for a terminating NUL after the content. */
    if (b->len + extra < b->cap)
        return true;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return false;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap <= b->len + extra)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void buf_add(struct buf *b, const void *data, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void buf_addc(struct buf *b, char c)
{
    if (!buf_reserve(b, 1))
        return;
    b->p[b->len++] = c;
    b->p[b->len] = '\0';
}

void buf_adds(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

void buf_addnul(struct buf *b)
{
    if (!buf_reserve(b, 1))
        return;
    b->p[b->len++] = '\0';
    b->p[b->len] = '\0';
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    if (b->failed)
        return;
    size_t room = b->cap > b->len ? b->cap - b->len : 0;
    va_start(ap, fmt);
    int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n >= room) {
        if (!buf_reserve(b, (size_t)n + 1))
            return;
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void buf_free(struct buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------------------ writers */

int write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int append_record(int fd, const void *data, size_t n)
{
    off_t start = lseek(fd, 0, SEEK_END);
    if (start < 0)
        return -errno;
    ssize_t w;
    do
        w = write(fd, data, n);
    while (w < 0 && errno == EINTR);
    if (w == (ssize_t)n)
        return 0;
    int err = w < 0 ? errno : ENOSPC; /* a short write to a file: the disk is full */
    if (w > 0 && (ftruncate(fd, start) < 0 || lseek(fd, start, SEEK_SET) < 0))
        return -errno;
    return -err;
}

enum { WR_CAP = 64 * 1024 };

void wr_init(struct writer *w, int fd, const char *name)
{
    memset(w, 0, sizeof(*w));
    w->fd = fd;
    w->name = name;
}

static void wr_direct(struct writer *w, const void *data, size_t n)
{
    int rc = write_all(w->fd, data, n);
    if (rc)
        w->err = -rc;
}

int wr_flush(struct writer *w)
{
    if (w->len && !w->err)
        wr_direct(w, w->buf, w->len);
    w->len = 0;
    return w->err ? -w->err : 0;
}

void wr_add(struct writer *w, const void *data, size_t n)
{
    if (w->err || !n)
        return;
    if (w->closed) {
        w->err = EBADF;
        return;
    }
    if (!w->buf) {
        w->buf = malloc(WR_CAP);
        if (!w->buf) { /* unbuffered, then */
            wr_direct(w, data, n);
            return;
        }
        w->cap = WR_CAP;
    }
    if (w->len + n > w->cap) {
        wr_flush(w);
        if (n >= w->cap / 2) { /* large: no copy */
            if (!w->err)
                wr_direct(w, data, n);
            return;
        }
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
}

void wr_adds(struct writer *w, const char *s)
{
    wr_add(w, s, strlen(s));
}

void wr_free(struct writer *w)
{
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}

bool only_blanks(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!p[i] || !strchr(" \t\n\r\f\v", p[i]))
            return false;
    return true;
}

/* ------------------------------------------------------------------ messages */

bool fd_path(int fd, char *out, size_t n)
{
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, out, n - 1);
    if (len <= 0)
        return false;
    out[len] = '\0';
    return true;
}

/* The name messages start with: "parallel" when run under that name (a drop-in link),
 * whose warnings then say "Warning:" as GNU parallel's do. */
static const char *prog_name = "concur";

void cli_set_name(const char *argv0)
{
    const char *base = argv0 ? strrchr(argv0, '/') : NULL;
    base = base ? base + 1 : argv0;
    if (base && !strcmp(base, "parallel"))
        prog_name = "parallel";
}

const char *cli_name(void)
{
    return prog_name;
}

bool cli_gnu(void)
{
    return !strcmp(prog_name, "parallel");
}

static void vmessage(const char *prefix, const char *fmt, va_list ap)
{
    char line[4096];
    if (!strcmp(prefix, "warning: ") && !strcmp(prog_name, "parallel"))
        prefix = "Warning: ";
    int n = snprintf(line, sizeof(line), "%s: %s", prog_name, prefix);
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* Best effort: if stderr itself is gone there is nobody left to tell. */
    (void)write_all(2, line, len);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("", fmt, ap);
    va_end(ap);
}

void cli_gnu_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("Error: ", fmt, ap);
    va_end(ap);
}

void cli_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("warning: ", fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ time */

double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool parse_duration(const char *s, double *out)
{
    char *end;
    if (!*s)
        return false;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0)
        return false;
    double unit = 1;
    if (*end) {
        switch (*end) {
        case 's':
            unit = 1;
            break;
        case 'm':
            unit = 60;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        default:
            return false;
        }
        if (end[1])
            return false;
    }
    *out = v * unit;
    return true;
}

/* ------------------------------------------------------------------ quoting */

static bool plain_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '+' || c == '/';
}

/* GNU parallel's shell_quote_scalar_default: words of [-_.+a-zA-Z0-9/] stay as they are;
 * anything else is put in single quotes, a quote becoming '"'"', and the empty '' pairs
 * this leaves at either end are removed. The empty word is ''. */
void shell_quote(struct buf *b, const char *s, size_t n)
{
    bool plain = true;
    for (size_t i = 0; i < n && plain; i++)
        plain = plain_char((unsigned char)s[i]);
    if (n == 0) {
        buf_add(b, "''", 2);
        return;
    }
    if (plain) {
        buf_add(b, s, n);
        return;
    }
    size_t start = b->len;
    buf_addc(b, '\'');
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\'')
            buf_add(b, "'\"'\"'", 5);
        else
            buf_addc(b, s[i]);
    }
    buf_addc(b, '\'');
    if (!buf_ok(b))
        return;
    if (b->len - start >= 2 && b->p[start] == '\'' && b->p[start + 1] == '\'') {
        memmove(b->p + start, b->p + start + 2, b->len - start - 2);
        b->len -= 2;
    }
    if (b->len - start >= 2 && b->p[b->len - 1] == '\'' && b->p[b->len - 2] == '\'')
        b->len -= 2;
    b->p[b->len] = '\0';
}

/* ------------------------------------------------------------------ JSON */

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is invalid:
 * overlong forms, surrogates and code points past U+10FFFF are invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    unsigned cp = c & (0xFF >> (len + 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

void json_string(struct buf *b, const void *data, size_t n)
{
    const unsigned char *s = data;
    size_t i = 0;
    while (i < n) {
        /* Copy the longest run that needs no escaping in one go. */
        size_t run = i;
        while (run < n && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' && s[run] != '\\')
            run++;
        if (run > i) {
            buf_add(b, s + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = s[i];
        if (c >= 0x80) {
            size_t len = utf8_len(s + i, n - i);
            if (len) {
                buf_add(b, s + i, len);
                i += len;
            } else {
                buf_printf(b, "\\u%04x", c); /* an invalid byte, as U+0080..U+00FF */
                i++;
            }
            continue;
        }
        switch (c) {
        case '"':
            buf_add(b, "\\\"", 2);
            break;
        case '\\':
            buf_add(b, "\\\\", 2);
            break;
        default: /* every control character as \u00XX, newlines too, as GNU parallel */
            buf_printf(b, "\\u%04x", c);
            break;
        }
        i++;
    }
}

/* ------------------------------------------------------------------ helper processes */

int spawn_fds(pid_t *pid, char *const argv[], const int fds[][2], size_t nfds)
{
    extern char **environ;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGHUP);
    sigaddset(&dfl, SIGPIPE);
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc)
        return rc;
    if ((rc = posix_spawnattr_init(&at)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    for (size_t i = 0; i < nfds && !rc; i++)
        rc = fds[i][0] < 0 ? posix_spawn_file_actions_addopen(&fa, fds[i][1], "/dev/null",
                                                              O_RDONLY, 0)
                           : posix_spawn_file_actions_adddup2(&fa, fds[i][0], fds[i][1]);
    if (!rc && !(rc = posix_spawnattr_setsigmask(&at, &none)) &&
        !(rc = posix_spawnattr_setsigdefault(&at, &dfl)) &&
        !(rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)))
        rc = posix_spawnp(pid, argv[0], &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc)
        *pid = 0;
    return rc;
}

bool in_path(const char *name)
{
    const char *path = getenv("PATH");
    while (path && *path) {
        size_t len = strcspn(path, ":");
        char full[4096];
        int n = snprintf(full, sizeof(full), "%.*s/%s", (int)len, len ? path : ".", name);
        if (n > 0 && (size_t)n < sizeof(full) && access(full, X_OK) == 0)
            return true;
        path += len + (path[len] == ':');
    }
    return false;
}

int mkdir_p(char *path)
{
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        int rc = mkdir(path, 0777) < 0 && errno != EEXIST ? -errno : 0;
        *p = c;
        if (rc)
            return rc;
        if (!c)
            return 0;
    }
}

/* ------------------------------------------------------------------ --wd */

void wd_dir(struct buf *b, const char *wd, size_t seq)
{
    if (strcmp(wd, "...")) {
        buf_adds(b, wd);
        return;
    }
    char host[256];
    const char *home = getenv("HOME");
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    buf_printf(b, "%s/.parallel/tmp/%s-%ld-%zu", home && *home ? home : "/tmp", host,
               (long)getpid(), seq);
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = type == FTW_DP ? rmdir(path) : unlink(path);
    return rc < 0 && errno != ENOENT ? -1 : 0;
}

int remove_tree(const char *path)
{
    if (nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        return -errno;
    return 0;
}

/* ------------------------------------------------------------------ temporary files */

int temp_file(struct buf *path, const char *dir, const char *prefix, size_t nrand,
              const char *suffix)
{
    static const char chars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
    static uint64_t x;
    if (!x && getrandom(&x, sizeof(x), GRND_NONBLOCK) != (ssize_t)sizeof(x))
        x = (uint64_t)getpid() * 0x9E3779B97F4A7C15u ^ (uint64_t)(mono_now() * 1e9);
    for (int tries = 0; tries < 100; tries++) {
        buf_reset(path);
        buf_printf(path, "%s/%s", dir, prefix);
        for (size_t i = 0; i < nrand; i++) {
            x ^= x << 13; /* xorshift64 */
            x ^= x >> 7;
            x ^= x << 17;
            buf_addc(path, chars[x % (sizeof(chars) - 1)]);
        }
        buf_adds(path, suffix);
        buf_addnul(path);
        if (!buf_ok(path))
            return -ENOMEM;
        int fd = open(path->p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}
