"""``python -m aplock demo``: processes and async tasks share a named lock; a holder dies.

Part 1: each participant (spawned processes on ``Lock``, tasks of ``AsyncLock`` on
asyncio and, when it is installed, Trio) increments a counter in a file with a
deliberately non-atomic read-sleep-write while holding the lock, and reports when it
acquired and released. The timeline printed at the end shows that no two critical
sections overlapped and that no increment was lost.

Part 2: a spawned process takes another lock and is killed with SIGKILL while it holds
it; a second one, waiting for that lock, takes it over within about its recovery
interval and is told so with an ``AbandonedLockWarning``.

The demo needs only aplock's run-time dependencies; every child is reaped and both lock
names are unlinked at the end.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from aplock.aio import AsyncLock
from aplock.errors import AbandonedLockWarning
from aplock.sync import Lock, unlink

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

HOLD = 0.02
#: The recovery interval of the waiter in part 2 (the default of ``Lock``).
RECOVERY_INTERVAL = 0.25
#: How long the demo waits for any one step of a child before it gives up.
STEP_TIMEOUT = 60.0
#: The timeline's columns: time, participant, event, generation.
ROW = "  {:<9} {:<22} {:<9} {}"


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


def _hold_until_killed(name: str, out: Connection) -> None:
    """Take the lock, say so, and wait to be killed while holding it."""
    lock = Lock(name)
    lock.acquire()
    acq = lock.acquisition
    out.send((os.getpid(), acq.generation if acq else 0))
    out.close()
    time.sleep(10 * STEP_TIMEOUT)  # the demo kills this process long before


def _take_over(name: str, out: Connection) -> None:
    """Wait for the lock; report when it was taken and what the warning said."""
    lock = Lock(name, recovery_interval=RECOVERY_INTERVAL)
    out.send(os.getpid())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AbandonedLockWarning)
        got = lock.acquire(timeout=STEP_TIMEOUT)
        at = time.monotonic()
    if not got:
        out.send(None)
        lock.close()
        return
    acq = lock.acquisition
    lock.release()
    lock.close()
    warned = [w.message for w in caught if isinstance(w.message, AbandonedLockWarning)]
    report = [(w.pid, w.generation, str(w)) for w in warned]
    out.send((at, acq.generation if acq else 0, report))


def _trio_installed() -> bool:
    try:
        return importlib.util.find_spec("trio") is not None
    except (ImportError, ValueError):
        return False


def _reap(procs: list[BaseProcess]) -> None:
    """Join every child; kill the ones that do not end by themselves."""
    for p in procs:
        if p.pid is None:
            continue
        p.join(STEP_TIMEOUT if p.exitcode is None else 0)
        if p.is_alive():
            p.kill()
            p.join()


def _receive(conn: Connection, what: str) -> Any:
    if not conn.poll(STEP_TIMEOUT):
        raise TimeoutError(f"aplock demo: no word from the {what} in {STEP_TIMEOUT:g} s")
    return conn.recv()


def _exclusion(name: str, rounds: int, ctx: Any) -> bool:
    """Part 1; return whether mutual exclusion held."""
    events = ctx.Queue()
    fd, path = tempfile.mkstemp(prefix="aplock-demo-")
    os.write(fd, b"0")
    os.close(fd)
    trio = _trio_installed()
    backends = ["asyncio", "trio"] if trio else ["asyncio"]
    procs = [
        ctx.Process(target=_sync_worker, args=(name, f"proc{i}(sync)", rounds, path, events))
        for i in (1, 2)
    ] + [
        ctx.Process(target=_async_worker, args=(name, f"{b}", rounds, path, events, b))
        for b in backends
    ]
    expected = rounds * 2 + rounds * 2 * len(backends)
    print(f"aplock demo, part 1: lock {name!r} shared by {len(procs)} spawned processes")
    kinds = ", ".join(backends)
    runs = "runs 2 tasks" if len(backends) == 1 else "run 2 tasks each"
    print(f"  2 use aplock.Lock; {len(backends)} {runs} on AsyncLock ({kinds})")
    if not trio:
        print(
            "  Trio is not installed: its part of the demo is skipped "
            "(python -m pip install trio to see it)"
        )
    print(
        "  each critical section is a non-atomic read-sleep-write of a shared counter;\n"
        "  generation is the lock's fencing token: one more on every acquisition"
    )
    try:
        start = time.time()
        for p in procs:
            p.start()
        got = [events.get(timeout=STEP_TIMEOUT) for _ in range(expected * 2)]
    finally:
        _reap(procs)
        unlink(name)
        with open(path) as f:
            counter = int(f.read() or 0)
        os.unlink(path)
    got.sort(key=lambda e: e.t)
    print()
    print(ROW.format("time", "participant", "event", "generation"))
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
        print(ROW.format(f"+{e.t - start:.3f}s", e.who, e.what, e.generation) + mark)
    ok = overlaps == 0 and counter == expected
    print(f"\n  critical sections: {expected}, overlaps: {overlaps}, counter: {counter}/{expected}")
    print("  mutual exclusion held." if ok else "  MUTUAL EXCLUSION VIOLATED.")
    return ok


def _killed_holder(name: str, ctx: Any) -> bool:
    """Part 2; return whether the waiter took the killed holder's lock over."""
    print(f"\naplock demo, part 2: a holder of lock {name!r} is killed while it holds it")
    held_r, held_w = ctx.Pipe(duplex=False)
    took_r, took_w = ctx.Pipe(duplex=False)
    holder = ctx.Process(target=_hold_until_killed, args=(name, held_w))
    waiter = ctx.Process(target=_take_over, args=(name, took_w))
    try:
        holder.start()
        held_w.close()
        dead_pid, dead_generation = _receive(held_r, "holder")
        waiter.start()
        took_w.close()
        waiter_pid = _receive(took_r, "waiter")
        print(
            f"  pid {dead_pid} took the lock (generation {dead_generation}); pid {waiter_pid} waits"
        )
        killed_at = time.monotonic()
        os.kill(dead_pid, signal.SIGKILL)
        holder.join(STEP_TIMEOUT)
        print(f"  pid {dead_pid} is killed with SIGKILL while it holds the lock")
        result = _receive(took_r, "waiter")
    finally:
        if holder.is_alive():
            holder.kill()
        _reap([holder, waiter])
        held_r.close()
        took_r.close()
        unlink(name)
    if result is None:
        print(f"  pid {waiter_pid} did not get the lock in {STEP_TIMEOUT:g} s")
        print("  DEAD HOLDER NOT TAKEN OVER.")
        return False
    at, generation, warned = result
    print(
        f"  pid {waiter_pid}, waiting for it, took it over {at - killed_at:.2f} s after the "
        f"kill (it checks for a dead holder every {RECOVERY_INTERVAL:g} s)"
    )
    for pid, its_generation, message in warned:
        print(
            f"  AbandonedLockWarning: dead holder pid {pid}, its generation {its_generation}; "
            f"new generation {generation}"
        )
        print(f"    {message}")
    ok = [(pid, g) for pid, g, _ in warned] == [(dead_pid, dead_generation)]
    print("  dead holder taken over." if ok else "  NO ABANDONED-LOCK WARNING.")
    return ok


def run(rounds: int = 3) -> int:
    """Run the demo; return the exit status (0 when exclusion held and the takeover worked).

    Raises:
        ValueError: *rounds* is less than 1.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    name = f"aplock-demo.{os.getpid()}"
    ctx = mp.get_context("spawn")
    excluded = _exclusion(name, rounds, ctx)
    taken_over = _killed_holder(f"{name}.killed", ctx)
    return 0 if excluded and taken_over else 1


if __name__ == "__main__":
    sys.exit(run())
