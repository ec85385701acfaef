"""aplock: cross-process named locks for sync, asyncio and Trio code.

``Lock(name)`` is a ``multiprocessing.Lock`` that unrelated processes open by name;
``AsyncLock(name)`` is the same lock for ``async with`` under asyncio and Trio.
"""

from ._version import __version__
from .aio import AsyncLock
from .errors import (
    AbandonedLockWarning,
    LockClosedError,
    LockError,
    LockNotHeldError,
    LockPermissionError,
    LockUnavailableError,
    LockWarning,
)
from .sync import Acquisition, Lock, LockInfo, unlink

__all__ = [
    "AbandonedLockWarning",
    "Acquisition",
    "AsyncLock",
    "Lock",
    "LockClosedError",
    "LockError",
    "LockInfo",
    "LockNotHeldError",
    "LockPermissionError",
    "LockUnavailableError",
    "LockWarning",
    "__version__",
    "unlink",
]
