"""Semaphore and BoundedSemaphore: multiprocessing's semantics, by name, and bad input."""

from __future__ import annotations

import os
import pickle
import time
from typing import Any

import pytest

import aplock
from aplock._posix import slots as _slots
from tests.support import sem_workers
from tests.support.procs import SPAWN, running

CLASSES = [aplock.Semaphore, aplock.BoundedSemaphore]


@pytest.mark.parametrize("cls", CLASSES)
def test_counts_like_multiprocessing(cls: type[aplock.Semaphore], lock_name: str) -> None:
    sem = cls(lock_name, 3)
    assert (sem.name, sem.value, sem.get_value()) == (lock_name, 3, 3)
    assert sem.acquire()
    assert sem.acquire(True)
    assert sem.acquire(timeout=1)
    assert sem.get_value() == 0
    assert sem.acquire(False) is False
    assert sem.acquire(block=False, timeout=10) is False  # block=False ignores timeout
    assert sem.acquire(timeout=-1) is False  # a negative timeout means zero
    began = time.monotonic()
    assert sem.acquire(timeout=0.1) is False
    assert 0.09 <= time.monotonic() - began < 2
    for free in (1, 2, 3):
        sem.release()
        assert sem.get_value() == free
    with sem as entered:
        assert entered is sem
        assert sem.get_value() == 2
    assert sem.get_value() == 3


def test_semaphore_release_raises_the_count_above_value(lock_name: str) -> None:
    sem = aplock.Semaphore(lock_name, 1)
    sem.release()
    sem.release()
    assert sem.get_value() == 3
    assert sem.value == 1
    assert sem.acquire(False)
    assert sem.acquire(False)
    assert sem.acquire(False)
    assert not sem.acquire(False)


def test_semaphore_with_value_zero_waits_for_a_release(lock_name: str) -> None:
    sem = aplock.Semaphore(lock_name, 0)
    assert sem.get_value() == 0
    assert not sem.acquire(timeout=0.05)
    sem.release()
    assert sem.acquire(timeout=1)


def test_semaphore_count_stops_at_capacity(lock_name: str) -> None:
    sem = aplock.Semaphore(lock_name, _slots.CAPACITY - 1)
    sem.release()
    with pytest.raises(ValueError, match=rf"{lock_name}.*exceed {_slots.CAPACITY}"):
        sem.release()
    assert sem.get_value() == _slots.CAPACITY


def test_bounded_over_release_raises_and_never_counts(lock_name: str) -> None:
    sem = aplock.BoundedSemaphore(lock_name, 2)
    with pytest.raises(aplock.LockNotHeldError, match=lock_name) as info:
        sem.release()
    assert isinstance(info.value, ValueError)
    assert info.value.name == lock_name
    assert sem.acquire()
    sem.release()
    with pytest.raises(aplock.LockNotHeldError):
        sem.release()
    assert sem.get_value() == 2


def test_release_by_a_process_that_holds_none_frees_the_oldest(lock_name: str) -> None:
    """A permit taken here and released in another process is counted once."""
    sem = aplock.BoundedSemaphore(lock_name, 2)
    assert sem.acquire()
    queue = SPAWN.Queue()
    start = SPAWN.Event()
    start.set()
    with running(sem_workers.release_once, lock_name, 2, True, start, queue):
        assert queue.get(timeout=60) == "ok"
    assert sem.get_value() == 2
    with pytest.raises(aplock.LockNotHeldError):
        sem.release()  # ours was the one given back


def test_a_release_gives_back_this_process_s_latest_permit(lock_name: str) -> None:
    sem = aplock.Semaphore(lock_name, 3)
    sem.acquire()
    sem.acquire()
    latest = max(p.generation for p in sem.info().holders)
    sem.release()
    assert [p.generation for p in sem.info().holders] == [latest - 1]


def test_value_mismatch_names_the_existing_value(lock_name: str) -> None:
    aplock.Semaphore(lock_name, 2)
    with pytest.raises(ValueError, match=r"value=2, not value=3") as info:
        aplock.Semaphore(lock_name, 3)
    assert lock_name in str(info.value)
    assert aplock.Semaphore(lock_name, 2).value == 2


