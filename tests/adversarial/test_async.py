"""AsyncLock under cancellation storms, native cancellation, and several event loops.

Other processes churn the lock all along (so releases by other processes race every
cancellation). After each round every task is done, and the lock must then be free or
held by another process: never held by this process with no task owning it (a leak).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import aplock
from aplock._deadline import SLICE
from aplock._posix import handle as _handle
from tests.support import adversarial_workers as aw
from tests.support import workers
from tests.support.procs import SPAWN, kill, running

pytestmark = pytest.mark.anyio


@contextlib.contextmanager
def churning(name: str, tmp: str, threads: int = 2) -> Iterator[str]:
    """Other processes take and release *name* in a loop until the block ends."""
    path = os.path.join(tmp, "board")
    aw.create_board(path)
    try:
        with running(aw.chaos_sync, name, path, tmp, 9, threads, count=2):
            yield path
            with aw.board(path) as words:
                words[aw.STOP] = 1
    finally:
        with aw.board(path) as words:
            words[aw.STOP] = 1
            assert words[aw.VIOLATIONS] == 0, "mutual exclusion broke"


def leaked(lock: aplock.Lock, grace: float = 0.0) -> bool:
    """Whether this process stays recorded as the holder for *grace* seconds."""
    end = time.monotonic() + grace
    while aw.my_leak(lock):
        if time.monotonic() >= end:
            return True
        time.sleep(0.01)
    return False


class Exclusion:
    """Counts this process's tasks and threads inside the lock; more than one is a bug."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.inside = 0
        self.entries = 0
        self.violations = 0

    def enter(self) -> None:
        with self.mutex:
            self.inside += 1
            self.entries += 1
            if self.inside > 1:
                self.violations += 1

    def leave(self) -> None:
        with self.mutex:
            self.inside -= 1


async def storm_round(alock: aplock.AsyncLock, rng: random.Random, ex: Exclusion) -> int:
    """Tasks wait for the lock and are cancelled at random instants; return acquisitions."""
    got_count = 0

    async def waiter() -> None:
        nonlocal got_count
        got = False
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            got = await alock.acquire(timeout=rng.choice((None, rng.uniform(0, 0.3))))
        if not got:
            return
        ex.enter()
        try:
            got_count += 1
            await anyio.sleep(rng.choice((0, 0.001)))
        finally:
            ex.leave()
            alock.release()

    scopes: list[anyio.CancelScope] = []
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(waiter)
        for _ in range(4):
            await anyio.sleep(rng.uniform(0, 0.08))
            if scopes:
                rng.choice(scopes).cancel()
    return got_count


async def test_cancellation_storm_never_leaks(
    lock_name: str, tmp_path: os.PathLike[str], anyio_backend: Any
) -> None:
    rng = random.Random(3)
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    alock = aplock.AsyncLock(lock)
    ex = Exclusion()
    total = 0
    with churning(lock_name, str(tmp_path)):
        for _ in range(6):
            total += await storm_round(alock, rng, ex)
            assert not leaked(lock), "a cancelled wait left the lock held by this process"
    assert ex.violations == 0
    assert total > 0
    assert not leaked(lock)


@pytest.mark.stress
@pytest.mark.timeout(900)
async def test_cancellation_storm_never_leaks_stress(
    lock_name: str, tmp_path: os.PathLike[str], anyio_backend: Any
) -> None:
    rng = random.Random(4)
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    alock = aplock.AsyncLock(lock)
    ex = Exclusion()
    with churning(lock_name, str(tmp_path), threads=3):
        for _ in range(500):
            await storm_round(alock, rng, ex)
            assert not leaked(lock)
    assert ex.violations == 0


async def native_round(alock: aplock.AsyncLock, rng: random.Random, ex: Exclusion) -> None:
    """asyncio's own cancellation: Task.cancel() at random, and asyncio.timeout."""

    async def waiter(i: int) -> None:
        if i % 2:
            async with asyncio.timeout(rng.uniform(0, 0.1)):
                await alock.acquire()
        else:
            await alock.acquire()
        ex.enter()
        try:
            await asyncio.sleep(rng.choice((0, 0.001)))
        finally:
            ex.leave()
            alock.release()

    tasks = [asyncio.create_task(waiter(i)) for i in range(6)]
    for _ in range(4):
        await asyncio.sleep(rng.uniform(0, 0.06))
        rng.choice(tasks).cancel()
    await asyncio.sleep(rng.uniform(0, 0.05))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def native_cancellation(name: str, tmp: str, use_uvloop: bool, rounds: int, seed: int) -> None:
    """*rounds* of ``native_round`` on asyncio (or uvloop) while other processes churn."""
    rng = random.Random(seed)
    lock = aplock.Lock(name, recovery_interval=0.05)
    alock = aplock.AsyncLock(lock)
    ex = Exclusion()

    async def main() -> None:
        for _ in range(rounds):
            await native_round(alock, rng, ex)
            # A worker that the task stopped waiting for ends within a slice.
            assert not leaked(lock, grace=1.0), "Task.cancel() leaked the lock"

    with churning(name, tmp):
        if use_uvloop:
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())
    assert ex.violations == 0


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_native_cancellation_never_leaks(
    lock_name: str, tmp_path: os.PathLike[str], use_uvloop: bool
) -> None:
    native_cancellation(lock_name, str(tmp_path), use_uvloop, rounds=6, seed=5)


