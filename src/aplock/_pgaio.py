"""``AsyncPgLock``: the PostgreSQL advisory lock for ``async with``, on asyncio and Trio.

Two drivers do the server work, chosen per event loop:

- **Native** (asyncio, uvloop): psycopg's ``AsyncConnection`` on the event loop itself;
  no thread at all, however many tasks wait.
- **Threaded** (Trio, or a sync connection or pool, or a ``PgLock`` given): psycopg's
  async code runs only on asyncio, so the blocking calls of a ``PgLock`` run in a worker
  thread, one per lock object at a time, drawn from the lock's own capacity limiter.

The tasks of one object queue FIFO on an in-loop gate (a session must never ask for a
key it holds: advisory locks are re-entrant per session); only the task at its head
talks to the server. Cancellation never interrupts a statement mid-protocol: a waiting
statement runs shielded while a watcher sends the server cancel requests until it ends;
if it took the lock after all, the lock is released before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import weakref
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict

from . import _pgsql as sql
from ._deadline import Deadline, normalize_timeout
from ._names import validate
from ._pgerrors import (
    NOT_IN_SESSION,
    SESSION_CHANGED,
    lost,
    lost_connection,
    target,
    unavailable,
)
from ._pgsync import (
    CANCEL_TIMEOUT,
    CLEANUP_TRIES,
    NOT_HELD,
    Cancel,
    ConnectionPool,
    PgLock,
    check_shareable,
)
from .aio import _current_loop
from .errors import LockClosedError, LockError, LockNotHeldError, LockUnavailableError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine
    from types import TracebackType
    from typing import Self

__all__ = ["AsyncConnectionPool", "AsyncPgLock"]

logger = logging.getLogger("aplock.postgres")

AsyncConnection = psycopg.AsyncConnection[Any]
_T = TypeVar("_T")

#: Seconds between cancel requests while a cancelled wait has not ended yet (a request
#: that reaches the server just before the statement does is ignored by it).
RESEND_CANCEL = 0.2

_tasks: set[asyncio.Task[None]] = set()


class AsyncConnectionPool(Protocol):
    """What ``AsyncPgLock`` uses of ``psycopg_pool.AsyncConnectionPool``."""

    async def getconn(self, timeout: float | None = None) -> AsyncConnection:
        """Take a connection out of the pool."""

    async def putconn(self, conn: AsyncConnection) -> None:
        """Give a connection back to the pool."""


async def _watched(wait: Callable[[], Awaitable[_T]], cancel: Callable[[], Awaitable[None]]) -> _T:
    """Run *wait*, a statement blocking in the server, so that it is never interrupted.

    If the caller is cancelled meanwhile, *cancel* is called (again every
    ``RESEND_CANCEL`` seconds) until *wait* ends; then the cancellation goes on.
    """
    done = anyio.Event()
    waiting = False

    async def watch(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            if waiting:  # cancelled in start() below: there is nothing to cancel
                with anyio.CancelScope(shield=True):
                    while not done.is_set():
                        await cancel()
                        with anyio.move_on_after(RESEND_CANCEL):
                            await done.wait()

    async with anyio.create_task_group() as tg:
        await tg.start(watch)
        waiting = True
        try:
            # A cancellation that came while start() returned would find the watcher
            # already gone: take it now, before the statement is sent.
            await anyio.lowlevel.checkpoint_if_cancelled()
            with anyio.CancelScope(shield=True):
                result = await wait()
        finally:
            done.set()
            tg.cancel_scope.cancel()
    return result


async def _fetch(conn: AsyncConnection, query: str, params: dict[str, int]) -> tuple[Any, ...]:
    row = await (await conn.execute(query, params)).fetchone()
    assert row is not None  # every statement we send returns one row
    return tuple(row)


async def _send_cancel(conn: AsyncConnection) -> None:
    try:
        await conn.cancel_safe(timeout=CANCEL_TIMEOUT)
    except Exception as exc:  # the wait's own outcome tells what happened
        logger.debug("cancel request failed: %r", exc)


def _finish(conn: AsyncConnection) -> None:
    """Close *conn* without awaiting (its close does no I/O that needs the event loop)."""
    conn.pgconn.finish()


class _AsyncSource:
    """Where the native driver gets its session from."""

    dedicated = False
    where = "PostgreSQL"

    def gate(self, key: int) -> anyio.Semaphore:
        return anyio.Semaphore(1, fast_acquire=True)

    async def borrow(self, name: str, deadline: Deadline) -> AsyncConnection | None:
        raise NotImplementedError

    async def give_back(self, conn: AsyncConnection) -> None:
        """Done with *conn* for now."""

    async def discard(self, conn: AsyncConnection) -> None:
        """*conn* is broken or in an unknown state."""
        await conn.close()

    def close(self) -> None:
        """Close what this source opened (synchronous: also a finalizer)."""


class _AsyncDedicated(_AsyncSource):
    dedicated = True

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.where = target(conninfo)
        self._params = conninfo_to_dict(conninfo)
        self._conn: AsyncConnection | None = None
        self._pid = os.getpid()

    async def borrow(self, name: str, deadline: Deadline) -> AsyncConnection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        kwargs: dict[str, Any] = {"autocommit": True, "fallback_application_name": "aplock"}
        left = deadline.remaining()
        if left is not None and "connect_timeout" not in self._params:
            kwargs["connect_timeout"] = max(2, math.ceil(left))
        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, **kwargs)
        except psycopg.Error as exc:
            raise unavailable(name, self.where, "connecting", exc) from exc
        try:
            if conn.info.server_version >= 140000:
                await conn.execute("SET idle_session_timeout = 0")
        except psycopg.Error as exc:
            await conn.close()
            raise unavailable(name, self.where, "setting up the session", exc) from exc
        self._conn = conn
        return conn

    async def discard(self, conn: AsyncConnection) -> None:
        if conn is self._conn:
            self._conn = None
        await conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and os.getpid() == self._pid:
            _finish(conn)


_shared_gates: weakref.WeakKeyDictionary[AsyncConnection, dict[int, anyio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


class _AsyncShared(_AsyncSource):
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.where = target(None, conn)

    def gate(self, key: int) -> anyio.Semaphore:
        gates = _shared_gates.setdefault(self.conn, {})
        gate = gates.get(key)
        if gate is None:
            gate = gates[key] = anyio.Semaphore(1, fast_acquire=True)
        return gate

    async def borrow(self, name: str, deadline: Deadline) -> AsyncConnection:
        conn = self.conn
        if conn.closed:
            raise LockUnavailableError(
                name, f"the connection given for it ({self.where}) is closed: pass an open one"
            )
        check_shareable(name, conn)
        return conn

    async def discard(self, conn: AsyncConnection) -> None:
        """Never close the user's connection."""


