"""``aplock.AsyncLock``: the cross-process lock for ``async with``, on asyncio and Trio.

Written once on AnyIO. It composes a sync ``Lock`` (sharing the process's one OS handle
for the name) and adds what waiting inside an event loop needs:

- **No thread for a free lock.** ``acquire()`` checkpoints, then tries the semaphore on
  the event-loop thread; only a contended acquire touches a thread.
- **One waiting thread per lock per event loop.** The tasks of one loop that wait for
  one lock queue FIFO on an in-loop gate; only the task at its head waits on the OS
  semaphore, in a worker thread drawn through aplock's own capacity limiter, never
  AnyIO's default one (which FastAPI's sync endpoints share).
- **Cancellation never leaks the lock.** The worker waits in short slices and checks a
  flag that the task sets when it is cancelled; the task waits for its worker to end,
  and if the worker won the lock after all, the task releases it before re-raising.
  So no worker outlives its task by more than one slice, and ``asyncio.run`` and
  ``trio.run`` shut down promptly.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio import WouldBlock

from ._deadline import Deadline, normalize_timeout
from ._handle import DEFAULT_MODE, Takeover
from .sync import RECOVERY_INTERVAL, Acquisition, Lock, LockInfo

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self

__all__ = ["AsyncLock", "AsyncLockStatistics"]


@dataclass(frozen=True, slots=True)
class AsyncLockStatistics:
    """What ``AsyncLock.statistics()`` reports.

    Attributes:
        locked: whether some task, thread or process holds the lock.
        tasks_waiting: tasks of the current event loop waiting for it.
    """

    locked: bool
    tasks_waiting: int


class _Gate:
    """The tasks of one event loop that wait for one lock: FIFO, one worker thread."""

    __slots__ = ("limiter", "queue", "waiting")

    def __init__(self) -> None:
        self.queue = anyio.Lock()
        self.limiter = anyio.CapacityLimiter(1)
        self.waiting = 0


# name -> event loop (asyncio loop or Trio token) -> gate
_gates: dict[str, weakref.WeakKeyDictionary[object, _Gate]] = {}
_gates_lock = threading.Lock()


def _current_loop() -> object:
    loop = asyncio._get_running_loop()
    return loop if loop is not None else anyio.lowlevel.current_token().native_token


def _gate(name: str) -> _Gate:
    loop = _current_loop()
    per_loop = _gates.get(name)
    if per_loop is not None:
        gate = per_loop.get(loop)
        if gate is not None:
            return gate
    with _gates_lock:
        per_loop = _gates.setdefault(name, weakref.WeakKeyDictionary())
        gate = per_loop.get(loop)
        if gate is None:
            gate = per_loop[loop] = _Gate()
        return gate


def _forget_gates() -> None:
    global _gates_lock
    _gates_lock = threading.Lock()
    _gates.clear()


os.register_at_fork(after_in_child=_forget_gates)


class _Handoff:
    """Hands a worker thread's acquisition to its task, or releases it if the task is gone.

    Whichever comes second of "the worker won the lock" and "the task gave up" releases
    it, under a mutex, so a cancelled wait never leaves the lock held by nobody, even if
    the task stopped waiting for its worker (as ``Task.cancel()`` on asyncio can do).
    """

    __slots__ = ("acquired", "gave_up", "mutex", "stop", "takeover")

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.acquired = False
        self.gave_up = False
        self.stop = False
        self.takeover: Takeover | None = None

    def stopping(self) -> bool:
        """Polled by the worker between slices."""
        return self.stop

    def wait(self, lock: Lock, deadline: Deadline) -> bool:
        """Runs in the worker thread."""
        got, self.takeover = lock._wait_quietly(deadline, self.stopping)
        if not got:
            return False
        with self.mutex:
            if self.gave_up:
                lock.release()
                return False
            self.acquired = True
            return True

    def give_up(self, lock: Lock) -> None:
        """Runs in the task that stops waiting: release what the worker already won."""
        self.stop = True
        with self.mutex:
            self.gave_up = True
            if self.acquired:
                self.acquired = False
                lock.release()


async def _stop_when_cancelled(handoff: _Handoff, finished: anyio.Event) -> None:
    """Until *finished*, watch for the waiting task's cancellation and stop its worker."""
    try:
        await finished.wait()
    finally:
        if not finished.is_set():
            handoff.stop = True


class AsyncLock:
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
        """
        await anyio.lowlevel.checkpoint()
        lock = self._lock
        gate = _gate(lock.name)
        if not gate.waiting and lock.acquire(False):
            return True
        wait = normalize_timeout(block, timeout)
        if wait == 0.0:
            return False
        return await self._wait(gate, Deadline.after(wait))

    def acquire_nowait(self) -> None:
        """Acquire the lock without waiting.

        Raises:
            anyio.WouldBlock: the lock is held.
        """
        if not self._lock.acquire(False):
            raise WouldBlock

    async def _wait(self, gate: _Gate, deadline: Deadline) -> bool:
        gate.waiting += 1
        try:
            with anyio.move_on_after(_seconds(deadline)):
                async with gate.queue:
                    if self._lock.acquire(False):
                        return True
                    return await self._wait_in_thread(gate, deadline)
            return False
        finally:
            gate.waiting -= 1

    async def _wait_in_thread(self, gate: _Gate, deadline: Deadline) -> bool:
        lock = self._lock
        handoff = _Handoff()
        finished = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stop_when_cancelled, handoff, finished)
                # Not abandoned on cancellation: the worker ends within one slice of
                # being told to stop, and only then does this task go on (or re-raise).
                acquired = await anyio.to_thread.run_sync(
                    handoff.wait, lock, deadline, limiter=gate.limiter
                )
                finished.set()
        except BaseException:
            handoff.give_up(lock)
            raise
        if handoff.stop:
            # Cancelled while the worker waited. Some backends deliver that cancellation
            # only at the next checkpoint: give back what the worker won, then raise it.
            handoff.give_up(lock)
            await anyio.lowlevel.checkpoint_if_cancelled()
            return False
        if acquired and handoff.takeover is not None:
            lock._warn_abandoned(handoff.takeover, stacklevel=4)  # from the task, not the worker
        return acquired

    def release(self) -> None:
        """Release the lock (synchronous, like ``asyncio.Lock.release``).

        Raises:
            LockNotHeldError: (a ``ValueError``) nobody holds the lock.
        """
        self._lock.release()

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

    def statistics(self) -> AsyncLockStatistics:
        """Whether the lock is held, and how many tasks of the current event loop wait."""
        return AsyncLockStatistics(self.locked(), _gate(self.name).waiting)

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, ...]:
        return (AsyncLock, (self._lock,))

    def __repr__(self) -> str:
        return repr(self._lock).replace("<aplock.Lock", "<aplock.AsyncLock", 1)


def _seconds(deadline: Deadline) -> float:
    left = deadline.remaining()
    return float("inf") if left is None else left
