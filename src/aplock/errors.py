"""Every public exception and warning of aplock, the PostgreSQL backend's included.

Every error names the lock it is about and says what to do; every one pickles, so it
survives a trip through ``multiprocessing`` or ``concurrent.futures``. Each is importable
from ``aplock`` and from here; the module where users meet one re-exports it too
(``aplock.postgres.LockLostError``, ``aplock.startup.OnceTimeoutError``)::

    Exception
    └── LockError                     .name: the user's lock name
        ├── LockNotHeldError          + ValueError: release() of a lock nobody holds (on
        │                             PostgreSQL: that this object does not hold)
        ├── LockClosedError           + RuntimeError: use after close()
        ├── LockKindError             .kind, .wanted: the name is another kind of object
        │                             (a lock opened as a semaphore, or the reverse)
        ├── LockPermissionError       + PermissionError: the OS objects belong to someone else
        ├── LockUnavailableError      + OSError: /dev/shm missing or full, no handles left;
        │                             the PostgreSQL server unreachable or refusing
        ├── LockLostError             PostgreSQL: this object held the lock, but its session
        │                             ended or changed
        └── OnceTimeoutError          + TimeoutError, .key, .timeout: Once/AsyncOnce gave up
                                      waiting for the lock

    UserWarning
    └── LockWarning                   .name
        └── AbandonedLockWarning      .pid, .generation: this acquisition recovered a lock
                                      whose holder had died
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AbandonedLockWarning",
    "LockClosedError",
    "LockError",
    "LockKindError",
    "LockLostError",
    "LockNotHeldError",
    "LockPermissionError",
    "LockUnavailableError",
    "LockWarning",
    "OnceTimeoutError",
]


class LockError(Exception):
    """Base of every aplock error.

    Attributes:
        name: the lock's name, as the user gave it.
        detail: what went wrong and what to do, without the lock's name.
    """

    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        self.detail = detail
        super().__init__(f"lock {name!r}: {detail}")

    def __str__(self) -> str:
        return f"lock {self.name!r}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, detail={self.detail!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.detail), self.__dict__)


class LockNotHeldError(LockError, ValueError):
    """``release()`` was called on a lock that nobody holds."""


class LockClosedError(LockError, RuntimeError):
    """The lock object was used after ``close()``."""


#: The class that opens each kind of object, for messages.
_CLASS_OF_KIND = {
    "lock": "aplock.Lock",
    "semaphore": "aplock.Semaphore",
    "bounded semaphore": "aplock.BoundedSemaphore",
}


class LockKindError(LockError):
    """The name belongs to another kind of object than the one this call opens.

    A name is one kind of object: a lock, a semaphore or a bounded semaphore. Opening a
    lock's name as a semaphore, or the reverse, raises this.

    Attributes:
        kind: what the name is (``"lock"``, ``"semaphore"``, ``"bounded semaphore"``).
        wanted: what this call tried to open it as.
    """

    def __init__(self, name: str, kind: str, wanted: str) -> None:
        self.kind = kind
        self.wanted = wanted
        opener = _CLASS_OF_KIND.get(kind)
        how = f"open it with {opener}({name!r}), or " if opener else ""
        super().__init__(
            name,
            f"it is a {kind}, not a {wanted}: a name is one kind of object; {how}choose "
            f"another name for the {wanted}",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.kind, self.wanted))


class _OSLockError(LockError, OSError):
    """A lock error that is also an ``OSError`` (keeps ``errno`` when the OS gave one)."""

    def __init__(self, name: str, detail: str, errno: int | None = None) -> None:
        super().__init__(name, detail)
        self.errno = errno
        self.strerror = detail

    def __str__(self) -> str:
        return LockError.__str__(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.detail, self.errno), self.__dict__)


class LockPermissionError(_OSLockError, PermissionError):
    """The lock's OS objects exist but this process may not use them."""


class LockUnavailableError(_OSLockError):
    """The OS cannot provide the lock (``/dev/shm`` missing or full, too many open handles)."""


class LockLostError(LockError):
    """This object held the lock, but the PostgreSQL session that held it is gone.

    The server released the lock when the session ended (connection dropped,
    ``pg_terminate_backend``, server restart), or something else released the
    session's locks (``pg_advisory_unlock_all``, ``DISCARD ALL``), or a
    transaction-pooling proxy moved the connection to another session. Another
    process may hold the lock now: whatever it protected may have been changed
    since. Raised by ``release()`` (which still leaves the object not holding the
    lock, ready to acquire again) and by ``check()``.
    """


class OnceTimeoutError(LockError, TimeoutError):
    """``run()`` or ``reset()`` gave up waiting for the lock after *timeout* seconds.

    The work was neither run nor skipped by this call: another process held the lock
    (normally: it is running the work) for longer than the timeout.

    Attributes:
        name: the lock's name.
        key: the key of the work.
        timeout: the seconds waited.
    """

    def __init__(self, name: str, key: str, timeout: float) -> None:
        self.key = key
        self.timeout = timeout
        super().__init__(
            name,
            f"gave up after {timeout:g} s waiting for the lock to run the work for key "
            f"{key!r}: another process holds it, most likely running that work. Wait "
            f"longer (timeout=None waits until it is done), or see who holds it with "
            f"'python -m aplock show {name!r}'.",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.key, self.timeout))


class LockWarning(UserWarning):
    """Base of aplock's warnings. ``name`` is the lock's name."""

    def __init__(self, name: str, detail: str) -> None:
        self.name = name
        self.detail = detail
        super().__init__(f"lock {name!r}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.detail), self.__dict__)


class AbandonedLockWarning(LockWarning):
    """This acquisition took over a lock whose holder died while holding it.

    Whatever the dead holder was protecting may be half done: check it before you trust
    it. ``pid`` is the dead holder's process id and ``generation`` the fencing token of
    its acquisition.
    """

    def __init__(self, name: str, pid: int, generation: int) -> None:
        self.pid = pid
        self.generation = generation
        super().__init__(
            name,
            f"the previous holder (pid {pid}, generation {generation}) died while holding "
            "it; this process took it over. Check what it protected before relying on it.",
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.pid, self.generation))