class _AsyncPooled(_AsyncSource):
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.where = f"PostgreSQL through pool {getattr(pool, 'name', type(pool).__name__)!r}"
        self._restore: set[int] = set()

    async def borrow(self, name: str, deadline: Deadline) -> AsyncConnection | None:
        left = deadline.remaining()
        try:
            conn = await (
                self.pool.getconn(timeout=left) if left is not None else self.pool.getconn()
            )
        except Exception as exc:  # psycopg_pool.PoolTimeout and its kin
            if deadline.expired():
                return None
            raise unavailable(name, self.where, "getting a connection", exc) from exc
        if not conn.autocommit:
            await conn.set_autocommit(True)
            self._restore.add(id(conn))
        return conn

    async def give_back(self, conn: AsyncConnection) -> None:
        if id(conn) in self._restore:
            self._restore.discard(id(conn))
            if not conn.closed:
                await conn.set_autocommit(False)
        await self.pool.putconn(conn)

    async def discard(self, conn: AsyncConnection) -> None:
        await conn.close()
        await self.give_back(conn)


class _Driver:
    """The server side of one ``AsyncPgLock`` in one event loop."""

    async def take(self, deadline: Deadline) -> bool:
        """Take the lock by *deadline*; on cancellation leave nothing held and re-raise."""
        raise NotImplementedError

    async def unlock(self) -> None:
        """Release the lock this driver took (``LockLostError`` if it had been lost)."""
        raise NotImplementedError

    async def check(self) -> None:
        """Raise ``LockLostError`` unless the session still holds the lock."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close what this driver opened."""


