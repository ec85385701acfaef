"""The PostgreSQL lock protocol, written once, as flows that yield steps (no I/O).

The server keeps the lock: one session-level advisory lock per name, on the key
``sql.advisory_key(name)``. ``AdvisoryLock`` is what one lock object does with it, each
operation a flow (see ``steps.py``) that ``sync.run`` and ``aio.run`` execute alike:

- ``take``: ``pg_try_advisory_lock`` first (one round trip for a free lock); if it is
  held, a wait that blocks in the server, ``pg_advisory_lock`` under a ``lock_timeout``
  set for that statement only, again for what is left until the deadline. The round
  trip that gets the lock also gets its generation, the fencing token (``sql.generation``:
  a transaction id, evaluated once the lock was granted).
- ``unlock``: only if the session is still the one that took the lock (its backend pid),
  so a session that changed under a pooler is never unlocked for someone else.
- ``check``: whether the session still holds it. ``locked``: whether any session does.

What the contract needs on top of the server's lock:

- **Nothing is left held.** A cancel or a ``lock_timeout`` can strike just after the
  server granted the lock, in the same statement, and a session lock outlives a failed
  statement: after every cancelled or timed-out wait comes "unlock if this session holds
  it" (``UNLOCK_IF_HELD``, tried ``CLEANUP_TRIES`` times, since a late cancel request
  meant for the wait can hit it). An interrupted or failed attempt ends the same way,
  or, if even that fails, by closing the lock's own session, which releases everything
  it held (``undo``).
- **A lost session is noticed.** ``unlock`` and ``check`` raise ``LockLostError`` when
  the connection broke, the session changed, or the session no longer holds the lock.
- **A broken idle session is replaced.** The lock's own connection, found broken when
  an attempt starts, is reopened once.

Non-recursion is the runners' part: a gate per session and key (``sources.Gates``),
taken before the first statement and left after the unlock, so a session never asks
for a key it holds (advisory locks are re-entrant per session).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import psycopg
from psycopg import errors as pgerrors

from aplock._deadline import Deadline
from aplock.errors import LockUnavailableError
from aplock.sync import Acquisition

from . import sql
from .steps import C, Execute, Wait
from .translate import NOT_IN_SESSION, SESSION_CHANGED, lost, lost_connection, unavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from .sources import Source
    from .steps import Cancel, Flow

__all__ = ["CLEANUP_TRIES", "AdvisoryLock", "Held", "acquisition_of", "session_socket"]

logger = logging.getLogger("aplock.postgres")

#: Tries of the clean-up after an interrupted wait (a late cancel request can hit it).
CLEANUP_TRIES = 3

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Held(Generic[C]):
    """The session that holds the lock for a lock object: its connection and backend
    pid, and the acquisition's generation (the fencing token)."""

    conn: C
    pid: int
    generation: int


def acquisition_of(held: Held[C] | None) -> Acquisition | None:
    """What ``acquisition`` says of a lock object that holds *held* (or nothing)."""
    return None if held is None else Acquisition(held.generation, None)


def session_socket(held: Held[C] | None) -> int | None:
    """The file descriptor of the socket of the session that holds the lock, or ``None``
    (nothing held, or the connection closed). No I/O; the descriptor is the connection's."""
    if held is None:
        return None
    try:
        return None if held.conn.closed else held.conn.pgconn.socket
    except psycopg.Error:  # the connection is gone: the next check tells
        return None


