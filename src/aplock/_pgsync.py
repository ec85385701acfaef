"""``PgLock``: the aplock ``Lock`` on PostgreSQL session-level advisory locks.

The server keeps the lock: one advisory key per name (``_pgsql.advisory_key``), held by
a database session. This module adds what the contract needs on top:

- **Non-recursive.** Advisory locks are re-entrant within a session, so the server
  cannot keep two users of one session apart. A ``_Gate`` per session and key does: it
  is taken before the first statement and left after the unlock, so a session never
  asks for a key it already holds.
- **Waiting is a server-side block.** ``block=False`` is ``pg_try_advisory_lock``; a
  wait is ``pg_advisory_lock`` under a ``lock_timeout`` set for that statement only.
- **Nothing is left held.** An interrupted or failed attempt ends with "unlock if this
  session holds it", or with closing the session, which releases everything it held.
- **A lost session is noticed.** ``release()`` unlocks only if the session is still the
  one that took the lock, and raises ``LockLostError`` when it is not, or the
  connection broke; ``check()`` asks the server at any time.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import threading
import weakref
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

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
from .errors import LockClosedError, LockError, LockNotHeldError, LockUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType
    from typing import Self

__all__ = ["ConnectionPool", "PgLock"]

logger = logging.getLogger("aplock.postgres")

Connection = psycopg.Connection[Any]

#: Seconds one cancel request to the server may take.
CANCEL_TIMEOUT = 5.0
#: Tries of the clean-up after an interrupted wait (a late cancel request can hit it).
CLEANUP_TRIES = 3
#: Longest single in-process wait while a cancel request may come (see ``_Gate.enter``).
_CANCEL_SLICE = 0.05

_IDLE = TransactionStatus.IDLE

NOT_HELD = (
    "release() of a lock this object does not hold. A PostgreSQL advisory lock can only "
    "be released by the session, and so the lock object, that acquired it: call "
    "release() on that object (from any thread)"
)

# Connections inherited over fork(): closing one would end the parent's session (and
# release its locks), so the child only stops using them.
_inherited: list[Connection] = []


class ConnectionPool(Protocol):
    """What ``PgLock`` uses of a pool such as ``psycopg_pool.ConnectionPool``."""

    def getconn(self, timeout: float | None = None) -> Connection:
        """Take a connection out of the pool."""

    def putconn(self, conn: Connection) -> None:
        """Give a connection back to the pool."""


class _Gate:
    """The in-process side of one session's lock on one key.

    ``busy`` is set from the moment an acquire may talk to the server until its release
    is done, so one session never asks for a key twice. Inspections (``locked()``) run
    only while it is clear, and an acquire waits for running ones (one quick query each)
    before it uses the connection, so an inspection never queues behind a long wait.
    """

    __slots__ = ("_cond", "_inspecting", "busy")

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inspecting = 0
        self.busy = False

    def enter(self, deadline: Deadline, cancelled: Callable[[], bool] | None) -> bool:
        """Take the gate by *deadline*; ``False`` if the time ran out or *cancelled*."""
        with self._cond:
            while self.busy:
                if deadline.expired() or (cancelled is not None and cancelled()):
                    return False
                self._cond.wait(
                    deadline.remaining() if cancelled is None else deadline.slice(_CANCEL_SLICE)
                )
            self.busy = True
            while self._inspecting:
                self._cond.wait()
            return True

    def leave(self) -> None:
        """Give the gate up."""
        with self._cond:
            self.busy = False
            self._cond.notify_all()

    @contextmanager
    def inspecting(self) -> Iterator[bool]:
        """Hold off acquires for one quick query; yields ``False`` if the gate is busy."""
        with self._cond:
            if self.busy:
                free = False
            else:
                free = True
                self._inspecting += 1
        try:
            yield free
        finally:
            if free:
                with self._cond:
                    self._inspecting -= 1
                    self._cond.notify_all()


class Cancel:
    """Lets another thread stop a waiting ``PgLock`` acquire.

    ``request()`` sets a flag that the in-process wait checks every few tens of
    milliseconds and, while the wait is in the server, asks the server to cancel it.
    """

    __slots__ = ("_conn", "_mutex", "requested", "result")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._conn: Connection | None = None
        self.requested = False
        self.result: bool | None = None

    def __call__(self) -> bool:
        return self.requested

    def arm(self, conn: Connection) -> bool:
        """Mark *conn* as waiting in the server; ``False`` if already cancelled."""
        with self._mutex:
            if self.requested:
                return False
            self._conn = conn
            return True

    def disarm(self) -> None:
        """The server-side wait is over."""
        with self._mutex:
            self._conn = None

    def settle(self, got: bool) -> bool:
        """The acquire ended with *got*; ``False`` if it was cancelled meanwhile."""
        with self._mutex:
            if self.requested:
                return False
            self.result = got
            return True

    def request(self) -> bool:
        """Cancel the acquire (blocking for one cancel request: call it from a thread).

        Returns whether the acquire had already ended holding the lock: then the caller
        must release it; otherwise the acquire releases whatever it gets.
        """
        with self._mutex:
            self.requested = True
            conn = self._conn
            result = self.result
        if conn is not None:
            try:
                conn.cancel_safe(timeout=CANCEL_TIMEOUT)
            except Exception as exc:  # the wait's own outcome tells what happened
                logger.debug("cancel request failed: %r", exc)
        return result is True


@dataclass(frozen=True, slots=True)
class _Held:
    """The session that holds the lock for a ``PgLock``: its connection and backend pid."""

    conn: Connection
    pid: int


def _row(cur: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    row = cur.fetchone()
    assert row is not None  # every statement we send returns one row
    return tuple(row)


class _Source:
    """Where a ``PgLock`` gets its session from."""

    dedicated = False
    where = "PostgreSQL"

    def gate(self, key: int) -> _Gate:
        return _Gate()

    def borrow(self, name: str, deadline: Deadline) -> Connection | None:
        """A connection to use; ``None`` if *deadline* passed before one was free."""
        raise NotImplementedError

    def give_back(self, conn: Connection) -> None:
        """Done with *conn* for now."""

    def discard(self, conn: Connection) -> None:
        """*conn* is broken or in an unknown state."""

    def close(self) -> None:
        """Close what this source opened."""


class _Dedicated(_Source):
    """One connection of the lock's own, opened on first use and kept until ``close()``."""

    dedicated = True

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
        self._conn: Connection | None = None
        self._pid = 0
        self._mutex = threading.Lock()

    def borrow(self, name: str, deadline: Deadline) -> Connection:
        conn = self._conn
        if conn is not None and not conn.closed and self._pid == os.getpid():
            return conn
        with self._mutex:
            conn = self._conn
            if conn is not None and self._pid != os.getpid():
                _inherited.append(conn)
                conn = None
            if conn is None or conn.closed:
                conn = self._conn = self._connect(name, deadline)
                self._pid = os.getpid()
            return conn

    def _connect(self, name: str, deadline: Deadline) -> Connection:
        kwargs: dict[str, Any] = {"autocommit": True, "fallback_application_name": "aplock"}
        left = deadline.remaining()
        if left is not None and "connect_timeout" not in self._params:
            kwargs["connect_timeout"] = max(2, math.ceil(left))
        try:
            conn = psycopg.Connection.connect(self.conninfo, **kwargs)
        except psycopg.Error as exc:
            raise unavailable(name, self.where, "connecting", exc) from exc
        try:
            if conn.info.server_version >= 140000:
                # An idle holder is the normal case: never let the server end its session.
                conn.execute("SET idle_session_timeout = 0")
        except psycopg.Error as exc:
            conn.close()
            raise unavailable(name, self.where, "setting up the session", exc) from exc
        return conn

    def discard(self, conn: Connection) -> None:
        with self._mutex:
            if conn is self._conn:
                self._conn = None
        conn.close()

    def close(self) -> None:
        with self._mutex:
            conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.close()