class _Native(_Driver):
    """psycopg's ``AsyncConnection`` on the asyncio event loop."""

    def __init__(self, name: str, key: int, source: _AsyncSource) -> None:
        self.name = name
        self.key = key
        self.source = source
        self.gate = source.gate(key)
        self._held: tuple[AsyncConnection, int] | None = None

    async def take(self, deadline: Deadline) -> bool:
        source = self.source
        retry = source.dedicated  # a dedicated session that broke while idle: reconnect once
        while True:
            conn = await source.borrow(self.name, deadline)
            if conn is None:
                return False
            try:
                pid = await self._take_on(conn, deadline)
            except psycopg.Error as exc:
                if conn.closed:
                    await source.discard(conn)
                    if retry:
                        retry = False
                        continue
                else:
                    await self._undo(conn)
                raise unavailable(self.name, source.where, "taking the lock", exc) from exc
            except BaseException:
                await self._undo(conn)
                raise
            if pid is None:
                await source.give_back(conn)
                return False
            self._held = (conn, pid)
            return True

    async def _take_on(self, conn: AsyncConnection, deadline: Deadline) -> int | None:
        with anyio.CancelScope(shield=True):
            taken, pid = await _fetch(conn, sql.TRY, {"key": self.key})
        if taken:
            return int(pid)
        if deadline.expired():
            return None
        cancelled = False

        async def cancel() -> None:
            nonlocal cancelled
            cancelled = True
            await _send_cancel(conn)

        async def wait() -> int | None:
            while not deadline.expired() and not cancelled:
                ms = sql.lock_timeout_ms(deadline.remaining())
                try:
                    cur = await conn.execute(sql.wait_statement(self.key, ms))
                except pgerrors.LockNotAvailable:
                    # lock_timeout (the loop ends if the deadline passed). Like a cancel,
                    # it can fail the statement just after the lock was granted, and a
                    # session lock outlives the statement: undo that.
                    await self._unlock_if_held(conn)
                    continue
                except pgerrors.QueryCanceled:
                    if cancelled:
                        await self._unlock_if_held(conn)
                        return None
                    raise
                cur.nextset()
                cur.nextset()
                row = await cur.fetchone()
                assert row is not None
                return int(row[1])
            return None

        return await _watched(wait, cancel)

    async def _undo(self, conn: AsyncConnection) -> None:
        """After an interrupted or failed step: see to it the session keeps nothing."""
        with anyio.CancelScope(shield=True):
            try:
                if not conn.closed:
                    await self._unlock_if_held(conn)
            except BaseException as exc:
                if isinstance(self.source, _AsyncShared):
                    logger.warning(
                        "lock %r: could not clean up the shared session after %r; it may "
                        "still hold the advisory lock until the connection closes",
                        self.name,
                        exc,
                    )
                else:
                    await self.source.discard(conn)  # ending the session releases its locks
                return
            await self.source.give_back(conn)

    async def _unlock_if_held(self, conn: AsyncConnection) -> None:
        for attempt in range(CLEANUP_TRIES):
            try:
                await conn.execute(sql.UNLOCK_IF_HELD, {"key": self.key})
            except pgerrors.QueryCanceled:  # a late cancel request meant for the wait
                if attempt == CLEANUP_TRIES - 1:
                    raise
            else:
                return

    async def unlock(self) -> None:
        held, self._held = self._held, None
        assert held is not None
        conn, pid = held
        try:
            (released,) = await _fetch(conn, sql.UNLOCK, {"pid": pid, "key": self.key})
        except psycopg.Error as exc:
            if conn.closed:
                await self.source.discard(conn)
                raise lost_connection(self.name, exc) from exc
            await self._undo(conn)
            return
        await self.source.give_back(conn)
        if released is None:
            raise lost(self.name, SESSION_CHANGED)
        if not released:
            raise lost(self.name, NOT_IN_SESSION)

    async def check(self) -> None:
        assert self._held is not None
        conn, pid = self._held
        try:
            now_pid, mine = await _fetch(conn, sql.HELD, {"key": self.key})
        except psycopg.Error as exc:
            if conn.closed:
                raise lost_connection(self.name, exc) from exc
            raise unavailable(self.name, self.source.where, "checking", exc) from exc
        if now_pid != pid:
            raise lost(self.name, SESSION_CHANGED)
        if not mine:
            raise lost(self.name, NOT_IN_SESSION)

    async def aclose(self) -> None:
        self.source.close()


