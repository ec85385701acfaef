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

import inspect
import sys
from typing import TYPE_CHECKING, Any, Protocol

from ._core import core_of
from ._deadline import Deadline, normalize_timeout
from ._filemarker import FileMarker, validate_key
from .errors import OnceTimeoutError
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
        self._key = validate_key(key)
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
        self._key = validate_key(key)
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
