"""Racing releases: exactly one wins, the rest get LockNotHeldError, the value stays <= 1.

Threads and spawned processes release the same acquisition at the same instant, round
after round, alone or against new acquisitions; after each round the semaphores are
checked directly. Two interleavings of an interrupted acquire with a racing release are
played step by step.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import aplock
from aplock._posix import handle as _handle
from aplock._posix import record as _state
from tests.support import adversarial_workers as aw
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


# -- releases racing new acquisitions ------------------------------------------------------


def release_race(name: str, rounds: int) -> None:
    """Each round: the lock is held; 3 threads and 2 processes race to release it while
    2 threads and 1 process race to acquire (and release) it. Accounting must balance."""
    lock = aplock.Lock(name)
    h = aw.handle_of(lock)
    roles = ["release"] * 5 + ["acquire"] * 3
    parties = len(roles) + 1
    start, done = SPAWN.Barrier(parties, timeout=60), SPAWN.Barrier(parties, timeout=60)
    counts: Any = SPAWN.Array("q", 2 * len(roles), lock=False)
    in_processes = [3, 4, 7]
    procs = [
        SPAWN.Process(target=aw.race_party, args=(name, i, roles[i], rounds, start, done, counts))
        for i in in_processes
    ]
    threads = [
        threading.Thread(
            target=aw.race_party, args=(name, i, roles[i], rounds, start, done, counts)
        )
        for i in range(len(roles))
        if i not in in_processes
    ]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    acquired = released = 0
    try:
        for _ in range(rounds):
            assert lock.acquire(timeout=30)
            acquired += 1
            start.wait()
            done.wait()
            values = (h.sem.value, h.token.value)
            assert values in ((1, 0), (0, 1)), f"semaphores {values}"
            won_acquires = acquired + sum(counts[0::2])
            won_releases = released + sum(counts[1::2])
            assert won_acquires - won_releases == (1 if values == (0, 1) else 0), (
                f"{won_acquires} acquisitions but {won_releases} releases, {values}"
            )
            if values == (0, 1):
                lock.release()
                released += 1
    finally:
        for t in threads:
            t.join(60)
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()


def test_releases_race_new_acquisitions(lock_name: str) -> None:
    release_race(lock_name, 250)


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_releases_race_new_acquisitions_stress(lock_name: str) -> None:
    release_race(lock_name, 5000)


# -- an interrupted acquire racing a release, step by step ---------------------------------


def test_an_interrupted_acquire_racing_a_release_never_posts_twice(lock_name: str) -> None:
    """The interleaving, step by step (each step is real code, in the order two threads
    can run it): an acquire whose publish() is cut short by a signal handler's exception
    right after it posted the token, while another thread releases the lock (as any
    thread may) and has taken the token but not yet posted ``L``."""
    lock = aplock.Lock(lock_name)
    h = aw.handle_of(lock)
    h.sem.acquire(0)  # the acquire takes L...
    before = h.words[_state.GENERATION_WORD]
    h.publish()  # ...records itself and posts H; the handler's exception comes right after
    h.token.acquire(0)  # the racing release() takes H...
    h.give_back(before)  # ...while the interrupted acquire gives back what it took...
    h.words[_state.PID_WORD] = 0  # ...and the release goes on:
    h.sem.release()
    values = (h.sem.value, h.token.value)
    assert values == (1, 0), f"semaphores {values}: two holders can get in"


def test_an_interrupted_acquire_never_gives_back_a_later_acquisition(lock_name: str) -> None:
    """As above, but the racing release has finished and another acquire has taken the
    lock since: giving back must leave that later acquisition alone."""
    lock = aplock.Lock(lock_name)
    h = aw.handle_of(lock)
    h.sem.acquire(0)
    before = h.words[_state.GENERATION_WORD]
    h.publish()  # the handler's exception comes right after this
    lock.release()  # a racing release, whole
    assert lock.acquire(False)  # a later acquisition
    h.give_back(before)  # the interrupted acquire gives back what it took
    assert (h.sem.value, h.token.value) == (0, 1), "the later acquisition was released"
    assert lock.acquisition is not None
    assert lock.acquisition.generation == before + 2
    lock.release()
    assert (h.sem.value, h.token.value) == (1, 0)
