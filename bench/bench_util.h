/* Small helpers shared by the benchmark programs (peers and concur_*.c).
 * Header-only; usable from C17 and C++17. Linux-specific (/proc/self/statm). */
#ifndef CONCUR_BENCH_UTIL_H
#define CONCUR_BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Every pool in the tp_* benches uses this many workers (the bench machine has
 * 2 cores). tp_memory uses a single (blocked) worker instead. */
#define BENCH_WORKERS 2

static inline uint64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Resident set size in bytes, from /proc/self/statm (field 2, pages). */
static inline long bench_rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, resident = 0;
  if (!f) return -1;
  if (fscanf(f, "%ld %ld", &size, &resident) != 2) resident = -1;
  fclose(f);
  return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

static inline int bench_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* Median of n samples; sorts the array in place. */
static inline double bench_median_u64(uint64_t *v, size_t n) {
  qsort(v, n, sizeof *v, bench_cmp_u64);
  return n % 2 ? (double)v[n / 2] : ((double)v[n / 2 - 1] + (double)v[n / 2]) / 2.0;
}

/* The one output format every bench program uses. */
static inline void bench_result(const char *bench, const char *system, const char *metric,
                                double value, const char *unit) {
  /* small values (e.g. sub-microsecond latencies) keep three decimals */
  printf(value < 10.0 ? "RESULT %s %s %s %.3f %s\n" : "RESULT %s %s %s %.1f %s\n", bench, system,
         metric, value, unit);
  fflush(stdout);
}

static inline void bench_usage(const char *prog, const char *benches) {
  fprintf(stderr, "usage: %s BENCH   (one of: %s)\n", prog, benches);
}

#endif
