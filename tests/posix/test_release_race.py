"""Racing releases: exactly one wins, the rest get LockNotHeldError, the value stays <= 1.

Threads and spawned processes release the same acquisition at the same instant, round
after round; after each round the semaphores are checked directly.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import aplock
from aplock._posix import handle as _handle
from tests.support import workers
from tests.support.procs import SPAWN, running


def race(lock_name: str, rounds: int, threads: int, processes: int) -> None:
    lock = aplock.Lock(lock_name)
    handle = lock._h
    assert isinstance(handle, _handle.Handle)
    parties = threads + processes + 1
    start, done = SPAWN.Barrier(parties, timeout=60), SPAWN.Barrier(parties, timeout=60)
    out: Any = SPAWN.Queue()
    with running(workers.racing_releaser, lock_name, rounds, start, done, out, count=processes):
        pool = [
            threading.Thread(
                target=workers.racing_releaser, args=(lock_name, rounds, start, done, out)
            )
            for _ in range(threads)
        ]
        for t in pool:
            t.start()
        for _ in range(rounds):
            assert lock.acquire(timeout=30)
            start.wait()
            done.wait()
            assert handle.sem.value == 1, "a racing release pushed the value past 1"
            assert handle.token.value == 0
            assert not lock.locked()
        wins = [out.get(timeout=60) for _ in range(threads + processes)]
        for t in pool:
            t.join()
    per_round = sorted(i for won in wins for i in won)
    assert per_round == list(range(rounds)), "each round must have exactly one winner"


def test_racing_releases(lock_name: str) -> None:
    race(lock_name, rounds=300, threads=3, processes=3)


@pytest.mark.stress
@pytest.mark.timeout(600)
def test_racing_releases_stress(lock_name: str) -> None:
    race(lock_name, rounds=3000, threads=4, processes=4)


def test_double_release_by_one_thread_never_doubles(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    handle = lock._h
    assert isinstance(handle, _handle.Handle)
    for _ in range(1000):
        lock.acquire()
        lock.release()
        with pytest.raises(aplock.LockNotHeldError):
            lock.release()
        assert handle.sem.value == 1
