"""``aplock.AsyncLock``: the cross-process lock for ``async with``, on asyncio and Trio.

Written once on AnyIO. It composes a sync ``Lock`` (sharing the process's one OS handle
for the name) and adds what waiting inside an event loop needs:

- **No thread for a free lock.** ``acquire()`` checkpoints, then tries the semaphore on
  the event-loop thread; only a contended acquire touches a thread.
- **One waiting thread per lock per event loop.** The tasks of one loop that wait for
  one lock queue FIFO in the loop's gate for that lock. While any wait, one thread of
  aplock's own (never from AnyIO's default pool, which FastAPI's sync endpoints share)
  waits on the OS semaphore in slices, is woken by the kernel when the lock is posted,
  and grants it to the first task in the queue through that task's event loop.
- **Cancellation never leaks the lock.** A task that stops waiting leaves the queue
  under the gate's mutex; if the lock was granted to it meanwhile, it releases it. The
  thread exits within one slice once no task waits, so ``asyncio.run`` and ``trio.run``
  shut down promptly.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio import WouldBlock

from ._deadline import Deadline, normalize_timeout
from ._eventloop import current_loop as _current_loop
from ._eventloop import notifier as _notifier
from ._posix.handle import DEFAULT_MODE, Takeover
from .sync import RECOVERY_INTERVAL, Acquisition, Lock, LockInfo

if TYPE_CHECKING:
    from collections.abc import Callable
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


_WAITING, _GRANTED, _GONE, _FAILED = 0, 1, 2, 3


class _Waiter:
    """One task waiting in a gate; its state changes only under the gate's mutex."""

    __slots__ = ("error", "event", "state", "takeover")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.state = _WAITING
        self.takeover: Takeover | None = None
        self.error: BaseException | None = None


class _Gate:
    """The tasks of one event loop that wait for one lock: FIFO, at most one thread.

    While tasks wait, one thread (the gate's server) waits on the OS semaphore in
    slices; each time it gets the lock it grants it to the first waiting task, wakes
    that task through its event loop, and goes back to waiting for the next one. It
    exits once no task waits. A task that stops waiting leaves the queue under the
    mutex; if the lock was granted to it meanwhile, it releases it.
    """

    __slots__ = ("mutex", "notify", "server", "waiters")

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.waiters: deque[_Waiter] = deque()
        self.server: threading.Thread | None = None
        self.notify: Callable[[Callable[[], object]], object] | None = None

    @property
    def waiting(self) -> int:
        return len(self.waiters)


# (name, recovery interval) -> event loop (asyncio loop or Trio token) -> gate
_GateKey = tuple[str, float | None]
_gates: dict[_GateKey, weakref.WeakKeyDictionary[object, _Gate]] = {}
_gates_lock = threading.Lock()


def _gate(lock: Lock) -> _Gate:
    """The current event loop's gate for *lock*'s name and recovery setting."""
    key = (lock.name, lock._recovery_interval)
    loop = _current_loop()
    per_loop = _gates.get(key)
    if per_loop is not None:
        gate = per_loop.get(loop)
        if gate is not None:
            return gate
    with _gates_lock:
        per_loop = _gates.setdefault(key, weakref.WeakKeyDictionary())
        gate = per_loop.get(loop)
        if gate is None:
            gate = per_loop[loop] = _Gate()
        return gate


def _forget_gates() -> None:
    global _gates_lock
    _gates_lock = threading.Lock()
    _gates.clear()


os.register_at_fork(after_in_child=_forget_gates)


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

        Raises:
            TypeError: *block* is not a bool or int, or *timeout* is not a number
                (checked on every call, before yielding, whether the lock is free or not).
            ValueError: *timeout* is NaN.
            OverflowError: *timeout* is an int too large for a float.
        """
        lock = self._lock
        if block is True and timeout is None:  # the default call: nothing to check
            wait = None
        else:
            wait = normalize_timeout(block, timeout, "aplock.AsyncLock", lock.name)
        await anyio.lowlevel.checkpoint()
        gate = _gate(lock)
        if not gate.waiting and lock.acquire(False):
            return True
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
        waiter = _Waiter()
        with gate.mutex:
            gate.waiters.append(waiter)
            if gate.server is None:
                gate.notify = _notifier(_current_loop())
                # The server waits through a lock object of its own, so that closing
                # any one waiter's object cannot end the others' waits.
                own = Lock(self.name, recovery_interval=self._lock._recovery_interval)
                gate.server = threading.Thread(
                    target=_serve,
                    args=(own, gate),
                    name=f"aplock {self.name}",
                    daemon=True,
                )
                gate.server.start()
        try:
            with anyio.move_on_after(_seconds(deadline)):
                await waiter.event.wait()
        except BaseException:
            if _leave(gate, waiter):
                self._lock.release()  # granted while we were being cancelled: give it back
            with anyio.CancelScope(shield=True):
                await _server_idle(gate)
            raise
        if waiter.error is not None:
            raise waiter.error
        if not _leave(gate, waiter):
            await _server_idle(gate)
            return False
        if waiter.takeover is not None:
            self._lock._warn_abandoned(waiter.takeover)
        return True

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
        return AsyncLockStatistics(self.locked(), _gate(self._lock).waiting)

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


def _leave(gate: _Gate, waiter: _Waiter) -> bool:
    """Stop waiting; return whether the lock had been granted to *waiter*."""
    with gate.mutex:
        if waiter.state == _GRANTED:
            return True
        if waiter.state == _WAITING:
            gate.waiters.remove(waiter)
        waiter.state = _GONE
        return False


def _serve(lock: Lock, gate: _Gate) -> None:
    """A gate's server thread; if waiting fails, every waiting task gets the error."""
    try:
        _grant_in_order(lock, gate)
    except BaseException as exc:  # e.g. the lock was closed, or the OS refused a wait
        with gate.mutex:
            failed = list(gate.waiters)
            gate.waiters.clear()
            for waiter in failed:
                waiter.state, waiter.error = _FAILED, exc
            notify = gate.notify
            gate.server = gate.notify = None
        for waiter in failed:
            try:
                notify(waiter.event.set)  # type: ignore[misc]
            except RuntimeError:  # its event loop is gone: nobody left to tell
                break


def _grant_in_order(lock: Lock, gate: _Gate) -> None:
    """Grant the lock to the gate's waiting tasks, in order, until none waits."""
    forever = Deadline(None)

    def nobody_waits() -> bool:
        return not gate.waiters

    while True:
        with gate.mutex:
            if not gate.waiters:
                gate.server = gate.notify = None
                return
        got, takeover = lock._wait_quietly(forever, nobody_waits)
        if not got:
            continue
        with gate.mutex:
            waiter = gate.waiters.popleft() if gate.waiters else None
            if waiter is not None:
                waiter.state = _GRANTED
                waiter.takeover = takeover
            notify = gate.notify
        if waiter is None:
            lock.release()  # everybody left meanwhile; exit at the top if still nobody
            continue
        try:
            notify(waiter.event.set)  # type: ignore[misc]
        except RuntimeError:  # its event loop is gone
            lock.release()
            with gate.mutex:
                gate.server = gate.notify = None
            return


async def _server_idle(gate: _Gate) -> None:
    """After the last waiter left: wait (at most a slice) until the server has stopped.

    So that, once a cancelled or timed-out ``acquire()`` returns, no thread of this
    process is still about to take the lock on its behalf.
    """
    server = gate.server
    while server is not None and gate.server is server and not gate.waiters:
        await anyio.sleep(0.001)
