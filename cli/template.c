/*
 * template.c - from the command words and a job's arguments to what is executed.
 *
 * GNU parallel's rule, which concur follows: the command words are joined with spaces into
 * ONE shell command line (so `concur 'echo {} | wc -c'` has a pipe), and each argument is
 * put in the line quoted as a single shell word (so an argument with spaces, quotes or `$`
 * stays literal). -q quotes the command words too. Without any placeholder, " {}" is
 * appended. Without command words, the arguments themselves are the command line.
 *
 * Running a shell for every job would cost a fork and an exec of the shell each time, so the
 * template is compiled once into two forms:
 *   - the line: literal pieces and placeholders, expanded with shell quoting. This is what
 *     the joblog and --dry-run show, and what $SHELL -c runs when a shell is needed;
 *   - the words: when the line is "simple" (plain words and '...' / "..." strings, no shell
 *     syntax outside quotes, no placeholder inside quotes, no leading VAR=, not a shell
 *     builtin), the argv the shell would build from it, with the quotes removed. Each job
 *     then execs the program directly with the placeholders' values as they are, unless
 *     the program is not in $PATH: the shell then runs the line, and says so (as it does
 *     in GNU parallel, which always runs a shell). --wd and PARALLEL_ENV need the shell.
 * Both forms mean the same thing: a placeholder's quoted value is one shell word, and the
 * words form splits exactly where the shell would (a placeholder with several values, with
 * -n or -m, gives several words).
 *
 * Placeholders: {} {.} {/} {//} {/.} (the argument, without extension, basename, dirname,
 * basename without extension), {n} {n.} {n/} {n//} {n/.} (the n-th argument of the job),
 * {#} (the job's sequence number) and {%} (its slot). -X repeats the whole word around a
 * {} once per argument (context replace).
 */
#include "cli.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum seg_kind { S_LIT, S_ARG, S_SEQ, S_SLOT, S_TOTAL, S_SEQ0, S_SLOT0, S_PERL };
/* M_NOEXT..M_NOEXT3: {.} {..} {...}; M_BASENOEXT..3: {/.} {/..} {/...}; M_EXT..3: {+.}
 * {+..} {+...}; M_PDIR: {+/}. The order matters (apply_mod). */
enum mod {
    M_NONE,
    M_BASE,
    M_DIR,
    M_PDIR,
    M_NOEXT,
    M_NOEXT2,
    M_NOEXT3,
    M_BASENOEXT,
    M_BASENOEXT2,
    M_BASENOEXT3,
    M_EXT,
    M_EXT2,
    M_EXT3,
};

/* --plus's bash-like trims of {}: {#re} {##re} remove the shortest / longest prefix that
 * the regular expression matches, {%re} {%%re} the shortest / longest suffix. */
enum trim { T_NONE, T_PREFIX, T_PREFIX_LONG, T_SUFFIX, T_SUFFIX_LONG };

/* --plus's {uniq} and {choose_k}: {} (or {n}), and the job is skipped unless its arguments
 * are all different / in strictly increasing order. Flags of tpl->checks. */
enum check { C_UNIQ = 1, C_CHOOSE = 2 };

struct seg {
    enum seg_kind kind;
    enum mod mod;
    unsigned pos;    /* S_ARG: 0 for {} (every argument), n for {n} and {-n} */
    bool from_end;   /* {-n}: the n-th argument from the last */
    size_t off, len; /* S_LIT: bytes in tpl->text */
    enum trim trim;  /* S_ARG with --plus */
    regex_t *re;     /* the trim's expression, anchored at both ends (in tpl->res) */
    int perl;        /* S_PERL: the expression's id (perl.c); pos and from_end as S_ARG */
};

/* The compiled expressions of a template's trims, each once (parse_ph runs more than once
 * over a string, and not every parse keeps its segment). */
struct trim_re {
    char *src;
    regex_t re;
    struct trim_re *next;
};

/* A run of segments: one argv word (words form), or one token or gap (line form). */
struct piece {
    size_t first, nsegs;
    bool ctx; /* -X: expanded once per argument */
    bool raw; /* the line's first word: its placeholders' values go in unquoted */
};

struct tpl {
    bool raw;    /* no command words: the arguments are the command line */
    bool direct; /* the words form is valid: exec without a shell */
    bool plain;  /* a --tagstring: values unquoted */
    struct buf text;
    struct buf segs;  /* struct seg[] */
    struct buf line;  /* struct piece[] */
    struct buf words; /* struct piece[] */
    size_t piece_seg; /* first segment of the piece being built */
    const char *rep;  /* -I STR: the string that stands for {} (NULL: none) */
    size_t rep_len;
    const char *const *rename; /* --dnr, --bnr, --er, --bner (cli_opts.rename) */
    const char *shell;         /* what runs the lines that need a shell */
    const char *penv;          /* PARALLEL_ENV: shell code run before each line (or NULL) */
    const char *wd;            /* --wd: the shell changes into it first (or NULL) */
    size_t penv_len;
    bool plus;                 /* --plus: its replacement strings are placeholders */
    const struct field *names; /* --header: the columns' names ({name} is {col}) */
    size_t nnames;
    struct trim_re *res; /* --plus trims' expressions (a cache: filled while parsing) */
    size_t total;   /* {##} {0#}: the number of jobs (tpl_set_total) */
    bool perl;       /* a {= perl expression =} is in it */
    bool perl_uq;    /* one that may call uq(): its value is shell text (no direct exec) */
    bool perl_total; /* one that may call total_jobs() */
    unsigned checks; /* enum check: {uniq}, {choose_k} */
    unsigned slots; /* {0%}: the number of job slots */
    /* While the command words are compiled as one line: where the spaces that join them
     * are (a placeholder does not span two words, as in GNU parallel). */
    const char *join_base;
    const size_t *joins;
    size_t njoins;
};

/* Whether p, in the line being compiled, is a space that joins two command words. */
static bool joining_space(const struct tpl *t, const char *p)
{
    for (size_t i = 0; t->join_base && i < t->njoins; i++)
        if (p == t->join_base + t->joins[i])
            return true;
    return false;
}

/* --dnr, --bnr, --er, --bner: a string that stands for {//}, {/}, {.} or {/.}. Its length
 * at s (n bytes available), with *out set; 0 if none is there. */
static size_t parse_rename(const struct tpl *t, const char *s, size_t n, struct seg *out)
{
    static const enum mod mods[4] = {M_DIR, M_BASE, M_NOEXT, M_BASENOEXT};
    for (int k = 0; k < 4; k++) {
        const char *r = t->rename ? t->rename[k] : NULL;
        size_t len = r ? strlen(r) : 0;
        if (len && n >= len && !memcmp(s, r, len)) {
            memset(out, 0, sizeof(*out));
            out->kind = S_ARG;
            out->mod = mods[k];
            return len;
        }
    }
    return 0;
}

static void set_replace(struct tpl *t, const char *rep)
{
    t->rep = rep && *rep ? rep : NULL;
    t->rep_len = t->rep ? strlen(rep) : 0;
}

#define SEGS(t) ((struct seg *)(t)->segs.p)
#define NSEGS(t) ((t)->segs.len / sizeof(struct seg))
#define PIECES(b) ((struct piece *)(b).p)
#define NPIECES(b) ((b).len / sizeof(struct piece))

/* ------------------------------------------------------------------ placeholders */

/* The modifier of m bytes at p ("", "/", "."...): an enum mod, or -1. Those after {/.}
 * need --plus. */
