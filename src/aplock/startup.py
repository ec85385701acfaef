"""Run start-up work once, however many processes start at the same time.

Web servers start N workers at once (``uvicorn --workers``, gunicorn), restart the ones
that die and overlap old and new ones on a rolling restart; each worker runs the
application's start-up code. ``Once`` and ``AsyncOnce`` make work such as database
migrations or cache warm-up run once per *key* (an app version, a migration head):

1. If the completion marker for the key is set, return at once (no lock taken).
2. Otherwise take the lock, check the marker again, and if it is still unset run the
   work, set the marker, release the lock. Every other process waits for the lock,
   then finds the marker set and skips the work.
3. A process that dies while running the work leaves the marker unset and the lock
   abandoned: a waiting process takes the lock over (with an ``AbandonedLockWarning``)
   and runs the work again, from the start.

The lock and the marker are pluggable: any object with the shape of ``SupportsLock`` /
``SupportsAsyncLock`` and of ``Marker`` / ``AsyncMarker`` works (the PostgreSQL backend
provides both). With an aplock lock the default marker is a ``FileMarker``: a small file
beside the lock's own objects in ``/dev/shm``, so that it is shared by exactly the
processes that share the lock.
"""

from __future__ import annotations

import errno
import inspect
import os
import stat
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, Protocol

from ._core import core_of
from ._deadline import Deadline, normalize_timeout
from ._names import digest, posix_names, slug, validate
from .errors import LockError, LockPermissionError, LockUnavailableError, OnceTimeoutError
from .sync import Lock

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from typing_extensions import TypeIs

    from .aio import AsyncLock

__all__ = [
    "AsyncMarker",
    "AsyncOnce",
    "FileMarker",
    "Marker",
    "Once",
    "OnceTimeoutError",
    "SupportsAsyncLock",
    "SupportsLock",
]

#: Default permission bits of a ``FileMarker`` file: only this user may write or trust it.
DEFAULT_MARKER_MODE = 0o600
_MARKER_INFIX = ".once."
_KEY_SLUG_MAX = 32


# -- the shapes a lock and a marker must have ------------------------------------------


