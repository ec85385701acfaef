"""A semaphore after ``fork()``: the child is a process of its own, with permits of its own."""

from __future__ import annotations

import pytest

import aplock
from tests.support import sem_workers
from tests.support.procs import FORK, running


def test_a_forked_child_holds_its_own_permits(lock_name: str) -> None:
    """A child's permit is recovered from the child when it dies, and only that one."""
    sem = aplock.BoundedSemaphore(lock_name, 2, recovery_interval=0.05)
    assert sem.acquire()
    queue = FORK.Queue()
    with running(sem_workers.forked_child, sem, "hold", queue, ctx=FORK) as (child,):
        assert queue.get(timeout=30) == ("held", child.pid, 0)
        child.join(30)
    assert [h.pid for h in sem.info().holders] == [sem.info().holders[0].pid, child.pid]
    with pytest.warns(aplock.AbandonedLockWarning) as caught:
        assert sem.acquire(timeout=5)
    assert [w.message.pid for w in caught] == [child.pid]  # type: ignore[union-attr]
    sem.release()
    sem.release()
    assert sem.get_value() == 2


def test_a_forked_child_that_holds_none_releases_the_parent_s(lock_name: str) -> None:
    sem = aplock.BoundedSemaphore(lock_name, 1)
    assert sem.acquire()
    queue = FORK.Queue()
    with running(sem_workers.forked_child, sem, "release", queue, ctx=FORK) as (child,):
        assert queue.get(timeout=30) == ("ok", child.pid, 1)
    assert sem.get_value() == 1
    with pytest.raises(aplock.LockNotHeldError):
        sem.release()
    with running(sem_workers.forked_child, sem, "release", queue, ctx=FORK) as (child,):
        assert queue.get(timeout=30) == ("LockNotHeldError", child.pid, 1)


def test_parent_and_child_use_the_guard_apart(lock_name: str) -> None:
    sem = aplock.Semaphore(lock_name, 2)
    queue = FORK.Queue()
    with running(sem_workers.forked_child, sem, "cycle", queue, ctx=FORK, count=2) as children:
        for _ in range(200):
            assert sem.acquire(timeout=30)
            sem.release()
        results = sorted(queue.get(timeout=60)[0] for _ in children)
    assert results == ["ok", "ok"]
    assert sem.get_value() == 2