_shared_gates: weakref.WeakKeyDictionary[Connection, dict[int, _Gate]] = weakref.WeakKeyDictionary()
_shared_gates_lock = threading.Lock()


def check_shareable(name: str, conn: Connection | psycopg.AsyncConnection[Any]) -> None:
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
    if conn.info.transaction_status not in (_IDLE, TransactionStatus.ACTIVE):
        raise RuntimeError(
            f"lock {name!r}: the connection is inside a transaction; acquire and release "
            "the lock outside transaction blocks (a timed-out wait would abort the transaction)"
        )


class _Shared(_Source):
    """The user's connection: one session shared with the user's other work."""

    def __init__(self, name: str, conn: Connection) -> None:
        check_shareable(name, conn)
        self.conn = conn
        self.where = target(None, conn)

    def gate(self, key: int) -> _Gate:
        with _shared_gates_lock:
            gates = _shared_gates.setdefault(self.conn, {})
            return gates.setdefault(key, _Gate())

    def borrow(self, name: str, deadline: Deadline) -> Connection:
        conn = self.conn
        if conn.closed:
            raise LockUnavailableError(
                name, f"the connection given for it ({self.where}) is closed: pass an open one"
            )
        check_shareable(name, conn)
        return conn


class _Pooled(_Source):
    """A pool: one of its connections per acquisition, given back at release."""

    def __init__(self, name: str, pool: ConnectionPool) -> None:
        self.pool = pool
        self.where = f"PostgreSQL through pool {getattr(pool, 'name', type(pool).__name__)!r}"
        self._restore: set[int] = set()

    def borrow(self, name: str, deadline: Deadline) -> Connection | None:
        left = deadline.remaining()
        try:
            conn = self.pool.getconn(timeout=left) if left is not None else self.pool.getconn()
        except Exception as exc:  # psycopg_pool.PoolTimeout and its kin
            if deadline.expired():
                return None
            raise unavailable(name, self.where, "getting a connection", exc) from exc
        if not conn.autocommit:
            conn.autocommit = True
            self._restore.add(id(conn))
        return conn

    def give_back(self, conn: Connection) -> None:
        if id(conn) in self._restore:
            self._restore.discard(id(conn))
            if not conn.closed:
                conn.autocommit = False
        self.pool.putconn(conn)

    def discard(self, conn: Connection) -> None:
        conn.close()
        self.give_back(conn)  # the pool replaces a closed connection


