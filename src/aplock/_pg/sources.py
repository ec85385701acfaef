"""Where a PostgreSQL lock gets its session from, written once for both runners.

A source lends the protocol a connection for an attempt (``borrow``), takes it back
(``give_back``) or drops it when broken (``discard``). These are flows (see
``steps.py``): the I/O they need (connect, close, a pool's ``getconn``) is yielded to
the runner, so one source class serves sync and async connections alike. There are
three:

- ``Dedicated``: a connection string. The lock opens a connection of its own on first
  use and keeps it until ``close()``; a child process after ``fork()`` opens its own
  and never touches the parent's (closing it would end the parent's session).
- ``Shared``: the user's connection, shared with the user's other work.
- ``Pooled``: a pool; one of its connections per acquisition, given back at release.

``Gates`` keeps the in-process gates (one per session and key: advisory locks are
re-entrant per session, so a session must never ask for a key it holds) of sessions
that several lock objects share.
"""

from __future__ import annotations

import inspect
import math
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from aplock.errors import LockUnavailableError

from . import sql
from .steps import C, Close, Connect, Execute, GetConn, PutConn, SetAutocommit
from .translate import target, unavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from aplock._deadline import Deadline

    from .steps import AsyncConnection, Connection, Flow

__all__ = [
    "AsyncConnectionPool",
    "ConnectionPool",
    "Dedicated",
    "Gates",
    "Pooled",
    "Shared",
    "Source",
    "async_source",
    "check_shareable",
    "finish",
    "sync_source",
]

G = TypeVar("G")

# Connections inherited over fork(): closing one, or letting it be collected, would end
# the parent's session (and release its locks), so the child only stops using them.
_inherited: list[object] = []


class ConnectionPool(Protocol):
    """What ``PgLock`` uses of a pool such as ``psycopg_pool.ConnectionPool``."""

    def getconn(self, timeout: float | None = None) -> Connection:
        """Take a connection out of the pool."""

    def putconn(self, conn: Connection) -> None:
        """Give a connection back to the pool."""


class AsyncConnectionPool(Protocol):
    """What ``AsyncPgLock`` uses of ``psycopg_pool.AsyncConnectionPool``."""

    async def getconn(self, timeout: float | None = None) -> AsyncConnection:
        """Take a connection out of the pool."""

    async def putconn(self, conn: AsyncConnection) -> None:
        """Give a connection back to the pool."""


def finish(conn: Connection | AsyncConnection) -> None:
    """Close *conn* at once, without awaiting (``close()`` of either kind does this)."""
    conn.pgconn.finish()


class Source(Generic[C]):
    """Where a lock's sessions come from."""

    #: A broken idle session may be replaced by a new one (the lock's own only).
    reconnects = False
    #: The session is the user's: never close it, and say so if it may keep the lock.
    shared = False
    #: The server, for messages.
    where = "PostgreSQL"

    def borrow(self, name: str, deadline: Deadline) -> Flow[C, C | None]:
        """A connection to use; ``None`` if *deadline* passed before one was free."""
        raise NotImplementedError

    def give_back(self, conn: C) -> Flow[C, None]:
        """Done with *conn* for now."""
        yield from ()

    def discard(self, conn: C) -> Flow[C, None]:
        """*conn* is broken or in an unknown state."""
        yield from ()

    def close(self) -> None:
        """Close what this source opened, at once (also a finalizer: no awaiting)."""


class Dedicated(Source[C]):
    """One connection of the lock's own, opened on first use and kept until ``close()``."""

    reconnects = True

    def __init__(self, name: str, conninfo: str) -> None:
        try:
            self._params = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ValueError(
                f"lock {name!r}: invalid PostgreSQL connection string ({exc}); pass a "
                "libpq string such as 'host=db dbname=app' or a postgresql:// URI"
            ) from None
        self.conninfo = conninfo
        self.where = target(conninfo)
        self._conn: C | None = None
        self._pid = 0
        self._mutex = threading.Lock()

    def _current(self) -> C | None:
        """The open connection of this process, if any (under the mutex)."""
        conn = self._conn
        if conn is not None and self._pid != os.getpid():
            _inherited.append(conn)  # the parent's: keep it from ever being closed here
            conn = self._conn = None
        return None if conn is None or conn.closed else conn

    def borrow(self, name: str, deadline: Deadline) -> Flow[C, C | None]:
        with self._mutex:
            conn = self._current()
        if conn is not None:
            return conn
        options: dict[str, Any] = {"autocommit": True, "fallback_application_name": "aplock"}
        left = deadline.remaining()
        if left is not None and "connect_timeout" not in self._params:
            options["connect_timeout"] = max(2, math.ceil(left))
        try:
            conn = yield Connect(self.conninfo, options)
        except psycopg.Error as exc:
            raise unavailable(name, self.where, "connecting", exc) from exc
        try:
            if conn.info.server_version >= sql.SETUP_SINCE:
                yield Execute(conn, sql.SETUP, fetch=False)
        except BaseException as exc:
            yield Close(conn)
            if isinstance(exc, psycopg.Error):
                raise unavailable(name, self.where, "setting up the session", exc) from exc
            raise
        with self._mutex:
            kept = self._current()
            if kept is None:
                kept = self._conn = conn
                self._pid = os.getpid()
        if kept is not conn:  # another thread of this lock connected first
            yield Close(conn)
        return kept

    def discard(self, conn: C) -> Flow[C, None]:
        with self._mutex:
            if conn is self._conn:
                self._conn = None
        yield Close(conn)

    def close(self) -> None:
        with self._mutex:
            conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            finish(conn)


