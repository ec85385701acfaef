"""Functions that run in child processes for the semaphore tests (importable by name).

A *journal* is a file opened with ``O_APPEND`` to which every holder appends ``+`` right
after it acquired a permit and ``-`` right before it releases it: each write is atomic,
so the file's order is an order in which permits were really held, and its largest
running count (``max_concurrency``) is at most the number of permits held at once.
"""

from __future__ import annotations

import os
import random
import time
import warnings
from typing import Any

import aplock


def open_semaphore(
    name: str, value: int, bounded: bool, recovery_interval: float | None = 0.25
) -> aplock.Semaphore:
    """``BoundedSemaphore`` or ``Semaphore`` *name* with *value*."""
    cls = aplock.BoundedSemaphore if bounded else aplock.Semaphore
    return cls(name, value, recovery_interval=recovery_interval)


def max_concurrency(path: str) -> tuple[int, int]:
    """``(largest running count, acquisitions)`` of the journal at *path*."""
    with open(path, "rb") as f:
        data = f.read()
    level = top = 0
    for byte in data:
        level += 1 if byte == ord("+") else -1
        top = max(top, level)
    return top, data.count(b"+")


def _journal(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def hold(name: str, value: int, bounded: bool, count: int, ready: Any, release: Any = None) -> None:
    """Acquire *count* permits, set *ready*, then hold them until *release* is set (or forever)."""
    sem = open_semaphore(name, value, bounded)
    for _ in range(count):
        assert sem.acquire(timeout=30)
    ready.set()
    if release is None:
        time.sleep(3600)
    else:
        release.wait(60)
        for _ in range(count):
            sem.release()


def hammer(
    name: str,
    value: int,
    bounded: bool,
    journal: str,
    rounds: int,
    start: Any,
    seed: int,
    recovery_interval: float = 0.25,
) -> None:
    """*rounds* of acquire, journal ``+``, a short random hold, journal ``-``, release.

    A warning (a dead holder's permit) is only counted: ``filterwarnings=error`` does not
    reach a child process, but a raising warning would release the permit.
    """
    sem = open_semaphore(name, value, bounded, recovery_interval)
    fd = _journal(journal)
    rng = random.Random(seed)
    start.wait(60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", aplock.AbandonedLockWarning)
        for _ in range(rounds):
            assert sem.acquire(timeout=60), "no permit within 60 s"
            os.write(fd, b"+")
            end = time.perf_counter() + rng.uniform(0, 0.0005)
            while time.perf_counter() < end:
                pass
            os.write(fd, b"-")
            sem.release()
    os.close(fd)


def hammer_forever(
    name: str, value: int, bounded: bool, journal: str, started: Any, seed: int
) -> None:
    """Acquire and release until killed; set *started* once it has held a permit.

    Each warning of a dead holder's permit is journaled as ``w`` and its pid, one line
    each, before the next acquisition.
    """
    sem = open_semaphore(name, value, bounded, 0.02)
    fd = _journal(journal)
    rng = random.Random(seed)
    first = True
    while True:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if not sem.acquire(timeout=60):
                os._exit(3)
        for w in caught:
            if isinstance(w.message, aplock.AbandonedLockWarning):
                os.write(fd, f"w{w.message.pid}\n".encode())
        if first:
            started.set()
            first = False
        end = time.perf_counter() + rng.uniform(0, 0.002)
        while time.perf_counter() < end:
            pass
        sem.release()


def release_once(
    name: str, value: int, bounded: bool, start: Any, out: Any, delay: float = 0.0
) -> None:
    """At *start* (and *delay* seconds), call ``release()`` once; put ``"ok"`` or the
    error's type name on *out*."""
    sem = open_semaphore(name, value, bounded)
    start.wait(60)
    time.sleep(delay)
    try:
        sem.release()
    except ValueError as exc:
        out.put(type(exc).__name__)
    else:
        out.put("ok")


def acquire_report(
    name: str,
    value: int,
    bounded: bool,
    timeout: float,
    recovery_interval: float,
    start: Any,
    out: Any,
    hold_until: Any = None,
) -> None:
    """At *start*, acquire with *timeout*; put ``(pid, got, warned pids, seconds)`` on *out*.

    With *hold_until*, hold the permit until it is set, then release it and put
    ``"released"`` (or the error's type name) on *out*; ``"robbed"`` if the table no
    longer listed this process as a holder just before.
    """
    sem = open_semaphore(name, value, bounded, recovery_interval)
    start.wait(60)
    began = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = sem.acquire(timeout=timeout)
    seconds = time.monotonic() - began
    warned = [w.message.pid for w in caught if isinstance(w.message, aplock.AbandonedLockWarning)]
    out.put((os.getpid(), got, warned, seconds))
    if got and hold_until is not None:
        hold_until.wait(60)
        if os.getpid() not in [h.pid for h in sem.info().holders]:
            out.put("robbed")
            return
        try:
            sem.release()
        except ValueError as exc:
            out.put(type(exc).__name__)
        else:
            out.put("released")


def acquire_and_exit(name: str, value: int, bounded: bool, count: int) -> None:
    """Acquire *count* permits and exit without releasing them (``os._exit``)."""
    sem = open_semaphore(name, value, bounded)
    for _ in range(count):
        sem.acquire()
    os._exit(0)


def use_pickled(sem: aplock.Semaphore, out: Any) -> None:
    """Report the unpickled semaphore's name, value and free permits; take one and give it back."""
    out.put((type(sem).__name__, sem.name, sem.value, sem.get_value()))
    got = sem.acquire(timeout=30)
    out.put((got, sem.get_value()))
    if got:
        sem.release()


def open_report(name: str, kind: str, value: int, out: Any) -> None:
    """Open *name* as *kind* (``"Lock"``, ``"Semaphore"``...); put what happened on *out*."""
    try:
        if kind == "Lock":
            aplock.Lock(name)
        else:
            getattr(aplock, kind)(name, value)
    except aplock.LockKindError as exc:
        out.put(("LockKindError", exc.kind, exc.wanted))
    except ValueError as exc:
        out.put(("ValueError", str(exc), ""))
    else:
        out.put(("ok", "", ""))


def forked_child(sem: aplock.Semaphore, action: str, out: Any) -> None:
    """In a forked child (the parent's *sem*, inherited): do *action*, report, exit.

    ``"release"``: release once (the child holds nothing of its own); ``"hold"``:
    acquire one permit and exit holding it; ``"cycle"``: acquire and release 100 times.
    """
    try:
        if action == "release":
            sem.release()
        elif action == "hold":
            assert sem.acquire(timeout=30)
            out.put(("held", os.getpid(), sem.get_value()))
            out.close()
            out.join_thread()  # flushed before the exit that skips every cleanup
            os._exit(0)
        else:
            for _ in range(100):
                assert sem.acquire(timeout=30)
                sem.release()
    except ValueError as exc:
        out.put((type(exc).__name__, os.getpid(), sem.get_value()))
    else:
        out.put(("ok", os.getpid(), sem.get_value()))


def stray_releases(name: str, value: int, start: Any, out: Any, seed: int, rounds: int) -> None:
    """Acquire, release and release once too often, at random, *rounds* times; put
    ``(acquisitions, releases that succeeded, releases that raised)`` on *out*."""
    rng = random.Random(seed)
    sem = open_semaphore(name, value, True)
    acquired = ok = raised = 0
    start.wait(60)
    for _ in range(rounds):
        calls = 1
        if rng.random() < 0.6 and sem.acquire(timeout=10):
            acquired += 1
            calls = 2
        for _ in range(calls):
            try:
                sem.release()
            except aplock.LockNotHeldError:
                raised += 1
            else:
                ok += 1
    out.put((acquired, ok, raised))


def hold_guard(name: str, value: int, ready: Any, release: Any) -> None:
    """Hold the semaphore's guard (as a process stopped inside it would) until *release*."""
    from aplock._core import core_of
    from aplock._posix.semaphore import SemaphoreCore

    core = core_of(open_semaphore(name, value, False))
    assert isinstance(core, SemaphoreCore)
    h = core.h
    with h.guard.held():
        ready.set()
        release.wait(60)
