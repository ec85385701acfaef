"""The classes the contract suite runs over: how to open each, and what each declares.

A ``Kind`` is one class under the contract (``Lock``, ``AsyncLock``, ``PgLock``,
``AsyncPgLock``, ``Semaphore``, ``BoundedSemaphore``, ``AsyncSemaphore``): a factory,
and the documented differences between the classes as capabilities (see ``Kind``). A
generic case that needs a capability skips, naming it, for a kind without it, so that
the test matrix shows the differences; a case where the classes differ in a documented
way (another object's ``release()`` releases, or raises) checks each kind's side.

``tests.contract.drive`` drives an object of any kind from async code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import aplock
from aplock.postgres import AsyncPgLock, PgLock

Backend = Literal["posix", "postgres"]
#: What ``locked()`` tells: whether anyone on the host holds it, anyone on the
#: database, or only what this object knows (held, acquiring, releasing).
Locked = Literal["host", "database", "object"]
#: ``(name, dsn, value) -> object``: opens an object of a kind.
Opener = Callable[[str, "str | None", int], Any]


@dataclass(frozen=True)
class Kind:
    """One class under the contract, how to open it, and what it declares.

    Attributes:
        id: the test id (the class's name).
        cls: the class.
        backend: ``"posix"`` (a name is host-wide) or ``"postgres"`` (database-wide).
        is_async: whether ``acquire()`` is a coroutine (and cancellable).
        open: opens an object ``(name, dsn, value)``; *value* only for semaphores.
        label: how messages call the class: ``"aplock.Lock"``.
        twin: the id of the kind that opens the same primitive from the other side
            (sync or async), for exclusion between the two.
        release_by_other_thread: any thread may call ``release()`` on the object
            that acquired (an ``AsyncPgLock`` only from its event loop's thread).
        release_by_other_object: another object of the name (in this process or
            another) may release; otherwise its ``release()`` raises
            ``LockNotHeldError`` (a PostgreSQL lock belongs to its session).
        release_by_other_process: another process may release (tested in the
            class-specific suites, with spawned children).
        locked: what ``locked()`` tells (see ``Locked``); ``None``: there is no
            ``locked()`` (a semaphore has ``get_value()``).
        pickles: it pickles by name (an ``AsyncPgLock`` does not).
        acquisition: it has ``acquisition``, the fencing token of the holder (a
            POSIX lock's counts its acquisitions from 1; a PostgreSQL lock's is a
            transaction id, increasing but not consecutive).
        info: it has ``info()``, a snapshot with the holders and the generation.
        hand_off: it has ``hand_off(pid)``.
        acquire_nowait: it has ``acquire_nowait()`` (``anyio.WouldBlock`` if held).
        close: the method that closes an object in any state (``close`` or
            ``aclose``); each has ``closed``.
        close_releases: closing releases what the object holds (a PostgreSQL
            session ends); otherwise the primitive stays held, for any object or
            process to release.
        release_free_raises: ``release()`` of a free one raises ``LockNotHeldError``
            (a ``Semaphore`` goes above its value instead).
        counting: it has a value, ``get_value()``, and may be created with more than
            one permit.
        not_held_says: what the ``LockNotHeldError`` of a free release says (regex).
        repr_free, repr_held, repr_closed: its ``repr()`` in each state, as
            ``str.format`` templates of ``name``, ``pid``, ``key``.
        cancel_rounds: rounds of random cancellation in the normal run.
        stress_rounds: rounds of random cancellation with ``-m stress``.
        exclusion_rounds: rounds of each worker in the mutual exclusion case.
        defects: known defects: the id of a case (``test_x`` or ``test_x[param]``)
            and why it fails; the case is marked ``xfail(strict=True)``.
    """

    id: str
    cls: type[Any]
    backend: Backend
    is_async: bool
    open: Opener
    label: str
    twin: str
    release_by_other_thread: bool
    release_by_other_object: bool
    release_by_other_process: bool
    locked: Locked | None
    pickles: bool
    acquisition: bool
    info: bool
    hand_off: bool
    acquire_nowait: bool
    close: Literal["close", "aclose"]
    close_releases: bool
    release_free_raises: bool
    counting: bool
    not_held_says: str
    repr_free: str
    repr_held: str
    repr_closed: str
    cancel_rounds: int
    stress_rounds: int
    exclusion_rounds: int
    defects: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.id

    def lacks(self, capability: str) -> None:
        """Skip the running case: this kind has no *capability*."""
        import pytest

        pytest.skip(f"{self.id} has no {capability}")


def _dsn(dsn: str | None) -> str:
    assert dsn is not None, "a PostgreSQL kind needs the server (the dsn fixture)"
    return dsn


LOCK = Kind(
    id="Lock",
    cls=aplock.Lock,
    backend="posix",
    is_async=False,
    open=lambda name, dsn, value: aplock.Lock(name),
    label="aplock.Lock",
    twin="AsyncLock",
    release_by_other_thread=True,
    release_by_other_object=True,
    release_by_other_process=True,
    locked="host",
    pickles=True,
    acquisition=True,
    info=True,
    hand_off=True,
    acquire_nowait=False,
    close="close",
    close_releases=False,
    release_free_raises=True,
    counting=False,
    not_held_says="nobody holds it",
    repr_free="<aplock.{cls} {name!r} unlocked, generation 0>",
    repr_held="<aplock.{cls} {name!r} locked by pid {pid}, generation 1>",
    repr_closed="<aplock.{cls} {name!r} closed>",
    cancel_rounds=200,
    stress_rounds=3000,
    exclusion_rounds=300,
)
ASYNC_LOCK = replace(
    LOCK,
    id="AsyncLock",
    cls=aplock.AsyncLock,
    is_async=True,
    open=lambda name, dsn, value: aplock.AsyncLock(name),
    label="aplock.AsyncLock",
    twin="Lock",
    hand_off=False,
    acquire_nowait=True,
)
PG_LOCK = Kind(
    id="PgLock",
    cls=PgLock,
    backend="postgres",
    is_async=False,
    open=lambda name, dsn, value: PgLock(name, _dsn(dsn)),
    label="aplock.postgres.PgLock",
    twin="AsyncPgLock",
    release_by_other_thread=True,
    release_by_other_object=False,
    release_by_other_process=False,
    locked="database",
    pickles=True,
    acquisition=True,
    info=False,
    hand_off=False,
    acquire_nowait=False,
    close="close",
    close_releases=True,
    release_free_raises=True,
    counting=False,
    not_held_says="does not hold",
    repr_free="<aplock.postgres.{cls} {name!r} key {key} not held by this object>",
    repr_held="<aplock.postgres.{cls} {name!r} key {key} held by this object>",
    repr_closed="<aplock.postgres.{cls} {name!r} key {key} closed>",
    cancel_rounds=12,
    stress_rounds=400,
    exclusion_rounds=5,
    defects={},
)
ASYNC_PG_LOCK = replace(
    PG_LOCK,
    id="AsyncPgLock",
    cls=AsyncPgLock,
    is_async=True,
    open=lambda name, dsn, value: AsyncPgLock(name, _dsn(dsn)),
    label="aplock.postgres.AsyncPgLock",
    twin="PgLock",
    release_by_other_thread=False,
    locked="object",
    pickles=False,
    close="aclose",
    defects={},
)
SEMAPHORE = Kind(
    id="Semaphore",
    cls=aplock.Semaphore,
    backend="posix",
    is_async=False,
    open=lambda name, dsn, value: aplock.Semaphore(name, value),
    label="aplock.Semaphore",
    twin="AsyncSemaphore",
    release_by_other_thread=True,
    release_by_other_object=True,
    release_by_other_process=True,
    locked=None,
    pickles=True,
    acquisition=False,
    info=True,
    hand_off=False,
    acquire_nowait=False,
    close="close",
    close_releases=False,
    release_free_raises=False,
    counting=True,
    not_held_says="",
    repr_free="<aplock.{cls} {name!r} value=1, 1 free>",
    repr_held="<aplock.{cls} {name!r} value=1, 0 free, held by pid {pid}>",
    repr_closed="<aplock.{cls} {name!r} closed>",
    cancel_rounds=50,
    stress_rounds=750,
    exclusion_rounds=100,
)
BOUNDED_SEMAPHORE = replace(
    SEMAPHORE,
    id="BoundedSemaphore",
    cls=aplock.BoundedSemaphore,
    open=lambda name, dsn, value: aplock.BoundedSemaphore(name, value),
    label="aplock.BoundedSemaphore",
    twin="AsyncSemaphore(BoundedSemaphore)",
    release_free_raises=True,
    not_held_says=r"every permit \(1\) is free",
    defects={},
)
ASYNC_SEMAPHORE = replace(
    SEMAPHORE,
    id="AsyncSemaphore",
    cls=aplock.AsyncSemaphore,
    is_async=True,
    open=lambda name, dsn, value: aplock.AsyncSemaphore(name, value),
    label="aplock.AsyncSemaphore",
    twin="Semaphore",
    acquire_nowait=True,
)
#: The async face of a ``BoundedSemaphore``: a twin only, not a class of its own.
ASYNC_BOUNDED_SEMAPHORE = replace(
    BOUNDED_SEMAPHORE,
    id="AsyncSemaphore(BoundedSemaphore)",
    cls=aplock.AsyncSemaphore,
    is_async=True,
    open=lambda name, dsn, value: aplock.AsyncSemaphore(aplock.BoundedSemaphore(name, value)),
    label="aplock.AsyncSemaphore",
    twin="BoundedSemaphore",
    acquire_nowait=True,
    defects={},
)

#: The classes with the shape of a lock (the semaphores with value 1).
LOCKS = (LOCK, ASYNC_LOCK, PG_LOCK, ASYNC_PG_LOCK, SEMAPHORE, BOUNDED_SEMAPHORE, ASYNC_SEMAPHORE)
#: The counting classes.
SEMAPHORES = (SEMAPHORE, BOUNDED_SEMAPHORE, ASYNC_SEMAPHORE)
BY_ID = {k.id: k for k in (*LOCKS, ASYNC_BOUNDED_SEMAPHORE)}

#: The capabilities of the matrix, in its column order.
CAPABILITIES = (
    "is_async",
    "release_by_other_thread",
    "release_by_other_object",
    "release_by_other_process",
    "locked",
    "pickles",
    "acquisition",
    "info",
    "hand_off",
    "acquire_nowait",
    "close",
    "close_releases",
    "release_free_raises",
    "counting",
)


def matrix() -> str:
    """The classes and their capabilities as a Markdown table."""
    rows = [["class", *CAPABILITIES]]
    for kind in LOCKS:
        cells = []
        for cap in CAPABILITIES:
            value = getattr(kind, cap)
            cells.append({True: "yes", False: "-", None: "-"}.get(value, str(value)))
        rows.append([kind.id, *cells])
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    return "\n".join(lines)


def holders(info: Any) -> list[tuple[int, bool | None, float]]:
    """The ``(pid, alive, held_for)`` of each holder in an ``info()`` snapshot."""
    if isinstance(info, aplock.LockInfo):
        if not info.locked:
            assert (info.holder_pid, info.holder_alive, info.held_for) == (None, None, None)
            return []
        assert info.holder_pid is not None
        assert info.held_for is not None
        return [(info.holder_pid, info.holder_alive, info.held_for)]
    assert isinstance(info, aplock.SemaphoreInfo)
    return [(h.pid, h.alive, h.held_for) for h in info.holders]
