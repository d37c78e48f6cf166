/* OpenMP peer for the tp_* benchmarks. Usage: peer_omp BENCH
 * Prints "RESULT <bench> openmp <metric> <value> <unit>" lines (see bench/README.md).
 * No tp_memory: OpenMP has no way to keep 1,000,000 tasks pending (libgomp
 * runs a new task immediately in the creating thread once about 64 tasks per
 * thread are queued), so the measurement would not mean the same thing. */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

static const char *const SYSTEM = "openmp";

/* 1,000,000 empty tasks created one by one by a single thread of a
 * BENCH_WORKERS-thread team, then one taskwait. Timed inside the single (the
 * team is already running). Note: libgomp throttles task creation; once the
 * queue holds 64 tasks per thread, further tasks run immediately in the
 * producer, so many of the tasks are executed inline. One warm-up pass of
 * 100,000 tasks, then the median of 3 timed passes. */
static void tp_throughput(void) {
  const int n = 1000000;
  uint64_t t[3];
#pragma omp parallel num_threads(BENCH_WORKERS)
#pragma omp single
  {
    for (int i = 0; i < n / 10; i++) {
#pragma omp task
      { __asm__ volatile("" ::: "memory"); }
    }
#pragma omp taskwait
    for (int k = 0; k < 3; k++) {
      uint64_t t0 = bench_now_ns();
      for (int i = 0; i < n; i++) {
#pragma omp task
        { __asm__ volatile("" ::: "memory"); }
      }
#pragma omp taskwait
      t[k] = bench_now_ns() - t0;
    }
  }
  bench_result("tp_throughput", SYSTEM, "ns_per_task", bench_median_u64(t, 3) / n, "ns");
}

/* out[i] = in[i]*2+1 over 10,000,000 ints with a plain "parallel for" (the
 * common idiom; default schedule: static, one contiguous chunk per thread, so
 * a thread that is descheduled or woken late delays the whole pass; TBB's
 * auto partitioner balances dynamically). A pass takes a few ms, so: 3
 * warm-up passes (the first also faults the output pages in), then the median
 * of 9 timed passes; each timed pass includes entering the parallel region
 * (libgomp keeps its threads between regions). */
static void tp_map(void) {
  const long n = 10000000;
  int *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
  if (!in || !out) { perror("malloc"); exit(1); }
  for (long i = 0; i < n; i++) in[i] = (int)i;
  uint64_t t[12];
  for (int k = 0; k < 12; k++) {
    uint64_t t0 = bench_now_ns();
#pragma omp parallel for num_threads(BENCH_WORKERS)
    for (long i = 0; i < n; i++) out[i] = in[i] * 2 + 1;
    t[k] = bench_now_ns() - t0;
  }
  for (long i = 0; i < n; i += 9973)
    if (out[i] != (int)i * 2 + 1) { fprintf(stderr, "tp_map: wrong result at %ld\n", i); exit(1); }
  bench_result("tp_map", SYSTEM, "ns_per_element", bench_median_u64(t + 3, 9) / n, "ns");
  free(in);
  free(out);
}

/* Round trip of one task on an already running team. The team (BENCH_WORKERS
 * threads) is created once; one thread (inside "single") does, per round trip,
 * "task" (computes a value) + "taskwait"; the other threads wait at the
 * single's implicit barrier, which is a task scheduling point, so they are an
 * idle-but-active pool ready to pick the task up. As with TBB, taskwait may
 * run the still-queued child task in the waiting thread itself, so most round
 * trips are a task create + inline run, not a hand-off. We did not use a
 * "parallel + single + task + taskwait" per round trip: that measures the
 * fork/join of a team (a barrier and a team wake-up) more than the task.
 * 1,000 warm-up round trips, then the median of 10,000. */
static void tp_latency(void) {
  enum { WARM = 1000, N = 10000 };
  static uint64_t t[N];
  int bad = 0;
#pragma omp parallel num_threads(BENCH_WORKERS)
#pragma omp single
  {
    for (int i = -WARM; i < N; i++) {
      int r = 0;
      uint64_t t0 = bench_now_ns();
#pragma omp task shared(r) firstprivate(i)
      r = i * 2 + 1;
#pragma omp taskwait
      uint64_t dt = bench_now_ns() - t0;
      if (r != i * 2 + 1) bad = 1;
      if (i >= 0) t[i] = dt;
    }
  }
  if (bad) { fprintf(stderr, "tp_latency: wrong result\n"); exit(1); }
  bench_result("tp_latency", SYSTEM, "median_us", bench_median_u64(t, N) / 1000.0, "us");
}

int main(int argc, char **argv) {
  const char *b = argc > 1 ? argv[1] : "";
  if (!strcmp(b, "tp_throughput")) tp_throughput();
  else if (!strcmp(b, "tp_map")) tp_map();
  else if (!strcmp(b, "tp_latency")) tp_latency();
  else { bench_usage(argv[0], "tp_throughput tp_map tp_latency"); return 2; }
  return 0;
}
