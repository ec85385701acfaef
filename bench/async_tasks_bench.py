"""Metric 6: 100 tasks x 10 acquisitions of one lock in one process.

Each task enters ``async with lock:`` ten times and yields to the event loop once
inside, so the other tasks find the lock held and wait. Reported: the time for all
1,000 acquisitions, the threads started and the peak of extra live threads, and the
number of times two tasks were inside at once (must be 0). aplock hands the lock from
task to task in the loop (bounded); the target is at most 3x ``anyio.Lock``.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import anyio.lowlevel

from ._async_peers import BACKENDS, NOTES, PEERS, ThreadCount, run
from ._core import Case, Field, Metric, Mode, Rows, Target, ratio_target, value_target
from ._measure import median, workdir

NAME = "async_tasks"
TASKS, ACQUISITIONS = 100, 10
NAIVE = ("to_thread", "anyio.to_thread")
#: How far above anyio.Lock (the in-process floor) aplock may be: handoffs between the
#: tasks of one loop stay in the loop, bounded (see docs/concepts.md).
FLOOR_RATIO = 3.0
#: The loops that target holds on (uvloop's anyio.Lock is faster still; reported only).
FLOOR_BACKENDS = ("asyncio", "trio")


def cases(mode: Mode) -> list[Case]:
    tasks, acquisitions = (20, 5) if mode.name == "smoke" else (TASKS, ACQUISITIONS)
    runs = 1 if mode.name != "full" else 3
    return [
        Case(
            NAME,
            key,
            backend,
            {
                # A polling peer takes seconds per run: one run per process is enough.
                "runs": 1 if peer.polls else runs,
                "tasks": tasks,
                "acquisitions": acquisitions,
            },
        )
        for backend in BACKENDS
        for key, peer in PEERS.items()
        if backend in peer.backends
    ]


def measure(case: Case, tag: str) -> dict[str, float]:
    peer = PEERS[case.peer]
    runs = int(case.params["runs"])
    tasks, acquisitions = int(case.params["tasks"]), int(case.params["acquisitions"])
    threads = ThreadCount()
    overlaps = 0
    with workdir(tag) as tmp:
        ctx = peer.prepare(tag, tmp)
        try:

            async def once() -> float:
                nonlocal overlaps
                inside = 0

                async def task(lock: Any) -> None:
                    nonlocal inside, overlaps
                    for _ in range(acquisitions):
                        async with lock:
                            inside += 1
                            overlaps += inside > 1
                            await anyio.lowlevel.checkpoint()
                            inside -= 1

                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(tasks):
                        tg.start_soon(task, peer.make(ctx))
                return (time.perf_counter() - start) * 1000

            async def main() -> list[float]:
                return [await once() for _ in range(runs)]

            samples: list[float] = run(case.variant, main)
        finally:
            peer.cleanup(ctx)
    return {
        "ms": median(samples),
        "threads_started": float(threads.started),
        "peak_extra_threads": float(threads.peak),
        "overlaps": float(overlaps),
    }


def targets(rows: Rows) -> list[Target]:
    out = []
    for backend in BACKENDS:
        out.append(
            value_target(
                rows,
                NAME,
                f"100x10 tasks ({backend}): at most 1 extra thread",
                backend,
                "aplock",
                "peak_extra_threads",
                at_most=1,
                fmt=".0f",
            )
        )
        if backend in FLOOR_BACKENDS:
            out.append(
                ratio_target(
                    rows,
                    NAME,
                    f"100x10 tasks ({backend}): at most {FLOOR_RATIO:.0f}x anyio.Lock",
                    backend,
                    "anyio.Lock",
                    "ms",
                    at_most=FLOOR_RATIO,
                )
            )
        naives = [n for n in NAIVE if (backend, n) in rows]
        # The faster naive design on this backend is the one to beat.
        naive = min(naives, key=lambda n: rows[(backend, n)]["ms"], default=NAIVE[-1])
        out.append(
            ratio_target(
                rows,
                NAME,
                f"100x10 tasks ({backend}): no slower than {naive}",
                backend,
                naive,
                "ms",
                at_most=1.0,
            )
        )
    return out


METRIC = Metric(
    name=NAME,
    title="6. 100 tasks x 10 acquisitions of one lock in one process (ms, lower is better)",
    fields=(
        Field("ms", "ms", ".1f"),
        Field("threads_started", "threads started", agg="max"),
        Field("peak_extra_threads", "peak extra threads", agg="max"),
        Field("overlaps", "overlaps", agg="sum"),
    ),
    higher_is_better=False,
    cases=cases,
    measure=measure,
    targets=targets,
    notes=(*NOTES, f"{TASKS} tasks x {ACQUISITIONS} acquisitions (20 x 5 with --smoke)"),
)
