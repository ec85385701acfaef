"""``aplock.Semaphore`` and ``aplock.BoundedSemaphore``: counting semaphores shared by name.

They are ``multiprocessing.Semaphore`` and ``multiprocessing.BoundedSemaphore`` that
unrelated processes open by name, the way ``aplock.Lock`` is ``multiprocessing.Lock``.
Their permits are owned: a permit held by a process that dies comes back to the waiters.
Knows nothing of async; ``aplock.aio.AsyncSemaphore`` composes them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from ._context import WithAcquire as _WithAcquire
from ._deadline import Deadline, normalize_timeout
from ._names import validate
from ._posix import semaphore as _sem
from ._posix import slots as _slots
from ._posix.handle import DEFAULT_MODE
from ._posix.identity import judge
from .sync import RECOVERY_INTERVAL
from .sync import unlink as _unlink

__all__ = ["BoundedSemaphore", "PermitHolder", "Semaphore", "SemaphoreInfo"]

#: The largest ``value`` (and the most permits a ``Semaphore`` can have).
MAX_VALUE = _slots.CAPACITY


@dataclass(frozen=True, slots=True)
class PermitHolder:
    """One held permit, for inspection (see ``Semaphore.info``).

    Attributes:
        pid: the process that holds it.
        alive: whether that process is alive (``None`` if it cannot be told, e.g. another
            pid namespace).
        held_for: seconds since it was acquired.
        generation: the fencing token of its acquisition.
    """

    pid: int
    alive: bool | None
    held_for: float
    generation: int


@dataclass(frozen=True, slots=True)
class SemaphoreInfo:
    """A snapshot of a semaphore's state (see ``Semaphore.info``).

    Attributes:
        name: the semaphore's name.
        kind: ``"semaphore"`` or ``"bounded semaphore"``.
        value: the value it was created with.
        free: the free permits (more than *value* after extra releases of a
            ``Semaphore``).
        holders: the held permits, oldest first.
        generation: the fencing token of the latest acquisition.
        recoveries: how many permits of dead holders were given back.
    """

    name: str
    kind: str
    value: int
    free: int
    holders: tuple[PermitHolder, ...]
    generation: int
    recoveries: int


class Semaphore(_WithAcquire):
    """A counting semaphore shared by every process of this user that opens the same name.

    It behaves like ``multiprocessing.Semaphore``: ``acquire()`` takes one permit,
    ``release()`` returns one, any thread or process may release, and a release when no
    permit is held raises the count above *value*. Unrelated processes open it by name,
    it pickles by name, and the permits of a holder that dies come back: a waiter frees
    them within about ``recovery_interval`` seconds, and the acquisition that gets one is
    told with an ``AbandonedLockWarning``. A live holder, even a stopped one, is never
    robbed.

    A release by a process that holds permits gives back the one it acquired last; by a
    process that holds none, the oldest held permit (so that a permit acquired in one
    process and released in another stays counted once); with none held at all, it
    adds a permit.

    Args:
        name: any non-empty string of at most 1,024 characters; the same name is the
            same semaphore host-wide (and cannot also be a lock).
        value: the number of permits, from 0 to 1,024. The first opener creates the
            semaphore with it; every later opener must pass the same value.
        mode: permission bits for its OS objects when this call creates them, as for
            ``Lock``.
        recovery_interval: seconds between checks, while waiting, for permits whose
            holder died; ``None`` never frees them.

    Raises:
        TypeError: *name* is not a string, or *value* not an ``int``.
        ValueError: *name* is empty or too long, *value* out of range, or the semaphore
            exists with another value.
        LockKindError: the name is a lock (or the other kind of semaphore).
        LockPermissionError: it exists but belongs to another user.
        LockUnavailableError: the OS cannot provide it (``/dev/shm`` missing or full).

    Examples:
        >>> import aplock
        >>> with aplock.Semaphore("docs.pool", 2) as sem:
        ...     sem.get_value()
        1
        >>> aplock.unlink("docs.pool")
        True
    """

    _BOUNDED: ClassVar[bool] = False
    _MIN_VALUE: ClassVar[int] = 0
    __slots__ = ("__weakref__", "_core", "_name")

    def __init__(
        self,
        name: str,
        value: int = 1,
        *,
        mode: int = DEFAULT_MODE,
        recovery_interval: float | None = RECOVERY_INTERVAL,
    ) -> None:
        self._name = validate(name)
        cls = self._label()
        check_value(value, cls, name, self._MIN_VALUE)
        _check_mode(mode, cls, name)
        _check_recovery_interval(recovery_interval, cls, name)
        self._core = _sem.SemaphoreCore(name, mode, self._BOUNDED, value, recovery_interval)

    @classmethod
    def _label(cls) -> str:
        return f"aplock.{'BoundedSemaphore' if cls._BOUNDED else 'Semaphore'}"

    @property
    def name(self) -> str:
        """The name the semaphore was opened with."""
        return self._name

    @property
    def value(self) -> int:
        """The value the semaphore was created with."""
        return self._core.h.value

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take one permit, as ``multiprocessing.Semaphore.acquire`` does.

        Args:
            block: with ``False``, never wait (and ignore *timeout*).
            timeout: the most seconds to wait; ``None`` waits forever, a negative
                value means zero.

        Returns:
            ``True`` if a permit was taken, ``False`` if the time ran out.

        Raises:
            TypeError: *block* is not a bool or int, or *timeout* is not a number
                (checked on every call).
            ValueError: *timeout* is NaN.
            OverflowError: *timeout* is an int too large for a float.
        """
        if block is not True or timeout is not None:
            timeout = normalize_timeout(block, timeout, self._label(), self._name)
            block = timeout != 0.0
        core = self._core
        patience = _sem.TRY_PATIENCE if timeout is None else min(_sem.TRY_PATIENCE, timeout)
        if core.try_acquire(patience):
            return True
        if not block:
            return False
        got, takeover = core.wait(Deadline.after(timeout), None)
        if takeover is not None:
            core.warn_abandoned(takeover)
        return got

    def release(self) -> None:
        """Return one permit. Any thread or process may.

        Raises:
            ValueError: the count would exceed 1,024, the most permits a semaphore
                can have.
        """
        self._core.release()

    def get_value(self) -> int:
        """The number of free permits now."""
        return self._core.h.free()

    def info(self) -> SemaphoreInfo:
        """A snapshot of the semaphore: free permits, holders and whether they are alive."""
        table = self._core.h.snapshot()
        now = time.time()
        holders = tuple(
            PermitHolder(p.holder.pid, judge(p.holder), max(now - p.acquired_at, 0.0), p.generation)
            for p in table.held
        )
        return SemaphoreInfo(
            self._name,
            table.kind,
            table.value,
            table.free,
            holders,
            table.generation,
            table.recoveries,
        )

    def close(self) -> None:
        """Drop this object's use of the process's handle; other processes are unaffected.

        Closing does not release any permit. Using the object afterwards raises
        ``LockClosedError``. Idempotent.
        """
        self._core.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._core.closed

    def unlink(self) -> bool:
        """Remove the semaphore's OS objects (see ``aplock.unlink``)."""
        _sem.forget_handle(self._name)
        return _unlink(self._name)

    def __reduce__(self) -> tuple[Any, ...]:
        core = self._core
        return (
            _rebuild,
            (self._BOUNDED, self._name, self.value, core.mode, core.recovery_interval),
        )

    def __repr__(self) -> str:
        label = self._label()
        if self._core.closed:
            return f"<{label} {self._name!r} closed>"
        table = self._core.h.snapshot()
        pids = sorted({p.holder.pid for p in table.held})
        shown = ", ".join(map(str, pids[:8])) + (", ..." if len(pids) > 8 else "")
        held = f", held by pid {shown}" if pids else ""
        return f"<{label} {self._name!r} value={table.value}, {table.free} free{held}>"