static int match_mod(const struct tpl *t, const char *p, size_t m)
{
    static const char *const mods[] = {"",   "/",   "//",   "+/", ".",   "..",  "...",
                                       "/.", "/..", "/...", "+.", "+..", "+..."};
    for (int k = 0; k < (int)(sizeof(mods) / sizeof(mods[0])); k++)
        if (strlen(mods[k]) == m && !memcmp(p, mods[k], m) &&
            (t->plus || (k != M_PDIR && k != M_NOEXT2 && k != M_NOEXT3 && k <= M_BASENOEXT)))
            return k;
    return -1;
}

/* --header: {name} and {name.}, {name/}... for a column's name. Its length, or 0. */
static size_t parse_name(const struct tpl *t, const char *s, size_t n, struct seg *out)
{
    for (size_t i = 0; i < t->nnames && n > 2 && s[0] == '{'; i++) {
        const struct field *f = &t->names[i];
        if (!f->len || f->len + 2 > n || memcmp(s + 1, f->p, f->len))
            continue;
        const char *close = memchr(s + 1 + f->len, '}', n - 1 - f->len);
        int mod = close ? match_mod(t, s + 1 + f->len, (size_t)(close - s) - 1 - f->len) : -1;
        if (mod < 0)
            continue;
        memset(out, 0, sizeof(*out));
        out->kind = S_ARG;
        out->mod = (enum mod)mod;
        out->pos = f->col;
        return (size_t)(close - s) + 1;
    }
    return 0;
}

/* --plus: {#re} {##re} {%re} {%%re} at s (n bytes available), as GNU parallel's (bash's
 * ${a#pat}... with a regular expression: POSIX extended here, Perl's there; they agree on
 * the common ones). Its length, or 0 when there is none (then {#}, {##}, {%} are looked
 * for), or when the expression does not compile (it is then plain text). */
static size_t parse_trim(struct tpl *t, const char *s, size_t n, struct seg *out)
{
    if (!t->plus || n < 4 || s[0] != '{' || (s[1] != '#' && s[1] != '%'))
        return 0;
    char c = s[1];
    bool twice = s[2] == c;
    size_t start = twice ? 3 : 2;
    if (start >= n || s[start] == '}' || (c == '#' && s[start] == '#'))
        return 0;
    const char *close = memchr(s + start, '}', n - start);
    if (!close)
        return 0;
    size_t plen = (size_t)(close - s) - start;
    char *src = malloc(plen + 5);
    if (!src)
        return 0;
    memcpy(src, "^(", 2);
    memcpy(src + 2, s + start, plen);
    memcpy(src + 2 + plen, ")$", 3);
    struct trim_re *r = t->res;
    while (r && strcmp(r->src, src))
        r = r->next;
    if (r) {
        free(src);
    } else {
        r = malloc(sizeof(*r));
        if (!r || regcomp(&r->re, src, REG_EXTENDED) != 0) {
            free(r);
            free(src);
            return 0;
        }
        r->src = src;
        r->next = t->res;
        t->res = r;
    }
    memset(out, 0, sizeof(*out));
    out->kind = S_ARG;
    out->trim = c == '#' ? (twice ? T_PREFIX_LONG : T_PREFIX) : (twice ? T_SUFFIX_LONG : T_SUFFIX);
    out->re = &r->re;
    return (size_t)(close - s) + 1;
}

/* Makes *out the S_PERL segment of the expression src[0, n) (compiled by perl.c) for
 * argument pos (0: each). false when it does not compile (perl_failed() is then set). */
static bool perl_seg(struct tpl *t, const char *src, size_t n, unsigned pos, bool from_end,
                     struct seg *out)
{
    int id = perl_expr(src, n);
    if (id < 0)
        return false;
    memset(out, 0, sizeof(*out));
    out->kind = S_PERL;
    out->perl = id;
    out->pos = pos;
    out->from_end = from_end;
    t->perl = true;
    t->perl_uq = t->perl_uq || memmem(src, n, "uq", 2);
    t->perl_total = t->perl_total || memmem(src, n, "total_jobs", 10);
    return true;
}

/* {= perl expression =} at s (n bytes available), or {=N perl =} for the N-th argument:
 * its length, or 0. As in GNU parallel, it ends at the first =} with no {= before it. A
 * bad expression is plain text here; perl_failed() then stops concur. */
static size_t parse_perl(struct tpl *t, const char *s, size_t n, struct seg *out)
{
    if (n < 4 || s[0] != '{' || s[1] != '=')
        return 0;
    const char *close = memmem(s + 2, n - 2, "=}", 2);
    const char *inner = close ? memmem(s + 2, (size_t)(close - s) - 2, "{=", 2) : NULL;
    if (!close || inner)
        return 0;
    bool from_end = s[2] == '-' && s + 3 < close && s[3] >= '0' && s[3] <= '9';
    const char *p = s + 2 + from_end;
    unsigned pos = 0;
    while (p < close && *p >= '0' && *p <= '9' && pos < 100000)
        pos = pos * 10 + (unsigned)(*p++ - '0');
    for (size_t i = 0; !pos && !from_end && i < t->nnames; i++) {
        /* --header: {=name perl =} is {=N perl =} for the column called name (as in GNU
         * parallel, a prefix: nothing needs to follow the name) */
        const struct field *f = &t->names[i];
        if (f->len && f->len <= (size_t)(close - p) && !memcmp(p, f->p, f->len)) {
            pos = f->col;
            p += f->len;
        }
    }
    if (from_end && !pos)
        return 0;
    return perl_seg(t, p, (size_t)(close - p), pos, from_end, out) ? (size_t)(close - s) + 2 : 0;
}

/* --plus's bash-like forms, as GNU parallel defines them: Perl code on $_, with the
 * pieces of the placeholder (quoted for a Perl string) in $concur_1 and $concur_2. */
static const struct {
    const char *prefix;
    int groups;
    const char *code;
} bash_forms[] = {
    {":-", 1, "$_ ||= $concur_1"},                  /* {:-str}: str when empty */
    {"//", 2, "s/$concur_1/$concur_2/g;"},         /* {//re/str} */
    {"/#", 2, "s/^$concur_1/$concur_2/g;"},        /* {/#re/str} */
    {"/%", 2, "s/$concur_1$/$concur_2/g;"},        /* {/%re/str} */
    {"/", 2, "s/$concur_1/$concur_2/;"},           /* {/re/str} */
    {"^^", 1, "s/($concur_1)/uc($1)/eg;"},         /* {^^str} */
    {"^", 1, "s/^($concur_1)/uc($1)/e;"},          /* {^str} */
    {",,", 1, "s/($concur_1)/lc($1)/eg;"},         /* {,,str} */
    {",", 1, "s/^($concur_1)/lc($1)/e;"},          /* {,str} */
    {":", -1, NULL},                                /* {:n} {:n:m}: see parse_bash */
};

/* Appends s[0, n) to b as the inside of a Perl "..." string (GNU parallel's pQ). */
static void perl_quoted(struct buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] && strchr("\\\"$@", s[i]))
            buf_addc(b, '\\');
        buf_addc(b, s[i]);
    }
}

/* Where the {:n} / {:n:m} numbers of body[0, n) end, or 0 when it is not one. */
static size_t substr_form(const char *body, size_t n, size_t *colon)
{
    size_t a = strspn(body, "0123456789");
    *colon = 0;
    if (a == 0 || a > n)
        return 0;
    if (a == n)
        return n;
    size_t b = body[a] == ':' ? strspn(body + a + 1, "0123456789") : 0;
    *colon = a;
    return b && a + 1 + b == n ? n : 0;
}

