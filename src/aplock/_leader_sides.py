"""What ``aplock.leader`` needs of a lock: take it, confirm it is still held, give it back.

Two kinds of lock, two sides:

- ``PosixSide``: an aplock ``Lock`` (or the one behind an ``AsyncLock``). It is taken
  through its core, so that a dead holder's lock is taken over without an
  ``AbandonedLockWarning`` (the leader logs the takeover and records it in the term
  instead), and the wait ends within a slice of a stop. A live holder loses it only by
  misuse (another process calls ``release()``); confirming it is a read of the shared
  record (no I/O), and a new holder never has to wait for an old one to notice.
- ``SyncSide``: any other lock of the ``Lock`` shape, such as ``PgLock``. One that has a
  ``check()`` can be lost by a live holder (a PostgreSQL session ends, its process does
  not): it is *remote*, confirmed with ``check()`` and given a settle time (see
  ``aplock.leader``). Its fencing token is its ``acquisition.generation`` if it has one.
  A lock that shows its session's socket (``PgLock``'s ``_session_socket()``) is also
  watched for the server hanging up (``aplock._leader_watch``), which is checked at once.

``LeaderFile`` is the small file, beside a POSIX lock's objects, that says which process
leads through that lock and since when, for ``aplock list``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ._core import core_of
from ._deadline import Deadline
from ._names import posix_names, validate
from ._posix import ipc as _posix
from .errors import LockError, LockLostError, LockNotHeldError
from .sync import Lock

if TYPE_CHECKING:
    from collections.abc import Callable

    from .aio import AsyncLock

__all__ = [
    "LEADER_SUFFIX",
    "Backoff",
    "LeaderFile",
    "PosixSide",
    "SupportsLeaderLock",
    "SyncSide",
    "Won",
    "is_async_lock",
    "token_of",
]

#: What follows the lock's base name in the name of its leader file.
LEADER_SUFFIX = ".leader"


class SupportsLeaderLock(Protocol):
    """A synchronous lock ``Leadership`` can lead through: ``aplock.Lock``, ``PgLock``...

    A lock with a ``check()`` method (raising ``LockLostError`` once the lock is lost)
    is taken to be one that a live holder can lose, and is confirmed with it.
    """

    @property
    def name(self) -> str:
        """The lock's name."""

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire as ``multiprocessing.Lock.acquire`` does; ``False`` if the time ran out."""

    def release(self) -> None:
        """Release the lock."""


@dataclass(frozen=True, slots=True)
class Won:
    """An acquisition by the leader: its fencing token, and whom it took over from."""

    token: int | None
    took_over_from: int | None


def is_async_lock(obj: object) -> bool:
    """Whether *obj* is an ``aplock.AsyncLock`` (without loading ``aplock.aio``)."""
    aio = sys.modules.get(f"{__package__}.aio")
    return aio is not None and isinstance(obj, aio.AsyncLock)


def posix_lock_of(obj: object) -> Lock | None:
    """The aplock ``Lock`` of *obj* (itself, or an ``AsyncLock``'s), else ``None``."""
    if isinstance(obj, Lock):
        return obj
    if is_async_lock(obj):
        lock: AsyncLock = obj  # type: ignore[assignment]
        return lock.lock
    return None


def token_of(lock: object) -> int | None:
    """The fencing token of *lock*'s current acquisition, if the lock has one."""
    acquisition = getattr(lock, "acquisition", None)
    generation = getattr(acquisition, "generation", None)
    return generation if isinstance(generation, int) else None


class Backoff:
    """The delay before campaigning again after failures in a row: doubling, capped.

    The *n*-th failure in a row waits ``first * 2 ** (n - 1)`` seconds, at most *most*.
    """

    __slots__ = ("failures", "first", "most")

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self.failures = 0

    def failed(self) -> float:
        """Count one more failure; the seconds to wait before the next attempt."""
        self.failures += 1
        return min(self.first * 2.0 ** min(self.failures - 1, 64), self.most)

    def reset(self) -> None:
        """A success: the next failure waits *first* again."""
        self.failures = 0


# -- the POSIX side ----------------------------------------------------------------------


class PosixSide:
    """An aplock ``Lock`` as the leader uses it (see the module docstring)."""

    remote = False

    def __init__(self, lock: Lock) -> None:
        self.lock = lock
        self.name = lock.name
        self.file = LeaderFile(lock.name)

    def try_take(self) -> bool:
        """Take the lock if it is free (no wait, no takeover)."""
        return self.lock.acquire(False)

    def wait(self, stopped: Callable[[], bool]) -> tuple[bool, int | None]:
        """Wait until taken or *stopped*; ``(taken, pid of the dead holder taken over)``."""
        got, takeover = core_of(self.lock).wait(Deadline(None), stopped)
        return got, (takeover.dead_pid if takeover is not None else None)

    def won(self, took_over_from: int | None) -> Won:
        """What the acquisition just made is: its generation, whom it took over from."""
        acquisition = self.lock.acquisition
        return Won(acquisition.generation if acquisition else None, took_over_from)

    def lost(self, won: Won) -> str | None:
        """Why *won* is no longer held (``None`` while it is): a read of the record."""
        acquisition = self.lock.acquisition
        if acquisition is None:
            return "the lock was released by another process"
        if acquisition.generation != won.token:
            return (
                f"the lock was released by another process and taken again "
                f"(generation {acquisition.generation}, this term's was {won.token})"
            )
        return None

    def release(self) -> None:
        """Give the lock back."""
        self.lock.release()


# -- any other lock of the Lock shape --------------------------------------------------------


class SyncSide:
    """Any other synchronous lock (``PgLock``...), as the leader uses it."""

    def __init__(self, lock: SupportsLeaderLock) -> None:
        self.lock = lock
        self.name = lock.name
        self._check = getattr(lock, "check", None)
        self.remote = callable(self._check)

    def take(self, stopped: Callable[[], bool], slice_: float) -> Won | None:
        """Wait for the lock in waits of *slice_* seconds until taken or *stopped*."""
        while not stopped():
            if self.lock.acquire(True, slice_):
                return Won(token_of(self.lock), None)
        return None

    def confirm(self) -> str | None:
        """``None`` if the lock is confirmed held; why not otherwise (``describe_failed_check``)."""
        assert self._check is not None
        try:
            self._check()
        except Exception as exc:
            return describe_failed_check(exc)
        return None

    def release(self, *, lost: bool) -> None:
        """Give the lock back; after a loss, only reset the lock object (errors ignored)."""
        if lost:
            with contextlib.suppress(Exception):
                self.lock.release()
            return
        self.lock.release()


def describe_failed_check(exc: BaseException) -> str:
    """Why a ``check()`` that raised *exc* leaves the lock unconfirmed, for the log.

    The result starts with ``"lost: "`` when *exc* proves the lock lost
    (``LockLostError``, ``LockNotHeldError``); otherwise the check only failed, and the
    leader's lease decides (see ``aplock.leader``).
    """
    if isinstance(exc, LockLostError | LockNotHeldError):
        return f"lost: {exc}"
    if isinstance(exc, LockError):
        return f"unconfirmed: {exc}"
    return f"unconfirmed: check() raised {exc!r}"


# -- the leader file ---------------------------------------------------------------------


def _directory() -> str:
    if os.path.isdir(_posix.SHM_DIR) and sys.platform.startswith("linux"):
        return _posix.SHM_DIR
    return tempfile.gettempdir()


class LeaderFile:
    """The file that names the leader of a POSIX lock: ``<base of the lock>.leader``.

    It holds one line of JSON: ``name``, ``pid``, ``since`` (Unix time), ``token``. The
    leader writes it when its term starts and removes it when it gives leadership up;
    a leader that died leaves it until the next leader replaces it. The lock's record
    stays the truth about who holds the lock: the file only says that the holder leads.
    """

    __slots__ = ("name", "path")

    def __init__(self, name: str, directory: str | None = None) -> None:
        self.name = validate(name)
        base = posix_names(name, short=_posix.SHORT_NAMES).base
        self.path = os.path.join(directory or _directory(), f"{base}{LEADER_SUFFIX}")

    def write(self, pid: int, since: float, token: int | None) -> None:
        """Say that *pid* leads (replacing the file at once: a reader sees all or nothing)."""
        import json  # noqa: PLC0415 - here: a few ms that import aplock need not pay

        record = {"name": self.name, "pid": pid, "since": since, "token": token}
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
        temporary = f"{self.path}.{pid}.{threading.get_ident()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temporary, flags, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            # Only inspection reads it: failing to write it must not cost leadership.

    def read(self) -> dict[str, Any] | None:
        """The record, or ``None`` if there is none (or it cannot be read)."""
        import json  # noqa: PLC0415 - as in write()

        try:
            with open(self.path, "rb") as f:
                record = json.loads(f.read().decode("utf-8", "surrogatepass"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def remove(self, pid: int) -> None:
        """Remove the file if it names *pid* (a later leader's stays)."""
        record = self.read()
        if record is not None and record.get("pid") == pid:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def clear(self) -> bool:
        """Remove the file whoever it names; return whether there was one."""
        try:
            os.unlink(self.path)
        except OSError:
            return False
        return True
