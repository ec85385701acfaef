"""AsyncLock's in-loop handoff: a release goes straight to the next task of the same loop,
without the gate's thread, as a new acquisition; bounded, so that threads and other
processes waiting on the OS lock get it while a stream of tasks keeps taking it."""

from __future__ import annotations

import itertools
import queue
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
from aplock._posix.lock import LockCore
from tests.support import handoff_workers
from tests.support.procs import SPAWN, running

pytestmark = pytest.mark.anyio

#: How long a waiter outside the loop may wait for the lock while the stream runs: the
#: bound is about a millisecond of handoffs; the rest is room for a loaded machine.
WITHIN = 2.0


class ServerGrants:
    """Counts the acquisitions that the gates' threads got from the OS lock."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        wait = LockCore.wait

        def counting(core: LockCore, deadline: Any, cancelled: Any) -> Any:
            got = wait(core, deadline, cancelled)
            if got[0] and threading.current_thread().name.startswith("aplock "):
                self.count += 1
            return got

        monkeypatch.setattr(LockCore, "wait", counting)


async def stream(
    alock: aplock.AsyncLock,
    *,
    tasks: int = 10,
    rounds: int | None = None,
    stop: Callable[[], bool] = lambda: False,
    limit: float = 30.0,
) -> list[int]:
    """Tasks of this loop take *alock* in turn; the generation of every acquisition."""
    generations: list[int] = []
    inside = 0
    end = time.monotonic() + limit

    async def task() -> None:
        nonlocal inside
        done = 0
        while (rounds is None or done < rounds) and not stop() and time.monotonic() < end:
            async with alock:
                inside += 1
                assert inside == 1, "two tasks inside at once"
                acquisition = alock.acquisition
                assert acquisition is not None
                generations.append(acquisition.generation)
                await anyio.lowlevel.checkpoint()
                inside -= 1
            done += 1

    async with anyio.create_task_group() as tg:
        for _ in range(tasks):
            tg.start_soon(task)
    return generations


def increasing(generations: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(generations))


async def test_handoff_skips_the_thread_and_each_is_a_new_acquisition(
    lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gate, "HANDOFF_WINDOW", 60.0)  # only the count bounds here
    grants = ServerGrants(monkeypatch)
    alock = aplock.AsyncLock(lock_name)
    generations = await stream(alock, tasks=20, rounds=10)
    assert len(generations) == 200
    assert increasing(generations), "the fencing tokens did not grow with each acquisition"
    assert grants.count <= 200 // 16, f"the thread granted {grants.count} of 200 acquisitions"
    assert not alock.locked()


async def test_at_most_limit_handoffs_in_a_row(
    lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gate, "HANDOFF_WINDOW", 60.0)
    monkeypatch.setattr(_gate, "HANDOFF_LIMIT", 8)
    grants = ServerGrants(monkeypatch)
    generations = await stream(aplock.AsyncLock(lock_name), tasks=10, rounds=18)
    # 180 acquisitions: a real release (and a grant by the thread) after every 8 handoffs.
    assert len(generations) == 180
    assert 180 // 9 - 2 <= grants.count <= 180 // 9 + 10, grants.count


async def test_no_handoff_once_the_window_has_passed(
    lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gate, "HANDOFF_WINDOW", 1e-9)
    grants = ServerGrants(monkeypatch)
    generations = await stream(aplock.AsyncLock(lock_name), tasks=10, rounds=10)
    # Every handoff starts a row that the next release finds over: one in two is real.
    assert len(generations) == 100
    assert grants.count >= 100 // 3, grants.count


async def test_a_waiting_process_gets_the_lock_within_the_bound(lock_name: str) -> None:
    ready, go, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    alock = aplock.AsyncLock(lock_name)
    with running(handoff_workers.wait_for_lock, lock_name, ready, go, 10.0, out):
        assert await anyio.to_thread.run_sync(ready.wait, 60)

        async def start_the_waiter() -> None:
            await anyio.sleep(0.2)  # the stream is under way
            go.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(start_the_waiter)
            generations = await stream(alock, stop=lambda: not out.empty(), limit=15.0)
        got, waited = out.get(timeout=10)
    assert got, "the other process never got the lock while the stream ran"
    assert waited < WITHIN, f"the other process waited {waited:.3f} s"
    assert increasing(generations)


async def test_a_waiting_thread_gets_the_lock_within_the_bound(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)
    results: queue.Queue[tuple[bool, float]] = queue.Queue()
    go = threading.Event()

    def waiter() -> None:
        lock = aplock.Lock(lock_name)
        go.wait(60)
        start = time.monotonic()
        got = lock.acquire(timeout=10)
        results.put((got, time.monotonic() - start))
        if got:
            lock.release()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()

    async def start_the_waiter() -> None:
        await anyio.sleep(0.2)
        go.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(start_the_waiter)
        await stream(alock, stop=lambda: not results.empty(), limit=15.0)
    thread.join(15)
    got, waited = results.get(timeout=1)
    assert got, "the thread never got the lock while the stream ran"
    assert waited < WITHIN, f"the thread waited {waited:.3f} s"


async def test_a_handed_over_lock_is_released_by_another_thread(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)
    await alock.acquire()
    held: list[int] = []

    async def waiter() -> None:
        await alock.acquire()
        acquisition = alock.acquisition
        assert acquisition is not None
        held.append(acquisition.generation)

    first = alock.acquisition
    assert first is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        tg.start_soon(waiter)
        while alock.statistics().tasks_waiting < 2:
            await anyio.sleep(0.001)
        alock.release()  # to the first waiter, in the loop: the other waits behind it
        while not held:
            await anyio.sleep(0)
        assert held[0] > first.generation
        info = alock.info()
        assert info.holder_pid is not None
        assert info.generation == held[0]
        # The contract: any thread may release it, and the record names this process.
        await anyio.to_thread.run_sync(alock.lock.release)
        while len(held) < 2:
            await anyio.sleep(0.001)
        alock.release()
    assert held[1] > held[0]
    out = SPAWN.Queue()
    with running(handoff_workers.try_lock, lock_name, out):
        assert out.get(timeout=60), "the lock stayed taken after the last release"


def test_a_process_that_dies_in_a_stream_does_not_wedge_the_lock(
    lock_name: str, anyio_backend: Any
) -> None:
    with running(handoff_workers.stream_then_die, lock_name, anyio_backend[0], 200) as (child,):
        child.join(60)
    assert child.exitcode == 0
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    assert lock.locked(), "the child should have died holding the lock"
    generation = lock.info().generation
    with pytest.warns(aplock.AbandonedLockWarning):
        assert lock.acquire(timeout=10), "the lock of the dead stream was not taken over"
    acquisition = lock.acquisition
    assert acquisition is not None
    assert acquisition.generation > generation
    lock.release()


class _RaisingAfterWrite:
    """Stands in for the record's struct: writes, then raises as a signal handler may."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def pack_into(self, *args: Any) -> None:
        self.real.pack_into(*args)
        raise KeyboardInterrupt  # a handler's exception right after the write


def test_a_handler_raising_inside_a_handover_leaves_the_lock_free(
    lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The handover is complete once H is taken; an exception from there on must release
    # the new acquisition, which no task holds: else the lock stays this process's.
    from aplock._posix import handover

    lock = aplock.Lock(lock_name)
    assert lock.acquire(False)
    generation = lock.acquisition.generation if lock.acquisition else 0
    core = LockCore(lock_name, 0o600, None)
    monkeypatch.setattr(handover, "_FAST_HOLD", _RaisingAfterWrite(handover._FAST_HOLD))
    with pytest.raises(KeyboardInterrupt):
        core.hand_over()
    monkeypatch.undo()
    assert not lock.locked()
    other = aplock.Lock(lock_name)
    assert other.acquire(False)
    assert other.acquisition is not None
    assert other.acquisition.generation == generation + 2
    other.release()
    core.close()
