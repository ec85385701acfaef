"""``aplock.Lock``: a cross-process lock with the semantics of ``multiprocessing.Lock``.

Knows nothing of async; ``aplock.aio.AsyncLock`` composes it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._context import WithAcquire as _WithAcquire
from ._deadline import Deadline, normalize_timeout
from ._names import posix_names, validate
from ._posix import handle as _handle
from ._posix import ipc as _posix
from ._posix import record as _state
from ._posix import registry as _registry
from ._posix.fastpath import FastHandle
from ._posix.identity import identity_of, judge
from ._posix.lock import LockCore

if TYPE_CHECKING:
    from ._posix._fast import FastLock

__all__ = ["Acquisition", "Lock", "LockInfo", "unlink"]

_HAS_VALUE = _posix.HAS_VALUE
_PID_WORD = _state.PID_WORD
#: Seconds of the first wait of a blocking ``acquire()`` on the compiled path, made
#: straight in C before the waiting loop (see ``Lock.acquire``).
_FIRST_SLICE = 0.01


class _Steps(Protocol):
    """What ``release()`` and ``locked()`` call: a ``Handle``, its ``FastLock``, or a closed
    handle."""

    def release(self) -> None: ...
    def locked(self) -> bool: ...


#: Default seconds between checks, while waiting, of whether the holder has died.
RECOVERY_INTERVAL = 0.25


@dataclass(frozen=True, slots=True)
class Acquisition:
    """What an object's latest successful ``acquire()`` got.

    Attributes:
        generation: the fencing token: strictly greater than that of every earlier
            acquisition of the lock on this host. Pass it along with work guarded by
            the lock so that the resource can reject a holder that was presumed dead.
        abandoned_pid: the pid of a holder that died holding the lock, if this
            acquisition took it over (``None`` for an ordinary acquisition).
    """

    generation: int
    abandoned_pid: int | None = None


@dataclass(frozen=True, slots=True)
class LockInfo:
    """A snapshot of a lock's state, for inspection (see ``Lock.info``).

    Attributes:
        name: the lock's name.
        locked: whether it is held.
        holder_pid: pid recorded as the holder (``None`` if none; ``-1`` if detached
            by ``hand_off()``).
        holder_alive: whether that process is alive (``None`` when there is none or it
            cannot be told, e.g. another pid namespace).
        held_for: seconds since the current holder acquired it (``None`` if free).
        generation: the fencing token of the latest acquisition.
        recoveries: how many times a dead holder's lock was taken over.
    """

    name: str
    locked: bool
    holder_pid: int | None
    holder_alive: bool | None
    held_for: float | None
    generation: int
    recoveries: int


class Lock(_WithAcquire):
    """A non-recursive lock shared by every process of this user that opens the same name.

    It behaves exactly like ``multiprocessing.Lock`` (any thread or process may
    release it; releasing an unlocked lock raises ``ValueError``), but unrelated
    processes open it by name, it pickles by name, and a holder that dies does not
    wedge it: a waiter takes it over within about ``recovery_interval`` seconds and
    is told with an ``AbandonedLockWarning``.

    Args:
        name: any non-empty string of at most 1,024 characters; the same name is the
            same lock host-wide.
        mode: permission bits for the lock's OS objects when this call creates them.
            The default ``0o600`` keeps other users out; widen it (``0o660``,
            ``0o666``) only to share the lock with other users deliberately.
        recovery_interval: seconds between checks, while waiting, of whether the
            holder has died; ``None`` never takes a dead holder's lock over.

    Raises:
        TypeError: *name* is not a string.
        ValueError: *name* is empty or longer than 1,024 characters.
        LockPermissionError: the lock exists but belongs to another user.
        LockUnavailableError: the OS cannot provide it (``/dev/shm`` missing or full).

    Examples:
        >>> import aplock
        >>> with aplock.Lock("docs.example") as lock:
        ...     lock.locked()
        True
        >>> aplock.unlink("docs.example")
        True
    """

    __slots__ = ("__weakref__", "_core", "_f", "_h", "_name", "_t")

    def __init__(
        self,
        name: str,
        *,
        mode: int = _handle.DEFAULT_MODE,
        recovery_interval: float | None = RECOVERY_INTERVAL,
    ) -> None:
        self._name = validate(name)
        if recovery_interval is not None and not recovery_interval > 0:
            raise ValueError(f"recovery_interval must be > 0 or None, not {recovery_interval!r}")
        self._core = core = LockCore(name, mode, recovery_interval)
        #: The core's handle, kept here too for the uncontended path (see ``close``).
        self._h: _handle.Handle | _registry.ClosedHandle = core.h
        #: The compiled steps (``None`` on the pure-Python path or once closed): ``f[0]``
        #: tries to take the lock (a subscript: see ``FastHandle.try_take``).
        self._f: FastLock | None = core.h.fast if isinstance(core.h, FastHandle) else None
        #: What release() and locked() call: the C object, else the handle.
        self._t: _Steps = self._f if self._f is not None else core.h

    @property
    def name(self) -> str:
        """The name the lock was opened with."""
        return self._name

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the lock, as ``multiprocessing.Lock.acquire`` does.

        Args:
            block: with ``False``, never wait (and ignore *timeout*).
            timeout: the most seconds to wait; ``None`` waits forever, a negative
                value means zero.

        Returns:
            ``True`` if the lock was acquired, ``False`` if the time ran out.

        Raises:
            TypeError: *block* is not a bool or int, or *timeout* is not a number
                (checked on every call, whether the lock is free or not).
            ValueError: *timeout* is NaN.
            OverflowError: *timeout* is an int too large for a float.
        """
        h = self._h
        f = self._f
        if block is not True or timeout is not None:  # not the default call
            # Check the arguments (normalize_timeout), unless they are the usual valid
            # ones: block=False, or a positive float or int timeout (NaN is not > 0.0).
            if not (
                (block is False and timeout is None)
                or (
                    block is True
                    and (
                        (type(timeout) is float and timeout > 0.0)
                        or (type(timeout) is int and 0 < timeout < 2**53)  # exact as floats
                    )
                )
            ):
                timeout = normalize_timeout(block, timeout, "aplock.Lock", self._name)
                block = timeout != 0.0  # zero or less: one try, as block=False
            if not block:
                if f is not None:
                    return f[0] is not None  # a failed sem_trywait costs nothing in C
                if not h.sem.value if _HAS_VALUE else h.words[_PID_WORD]:
                    return False  # held: answer without the cost of a failed sem_trywait
        if (h.try_take() if f is None else f[0]) is not None:
            return True
        if not block:
            return False
        if f is not None and timeout is None and f[_FIRST_SLICE] is not None:
            # Under contention most waits end within this first slice, taken in C with
            # no Python step before it; the loop (recovery, close) starts after it. A
            # subscript: no handler runs between the take and this return.
            return True
        core = self._core
        got, takeover = core.wait(Deadline.after(timeout), None)
        if takeover is not None:
            core.warn_abandoned(takeover)
        return got

    def release(self) -> None:
        """Release the lock. Any thread or process may release it.

        Raises:
            LockNotHeldError: (a ``ValueError``) nobody holds the lock.
        """
        self._t.release()

    def locked(self) -> bool:
        """Whether some thread or process holds the lock now."""
        return self._t.locked()

    @property
    def acquisition(self) -> Acquisition | None:
        """The current acquisition's fencing token and recovery status (``None`` if free).

        Read it while you hold the lock: it is then your acquisition.
        """
        h = self._h
        if not h.locked():
            return None
        snap = h.snapshot()
        abandoned = snap.abandoned_pid if snap.recovered_generation == snap.generation else None
        return Acquisition(snap.generation, abandoned)

    def hand_off(self, pid: int | None = None) -> None:
        """Record another process (or nobody) as the holder of the current acquisition.

        A holder that is going to exit and leave the release to another process calls
        this first, so that its exit is not taken for death while holding the lock:
        with *pid*, that process becomes the recorded holder (and is watched instead);
        with ``None`` the lock is detached and never taken over, whoever dies.

        Raises:
            LockNotHeldError: nobody holds the lock.
            TypeError: *pid* is not an ``int``.
            ValueError: *pid* is not the pid of an existing process.
        """
        self._h.hand_off(None if pid is None else identity_of(self._hand_off_pid(pid)))

    def _hand_off_pid(self, pid: object) -> int:
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise TypeError(
                f"aplock.Lock({self._name!r}).hand_off(): pid must be a process id (int) "
                f"or None, not {pid!r}"
            )
        exists = pid > 0
        if exists:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                exists = False
            except PermissionError:
                pass  # it exists, and belongs to another user
        if not exists:
            raise ValueError(
                f"aplock.Lock({self._name!r}).hand_off(): pid {pid} is no process's; pass "
                "the pid of the live process that will release the lock, or None to detach it"
            )
        return pid

    def info(self) -> LockInfo:
        """A snapshot of the lock's state: holder, whether it is alive, generation."""
        h = self._h
        snap = h.snapshot()
        locked = h.locked()
        pid = snap.pid if locked and snap.pid != 0 else None
        alive = None if pid is None else judge(snap.holder)
        held_for = max(time.time() - snap.acquired_at, 0.0) if pid is not None else None
        return LockInfo(self._name, locked, pid, alive, held_for, snap.generation, snap.recoveries)

    def close(self) -> None:
        """Drop this object's use of the process's handle; other processes are unaffected.

        Closing does not release the lock. Using the object afterwards raises
        ``LockClosedError``. Idempotent.
        """
        core = self._core
        core.close()
        self._f = None
        self._h = self._t = core.h

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._core.closed

    def unlink(self) -> bool:
        """Remove the lock's OS objects (see ``aplock.unlink``)."""
        return unlink(self._name)

    def __reduce__(self) -> tuple[Any, ...]:
        core = self._core
        return (_rebuild, (self._name, core.mode, core.recovery_interval))

    def __repr__(self) -> str:
        h = self._h
        if self._core.closed:
            return f"<aplock.Lock {self._name!r} closed>"
        snap = h.snapshot()
        if not h.locked():
            state = "unlocked"
        elif snap.pid > 0:
            state = f"locked by pid {snap.pid}"
        elif snap.pid < 0:
            state = "locked (detached)"
        else:
            state = "locked"
        return f"<aplock.Lock {self._name!r} {state}, generation {snap.generation}>"


def _rebuild(name: str, mode: int, recovery_interval: float | None) -> Lock:
    return Lock(name, mode=mode, recovery_interval=recovery_interval)


def unlink(name: str) -> bool:
    """Remove the OS objects of lock *name*; return whether there were any.

    A missing lock is not an error. Only call this when no process uses the lock any
    more: objects that have it open (in this process or another) keep the old OS
    objects, while objects created afterwards get new ones, so the two groups would no
    longer exclude each other.
    """
    names = posix_names(validate(name), short=_posix.SHORT_NAMES)
    # New objects in this process must open the new lock, as other processes will.
    _registry.forget_handle(name)
    return _posix.unlink(name, names)
