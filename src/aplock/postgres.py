"""aplock on PostgreSQL advisory locks: the same ``Lock`` and ``AsyncLock``, across hosts.

``PgLock(name, dsn)`` and ``AsyncPgLock(name, dsn)`` have the shape of ``aplock.Lock``
and ``aplock.AsyncLock``; moving from one host to many is a change of constructor.
Each lock is a session-level advisory lock on the key ``advisory_key(name)``; the
fencing token of an acquisition (``acquisition.generation``) is the server's transaction
id of the round trip that got it, which grows across the whole cluster.
``PgMarker`` and ``AsyncPgMarker`` record completed work for ``aplock.startup.Once``
and ``AsyncOnce`` in a table, so that start-up work runs once across hosts.

Needs psycopg 3.2 or later: ``pip install 'aplock[postgres]'``. The rest of aplock never
imports this module or psycopg.
"""

from __future__ import annotations

import typing as _typing

from . import _deadline, _names
from ._context import WithAcquire as _WithAcquire
from ._pg import aio as _aio
from ._pg import sync as _sync
from ._pg.marker import AsyncPgMarker, PgMarker
from ._pg.sources import ConnectionPool
from ._pg.sql import KEY_PREFIX, KEY_SQL, advisory_key
from .errors import LockLostError

if _typing.TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, Protocol, Self

    from ._pg.sources import AsyncConnectionPool
    from ._pg.steps import AsyncConnection, Connection
    from .sync import Acquisition

    class _Knows(Protocol):
        @property
        def held(self) -> bool: ...
        @property
        def closed(self) -> bool: ...
        @property
        def acquisition(self) -> Acquisition | None: ...
        def session_socket(self) -> int | None: ...


__all__ = [
    "KEY_PREFIX",
    "KEY_SQL",
    "AsyncPgLock",
    "AsyncPgMarker",
    "ConnectionPool",
    "LockLostError",
    "PgLock",
    "PgMarker",
    "advisory_key",
]


class _Facade:
    """What ``PgLock`` and ``AsyncPgLock`` share: a name, its key, what the object knows."""

    _name: str
    _key: int
    _backend: _Knows

    @property
    def name(self) -> str:
        """The name the lock was opened with."""
        return self._name

    @property
    def key(self) -> int:
        """The PostgreSQL advisory key (a signed 64-bit integer) of the name."""
        return self._key

    @property
    def held(self) -> bool:
        """Whether this object holds the lock, as far as it knows (no I/O; see ``check``)."""
        return self._backend.held

    @property
    def closed(self) -> bool:
        """Whether the object was closed (``close()``, or ``aclose()``)."""
        return self._backend.closed

    @property
    def acquisition(self) -> Acquisition | None:
        """The fencing token of the acquisition this object holds; ``None`` while it
        holds none (no I/O).

        Its ``generation`` is the server's transaction id, assigned in the round trip
        that got the lock, once the lock was granted: greater than that of every earlier
        acquisition of any lock on the same PostgreSQL cluster, whichever host or
        process made it. Pass it along with work guarded by the lock, so that the
        resource can refuse a holder whose session ended while it went on working.
        ``abandoned_pid`` is always ``None``: the server does not say whether the
        previous holder died. Each acquisition consumes one transaction id, and only a
        primary assigns them: on a standby, ``acquire()`` raises ``LockUnavailableError``.
        """
        return self._backend.acquisition

    def _session_socket(self) -> int | None:
        """The file descriptor of the socket of the session that holds the lock for this
        object, or ``None`` (no I/O).

        For ``aplock.leader``, which waits for the server to hang up on it, so that a
        terminated session is noticed at once. The descriptor stays the connection's:
        never read from it or close it.
        """
        return self._backend.session_socket()

    def __repr__(self) -> str:
        if self.closed:
            state = "closed"
        else:
            state = "held by this object" if self.held else "not held by this object"
        return f"<aplock.postgres.{type(self).__name__} {self._name!r} key {self._key} {state}>"


