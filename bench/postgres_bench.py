"""The PostgreSQL backend against raw advisory-lock statements on the same server.

Two metrics, each against the floor a hand-written client pays:

- **uncontended**: one ``acquire()`` + ``release()`` of a free lock, per pair, on one
  object (its session already open), for ``PgLock``, ``AsyncPgLock`` on asyncio
  (native) and on Trio (worker thread), against ``SELECT pg_advisory_lock(k)`` +
  ``SELECT pg_advisory_unlock(k)`` on one psycopg connection (sync and asyncio).
- **handoff**: two processes pass the lock back and forth; the holder waits until the
  other is parked in ``acquire()``, stamps the monotonic clock and releases; the
  waiter stamps it when ``acquire()`` returns. The difference is one handoff, which for
  the raw statements is PostgreSQL's own wake-up of a waiting backend plus one reply.

Run ``python bench/postgres_bench.py [--quick] [--json] [--dsn DSN]``. The server is
``--dsn``, else ``$APLOCK_TEST_POSTGRES``, else the loopback test server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from typing import Any

import anyio
import psycopg

from aplock.postgres import AsyncPgLock, PgLock, advisory_key

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
#: Seconds the holder waits before releasing, so that the waiter is parked in the server.
PARK = 0.005
IMPLS = ("raw", "PgLock", "raw async", "AsyncPgLock asyncio", "AsyncPgLock trio")
#: What each implementation's uncontended cost is compared with.
BASELINE = {
    "raw": "raw",
    "PgLock": "raw",
    "raw async": "raw async",
    "AsyncPgLock asyncio": "raw async",
    "AsyncPgLock trio": "raw",
}


# ---- uncontended ----------------------------------------------------------------------


def _per_pair(run_batch: Any, pairs: int, repeats: int) -> list[float]:
    """Seconds per acquire+release pair, one sample per repeat."""
    run_batch(max(pairs // 10, 1))  # warm up: connections, prepared statements
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_batch(pairs)
        samples.append((time.perf_counter() - start) / pairs)
    return samples


def uncontended_sync(impl: str, dsn: str, pairs: int, repeats: int) -> list[float]:
    name = f"bench.{uuid.uuid4().hex[:8]}"
    if impl == "raw":
        key = advisory_key(name)
        with psycopg.connect(dsn, autocommit=True) as conn:

            def raw_batch(n: int) -> None:
                for _ in range(n):
                    conn.execute("SELECT pg_advisory_lock(%s)", [key])
                    conn.execute("SELECT pg_advisory_unlock(%s)", [key])

            return _per_pair(raw_batch, pairs, repeats)
    lock = PgLock(name, dsn)
    acquire, release = lock.acquire, lock.release

    def batch(n: int) -> None:
        for _ in range(n):
            acquire()
            release()

    try:
        return _per_pair(batch, pairs, repeats)
    finally:
        lock.close()


async def _async_per_pair(run_batch: Any, pairs: int, repeats: int) -> list[float]:
    await run_batch(max(pairs // 10, 1))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        await run_batch(pairs)
        samples.append((time.perf_counter() - start) / pairs)
    return samples


def uncontended_async(impl: str, dsn: str, pairs: int, repeats: int) -> list[float]:
    name = f"bench.{uuid.uuid4().hex[:8]}"

    async def raw() -> list[float]:
        key = advisory_key(name)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:

            async def batch(n: int) -> None:
                for _ in range(n):
                    await conn.execute("SELECT pg_advisory_lock(%s)", [key])
                    await conn.execute("SELECT pg_advisory_unlock(%s)", [key])

            return await _async_per_pair(batch, pairs, repeats)

    async def ours() -> list[float]:
        lock = AsyncPgLock(name, dsn)

        async def batch(n: int) -> None:
            for _ in range(n):
                await lock.acquire()
                await lock.arelease()

        try:
            return await _async_per_pair(batch, pairs, repeats)
        finally:
            await lock.aclose()

    if impl == "raw async":
        return asyncio.run(raw())
    if impl == "AsyncPgLock asyncio":
        return asyncio.run(ours())
    return anyio.run(ours, backend="trio")


# ---- handoff ----------------------------------------------------------------------------


class _Raw:
    """``pg_advisory_lock`` / ``pg_advisory_unlock`` on one connection."""

    def __init__(self, name: str, dsn: str) -> None:
        self.key = advisory_key(name)
        self.conn = psycopg.connect(dsn, autocommit=True)

    def acquire(self) -> None:
        self.conn.execute("SELECT pg_advisory_lock(%s)", [self.key])

    def release(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", [self.key])

    def close(self) -> None:
        self.conn.close()


def _player(
    impl: str, dsn: str, name: str, me: int, rounds: int, conn: Any, stamp: Any, out: Any
) -> None:
    """One side of the ping-pong. Round *i* is released by player ``i % 2``."""
    lock: Any = _Raw(name, dsn) if impl == "raw" else PgLock(name, dsn)
    clock = time.perf_counter_ns  # CLOCK_MONOTONIC: one clock for every process
    if me == 0:
        lock.acquire()
        conn.send("ready")
    else:
        conn.recv()
    latencies = []
    for i in range(rounds):
        if i % 2 == me:  # hold, then release once the other is parked
            conn.recv()
            time.sleep(PARK)
            stamp.value = clock()
            lock.release()
            conn.recv()
        else:
            conn.send("waiting")
            lock.acquire()
            latencies.append((clock() - stamp.value) / 1e9)
            conn.send("got")
    if rounds % 2 == me:  # the last waiter holds it
        lock.release()
    lock.close()
    out.put(latencies)


async def _async_player_main(
    dsn: str, name: str, me: int, rounds: int, conn: Any, stamp: Any
) -> list[float]:
    lock = AsyncPgLock(name, dsn)
    clock = time.perf_counter_ns
    if me == 0:
        await lock.acquire()
        conn.send("ready")
    else:
        conn.recv()
    latencies = []
    for i in range(rounds):
        if i % 2 == me:
            conn.recv()
            await asyncio.sleep(PARK)
            stamp.value = clock()
            await lock.arelease()
            conn.recv()
        else:
            conn.send("waiting")
            await lock.acquire()
            latencies.append((clock() - stamp.value) / 1e9)
            conn.send("got")
    if rounds % 2 == me:
        await lock.arelease()
    await lock.aclose()
    return latencies


def _async_player(
    impl: str, dsn: str, name: str, me: int, rounds: int, conn: Any, stamp: Any, out: Any
) -> None:
    out.put(asyncio.run(_async_player_main(dsn, name, me, rounds, conn, stamp)))


def handoff(impl: str, dsn: str, rounds: int) -> list[float]:
    ctx = mp.get_context("spawn")
    name = f"bench.{uuid.uuid4().hex[:8]}"
    stamp = ctx.Value("q", 0, lock=False)
    out = ctx.Queue()
    ends = ctx.Pipe()
    target = _async_player if impl == "AsyncPgLock asyncio" else _player
    procs = [
        ctx.Process(target=target, args=(impl, dsn, name, me, rounds, ends[me], stamp, out))
        for me in (0, 1)
    ]
    for proc in procs:
        proc.start()
    try:
        latencies: list[float] = out.get(timeout=120) + out.get(timeout=120)
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return latencies


# ---- report ----------------------------------------------------------------------------


def run(dsn: str, *, quick: bool) -> dict[str, Any]:
    """Measure everything; returns ``{"server": ..., "results": [row, ...]}``."""
    pairs, repeats = (200, 3) if quick else (2000, 7)
    rounds = 20 if quick else 200
    rows: list[dict[str, Any]] = []
    for impl in IMPLS:
        if impl in ("raw", "PgLock"):
            samples = uncontended_sync(impl, dsn, pairs, repeats)
        else:
            samples = uncontended_async(impl, dsn, pairs, repeats)
        rows.append({"metric": "uncontended", "impl": impl, "samples": samples})
    for impl in ("raw", "PgLock", "AsyncPgLock asyncio"):
        rows.append({"metric": "handoff", "impl": impl, "samples": handoff(impl, dsn, rounds)})
    by_key = {(r["metric"], r["impl"]): r for r in rows}
    for row in rows:
        row["median_us"] = statistics.median(row["samples"]) * 1e6
        row["p90_us"] = _percentile(row["samples"], 0.9) * 1e6
        # A handoff's floor is the server's own wake-up: the same for every client.
        baseline = "raw" if row["metric"] == "handoff" else BASELINE[row["impl"]]
        base = by_key.get((row["metric"], baseline))
        row["baseline"] = baseline if base else None
        row["ratio"] = row["median_us"] / base["median_us"] if base else None
        del row["samples"]
    with psycopg.connect(dsn) as conn:
        version = conn.info.server_version
    return {
        "server": f"PostgreSQL {version // 10000}.{version % 10000}",
        "cpus": os.cpu_count(),
        "quick": quick,
        "results": rows,
    }


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    lines = [
        f"aplock.postgres on {report['server']}, {report['cpus']} CPUs"
        + (" (quick)" if report["quick"] else ""),
        f"{'metric':<12} {'implementation':<22} {'median us':>10} {'p90 us':>10}  vs baseline",
    ]
    for row in report["results"]:
        ratio = f"{row['ratio']:.2f}x {row['baseline']}" if row["ratio"] else ""
        lines.append(
            f"{row['metric']:<12} {row['impl']:<22} {row['median_us']:>10.1f} "
            f"{row['p90_us']:>10.1f}  {ratio}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few rounds (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--dsn", default=os.environ.get("APLOCK_TEST_POSTGRES", DEFAULT_DSN), help="server"
    )
    args = parser.parse_args(argv)
    report = run(args.dsn, quick=args.quick)
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