def check_shareable(name: str, conn: Connection | AsyncConnection) -> None:
    """Reject a connection whose session cannot run the lock's statements of its own."""
    if conn.closed:
        raise ValueError(f"lock {name!r}: the connection is closed: pass an open one")
    if not conn.autocommit:
        raise ValueError(
            f"lock {name!r}: the connection must be in autocommit mode: the lock's statements "
            "must not run inside your transactions (a timed-out wait would abort them). "
            "Connect with autocommit=True, or pass a connection string to give the lock its "
            "own session"
        )
    if conn.info.transaction_status not in (TransactionStatus.IDLE, TransactionStatus.ACTIVE):
        raise RuntimeError(
            f"lock {name!r}: the connection is inside a transaction; acquire and release "
            "the lock outside transaction blocks (a timed-out wait would abort the transaction)"
        )


class Shared(Source[C]):
    """The user's connection: one session shared with the user's other work."""

    shared = True

    def __init__(self, name: str, conn: C) -> None:
        check_shareable(name, conn)
        self.conn: C = conn
        self.where = target(None, conn)

    def borrow(self, name: str, deadline: Deadline) -> Flow[C, C | None]:
        yield from ()
        conn = self.conn
        if conn.closed:
            raise LockUnavailableError(
                name, f"the connection given for it ({self.where}) is closed: pass an open one"
            )
        check_shareable(name, conn)
        return conn


class Pooled(Source[C]):
    """A pool: one of its connections per acquisition, given back at release."""

    def __init__(self, pool: ConnectionPool | AsyncConnectionPool) -> None:
        self.pool = pool
        self.where = f"PostgreSQL through pool {getattr(pool, 'name', type(pool).__name__)!r}"
        self._restore: set[int] = set()

    def borrow(self, name: str, deadline: Deadline) -> Flow[C, C | None]:
        try:
            conn: C = yield GetConn(self.pool, deadline.remaining())
        except Exception as exc:  # psycopg_pool.PoolTimeout and its kin
            if deadline.expired():
                return None
            raise unavailable(name, self.where, "getting a connection", exc) from exc
        if not conn.autocommit:
            self._restore.add(id(conn))
            try:
                yield SetAutocommit(conn, True)
            except psycopg.Error as exc:
                yield from self.discard(conn)
                raise unavailable(name, self.where, "setting up a pooled connection", exc) from exc
        return conn

    def give_back(self, conn: C) -> Flow[C, None]:
        if id(conn) in self._restore:
            self._restore.discard(id(conn))
            if not conn.closed:
                yield SetAutocommit(conn, False)
        yield PutConn(self.pool, conn)

    def discard(self, conn: C) -> Flow[C, None]:
        yield Close(conn)
        yield from self.give_back(conn)  # the pool replaces a closed connection


def sync_source(name: str, arg: object) -> Source[Connection]:
    """``PgLock``'s source for a connection string, a ``psycopg.Connection`` or a pool."""
    if isinstance(arg, str):
        return Dedicated(name, arg)
    if isinstance(arg, psycopg.Connection):
        return Shared(name, arg)
    getconn = getattr(arg, "getconn", None)
    if isinstance(arg, psycopg.AsyncConnection) or inspect.iscoroutinefunction(getconn):
        raise TypeError(
            f"lock {name!r}: PgLock needs a sync connection or pool; use "
            f"aplock.postgres.AsyncPgLock with {type(arg).__name__}"
        )
    if callable(getconn) and callable(getattr(arg, "putconn", None)):
        return Pooled(arg)  # type: ignore[arg-type]
    raise TypeError(
        f"lock {name!r}: expected a connection string, a psycopg.Connection or a connection "
        f"pool, not {type(arg).__name__}"
    )


def async_source(name: str, arg: object) -> Source[AsyncConnection] | None:
    """The async source for a ``psycopg.AsyncConnection`` or an async pool; ``None`` for
    what ``sync_source`` takes (``AsyncPgLock`` runs those through a ``PgLock``'s backend)."""
    if isinstance(arg, psycopg.AsyncConnection):
        return Shared(name, arg)
    if inspect.iscoroutinefunction(getattr(arg, "getconn", None)):
        return Pooled(arg)  # type: ignore[arg-type]
    return None


class Gates(Generic[G]):
    """The gate of each key on each shared connection; a fresh one for any other source."""

    def __init__(self, make: Callable[[], G]) -> None:
        self._make = make
        self._shared: weakref.WeakKeyDictionary[object, dict[int, G]] = weakref.WeakKeyDictionary()
        self._mutex = threading.Lock()

    def get(self, source: Source[Any], key: int) -> G:
        """The gate for *key* on *source*'s session."""
        if not isinstance(source, Shared):
            return self._make()
        with self._mutex:
            gates = self._shared.setdefault(source.conn, {})
            gate = gates.get(key)
            if gate is None:
                gate = gates[key] = self._make()
            return gate
