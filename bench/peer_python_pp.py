#!/usr/bin/env python3
"""Python peers for the pp_* benchmarks (process pools).

Usage: peer_python_pp.py BENCH SYSTEM
  SYSTEM python_pool: multiprocessing.Pool(2)
  SYSTEM python_ppe:  concurrent.futures.ProcessPoolExecutor(2)
Prints "RESULT <bench> <system> <metric> <value> <unit>" (see bench/README.md).
Both use the platform's default start method (fork on Linux, as concur's
workers are forks). Sizes are smaller than concur's where noted (figures are
rates or medians, so they compare directly).
"""
import concurrent.futures as cf
import multiprocessing as mp
import statistics
import sys
import time

WORKERS = 2  # same as BENCH_WORKERS in bench_util.h


def result(bench, system, metric, value, unit):
    fmt = "%.3f" if value < 10 else "%.1f"
    print(f"RESULT {bench} {system} {metric} {fmt % value} {unit}", flush=True)


def twice_plus_one(x):
    """The tiny task (concur's twice_plus_one)."""
    return x * 2 + 1


def check(rs, n):
    assert len(rs) == n and all(r == i * 2 + 1 for i, r in zip(range(n), rs))


def pp_throughput(system):
    """Tiny tasks, one per item: Pool.map(chunksize=1) over 50,000 items, or
    ProcessPoolExecutor.submit x 20,000 then wait on every future. A warm-up
    pass of 1/10 the size, then the median of 3 passes."""
    if system == "python_pool":
        n = 50_000
        with mp.Pool(WORKERS) as pool:
            def run(n):
                check(pool.map(twice_plus_one, range(n), chunksize=1), n)
            times = passes(run, n)
    else:
        n = 20_000
        with cf.ProcessPoolExecutor(WORKERS) as ex:
            def run(n):
                fs = [ex.submit(twice_plus_one, i) for i in range(n)]
                cf.wait(fs)
                check([f.result() for f in fs], n)
            times = passes(run, n)
    result("pp_throughput", system, "tasks_per_s", n / (statistics.median(times) / 1e9), "tasks/s")


def passes(run, n, k=3):
    run(n // 10)
    times = []
    for _ in range(k):
        t0 = time.perf_counter_ns()
        run(n)
        times.append(time.perf_counter_ns() - t0)
    return times


def pp_map(system):
    """x -> 2x+1 over 2,000,000 ints in chunks of 10,000 (Pool.map(chunksize=),
    ProcessPoolExecutor.map(chunksize=)), the results gathered in one list.
    One warm-up pass, then the median of 5."""
    n, chunk = 2_000_000, 10_000
    data = range(n)
    if system == "python_pool":
        with mp.Pool(WORKERS) as pool:
            def run(_):
                out = pool.map(twice_plus_one, data, chunksize=chunk)
                assert len(out) == n and out[123457] == 123457 * 2 + 1
            times = passes(run, n, 5)
    else:
        with cf.ProcessPoolExecutor(WORKERS) as ex:
            def run(_):
                out = list(ex.map(twice_plus_one, data, chunksize=chunk))
                assert len(out) == n and out[123457] == 123457 * 2 + 1
            times = passes(run, n, 5)
    result("pp_map", system, "elements_per_s", n / (statistics.median(times) / 1e9), "elements/s")


def round_trips(system, bench, warm, n, sleep_s):
    """submit -> result of one tiny task: Pool.apply(f, (i,)) or
    ProcessPoolExecutor.submit(f, i).result(); sleep_s before each one."""
    times = []

    def measure(call):
        for i in range(-warm, n):
            if sleep_s:
                time.sleep(sleep_s)
            t0 = time.perf_counter_ns()
            r = call(i)
            dt = time.perf_counter_ns() - t0
            assert r == i * 2 + 1
            if i >= 0:
                times.append(dt)

    if system == "python_pool":
        with mp.Pool(WORKERS) as pool:
            measure(lambda i: pool.apply(twice_plus_one, (i,)))
    else:
        with cf.ProcessPoolExecutor(WORKERS) as ex:
            measure(lambda i: ex.submit(twice_plus_one, i).result())
    result(bench, system, "median_us", statistics.median(times) / 1000, "us")


def pp_latency(system):
    """Idle pool: 2 ms of sleep before each round trip; 100 warm-up, median of 1,000."""
    round_trips(system, "pp_latency", 100, 1000, 0.002)


def pp_latency_busy(system):
    """Busy pool: round trips back to back; 1,000 warm-up, median of 10,000."""
    round_trips(system, "pp_latency_busy", 1000, 10_000, 0)


def pp_startup(system):
    """Pool creation to the first result (Pool(2) + apply, or
    ProcessPoolExecutor(2) + submit().result()); the pool is then shut down
    (not timed). One warm-up pool, then the median of 20."""
    times = []
    for k in range(-1, 20):
        t0 = time.perf_counter_ns()
        if system == "python_pool":
            pool = mp.Pool(WORKERS)
            r = pool.apply(twice_plus_one, (k,))
            dt = time.perf_counter_ns() - t0
            pool.close()
            pool.join()
        else:
            ex = cf.ProcessPoolExecutor(WORKERS)
            r = ex.submit(twice_plus_one, k).result()
            dt = time.perf_counter_ns() - t0
            ex.shutdown(wait=True)
        assert r == k * 2 + 1
        if k >= 0:
            times.append(dt)
    result("pp_startup", system, "first_result_ms", statistics.median(times) / 1e6, "ms")


BENCHES = {"pp_throughput": pp_throughput, "pp_map": pp_map, "pp_latency": pp_latency,
           "pp_latency_busy": pp_latency_busy, "pp_startup": pp_startup}
SYSTEMS = ("python_pool", "python_ppe")

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in BENCHES or sys.argv[2] not in SYSTEMS:
        print(f"usage: {sys.argv[0]} BENCH SYSTEM   (BENCH: {' '.join(BENCHES)}; "
              f"SYSTEM: {' '.join(SYSTEMS)})", file=sys.stderr)
        sys.exit(2)
    BENCHES[sys.argv[1]](sys.argv[2])