/* --plus: {:-str} {:n} {:n:m} {/re/str} {//re/str} {/#re/str} {/%re/str} {^str} {^^str}
 * {,str} {,,str} (and {N...} for the N-th argument) at s: bash's ${a...} with Perl's
 * regular expressions, run by perl as GNU parallel runs them. Its length, or 0. */
static size_t parse_bash(struct tpl *t, const char *s, size_t n, struct seg *out)
{
    if (!t->plus || n < 4 || s[0] != '{')
        return 0;
    const char *close = memchr(s, '}', n);
    size_t i = 1;
    unsigned pos = 0;
    while (close && s + i < close && i < 8 && s[i] >= '0' && s[i] <= '9')
        pos = pos * 10 + (unsigned)(s[i++] - '0');
    while (pos && s + i < close && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (!close || (i > 1 && !pos))
        return 0;
    const char *body = s + i;
    size_t blen = (size_t)(close - body), k = 0;
    while (k < sizeof(bash_forms) / sizeof(bash_forms[0]) &&
           strncmp(body, bash_forms[k].prefix, strlen(bash_forms[k].prefix)))
        k++;
    if (k == sizeof(bash_forms) / sizeof(bash_forms[0]))
        return 0;
    size_t plen = strlen(bash_forms[k].prefix), colon;
    const char *g1 = body + plen, *g2 = NULL;
    size_t n1 = blen - plen, n2 = 0;
    if (bash_forms[k].groups < 0) { /* {:n} {:n:m} */
        if (!substr_form(g1, n1, &colon))
            return 0;
    } else if (bash_forms[k].groups == 2) { /* re/str: re is up to the first / after one byte */
        const char *slash = n1 > 1 ? memchr(g1 + 1, '/', n1 - 1) : NULL;
        if (!slash || (k == 4 && (memchr(g1, '#', (size_t)(slash - g1)) ||
                                  memchr(g1, '%', (size_t)(slash - g1)))))
            return 0;
        g2 = slash + 1;
        n2 = (size_t)(close - g2);
        n1 = (size_t)(slash - g1);
    }
    if (n1 == 0)
        return 0;
    struct buf code = {0};
    if (bash_forms[k].groups < 0 && colon)
        buf_printf(&code, "$_ = substr($_,%.*s,%.*s);", (int)colon, g1, (int)(n1 - colon - 1),
                   g1 + colon + 1);
    else if (bash_forms[k].groups < 0)
        buf_printf(&code, "substr($_,0,%.*s) = \"\";", (int)n1, g1);
    else {
        buf_adds(&code, "$concur_1=\"");
        perl_quoted(&code, g1, n1);
        buf_adds(&code, "\";$concur_2=\"");
        perl_quoted(&code, g2 ? g2 : "", n2);
        buf_adds(&code, "\";");
        buf_adds(&code, bash_forms[k].code);
    }
    bool ok = buf_ok(&code) && perl_seg(t, code.p, code.len, pos, false, out);
    buf_free(&code);
    return ok ? (size_t)(close - s) + 1 : 0;
}

/* --plus: {uniq} {choose_k}, and {n uniq}... for the n-th argument. Its length, or 0. */
static size_t parse_check(struct tpl *t, const char *s, size_t n, struct seg *out)
{
    static const char *const names[] = {"uniq}", "choose_k}"};
    if (!t->plus || n < 6 || s[0] != '{')
        return 0;
    size_t i = 1;
    unsigned pos = 0;
    while (i < n && i < 8 && s[i] >= '0' && s[i] <= '9')
        pos = pos * 10 + (unsigned)(s[i++] - '0');
    while (i > 1 && i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    for (int k = 0; k < 2; k++) {
        size_t len = strlen(names[k]);
        if (n - i >= len && !memcmp(s + i, names[k], len) && (i == 1 || pos)) {
            memset(out, 0, sizeof(*out));
            out->kind = S_ARG;
            out->pos = pos;
            t->checks |= k ? C_CHOOSE : C_UNIQ;
            return i + len;
        }
    }
    return 0;
}

/* Parses a placeholder at s (n bytes available). Returns its length, or 0 if none. */
static size_t parse_ph(struct tpl *t, const char *s, size_t n, struct seg *out)
{
    size_t named = parse_name(t, s, n, out);
    if (!named)
        named = parse_perl(t, s, n, out);
    if (!named)
        named = parse_check(t, s, n, out);
    if (!named)
        named = parse_rename(t, s, n, out);
    if (named)
        return named;
    if (t->rep) { /* -I STR: STR instead of {}, which is then plain text */
        memset(out, 0, sizeof(*out));
        out->kind = S_ARG;
        if (n >= t->rep_len && !memcmp(s, t->rep, t->rep_len))
            return t->rep_len;
        if (n >= 2 && s[0] == '{' && s[1] == '}')
            return 0;
    }
    if (n < 2 || s[0] != '{')
        return 0;
    size_t trim = parse_trim(t, s, n, out);
    if (!trim)
        trim = parse_bash(t, s, n, out);
    if (trim)
        return trim;
    /* As GNU parallel (its \{(-?\d+)\s*...\}), white space may follow the number of a
     * positional one, newlines too: {1 }, {2\n.} are {1} and {2.}. {-n} counts from the
     * last argument. */
    bool from_end = n > 2 && s[1] == '-' && s[2] >= '0' && s[2] <= '9';
    size_t lead = from_end ? 2 : 1;
    size_t digits = strspn(s + lead, "0123456789"), at = lead + digits;
    while (digits && at < n && strchr(" \t\n\r\f\v", s[at]) && s[at] && !joining_space(t, s + at))
        at++;
    const char *close = memchr(s + at, '}', n - at < 16 ? n - at : 16);
    if (!close)
        return 0;
    size_t len = (size_t)(close - s) + 1;
    const char *p = s + 1, *e = close;
    memset(out, 0, sizeof(*out));
    if (e - p == 1 && *p == '#') {
        out->kind = S_SEQ;
        return len;
    }
    if (e - p == 1 && *p == '%') {
        out->kind = S_SLOT;
        return len;
    }
    if (t->plus && e - p == 2 &&
        (!memcmp(p, "##", 2) || !memcmp(p, "0#", 2) || !memcmp(p, "0%", 2))) {
        out->kind = p[0] == '#' ? S_TOTAL : p[1] == '#' ? S_SEQ0 : S_SLOT0;
        return len;
    }
    unsigned pos = 0;
    p = s + lead;
    while (p < e && *p >= '0' && *p <= '9' && pos < 100000)
        pos = pos * 10 + (unsigned)(*p++ - '0');
    if (p != s + lead && pos == 0)
        return 0; /* {0} */
    if (p != s + lead + digits)
        return 0; /* a number too long */
    p = s + at;
    int mod = match_mod(t, p, (size_t)(e - p));
    if (mod < 0)
        return 0;
    if (t->rep && pos && mod == M_NONE)
        return 0; /* as GNU parallel: with -I, {n} is plain text ({n.} and the others are not) */
    out->kind = S_ARG;
    out->mod = (enum mod)mod;
    out->pos = pos;
    out->from_end = from_end;
    return len;
}

/* GNU parallel's {.}: s:\.[^/.]*$:: */
static size_t noext_len(const char *s, size_t n)
{
    size_t i = n;
    while (i > 0 && s[i - 1] != '/' && s[i - 1] != '.')
        i--;
    return i > 0 && s[i - 1] == '.' ? i - 1 : n;
}

/* {/}: what follows the last slash (GNU parallel strips "anything, then /"). */
static void base_of(const char **s, size_t *n)
{
    const char *slash = memrchr(*s, '/', *n);
    if (slash) {
        *n -= (size_t)(slash + 1 - *s);
        *s = slash + 1;
    }
}

/* {//}: Perl's File::Basename::dirname. */
static void dir_of(const char *s, size_t n, const char **d, size_t *dn)
{
    for (int round = 0; round < 2; round++) {
        const char *slash = memrchr(s, '/', n);
        size_t baselen = slash ? n - (size_t)(slash + 1 - s) : n;
        if (!slash) {
            *d = ".";
            *dn = 1;
        } else {
            *d = s;
            *dn = (size_t)(slash + 1 - s);
            while (*dn > 1 && (*d)[*dn - 1] == '/')
                (*dn)--;
        }
        if (baselen || round == 1)
            return;
        s = *d; /* "dir/": the parent of "dir" */
        n = *dn;
    }
}

/* Where the last k extensions of s start (at their first dot), as --plus's
 * s:\.[^/.]*\.[^/.]*$:: finds them (k dots after it, no slash): n when there are fewer. */
static size_t exts_at(const char *s, size_t n, int k)
{
    size_t i = n;
    for (int dots = 0; i > 0 && s[i - 1] != '/';) {
        i--;
        if (s[i] == '.' && ++dots == k)
            return i;
    }
    return n;
}

static void apply_mod(enum mod m, const char **p, size_t *n)
{
    switch (m) {
    case M_NONE:
        break;
    case M_BASE:
        base_of(p, n);
        break;
    case M_DIR:
        dir_of(*p, *n, p, n);
        break;
    case M_PDIR: { /* {+/}: s:/[^/]*$:: || s:.*$:: */
        const char *slash = memrchr(*p, '/', *n);
        *n = slash ? (size_t)(slash - *p) : 0;
        break;
    }
    case M_BASENOEXT:
    case M_BASENOEXT2:
    case M_BASENOEXT3:
        base_of(p, n);
        m = (enum mod)(m - M_BASENOEXT + M_NOEXT);
        /* fall through */
    case M_NOEXT:
    case M_NOEXT2:
    case M_NOEXT3:
        *n = m == M_NOEXT ? noext_len(*p, *n) : exts_at(*p, *n, (int)(m - M_NOEXT + 1));
        break;
    case M_EXT: { /* {+.}: s:.*\.:: || s:.*$:: (after the last dot, slashes or not) */
        const char *dot = memrchr(*p, '.', *n);
        *n = dot ? (size_t)(*p + *n - dot - 1) : 0;
        *p = dot ? dot + 1 : *p;
        break;
    }
    case M_EXT2:
    case M_EXT3: { /* {+..}: s:.*\.([^/.]*\.[^/.]*)$:$1: || s:.*$:: */
        size_t at = exts_at(*p, *n, (int)(m - M_EXT + 1));
        *p += at < *n ? at + 1 : *n;
        *n = at < *n ? *n - at - 1 : 0;
        break;
    }
    }
}

/* ------------------------------------------------------------------ compiling */

static void add_seg(struct tpl *t, const struct seg *s)
{
    buf_add(&t->segs, s, sizeof(*s));
}

static void add_lit(struct tpl *t, const char *p, size_t n)
{
    if (!n)
        return;
    struct seg *last = NSEGS(t) > t->piece_seg ? &SEGS(t)[NSEGS(t) - 1] : NULL;
    if (last && last->kind == S_LIT && last->off + last->len == t->text.len) {
        last->len += n; /* extend the literal being built */
    } else {
        struct seg s = {.kind = S_LIT, .off = t->text.len, .len = n};
        add_seg(t, &s);
    }
    buf_add(&t->text, p, n);
}

/* Starts a new piece in `pieces` at the current end of the segments. */
static void begin_piece(struct tpl *t, struct buf *pieces)
{
    struct piece p = {.first = NSEGS(t)};
    buf_add(pieces, &p, sizeof(p));
    t->piece_seg = p.first;
}

/* Ends the last piece of `pieces`: counts its segments and, with -X, marks it as a context
 * word when it holds a {} or {.}-like placeholder. */
static void end_piece(struct tpl *t, struct buf *pieces, bool ctx_replace)
{
    if (!buf_ok(pieces) || !buf_ok(&t->segs))
        return;
    struct piece *p = &PIECES(*pieces)[NPIECES(*pieces) - 1];
    p->nsegs = NSEGS(t) - p->first;
    if (ctx_replace)
        for (size_t i = p->first; i < p->first + p->nsegs; i++)
            if ((SEGS(t)[i].kind == S_ARG || SEGS(t)[i].kind == S_PERL) && SEGS(t)[i].pos == 0)
                p->ctx = true;
}

static bool is_meta(char c)
{
    return strchr("|&;<>()$`\\*?[]~{}#!\n", c) != NULL;
}

/* Words only a shell can run (builtins, keywords). */
static bool shell_word(const char *w, size_t n)
{
    static const char *const words[] = {
        ".",      ":",       "[[",      "]]",     "!",       "{",        "}",        "alias",
        "bg",     "break",   "builtin", "case",   "cd",      "command",  "continue", "declare",
        "do",     "done",    "elif",    "else",   "esac",    "eval",     "exec",     "exit",
        "export", "fc",      "fg",      "fi",     "for",     "function", "getopts",  "hash",
        "if",     "in",      "jobs",    "let",    "local",   "read",     "readonly", "return",
        "select", "set",     "shift",   "source", "then",    "time",     "times",    "trap",
        "type",   "typeset", "ulimit",  "umask",  "unalias", "unset",    "until",    "wait",
        "while",
    };
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strlen(words[i]) == n && !memcmp(words[i], w, n))
            return true;
    return false;
}

/* A function bash exports (export -f NAME puts BASH_FUNC_NAME%%=() {...} in the
 * environment): only the shell can run it, so a line calling it is never exec'd directly. */
static bool exported_function(const char *w, size_t n)
{
    extern char **environ;
    for (char **e = environ; *e; e++)
        if (!strncmp(*e, "BASH_FUNC_", 10) && !strncmp(*e + 10, w, n) &&
            !strncmp(*e + 10 + n, "%%=", 3))
            return true;
    return false;
}

/* NAME= at the start of a word: a variable assignment. */
static bool assignment(const char *w, size_t n)
{
    size_t i = 0;
    if (n == 0 || !((w[0] >= 'A' && w[0] <= 'Z') || (w[0] >= 'a' && w[0] <= 'z') || w[0] == '_'))
        return false;
    while (i < n && ((w[i] >= 'A' && w[i] <= 'Z') || (w[i] >= 'a' && w[i] <= 'z') ||
                     (w[i] >= '0' && w[i] <= '9') || w[i] == '_'))
        i++;
    return i < n && w[i] == '=';
}

/* Scans the line text (with placeholders) into the line pieces and, while it stays simple,
 * into the words. Sets t->direct. */
static void scan_line(struct tpl *t, const char *s, size_t n, bool ctx_replace)
{
    enum { OUT, SQ, DQ } st = OUT;
    bool in_token = false, direct = true;

    /* Pass 1, the line form: the raw bytes, cut into tokens (context words for -X) and
     * the blank gaps between them. It also decides whether the line is simple. */
    for (size_t i = 0; i < n;) {
        struct seg ph;
        size_t plen = parse_ph(t, s + i, n - i, &ph);
        char c = s[i];
        if (st == OUT && (c == ' ' || c == '\t')) {
            if (in_token)
                end_piece(t, &t->line, ctx_replace);
            in_token = false;
            size_t j = i;
            while (j < n && (s[j] == ' ' || s[j] == '\t'))
                j++;
            begin_piece(t, &t->line);
            add_lit(t, s + i, j - i);
            end_piece(t, &t->line, false);
            i = j;
            continue;
        }
        if (!in_token) {
            begin_piece(t, &t->line);
            in_token = true;
        }
        if (plen) {
            add_seg(t, &ph);
            if (st != OUT)
                direct = false; /* a placeholder inside quotes: textual, as the shell sees it */
            i += plen;
            continue;
        }
        add_lit(t, s + i, 1);
        if (c == '\n')
            direct = false;
        else if (st == OUT && c == '\'')
            st = SQ;
        else if (st == OUT && c == '"')
            st = DQ;
        else if ((st == SQ && c == '\'') || (st == DQ && c == '"'))
            st = OUT;
        else if (st == OUT && is_meta(c))
            direct = false;
        else if (st == DQ && (c == '$' || c == '`' || c == '\\'))
            direct = false;
        i++;
    }
    if (in_token)
        end_piece(t, &t->line, ctx_replace);
    if (st != OUT || t->perl_uq)
        direct = false; /* unbalanced quotes: let the shell say so; uq(): shell text */
    /* As GNU parallel, a placeholder in the first word of the line is not quoted: with
     * `{} x` and the argument `ls -l`, the line is `ls -l x` (the shell splits it). */
    if (n && s[0] != ' ' && s[0] != '\t' && buf_ok(&t->line) && NPIECES(t->line)) {
        struct piece *p0 = &PIECES(t->line)[0];
        for (size_t i = p0->first; i < p0->first + p0->nsegs; i++)
            if (SEGS(t)[i].kind == S_ARG || SEGS(t)[i].kind == S_PERL) {
                p0->raw = true;
                direct = false;
            }
    }
    if (!direct) {
        t->direct = false;
        return;
    }

    /* Pass 2, the words form: quotes removed, blanks end words. */
    struct buf first = {0}; /* the first word's literal text, for the builtin check */
    bool in_word = false;
    size_t nwords = 0;
    st = OUT;
    for (size_t i = 0; i < n;) {
        struct seg ph;
        size_t plen = parse_ph(t, s + i, n - i, &ph);
        char c = s[i];
        if (st == OUT && (c == ' ' || c == '\t')) {
            if (in_word)
                end_piece(t, &t->words, ctx_replace);
            in_word = false;
            i++;
            continue;
        }
        if (!in_word) {
            begin_piece(t, &t->words);
            in_word = true;
            nwords++;
        }
        if (plen) {
            add_seg(t, &ph);
            i += plen;
            continue;
        }
        if (st == OUT && (c == '\'' || c == '"')) {
            st = c == '\'' ? SQ : DQ;
            /* A quoted string makes a word even when empty and next to a placeholder
             * that gives nothing (a missing {n}): an empty literal says so. */
            struct seg empty = {.kind = S_LIT, .off = t->text.len, .len = 0};
            add_seg(t, &empty);
        } else if ((st == SQ && c == '\'') || (st == DQ && c == '"')) {
            st = OUT;
        } else {
            add_lit(t, s + i, 1);
            if (nwords == 1)
                buf_addc(&first, c);
        }
        i++;
    }
    if (in_word)
        end_piece(t, &t->words, ctx_replace);
    const char *w = first.p ? first.p : "";
    t->direct = nwords > 0 && !shell_word(w, first.len) && !assignment(w, first.len) &&
                !exported_function(w, first.len);
    t->text.failed |= first.failed;
    buf_free(&first);
}

static bool has_placeholder(struct tpl *t, const char *s, size_t n)
{
    struct seg ph;
    for (size_t i = 0; i < n; i++)
        if (parse_ph(t, s + i, n - i, &ph))
            return true;
    return false;
}

/* -q: each command word becomes one argv word as it is (placeholders still work); the line
 * shows the literal runs around the placeholders quoted. */
static void compile_quoted(struct tpl *t, const struct cli_opts *o)
{
    for (int w = 0; w < o->ncmd; w++) {
        const char *s = o->cmd[w];
        size_t n = strlen(s);
        if (w > 0) {
            begin_piece(t, &t->line);
            add_lit(t, " ", 1);
            end_piece(t, &t->line, false);
        }
        for (int pass = 0; pass < 2; pass++) {
            struct buf *pieces = pass == 0 ? &t->line : &t->words;
            struct buf q = {0};
            size_t run = 0, i = 0;
            begin_piece(t, pieces);
            for (;;) {
                struct seg ph;
                size_t plen = i < n ? parse_ph(t, s + i, n - i, &ph) : 0;
                if (i < n && !plen) {
                    i++;
                    continue;
                }
                /* the literal run [run, i) */
                if (pass == 1) {
                    add_lit(t, s + run, i - run);
                } else if (i > run || n == 0) {
                    buf_reset(&q);
                    shell_quote(&q, s + run, i - run);
                    add_lit(t, q.p, q.len);
                    t->text.failed |= q.failed;
                }
                if (i == n)
                    break;
                add_seg(t, &ph);
                i += plen;
                run = i;
            }
            buf_free(&q);
            end_piece(t, pieces, o->ctx_replace);
        }
    }
    t->direct = true;
}

int tpl_compile(struct tpl **out, const struct cli_opts *o)
{
    struct tpl *t = calloc(1, sizeof(*t));
    struct buf line = {0};
    if (!t)
        return CONCUR_ENOMEM;
    set_replace(t, o->replace);
    t->rename = o->rename;
    t->shell = o->shell_path;
    t->penv = o->penv;
    t->penv_len = o->penv_len;
    t->wd = o->wd;
    t->plus = o->plus;
    t->slots = o->jobs > 0 ? (unsigned)o->jobs : 1;
    t->names = o->names;
    t->nnames = o->nnames;
    if (o->ncmd == 0) {
        t->raw = true;
    } else if (o->quote) {
        compile_quoted(t, o);
        if (o->shell || o->penv || o->wd)
            t->direct = false;
    } else {
        struct buf joins = {0};
        for (int w = 0; w < o->ncmd; w++) {
            if (w) {
                buf_add(&joins, &line.len, sizeof(line.len));
                buf_addc(&line, ' ');
            }
            buf_adds(&line, o->cmd[w]);
        }
        t->join_base = line.p;
        t->joins = (const size_t *)joins.p;
        t->njoins = buf_ok(&joins) ? joins.len / sizeof(size_t) : 0;
        scan_line(t, line.p ? line.p : "", line.len, o->ctx_replace);
        t->join_base = NULL;
        t->text.failed |= joins.failed;
        buf_free(&joins);
        if (o->shell || o->penv || o->wd)
            t->direct = false;
    }
    bool any = t->perl; /* (an expression may span command words) */
    for (int w = 0; w < o->ncmd && !any; w++)
        any = has_placeholder(t, o->cmd[w], strlen(o->cmd[w]));
    if (!t->raw && !any && !o->pipe && !o->zero_args) {
        /* No placeholder: the arguments are appended, as " {}" (--pipe, -n 0: none to append). */
        struct seg all = {.kind = S_ARG};
        begin_piece(t, &t->line);
        add_lit(t, " ", 1);
        end_piece(t, &t->line, false);
        begin_piece(t, &t->line);
        add_seg(t, &all);
        end_piece(t, &t->line, o->ctx_replace);
        begin_piece(t, &t->words);
        add_seg(t, &all);
        end_piece(t, &t->words, o->ctx_replace);
    }
    bool ok = buf_ok(&line) && buf_ok(&t->text) && buf_ok(&t->segs) && buf_ok(&t->line) &&
              buf_ok(&t->words);
    buf_free(&line);
    if (!ok || perl_failed()) {
        tpl_free(t);
        return ok ? CONCUR_EIO : CONCUR_ENOMEM;
    }
    *out = t;
    return 0;
}

int tpl_compile_plain(struct tpl **out, const char *s, size_t n, const struct cli_opts *o)
{
    struct tpl *t = calloc(1, sizeof(*t));
    if (!t)
        return CONCUR_ENOMEM;
    set_replace(t, o->replace);
    t->rename = o->rename;
    t->plus = o->plus;
    t->slots = o->jobs > 0 ? (unsigned)o->jobs : 1;
    t->names = o->names;
    t->nnames = o->nnames;
    t->plain = true;
    begin_piece(t, &t->line);
    for (size_t i = 0; i < n;) {
        struct seg ph;
        if (o->ctx_replace && s[i] == ' ') { /* -X: {} is repeated within its word */
            end_piece(t, &t->line, true);
            begin_piece(t, &t->line);
            add_lit(t, s + i++, 1);
            end_piece(t, &t->line, false);
            begin_piece(t, &t->line);
            continue;
        }
        size_t plen = parse_ph(t, s + i, n - i, &ph);
        if (plen) {
            add_seg(t, &ph);
            i += plen;
        } else {
            add_lit(t, s + i, 1);
            i++;
        }
    }
    end_piece(t, &t->line, o->ctx_replace);
    bool ok = buf_ok(&t->text) && buf_ok(&t->segs) && buf_ok(&t->line);
    if (!ok || perl_failed()) {
        tpl_free(t);
        return ok ? CONCUR_EIO : CONCUR_ENOMEM;
    }
    *out = t;
    return 0;
}

void tpl_free(struct tpl *t)
{
    if (!t)
        return;
    buf_free(&t->text);
    while (t->res) {
        struct trim_re *r = t->res;
        t->res = r->next;
        regfree(&r->re);
        free(r->src);
        free(r);
    }
    buf_free(&t->segs);
    buf_free(&t->line);
    buf_free(&t->words);
    free(t);
}

bool tpl_has_placeholder(const struct tpl *t)
{
    for (size_t i = 0; i < NSEGS(t); i++)
        if (SEGS(t)[i].kind != S_LIT)
            return true;
    return false;
}

bool tpl_is_direct(const struct tpl *t)
{
    return t->direct;
}

bool tpl_needs_total(const struct tpl *t)
{
    if (t->perl_total)
        return true;
    for (size_t i = 0; i < NSEGS(t); i++)
        if (SEGS(t)[i].kind == S_TOTAL || SEGS(t)[i].kind == S_SEQ0)
            return true;
    return false;
}

void tpl_set_total(struct tpl *t, size_t total)
{
    t->total = total;
}

/* ------------------------------------------------------------------ expanding */

enum how { QUOTED, WORDS, PLAIN };

/* Whether re matches all of p[a, e) (REG_STARTEND: the value is not NUL-terminated; the
 * range starts at its own string, where ^ may match). */
static bool matches(const regex_t *re, const char *p, size_t a, size_t e)
{
    regmatch_t m = {.rm_so = 0, .rm_eo = (regoff_t)(e - a)};
    return regexec(re, p + a, 1, &m, REG_STARTEND) == 0;
}

/* Applies a --plus trim to the value p[0, *n): moves *p and shortens *n. */
static void apply_trim(const struct seg *s, const char **p, size_t *n)
{
    size_t len = *n;
    switch (s->trim) {
    case T_NONE:
        return;
    case T_PREFIX: /* the shortest prefix that matches */
        for (size_t k = 0; k <= len; k++)
            if (matches(s->re, *p, 0, k)) {
                *p += k;
                *n -= k;
                return;
            }
        return;
    case T_PREFIX_LONG:
        for (size_t k = len + 1; k-- > 0;)
            if (matches(s->re, *p, 0, k)) {
                *p += k;
                *n -= k;
                return;
            }
        return;
    case T_SUFFIX: /* the shortest suffix that matches */
        for (size_t k = len + 1; k-- > 0;)
            if (matches(s->re, *p, k, len)) {
                *n = k;
                return;
            }
        return;
    case T_SUFFIX_LONG:
        for (size_t k = 0; k <= len; k++)
            if (matches(s->re, *p, k, len)) {
                *n = k;
                return;
            }
        return;
    }
}

/* One value of a placeholder, modified, quoted for the line when `how` is QUOTED. */
static void put_value(struct buf *b, const struct field *f, const struct seg *s, enum how how)
{
    const char *p = f->p;
    size_t n = f->len;
    apply_mod(s->mod, &p, &n);
    apply_trim(s, &p, &n);
    if (how == QUOTED)
        shell_quote(b, p, n);
    else
        buf_add(b, p, n);
}

/* A {= perl expression =}'s value for argument pos of the job (-1: none), quoted as
 * `how` says unless the expression called uq(). Nothing when perl failed: the caller sees
 * perl_failed(). */
static void put_perl(struct buf *b, const struct tpl *t, const struct seg *s,
                     const struct jobview *j, long pos, enum how how)
{
    const char *v;
    size_t n;
    bool unquote;
    if (perl_value(s->perl, j, pos, t->total, &v, &n, &unquote) != 0)
        return;
    if (how == QUOTED && !unquote)
        shell_quote(b, v, n);
    else
        buf_add(b, v, n);
}

/* GNU parallel's 1+int(log10(n)): the digits of n (1 for 0). */
static int digits(size_t n)
{
    int d = 1;
    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

/* Between two values of a placeholder: a space, or in WORDS form the end of a word. */
static void value_break(struct buf *b, enum how how, size_t *nwords)
{
    if (how == WORDS) {
        buf_addnul(b);
        (*nwords)++;
    } else {
        buf_addc(b, ' ');
    }
}

/* Expands one piece into b. `only` >= 0 binds {} to that argument alone (-X). In WORDS
 * form, several values end the word being built: each word ends with a NUL, counted in
 * *nwords. A {n} past the job's arguments is empty and unquoted, as in GNU parallel, so a
 * word made only of such placeholders disappears: returns false for such a word. */
static bool expand_piece(const struct tpl *t, const struct piece *pc, const struct jobview *j,
                         long only, enum how how, struct buf *b, size_t *nwords)
{
    const struct seg *segs = (const struct seg *)t->segs.p;
    bool content = false, missing = false;
    for (size_t i = pc->first; i < pc->first + pc->nsegs; i++) {
        const struct seg *s = &segs[i];
        /* (a job has no arguments with -n 0: {} is then empty, and a word of it alone goes) */
        content = content || (s->kind != S_ARG && s->kind != S_PERL) ||
                  (s->pos == 0 && (j->nargs || s->kind == S_PERL)) ||
                  (s->pos && s->pos <= j->nargs);
        switch (s->kind) {
        case S_LIT:
            buf_add(b, t->text.p + s->off, s->len);
            break;
        case S_SEQ:
            buf_printf(b, "%zu", j->seq);
            break;
        case S_SLOT:
            buf_printf(b, "%u", j->slot);
            break;
        case S_TOTAL:
            buf_printf(b, "%zu", t->total);
            break;
        case S_SEQ0: /* as wide as the number of jobs */
            buf_printf(b, "%0*zu", digits(t->total), j->seq);
            break;
        case S_SLOT0: /* as wide as the number of slots */
            buf_printf(b, "%0*u", digits(t->slots), j->slot);
            break;
        case S_PERL:
            if (s->pos > 0 && s->pos <= j->nargs)
                put_perl(b, t, s, j, (long)(s->from_end ? j->nargs - s->pos : s->pos - 1), how);
            else if (s->pos > 0)
                missing = true;
            else if (only >= 0 || j->nargs <= 1)
                put_perl(b, t, s, j, only >= 0 ? only : j->nargs ? 0 : -1, how);
            else
                for (size_t a = 0; a < j->nargs; a++) {
                    if (a > 0)
                        value_break(b, how, nwords);
                    put_perl(b, t, s, j, (long)a, how);
                }
            break;
        case S_ARG:
            if (s->pos > 0) {
                if (s->pos <= j->nargs)
                    put_value(b, &j->args[s->from_end ? j->nargs - s->pos : s->pos - 1], s,
                              how);
                else
                    missing = true;
            } else if (!j->nargs) {
                missing = true;
            } else if (only >= 0) {
                put_value(b, &j->args[only], s, how);
            } else {
                for (size_t a = 0; a < j->nargs; a++) {
                    if (a > 0)
                        value_break(b, how, nwords);
                    put_value(b, &j->args[a], s, how);
                }
            }
            break;
        }
    }
    return content || !missing;
}

/* The raw form: the arguments, space-separated, are the line. */
static void raw_line(const struct jobview *j, struct buf *b)
{
    for (size_t a = 0; a < j->nargs; a++) {
        if (a)
            buf_addc(b, ' ');
        buf_add(b, j->args[a].p, j->args[a].len);
    }
}

static void expand_line(const struct tpl *t, const struct jobview *j, enum how how, struct buf *b)
{
    if (t->raw) {
        raw_line(j, b);
        return;
    }
    const struct piece *pcs = (const struct piece *)t->line.p;
    for (size_t k = 0; k < NPIECES(t->line); k++) {
        enum how h = pcs[k].raw && how == QUOTED ? PLAIN : how;
        if (!pcs[k].ctx) {
            expand_piece(t, &pcs[k], j, -1, h, b, NULL);
            continue;
        }
        for (size_t a = 0; a < j->nargs; a++) {
            if (a)
                buf_addc(b, ' ');
            expand_piece(t, &pcs[k], j, (long)a, h, b, NULL);
        }
    }
}

/* Byte strings compared as Perl's cmp does. */
static int cmp_fields(const struct field *a, const struct field *b)
{
    int c = memcmp(a->p, b->p, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

/* Whether --plus's {uniq} / {choose_k} skip the job: arguments not all different / not
 * in strictly increasing order. */
static bool checks_skip(const struct tpl *t, const struct jobview *j)
{
    for (size_t a = 1; (t->checks & C_CHOOSE) && a < j->nargs; a++)
        if (cmp_fields(&j->args[a - 1], &j->args[a]) >= 0)
            return true;
    for (size_t a = 1; (t->checks & C_UNIQ) && a < j->nargs; a++)
        for (size_t b = 0; b < a; b++)
            if (!cmp_fields(&j->args[a], &j->args[b]))
                return true;
    return false;
}

/* After an expansion into b: rc, or CONCUR_ENOMEM, CONCUR_EIO (perl failed, after a
 * message), TPL_SKIP (the job is to be skipped). */
static int verdict(const struct tpl *t, const struct jobview *j, const struct buf *b, int rc)
{
    if (rc == 0 && !buf_ok(b))
        rc = CONCUR_ENOMEM;
    if (rc == 0 && t->perl && perl_failed())
        rc = CONCUR_EIO;
    if (rc == 0 && ((t->perl && perl_skipped(j)) || (t->checks && checks_skip(t, j))))
        rc = perl_failed() ? CONCUR_EIO : TPL_SKIP;
    return rc;
}

int tpl_line(const struct tpl *t, const struct jobview *j, struct buf *line)
{
    buf_reset(line);
    expand_line(t, j, QUOTED, line);
    return verdict(t, j, line, 0);
}

void tpl_plain(const struct tpl *t, const struct jobview *j, struct buf *out)
{
    expand_line(t, j, PLAIN, out);
}

/* Points vec at the n NUL-terminated words in strs, then a NULL. */
static int make_argv(struct buf *strs, struct buf *vec, size_t n, char ***argv)
{
    buf_reset(vec);
    if (!buf_ok(strs) || !buf_reserve(vec, (n + 1) * sizeof(char *)))
        return CONCUR_ENOMEM;
    char **v = (char **)vec->p, *p = strs->p;
    for (size_t i = 0; i < n; i++) {
        v[i] = p;
        p += strlen(p) + 1;
    }
    v[n] = NULL;
    vec->len = (n + 1) * sizeof(char *);
    *argv = v;
    return 0;
}

static const char *shell_line(const struct tpl *t, const struct jobview *j,
                              const struct buf *line, struct buf *strs, bool exec);

/* Whether prog can be exec'd: a name without a slash must be a program in $PATH. One that
 * is not (a typo, a shell function, a name from the input) is run by the shell instead,
 * which then reports it as a shell does ("sh: 1: NAME: not found", exit status 127). The
 * answer for the last name asked is kept: most jobs run the same program. */
static bool runnable(const char *prog)
{
    static char last[256];
    static bool last_ok;
    size_t n = strlen(prog);
    if (n < sizeof(last) && !strcmp(last, prog))
        return last_ok;
    bool ok = strchr(prog, '/') ? access(prog, X_OK) == 0 : in_path(prog);
    if (n < sizeof(last)) {
        memcpy(last, prog, n + 1);
        last_ok = ok;
    }
    return ok;
}

/* *argv = SHELL -c LINE (`exec`: the last command exec'd). 0 or CONCUR_ENOMEM. */
static int shell_argv(const struct tpl *t, const struct jobview *j, const struct buf *line,
                      struct buf *strs, struct buf *vec, char ***argv, bool exec)
{
    static char dash_c[] = "-c";
    buf_reset(vec);
    if (!buf_reserve(vec, 4 * sizeof(char *)))
        return CONCUR_ENOMEM;
    char **v = (char **)vec->p;
    v[0] = (char *)t->shell;
    v[1] = dash_c;
    if (!(v[2] = (char *)shell_line(t, j, line, strs, exec)))
        return CONCUR_ENOMEM;
    v[3] = NULL;
    vec->len = 4 * sizeof(char *);
    *argv = v;
    return 0;
}

int tpl_build(const struct tpl *t, const struct jobview *j, struct buf *strs, struct buf *vec,
              char ***argv, struct buf *line, bool want_line)
{
    buf_reset(strs);
    if (want_line || !t->direct) {
        buf_reset(line);
        expand_line(t, j, QUOTED, line);
        int rc = verdict(t, j, line, 0);
        if (rc)
            return rc;
    }
    if (t->raw && !t->penv && !t->wd) {
        /* The arguments are the command: exec them directly when they are simple. */
        int k = split_simple(line->p, line->len, strs);
        if (k > 0 && runnable(strs->p))
            return make_argv(strs, vec, (size_t)k, argv);
        buf_reset(strs);
        if (k > 0) /* not a program: the shell says so ("NAME: command not found") */
            return shell_argv(t, j, line, strs, vec, argv, false);
    }
    if (!t->direct || t->raw)
        return shell_argv(t, j, line, strs, vec, argv, true);
    size_t n = 0;
    const struct piece *pcs = (const struct piece *)t->words.p;
    for (size_t k = 0; k < NPIECES(t->words); k++) {
        size_t times = pcs[k].ctx ? j->nargs : 1;
        for (size_t a = 0; a < times; a++) {
            if (!expand_piece(t, &pcs[k], j, pcs[k].ctx ? (long)a : -1, WORDS, strs, &n))
                continue; /* nothing but missing {n}: no word at all */
            buf_addnul(strs);
            n++;
        }
    }
    int rc = verdict(t, j, strs, make_argv(strs, vec, n, argv));
    if (rc || n == 0 || runnable((*argv)[0]))
        return rc;
    if (!want_line) { /* the shell needs the line */
        buf_reset(line);
        expand_line(t, j, QUOTED, line);
        if (!buf_ok(line))
            return CONCUR_ENOMEM;
    }
    return shell_argv(t, j, line, strs, vec, argv, false);
}

/* ------------------------------------------------------------------ simple lines */

int split_simple(const char *s, size_t n, struct buf *strs)
{
    enum { OUT, SQ, DQ } st = OUT;
    bool in_word = false;
    int count = 0;
    size_t first_start = strs->len, first_len = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\n')
            return -1;
        if (st == OUT) {
            if (c == ' ' || c == '\t') {
                if (in_word) {
                    buf_addnul(strs);
                    in_word = false;
                }
                continue;
            }
            if (is_meta(c))
                return -1;
            if (!in_word) {
                in_word = true;
                count++;
            }
            if (c == '\'')
                st = SQ;
            else if (c == '"')
                st = DQ;
            else
                buf_addc(strs, c);
        } else if (st == SQ) {
            if (c == '\'')
                st = OUT;
            else
                buf_addc(strs, c);
        } else {
            if (c == '"')
                st = OUT;
            else if (c == '$' || c == '`' || c == '\\')
                return -1;
            else
                buf_addc(strs, c);
        }
        if (count == 1)
            first_len = strs->len - first_start;
    }
    if (st != OUT || count == 0 || !buf_ok(strs))
        return -1;
    if (in_word)
        buf_addnul(strs);
    const char *w = strs->p + first_start;
    if (shell_word(w, first_len) || assignment(w, first_len) || exported_function(w, first_len))
        return -1;
    return count;
}

/* ------------------------------------------------------------------ the shell's last command */

/* Builtins that also exist as programs but behave differently (dash's echo reads
 * backslashes): exec'ing the program would change what the line does. */
static bool builtin_program(const char *w, size_t n)
{
    static const char *const words[] = {"echo", "printf", "test", "[",
                                        "true", "false",  "pwd",  "kill"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strlen(words[i]) == n && !memcmp(words[i], w, n))
            return true;
    return false;
}

/* Skips a $( ... ) or ` ... ` starting at s[i] (the '(' or the '`'): the index of its
 * last byte, or n when it does not end. Quotes inside are honoured. */
static size_t skip_subst(const char *s, size_t n, size_t i)
{
    char close = s[i] == '`' ? '`' : ')';
    int depth = 1;
    for (i++; i < n; i++) {
        char c = s[i];
        if (c == '\\')
            i++;
        else if (c == '\'' && close == ')') {
            const char *q = memchr(s + i + 1, '\'', n - i - 1);
            if (!q)
                return n;
            i = (size_t)(q - s);
        } else if (close == ')' && c == '(')
            depth++;
        else if (c == close && --depth == 0)
            return i;
    }
    return n;
}

/* Where the program of the last command of a shell line starts, when that command may be
 * exec'd (as bash -c does, and so GNU parallel): the last element of a list (after ;, &&,
 * || or a newline) with no pipe, redirection, grouping or comment, whose first word after
 * plain NAME=value assignments is a plain program name (not a builtin or a keyword), in a
 * line that starts nothing in the background, defines no function and sets no trap.
 * Returns its offset, or -1. */
static long last_simple_command(const char *s, size_t n)
{
    enum { OUT, SQ, DQ } st = OUT;
    size_t start = 0;
    bool complex = false; /* the current element has a pipe, a redirection, a group */
    bool background = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (st == SQ) {
            st = c == '\'' ? OUT : SQ;
            continue;
        }
        if (c == '\\') {
            i++;
            continue;
        }
        if (c == '`' || (c == '$' && i + 1 < n && s[i + 1] == '(')) {
            if ((i = skip_subst(s, n, c == '$' ? i + 1 : i)) >= n)
                return -1;
            continue;
        }
        if (st == DQ) {
            st = c == '"' ? OUT : DQ;
            continue;
        }
        if (c == '\'' || c == '"') {
            st = c == '\'' ? SQ : DQ;
        } else if (c == '&' && !(i + 1 < n && s[i + 1] == '&')) {
            background = true; /* a job in the background (or a redirection: >&) */
        } else if (c == ';' || c == '\n' || c == '&') {
            start = i + 1 + (i + 1 < n && s[i + 1] == c);
            i = start - 1;
            complex = false;
        } else if (c == '|' && i + 1 < n && s[i + 1] == '|') {
            start = i + 2;
            i++;
            complex = false;
        } else if (c == '#' && (i == 0 || s[i - 1] == ' ' || s[i - 1] == '\t')) {
            return -1; /* a comment */
        } else if (strchr("|<>(){}", c)) {
            if (c == '(' && i + 1 < n && s[i + 1] == ')')
                return -1; /* a function is defined */
            complex = true;
        }
    }
    if (st != OUT || complex || background)
        return -1;
    size_t w;
    for (;;) { /* plain NAME=value words first: "NAME=value exec prog" exports them */
        while (start < n && (s[start] == ' ' || s[start] == '\t'))
            start++;
        w = start;
        while (w < n && s[w] != ' ' && s[w] != '\t') {
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./+-,:@%=",
                        s[w]))
                return -1; /* quoted or expanded: leave it to the shell */
            w++;
        }
        if (!assignment(s + start, w - start))
            break;
        start = w;
    }
    if (w == start || shell_word(s + start, w - start) || builtin_program(s + start, w - start) ||
        exported_function(s + start, w - start))
        return -1;
    if (memmem(s, n, "trap", 4))
        return -1;
    return (long)start;
}

