#!/usr/bin/env python3
"""mpi4py.futures peer for the mpi_* benchmarks (bench/mpi.sh runs it as
`mpirun -n 3 python3 -m mpi4py.futures peer_python_mpi.py BENCH`: rank 0 runs this
script, ranks 1 and 2 serve as MPIPoolExecutor workers, as concur_mpi's ranks do).
The same work as concur_mpi.c; sizes are smaller where noted (the figures are rates or
medians, so they compare directly).
  mpi_throughput  submit x 5,000 tiny tasks, then wait on every future (warm-up 500,
                  median of 3)
  mpi_map         executor.map over 2,000,000 ints, chunksize 250,000 (median of 3)
  mpi_latency     submit(...).result() back to back: 100 warm-up, median of 1,000
"""
import statistics
import sys
import time

from mpi4py.futures import MPIPoolExecutor

SYSTEM = "mpi4py"


def result(bench, metric, value, unit):
    fmt = "%.3f" if value < 10 else "%.1f"
    print(f"RESULT {bench} {SYSTEM} {metric} {fmt % value} {unit}", flush=True)


def twice_plus_one(x):
    return x * 2 + 1


def median_ns(run, k=3):
    times = []
    for _ in range(k):
        t0 = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times)


def main():
    bench = sys.argv[1]
    with MPIPoolExecutor() as ex:
        if bench == "mpi_throughput":
            n = 5000

            def run(n=n):
                fs = [ex.submit(twice_plus_one, i) for i in range(n)]
                assert [f.result() for f in fs] == [i * 2 + 1 for i in range(n)]
            run(500)
            result(bench, "tasks_per_s", n / (median_ns(run) / 1e9), "tasks/s")
        elif bench == "mpi_map":
            n = 2_000_000

            def run():
                out = list(ex.map(twice_plus_one, range(n), chunksize=250_000))
                assert out[-1] == (n - 1) * 2 + 1
            run()
            result(bench, "elements_per_s", n / (median_ns(run) / 1e9), "elements/s")
        elif bench == "mpi_latency":
            ts = []
            for i in range(1100):
                t0 = time.perf_counter_ns()
                assert ex.submit(twice_plus_one, i).result() == i * 2 + 1
                if i >= 100:
                    ts.append(time.perf_counter_ns() - t0)
            result(bench, "median_us", statistics.median(ts) / 1000, "us")
        else:
            sys.exit(f"peer_python_mpi.py: unknown bench {bench}")


if __name__ == "__main__":
    main()
