"""asyncio's own cancellation tools on AsyncLock: ``Task.cancel`` and ``asyncio.timeout``."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest

import aplock
from tests.support import workers
from tests.support.procs import SPAWN, running, wait_until

pytestmark = pytest.mark.asyncio


async def test_task_cancel_interrupts_a_wait(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        task = asyncio.ensure_future(alock.acquire())
        while alock.statistics().tasks_waiting == 0:  # the task waits in the gate
            await asyncio.sleep(0.005)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - start < 2.0
        assert alock.info().holder_pid == proc.pid
        proc.kill()


async def test_asyncio_timeout(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await alock.acquire()
        assert time.monotonic() - start < 2.0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(alock.acquire(), 0.2)
        proc.kill()


async def cancel_racing_release(name: str, rounds: int, seed: int) -> None:
    """*rounds* times: ``Task.cancel()`` a waiting acquire while a thread releases."""
    rng = random.Random(seed)
    lock = aplock.Lock(name)
    alock = aplock.AsyncLock(name)
    outcomes = {"acquired": 0, "cancelled": 0}
    for _ in range(rounds):
        assert lock.acquire(timeout=10)
        timer = threading.Timer(rng.uniform(0, 0.02), lock.release)
        timer.start()
        task = asyncio.ensure_future(alock.acquire())
        await asyncio.sleep(rng.uniform(0, 0.02))
        task.cancel()
        try:
            got = await task
        except asyncio.CancelledError:
            got = False
        timer.join()
        if got:
            outcomes["acquired"] += 1
            alock.release()
        else:
            outcomes["cancelled"] += 1
        # Task.cancel() stops the task at once; its worker thread finishes its current
        # slice in the background and releases whatever it won. A leak would persist.
        wait_until(lambda: not lock.locked(), timeout=2, what="the lock to be free")
    assert outcomes["acquired"] > 0, outcomes
    assert outcomes["cancelled"] > 0, outcomes


async def test_task_cancel_racing_release_never_leaks(lock_name: str) -> None:
    await cancel_racing_release(lock_name, 60, seed=3)


@pytest.mark.stress
@pytest.mark.timeout(600)
async def test_task_cancel_racing_release_never_leaks_stress(lock_name: str) -> None:
    await cancel_racing_release(lock_name, 3000, seed=4)
