// oneTBB peer for the tp_* benchmarks. Usage: peer_tbb BENCH
// Prints "RESULT <bench> tbb <metric> <value> <unit>" lines (see bench/README.md).
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "bench_util.h"

namespace {

const char *const kSystem = "tbb";

// tp_throughput: 1,000,000 empty tasks, run() one by one, then one wait().
// One warm-up pass of 100,000 tasks, then the median of 3 timed passes.
void tp_throughput() {
  const int n = 1000000;
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism, BENCH_WORKERS);
  tbb::task_group g;
  for (int i = 0; i < n / 10; i++) g.run([] {});
  g.wait();
  uint64_t t[3];
  for (auto &ti : t) {
    uint64_t t0 = bench_now_ns();
    for (int i = 0; i < n; i++) g.run([] {});
    g.wait();
    ti = bench_now_ns() - t0;
  }
  bench_result("tp_throughput", kSystem, "ns_per_task", bench_median_u64(t, 3) / n, "ns");
}

// tp_map: out[i] = in[i]*2+1 over 10,000,000 ints, tbb::parallel_for over a
// blocked_range with the default (auto) partitioner, which does the chunking.
// A pass takes a few ms, so: 3 warm-up passes (the first also faults the output
// pages in), then the median of 9 timed passes.
void tp_map() {
  const size_t n = 10000000;
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism, BENCH_WORKERS);
  std::vector<int> in(n), out(n);
  for (size_t i = 0; i < n; i++) in[i] = (int)i;
  auto pass = [&] {
    tbb::parallel_for(tbb::blocked_range<size_t>(0, n), [&](const tbb::blocked_range<size_t> &r) {
      for (size_t i = r.begin(); i != r.end(); ++i) out[i] = in[i] * 2 + 1;
    });
  };
  for (int k = 0; k < 3; k++) pass();
  uint64_t t[9];
  for (auto &ti : t) {
    uint64_t t0 = bench_now_ns();
    pass();
    ti = bench_now_ns() - t0;
  }
  for (size_t i = 0; i < n; i += 9973)
    if (out[i] != (int)i * 2 + 1) { fprintf(stderr, "tp_map: wrong result at %zu\n", i); exit(1); }
  bench_result("tp_map", kSystem, "ns_per_element", bench_median_u64(t, 9) / n, "ns");
}

// tp_latency: one task_group reused; each round trip is run() of one task that
// produces a value, then wait(). Note: task_group::wait() lets the calling
// thread execute its own queued task, so this mostly measures run()+wait()
// overhead with the task executed inline, not a hand-off to a worker thread.
// That is what a TBB user gets for "submit one task and wait for it".
// 1,000 warm-up round trips, then the median of 10,000.
void tp_latency() {
  const int warm = 1000, n = 10000;
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism, BENCH_WORKERS);
  tbb::task_group g;
  std::vector<uint64_t> t(n);
  volatile int r = 0;
  for (int i = -warm; i < n; i++) {
    uint64_t t0 = bench_now_ns();
    g.run([&r, i] { r = i * 2 + 1; });
    g.wait();
    uint64_t dt = bench_now_ns() - t0;
    if (r != i * 2 + 1) { fprintf(stderr, "tp_latency: wrong result\n"); exit(1); }
    if (i >= 0) t[i] = dt;
  }
  bench_result("tp_latency", kSystem, "median_us", bench_median_u64(t.data(), n) / 1000.0, "us");
}

// tp_memory: one worker (max_allowed_parallelism 2 = the main thread + 1
// worker) is blocked inside a first task spinning on an atomic gate; then
// 1,000,000 empty tasks are run() and stay pending. RSS growth / 1,000,000.
void tp_memory() {
  const long n = 1000000;
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism, 2);
  tbb::task_group g;
  for (int i = 0; i < 1000; i++) g.run([] {});  // start the worker thread
  g.wait();
  std::atomic<bool> started{false}, gate{false};
  g.run([&] {
    started.store(true);
    while (!gate.load(std::memory_order_acquire)) std::this_thread::yield();
  });
  while (!started.load()) std::this_thread::yield();  // the worker stole the gate task
  long rss0 = bench_rss_bytes();
  for (long i = 0; i < n; i++) g.run([] {});
  long rss1 = bench_rss_bytes();
  gate.store(true, std::memory_order_release);
  g.wait();
  bench_result("tp_memory", kSystem, "bytes_per_pending", (double)(rss1 - rss0) / n, "bytes");
}

}  // namespace

int main(int argc, char **argv) {
  const char *b = argc > 1 ? argv[1] : "";
  if (!strcmp(b, "tp_throughput")) tp_throughput();
  else if (!strcmp(b, "tp_map")) tp_map();
  else if (!strcmp(b, "tp_latency")) tp_latency();
  else if (!strcmp(b, "tp_memory")) tp_memory();
  else { bench_usage(argv[0], "tp_throughput tp_map tp_latency tp_memory"); return 2; }
  return 0;
}