class AdvisoryLock(Generic[C]):
    """The protocol of one lock object: its name, its key, where its sessions come from."""

    __slots__ = ("key", "name", "source")

    def __init__(self, name: str, key: int, source: Source[C]) -> None:
        self.name = name
        self.key = key
        self.source: Source[C] = source

    def take(self, deadline: Deadline, cancel: Cancel[C]) -> Flow[C, Held[C] | None]:
        """Take the lock by *deadline*: who holds it now, or ``None`` if the time ran out
        or *cancel* was requested. Whatever happens, the session does not keep the lock
        unless this returns it."""

        def attempt(conn: C) -> Flow[C, tuple[int, int] | None]:
            return self._take_on(conn, deadline, cancel)

        got = yield from self._on_session(deadline, "taking the lock", attempt, undo=True)
        if got is None:
            return None
        conn, taken = got
        if taken is None:
            yield from self.source.give_back(conn)
            return None
        pid, generation = taken
        return Held(conn, pid, generation)

    def _take_on(
        self, conn: C, deadline: Deadline, cancel: Cancel[C]
    ) -> Flow[C, tuple[int, int] | None]:
        """``(backend pid, generation)`` once the lock is taken; ``None`` if not."""
        version = conn.info.server_version
        generation, pid = yield Execute(conn, sql.try_statement(version), {"key": self.key})
        if generation is not None:
            return int(pid), int(generation)
        while not deadline.expired():
            if not cancel.arm(conn):
                return None
            timeout_ms = sql.lock_timeout_ms(deadline.remaining())
            statement = sql.wait_statement(self.key, timeout_ms, version)
            try:
                generation, pid = yield Wait(
                    conn, statement, results=sql.WAIT_RESULTS, cancel=cancel
                )
            except pgerrors.LockNotAvailable:
                # lock_timeout (the loop ends if the deadline passed). Like a cancel, it
                # can fail the statement just after the lock was granted: undo that.
                yield from self._unlock_if_held(conn)
                continue
            except pgerrors.QueryCanceled:
                if cancel.requested:
                    yield from self._unlock_if_held(conn)
                    return None
                raise
            finally:
                cancel.disarm()
            return int(pid), int(generation)
        return None

    def _on_session(
        self,
        deadline: Deadline,
        doing: str,
        attempt: Callable[[C], Flow[C, _T]],
        *,
        undo: bool,
    ) -> Flow[C, tuple[C, _T] | None]:
        """Run *attempt* on a borrowed connection: ``(connection, its result)``, or
        ``None`` if none was free by *deadline*.

        The lock's own session, found broken, is reopened once. On a failure the
        connection is cleaned up (with *undo*: the lock released if the session got it)
        and a psycopg error becomes ``LockUnavailableError`` saying what was being *doing*.
        """
        source = self.source
        retry = source.reconnects
        while True:
            conn = yield from source.borrow(self.name, deadline)
            if conn is None:
                return None
            try:
                return conn, (yield from attempt(conn))
            except psycopg.Error as exc:
                if conn.closed:
                    yield from source.discard(conn)
                    if retry:
                        retry = False
                        continue
                elif undo:
                    yield from self.undo(conn)
                else:
                    yield from source.give_back(conn)
                raise unavailable(self.name, source.where, doing, exc) from exc
            except BaseException:
                yield from (self.undo(conn) if undo else source.give_back(conn))
                raise

    def undo(self, conn: C) -> Flow[C, bool]:
        """After an interrupted or failed step: see to it that the session does not keep
        the lock, and give the connection back. Returns whether that is certain."""
        try:
            if not conn.closed:
                yield from self._unlock_if_held(conn)
        except BaseException as exc:
            if self.source.shared:
                logger.warning(
                    "lock %r: could not clean up the shared session after %r; it may still "
                    "hold the advisory lock until the connection closes",
                    self.name,
                    exc,
                )
                return False
            yield from self.source.discard(conn)  # ending the session releases its locks
            return True
        yield from self.source.give_back(conn)
        return True

    def _unlock_if_held(self, conn: C) -> Flow[C, None]:
        for attempt in range(CLEANUP_TRIES):
            try:
                yield Execute(conn, sql.UNLOCK_IF_HELD, {"key": self.key}, fetch=False)
            except pgerrors.QueryCanceled:  # a late cancel request meant for the wait
                if attempt == CLEANUP_TRIES - 1:
                    raise
            else:
                return

    def unlock(self, held: Held[C]) -> Flow[C, None]:
        """Release the lock *held* took; ``LockLostError`` if the session had lost it."""
        conn = held.conn
        try:
            (released,) = yield Execute(conn, sql.UNLOCK, {"pid": held.pid, "key": self.key})
        except psycopg.Error as exc:
            if conn.closed:
                yield from self.source.discard(conn)
                raise lost_connection(self.name, exc) from exc
            if not (yield from self.undo(conn)):
                raise unavailable(self.name, self.source.where, "releasing", exc) from exc
            return
        yield from self.source.give_back(conn)
        self._still_held(same_session=released is not None, mine=bool(released))

    def check(self, held: Held[C]) -> Flow[C, None]:
        """Raise ``LockLostError`` unless the session of *held* still holds the lock."""
        try:
            pid, mine = yield Execute(held.conn, sql.HELD, {"key": self.key}, read_only=True)
        except psycopg.Error as exc:
            if held.conn.closed:
                raise lost_connection(self.name, exc) from exc
            raise unavailable(self.name, self.source.where, "checking", exc) from exc
        self._still_held(same_session=pid == held.pid, mine=bool(mine))

    def _still_held(self, *, same_session: bool, mine: bool) -> None:
        """``LockLostError`` unless the server talked for the session that took the lock
        and says that session holds it."""
        if not same_session:
            raise lost(self.name, SESSION_CHANGED)
        if not mine:
            raise lost(self.name, NOT_IN_SESSION)

    def locked(self) -> Flow[C, bool]:
        """Whether any session holds the lock (one query of ``pg_locks``)."""

        def ask(conn: C) -> Flow[C, bool]:
            (locked,) = yield Execute(conn, sql.LOCKED, {"key": self.key}, read_only=True)
            return bool(locked)

        got = yield from self._on_session(Deadline(None), "asking who holds it", ask, undo=False)
        if got is None:  # only a pool without a free connection
            raise LockUnavailableError(self.name, f"no connection free in {self.source.where}")
        conn, locked = got
        yield from self.source.give_back(conn)
        return locked
