"""``python -m aplock demo``: spawned processes and async tasks share one named lock.

Each participant increments a counter in a file with a deliberately non-atomic
read-sleep-write while holding the lock, and reports when it acquired and released.
The timeline printed at the end shows that no two critical sections overlapped and that
no increment was lost.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import anyio

from .aio import AsyncLock
from .sync import Lock, unlink

HOLD = 0.02


@dataclass(frozen=True)
class Event:
    """One line of the timeline."""

    t: float
    who: str
    what: str
    generation: int


def _bump(path: str) -> None:
    with open(path, "r+") as f:
        value = int(f.read() or 0)
        time.sleep(HOLD)  # widen the race window: without the lock, updates get lost
        f.seek(0)
        f.write(str(value + 1))
        f.truncate()


def _sync_worker(name: str, who: str, rounds: int, path: str, events: Any) -> None:
    lock = Lock(name)
    for _ in range(rounds):
        with lock:
            gen = lock.acquisition.generation if lock.acquisition else 0
            events.put(Event(time.time(), who, "acquired", gen))
            _bump(path)
            events.put(Event(time.time(), who, "released", gen))
        time.sleep(0.005)
    lock.close()


def _async_worker(name: str, who: str, rounds: int, path: str, events: Any, backend: str) -> None:
    async def task(i: int, alock: AsyncLock) -> None:
        for _ in range(rounds):
            async with alock:
                acq = alock.acquisition
                gen = acq.generation if acq else 0
                events.put(Event(time.time(), f"{who}/task{i}", "acquired", gen))
                await anyio.to_thread.run_sync(_bump, path)
                events.put(Event(time.time(), f"{who}/task{i}", "released", gen))
            await anyio.sleep(0.005)

    async def main() -> None:
        alock = AsyncLock(name)
        async with anyio.create_task_group() as tg:
            for i in range(2):
                tg.start_soon(task, i, alock)

    anyio.run(main, backend=backend)


def run(rounds: int = 3) -> int:
    """Run the demo; return the exit status (0 when exclusion held)."""
    name = f"aplock-demo.{os.getpid()}"
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    fd, path = tempfile.mkstemp(prefix="aplock-demo-")
    os.write(fd, b"0")
    os.close(fd)
    backends = ["asyncio"] + (["trio"] if importlib.util.find_spec("trio") else [])
    procs = [
        ctx.Process(target=_sync_worker, args=(name, f"proc{i}(sync)", rounds, path, events))
        for i in (1, 2)
    ] + [
        ctx.Process(target=_async_worker, args=(name, f"{b}", rounds, path, events, b))
        for b in backends
    ]
    expected = rounds * 2 + rounds * 2 * len(backends)
    print(f"aplock demo: lock {name!r} shared by {len(procs)} spawned processes")
    kinds = ", ".join(backends)
    print(f"  2 use aplock.Lock; {len(backends)} run 2 tasks each on AsyncLock ({kinds})")
    try:
        start = time.time()
        for p in procs:
            p.start()
        got = [events.get(timeout=60) for _ in range(expected * 2)]
        for p in procs:
            p.join(30)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        unlink(name)
        with open(path) as f:
            counter = int(f.read() or 0)
        os.unlink(path)
    got.sort(key=lambda e: e.t)
    print("\n  time     participant            event     generation")
    holder: str | None = None
    overlaps = 0
    for e in got:
        mark = ""
        if e.what == "acquired":
            if holder is not None:
                overlaps += 1
                mark = f"  <-- OVERLAP with {holder}"
            holder = e.who
        elif holder == e.who:
            holder = None
        print(f"  +{e.t - start:6.3f}s  {e.who:<22} {e.what:<9} {e.generation}{mark}")
    ok = overlaps == 0 and counter == expected
    print(f"\n  critical sections: {expected}, overlaps: {overlaps}, counter: {counter}/{expected}")
    print("  mutual exclusion held." if ok else "  MUTUAL EXCLUSION VIOLATED.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