class _Threaded(_Driver):
    """A ``PgLock``'s blocking calls in worker threads (for Trio and sync connections)."""

    def __init__(self, lock: PgLock) -> None:
        self.lock = lock
        self.gate = anyio.Semaphore(1, fast_acquire=True)
        # One thread for the head task's statement, one for a cancel request beside it.
        self.limiter = anyio.CapacityLimiter(2)

    async def _run(self, func: Callable[..., _T], *args: Any) -> _T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self.limiter)

    async def take(self, deadline: Deadline) -> bool:
        cancel = Cancel()

        async def request() -> None:
            await self._run(cancel.request)

        try:
            return await _watched(
                lambda: self._run(self.lock.acquire_cancellable, deadline, cancel), request
            )
        except BaseException:
            # Whether the worker ended holding the lock or is still running (a native
            # asyncio cancellation does not wait for it), the lock is not left held:
            # either it is released here, or the worker releases it when it ends.
            with anyio.CancelScope(shield=True):
                if await self._run(cancel.request):
                    await self._run(self.lock.release_after_cancel)
            raise

    async def unlock(self) -> None:
        await self._run(self.lock.release)

    async def check(self) -> None:
        await self._run(self.lock.check)


class _Binding:
    """An ``AsyncPgLock``'s gate and driver in one event loop."""

    __slots__ = ("driver", "gate", "loop")

    def __init__(self, loop: object, driver: _Native | _Threaded) -> None:
        self.loop = loop
        self.driver = driver
        self.gate = driver.gate


def _spawn(func: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run *func* in the background of the current event loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio  # noqa: PLC0415 - only reached, so only imported, under Trio

        trio.lowlevel.spawn_system_task(func)
    else:
        task = loop.create_task(func())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)


