"""One generic contract suite, run over ``Lock`` and ``AsyncLock`` on every backend."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import anyio
import pytest

import aplock

pytestmark = pytest.mark.anyio


class AnyLock(Protocol):
    """What the contract says of both lock classes, seen from async code."""

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def holding(self) -> AsyncIterator[None]: ...


class SyncAdapter:
    def __init__(self, lock: aplock.Lock) -> None:
        self.lock = lock

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return self.lock.acquire(block, timeout)

    def release(self) -> None:
        self.lock.release()

    def locked(self) -> bool:
        return self.lock.locked()

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        with self.lock:
            yield


class AsyncAdapter:
    def __init__(self, lock: aplock.AsyncLock) -> None:
        self.lock = lock

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return await self.lock.acquire(block, timeout)

    def release(self) -> None:
        self.lock.release()

    def locked(self) -> bool:
        return self.lock.locked()

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        async with self.lock:
            yield


@pytest.fixture(params=["Lock", "AsyncLock"])
def lock(request: pytest.FixtureRequest, lock_name: str) -> SyncAdapter | AsyncAdapter:
    if request.param == "Lock":
        return SyncAdapter(aplock.Lock(lock_name))
    return AsyncAdapter(aplock.AsyncLock(lock_name))


async def test_acquire_release(lock: SyncAdapter | AsyncAdapter) -> None:
    assert not lock.locked()
    assert await lock.acquire() is True
    assert lock.locked()
    lock.release()
    assert not lock.locked()


async def test_context_manager(lock: SyncAdapter | AsyncAdapter) -> None:
    async with lock.holding():
        assert lock.locked()
    assert not lock.locked()


async def test_non_recursive(lock: SyncAdapter | AsyncAdapter) -> None:
    async with lock.holding():
        assert await lock.acquire(False) is False
        start = time.monotonic()
        assert await lock.acquire(timeout=0.1) is False
        assert time.monotonic() - start >= 0.09


async def test_block_false_ignores_timeout(lock: SyncAdapter | AsyncAdapter) -> None:
    async with lock.holding():
        start = time.monotonic()
        assert await lock.acquire(False, 10) is False
        assert time.monotonic() - start < 1


@pytest.mark.parametrize("timeout", [0, -5])
async def test_non_positive_timeout(lock: SyncAdapter | AsyncAdapter, timeout: float) -> None:
    assert await lock.acquire(timeout=timeout) is True
    assert await lock.acquire(timeout=timeout) is False
    lock.release()


async def test_release_unlocked_is_value_error(lock: SyncAdapter | AsyncAdapter) -> None:
    with pytest.raises(ValueError, match="nobody holds it"):
        lock.release()
    async with lock.holding():
        pass
    with pytest.raises(aplock.LockNotHeldError):
        lock.release()


async def test_release_by_another_thread(lock: SyncAdapter | AsyncAdapter) -> None:
    await lock.acquire()
    await anyio.to_thread.run_sync(lock.release)
    assert not lock.locked()


async def test_shares_one_lock_with_the_other_class(lock_name: str) -> None:
    sync, alock = aplock.Lock(lock_name), aplock.AsyncLock(lock_name)
    assert alock.lock._h is sync._h
    with sync:
        assert alock.locked()
        assert await alock.acquire(False) is False
    async with alock:
        assert sync.acquire(False) is False