@pytest.mark.parametrize(
    ("first", "then", "kind", "wanted"),
    [
        (aplock.Lock, aplock.Semaphore, "lock", "semaphore"),
        (aplock.Lock, aplock.BoundedSemaphore, "lock", "bounded semaphore"),
        (aplock.Semaphore, aplock.Lock, "semaphore", "lock"),
        (aplock.BoundedSemaphore, aplock.Lock, "bounded semaphore", "lock"),
        (aplock.Semaphore, aplock.BoundedSemaphore, "semaphore", "bounded semaphore"),
        (aplock.BoundedSemaphore, aplock.Semaphore, "bounded semaphore", "semaphore"),
    ],
)
def test_a_name_is_one_kind_of_object(
    first: Any, then: Any, kind: str, wanted: str, lock_name: str
) -> None:
    first(lock_name)
    with pytest.raises(aplock.LockKindError) as info:
        then(lock_name)
    error = info.value
    assert isinstance(error, aplock.LockError)
    assert (error.name, error.kind, error.wanted) == (lock_name, kind, wanted)
    assert f"it is a {kind}, not a {wanted}" in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.kind) == (aplock.LockKindError, str(error), kind)


def test_kind_and_value_are_checked_in_another_process(lock_name: str) -> None:
    aplock.BoundedSemaphore(lock_name, 2)
    queue = SPAWN.Queue()
    for kind, value in (("Lock", 1), ("Semaphore", 2), ("BoundedSemaphore", 3)):
        with running(sem_workers.open_report, lock_name, kind, value, queue):
            found = queue.get(timeout=60)
        if kind == "BoundedSemaphore":
            assert found[0] == "ValueError"
            assert "value=2, not value=3" in found[1]
        else:
            assert found == ("LockKindError", "bounded semaphore", kind.lower())
    with running(sem_workers.open_report, lock_name, "BoundedSemaphore", 2, queue):
        assert queue.get(timeout=60) == ("ok", "", "")


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (True, TypeError, "value must be an int, not bool"),
        (2.0, TypeError, "value must be an int, not float"),
        ("2", TypeError, "value must be an int, not str"),
        (None, TypeError, "value must be an int, not NoneType"),
        (-1, ValueError, "value must be from"),
        (_slots.CAPACITY + 1, ValueError, "value must be from"),
    ],
)
def test_bad_value(
    cls: type[aplock.Semaphore], value: Any, error: type[Exception], match: str, lock_name: str
) -> None:
    with pytest.raises(error, match=match) as info:
        cls(lock_name, value)
    assert lock_name in str(info.value)
    assert aplock.unlink(lock_name) is False  # checked before anything was created


def test_value_limits(lock_name: str) -> None:
    with pytest.raises(ValueError, match="from 1 to"):
        aplock.BoundedSemaphore(lock_name, 0)
    assert aplock.Semaphore(lock_name, 0).get_value() == 0
    aplock.unlink(lock_name)
    assert aplock.BoundedSemaphore(lock_name, 256).get_value() == 256
    aplock.unlink(lock_name)
    assert aplock.BoundedSemaphore(lock_name, _slots.CAPACITY).get_value() == _slots.CAPACITY


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "0o600"}, TypeError, "mode must be an int"),
        ({"mode": True}, TypeError, "mode must be an int"),
        ({"mode": 0o1000}, ValueError, "mode must be permission bits"),
        ({"recovery_interval": 0}, ValueError, "recovery_interval must be > 0"),
        ({"recovery_interval": -1.0}, ValueError, "recovery_interval must be > 0"),
        ({"recovery_interval": float("nan")}, ValueError, "recovery_interval must be > 0"),
        ({"recovery_interval": "1"}, TypeError, "recovery_interval must be a number"),
        ({"recovery_interval": True}, TypeError, "recovery_interval must be a number"),
    ],
)
def test_bad_options(kwargs: Any, error: type[Exception], match: str, lock_name: str) -> None:
    with pytest.raises(error, match=match) as info:
        aplock.Semaphore(lock_name, 1, **kwargs)
    assert lock_name in str(info.value)


