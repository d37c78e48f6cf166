/* floor_spawn - the speed floor of the launch_* benches.
 *
 * The least a command runner has to do to run one command per input line with
 * N at once and capture their output, with nothing else: no argument parsing
 * beyond -j/-g, no templates, no job log, no retries, no timeouts.
 *
 *   floor_spawn [-j N] [-g] CMD [ARG...] < lines
 *
 * Each line of stdin is appended as the last argument of one command (as
 * `parallel CMD` and `xargs -n 1 CMD` do). Up to N commands (default 2) run at
 * once. Every child is started with posix_spawnp() into a process group of its
 * own, stdin /dev/null, stdout and stderr each on a pipe of their own, no
 * other fd, default signal dispositions and an empty signal mask (what concur
 * does); the loop is one epoll over each child's pidfd and its two
 * pipes, and a child is reaped with waitpid() once its pidfd is readable.
 *
 *   default  output is copied to our stdout/stderr as it arrives (ungrouped);
 *   -g       grouped: each command's stdout and stderr are collected in memory
 *            and written when it is over (stdout, then stderr), as concur's
 *            and GNU parallel's default grouping does.
 *
 * Exit status 0 when every command exited 0, 1 otherwise, 2 on a usage or
 * system error. Linux only (pidfd_open: 5.3+; glibc 2.34+ for
 * posix_spawn_file_actions_addclosefrom_np).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

enum { EV_PIDFD = 0, EV_OUT = 1, EV_ERR = 2 };

typedef struct {
  char *data;
  size_t len, cap;
} buf_t;

typedef struct {
  bool busy;
  pid_t pid;
  int pidfd;    /* -1 once reaped */
  int fd[3];    /* [EV_OUT], [EV_ERR]: read ends, -1 at EOF */
  buf_t buf[3]; /* grouped mode: [EV_OUT], [EV_ERR] */
} slot_t;

static bool grouped;
static sigset_t no_signals, all_signals;
static int epfd;
static int failures;

static void die(const char *what) {
  fprintf(stderr, "floor_spawn: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("write");
    }
    p += w;
    n -= (size_t)w;
  }
}

static void buf_append(buf_t *b, const char *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + n) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) die("realloc");
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

static void watch(int fd, size_t slot, int kind) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)slot * 4 + (uint64_t)kind};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

/* Starts CMD... LINE in slot s. */
static void spawn(slot_t *s, size_t idx, char **argv) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) die("pipe2");
  /* Only our read ends are non-blocking; the child's write ends stay blocking. */
  if (fcntl(out[0], F_SETFL, O_NONBLOCK) < 0 || fcntl(err[0], F_SETFL, O_NONBLOCK) < 0)
    die("fcntl");

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1); /* dup2 clears FD_CLOEXEC */
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  /* Only fds 0-2 reach the child. Our other fds are close-on-exec anyway, but
   * closing them in the child before execve (close_range) made -j 50 runs
   * ~20% faster on the bench VM, and it is what concur does. */
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  posix_spawnattr_init(&attr);
  /* Own process group; every signal at its default and none blocked. Setting
   * them all (SETSIGDEF with the full set) also spares glibc's child from
   * querying each signal's disposition while we wait for its exec (~60 fewer
   * syscalls in the window where the parent is suspended). */
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &no_signals);
  posix_spawnattr_setsigdefault(&attr, &all_signals);
  int rc = posix_spawnp(&s->pid, argv[0], &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    errno = rc;
    die(argv[0]);
  }
  close(out[1]);
  close(err[1]);

  s->pidfd = (int)syscall(SYS_pidfd_open, s->pid, 0);
  if (s->pidfd < 0) die("pidfd_open");
  s->fd[EV_OUT] = out[0];
  s->fd[EV_ERR] = err[0];
  s->busy = true;
  watch(s->pidfd, idx, EV_PIDFD);
  watch(out[0], idx, EV_OUT);
  watch(err[0], idx, EV_ERR);
}