class PgLock(_WithAcquire, _Facade):
    """The aplock ``Lock`` on a PostgreSQL session-level advisory lock.

    Every process, on any host, that opens the same name on the same database gets the
    same lock. It behaves like ``aplock.Lock`` (``acquire(block, timeout)``,
    ``release()``, ``locked()``, ``with``), with the differences that a server-held
    lock brings:

    - **Only the holding object can release.** The server releases an advisory lock
      only for the session that took it: any thread may call ``release()`` on the
      object that acquired it, but another object (in this or another process) gets
      ``LockNotHeldError``.
    - **A holder that dies loses the lock at once.** When its process dies or its
      connection drops, the server ends the session and the next waiter gets the
      lock. A holder finds out with ``check()`` or from ``release()``, which raise
      ``LockLostError``.
    - ``locked()`` asks the server (one round trip), except while this object holds
      the lock or is acquiring it.
    - **The fencing token is cluster-wide.** ``acquisition.generation`` is the
      transaction id that the server assigns in the round trip that gets the lock:
      greater than that of every earlier acquisition of any lock on the cluster, not
      consecutive. Each acquisition consumes one transaction id, and only a primary
      assigns them (on a standby ``acquire()`` raises ``LockUnavailableError``).

    Args:
        name: any non-empty string of at most 1,024 characters (as for ``Lock``); it
            maps to the advisory key ``advisory_key(name)``.
        conninfo_or_connection: where the session comes from.

            - a connection string (libpq ``key=value`` or ``postgresql://`` URI): the
              lock opens its own connection on first use and keeps it until ``close()``.
            - a ``psycopg.Connection`` in autocommit mode: the lock uses its session.
              Locks with the same name on one connection exclude each other in this
              process; while a lock waits, the connection can run nothing else.
            - a pool (``psycopg_pool.ConnectionPool``): each acquisition takes a
              connection from the pool and gives it back at release.

    Raises:
        TypeError: *name* is not a string, or *conninfo_or_connection* is none of these.
        ValueError: *name* is empty, the connection string is invalid, or the
            connection is not in autocommit mode.

    Example::

        from aplock.postgres import PgLock

        migrate = PgLock("orders.migrate", "postgresql://app@db.internal/app")
        with migrate:
            run_migrations()
        migrate.close()
    """

    _backend: _sync.Backend

    def __init__(
        self, name: str, conninfo_or_connection: str | Connection | ConnectionPool
    ) -> None:
        self._name = _names.validate(name)
        self._key = advisory_key(name)
        self._backend = _sync.Backend(self._name, self._key, conninfo_or_connection)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the lock, as ``multiprocessing.Lock.acquire`` does.

        The wait blocks in the server (``pg_advisory_lock`` under ``lock_timeout``);
        ``block=False`` is one ``pg_try_advisory_lock``.

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
            LockUnavailableError: the server could not be reached or refused.
            LockClosedError: the object was closed.
        """
        wait = _deadline.normalize_timeout(block, timeout, "aplock.postgres.PgLock", self._name)
        return self._backend.acquire(_deadline.Deadline.after(wait))

    def release(self) -> None:
        """Release the lock. Any thread may call it on the object that acquired it.

        Raises:
            LockNotHeldError: (a ``ValueError``) this object does not hold the lock.
            LockLostError: the session had lost the lock before this call (see
                ``check``); the object no longer holds it either way.
            LockUnavailableError: a shared connection failed and its session may
                still hold the lock.
            LockClosedError: the object was closed.
        """
        self._backend.release()

    def check(self) -> None:
        """Confirm with the server that this object still holds the lock.

        Call it before work that must not happen without the lock (one round trip).

        Raises:
            LockLostError: the session no longer holds it (connection broken,
                backend terminated, session changed under a pooler, locks released
                behind aplock's back). Then call ``release()`` (it raises
                ``LockLostError`` again and resets the object) or leave the ``with``.
            LockNotHeldError: this object does not hold the lock.
            LockUnavailableError: the server did not answer.
        """
        self._backend.check()

    def locked(self) -> bool:
        """Whether some session holds the lock now.

        ``True`` without asking while this object holds the lock or is acquiring it;
        otherwise one query of ``pg_locks``.

        Raises:
            LockUnavailableError: the server could not be reached.
            LockClosedError: the object was closed.
        """
        return self._backend.locked()

    def close(self) -> None:
        """Release the lock if this object holds it, and close its own connection.

        A connection or pool the user passed is left open. Using the object afterwards
        raises ``LockClosedError``. Idempotent.
        """
        self._backend.close()

    def __reduce__(self) -> tuple[Any, ...]:
        conninfo = self._backend.conninfo
        if conninfo is None:
            raise TypeError(
                f"lock {self._name!r}: a PgLock on a connection or pool cannot be pickled; "
                "create it from a connection string to send it to another process"
            )
        return (PgLock, (self._name, conninfo))


class AsyncPgLock(_Facade):
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
    ``acquisition`` is ``PgLock``'s: the cluster-wide fencing token (``None`` from the
    moment ``release()`` starts the unlock).

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

    _backend: _aio.AsyncBackend

    def __init__(
        self,
        name_or_lock: str | PgLock,
        conninfo_or_connection: (
            str | AsyncConnection | AsyncConnectionPool | Connection | ConnectionPool | None
        ) = None,
    ) -> None:
        if isinstance(name_or_lock, PgLock):
            if conninfo_or_connection is not None:
                raise TypeError("AsyncPgLock takes a PgLock or a name and a connection, not both")
            name, backend = name_or_lock.name, name_or_lock._backend
        else:
            name, backend = _names.validate(name_or_lock), None
            if conninfo_or_connection is None:
                raise TypeError(
                    f"lock {name!r}: AsyncPgLock needs a connection string, a connection or a pool"
                )
        self._name = name
        self._key = advisory_key(name)
        self._backend = _aio.AsyncBackend(name, self._key, conninfo_or_connection, backend)

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the lock; the meaning of *block* and *timeout* is ``PgLock.acquire``'s.

        Always a checkpoint. A wait blocks in the server; cancelling it sends the
        server a cancel request and waits for the statement to end (normally a
        millisecond), releasing the lock if it was granted meanwhile. Right after this
        object's ``release()``, it first waits for that unlock to reach the server
        (that is not waiting for the lock: ``block=False`` gets a lock nobody else holds).

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
        wait = _deadline.normalize_timeout(
            block, timeout, "aplock.postgres.AsyncPgLock", self._name
        )
        return await self._backend.acquire(wait)

    def release(self) -> None:
        """Release the lock: starts the unlock in the background and returns at once.

        Synchronous, like ``asyncio.Lock.release``. The server frees the lock one round
        trip later; this object's next ``acquire()`` waits for that. A failure (the lock
        had been lost) is logged to the ``aplock.postgres`` logger: ``await arelease()``
        or ``async with`` to get it as ``LockLostError`` instead.

        Raises:
            LockNotHeldError: (a ``ValueError``) this object does not hold the lock.
            LockClosedError: the object was closed.
        """
        self._backend.release()

    async def arelease(self) -> None:
        """Release the lock and wait until the server has.

        Cancellation cannot interrupt the unlock (one round trip, shielded).

        Raises:
            LockNotHeldError: (a ``ValueError``) this object does not hold the lock.
            LockLostError: the session had lost the lock before this call; the object
                no longer holds it either way.
            LockUnavailableError: a shared connection failed and its session may
                still hold the lock.
            LockClosedError: the object was closed.
        """
        await self._backend.arelease()

    def locked(self) -> bool:
        """Whether this object holds the lock, or is acquiring or releasing it.

        Synchronous, so it cannot ask the server: ``False`` says nothing about other
        processes. ``PgLock.locked()`` asks the server.

        Raises:
            LockClosedError: the object was closed.
        """
        return self._backend.locked()

    async def check(self) -> None:
        """Confirm with the server that this object still holds the lock (one round trip).

        Raises:
            LockLostError: the session no longer holds it; leave the ``async with``
                (or ``await arelease()``, which raises it again and resets the object).
            LockNotHeldError: this object does not hold the lock.
        """
        await self._backend.check()

    async def aclose(self) -> None:
        """Release the lock if held, and close the connection this object opened.

        Waits for an unlock that ``release()`` started. A connection or pool the user
        passed, or a ``PgLock`` given, is left open. Using the object afterwards raises
        ``LockClosedError``. Idempotent.
        """
        await self._backend.aclose()

    def close(self) -> None:
        """Close the connection this object opened, without awaiting.

        For code that cannot await (a synchronous shutdown hook, after the event loop
        has ended). As ``aclose()`` otherwise, but it cannot release the lock, which is
        a round trip: it refuses while the object holds the lock or is acquiring or
        releasing it. Idempotent.

        Raises:
            RuntimeError: this object holds the lock, or is acquiring or releasing it:
                ``await aclose()`` instead.
        """
        self._backend.close()

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

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(
            f"lock {self._name!r}: an AsyncPgLock cannot be pickled (its session belongs to "
            "this process's event loops); send the name and connection string, and create "
            "the lock in the other process"
        )