class AsyncPgLock:
    """The PostgreSQL advisory lock for ``async with``, under asyncio and Trio alike.

    The same lock as ``PgLock`` (same name, same database: same lock), with the shape
    of ``aplock.AsyncLock``: ``await acquire(block, timeout)``, ``release()``,
    ``locked()``, ``async with``, ``name``. Outer cancellation (``task.cancel()``,
    ``asyncio.timeout``, ``anyio.fail_after``, ``trio.move_on_after``) cancels a waiting
    ``acquire()`` in the server and never leaves the lock held.

    Under asyncio it runs on psycopg's ``AsyncConnection``, with no threads. Under Trio
    (psycopg's async code is asyncio-only) it runs a ``PgLock``'s blocking calls in one
    worker thread at a time, and cancels a wait with a server cancel request.

    Differences from ``AsyncLock``: ``release()`` starts the unlock and returns at once
    (``await arelease()`` or ``async with`` wait for it and raise ``LockLostError`` if
    the lock had been lost); ``locked()`` cannot ask the server without awaiting, so it
    reports this object's own state; there is no ``acquire_nowait()`` (a try needs a
    round trip: ``await acquire(block=False)``). Use one object per event loop at a time.

    Args:
        name_or_lock: a lock name, or a ``PgLock`` to run in worker threads.
        conninfo_or_connection: a connection string (the lock opens its own
            connection), a ``psycopg.AsyncConnection`` in autocommit mode or an
            ``AsyncConnectionPool`` (asyncio only), or a sync ``psycopg.Connection`` or
            pool (run in worker threads). Not given with a ``PgLock``.

    Raises:
        TypeError: wrong argument types.
        ValueError: *name* is empty, the connection string is invalid, or the
            connection is not in autocommit mode.

    Example::

        from aplock.postgres import AsyncPgLock

        warmup = AsyncPgLock("cache.warmup", "postgresql://app@db.internal/app")
        async with warmup:
            await warm_the_cache()
        await warmup.aclose()
    """

    def __init__(
        self,
        name_or_lock: str | PgLock,
        conninfo_or_connection: (
            str
            | AsyncConnection
            | AsyncConnectionPool
            | psycopg.Connection[Any]
            | ConnectionPool
            | None
        ) = None,
    ) -> None:
        self._pglock: PgLock | None = None
        self._own_pglock = False
        self._source: _AsyncSource | None = None
        self._conninfo: str | None = None
        if isinstance(name_or_lock, PgLock):
            if conninfo_or_connection is not None:
                raise TypeError("AsyncPgLock takes a PgLock or a name and a connection, not both")
            self._pglock = name_or_lock
            name = name_or_lock.name
        else:
            name = validate(name_or_lock)
            arg = conninfo_or_connection
            if arg is None:
                raise TypeError(
                    f"lock {name!r}: AsyncPgLock needs a connection string, a connection or a pool"
                )
            if isinstance(arg, psycopg.AsyncConnection):
                check_shareable(name, arg)
                self._source = _AsyncShared(arg)
            elif asyncio.iscoroutinefunction(getattr(arg, "getconn", None)):
                self._source = _AsyncPooled(arg)  # type: ignore[arg-type]
            else:
                # A sync connection or pool runs threaded everywhere; a connection
                # string runs natively on asyncio and through this PgLock under Trio.
                self._pglock = PgLock(name, arg)  # type: ignore[arg-type]
                self._own_pglock = True
                if isinstance(arg, str):
                    self._conninfo = arg
        self._name = name
        self._key = sql.advisory_key(name)
        self._binding: _Binding | None = None
        self._held = False
        self._releasing: anyio.Event | None = None
        self._closed = False

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._name

    @property
    def key(self) -> int:
        """The PostgreSQL advisory key (a signed 64-bit integer) of the name."""
        return self._key

    @property
    def held(self) -> bool:
        """Whether this object holds the lock, as far as it knows (no I/O; see ``check``)."""
        return self._held

    @property
    def closed(self) -> bool:
        """Whether ``aclose()`` was called."""
        return self._closed

    def _bind(self) -> _Binding:
        loop = _current_loop()
        binding = self._binding
        if binding is not None and binding.loop is loop:
            return binding
        if binding is not None and (self._held or binding.gate.value == 0):
            raise RuntimeError(
                f"lock {self._name!r}: this AsyncPgLock is in use in another event loop; "
                "use one AsyncPgLock per event loop"
            )
        if binding is not None and isinstance(binding.driver, _Native):
            binding.driver.source.close()
        self._binding = binding = _Binding(loop, self._driver(loop))
        return binding

    def _driver(self, loop: object) -> _Native | _Threaded:
        on_asyncio = isinstance(loop, asyncio.AbstractEventLoop)
        source = self._source
        if source is not None:
            if not on_asyncio:
                raise RuntimeError(
                    f"lock {self._name!r}: psycopg's AsyncConnection runs only on asyncio; "
                    "under Trio pass a connection string or a sync psycopg.Connection"
                )
            return _Native(self._name, self._key, source)
        if on_asyncio and self._conninfo is not None:
            dedicated = _AsyncDedicated(self._conninfo)
            weakref.finalize(self, dedicated.close)  # a dropped lock ends its session
            return _Native(self._name, self._key, dedicated)
        assert self._pglock is not None
        return _Threaded(self._pglock)

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the lock; the meaning of *block* and *timeout* is ``PgLock.acquire``'s.

        Always a checkpoint. A wait blocks in the server; cancelling it sends the
        server a cancel request and waits for the statement to end (normally a
        millisecond), releasing the lock if it was granted meanwhile.

        Returns:
            ``True`` if acquired, ``False`` if the time ran out.

        Raises:
            TypeError: *block* is not a bool or int, or *timeout* is not a number
                (checked on every call, before yielding, whether the lock is free or not).
            ValueError: *timeout* is NaN.
            OverflowError: *timeout* is an int too large for a float.
            LockUnavailableError: the server could not be reached or refused.
            LockClosedError: the object was closed.
        """
        wait = normalize_timeout(block, timeout, "aplock.postgres.AsyncPgLock", self._name)
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise LockClosedError(self._name, "this AsyncPgLock was closed; create a new one")
        deadline = Deadline.after(wait)
        binding = self._bind()
        gate = binding.gate
        try:
            gate.acquire_nowait()
        except anyio.WouldBlock:
            left = deadline.remaining()
            if left == 0.0:
                return False
            with anyio.move_on_after(math.inf if left is None else left) as scope:
                await gate.acquire()
            if scope.cancelled_caught:
                return False
        try:
            got = await binding.driver.take(deadline)
        except BaseException:
            gate.release()
            raise
        if not got:
            gate.release()
            return False
        self._held = True
        return True

    def release(self) -> None:
        """Release the lock: starts the unlock in the background and returns at once.

        Synchronous, like ``asyncio.Lock.release``. The server frees the lock one round
        trip later; this object's next ``acquire()`` waits for that. A failure (the lock
        had been lost) is logged to the ``aplock.postgres`` logger: ``await arelease()``
        or ``async with`` to get it as ``LockLostError`` instead.

        Raises:
            LockNotHeldError: (a ``ValueError``) this object does not hold the lock.
        """
        binding = self._take_held()
        done = self._releasing = anyio.Event()

        async def finish() -> None:
            try:
                await binding.driver.unlock()
            except LockError as exc:  # nobody awaits this: say it, never raise it
                logger.warning("release() in the background: %s", exc)
            except BaseException as exc:
                logger.warning(
                    "lock %r: release() did not reach the server (%r, e.g. the event loop "
                    "stopped); the session keeps the lock until its connection closes",
                    self._name,
                    exc,
                )
            finally:
                binding.gate.release()
                done.set()

        _spawn(finish)

    async def arelease(self) -> None:
        """Release the lock and wait until the server has.

        Cancellation cannot interrupt the unlock (one round trip, shielded).

        Raises:
            LockNotHeldError: (a ``ValueError``) this object does not hold the lock.
            LockLostError: the session had lost the lock before this call; the object
                no longer holds it either way.
        """
        binding = self._take_held()
        try:
            with anyio.CancelScope(shield=True):
                await binding.driver.unlock()
        finally:
            binding.gate.release()

    def _take_held(self) -> _Binding:
        binding = self._binding
        if not self._held or binding is None:
            raise LockNotHeldError(self._name, NOT_HELD)
        if binding.loop is not _current_loop():
            raise RuntimeError(
                f"lock {self._name!r}: this AsyncPgLock is held in another event loop; "
                "release it there"
            )
        self._held = False
        return binding

    def locked(self) -> bool:
        """Whether this object holds the lock, or is acquiring or releasing it.

        Synchronous, so it cannot ask the server: ``False`` says nothing about other
        processes. ``PgLock.locked()`` asks the server.
        """
        binding = self._binding
        return self._held or (binding is not None and binding.gate.value == 0)

    async def check(self) -> None:
        """Confirm with the server that this object still holds the lock (one round trip).

        Raises:
            LockLostError: the session no longer holds it; leave the ``async with``
                (or ``await arelease()``, which raises it again and resets the object).
            LockNotHeldError: this object does not hold the lock.
        """
        if not self._held or self._binding is None:
            raise LockNotHeldError(self._name, "check() of a lock this object does not hold")
        await self._binding.driver.check()

    async def aclose(self) -> None:
        """Release the lock if held, and close the connection this object opened.

        A connection or pool the user passed is left open. Idempotent.
        """
        if self._closed:
            return
        if self._held:
            with suppress(LockError):
                await self.arelease()
        if self._releasing is not None:
            await self._releasing.wait()
        self._closed = True
        binding, self._binding = self._binding, None
        if binding is not None:
            await binding.driver.aclose()
        if self._own_pglock and self._pglock is not None:
            await anyio.to_thread.run_sync(self._pglock.close)

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.arelease()

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        else:
            state = "held by this object" if self._held else "not held by this object"
        return f"<aplock.postgres.AsyncPgLock {self._name!r} key {self._key} {state}>"