/* The line the shell runs (SHELL -c): with "exec " before its last command when that is a simple
 * command, so that a job killed by a signal is seen as killed (the shell would otherwise
 * exit 128 + the signal). NULL when out of memory. */
static const char *shell_line(const struct tpl *t, const struct jobview *j,
                              const struct buf *line, struct buf *strs, bool exec)
{
    long at = exec ? last_simple_command(line->p, line->len) : -1;
    if (at < 0 && !t->penv && !t->wd)
        return line->p;
    buf_reset(strs);
    if (t->penv) { /* PARALLEL_ENV: shell code run before every command */
        buf_add(strs, t->penv, t->penv_len);
        buf_addc(strs, '\n');
    }
    if (t->wd) { /* --wd: made when missing, as GNU parallel does */
        struct buf dir = {0};
        wd_dir(&dir, t->wd, j->seq);
        buf_adds(strs, "mkdir -p -- ");
        shell_quote(strs, dir.p ? dir.p : "", dir.len);
        buf_adds(strs, " && cd -- ");
        shell_quote(strs, dir.p ? dir.p : "", dir.len);
        buf_adds(strs, " || exit 1\n");
        strs->failed |= dir.failed;
        buf_free(&dir);
    }
    if (at < 0) {
        buf_add(strs, line->p, line->len);
        return buf_ok(strs) ? strs->p : NULL;
    }
    buf_add(strs, line->p, (size_t)at);
    buf_adds(strs, "exec ");
    buf_add(strs, line->p + at, line->len - (size_t)at);
    return buf_ok(strs) ? strs->p : NULL;
}
