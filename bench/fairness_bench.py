"""Metric 10: fairness between a stream of tasks in one loop and a waiter in another process.

Ten tasks of one event loop take one ``aplock.AsyncLock`` in turn, as fast as they can
(one checkpoint inside), so the lock mostly passes from task to task in the loop. A
forked process meanwhile acquires the same lock again and again (``Lock.acquire`` with
a timeout, a short pause between). Reported: how long its acquisitions waited (median
and worst), how many timed out (must be 0), and the stream's rate. The in-loop handoff
is bounded (at most 64 in a row, none after 1 ms of them), so the other process gets
the lock within about a millisecond plus the time to wake it.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.lowlevel

import aplock

from ._async_peers import run
from ._core import Case, Field, Metric, Mode, Rows, Target, value_target
from ._measure import FORK, forked, median, percentile

NAME = "fairness"
BACKENDS = ("asyncio", "trio")
TASKS = 10
#: The other process's acquisitions per run, the pause between them, and its patience.
ACQUISITIONS, PAUSE, TIMEOUT = 200, 0.002, 5.0
#: The worst wait of the other process that the target allows, in milliseconds.
WORST_MS = 100.0


def cases(mode: Mode) -> list[Case]:
    acquisitions = 20 if mode.name == "smoke" else ACQUISITIONS
    return [Case(NAME, "aplock", backend, {"acquisitions": acquisitions}) for backend in BACKENDS]


def _waiter(name: str, acquisitions: int, go: Any, out: Any) -> None:
    """The other process: acquire and release *acquisitions* times; put the waits."""
    lock = aplock.Lock(name)
    go.wait(60)
    waits = []
    for _ in range(acquisitions):
        start = time.perf_counter()
        got = lock.acquire(timeout=TIMEOUT)
        waits.append((time.perf_counter() - start) * 1000 if got else -1.0)
        if got:
            lock.release()
        time.sleep(PAUSE)
    out.put(waits)


def measure(case: Case, tag: str) -> dict[str, float]:
    name = f"bench.fairness.{tag}"
    acquisitions = int(case.params["acquisitions"])
    go, out = FORK.Event(), FORK.Queue()
    try:
        with forked(_waiter, [(name, acquisitions, go, out)]):

            async def main() -> tuple[int, float, list[float]]:
                alock = aplock.AsyncLock(name)
                entries = 0
                result: list[list[float]] = []

                async def task() -> None:
                    nonlocal entries
                    while not result:
                        async with alock:
                            entries += 1
                            await anyio.lowlevel.checkpoint()

                async def collect() -> None:
                    while out.empty():
                        await anyio.sleep(0.01)
                    result.append(out.get(timeout=10))

                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(collect)
                    for _ in range(TASKS):
                        tg.start_soon(task)
                    go.set()
                return entries, time.perf_counter() - start, result[0]

            entries, seconds, waits = run(case.variant, main)
    finally:
        aplock.unlink(name)
    done = [w for w in waits if w >= 0]
    return {
        "waiter_median_ms": median(done) if done else float("nan"),
        "waiter_p99_ms": percentile(done, 99) if done else float("nan"),
        "waiter_worst_ms": max(done, default=float("nan")),
        "timeouts": float(len(waits) - len(done)),
        "stream_per_ms": entries / (seconds * 1000),
    }


def targets(rows: Rows) -> list[Target]:
    out = []
    for backend in BACKENDS:
        out.append(
            value_target(
                rows,
                NAME,
                f"other process beside a {backend} stream: worst wait <= {WORST_MS:.0f} ms",
                backend,
                "aplock",
                "waiter_worst_ms",
                at_most=WORST_MS,
                fmt=".1f",
            )
        )
        out.append(
            value_target(
                rows,
                NAME,
                f"other process beside a {backend} stream: no timeout",
                backend,
                "aplock",
                "timeouts",
                at_most=0,
                fmt=".0f",
            )
        )
    return out


METRIC = Metric(
    name=NAME,
    title="10. Fairness: a waiter in another process beside a stream of tasks in one loop",
    fields=(
        Field("waiter_median_ms", "waiter median ms", ".2f"),
        Field("waiter_p99_ms", "waiter p99 ms", ".2f"),
        Field("waiter_worst_ms", "waiter worst ms", ".1f", agg="max"),
        Field("timeouts", "timeouts", agg="sum"),
        Field("stream_per_ms", "stream acquisitions/ms", ".1f"),
    ),
    higher_is_better=False,
    cases=cases,
    measure=measure,
    targets=targets,
    show_ratio=False,
    notes=(
        f"{TASKS} tasks in one loop; the other process acquires {ACQUISITIONS} times "
        f"({PAUSE * 1000:.0f} ms apart, {TIMEOUT:.0f} s timeout)",
    ),
)
