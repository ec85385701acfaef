"""Workers of ``tests/posix/test_fast_path.py``: the compiled path beside the pure one.

Each takes *pure* and selects its path before it opens the lock, as ``APLOCK_PURE`` does.
"""

from __future__ import annotations

import mmap
import os
import time
from typing import Any

import aplock
from aplock._posix import fastpath


def open_on_path(name: str, pure: bool) -> aplock.Lock:
    """Lock *name* on the pure-Python path (*pure*) or the compiled one."""
    if pure:
        os.environ[fastpath.PURE_ENV] = "1"
    else:
        os.environ.pop(fastpath.PURE_ENV, None)
    lock = aplock.Lock(name)
    if isinstance(lock._h, fastpath.FastHandle) == pure:
        raise AssertionError(f"the lock is not on the {'pure' if pure else 'compiled'} path")
    return lock


def count(name: str, pure: bool, path: str, rounds: int, ready: Any, go: Any) -> None:
    """*rounds* times: acquire, bump the (non-atomic) counter in the file *path*, release."""
    lock = open_on_path(name, pure)
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 8)
    words = memoryview(mm).cast("q")
    ready.set()
    go.wait(60)
    for i in range(rounds):
        if i % 3 == 0:
            got = lock.acquire(timeout=30)  # the timed slices, too
            assert got
        else:
            lock.acquire()
        value = words[0]
        if i % 7 == 0:
            time.sleep(0)  # let the other process run inside the critical section
        words[0] = value + 1
        lock.release()
    words.release()
    mm.close()


def hold_until_killed(name: str, pure: bool, acquired: Any) -> None:
    """Acquire *name* on the chosen path, set *acquired*, hold until killed."""
    lock = open_on_path(name, pure)
    lock.acquire()
    acquired.set()
    while True:
        time.sleep(3600)
