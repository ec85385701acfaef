"""aplock: cross-process named locks for sync, asyncio and Trio code.

``Lock(name)`` is a ``multiprocessing.Lock`` that unrelated processes open by name;
``AsyncLock(name)`` is the same lock for ``async with`` under asyncio and Trio.
``Semaphore(name, value)`` and ``BoundedSemaphore(name, value)`` are the counting
semaphores of ``multiprocessing`` by name, and ``AsyncSemaphore`` their async twin.

The async names load on first use, so that ``import aplock`` in sync code imports
neither asyncio nor AnyIO.
"""

import importlib as _importlib
import typing as _typing

from ._version import __version__
from .errors import (
    AbandonedLockWarning,
    LockClosedError,
    LockError,
    LockKindError,
    LockLostError,
    LockNotHeldError,
    LockPermissionError,
    LockUnavailableError,
    LockWarning,
    OnceTimeoutError,
)
from .leader import Leadership, LeaderTerm
from .semaphore import BoundedSemaphore, PermitHolder, Semaphore, SemaphoreInfo
from .startup import AsyncOnce, Once
from .sync import Acquisition, Lock, LockInfo, unlink

if _typing.TYPE_CHECKING:
    from ._leader_async import AsyncLeadership
    from .aio import AsyncLock, AsyncLockStatistics, AsyncSemaphore

__all__ = [
    "AbandonedLockWarning",
    "Acquisition",
    "AsyncLeadership",
    "AsyncLock",
    "AsyncLockStatistics",
    "AsyncOnce",
    "AsyncSemaphore",
    "BoundedSemaphore",
    "LeaderTerm",
    "Leadership",
    "Lock",
    "LockClosedError",
    "LockError",
    "LockInfo",
    "LockKindError",
    "LockLostError",
    "LockNotHeldError",
    "LockPermissionError",
    "LockUnavailableError",
    "LockWarning",
    "Once",
    "OnceTimeoutError",
    "PermitHolder",
    "Semaphore",
    "SemaphoreInfo",
    "__version__",
    "unlink",
]

#: The names that import a module of their own, with AnyIO, on first access.
_LAZY = {"AsyncLock": "aio", "AsyncLockStatistics": "aio", "AsyncSemaphore": "aio"}
_LAZY["AsyncLeadership"] = "_leader_async"

if not _typing.TYPE_CHECKING:  # type checkers see the imports above, and no catch-all

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(_importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups do not come here
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))
