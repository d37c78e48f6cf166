#!/usr/bin/env python3
"""Python peer for the tp_* benchmarks: concurrent.futures.ThreadPoolExecutor.

Usage: peer_python.py BENCH
Prints "RESULT <bench> python <metric> <value> <unit>" lines (see bench/README.md).
Sizes are 10x smaller than the C peers (per-item figures are comparable); the
GIL serialises the Python-level work, so the workers only overlap waits.
"""
import concurrent.futures as cf
import os
import statistics
import sys
import threading
import time

SYSTEM = "python"
WORKERS = 2  # same as BENCH_WORKERS in bench_util.h


def result(bench, metric, value, unit):
    fmt = "%.3f" if value < 10 else "%.1f"
    print(f"RESULT {bench} {SYSTEM} {metric} {fmt % value} {unit}", flush=True)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def noop():
    pass


def tp_throughput():
    """100,000 empty tasks submitted one by one, then wait() on all of them.
    One warm-up pass of 10,000, then the median of 3 timed passes."""
    n = 100_000
    with cf.ThreadPoolExecutor(WORKERS) as ex:
        cf.wait([ex.submit(noop) for _ in range(n // 10)])
        times = []
        for _ in range(3):
            t0 = time.perf_counter_ns()
            fs = [ex.submit(noop) for _ in range(n)]
            cf.wait(fs)
            times.append(time.perf_counter_ns() - t0)
    result("tp_throughput", "ns_per_task", statistics.median(times) / n, "ns")


def tp_map():
    """x -> x*2+1 over 1,000,000 ints with executor.map over chunks of 100,000
    (each task maps one chunk; the results are joined into one output list).
    One warm-up pass, then the median of 5 timed passes."""
    n, chunk = 1_000_000, 100_000
    data = list(range(n))
    chunks = [data[i:i + chunk] for i in range(0, n, chunk)]

    def f(c):
        return [x * 2 + 1 for x in c]

    times = []
    with cf.ThreadPoolExecutor(WORKERS) as ex:
        for k in range(6):
            t0 = time.perf_counter_ns()
            out = []
            for part in ex.map(f, chunks):
                out.extend(part)
            dt = time.perf_counter_ns() - t0
            if k:
                times.append(dt)
    assert len(out) == n and out[12345] == 12345 * 2 + 1
    result("tp_map", "ns_per_element", statistics.median(times) / n, "ns")


def tp_latency():
    """Round trip submit(f, i).result() on a running 2-worker pool.
    1,000 warm-up round trips, then the median of 10,000."""
    def f(i):
        return i * 2 + 1

    times = []
    with cf.ThreadPoolExecutor(WORKERS) as ex:
        for i in range(-1000, 10_000):
            t0 = time.perf_counter_ns()
            r = ex.submit(f, i).result()
            dt = time.perf_counter_ns() - t0
            assert r == i * 2 + 1
            if i >= 0:
                times.append(dt)
    result("tp_latency", "median_us", statistics.median(times) / 1000, "us")


def tp_memory():
    """A 1-worker pool is blocked on an Event by a first task; 100,000 empty
    tasks are then submitted (their futures kept in a preallocated list).
    RSS growth over the submissions / 100,000."""
    n = 100_000
    started, gate = threading.Event(), threading.Event()

    def blocker():
        started.set()
        gate.wait()

    with cf.ThreadPoolExecutor(1) as ex:
        ex.submit(noop).result()
        ex.submit(blocker)
        started.wait()
        fs = [None] * n
        rss0 = rss_bytes()
        for i in range(n):
            fs[i] = ex.submit(noop)
        rss1 = rss_bytes()
        gate.set()
        cf.wait(fs)
    result("tp_memory", "bytes_per_pending", (rss1 - rss0) / n, "bytes")


BENCHES = {"tp_throughput": tp_throughput, "tp_map": tp_map,
           "tp_latency": tp_latency, "tp_memory": tp_memory}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHES:
        print(f"usage: {sys.argv[0]} BENCH   (one of: {' '.join(BENCHES)})", file=sys.stderr)
        sys.exit(2)
    BENCHES[sys.argv[1]]()
