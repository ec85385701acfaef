"""Bad ``block`` and ``timeout`` values fail on every call, the lock free or held.

``multiprocessing.Lock.acquire`` converts both arguments before it touches the semaphore,
so that a bad call raises whatever the lock's state: ``TypeError`` for a timeout that is
not a real number (even with ``block=False``, which ignores only its value),
``OverflowError`` for an int too large for a float, and on Python 3.11 ``TypeError`` for
a ``block`` that is not an int. NaN, which it lets through to ``sem_timedwait``
(``OSError`` when it has to wait), is a ``ValueError`` here, as in ``threading``. A bad
call never takes the lock.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import anyio
import psycopg
import pytest

import aplock
from aplock.postgres import AsyncPgLock, PgLock
from tests.support import pg_helpers

Admin = psycopg.Connection[Any]

TIMEOUT = "timeout must be a number of seconds or None, not "
BLOCK = "block must be True or False, not "


class RaisingBool:
    """A ``block`` whose truth test raises (multiprocessing never calls it on 3.11)."""

    def __bool__(self) -> bool:
        raise RuntimeError("truth test called")

    def __repr__(self) -> str:
        return "RaisingBool()"


@dataclass(frozen=True)
class Bad:
    """A bad call: its arguments, the error, and what the message says after the lock."""

    id: str
    kwargs: dict[str, Any] = field(hash=False)
    error: type[Exception]
    says: str


BAD = [
    Bad("str", {"timeout": "abc"}, TypeError, TIMEOUT + "'abc'"),
    Bad("numeric-str", {"timeout": "0.2"}, TypeError, TIMEOUT + "'0.2'"),
    Bad("bytes", {"timeout": b"1"}, TypeError, TIMEOUT + "b'1'"),
    Bad("list", {"timeout": [1]}, TypeError, TIMEOUT + "[1]"),
    Bad("complex", {"timeout": 1j}, TypeError, TIMEOUT + "1j"),
    Bad("nan", {"timeout": math.nan}, ValueError, TIMEOUT + "NaN"),
    Bad("minus-nan", {"timeout": -math.nan}, ValueError, TIMEOUT + "NaN"),
    Bad("decimal-nan", {"timeout": Decimal("NaN")}, ValueError, TIMEOUT + "NaN"),
    Bad("huge-int", {"timeout": 10**400}, OverflowError, "timeout is too large"),
    Bad("block-str", {"block": "no"}, TypeError, BLOCK + "'no'"),
    Bad("block-none", {"block": None}, TypeError, BLOCK + "None"),
    Bad("block-list", {"block": []}, TypeError, BLOCK + "[]"),
    Bad("block-float", {"block": 0.5}, TypeError, BLOCK + "0.5; to wait at most 0.5 seconds"),
    Bad("block-raising-bool", {"block": RaisingBool()}, TypeError, BLOCK + "RaisingBool()"),
    Bad("block-and-timeout", {"block": "no", "timeout": "abc"}, TypeError, BLOCK + "'no'"),
    Bad("no-block-str", {"block": False, "timeout": "abc"}, TypeError, TIMEOUT + "'abc'"),
    Bad("no-block-list", {"block": False, "timeout": [1]}, TypeError, TIMEOUT + "[1]"),
    Bad("int-no-block-str", {"block": 0, "timeout": "0.2"}, TypeError, TIMEOUT + "'0.2'"),
]

bad_calls = pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])


def expected(bad: Bad, kind: str, name: str) -> str:
    """The message's start, as a regex: ``aplock.Lock('x').acquire(): timeout must...``."""
    return "^" + re.escape(f"{kind}({name!r}).acquire(): {bad.says}")


@pytest.fixture
def held(lock_name: str) -> Iterator[aplock.Lock]:
    """The lock of *lock_name*, held by another object until the test ends."""
    holder = aplock.Lock(lock_name)
    assert holder.acquire(False)
    yield holder
    if holder.locked():
        holder.release()
    holder.close()


# ---- Lock --------------------------------------------------------------------------


@bad_calls
def test_lock_free(lock_name: str, bad: Bad) -> None:
    lock = aplock.Lock(lock_name)
    with pytest.raises(bad.error, match=expected(bad, "aplock.Lock", lock_name)):
        lock.acquire(**bad.kwargs)
    assert not lock.locked()
    assert lock.acquire(False)  # and nothing in it is left half-done
    lock.release()


