"""The code paths of platforms without Linux's extras, forced on Linux.

macOS has no ``sem_timedwait`` (waits poll), no ``sem_getvalue`` (``locked()`` reads the
record), POSIX names of at most 31 characters (digest only), no ``/proc`` (a dead
holder is proven dead by its pid alone; the guard is a file). Every process of a case
runs with all of these forced, since they name the OS objects differently.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import pytest

import aplock
from aplock import _names, sync
from aplock._posix import handle as _handle
from aplock._posix import identity as _process
from aplock._posix import ipc as _posix
from tests.support.procs import SPAWN, kill, running


def as_on_macos() -> None:
    """Switch this process to the code paths of a platform without the Linux extras."""
    _posix.HAS_TIMEDWAIT = False
    _posix.HAS_VALUE = False
    _posix.SHORT_NAMES = True
    _posix.HAS_PROC_FD = False
    _process.HAS_PROC = False
    sync._HAS_VALUE = False  # the hot paths' copies of the flag
    _handle._HAS_VALUE = False


def holder(name: str, acquired: Any, release: Any) -> None:
    as_on_macos()
    lock = aplock.Lock(name)
    lock.acquire()
    acquired.set()
    if release is None:
        time.sleep(3600)  # until killed
    release.wait(60)
    lock.release()


def waiter(name: str, conn: Any) -> None:
    as_on_macos()
    lock = aplock.Lock(name)
    h = lock._h
    assert isinstance(h, _handle.Handle)
    report: dict[str, Any] = {
        "semaphore": h.names.semaphore,
        "guard is a file": h.guard_fd != h.fd and os.path.exists(_posix.guard_path(h.names.base)),
        "locked while held": lock.locked(),
    }
    start = time.monotonic()
    report["timed out"] = lock.acquire(timeout=0.2) is False
    report["waited"] = time.monotonic() - start
    conn.send(report)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report["got"] = lock.acquire(timeout=30)
    report["warned"] = [type(w.message).__name__ for w in caught]
    report["locked after"] = lock.locked()
    lock.release()
    report["free after release"] = not lock.locked()
    with pytest.raises(aplock.LockNotHeldError):
        lock.release()
    lock.close()
    report["unlinked"] = aplock.unlink(name)
    report["guard file left"] = os.path.exists(_posix.guard_path(h.names.base))
    conn.send(report)


def shm_entries(name: str) -> list[str]:
    base = _names.posix_names(name, short=True).base
    return [e for e in os.listdir("/dev/shm") if base in e]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ending", ["release", "SIGKILL"])
def test_polling_waits_record_state_and_a_guard_file(lock_name: str, ending: str) -> None:
    """A waiter polls a lock held by another process, times out on time, and gets it
    when it is released (or, by pid alone, when its holder is killed)."""
    acquired = SPAWN.Event()
    release = SPAWN.Event() if ending == "release" else None
    parent, child = SPAWN.Pipe(duplex=False)
    with running(holder, lock_name, acquired, release) as (held,):
        assert acquired.wait(60)
        with running(waiter, lock_name, child) as (waiting,):
            assert parent.poll(60)
            first: dict[str, Any] = parent.recv()
            if release is not None:
                release.set()
            else:
                kill(held)
                held.join(30)  # without /proc a zombie cannot be told from the living
            assert parent.poll(60), "the waiter never got the lock"
            report: dict[str, Any] = parent.recv()
            waiting.join(30)
        assert waiting.exitcode == 0
    short = _names.posix_names(lock_name, short=True).semaphore
    assert first["semaphore"] == short
    assert len(short) <= _names.SHORT_NAME_MAX
    assert first["guard is a file"]
    assert first["locked while held"]
    assert first["timed out"]
    assert 0.2 <= first["waited"] < 5
    assert report["got"]
    abandoned = ["AbandonedLockWarning"] if ending == "SIGKILL" else []
    assert report["warned"] == abandoned
    assert report["locked after"]
    assert report["free after release"]
    assert report["unlinked"]
    assert not report["guard file left"]
    assert shm_entries(lock_name) == []
