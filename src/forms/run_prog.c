/*
 * run_prog.c - the runner's small forms: one program with input (run_prog) and the
 * pyconcurrent-style report of kept results (print_results). Both are written on the public
 * runner API. Function records print the same way, with their answer.
 */
#include "core/concur_impl.h"

#include <time.h>

static unsigned char *dup_bytes(const unsigned char *p, size_t n)
{
    unsigned char *b = malloc(n + 1);
    if (!b)
        return NULL;
    if (n)
        memcpy(b, p, n);
    b[n] = '\0';
    return b;
}

int concur_run_prog(const char *const *argv, const void *input, size_t input_len,
                    const char *const *env, double timeout, concur_prog_output *out)
{
    if (!out || (!input && input_len))
        return CONCUR_EINVAL;
    memset(out, 0, sizeof(*out));
    if (!argv || !argv[0]) { /* nothing to run: success, empty outputs */
        out->out = dup_bytes(NULL, 0);
        out->err = dup_bytes(NULL, 0);
        if (!out->out || !out->err) {
            concur_prog_output_free(out);
            return CONCUR_ENOMEM;
        }
        return 0;
    }
    static const char empty_input[1] = "";
    concur_cmd cmd = {
        .argv = argv,
        .input = input ? input : empty_input, /* always a pipe: all input, then EOF */
        .input_len = input_len,
        .env = env,
        .timeout = timeout > 0 ? timeout : -1,
    };
    concur_runner *r = NULL;
    concur_runner_opts o = {.max_workers = 1};
    int rc = concur_run_batch(&cmd, 1, &o, &r);
    const concur_result *res = concur_runner_result(r, 0);
    if (!res) {
        concur_runner_destroy(r);
        return rc ? rc : CONCUR_ENOMEM;
    }
    if (res->spawned) {
        out->returncode = res->returncode;
        out->out = dup_bytes(res->out, res->out_len);
        out->out_len = res->out_len;
        out->err = dup_bytes(res->err, res->err_len);
        out->err_len = res->err_len;
    } else {
        const char *m = res->error_message ? res->error_message : concur_strerror(res->error);
        out->returncode = 1;
        out->out = dup_bytes(NULL, 0);
        out->err = dup_bytes((const unsigned char *)m, strlen(m));
        out->err_len = strlen(m);
    }
    out->timeout = res->timeout;
    concur_runner_destroy(r);
    if (!out->out || !out->err) {
        concur_prog_output_free(out);
        return CONCUR_ENOMEM;
    }
    return 0;
}

void concur_prog_output_free(concur_prog_output *o)
{
    if (!o)
        return;
    free(o->out);
    free(o->err);
    o->out = o->err = NULL;
    o->out_len = o->err_len = 0;
}

static int put_bytes(FILE *f, const char *label, const unsigned char *p, size_t n)
{
    if (fprintf(f, "%-20s: ", label) < 0 || (n && fwrite(p, 1, n, f) != n) ||
        ((n == 0 || p[n - 1] != '\n') && fputc('\n', f) == EOF))
        return -1;
    return 0;
}

static const char *exception_of(const concur_result *res)
{
    if (res->timeout)
        return "TimeoutError";
    if (res->error == CONCUR_ENOENT)
        return "FileNotFoundError";
    if (res->error == CONCUR_EACCES)
        return "PermissionError";
    if (res->error)
        return concur_err_name(res->error);
    return "None";
}

int concur_print_results(FILE *f, const concur_runner *r)
{
    if (!f || !r)
        return CONCUR_EINVAL;
    double start, end;
    concur_runner_times(r, &start, &end);
    char when[32];
    time_t t = (time_t)start;
    struct tm tm;
    if (!localtime_r(&t, &tm) || !strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm))
        snprintf(when, sizeof(when), "?");
    int bad = fprintf(f, "**********\nTest start time : %s\n Total run time : %.1f\n\n", when,
                      end > start ? end - start : 0) < 0;
    for (size_t i = 0; !bad && i < concur_runner_count(r); i++) {
        const concur_result *res = concur_runner_result(r, i);
        if (!res)
            continue;
        bad |= fprintf(f,
                       "========================================\n"
                       "%-20s: %s\n%-20s: %.1f\n%-20s: %.1f\n%-20s: %s\n%-20s: %s\n"
                       "%-20s: %s\n%-20s: %s\n%-20s: %d\n",
                       "key", res->key ? res->key : "", "time_start", res->time_start,
                       "time_run", res->time_run, "success", res->success ? "True" : "False",
                       "timeout", res->timeout ? "True" : "False", "exception",
                       exception_of(res), "arg", res->arg ? res->arg : "", "returncode",
                       res->returncode) < 0;
        if (!bad && res->out_len)
            bad |= put_bytes(f, "stdout", res->out, res->out_len) < 0;
        if (!bad && res->err_len)
            bad |= put_bytes(f, "stderr", res->err, res->err_len) < 0;
        if (!bad && res->answer_len)
            bad |= put_bytes(f, "answer", res->answer, res->answer_len) < 0;
    }
    if (!bad && fflush(f) == EOF)
        bad = 1;
    return bad ? (errno ? -errno : CONCUR_EIO) : 0;
}