/* Drains one pipe; closes it at EOF. */
static void drain(slot_t *s, int kind) {
  static char chunk[65536];
  for (;;) {
    ssize_t n = read(s->fd[kind], chunk, sizeof chunk);
    if (n > 0) {
      if (grouped)
        buf_append(&s->buf[kind], chunk, (size_t)n);
      else
        write_all(kind == EV_OUT ? 1 : 2, chunk, (size_t)n);
      if ((size_t)n < sizeof chunk) return; /* most likely empty now; epoll says if not */
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    if (n < 0) die("read");
    close(s->fd[kind]); /* also removes it from the epoll set */
    s->fd[kind] = -1;
    return;
  }
}

/* Returns true when the job in s is over (reaped, both pipes at EOF); writes its
 * output in grouped mode. */
static bool finish_if_done(slot_t *s) {
  if (s->pidfd >= 0 || s->fd[EV_OUT] >= 0 || s->fd[EV_ERR] >= 0) return false;
  if (grouped) {
    for (int k = EV_OUT; k <= EV_ERR; k++) {
      write_all(k == EV_OUT ? 1 : 2, s->buf[k].data, s->buf[k].len);
      s->buf[k].len = 0;
      if (s->buf[k].cap > (1u << 20)) { /* keep memory flat between big jobs */
        free(s->buf[k].data);
        s->buf[k] = (buf_t){0};
      }
    }
  }
  s->busy = false;
  return true;
}

int main(int argc, char **argv) {
  int jobs = 2, opt;
  while ((opt = getopt(argc, argv, "+j:g")) != -1) {
    if (opt == 'j') jobs = atoi(optarg);
    else if (opt == 'g') grouped = true;
    else jobs = 0;
  }
  if (jobs < 1 || optind >= argc) {
    fprintf(stderr, "usage: floor_spawn [-j N] [-g] CMD [ARG...] < lines\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&no_signals);
  sigfillset(&all_signals);

  /* argv of a command: CMD ARG... LINE NULL; the LINE slot is filled per job. */
  int nfixed = argc - optind;
  char **cargv = calloc((size_t)nfixed + 2, sizeof *cargv);
  slot_t *slots = calloc((size_t)jobs, sizeof *slots);
  struct epoll_event *evs = calloc((size_t)jobs * 3, sizeof *evs);
  if (!cargv || !slots || !evs) die("calloc");
  memcpy(cargv, argv + optind, (size_t)nfixed * sizeof *cargv);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");

  char *line = NULL;
  size_t linecap = 0;
  bool more = true;
  int running = 0;
  for (;;) {
    /* Fill the free slots. */
    for (size_t i = 0; more && running < jobs && i < (size_t)jobs; i++) {
      if (slots[i].busy) continue;
      ssize_t n = getline(&line, &linecap, stdin);
      if (n < 0) {
        more = false;
        break;
      }
      if (n > 0 && line[n - 1] == '\n') line[n - 1] = '\0';
      cargv[nfixed] = line;
      spawn(&slots[i], i, cargv);
      running++;
    }
    if (running == 0) break;

    int n = epoll_wait(epfd, evs, jobs * 3, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int e = 0; e < n; e++) {
      size_t idx = (size_t)(evs[e].data.u64 / 4);
      int kind = (int)(evs[e].data.u64 % 4);
      slot_t *s = &slots[idx];
      if (!s->busy) continue;
      if (kind == EV_PIDFD) {
        if (s->pidfd < 0) continue;
        int status;
        while (waitpid(s->pid, &status, 0) < 0)
          if (errno != EINTR) die("waitpid");
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failures++;
        close(s->pidfd);
        s->pidfd = -1;
      } else {
        if (s->fd[kind] < 0) continue;
        drain(s, kind);
      }
      if (finish_if_done(s)) running--;
    }
  }
  free(line);
  return failures ? 1 : 0;
}
