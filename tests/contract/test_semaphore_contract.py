"""The semaphore contract, once, over ``Semaphore``, ``BoundedSemaphore`` and
``AsyncSemaphore``: counting, over-release, the value of an existing name, and one
kind of object per name.

The lock-like cases (value 1) are in ``test_lock_contract.py``; ``tests/semaphore``
tests each class in depth (values, races, recovery, processes).
"""

from __future__ import annotations

import threading

import anyio
import anyio.to_thread
import pytest

import aplock
from tests.contract import kinds
from tests.contract.conftest import Site
from tests.contract.drive import Inside, run_workers
from tests.contract.kinds import Kind

pytestmark = pytest.mark.anyio

KINDS = kinds.SEMAPHORES


def kind_of(kind: Kind) -> str:
    """What ``LockKindError`` calls a name of this kind."""
    return "bounded semaphore" if kind.release_free_raises else "semaphore"


async def test_value_n_admits_n_holders(kind: Kind, site: Site) -> None:
    p, other = site.open(value=3), site.open(value=3)
    assert (p.obj.value, p.obj.get_value()) == (3, 3)
    for free in (2, 1, 0):
        assert await p.acquire(False)
        assert other.obj.get_value() == free  # every object of the name sees the count
    assert await other.acquire(False) is False
    assert await other.acquire(timeout=0.05) is False
    p.release()
    assert other.obj.get_value() == 1
    assert await other.acquire(False)
    assert p.obj.get_value() == 0
    other.release()
    p.release()
    p.release()
    assert (p.obj.get_value(), other.obj.get_value()) == (3, 3)


async def test_at_most_value_holders_at_once(kind: Kind, site: Site) -> None:
    """Eight workers on an object of this class and one of its twin, value 3."""
    inside = Inside()
    objs = [site.open(value=3), site.open_twin(value=3)]
    await run_workers(objs, 8, 50, inside)
    assert 1 <= inside.most <= 3
    assert inside.entries == 8 * 50
    assert objs[0].obj.get_value() == 3


async def test_release_of_free_permits_as_declared(kind: Kind, site: Site) -> None:
    """Eight threads release at once a semaphore of value 2 whose two permits are held:
    a bounded one takes two releases back and refuses six, whose count never exceeds its
    value; the others count every release, above the value."""
    p = site.open(value=2)
    assert await p.acquire(False)
    assert await p.acquire(False)
    start = threading.Barrier(8)
    refused: list[aplock.LockNotHeldError] = []

    def release() -> None:
        start.wait(10)
        try:
            p.release()
        except aplock.LockNotHeldError as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(anyio.to_thread.run_sync, release)
    if kind.release_free_raises:
        assert len(refused) == 6
        assert all(exc.name == site.name for exc in refused)
        assert p.obj.get_value() == 2
        assert await p.acquire(False)
        assert await p.acquire(False)
        assert await p.acquire(False) is False
        p.release()
        p.release()
    else:
        assert refused == []
        assert (p.obj.value, p.obj.get_value()) == (2, 8)
        for _ in range(8):
            assert await p.acquire(False)
        assert await p.acquire(False) is False
        for _ in range(2):
            p.release()
    assert p.obj.get_value() == 2


async def test_reopening_with_another_value_names_the_existing_one(kind: Kind, site: Site) -> None:
    p = site.open(value=3)
    with pytest.raises(ValueError, match=r"it exists with value=3, not value=2") as info:
        site.open(value=2)
    assert repr(site.name) in str(info.value)
    same = site.open(value=3)  # the same value opens it
    assert await same.acquire(False)
    assert p.obj.get_value() == 2
    same.release()


def test_a_name_is_one_kind_of_object(kind: Kind, site: Site) -> None:
    """A lock's name opened as this kind, this kind's name opened as a lock or as the
    other kind of semaphore: ``LockKindError``, naming both kinds."""
    lock_name = site.other_name(".lock")
    aplock.Lock(lock_name).close()
    with pytest.raises(aplock.LockKindError) as info:
        kind.open(lock_name, None, 1)
    assert (info.value.name, info.value.kind, info.value.wanted) == (
        lock_name,
        "lock",
        kind_of(kind),
    )
    assert f"it is a lock, not a {kind_of(kind)}" in str(info.value)

    site.open()
    for opener in (aplock.Lock, aplock.AsyncLock):
        with pytest.raises(aplock.LockKindError) as info:
            opener(site.name)
        assert (info.value.kind, info.value.wanted) == (kind_of(kind), "lock")
    other = aplock.Semaphore if kind.release_free_raises else aplock.BoundedSemaphore
    with pytest.raises(aplock.LockKindError, match=f"it is a {kind_of(kind)}, not a"):
        other(site.name)
