"""AsyncSemaphore's in-loop handoff: a released permit goes straight to the next task of
the same loop, as a new acquisition, within the bound that lets other processes in."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import aplock
from aplock import _gate
from aplock._posix.semaphore import SemaphoreCore
from tests.support import handoff_workers
from tests.support.procs import SPAWN, running

pytestmark = pytest.mark.anyio

VALUE = 2
WITHIN = 2.0


def count_server_grants(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list: the permits that the gates' threads got (counted as they come)."""
    count = [0]
    wait = SemaphoreCore.wait

    def counting(core: SemaphoreCore, deadline: Any, cancelled: Any) -> Any:
        got = wait(core, deadline, cancelled)
        if got[0] and threading.current_thread().name.startswith("aplock "):
            count[0] += 1
        return got

    monkeypatch.setattr(SemaphoreCore, "wait", counting)
    return count


async def stream(
    sem: aplock.AsyncSemaphore,
    *,
    tasks: int = 10,
    rounds: int | None = None,
    stop: Callable[[], bool] = lambda: False,
    limit: float = 30.0,
) -> int:
    """Tasks of this loop take permits of *sem* in turn; how many acquisitions they made."""
    entries = inside = 0
    end = time.monotonic() + limit

    async def task() -> None:
        nonlocal entries, inside
        done = 0
        while (rounds is None or done < rounds) and not stop() and time.monotonic() < end:
            async with sem:
                inside += 1
                assert inside <= VALUE, "more tasks inside than permits"
                entries += 1
                await anyio.lowlevel.checkpoint()
                inside -= 1
            done += 1

    async with anyio.create_task_group() as tg:
        for _ in range(tasks):
            tg.start_soon(task)
    return entries


async def test_permits_are_handed_over_without_the_thread(
    lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gate, "HANDOFF_WINDOW", 60.0)
    grants = count_server_grants(monkeypatch)
    sem = aplock.AsyncSemaphore(lock_name, VALUE)
    before = sem.info().generation
    entries = await stream(sem, tasks=20, rounds=10)
    assert entries == 200
    # Each handoff is a new acquisition: one generation each, as for any other.
    assert sem.info().generation - before == 200
    assert grants[0] <= 200 // 8, f"the thread granted {grants[0]} of 200 permits"
    assert sem.get_value() == VALUE


async def test_a_waiting_process_gets_a_permit_within_the_bound(lock_name: str) -> None:
    ready, go, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    sem = aplock.AsyncSemaphore(lock_name, VALUE)
    with running(handoff_workers.wait_for_permit, lock_name, VALUE, ready, go, 10.0, out):
        assert await anyio.to_thread.run_sync(ready.wait, 60)

        async def start_the_waiter() -> None:
            await anyio.sleep(0.2)
            go.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(start_the_waiter)
            await stream(sem, stop=lambda: not out.empty(), limit=15.0)
        got, waited = out.get(timeout=10)
    assert got, "the other process never got a permit while the stream ran"
    assert waited < WITHIN, f"the other process waited {waited:.3f} s"
    assert sem.get_value() == VALUE
