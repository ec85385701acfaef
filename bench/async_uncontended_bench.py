"""Metric 5: an uncontended ``async with lock: pass`` on asyncio, uvloop and Trio, in us.

Also counts the threads started during the run: a free lock must need none.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from ._async_peers import BACKENDS, NOTES, PEERS, ThreadCount, run
from ._core import Case, Field, Metric, Mode, Rows, Target, ratio_target, value_target
from ._measure import median, workdir

NAME = "async_uncontended"


def cases(mode: Mode) -> list[Case]:
    params = {"batch_seconds": mode.batch_seconds, "batches": mode.batches}
    return [
        Case(NAME, key, backend, params)
        for backend in BACKENDS
        for key, peer in PEERS.items()
        if backend in peer.backends
    ]


def measure(case: Case, tag: str) -> dict[str, float]:
    peer = PEERS[case.peer]
    batch_seconds = float(case.params["batch_seconds"])
    batches = int(case.params["batches"])
    threads = ThreadCount()
    with workdir(tag) as tmp:
        ctx = peer.prepare(tag, tmp)
        try:

            async def main() -> list[float]:
                lock: Any = peer.make(ctx)

                async def loop(n: int) -> float:
                    start = time.perf_counter_ns()
                    for _ in range(n):
                        async with lock:
                            pass
                    return (time.perf_counter_ns() - start) / 1000 / n

                n = 16
                while await loop(n) * n < batch_seconds * 1e6 / 4 and n < 1 << 22:
                    n *= 4
                n = max(1, int(n * batch_seconds * 1e6 / max(await loop(n) * n, 1.0)))
                gc.disable()
                try:
                    return [await loop(n) for _ in range(batches)]
                finally:
                    gc.enable()

            samples: list[float] = run(case.variant, main)
        finally:
            peer.cleanup(ctx)
    return {
        "us_per_op": median(samples),
        "threads_started": float(threads.started),
    }


def targets(rows: Rows) -> list[Target]:
    out = []
    for backend in BACKENDS:
        out.append(
            ratio_target(
                rows,
                NAME,
                f"async uncontended ({backend}) <= 1.5x anyio.Lock",
                backend,
                "anyio.Lock",
                "us_per_op",
                at_most=1.5,
            )
        )
        out.append(
            value_target(
                rows,
                NAME,
                f"async uncontended ({backend}): no thread started",
                backend,
                "aplock",
                "threads_started",
                at_most=0,
                fmt=".0f",
            )
        )
    return out


METRIC = Metric(
    name=NAME,
    title="5. Async uncontended `async with lock: pass` (us per op, lower is better)",
    fields=(
        Field("us_per_op", "us/op", ".2f"),
        Field("threads_started", "threads started", agg="max"),
    ),
    higher_is_better=False,
    cases=cases,
    measure=measure,
    targets=targets,
    notes=NOTES,
)
