#!/usr/bin/env python3
"""Python peers for the co_* benchmarks: asyncio and gevent.

Usage: peer_python_co.py BENCH SYSTEM     (SYSTEM: asyncio | gevent)
Prints "RESULT <bench> <system> <metric> <value> <unit>" lines (see bench/README.md).
The same work as bench/concur_co.c, with smaller counts where Python is slow (per-item
figures are comparable): co_switch 200,000 yields per task, co_spawn 100,000 tasks,
co_sleep 100,000 tasks sleeping 1 s, co_pingpong 5,000 round trips. Run it with the
system's /usr/bin/python3 (Debian's python3-gevent).
"""
import resource
import socket
import sys
import time

SWITCHES = 200_000
SPAWNS = 100_000
SLEEPERS = 100_000
ROUNDS = 5_000


def result(bench, system, metric, value, unit):
    fmt = "%.3f" if value < 10 else "%.1f"
    print(f"RESULT {bench} {system} {metric} {fmt % value} {unit}", flush=True)


def peak_rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ---------------------------------------------------------------- asyncio

def asyncio_bench(bench):
    import asyncio

    async def yielder():
        for _ in range(SWITCHES):
            await asyncio.sleep(0)

    async def empty():
        pass

    async def sleeper():
        await asyncio.sleep(1)

    async def main():
        if bench == "co_switch":
            t0 = time.perf_counter()
            await asyncio.gather(yielder(), yielder())
            return (time.perf_counter() - t0) * 1e9 / (2 * SWITCHES)
        if bench == "co_spawn":
            t0 = time.perf_counter()
            for _ in range(SPAWNS // 1000):
                await asyncio.gather(*[asyncio.create_task(empty()) for _ in range(1000)])
            return (time.perf_counter() - t0) * 1e9 / SPAWNS
        if bench == "co_sleep":
            t0 = time.perf_counter()
            await asyncio.gather(*[asyncio.create_task(sleeper()) for _ in range(SLEEPERS)])
            return time.perf_counter() - t0
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        loop = asyncio.get_running_loop()

        async def side(s, first):
            for _ in range(ROUNDS):
                if first:
                    await loop.sock_sendall(s, b"x")
                await loop.sock_recv(s, 1)
                if not first:
                    await loop.sock_sendall(s, b"x")

        t0 = time.perf_counter()
        await asyncio.gather(side(a, True), side(b, False))
        return (time.perf_counter() - t0) * 1e6 / ROUNDS

    return asyncio.run(main())


# ---------------------------------------------------------------- gevent

def gevent_bench(bench):
    import gevent
    import gevent.socket

    def yielder():
        for _ in range(SWITCHES):
            gevent.sleep(0)

    def empty():
        pass

    if bench == "co_switch":
        t0 = time.perf_counter()
        gevent.joinall([gevent.spawn(yielder), gevent.spawn(yielder)])
        return (time.perf_counter() - t0) * 1e9 / (2 * SWITCHES)
    if bench == "co_spawn":
        t0 = time.perf_counter()
        for _ in range(SPAWNS // 1000):
            gevent.joinall([gevent.spawn(empty) for _ in range(1000)])
        return (time.perf_counter() - t0) * 1e9 / SPAWNS
    if bench == "co_sleep":
        t0 = time.perf_counter()
        gevent.joinall([gevent.spawn(gevent.sleep, 1) for _ in range(SLEEPERS)])
        return time.perf_counter() - t0
    a, b = gevent.socket.socketpair()

    def side(s, first):
        for _ in range(ROUNDS):
            if first:
                s.sendall(b"x")
            s.recv(1)
            if not first:
                s.sendall(b"x")

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(side, a, True), gevent.spawn(side, b, False)])
    return (time.perf_counter() - t0) * 1e6 / ROUNDS


METRICS = {"co_switch": ("ns_per_switch", "ns"), "co_spawn": ("ns_per_task", "ns"),
           "co_sleep": ("wall_s", "s"), "co_pingpong": ("us_per_rt", "us")}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in METRICS or sys.argv[2] not in ("asyncio", "gevent"):
        print(f"usage: {sys.argv[0]} BENCH asyncio|gevent   (BENCH: {' '.join(METRICS)})",
              file=sys.stderr)
        sys.exit(2)
    bench, system = sys.argv[1], sys.argv[2]
    if system == "gevent":
        try:
            import gevent  # noqa: F401
        except ImportError:
            print("SKIPPED gevent is not installed (Debian: python3-gevent)")
            sys.exit(0)
    value = (asyncio_bench if system == "asyncio" else gevent_bench)(bench)
    metric, unit = METRICS[bench]
    result(bench, system, metric, value, unit)
    if bench == "co_sleep":
        result(bench, system, "peak_rss_kib", peak_rss_kib(), "kib")
