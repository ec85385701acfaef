"""Functions that run in child processes for the CLI's semaphore tests (importable by name)."""

from __future__ import annotations

import time
from typing import Any

import aplock


def hold_permits(
    name: str, value: int, bounded: bool, count: int, acquired: Any, release: Any = None
) -> None:
    """Take *count* permits of semaphore *name*, set *acquired*, and hold them.

    With *release*, give them back once it is set; without, hold them until killed.
    """
    cls = aplock.BoundedSemaphore if bounded else aplock.Semaphore
    sem = cls(name, value)
    for _ in range(count):
        assert sem.acquire(timeout=30), "no permit within 30 s"
    acquired.set()
    if release is None:
        while True:
            time.sleep(3600)
    assert release.wait(60), "never told to release"
    for _ in range(count):
        sem.release()
    sem.close()


def hold_then_close(name: str, value: int, acquired: Any, release: Any) -> None:
    """Take a permit, close the object (the process no longer maps the semaphore), wait.

    The permit stays held by this live process until *release* is set, then it is given
    back through a new object.
    """
    sem = aplock.Semaphore(name, value)
    assert sem.acquire(timeout=30), "no permit within 30 s"
    sem.close()
    del sem
    acquired.set()
    assert release.wait(60), "never told to release"
    again = aplock.Semaphore(name, value)
    again.release()
    again.close()
