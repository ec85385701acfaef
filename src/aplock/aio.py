"""``aplock.AsyncLock`` and ``AsyncSemaphore``: for ``async with``, on asyncio and Trio.

Written once on AnyIO. Each composes its sync twin, a ``Lock`` or a ``Semaphore``
(sharing the process's one OS handle for the name), and waits through the gates of
``aplock._gate``: no thread for a free lock or permit, one waiting thread per primitive
per event loop (FIFO among that loop's tasks), cancellation that never leaks an
acquisition, prompt shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anyio import WouldBlock

from . import _gate
from ._context import AsyncWithAcquire as _AsyncWithAcquire
from ._core import core_of
from ._deadline import normalize_timeout
from ._posix.handle import DEFAULT_MODE
from .semaphore import Semaphore, SemaphoreInfo, check_value
from .sync import RECOVERY_INTERVAL, Acquisition, Lock, LockInfo

__all__ = ["AsyncLock", "AsyncLockStatistics", "AsyncSemaphore"]


@dataclass(frozen=True, slots=True)
class AsyncLockStatistics:
    """What ``AsyncLock.statistics()`` reports.

    Attributes:
        locked: whether some task, thread or process holds the lock.
        tasks_waiting: tasks of the current event loop waiting for it.
    """

    locked: bool
    tasks_waiting: int


class AsyncLock(_AsyncWithAcquire):
    """The cross-process lock for ``async with``, under asyncio and Trio alike.

    ``AsyncLock("x")`` and ``Lock("x")`` are the same lock; in one process they share
    one OS handle. Outer cancellation (``task.cancel()``, ``asyncio.timeout``,
    ``anyio.fail_after``, ``trio.move_on_after``) interrupts a waiting ``acquire()``
    within a slice (about 50 ms) and never leaves the lock held by nobody.

    It may be created outside an event loop and used from several loops (in several
    threads) at once.

    Args:
        name_or_lock: a lock name, or a sync ``Lock`` to share.
        mode: as for ``Lock`` (ignored when a ``Lock`` is given).
        recovery_interval: as for ``Lock`` (ignored when a ``Lock`` is given).

    Examples:
        >>> import anyio, aplock
        >>> async def main() -> None:
        ...     async with aplock.AsyncLock("docs.async") as lock:
        ...         print(lock.locked())
        >>> anyio.run(main)
        True
        >>> aplock.unlink("docs.async")
        True
    """

    __slots__ = ("_lock",)

    def __init__(
        self,
        name_or_lock: str | Lock,
        *,
        mode: int = DEFAULT_MODE,
        recovery_interval: float | None = RECOVERY_INTERVAL,
    ) -> None:
        if isinstance(name_or_lock, Lock):
            self._lock = name_or_lock
        else:
            self._lock = Lock(name_or_lock, mode=mode, recovery_interval=recovery_interval)

    @property
    def lock(self) -> Lock:
        """The sync ``Lock`` this shares its cross-process handle with."""
        return self._lock

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._lock.name

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the lock; the meaning of *block* and *timeout* is ``Lock.acquire``'s.

        Always a checkpoint: it yields to the event loop and raises if cancelled,
        even when the lock is free.

        Returns:
            ``True`` if acquired, ``False`` if the time ran out.

        Raises:
            TypeError: *block* is not a bool or int, or *timeout* is not a number
                (checked on every call, before yielding, whether the lock is free or not).
            ValueError: *timeout* is NaN.
            OverflowError: *timeout* is an int too large for a float.
        """
        if block is True and timeout is None:  # the default call: nothing to check
            wait = None
        else:
            wait = normalize_timeout(block, timeout, "aplock.AsyncLock", self._lock.name)
        return await _gate.acquire(core_of(self._lock), wait)

    def acquire_nowait(self) -> None:
        """Acquire the lock without waiting.

        Raises:
            anyio.WouldBlock: the lock is held.
        """
        if not self._lock.acquire(False):
            raise WouldBlock

    def release(self) -> None:
        """Release the lock (synchronous, like ``asyncio.Lock.release``).

        If a task of the calling event loop waits for it, the lock goes straight to
        that task, within a bound that gives other threads and processes their turn
        (see ``aplock._gate``).

        Raises:
            LockNotHeldError: (a ``ValueError``) nobody holds the lock.
        """
        _gate.release(core_of(self._lock))

    def locked(self) -> bool:
        """Whether some task, thread or process holds the lock now."""
        return self._lock.locked()

    @property
    def acquisition(self) -> Acquisition | None:
        """See ``Lock.acquisition``."""
        return self._lock.acquisition

    def info(self) -> LockInfo:
        """See ``Lock.info``."""
        return self._lock.info()

    def close(self) -> None:
        """Close the ``Lock`` this shares (see ``Lock.close``); the lock is not released."""
        self._lock.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (on this object or on its ``Lock``)."""
        return self._lock.closed

    def statistics(self) -> AsyncLockStatistics:
        """Whether the lock is held, and how many tasks of the current event loop wait."""
        return AsyncLockStatistics(self.locked(), _gate.gate_for(core_of(self._lock)).waiting)

    def __reduce__(self) -> tuple[Any, ...]:
        return (AsyncLock, (self._lock,))

    def __repr__(self) -> str:
        return repr(self._lock).replace("<aplock.Lock", "<aplock.AsyncLock", 1)


class AsyncSemaphore(_AsyncWithAcquire):
    """A named counting semaphore for ``async with``, under asyncio and Trio alike.

    ``AsyncSemaphore("x", 3)`` and ``Semaphore("x", 3)`` are the same semaphore; in one
    process they share one OS handle. It waits as ``AsyncLock`` does: no thread for a
    free permit, at most one waiting thread per semaphore per event loop (FIFO among that
    loop's tasks), and outer cancellation never leaks a permit.

    Args:
        name_or_semaphore: a semaphore name, or a sync ``Semaphore`` (or
            ``BoundedSemaphore``) to share.
        value: as for ``Semaphore`` (checked, then ignored when a semaphore is given).
        mode: as for ``Semaphore`` (ignored when a semaphore is given).
        recovery_interval: as for ``Semaphore`` (ignored when a semaphore is given).

    Examples:
        >>> import anyio, aplock
        >>> async def main() -> None:
        ...     async with aplock.AsyncSemaphore("docs.async.pool", 2) as sem:
        ...         print(sem.get_value())
        >>> anyio.run(main)
        1
        >>> aplock.unlink("docs.async.pool")
        True
    """

    __slots__ = ("_semaphore",)

    def __init__(
        self,
        name_or_semaphore: str | Semaphore,
        value: int = 1,
        *,
        mode: int = DEFAULT_MODE,
        recovery_interval: float | None = RECOVERY_INTERVAL,
    ) -> None:
        if isinstance(name_or_semaphore, Semaphore):
            check_value(value, "aplock.AsyncSemaphore", name_or_semaphore.name, 0)
            self._semaphore = name_or_semaphore
        else:
            self._semaphore = Semaphore(
                name_or_semaphore, value, mode=mode, recovery_interval=recovery_interval
            )

    @property
    def semaphore(self) -> Semaphore:
        """The sync semaphore this shares its cross-process handle with."""
        return self._semaphore

    @property
    def name(self) -> str:
        """The semaphore's name."""
        return self._semaphore.name

    @property
    def value(self) -> int:
        """The value the semaphore was created with."""
        return self._semaphore.value

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take one permit; the meaning of *block* and *timeout* is ``Semaphore.acquire``'s.

        Always a checkpoint: it yields to the event loop and raises if cancelled, even
        when a permit is free.

        Returns:
            ``True`` if a permit was taken, ``False`` if the time ran out.

        Raises:
            TypeError: *block* is not a bool or int, or *timeout* is not a number
                (checked on every call, before yielding).
            ValueError: *timeout* is NaN.
            OverflowError: *timeout* is an int too large for a float.
        """
        if block is True and timeout is None:
            wait = None
        else:
            wait = normalize_timeout(block, timeout, "aplock.AsyncSemaphore", self.name)
        return await _gate.acquire(core_of(self._semaphore), wait)

    def acquire_nowait(self) -> None:
        """Take one permit without waiting.

        Raises:
            anyio.WouldBlock: no permit is free.
        """
        if not self._semaphore.acquire(False):
            raise WouldBlock

    def release(self) -> None:
        """Return one permit (synchronous, like ``asyncio.Semaphore.release``).

        If a task of the calling event loop waits for a permit, this process's permit
        goes straight to that task, within the same bound as ``AsyncLock.release``.

        Raises:
            LockNotHeldError: (a ``ValueError``) a bounded semaphore's permits are all free.
        """
        _gate.release(core_of(self._semaphore))

    def get_value(self) -> int:
        """The number of free permits now."""
        return self._semaphore.get_value()

    def info(self) -> SemaphoreInfo:
        """See ``Semaphore.info``."""
        return self._semaphore.info()

    def close(self) -> None:
        """Close the semaphore this shares (see ``Semaphore.close``); no permit is released."""
        self._semaphore.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (on this object or on its semaphore)."""
        return self._semaphore.closed

    def unlink(self) -> bool:
        """Remove the semaphore's OS objects (see ``aplock.unlink``)."""
        return self._semaphore.unlink()

    def __reduce__(self) -> tuple[Any, ...]:
        return (AsyncSemaphore, (self._semaphore,))

    def __repr__(self) -> str:
        inner = repr(self._semaphore)
        bounded = "<aplock.BoundedSemaphore "
        if inner.startswith(bounded):
            return inner.replace(bounded, "<aplock.AsyncSemaphore (bounded) ", 1)
        return inner.replace("<aplock.Semaphore ", "<aplock.AsyncSemaphore ", 1)
