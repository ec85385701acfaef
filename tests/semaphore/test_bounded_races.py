"""Releases of a BoundedSemaphore that race, from threads and processes: of any number
of releases, exactly as many succeed as permits were held; the others raise, and the
count never exceeds the value."""

from __future__ import annotations

import random
import threading

import pytest

import aplock
from tests.support import sem_workers
from tests.support.procs import SPAWN, running

VALUE = 3


def _release(sem: aplock.Semaphore, start: threading.Event | None, results: list[str]) -> None:
    if start is not None:
        start.wait(30)
    try:
        sem.release()
    except aplock.LockNotHeldError:
        results.append("LockNotHeldError")  # list.append is atomic
    else:
        results.append("ok")


def _race(name: str, threads: int, procs: int, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    sem = aplock.BoundedSemaphore(name, VALUE)
    queue = SPAWN.Queue()
    for _ in range(rounds):
        held = rng.randint(0, VALUE)
        for _ in range(held):
            assert sem.acquire(False)
        start = SPAWN.Event()
        results: list[str] = []
        workers = [
            threading.Thread(target=_release, args=(sem, start, results)) for _ in range(threads)
        ]
        with running(sem_workers.release_once, name, VALUE, True, start, queue, count=procs):
            for t in workers:
                t.start()
            start.set()
            for t in workers:
                t.join(30)
            results += [queue.get(timeout=60) for _ in range(procs)]
        assert results.count("ok") == held, results
        assert results.count("LockNotHeldError") == threads + procs - held, results
        assert sem.get_value() == VALUE
        for _ in range(VALUE):
            assert sem.acquire(False)
        assert not sem.acquire(False)  # not one permit more than the value
        for _ in range(VALUE):
            sem.release()


def test_racing_over_releases(lock_name: str) -> None:
    _race(lock_name, threads=6, procs=3, rounds=6, seed=1)


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_racing_over_releases_long(lock_name: str) -> None:
    _race(lock_name, threads=8, procs=6, rounds=150, seed=2)


def test_count_never_exceeds_the_value_under_stray_releases(lock_name: str) -> None:
    """Threads acquire, release and release once too often, at random; a sampler reads
    the count all along. A release may give back another thread's permit (permits are
    the process's): each success ends one acquisition, and in the end all are ended."""
    sem = aplock.BoundedSemaphore(lock_name, VALUE)
    stop = threading.Event()
    seen: list[int] = []
    results: list[str] = []
    acquired: list[int] = []

    def sample() -> None:
        while not stop.is_set():
            seen.append(sem.get_value())

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            if rng.random() < 0.7 and sem.acquire(timeout=5):
                acquired.append(1)
                _release(sem, None, results)
            _release(sem, None, results)  # one too many, unless a permit is held

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    sampler.join(10)
    assert max(seen) <= VALUE
    assert results.count("ok") == len(acquired)
    assert results.count("LockNotHeldError") > 0
    assert sem.get_value() == VALUE


def _stray_releases(name: str, procs: int, rounds: int) -> None:
    """Each successful release ends one acquisition: in the end, as many releases
    succeeded as permits were acquired, by all the processes together."""
    sem = aplock.BoundedSemaphore(name, VALUE)
    start = SPAWN.Event()
    queue = SPAWN.Queue()
    with running(
        sem_workers.stray_releases, name, VALUE, start, queue, 5, rounds, count=procs
    ):  # fmt: skip
        start.set()
        counts = [queue.get(timeout=600) for _ in range(procs)]
    acquired, ok, raised = (sum(c[i] for c in counts) for i in range(3))
    assert ok == acquired, counts
    assert raised > 0
    assert sem.get_value() == VALUE


def test_processes_releasing_too_often_never_count_a_permit_twice(lock_name: str) -> None:
    _stray_releases(lock_name, procs=4, rounds=2000)


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_processes_releasing_too_often_never_count_a_permit_twice_long(lock_name: str) -> None:
    _stray_releases(lock_name, procs=6, rounds=30000)