class SupportsLock(Protocol):
    """A synchronous lock ``Once`` can use: ``aplock.Lock`` or any lock of this shape."""

    @property
    def name(self) -> str:
        """The lock's name; markers are keyed by it."""

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire as ``multiprocessing.Lock.acquire`` does; ``False`` if the time ran out."""

    def release(self) -> None:
        """Release the lock."""


class SupportsAsyncLock(Protocol):
    """An async lock ``AsyncOnce`` can use: ``aplock.AsyncLock`` or any lock of this shape."""

    @property
    def name(self) -> str:
        """The lock's name; markers are keyed by it."""

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire as ``AsyncLock.acquire`` does; ``False`` if the time ran out."""

    def release(self) -> None:
        """Release the lock."""


class Marker(Protocol):
    """Records for which ``(name, key)`` pairs the work has completed.

    ``is_done`` is called with and without the lock held; ``mark_done`` only by the
    holder of lock *name*, right after the work completed. ``mark_done`` must be atomic:
    once it returns, ``is_done`` answers ``True`` in every process that shares the lock;
    if its process dies during the call, either answer is fine (the work is then done
    again). A marker must be shared by exactly the processes that share the lock.
    """

    def is_done(self, name: str, key: str) -> bool:
        """Whether the work of lock *name* has completed for *key*."""

    def mark_done(self, name: str, key: str) -> None:
        """Record that the work of lock *name* has completed for *key*."""

    def clear(self, name: str, key: str | None = None) -> int:
        """Forget *key* (every key of *name* if ``None``); return how many were set."""


class AsyncMarker(Protocol):
    """The ``Marker`` interface with ``async`` methods, for markers that do network I/O."""

    async def is_done(self, name: str, key: str) -> bool:
        """Whether the work of lock *name* has completed for *key*."""

    async def mark_done(self, name: str, key: str) -> None:
        """Record that the work of lock *name* has completed for *key*."""

    async def clear(self, name: str, key: str | None = None) -> int:
        """Forget *key* (every key of *name* if ``None``); return how many were set."""


# -- the default marker ------------------------------------------------------------------


def _default_directory() -> str:
    if sys.platform.startswith("linux") and os.path.isdir("/dev/shm"):
        return "/dev/shm"
    return tempfile.gettempdir()


def _validate_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a run-once key must be a str, not {type(key).__name__}: {key!r}")
    if not key:
        raise ValueError(
            "a run-once key must not be empty: use what identifies the work's version, "
            "such as the app version or the migration head"
        )
    return key


class FileMarker:
    """A completion marker kept as one small file per ``(name, key)``.

    By default the files live in ``/dev/shm`` on Linux, beside the lock's own objects,
    so they are shared by exactly the processes that share the lock (this host, or the
    containers that share its ``/dev/shm``) and vanish at reboot, like the lock. Elsewhere
    they live in the per-user temporary directory. Each marker is named
    ``aplock.<lock>.once.<key>`` (readable parts followed by digests) and holds a line
    of JSON saying who completed the work and when.

    Args:
        directory: where to keep the files; pass a directory on a volume to share
            markers between hosts or keep them across reboots (then the lock must span
            the same processes).
        mode: permission bits of new marker files. With the default ``0o600`` a marker
            owned by another user (even when running as root) is not trusted: it raises
            ``LockPermissionError`` rather than skip the work. Widen it together with the
            lock's ``mode`` for deliberate multi-user setups.
    """

    __slots__ = ("_directory", "_mode")

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, mode: int = DEFAULT_MARKER_MODE
    ) -> None:
        self._directory = os.fspath(directory) if directory is not None else _default_directory()
        self._mode = mode

    @property
    def directory(self) -> str:
        """The directory that holds the marker files."""
        return self._directory

    def path(self, name: str, key: str) -> str:
        """The path of the marker file for lock *name* and *key*."""
        prefix = self._prefix(validate(name))
        key = _validate_key(key)
        part = slug(key, _KEY_SLUG_MAX)
        tail = f"{part}.{digest(key)}" if part else digest(key)
        return os.path.join(self._directory, f"{prefix}{tail}")

    def _prefix(self, name: str) -> str:
        return f"{posix_names(name).base}{_MARKER_INFIX}"

    def is_done(self, name: str, key: str) -> bool:
        """Whether the marker for *name* and *key* exists.

        Raises:
            LockPermissionError: the file exists but belongs to another user (with the
                default mode) or is not a regular file.
        """
        path = self.path(name, key)
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _marker_error(name, exc, f"checking its run-once marker {path}") from None
        if not stat.S_ISREG(st.st_mode):
            raise LockPermissionError(
                name,
                f"its run-once marker {path} is not a regular file; remove it and retry",
                errno.EPERM,
            )
        if st.st_uid != os.geteuid() and self._mode == DEFAULT_MARKER_MODE:
            raise LockPermissionError(
                name,
                f"its run-once marker {path} belongs to uid {st.st_uid}, not to this user; "
                "use another name, or pass FileMarker(mode=...) with the mode the lock is "
                "shared with",
                errno.EPERM,
            )
        return True

    def mark_done(self, name: str, key: str) -> None:
        """Create the marker for *name* and *key* (replacing an existing one)."""
        path = self.path(name, key)
        record = {"name": name, "key": key, "pid": os.getpid(), "done_at": time.time()}
        import json  # noqa: PLC0415 - here: a few ms that import aplock need not pay

        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, self._mode)
            try:
                os.fchmod(fd, self._mode)  # undo the umask, as for the lock's objects
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _marker_error(name, exc, f"writing its run-once marker {path}") from None

    def clear(self, name: str, key: str | None = None) -> int:
        """Remove the marker for *key*, or every marker of *name*; return how many."""
        if key is not None:
            paths = [self.path(name, key)]
        else:
            prefix = self._prefix(validate(name))
            try:
                entries = os.listdir(self._directory)
            except FileNotFoundError:
                return 0
            paths = [os.path.join(self._directory, e) for e in entries if e.startswith(prefix)]
        removed = 0
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _marker_error(name, exc, f"removing its run-once marker {path}") from None
            removed += 1
        return removed

    def __repr__(self) -> str:
        return f"FileMarker({self._directory!r}, mode={self._mode:#o})"


def _marker_error(name: str, exc: OSError, what: str) -> LockError:
    if isinstance(exc, PermissionError) or exc.errno in (errno.EPERM, errno.ELOOP):
        return LockPermissionError(
            name,
            f"permission denied while {what}: it belongs to another user or is a link. "
            "Use another name, or share the lock and marker deliberately with a wider mode.",
            exc.errno,
        )
    return LockUnavailableError(name, f"{what} failed: {exc.strerror or exc}", exc.errno)


def _loaded_async_lock() -> type[AsyncLock] | None:
    """``AsyncLock``, if ``aplock.aio`` is loaded: no object is one before it is.

    Sync code that never touches ``AsyncLock`` thus never imports AnyIO.
    """
    aio = sys.modules.get(f"{__package__}.aio")
    return None if aio is None else aio.AsyncLock


def _is_async_lock(obj: object) -> TypeIs[AsyncLock]:
    cls = _loaded_async_lock()
    return cls is not None and isinstance(obj, cls)


def _default_marker(lock: object) -> FileMarker:
    if isinstance(lock, Lock) or _is_async_lock(lock):
        return FileMarker()
    raise TypeError(
        f"{type(lock).__name__} is not an aplock lock, so the default FileMarker (which "
        "spans only the processes that share this host's /dev/shm) may not span the same "
        "processes as the lock: pass marker= a marker that does (for a PgLock or "
        "AsyncPgLock: aplock.postgres.PgMarker or AsyncPgMarker)"
    )


# -- Once and AsyncOnce ------------------------------------------------------------------


class Once:
    """Run work once per *key* among all the processes that share a lock.

    ``run(work)`` runs *work* in the first process that gets there, while every other
    process that calls it waits for the lock and then skips the work. If the process
    running the work dies, a waiting process takes the lock over and runs the work
    again, so *work* must be safe to run again after a partial run (a migration tool
    that records each step is; an ``INSERT`` without a uniqueness check is not). The
    process that takes over gets the lock's ``AbandonedLockWarning``, which ``run`` lets
    through, attributed to the line that called ``run``: the work is being redone, and
    that a worker died in the middle of it is worth a line in the log.

    Args:
        name_or_lock: a lock name (an ``aplock.Lock`` is opened for it), or a lock: an
            ``aplock.Lock``, ``aplock.AsyncLock`` (its ``lock`` is used), or any object
            of the ``SupportsLock`` shape together with a *marker*.
        key: what identifies this version of the work, e.g. the app version or the
            migration head: the work runs once per distinct key.
        marker: where completion is recorded (default: a ``FileMarker``; required for a
            lock that is not an aplock lock).

    Examples:
        >>> import aplock.startup
        >>> once = aplock.startup.Once("docs.seed", key="v1")
        >>> once.run(lambda: print("seeding"))
        seeding
        True
        >>> once.run(lambda: print("seeding"))
        False
        >>> once.reset()
        True
        >>> aplock.unlink("docs.seed")
        True
    """

    __slots__ = ("_key", "_lock", "_marker")

    def __init__(
        self,
        name_or_lock: str | SupportsLock | AsyncLock,
        *,
        key: str,
        marker: Marker | None = None,
    ) -> None:
        lock: SupportsLock
        if isinstance(name_or_lock, str):
            lock = Lock(name_or_lock)
        elif _is_async_lock(name_or_lock):
            lock = name_or_lock.lock
        else:
            lock = name_or_lock
        self._lock = lock
        self._key = _validate_key(key)
        self._marker: Marker = marker if marker is not None else _default_marker(lock)

    @property
    def lock(self) -> SupportsLock:
        """The lock (the ``aplock.Lock`` opened for a name, or the one given)."""
        return self._lock

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._lock.name

    @property
    def key(self) -> str:
        """The key of the work."""
        return self._key

    @property
    def marker(self) -> Marker:
        """Where completion is recorded."""
        return self._marker

    def run(self, work: Callable[[], object], *, timeout: float | None = None) -> bool:
        """Run *work* unless it has completed for this key; wait while another runs it.

        Args:
            work: a function without arguments; its return value is ignored.
            timeout: the most seconds to wait for the lock (not for the work itself);
                ``None`` waits as long as another process runs the work.

        Returns:
            ``True`` if this call ran the work to completion, ``False`` if it had
            already completed (here or in another process).

        Raises:
            OnceTimeoutError: (a ``TimeoutError``) the lock was not free in time.
            Exception: whatever *work* raised; the marker then stays unset and the next
                caller runs the work again.
        """
        name, key, marker = self._lock.name, self._key, self._marker
        if marker.is_done(name, key):
            return False
        if not _acquire(self._lock, timeout):
            raise OnceTimeoutError(name, key, _seconds(timeout))
        try:
            if marker.is_done(name, key):
                return False
            work()
            marker.mark_done(name, key)
            return True
        finally:
            self._lock.release()

    def done(self) -> bool:
        """Whether the work has completed for this key."""
        return self._marker.is_done(self._lock.name, self._key)

    def reset(self, *, timeout: float | None = None) -> bool:
        """Forget that the work completed for this key, so that the next ``run`` runs it.

        Waits for the lock, so that it never interleaves with a ``run`` in progress.

        Returns:
            whether the work had completed.

        Raises:
            OnceTimeoutError: the lock was not free within *timeout* seconds.
        """
        if not _acquire(self._lock, timeout):
            raise OnceTimeoutError(self._lock.name, self._key, _seconds(timeout))
        try:
            return self._marker.clear(self._lock.name, self._key) > 0
        finally:
            self._lock.release()

    def __repr__(self) -> str:
        return f"<aplock.startup.Once {self._lock.name!r} key={self._key!r}>"


class AsyncOnce:
    """``Once`` for async code: run work once per *key*, under asyncio or Trio.

    Made for the ``lifespan`` of a FastAPI or Starlette application, which every worker
    process runs at start-up:

        @contextlib.asynccontextmanager
        async def lifespan(app):
            await AsyncOnce("myapp.migrate", key=MIGRATION_HEAD).run(migrate)
            yield

    Waiting for the lock uses ``AsyncLock``: it does not block the event loop, and
    cancelling it never leaks the lock.

    Args:
        name_or_lock: a lock name (an ``aplock.AsyncLock`` is opened for it), or a lock:
            an ``aplock.AsyncLock``, an ``aplock.Lock`` (wrapped in an ``AsyncLock``), or
            any object of the ``SupportsAsyncLock`` shape together with a *marker*.
        key: what identifies this version of the work: it runs once per distinct key.
        marker: where completion is recorded, a ``Marker`` or an ``AsyncMarker``
            (default: a ``FileMarker``; required for a lock that is not an aplock lock).
    """

    __slots__ = ("_key", "_lock", "_marker")

    def __init__(
        self,
        name_or_lock: str | SupportsAsyncLock | Lock,
        *,
        key: str,
        marker: Marker | AsyncMarker | None = None,
    ) -> None:
        from .aio import AsyncLock  # noqa: PLC0415 - here, so that sync users never load AnyIO

        lock: SupportsAsyncLock = (
            AsyncLock(name_or_lock) if isinstance(name_or_lock, str | Lock) else name_or_lock
        )
        self._lock = lock
        self._key = _validate_key(key)
        self._marker: Marker | AsyncMarker = marker if marker is not None else _default_marker(lock)

    @property
    def lock(self) -> SupportsAsyncLock:
        """The lock (the ``aplock.AsyncLock`` opened for a name, or the one given)."""
        return self._lock

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._lock.name

    @property
    def key(self) -> str:
        """The key of the work."""
        return self._key

    @property
    def marker(self) -> Marker | AsyncMarker:
        """Where completion is recorded."""
        return self._marker

    async def _is_done(self) -> bool:
        return bool(await _maybe_await(self._marker.is_done(self._lock.name, self._key)))

    async def run(self, work: Callable[[], object], *, timeout: float | None = None) -> bool:
        """Run *work* unless it has completed for this key; wait while another runs it.

        Args:
            work: an async function without arguments (or a plain function, which then
                runs on the event loop's thread); its return value is ignored.
            timeout: the most seconds to wait for the lock (not for the work itself);
                ``None`` waits as long as another process runs the work. Prefer it to
                an outer ``anyio.fail_after``/``asyncio.timeout``, which would also
                cancel the work if it had started.

        Returns:
            ``True`` if this call ran the work to completion, ``False`` if it had
            already completed (here or in another process).

        Raises:
            OnceTimeoutError: (a ``TimeoutError``) the lock was not free in time.
            Exception: whatever *work* raised; the marker then stays unset and the next
                caller runs the work again.
        """
        lock, name, key = self._lock, self._lock.name, self._key
        if await self._is_done():
            return False
        acquired = await _acquire_without_waiting(lock, timeout)
        if acquired is None:
            acquired = await _wait(lock, timeout)  # awaited here: see _wait
        if not acquired:
            raise OnceTimeoutError(name, key, _seconds(timeout))
        try:
            if await self._is_done():
                return False
            await _maybe_await(work())
            await _maybe_await(self._marker.mark_done(name, key))
            return True
        finally:
            lock.release()

    async def done(self) -> bool:
        """Whether the work has completed for this key."""
        return await self._is_done()

    async def reset(self, *, timeout: float | None = None) -> bool:
        """Forget that the work completed for this key, so that the next ``run`` runs it.

        Waits for the lock, so that it never interleaves with a ``run`` in progress.

        Returns:
            whether the work had completed.

        Raises:
            OnceTimeoutError: the lock was not free within *timeout* seconds.
        """
        lock = self._lock
        acquired = await _acquire_without_waiting(lock, timeout)
        if acquired is None:
            acquired = await _wait(lock, timeout)  # awaited here: see _wait
        if not acquired:
            raise OnceTimeoutError(lock.name, self._key, _seconds(timeout))
        try:
            cleared = await _maybe_await(self._marker.clear(lock.name, self._key))
            return bool(cleared)
        finally:
            lock.release()

    def __repr__(self) -> str:
        return f"<aplock.startup.AsyncOnce {self._lock.name!r} key={self._key!r}>"


# -- taking the lock, with a take-over's warning at the caller's line ----------------------
#
# When ``run`` or ``reset`` takes over the lock of a process that died, an aplock lock
# issues an ``AbandonedLockWarning``. It must point at the line that called them, the
# one the user can act on, not at this module: two frames above the wait.


def _acquire(lock: SupportsLock, timeout: float | None) -> bool:
    """``lock.acquire(True, timeout)`` for ``Once.run``/``reset``, warning at their caller."""
    if not isinstance(lock, Lock):
        return lock.acquire(True, timeout)
    wait = normalize_timeout(True, timeout)  # a bad timeout fails whether the lock is free
    if lock.acquire(False):
        return True
    if wait == 0.0:
        return False
    core = core_of(lock)
    acquired, takeover = core.wait(Deadline.after(wait), None)
    if takeover is not None:
        core.warn_abandoned(takeover)  # at the first frame outside aplock: their caller
    return acquired


async def _acquire_without_waiting(lock: SupportsAsyncLock, timeout: float | None) -> bool | None:
    """``AsyncOnce``'s acquire up to the wait: ``None`` if it must wait (see ``_wait``).

    A lock that is not an ``AsyncLock`` is acquired with its own ``acquire``.
    """
    if not _is_async_lock(lock):
        return await lock.acquire(True, timeout)
    wait = normalize_timeout(True, timeout)  # a bad timeout fails whether the lock is free
    if await lock.acquire(False):  # a checkpoint, then the lock if it is free
        return True
    return False if wait == 0.0 else None


def _wait(lock: SupportsAsyncLock, timeout: float | None) -> Coroutine[Any, Any, bool]:
    """``AsyncLock``'s own wait, for ``AsyncOnce.run``/``reset`` to await themselves.

    The wait warns two frames above its own: with no frame of ours in between, that is
    the line that called ``run``/``reset``.
    """
    from . import _gate  # noqa: PLC0415 - async machinery, loaded with AsyncLock
    from .aio import AsyncLock  # noqa: PLC0415 - loaded, since lock is an AsyncLock

    assert isinstance(lock, AsyncLock)
    core = core_of(lock.lock)
    deadline = Deadline.after(normalize_timeout(True, timeout))
    return _gate.wait_in(_gate.gate_for(core), core, deadline)


async def _maybe_await(value: object) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def _seconds(timeout: float | None) -> float:
    return 0.0 if timeout is None else max(float(timeout), 0.0)
