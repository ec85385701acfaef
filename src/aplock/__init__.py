"""aplock: cross-process named locks for sync, asyncio and Trio code.

``Lock(name)`` is a ``multiprocessing.Lock`` that unrelated processes open by name;
``AsyncLock(name)`` is the same lock for ``async with`` under asyncio and Trio.
"""

from ._version import __version__
from .aio import AsyncLock, AsyncLockStatistics
from .errors import (
    AbandonedLockWarning,
    LockClosedError,
    LockError,
    LockNotHeldError,
    LockPermissionError,
    LockUnavailableError,
    LockWarning,
)
from .startup import AsyncOnce, Once
from .sync import Acquisition, Lock, LockInfo, unlink

__all__ = [
    "AbandonedLockWarning",
    "Acquisition",
    "AsyncLock",
    "AsyncLockStatistics",
    "AsyncOnce",
    "Lock",
    "LockClosedError",
    "LockError",
    "LockInfo",
    "LockNotHeldError",
    "LockPermissionError",
    "LockUnavailableError",
    "LockWarning",
    "Once",
    "__version__",
    "unlink",
]