class BoundedSemaphore(Semaphore):
    """A ``Semaphore`` whose count never exceeds its value: ``multiprocessing.BoundedSemaphore``.

    ``release()`` when every permit is already free raises ``LockNotHeldError`` (a
    ``ValueError``), however many releases race, from however many threads and
    processes. *value* is from 1 to 1,024; the other arguments are ``Semaphore``'s. A
    name is a bounded semaphore or a semaphore, not both.

    Examples:
        >>> import aplock
        >>> sem = aplock.BoundedSemaphore("docs.bounded", 1)
        >>> try:
        ...     sem.release()
        ... except ValueError as exc:
        ...     print(type(exc).__name__)
        LockNotHeldError
        >>> sem.unlink()
        True
    """

    _BOUNDED: ClassVar[bool] = True
    _MIN_VALUE: ClassVar[int] = 1
    __slots__ = ()

    def release(self) -> None:
        """Return one permit. Any thread or process may.

        Raises:
            LockNotHeldError: (a ``ValueError``) every permit is already free.
        """
        self._core.release()


def _rebuild(
    bounded: bool, name: str, value: int, mode: int, recovery_interval: float | None
) -> Semaphore:
    cls = BoundedSemaphore if bounded else Semaphore
    return cls(name, value, mode=mode, recovery_interval=recovery_interval)


def check_value(value: object, cls: str, name: str, least: int) -> int:
    """*value* if it is a valid semaphore value for *cls*, else ``TypeError``/``ValueError``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f"{cls}({name!r}): value must be an int, not {type(value).__name__} {value!r}"
        )
    if not least <= value <= MAX_VALUE:
        raise ValueError(f"{cls}({name!r}): value must be from {least} to {MAX_VALUE}, not {value}")
    return value


def _check_mode(mode: object, cls: str, name: str) -> None:
    if not isinstance(mode, int) or isinstance(mode, bool):
        raise TypeError(f"{cls}({name!r}): mode must be an int such as 0o600, not {mode!r}")
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{cls}({name!r}): mode must be permission bits 0 to 0o777, not {mode:#o}")


def _check_recovery_interval(interval: object, cls: str, name: str) -> None:
    if interval is None:
        return
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise TypeError(
            f"{cls}({name!r}): recovery_interval must be a number of seconds or None, "
            f"not {interval!r}"
        )
    if math.isnan(interval) or not interval > 0:
        raise ValueError(
            f"{cls}({name!r}): recovery_interval must be > 0 or None, not {interval!r}"
        )