@bad_calls
@pytest.mark.timeout(10)  # a bad block taken for True would otherwise wait forever
def test_lock_held(lock_name: str, held: aplock.Lock, bad: Bad) -> None:
    lock = aplock.Lock(lock_name)
    with pytest.raises(bad.error, match=expected(bad, "aplock.Lock", lock_name)):
        lock.acquire(**bad.kwargs)
    assert lock.locked()
    held.release()
    assert not lock.locked()


def test_lock_positional_arguments_too(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    with pytest.raises(TypeError, match=re.escape(BLOCK + "'no'")):
        lock.acquire("no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape(TIMEOUT + "'0.2'")):
        lock.acquire(True, "0.2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"; to wait at most 5\.0 seconds, pass timeout=5\.0$"):
        lock.acquire(5.0)  # type: ignore[arg-type]
    assert not lock.locked()


@pytest.mark.parametrize(
    ("pid", "error", "says"),
    [
        ("1", TypeError, "pid must be a process id (int) or None, not '1'"),
        (1.0, TypeError, "pid must be a process id (int) or None, not 1.0"),
        (True, TypeError, "pid must be a process id (int) or None, not True"),
        (0, ValueError, "pid 0 is no process's; pass the pid of the live process"),
        (-5, ValueError, "pid -5 is no process's"),
        (2**22 + 1, ValueError, f"pid {2**22 + 1} is no process's"),  # above pid_max
    ],
)
def test_lock_hand_off_to_no_process(
    lock_name: str, pid: object, error: type[Exception], says: str
) -> None:
    # A holder recorded for a pid that no process has could never be proven dead.
    lock = aplock.Lock(lock_name)
    assert lock.acquire(False)
    with pytest.raises(
        error, match="^" + re.escape(f"aplock.Lock({lock_name!r}).hand_off(): {says}")
    ):
        lock.hand_off(pid)  # type: ignore[arg-type]
    assert lock.info().holder_pid == os.getpid()  # nothing was recorded
    lock.release()


def test_lock_message_in_full(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    with pytest.raises(TypeError) as info:
        lock.acquire(timeout="abc")  # type: ignore[arg-type]
    assert str(info.value) == (
        f"aplock.Lock({lock_name!r}).acquire(): "
        "timeout must be a number of seconds or None, not 'abc'"
    )


@pytest.mark.parametrize(
    ("kwargs", "free", "held"),
    [
        ({"block": False, "timeout": math.nan}, True, False),  # block=False ignores the value
        ({"block": False, "timeout": -1}, True, False),
        ({"block": 0}, True, False),
        ({"block": 1, "timeout": 0.01}, True, False),
        ({"timeout": False}, True, False),  # a bool is an int: 0 seconds, as multiprocessing
        ({"timeout": Decimal("0.01")}, True, False),
        ({"timeout": Fraction(1, 100)}, True, False),
        ({"timeout": 0}, True, False),
        ({"timeout": -1}, True, False),
        ({"timeout": -math.inf}, True, False),
        ({"timeout": 0.01}, True, False),
        ({"timeout": 1}, True, None),  # None: not tried held (would wait)
        ({"timeout": 2**53}, True, None),
        ({"timeout": 1e300}, True, None),
        ({"timeout": math.inf}, True, None),
    ],
    ids=repr,
)
def test_lock_odd_but_valid_arguments(
    lock_name: str, kwargs: dict[str, Any], free: bool, held: bool | None
) -> None:
    lock = aplock.Lock(lock_name)
    assert lock.acquire(**kwargs) is free
    if held is not None:
        assert lock.acquire(**kwargs) is held
    lock.release()
    assert not lock.locked()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": "abc"}, TypeError),  # theirs: "must be real number, not str"
        ({"timeout": b"1"}, TypeError),
        ({"timeout": [1]}, TypeError),
        ({"timeout": 1j}, TypeError),
        ({"timeout": 10**400}, OverflowError),  # "int too large to convert to float"
        ({"block": False, "timeout": "abc"}, TypeError),
    ],
    ids=["str", "bytes", "list", "complex", "huge-int", "no-block-str"],
)
def test_timeout_errors_are_those_of_multiprocessing(
    lock_name: str, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    theirs = multiprocessing.Lock()
    with pytest.raises(error, match=r"real number|too large"):
        theirs.acquire(**kwargs)
    assert theirs.acquire(False)  # it did not take it either
    with pytest.raises(error, match=re.escape(f"aplock.Lock({lock_name!r}).acquire(): ")):
        aplock.Lock(lock_name).acquire(**kwargs)


# ---- AsyncLock, on asyncio, uvloop and Trio -------------------------------------------


@bad_calls
@pytest.mark.anyio
async def test_async_lock_free(lock_name: str, bad: Bad) -> None:
    alock = aplock.AsyncLock(lock_name)
    with pytest.raises(bad.error, match=expected(bad, "aplock.AsyncLock", lock_name)):
        await alock.acquire(**bad.kwargs)
    assert not alock.locked()
    assert await alock.acquire(False)
    alock.release()


@bad_calls
@pytest.mark.anyio
async def test_async_lock_held(lock_name: str, held: aplock.Lock, bad: Bad) -> None:
    alock = aplock.AsyncLock(lock_name)
    with (
        anyio.fail_after(5),  # a bad block taken for True would otherwise wait forever
        pytest.raises(bad.error, match=expected(bad, "aplock.AsyncLock", lock_name)),
    ):
        await alock.acquire(**bad.kwargs)
    assert alock.locked()
    assert alock.statistics().tasks_waiting == 0
    held.release()
    assert not alock.locked()


@pytest.mark.anyio
async def test_async_lock_odd_but_valid_arguments(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)
    assert await alock.acquire(False, timeout=math.nan) is True
    assert await alock.acquire(False, timeout=math.nan) is False
    assert await alock.acquire(0) is False  # type: ignore[arg-type]
    assert await alock.acquire(timeout=Fraction(1, 100)) is False  # type: ignore[arg-type]
    assert await alock.acquire(1, timeout=False) is False  # type: ignore[arg-type]
    alock.release()
    assert await alock.acquire(timeout=math.inf) is True
    alock.release()


# ---- PgLock and AsyncPgLock -----------------------------------------------------------


@pytest.fixture
def pg_held(dsn: str, pg: tuple[str, Admin]) -> Iterator[PgLock]:
    """A PgLock, in a session of its own, holding the test name until the test ends."""
    holder = PgLock(pg[0], dsn)
    assert holder.acquire(False)
    yield holder
    if holder.held:
        holder.release()
    holder.close()


@bad_calls
def test_pg_lock_free(dsn: str, pg: tuple[str, Admin], bad: Bad) -> None:
    lock = PgLock(pg[0], dsn)
    try:
        with pytest.raises(bad.error, match=expected(bad, "aplock.postgres.PgLock", pg[0])):
            lock.acquire(**bad.kwargs)
        assert not lock.held
        assert pg_helpers.key_holders(pg[1], lock.key) == ([], 0)
    finally:
        lock.close()


@bad_calls
@pytest.mark.timeout(10)  # a bad block taken for True would otherwise wait forever
def test_pg_lock_held(dsn: str, pg: tuple[str, Admin], pg_held: PgLock, bad: Bad) -> None:
    holders = pg_helpers.key_holders(pg[1], pg_held.key)[0]
    assert len(holders) == 1
    lock = PgLock(pg[0], dsn)
    try:
        with pytest.raises(bad.error, match=expected(bad, "aplock.postgres.PgLock", pg[0])):
            lock.acquire(**bad.kwargs)
        assert not lock.held
        assert pg_helpers.key_holders(pg[1], lock.key) == (holders, 0)  # none waits
    finally:
        lock.close()


@bad_calls
@pytest.mark.anyio
async def test_async_pg_lock_free(dsn: str, pg: tuple[str, Admin], bad: Bad) -> None:
    lock = AsyncPgLock(pg[0], dsn)
    try:
        kind = "aplock.postgres.AsyncPgLock"
        with pytest.raises(bad.error, match=expected(bad, kind, pg[0])):
            await lock.acquire(**bad.kwargs)
        assert not lock.held
        assert not lock.locked()
        assert pg_helpers.key_holders(pg[1], lock.key) == ([], 0)
    finally:
        await lock.aclose()


@bad_calls
@pytest.mark.anyio
async def test_async_pg_lock_held(
    dsn: str, pg: tuple[str, Admin], pg_held: PgLock, bad: Bad
) -> None:
    holders = pg_helpers.key_holders(pg[1], pg_held.key)[0]
    assert len(holders) == 1
    lock = AsyncPgLock(pg[0], dsn)
    try:
        kind = "aplock.postgres.AsyncPgLock"
        with anyio.fail_after(5), pytest.raises(bad.error, match=expected(bad, kind, pg[0])):
            await lock.acquire(**bad.kwargs)
        assert not lock.held
        assert not lock.locked()
        assert pg_helpers.key_holders(pg[1], lock.key) == (holders, 0)  # none waits
    finally:
        await lock.aclose()
