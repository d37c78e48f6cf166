/* libuv peer for the tp_* benchmarks. Usage: peer_uv BENCH
 * Prints "RESULT <bench> libuv <metric> <value> <unit>" lines (see bench/README.md).
 * The pool is libuv's threadpool (uv_queue_work); its size is fixed through
 * UV_THREADPOOL_SIZE, which this program sets itself before the pool starts
 * (BENCH_WORKERS threads; 1 for tp_memory). Completion callbacks run on the
 * loop (main) thread inside uv_run(). No tp_map: libuv has no parallel map. */
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bench_util.h"

static const char *const SYSTEM = "libuv";

static void set_pool_size(int n) {
  char buf[16];
  snprintf(buf, sizeof buf, "%d", n);
  setenv("UV_THREADPOOL_SIZE", buf, 1);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) { perror("malloc"); exit(1); }
  return p;
}

static long completed;

static void work_empty(uv_work_t *req) { (void)req; __asm__ volatile("" ::: "memory"); }

/* The caller owns the request: the idiomatic pattern is one malloc per
 * uv_queue_work() and free() in the after-work callback, which we time. */
static void after_count_free(uv_work_t *req, int status) {
  (void)status;
  completed++;
  free(req);
}

static void submit_empty(uv_loop_t *loop, long n) {
  for (long i = 0; i < n; i++) {
    uv_work_t *req = xmalloc(sizeof *req);
    if (uv_queue_work(loop, req, work_empty, after_count_free)) { fprintf(stderr, "uv_queue_work failed\n"); exit(1); }
  }
}

/* 1,000,000 empty uv_queue_work() calls (each with its malloc'd request), then
 * uv_run() until every after-work callback (which counts and frees) ran.
 * One warm-up pass of 100,000, then the median of 3 timed passes. */
static void tp_throughput(void) {
  const long n = 1000000;
  set_pool_size(BENCH_WORKERS);
  uv_loop_t *loop = uv_default_loop();
  submit_empty(loop, n / 10);
  uv_run(loop, UV_RUN_DEFAULT);
  uint64_t t[3];
  for (int k = 0; k < 3; k++) {
    completed = 0;
    uint64_t t0 = bench_now_ns();
    submit_empty(loop, n);
    uv_run(loop, UV_RUN_DEFAULT);
    t[k] = bench_now_ns() - t0;
    if (completed != n) { fprintf(stderr, "tp_throughput: %ld of %ld completed\n", completed, n); exit(1); }
  }
  bench_result("tp_throughput", SYSTEM, "ns_per_task", bench_median_u64(t, 3) / n, "ns");
}

struct rt { uv_work_t req; int in, out, got; };

static void work_double(uv_work_t *req) {
  struct rt *r = (struct rt *)req;
  r->out = r->in * 2 + 1;
}

static void after_rt(uv_work_t *req, int status) {
  (void)status;
  ((struct rt *)req)->got = ((struct rt *)req)->out;
}

/* One round trip = uv_queue_work() of a task computing a value + uv_run()
 * until its after-work callback delivered the value on the loop thread. The
 * threadpool threads stay alive between round trips (they sleep on a condition
 * variable when idle). 1,000 warm-up round trips, then the median of 10,000. */
static void tp_latency(void) {
  enum { WARM = 1000, N = 10000 };
  static uint64_t t[N];
  set_pool_size(BENCH_WORKERS);
  uv_loop_t *loop = uv_default_loop();
  struct rt r;
  for (int i = -WARM; i < N; i++) {
    r.in = i;
    r.got = -1;
    uint64_t t0 = bench_now_ns();
    uv_queue_work(loop, &r.req, work_double, after_rt);
    uv_run(loop, UV_RUN_DEFAULT);
    uint64_t dt = bench_now_ns() - t0;
    if (r.got != i * 2 + 1) { fprintf(stderr, "tp_latency: wrong result\n"); exit(1); }
    if (i >= 0) t[i] = dt;
  }
  bench_result("tp_latency", SYSTEM, "median_us", bench_median_u64(t, N) / 1000.0, "us");
}

static atomic_int gate_started;
static uv_sem_t gate;

static void work_gate(uv_work_t *req) {
  (void)req;
  atomic_store(&gate_started, 1);
  uv_sem_wait(&gate);
}

static void after_nothing(uv_work_t *req, int status) { (void)req; (void)status; }

/* A 1-thread pool is blocked by a first request waiting on a semaphore; then
 * 1,000,000 empty requests are queued, each malloc'd by the caller as libuv
 * requires (the request is the queue node, so libuv itself allocates nothing).
 * RSS growth over the submissions / 1,000,000. */
static void tp_memory(void) {
  const long n = 1000000;
  set_pool_size(1);
  uv_loop_t *loop = uv_default_loop();
  uv_work_t warm, blocker;
  uv_queue_work(loop, &warm, work_empty, after_nothing);  // starts the pool
  uv_run(loop, UV_RUN_DEFAULT);
  uv_sem_init(&gate, 0);
  uv_queue_work(loop, &blocker, work_gate, after_nothing);
  while (!atomic_load(&gate_started)) sched_yield();
  completed = 0;
  long rss0 = bench_rss_bytes();
  submit_empty(loop, n);
  long rss1 = bench_rss_bytes();
  uv_sem_post(&gate);
  uv_run(loop, UV_RUN_DEFAULT);
  if (completed != n) { fprintf(stderr, "tp_memory: %ld of %ld completed\n", completed, n); exit(1); }
  bench_result("tp_memory", SYSTEM, "bytes_per_pending", (double)(rss1 - rss0) / n, "bytes");
}

int main(int argc, char **argv) {
  const char *b = argc > 1 ? argv[1] : "";
  if (!strcmp(b, "tp_throughput")) tp_throughput();
  else if (!strcmp(b, "tp_latency")) tp_latency();
  else if (!strcmp(b, "tp_memory")) tp_memory();
  else { bench_usage(argv[0], "tp_throughput tp_latency tp_memory"); return 2; }
  uv_loop_close(uv_default_loop());
  return 0;
}
