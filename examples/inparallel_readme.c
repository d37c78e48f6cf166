/*
 * inparallel_readme.c - the two examples of inparallel's README, in C: "log in" to a list of
 * servers concurrently and gather their uname output.
 *
 *   1. every call at once, then waitfor() hands back the futures as they complete, removing
 *      each one from the list;
 *   2. the same with a concurrency factor of 3: waitfor() also asks for more calls ("None"
 *      in Python, CONCUR_WAITFOR_MORE here) while fewer than 3 are in flight.
 *
 * In Python, @task makes getOS() fork the interpreter on each call and return a Future.
 * Here get_os() is a fork call (concur_fork_call) and the loop is concur_waitfor over a
 * plain array that the caller owns. The child cannot ssh anywhere, so it asks its own
 * kernel (uname(2)) and answers for the server it was given: what comes back, and how, is
 * the point.
 *
 * Exit status: 0 when every server answered in both parts and part 2 never had more than 3
 * calls in flight, 1 otherwise.
 */
#include <concur.h>

#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

static const char *servers[] = {
    "alpha.local", "bravo.local", "charlie.local", "delta.local",  "echo.local", "foxtrot.local",
    "golf.local",  "hotel.local", "india.local",   "juliet.local", "kilo.local", "lima.local",
};
enum { NSERVERS = sizeof(servers) / sizeof(servers[0]), CONCURRENCY = 3 };

/* The task: runs in a child process forked for this one call. Its input is the server name
 * (bytes of the caller's memory, as it was at the call); its result is one line of text. */
static int get_os_task(concur_task *t, const void *in, size_t len)
{
    struct utsname u;
    if (uname(&u) != 0)
        return concur_task_fail(t, CONCUR_EIO, "uname failed");
    char line[512];
    int n = snprintf(line, sizeof(line), "%.*s: %s %s %s %s (call %llu, pid %d)", (int)len,
                     (const char *)in, u.sysname, u.nodename, u.release, u.machine,
                     (unsigned long long)concur_task_id(t), (int)getpid());
    return concur_task_return(t, line, (size_t)n + 1); /* with its NUL */
}

/* getOS(server): forks now and returns the future of the call at once (NULL on failure). */
static concur_future *get_os(const char *server)
{
    concur_future *f = NULL;
    int rc = concur_fork_call(&f, get_os_task, server, strlen(server), NULL);
    if (rc != 0)
        fprintf(stderr, "inparallel_readme: fork call for %s: %s\n", server, concur_strerror(rc));
    return f;
}

/* print(future.result()), and the reference goes: waitfor took the future out of the
 * array, so it is ours. Returns 1 when the server answered. */
static int print_result(concur_future *f)
{
    const void *line;
    int ok = concur_future_result(f, &line, NULL) == 0;
    if (ok)
        printf("  %s\n", (const char *)line);
    else
        fprintf(stderr, "inparallel_readme: %s\n", concur_future_error_message(f));
    concur_future_release(f);
    return ok;
}

/* ---- 1. every call at once ----------------------------------------------------------- */

static int all_at_once(void)
{
    concur_future *active[NSERVERS];
    size_t nactive = 0;
    int answered = 0, rc;

    /* while len(servers) > 0: active_futures.append(getOS(servers.pop(0))) */
    for (size_t i = 0; i < NSERVERS; i++) {
        concur_future *f = get_os(servers[i]);
        if (!f)
            return -1;
        active[nactive++] = f;
    }

    /* for future in waitfor(active_futures): print(future.result()) */
    concur_waitfor it;
    if (concur_waitfor_init(&it, active, &nactive, 0) != 0)
        return -1;
    concur_future *f;
    while ((rc = concur_waitfor_next(&it, CONCUR_FOREVER, &f)) == CONCUR_WAITFOR_FUTURE)
        answered += print_result(f);
    return rc == CONCUR_WAITFOR_END && nactive == 0 ? answered : -1;
}

/* ---- 2. at most CONCURRENCY in flight -------------------------------------------------- */

static int three_at_a_time(size_t *most)
{
    /* The array holds the calls in flight. waitfor asks for more only below CONCURRENCY
     * and we add one call per request, so CONCURRENCY entries are enough. */
    concur_future *active[CONCURRENCY];
    size_t nactive = 0, next = 0;
    int answered = 0, rc;

    concur_waitfor it;
    if (concur_waitfor_init(&it, active, &nactive, CONCURRENCY) != 0)
        return -1;
    concur_future *f;
    while ((rc = concur_waitfor_next(&it, CONCUR_FOREVER, &f)) > 0) {
        if (rc == CONCUR_WAITFOR_FUTURE) { /* waitfor() yielded a completed future */
            answered += print_result(f);
        } else if (next < NSERVERS) { /* CONCUR_WAITFOR_MORE: it wants us to run more */
            if (!(active[nactive] = get_os(servers[next++])))
                return -1;
            nactive++;
            if (nactive > *most)
                *most = nactive;
        } /* else nothing left to run: not adding ends the requests, then the loop */
    }
    return rc == CONCUR_WAITFOR_END ? answered : -1;
}

int main(void)
{
    printf("1. all %d calls at once:\n", NSERVERS);
    int a = all_at_once();
    size_t most = 0;
    printf("2. at most %d calls in flight:\n", CONCURRENCY);
    int b = three_at_a_time(&most);
    printf("%d and %d servers answered; part 2 had at most %zu calls in flight\n", a, b, most);
    return a == NSERVERS && b == NSERVERS && most <= CONCURRENCY ? 0 : 1;
}