def source_for(name: str, arg: object) -> _Source:
    """The ``_Source`` for a conninfo string, a connection or a pool."""
    if isinstance(arg, str):
        return _Dedicated(name, arg)
    if isinstance(arg, psycopg.Connection):
        return _Shared(name, arg)
    getconn = getattr(arg, "getconn", None)
    if isinstance(arg, psycopg.AsyncConnection) or inspect.iscoroutinefunction(getconn):
        raise TypeError(
            f"lock {name!r}: PgLock needs a sync connection or pool; use "
            f"aplock.postgres.AsyncPgLock with {type(arg).__name__}"
        )
    if callable(getconn) and callable(getattr(arg, "putconn", None)):
        return _Pooled(name, arg)  # type: ignore[arg-type]
    raise TypeError(
        f"lock {name!r}: expected a connection string, a psycopg.Connection or a connection "
        f"pool, not {type(arg).__name__}"
    )


class PgLock:
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

    Args:
        name: any non-empty string; it maps to the advisory key ``advisory_key(name)``.
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
    """

    def __init__(
        self, name: str, conninfo_or_connection: str | Connection | ConnectionPool
    ) -> None:
        self._name = validate(name)
        self._key = sql.advisory_key(name)
        self._source = source_for(name, conninfo_or_connection)
        self._gate = self._source.gate(self._key)
        self._mutex = threading.Lock()
        self._held: _Held | None = None
        self._closed = False
        self._finalizer = weakref.finalize(self, self._source.close)

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
        return self._held is not None

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

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
        wait = normalize_timeout(block, timeout, "aplock.postgres.PgLock", self._name)
        return self._acquire(Deadline.after(wait), None)

    def acquire_cancellable(self, deadline: Deadline, cancel: Cancel) -> bool:
        """``acquire`` that *cancel* can stop from another thread, leaving nothing held."""
        got = self._acquire(deadline, cancel)
        if not cancel.settle(got):
            if got:
                self.release_after_cancel()
            return False
        return got

    def _acquire(self, deadline: Deadline, cancel: Cancel | None) -> bool:
        if self._closed:
            raise LockClosedError(self._name, "this PgLock was closed; create a new one")
        if not self._gate.enter(deadline, cancel):
            return False
        try:
            held = self._take(deadline, cancel)
        except BaseException:
            self._gate.leave()
            raise
        if held is None:
            self._gate.leave()
            return False
        self._held = held
        return True

    def _take(self, deadline: Deadline, cancel: Cancel | None) -> _Held | None:
        source = self._source
        retry = source.dedicated  # a dedicated session that broke while idle: reconnect once
        while True:
            conn = source.borrow(self._name, deadline)
            if conn is None:
                return None
            try:
                pid = self._take_on(conn, deadline, cancel)
            except psycopg.Error as exc:
                if conn.closed:
                    source.discard(conn)
                    if retry:
                        retry = False
                        continue
                else:
                    self._undo(conn)
                raise unavailable(self._name, source.where, "taking the lock", exc) from exc
            except BaseException:
                self._undo(conn)
                raise
            if pid is None:
                source.give_back(conn)
                return None
            return _Held(conn, pid)

    def _take_on(self, conn: Connection, deadline: Deadline, cancel: Cancel | None) -> int | None:
        taken, pid = _row(conn.execute(sql.TRY, {"key": self._key}))
        if taken:
            return int(pid)
        while not deadline.expired():
            if cancel is not None and not cancel.arm(conn):
                return None
            statement = sql.wait_statement(self._key, sql.lock_timeout_ms(deadline.remaining()))
            try:
                cur = conn.execute(statement)
            except pgerrors.LockNotAvailable:
                # lock_timeout (the loop ends if the deadline passed). Like a cancel, it
                # can fail the statement just after the lock was granted, and a session
                # lock outlives the statement: undo that.
                self._unlock_if_held(conn)
                continue
            except pgerrors.QueryCanceled:
                if cancel is not None and cancel.requested:
                    self._unlock_if_held(conn)
                    return None
                raise
            finally:
                if cancel is not None:
                    cancel.disarm()
            cur.nextset()
            cur.nextset()
            return int(_row(cur)[1])
        return None

    def _undo(self, conn: Connection) -> bool:
        """After an interrupted or failed step: see to it that the session does not keep
        the lock. Returns whether that is certain."""
        try:
            if not conn.closed:
                self._unlock_if_held(conn)
        except BaseException as exc:
            if isinstance(self._source, _Shared):
                logger.warning(
                    "lock %r: could not clean up the shared session after %r; it may still "
                    "hold the advisory lock until the connection closes",
                    self._name,
                    exc,
                )
                return False
            self._source.discard(conn)  # closing the session releases whatever it held
            return True
        self._source.give_back(conn)
        return True

    def _unlock_if_held(self, conn: Connection) -> None:
        for attempt in range(CLEANUP_TRIES):
            try:
                conn.execute(sql.UNLOCK_IF_HELD, {"key": self._key})
            except pgerrors.QueryCanceled:  # a late cancel request meant for the wait
                if attempt == CLEANUP_TRIES - 1:
                    raise
            else:
                return

    def release(self) -> None:
        """Release the lock. Any thread may call it on the object that acquired it.

        Raises:
            LockNotHeldError: (a ``ValueError``) this object does not hold the lock.
            LockLostError: the session had lost the lock before this call (see
                ``check``); the object no longer holds it either way.
            LockUnavailableError: a shared connection failed and its session may
                still hold the lock.
        """
        with self._mutex:
            held, self._held = self._held, None
        if held is None:
            raise LockNotHeldError(self._name, NOT_HELD)
        try:
            self._unlock(held)
        finally:
            self._gate.leave()

    def _unlock(self, held: _Held) -> None:
        conn = held.conn
        try:
            (released,) = _row(conn.execute(sql.UNLOCK, {"pid": held.pid, "key": self._key}))
        except psycopg.Error as exc:
            if conn.closed:
                self._source.discard(conn)
                raise lost_connection(self._name, exc) from exc
            if not self._undo(conn):
                raise unavailable(self._name, self._source.where, "releasing", exc) from exc
            return
        self._source.give_back(conn)
        if released is None:
            raise lost(self._name, SESSION_CHANGED)
        if not released:
            raise lost(self._name, NOT_IN_SESSION)

    def release_after_cancel(self) -> None:
        """Release a lock that a cancelled acquire got anyway (a late cancel may hit it)."""
        with self._mutex:
            held, self._held = self._held, None
        if held is None:
            return
        try:
            if not self._undo(held.conn):
                raise LockUnavailableError(
                    self._name, "could not release it after a cancelled acquire"
                )
        finally:
            self._gate.leave()

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
        held = self._held
        if held is None:
            raise LockNotHeldError(self._name, "check() of a lock this object does not hold")
        try:
            pid, mine = _row(held.conn.execute(sql.HELD, {"key": self._key}))
        except psycopg.Error as exc:
            if held.conn.closed:
                raise lost_connection(self._name, exc) from exc
            raise unavailable(self._name, self._source.where, "checking", exc) from exc
        if pid != held.pid:
            raise lost(self._name, SESSION_CHANGED)
        if not mine:
            raise lost(self._name, NOT_IN_SESSION)

    def locked(self) -> bool:
        """Whether some session holds the lock now.

        ``True`` without asking while this object holds the lock or is acquiring it;
        otherwise one query of ``pg_locks``.

        Raises:
            LockUnavailableError: the server could not be reached.
        """
        if self._closed:
            raise LockClosedError(self._name, "this PgLock was closed; create a new one")
        if self._held is not None:
            return True
        with self._gate.inspecting() as free:
            return self._ask_locked() if free else True

    def _ask_locked(self) -> bool:
        source = self._source
        retry = source.dedicated
        while True:
            conn = source.borrow(self._name, Deadline(None))
            if conn is None:  # only a pool without a free connection
                raise LockUnavailableError(self._name, f"no connection free in {source.where}")
            try:
                (locked,) = _row(conn.execute(sql.LOCKED, {"key": self._key}))
            except psycopg.Error as exc:
                if conn.closed:
                    source.discard(conn)
                    if retry:
                        retry = False
                        continue
                else:
                    source.give_back(conn)
                raise unavailable(self._name, source.where, "asking who holds it", exc) from exc
            source.give_back(conn)
            return bool(locked)

    def close(self) -> None:
        """Release the lock if this object holds it, and close its own connection.

        A connection or pool the user passed is left open. Using the object afterwards
        raises ``LockClosedError``. Idempotent.
        """
        if self._closed:
            return
        if self._held is not None:
            with suppress(LockError):
                self.release()
        self._closed = True
        self._finalizer()

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __reduce__(self) -> tuple[Any, ...]:
        if not isinstance(self._source, _Dedicated):
            raise TypeError(
                f"lock {self._name!r}: a PgLock on a connection or pool cannot be pickled; "
                "create it from a connection string to send it to another process"
            )
        return (PgLock, (self._name, self._source.conninfo))

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        else:
            state = "held by this object" if self._held is not None else "not held by this object"
        return f"<aplock.postgres.PgLock {self._name!r} key {self._key} {state}>"
