"""A process stopped (or stuck) inside the semaphore's guard: acquires keep their
timeouts, block=False does not block, and an event loop is never blocked by it."""

from __future__ import annotations

import time

import anyio
import pytest

import aplock
from aplock._posix.semaphore import TRY_PATIENCE
from tests.support import sem_workers
from tests.support.procs import SPAWN, running

MARGIN = 1.0


def test_acquire_keeps_its_timeout_while_the_guard_is_held(lock_name: str) -> None:
    sem = aplock.Semaphore(lock_name, 2)
    ready, release = SPAWN.Event(), SPAWN.Event()
    with running(sem_workers.hold_guard, lock_name, 2, ready, release):
        assert ready.wait(60)
        began = time.monotonic()
        assert sem.acquire(timeout=0.3) is False
        assert time.monotonic() - began < 0.3 + MARGIN
        began = time.monotonic()
        assert sem.acquire(False) is False
        assert time.monotonic() - began < TRY_PATIENCE + MARGIN
        assert sem.get_value() == 2  # the permits are free; only the guard is taken
        release.set()
    assert sem.acquire(timeout=5)
    sem.release()


@pytest.mark.anyio
async def test_the_event_loop_runs_while_the_guard_is_held(
    lock_name: str, anyio_backend: object
) -> None:
    sem = aplock.AsyncSemaphore(lock_name, 2)
    ready, release = SPAWN.Event(), SPAWN.Event()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    with running(sem_workers.hold_guard, lock_name, 2, ready, release):
        assert ready.wait(60)
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            with anyio.move_on_after(0.3):
                await sem.acquire()
            assert ticks >= 10, "the event loop was blocked on the guard"
            release.set()
            with anyio.fail_after(10):
                await sem.acquire()
            tg.cancel_scope.cancel()
    sem.release()
