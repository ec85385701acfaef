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
from decimal import Decimal
from fractions import Fraction
from typing import Any

import anyio
import pytest

import aplock
from tests.support.bad_calls import BLOCK, TIMEOUT, Bad, bad_calls, expected


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
