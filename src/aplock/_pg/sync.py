"""The sync runner, and ``Backend``: what ``aplock.postgres.PgLock`` calls.

``run`` executes a flow's steps (see ``steps.py``) with blocking psycopg calls, and
does nothing else: what to do is the protocol's (``protocol.py``). ``Backend`` adds what
threads need around it: the in-process gate of the session and key (``_Gate``), the
session that holds the lock, and a cancellable acquire for ``AsyncPgLock``'s worker
threads (``acquire_cancellable``, ``request_cancel``, ``release_after_cancel``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, TypeVar, cast

import psycopg
from psycopg.rows import tuple_row

from aplock.errors import LockClosedError, LockError, LockNotHeldError, LockUnavailableError

from . import steps
from .protocol import AdvisoryLock, Held, acquisition_of, session_socket
from .sources import Dedicated, Gates, sync_source
from .steps import CANCEL_TIMEOUT, Cancel, Connection, Step, Steps, one_row
from .translate import NOT_HELD

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from aplock._deadline import Deadline
    from aplock.sync import Acquisition

    from .sources import ConnectionPool
    from .steps import Flow

__all__ = ["Backend", "request_cancel", "run"]

logger = logging.getLogger("aplock.postgres")

_R = TypeVar("_R")

#: Longest single in-process wait while a cancel request may come (see ``_Gate.enter``).
_CANCEL_SLICE = 0.05
_CLOSED = "this PgLock was closed; create a new one"


def run(flow: Flow[Connection, _R]) -> _R:
    """Execute *flow*'s steps with blocking calls; return what the flow returns."""
    walk = Steps(flow)
    while (step := walk.next()) is not None:
        try:
            walk.send(_execute(step))
        except BaseException as exc:
            walk.throw(exc)
    return walk.result


def _execute(step: Step[Connection]) -> object:
    match step:
        case steps.Execute():  # and Wait: another thread stops it (request_cancel)
            cursor = step.conn.cursor(row_factory=tuple_row).execute(step.statement, step.params)
            step.last_result(cursor)
            return one_row(cursor.fetchone()) if step.fetch else None
        case steps.Connect():
            return psycopg.Connection.connect(step.conninfo, **step.options)
        case steps.Close():
            step.conn.close()
        case steps.GetConn():
            pool = cast("ConnectionPool", step.pool)
            return pool.getconn() if step.timeout is None else pool.getconn(timeout=step.timeout)
        case steps.PutConn():
            cast("ConnectionPool", step.pool).putconn(step.conn)
        case steps.SetAutocommit():
            step.conn.autocommit = step.on
        case _:
            raise AssertionError(f"unknown step {step!r}")
    return None


def request_cancel(cancel: Cancel[Connection]) -> bool:
    """Stop the acquire of *cancel* (blocking for one cancel request: call it from a
    thread). Returns whether the acquire had already ended holding the lock: then the
    caller must release it (``release_after_cancel``)."""
    conn, got = cancel.request()
    if conn is not None:
        try:
            conn.cancel_safe(timeout=CANCEL_TIMEOUT)
        except Exception as exc:  # the wait's own outcome tells what happened
            logger.debug("cancel request failed: %r", exc)
    return got


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


_gates = Gates(_Gate)


class Backend:
    """``PgLock``'s backend: the protocol on a sync source, and what this object holds.

    Any thread may call any method; the gate keeps one acquisition at a time per
    session and key.
    """

    def __init__(self, name: str, key: int, conninfo_or_connection: object) -> None:
        self.name = name
        self.source = sync_source(name, conninfo_or_connection)
        self._protocol = AdvisoryLock(name, key, self.source)
        self._gate = _gates.get(self.source, key)
        self._mutex = threading.Lock()
        self._held: Held[Connection] | None = None
        self.closed = False
        self._finalizer = weakref.finalize(self, self.source.close)

    @property
    def conninfo(self) -> str | None:
        """The connection string, if the lock has a session of its own (it pickles)."""
        return self.source.conninfo if isinstance(self.source, Dedicated) else None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock, as far as it knows."""
        return self._held is not None

    @property
    def acquisition(self) -> Acquisition | None:
        """The generation of the acquisition this object holds (``None`` if none)."""
        return acquisition_of(self._held)

    def session_socket(self) -> int | None:
        """The socket of the session that holds the lock (see ``protocol.session_socket``)."""
        return session_socket(self._held)

    def acquire(self, deadline: Deadline, cancel: Cancel[Connection] | None = None) -> bool:
        """Take the lock by *deadline*; *cancel*, if given, can stop it from another thread."""
        if self.closed:
            raise LockClosedError(self.name, _CLOSED)
        if not self._gate.enter(deadline, cancel):
            return False
        try:
            held = run(self._protocol.take(deadline, cancel or Cancel()))
        except BaseException:
            self._gate.leave()
            raise
        if held is None:
            self._gate.leave()
            return False
        self._held = held
        return True

    def acquire_cancellable(self, deadline: Deadline, cancel: Cancel[Connection]) -> bool:
        """``acquire`` that ``request_cancel(cancel)`` can stop, leaving nothing held."""
        got = self.acquire(deadline, cancel)
        if not cancel.settle(got):
            if got:
                self.release_after_cancel()
            return False
        return got

    def _take_held(self) -> Held[Connection] | None:
        with self._mutex:
            held, self._held = self._held, None
        return held

    def release(self) -> None:
        """Release the lock (``LockNotHeldError`` if this object does not hold it)."""
        held = self._take_held()
        if held is None:
            if self.closed:
                raise LockClosedError(self.name, _CLOSED)
            raise LockNotHeldError(self.name, NOT_HELD)
        try:
            run(self._protocol.unlock(held))
        finally:
            self._gate.leave()

    def release_after_cancel(self) -> None:
        """Release a lock that a cancelled acquire got anyway (a late cancel may hit it)."""
        held = self._take_held()
        if held is None:
            return
        try:
            if not run(self._protocol.undo(held.conn)):
                raise LockUnavailableError(
                    self.name, "could not release it after a cancelled acquire"
                )
        finally:
            self._gate.leave()

    def check(self) -> None:
        """Confirm with the server that this object still holds the lock."""
        held = self._held
        if held is None:
            raise LockNotHeldError(self.name, "check() of a lock this object does not hold")
        run(self._protocol.check(held))

    def locked(self) -> bool:
        """Whether some session holds the lock now (asked only while the gate is free)."""
        if self.closed:
            raise LockClosedError(self.name, _CLOSED)
        if self._held is not None:
            return True
        with self._gate.inspecting() as free:
            return run(self._protocol.locked()) if free else True

    def close(self) -> None:
        """Release the lock if held, and close the lock's own connection. Idempotent."""
        if self.closed:
            return
        if self._held is not None:
            with suppress(LockError):
                self.release()
        self.closed = True
        self._finalizer()
