"""AsyncSemaphore on asyncio, uvloop and Trio: no thread for a free permit, one waiting
thread per semaphore per event loop, and cancellation that never leaks a permit."""

from __future__ import annotations

import pickle
import random
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import aplock
from aplock._posix import slots as _slots
from tests.support import sem_workers
from tests.support.procs import SPAWN, running

pytestmark = pytest.mark.anyio


def _server_threads(name: str) -> int:
    return sum(t.name == f"aplock {name}" for t in threading.enumerate())


async def test_basics(lock_name: str) -> None:
    sem = aplock.AsyncSemaphore(lock_name, 2)
    assert (sem.name, sem.value, sem.get_value()) == (lock_name, 2, 2)
    assert isinstance(sem.semaphore, aplock.Semaphore)
    async with sem as entered:
        assert entered is sem
        assert sem.get_value() == 1
        assert repr(sem) == (
            f"<aplock.AsyncSemaphore {lock_name!r} value=2, 1 free, held by pid "
            f"{sem.info().holders[0].pid}>"
        )
        sem.acquire_nowait()
        with pytest.raises(anyio.WouldBlock):
            sem.acquire_nowait()
        assert await sem.acquire(False) is False
        assert await sem.acquire(timeout=0.05) is False
        sem.release()
    assert sem.get_value() == 2
    sem.release()  # a Semaphore may go above its value
    assert sem.get_value() == 3


async def test_shares_a_bounded_semaphore(lock_name: str) -> None:
    bounded = aplock.BoundedSemaphore(lock_name, 1)
    sem = aplock.AsyncSemaphore(bounded)
    assert sem.semaphore is bounded
    async with sem:
        assert bounded.get_value() == 0
    with pytest.raises(aplock.LockNotHeldError):
        sem.release()
    again = pickle.loads(pickle.dumps(sem))
    assert isinstance(again.semaphore, aplock.BoundedSemaphore)
    assert again.value == 1
    assert repr(sem) == f"<aplock.AsyncSemaphore (bounded) {lock_name!r} value=1, 1 free>"


async def test_checks_its_arguments(lock_name: str) -> None:
    with pytest.raises(TypeError, match="value must be an int"):
        aplock.AsyncSemaphore(lock_name, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="value must be from"):
        aplock.AsyncSemaphore(lock_name, _slots.CAPACITY + 1)
    sem = aplock.AsyncSemaphore(lock_name, 1)
    with pytest.raises(TypeError, match="value must be an int"):
        aplock.AsyncSemaphore(sem.semaphore, True)
    with pytest.raises(TypeError, match=r"AsyncSemaphore\(.*\)\.acquire\(\): timeout"):
        await sem.acquire(timeout="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        await sem.acquire(timeout=float("nan"))
    with pytest.raises(aplock.LockKindError):
        aplock.AsyncLock(lock_name)


async def test_acquire_is_a_checkpoint_even_when_free(lock_name: str) -> None:
    sem = aplock.AsyncSemaphore(lock_name, 5)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await sem.acquire()
    assert scope.cancelled_caught
    assert sem.get_value() == 5


async def test_a_free_permit_uses_no_thread(
    lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_threads(*args: object, **kwargs: object) -> None:
        raise AssertionError("a free permit started a worker thread")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_threads)
    sem = aplock.AsyncSemaphore(lock_name, 3)
    before = threading.active_count()
    for _ in range(50):
        async with sem, sem, sem:
            pass
    assert threading.active_count() == before


async def test_many_tasks_one_waiting_thread_never_above_the_value(lock_name: str) -> None:
    sem = aplock.AsyncSemaphore(lock_name, 3)
    now = top = 0
    threads: list[int] = []

    async def task() -> None:
        nonlocal now, top
        async with sem:
            now += 1
            top = max(top, now)
            threads.append(_server_threads(lock_name))
            await anyio.sleep(0.005)
            now -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(60):
            tg.start_soon(task)
    assert top == 3
    assert max(threads) <= 1, "more than one thread waited for the semaphore"
    assert sem.get_value() == 3


async def test_waiters_are_served_in_order_by_one_thread(lock_name: str) -> None:
    sem = aplock.AsyncSemaphore(lock_name, 2)
    ready, release = SPAWN.Event(), SPAWN.Event()
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with sem:
            order.append(i)

    with running(sem_workers.hold, lock_name, 2, False, 2, ready, release):
        assert ready.wait(60)
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(waiter, i)
                await anyio.sleep(0)
            await anyio.sleep(0.2)
            assert _server_threads(lock_name) == 1
            assert await anyio.to_thread.run_sync(lambda: 42) == 42  # the pool is free
            release.set()
    # Granted first come, first served; two grantees may run in either order.
    assert sorted(order) == list(range(40))
    assert all(abs(at - i) <= 1 for at, i in enumerate(order)), order
    assert sem.get_value() == 2


@pytest.mark.parametrize("how", ["move_on_after", "fail_after", "task_group"])
async def test_outer_cancellation_interrupts_a_wait(lock_name: str, how: str) -> None:
    sem = aplock.AsyncSemaphore(lock_name, 1)
    await sem.acquire()
    began = time.monotonic()
    if how == "move_on_after":
        with anyio.move_on_after(0.1):
            await sem.acquire()
    elif how == "fail_after":
        with pytest.raises(TimeoutError), anyio.fail_after(0.1):
            await sem.acquire()
    else:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sem.acquire)
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
    assert time.monotonic() - began < 2.0
    assert _server_threads(lock_name) == 0, "the waiting thread outlived the cancellation"
    sem.release()
    assert sem.get_value() == 1


