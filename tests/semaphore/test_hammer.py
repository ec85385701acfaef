"""Many threads and processes hammer one semaphore: never more holders than permits.

Each holder journals its entry right after ``acquire()`` and its exit right before
``release()`` (``tests.support.sem_workers``): the journal's largest running count is a
lower bound of the permits held at once, which must never exceed the value.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import aplock
from tests.support import sem_workers
from tests.support.procs import SPAWN, running


def _threads(sem: aplock.Semaphore, threads: int, rounds: int) -> tuple[int, int]:
    """``(most holders at once, acquisitions)`` of *threads* threads doing *rounds* each."""
    lock = threading.Lock()
    state = {"now": 0, "top": 0, "count": 0}
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(30)
            for _ in range(rounds):
                assert sem.acquire(timeout=30)
                with lock:
                    state["now"] += 1
                    state["count"] += 1
                    state["top"] = max(state["top"], state["now"])
                time.sleep(0)
                with lock:
                    state["now"] -= 1
                sem.release()
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    assert not errors, errors
    return state["top"], state["count"]


@pytest.mark.parametrize("bounded", [False, True])
def test_threads_never_exceed_the_value(lock_name: str, bounded: bool) -> None:
    sem = sem_workers.open_semaphore(lock_name, 3, bounded)
    top, count = _threads(sem, threads=8, rounds=150)
    assert count == 8 * 150
    assert top <= 3
    assert top == 3, "the hammer never filled the semaphore: it proves nothing"
    assert sem.get_value() == 3


def _processes(
    name: str, value: int, bounded: bool, tmp_path: Path, procs: int, rounds: int
) -> tuple[int, int]:
    journal = str(tmp_path / "journal")
    start = SPAWN.Event()
    with running(
        sem_workers.hammer, name, value, bounded, journal, rounds, start, 7, count=procs
    ) as children:
        start.set()
        for child in children:
            child.join(180)
    assert [c.exitcode for c in children] == [0] * procs
    return sem_workers.max_concurrency(journal)


@pytest.mark.parametrize("bounded", [False, True])
def test_processes_never_exceed_the_value(lock_name: str, bounded: bool, tmp_path: Path) -> None:
    top, count = _processes(lock_name, 2, bounded, tmp_path, procs=4, rounds=250)
    assert count == 4 * 250
    assert top <= 2
    assert top == 2, "the hammer never filled the semaphore: it proves nothing"
    assert sem_workers.open_semaphore(lock_name, 2, bounded).get_value() == 2


def test_threads_and_processes_together(lock_name: str, tmp_path: Path) -> None:
    journal = str(tmp_path / "journal")
    start = SPAWN.Event()
    sem = aplock.BoundedSemaphore(lock_name, 3)
    with running(
        sem_workers.hammer, lock_name, 3, True, journal, 200, start, 3, count=3
    ) as children:
        start.set()
        top, count = _threads(sem, threads=4, rounds=100)
        for child in children:
            child.join(180)
    assert [c.exitcode for c in children] == [0] * 3
    process_top, process_count = sem_workers.max_concurrency(journal)
    assert (count, process_count) == (400, 600)
    assert top <= 3
    assert process_top <= 3
    assert sem.get_value() == 3


@pytest.mark.stress
@pytest.mark.timeout(900)
@pytest.mark.parametrize("bounded", [False, True])
def test_processes_never_exceed_the_value_long(
    lock_name: str, bounded: bool, tmp_path: Path
) -> None:
    top, count = _processes(lock_name, 3, bounded, tmp_path, procs=8, rounds=3000)
    assert count == 8 * 3000
    assert top == 3
