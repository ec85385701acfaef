"""Public exception and warning types.

Every error names the lock it is about and says what to do; every one pickles, so it
survives a trip through ``multiprocessing`` or ``concurrent.futures``::

    Exception
    └── LockError                     .name: the user's lock name
        ├── LockNotHeldError          + ValueError: release() of a lock nobody holds
        ├── LockClosedError           + RuntimeError: use after close()
        ├── LockPermissionError       + PermissionError: the OS objects belong to someone else
        └── LockUnavailableError      + OSError: /dev/shm missing or full, no handles left

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
    "LockNotHeldError",
    "LockPermissionError",
    "LockUnavailableError",
    "LockWarning",
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