async def _cancellation_rounds(name: str, rounds: int, seed: int) -> dict[str, int]:
    """Tasks wait for two permits that a thread releases at random instants, and are
    cancelled at random instants: after each round both permits are free again."""
    rng = random.Random(seed)
    sync = aplock.Semaphore(name, 2)
    sem = aplock.AsyncSemaphore(sync)
    outcomes = {"acquired": 0, "cancelled": 0}

    async def one(delay: float) -> None:
        got = False
        with anyio.move_on_after(delay):
            got = await sem.acquire()
            await anyio.sleep(rng.uniform(0, 0.002))
        if got:
            outcomes["acquired"] += 1
            sem.release()
        else:
            outcomes["cancelled"] += 1

    for _ in range(rounds):
        assert sync.acquire(timeout=10)
        assert sync.acquire(timeout=10)
        timers = [threading.Timer(rng.uniform(0, 0.01), sync.release) for _ in range(2)]
        for timer in timers:
            timer.start()
        async with anyio.create_task_group() as tg:
            for _ in range(rng.randint(1, 5)):
                tg.start_soon(one, rng.uniform(0, 0.012))
        for timer in timers:
            timer.join()
        assert sync.get_value() == 2, "a cancelled acquire leaked a permit"
    return outcomes


async def test_random_cancellation_never_leaks_a_permit(lock_name: str) -> None:
    outcomes = await _cancellation_rounds(lock_name, 60, seed=1)
    assert outcomes["acquired"] > 0, outcomes
    assert outcomes["cancelled"] > 0, outcomes


@pytest.mark.stress
@pytest.mark.timeout(900)
async def test_random_cancellation_never_leaks_a_permit_long(lock_name: str) -> None:
    outcomes = await _cancellation_rounds(lock_name, 2000, seed=2)
    assert outcomes["acquired"] > 0, outcomes
    assert outcomes["cancelled"] > 0, outcomes


async def test_a_dead_holder_s_permit_reaches_a_task_with_a_warning(
    lock_name: str, anyio_backend: Any
) -> None:
    sem = aplock.AsyncSemaphore(lock_name, 1, recovery_interval=0.05)
    with running(sem_workers.acquire_and_exit, lock_name, 1, False, 1) as (child,):
        child.join(30)
    with pytest.warns(aplock.AbandonedLockWarning) as caught:
        with anyio.fail_after(5):
            await sem.acquire()
    assert [w.message.pid for w in caught] == [child.pid]  # type: ignore[union-attr]
    sem.release()


async def test_excludes_other_processes(lock_name: str) -> None:
    sem = aplock.AsyncSemaphore(lock_name, 1)
    ready, release = SPAWN.Event(), SPAWN.Event()
    with running(sem_workers.hold, lock_name, 1, False, 1, ready, release):
        assert ready.wait(60)
        assert await sem.acquire(timeout=0.1) is False
        release.set()
        with anyio.fail_after(10):
            await sem.acquire()
    sem.release()