@pytest.mark.parametrize("name", ["", 3, None, "x" * 1025])
def test_bad_name(name: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        aplock.Semaphore(name)


@pytest.mark.parametrize("cls", CLASSES)
def test_acquire_checks_its_arguments_on_every_call(
    cls: type[aplock.Semaphore], lock_name: str
) -> None:
    sem = cls(lock_name, 1)
    for held in (False, True):
        with pytest.raises(TypeError, match=rf"{cls.__name__}\('{lock_name}'\).acquire\(\)"):
            sem.acquire(timeout="1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="block must be True or False"):
            sem.acquire(0.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="NaN"):
            sem.acquire(timeout=float("nan"))
        with pytest.raises(OverflowError):
            sem.acquire(timeout=10**400)
        if not held:
            assert sem.acquire()
    assert sem.get_value() == 0


@pytest.mark.parametrize("cls", CLASSES)
def test_pickles_by_name_into_another_process(cls: type[aplock.Semaphore], lock_name: str) -> None:
    sem = cls(lock_name, 2)
    assert sem.acquire()
    again = pickle.loads(pickle.dumps(sem))
    assert (type(again), again.name, again.value) == (cls, lock_name, 2)
    queue = SPAWN.Queue()
    with running(sem_workers.use_pickled, sem, queue):
        assert queue.get(timeout=60) == (cls.__name__, lock_name, 2, 1)
        assert queue.get(timeout=60) == (True, 0)
    assert sem.get_value() == 1


def test_close_and_unlink(lock_name: str) -> None:
    sem = aplock.Semaphore(lock_name, 2)
    other = aplock.Semaphore(lock_name, 2)
    assert sem.acquire()
    sem.close()
    sem.close()
    assert sem.closed
    assert not other.closed
    assert repr(sem) == f"<aplock.Semaphore {lock_name!r} closed>"
    with pytest.raises(aplock.LockClosedError, match=lock_name):
        sem.acquire()
    with pytest.raises(aplock.LockClosedError):
        sem.get_value()
    assert other.get_value() == 1  # closing released nothing
    assert other.unlink() is True
    assert not any(lock_name.replace(".", "_") in e for e in os.listdir("/dev/shm"))
    assert aplock.unlink(lock_name) is False
    # A new object opens a new semaphore, with a value of its own.
    assert aplock.Semaphore(lock_name, 5).get_value() == 5


def test_aplock_unlink_lets_this_process_open_the_name_anew(lock_name: str) -> None:
    aplock.Semaphore(lock_name, 2).acquire()
    assert aplock.unlink(lock_name) is True
    assert aplock.BoundedSemaphore(lock_name, 4).get_value() == 4
    aplock.unlink(lock_name)
    assert aplock.Lock(lock_name).acquire(False)


def test_repr_and_info(lock_name: str) -> None:
    sem = aplock.BoundedSemaphore(lock_name, 3)
    assert repr(sem) == f"<aplock.BoundedSemaphore {lock_name!r} value=3, 3 free>"
    sem.acquire()
    sem.acquire()
    assert repr(sem) == (
        f"<aplock.BoundedSemaphore {lock_name!r} value=3, 1 free, held by pid {os.getpid()}>"
    )
    info = sem.info()
    assert (info.name, info.kind, info.value, info.free) == (lock_name, "bounded semaphore", 3, 1)
    assert [(h.pid, h.alive) for h in info.holders] == [(os.getpid(), True)] * 2
    assert info.holders[0].generation < info.holders[1].generation == info.generation
    assert all(0 <= h.held_for < 60 for h in info.holders)
    assert info.recoveries == 0


def test_objects_share_the_process_handle(lock_name: str) -> None:
    a = aplock.Semaphore(lock_name, 2)
    b = aplock.Semaphore(lock_name, 2)
    assert a.acquire()
    assert b.get_value() == 1
    b.release()  # any object, thread or process may release
    assert a.get_value() == 2
