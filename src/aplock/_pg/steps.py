"""The steps of a flow: the I/O that the PostgreSQL protocol asks its runner for.

A *flow* is a generator that yields steps and receives each one's result (or has the
step's exception thrown in at its ``yield``), like httpx's ``Auth.auth_flow``, which
both of httpx's clients drive. The protocol (``protocol.py``) and the connection
sources (``sources.py``) are written as flows, once, and never do I/O themselves. Two
runners execute the steps and do nothing else: ``sync.run`` with blocking psycopg
calls, ``aio.run`` with psycopg's ``AsyncConnection``. A flow is generic in the
connection type it handles (``C``), so one flow serves either.

What each step yields back:

==================  ====================================================================
``Connect``         a new connection, in autocommit mode
``Execute``         the first row of the statement's last result, as a tuple
                    (``None`` if not ``fetch``)
``Wait``            the same, for a statement that blocks in the server until the lock
                    is granted or ``lock_timeout`` fails it; ``cancel`` can stop it
``Close``           ``None``: the connection is closed
``GetConn``         a connection from the pool
``PutConn``         ``None``: the connection is back in its pool
``SetAutocommit``   ``None``
==================  ====================================================================

The async runner shields every step from cancellation, so that a cancelled task never
leaves the session in a state the protocol does not know, except the steps that are
``interruptible`` (they change nothing on the server) and ``Wait``, which it watches:
on cancellation it sends the server cancel requests until the statement ends.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import psycopg

if TYPE_CHECKING:
    from collections.abc import Generator, Mapping

__all__ = [
    "CANCEL_TIMEOUT",
    "AsyncConnection",
    "Cancel",
    "Close",
    "Connect",
    "Connection",
    "Execute",
    "Flow",
    "GetConn",
    "PutConn",
    "SetAutocommit",
    "Step",
    "Steps",
    "Wait",
    "one_row",
]

Connection: TypeAlias = psycopg.Connection[Any]
AsyncConnection: TypeAlias = psycopg.AsyncConnection[Any]
#: The connection type a flow runs on: sync for ``sync.run``, async for ``aio.run``.
C = TypeVar("C", Connection, AsyncConnection)
R = TypeVar("R")

#: Seconds one cancel request to the server may take.
CANCEL_TIMEOUT = 5.0


class Cancel(Generic[C]):
    """The state of an acquire that another thread or task may stop (no I/O here).

    The flow checks ``requested`` before each wait and marks the connection it waits
    on (``arm`` / ``disarm``); ``request()`` sets the flag and hands the canceller that
    connection, to which the runner then sends the server's cancel request. ``settle``
    and ``result`` tell a canceller in another thread whether the acquire had already
    ended holding the lock.
    """

    __slots__ = ("_conn", "_mutex", "requested", "result")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._conn: C | None = None
        self.requested = False
        self.result: bool | None = None

    def __call__(self) -> bool:
        return self.requested

    def arm(self, conn: C) -> bool:
        """Mark *conn* as about to wait in the server; ``False`` if already cancelled."""
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

    def request(self) -> tuple[C | None, bool]:
        """Cancel: ``(the connection waiting in the server or None, whether the acquire
        had already ended holding the lock)``. In the second case the caller must
        release the lock; otherwise the acquire releases whatever it gets."""
        with self._mutex:
            self.requested = True
            return self._conn, self.result is True


@dataclass(slots=True)
class Step(Generic[C]):
    """One piece of I/O a flow asks its runner for (never changed once yielded)."""

    @property
    def interruptible(self) -> bool:
        """Whether cancelling the step midway leaves nothing to clean up."""
        return False


@dataclass(slots=True)
class Connect(Step[C]):
    """Open a connection to *conninfo* with the keyword arguments *options*."""

    conninfo: str
    options: Mapping[str, Any]

    @property
    def interruptible(self) -> bool:
        return True


@dataclass(slots=True)
class Execute(Step[C]):
    """Run *statement* (with *params*) and fetch one row of the last of its *results*.

    ``read_only`` statements are interruptible: they neither take nor release a lock.
    """

    conn: C
    statement: str
    params: Mapping[str, int] | None = None
    results: int = 1
    fetch: bool = True
    read_only: bool = False

    @property
    def interruptible(self) -> bool:
        return self.read_only

    def last_result(self, cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> None:
        """Move *cursor* to the last result (all are on the client already: no I/O)."""
        for _ in range(self.results - 1):
            cursor.nextset()


@dataclass(slots=True)
class Wait(Execute[C]):
    """An ``Execute`` that blocks in the server; *cancel* is how it is stopped."""

    cancel: Cancel[C] = field(kw_only=True)


@dataclass(slots=True)
class Close(Step[C]):
    """Close *conn* (which ends its session and releases the session's locks)."""

    conn: C


@dataclass(slots=True)
class GetConn(Step[C]):
    """Take a connection out of *pool*, waiting at most *timeout* seconds (None: its own)."""

    pool: object
    timeout: float | None

    @property
    def interruptible(self) -> bool:
        return True


@dataclass(slots=True)
class PutConn(Step[C]):
    """Give *conn* back to *pool*."""

    pool: object
    conn: C


@dataclass(slots=True)
class SetAutocommit(Step[C]):
    """Switch *conn*'s autocommit mode to *on*."""

    conn: C
    on: bool


#: A flow on connections of type C that returns R.
Flow: TypeAlias = "Generator[Step[C], Any, R]"


def one_row(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The row a statement of ours returned (each returns exactly one)."""
    assert row is not None
    return row


class Steps(Generic[C, R]):
    """A flow as its runner walks it.

    ``next()`` is the next step, or ``None`` once the flow has returned (``result`` is
    then what it returned). The runner hands each step's outcome back before asking
    for the next: ``send()`` its result, or ``throw()`` the exception it raised, which
    goes into the flow at its ``yield``, where the flow decides what follows.
    """

    __slots__ = ("_error", "_flow", "_value", "result")

    def __init__(self, flow: Flow[C, R]) -> None:
        self._flow: Flow[C, R] = flow
        self._value: object = None
        self._error: BaseException | None = None
        self.result: R

    def next(self) -> Step[C] | None:
        """Resume the flow with the last outcome; its next step, or ``None`` if it returned."""
        error, self._error = self._error, None
        try:
            return self._flow.send(self._value) if error is None else self._flow.throw(error)
        except StopIteration as stop:
            self.result = stop.value
            return None
        finally:
            del error  # it may be raised again, and its traceback holds this frame

    def send(self, value: object) -> None:
        """The step's result: what the flow's ``yield`` evaluates to."""
        self._value = value

    def throw(self, error: BaseException) -> None:
        """The step raised *error*: the flow's ``yield`` raises it."""
        self._value = None
        self._error = error