@pytest.mark.stress
@pytest.mark.timeout(900)
@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_native_cancellation_never_leaks_stress(
    lock_name: str, tmp_path: os.PathLike[str], use_uvloop: bool
) -> None:
    native_cancellation(lock_name, str(tmp_path), use_uvloop, rounds=300, seed=6)


def several_loops(name: str, tmp: str, rounds: int) -> None:
    """Four event loops in four threads share one ``Lock``, *rounds* storms each."""
    ex = Exclusion()
    lock = aplock.Lock(name, recovery_interval=0.05)
    errors: list[BaseException] = []

    def loop(backend: str, options: dict[str, Any], seed: int) -> None:
        rng = random.Random(seed)
        alock = aplock.AsyncLock(lock)

        async def main() -> None:
            for _ in range(rounds):
                await storm_round(alock, rng, ex)

        try:
            anyio.run(main, backend=backend, backend_options=options)
        except BaseException as exc:
            errors.append(exc)

    runs = [("asyncio", {}), ("asyncio", {"use_uvloop": True}), ("trio", {}), ("trio", {})]
    with churning(name, tmp):
        threads = [
            threading.Thread(target=loop, args=(backend, options, i))
            for i, (backend, options) in enumerate(runs)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(100 + rounds)
        assert not any(t.is_alive() for t in threads), "an event loop never finished"
    assert not errors, errors
    assert ex.violations == 0, "two tasks of this process held the lock at once"
    assert ex.entries > 0
    assert not leaked(lock)
    h = lock._h
    assert isinstance(h, _handle.Handle)
    assert (h.sem.value, h.token.value) == (1, 0)


def test_several_loops_in_several_threads(lock_name: str, tmp_path: os.PathLike[str]) -> None:
    several_loops(lock_name, str(tmp_path), rounds=8)


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_several_loops_in_several_threads_stress(
    lock_name: str, tmp_path: os.PathLike[str]
) -> None:
    several_loops(lock_name, str(tmp_path), rounds=150)


# -- several AsyncLock objects for one name in one event loop ---------------------------------


async def settled() -> None:
    """Return once every other task of this event loop is blocked: the tasks started
    before have queued in their gates (or left them)."""
    with anyio.fail_after(10):
        await anyio.wait_all_tasks_blocked()


async def wait_on(alock: aplock.AsyncLock, timeout: float, out: list[object]) -> None:
    """Wait; record whether it got the lock and whether that took over a dead holder's."""
    try:
        got = await alock.acquire(timeout=timeout)
    except aplock.LockError as exc:
        out.append(type(exc).__name__)
        return
    out.append(got)
    acq = alock.acquisition if got else None
    out.append(acq is not None and acq.abandoned_pid is not None)
    if got:
        alock.release()


async def test_closing_one_object_does_not_fail_another_objects_waiters(
    lock_name: str, anyio_backend: Any
) -> None:
    first = aplock.AsyncLock(lock_name)
    second = aplock.AsyncLock(lock_name)
    acquired, release = SPAWN.Event(), SPAWN.Event()
    with running(workers.hold, lock_name, acquired, release):
        assert acquired.wait(60)
        out: list[object] = []
        early = anyio.CancelScope()

        async def first_waits() -> None:
            with early:
                await wait_on(first, 30, [])

        async with anyio.create_task_group() as tg:
            tg.start_soon(first_waits)
            await settled()  # `first` waits: its Lock serves this loop's gate
            tg.start_soon(wait_on, second, 30, out)
            await settled()
            early.cancel()  # the component that used `first` stops waiting...
            await settled()
            first.lock.close()  # ...and shuts down
            await anyio.sleep(3 * SLICE)  # the gate's thread waits a few slices more
            release.set()  # the holder lets go: `second` should get the lock
    assert out[:1] == [True], f"the other object's waiter got {out}"


@pytest.mark.filterwarnings("ignore::aplock.AbandonedLockWarning")
async def test_recovery_interval_none_is_honoured_beside_another_object(
    lock_name: str, anyio_backend: Any
) -> None:
    default = aplock.AsyncLock(lock_name, recovery_interval=0.05)
    never = aplock.AsyncLock(lock_name, recovery_interval=None)
    acquired = SPAWN.Event()
    out: list[object] = []
    with running(workers.hold_until_killed, lock_name, acquired) as (holder,):
        assert acquired.wait(60)
        early = anyio.CancelScope()

        async def default_waits() -> None:
            with early:
                await wait_on(default, 30, [])

        async with anyio.create_task_group() as tg:
            tg.start_soon(default_waits)
            await settled()  # `default` starts its gate's thread
            tg.start_soon(wait_on, never, 0.8, out)
            await settled()
            early.cancel()  # `default` stops waiting; `never` is left
            await settled()
            kill(holder)  # `never` waits on, many of `default`'s recovery intervals
    lock = aplock.Lock(lock_name)
    if lock.locked() and lock.acquire(timeout=10):  # the dead holder's, if nobody took it
        lock.release()
    assert out == [False, False], f"a waiter with recovery_interval=None got {out}"
