"""Functions that run in child processes (importable by name, so spawn can find them)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import aplock


def hold(name: str, acquired: Any, release: Any | None = None, timeout: float = 60) -> None:
    """Acquire *name*, set *acquired*, then hold until *release* is set (or forever)."""
    lock = aplock.Lock(name)
    lock.acquire()
    acquired.set()
    if release is None:
        time.sleep(3600)
    else:
        release.wait(timeout)
        lock.release()


def acquire_and_exit(name: str) -> None:
    """Acquire *name* and exit without releasing."""
    aplock.Lock(name).acquire()
    os._exit(0)


def try_acquire(name: str, timeout: float, out: Any) -> None:
    """Put the result of ``acquire(timeout=timeout)`` on *out*, then release if acquired."""
    lock = aplock.Lock(name)
    with_warning = False
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = lock.acquire(timeout=timeout)
        with_warning = any(isinstance(w.message, aplock.AbandonedLockWarning) for w in caught)
    out.put((os.getpid(), got, with_warning))
    if got:
        lock.release()


def release(name: str, out: Any) -> None:
    """Release *name* from this process; put ``"ok"`` or the error's type name on *out*."""
    try:
        aplock.Lock(name).release()
    except aplock.LockError as exc:
        out.put(type(exc).__name__)
    else:
        out.put("ok")


def use_pickled(lock: aplock.Lock, out: Any) -> None:
    """Report the unpickled lock's name and state, then take and release it."""
    out.put((lock.name, lock.locked()))
    ok = lock.acquire(timeout=30)
    out.put(ok)
    if ok:
        lock.release()


def pool_task(lock: aplock.Lock) -> tuple[str, bool]:
    """A ProcessPoolExecutor task: the pickled lock is the same lock."""
    return lock.name, lock.locked()


def increment(name: str, path: str, rounds: int, start: Any) -> None:
    """Do *rounds* non-atomic read-modify-writes of the counter in *path* under the lock."""
    lock = aplock.Lock(name)
    start.wait(30)
    for _ in range(rounds):
        with lock, open(path, "r+") as f:
            value = int(f.read() or 0)
            f.seek(0)
            f.write(str(value + 1))
            f.truncate()


def open_only(name: str, start: Any, out: Any) -> None:
    """Wait for *start*, open *name*, report ``acquire(False)``."""
    start.wait(30)
    lock = aplock.Lock(name)
    out.put(lock.acquire(False))


def stop_self() -> None:
    """SIGSTOP this process."""
    os.kill(os.getpid(), signal.SIGSTOP)


def racing_releaser(name: str, rounds: int, start: Any, done: Any, out: Any) -> None:
    """Each round: wait at *start*, race a release(), wait at *done*; report winning rounds."""
    lock = aplock.Lock(name)
    won = []
    for i in range(rounds):
        start.wait()
        try:
            lock.release()
            won.append(i)
        except aplock.LockNotHeldError:
            pass
        done.wait()
    out.put(won)


def hold_until_killed(name: str, acquired: Any) -> None:
    """Acquire *name*, set *acquired*, and hold until killed."""
    lock = aplock.Lock(name)
    lock.acquire()
    acquired.set()
    while True:
        time.sleep(3600)


def async_acquire_then_report(name: str, backend: str, out: Any) -> None:
    """In a fresh process, ``async with AsyncLock`` and report the generation."""
    import anyio

    async def main() -> None:
        alock = aplock.AsyncLock(name)
        async with alock:
            acq = alock.acquisition
            out.put(acq.generation if acq else None)

    anyio.run(main, backend=backend)


def hold_for(name: str, acquired: Any, seconds: float) -> None:
    """Acquire *name*, set *acquired*, hold for *seconds* (or until killed), release."""
    lock = aplock.Lock(name)
    lock.acquire()
    acquired.set()
    time.sleep(seconds)
    lock.release()


def waiter_report(name: str, ready: Any, out: Any, path: str) -> None:
    """Wait for *name*; report ``(pid, abandoned_pid)``; bump the counter in *path*."""
    import warnings

    lock = aplock.Lock(name)
    ready.set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lock.acquire(timeout=60)
    warned = [w.message.pid for w in caught if isinstance(w.message, aplock.AbandonedLockWarning)]
    acq = lock.acquisition
    try:
        with open(path, "r+") as f:
            value = int(f.read() or 0)
            time.sleep(0.01)
            f.seek(0)
            f.write(str(value + 1))
            f.truncate()
        out.put((os.getpid(), acq.abandoned_pid if acq else None, warned))
    finally:
        lock.release()


def hand_off_and_exit(name: str, to: int | None, done: Any) -> None:
    """Acquire *name*, hand it off to *to* (``None``: detach), and exit."""
    lock = aplock.Lock(name)
    lock.acquire()
    lock.hand_off(to)
    done.set()


def die_in_guard(name: str, inside: Any) -> None:
    """Take the lock's guard and wait there to be killed."""
    lock = aplock.Lock(name)
    with lock._h.guard.held():
        inside.set()
        time.sleep(3600)


def die_after_recording(name: str) -> None:
    """Take the lock semaphore and record this process, then die before the token."""
    from aplock._posix import identity as _process
    from aplock._posix import record as _state

    lock = aplock.Lock(name)
    h = lock._h
    h.sem.acquire(0)
    me = _process.identity()
    generation = h.words[_state.GENERATION_WORD] + 1
    _state.write_hold(h.mm, generation, me, time.time())
    os._exit(0)


def keep_open(name: str, opened: Any, stop: Any) -> None:
    """Open *name* without holding it, until *stop* is set."""
    lock = aplock.Lock(name)
    opened.set()
    stop.wait(60)
    lock.close()


def async_waiter_report(name: str, ready: Any, out: Any, path: str, backend: str) -> None:
    """As ``waiter_report``, from a task of an event loop on *backend*."""
    import warnings

    import anyio

    async def main() -> None:
        alock = aplock.AsyncLock(name)
        ready.set()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert await alock.acquire(timeout=60)
        warned = [
            w.message.pid for w in caught if isinstance(w.message, aplock.AbandonedLockWarning)
        ]
        acq = alock.acquisition
        try:
            with open(path, "r+") as f:
                value = int(f.read() or 0)
                await anyio.sleep(0.01)
                f.seek(0)
                f.write(str(value + 1))
                f.truncate()
            out.put((os.getpid(), acq.abandoned_pid if acq else None, warned))
        finally:
            alock.release()

    anyio.run(main, backend=backend)


def die_before_recording(name: str) -> None:
    """Take the lock semaphore and die before recording anything: a stuck lock."""
    lock = aplock.Lock(name)
    lock._h.sem.acquire(0)
    os._exit(0)


def hold_then_release(name: str, acquired: Any, release: Any, out: Any) -> None:
    """Acquire *name*, set *acquired*; once *release* is set, release and report how."""
    lock = aplock.Lock(name)
    lock.acquire()
    acquired.set()
    release.wait(60)
    try:
        lock.release()
    except aplock.LockNotHeldError:
        out.put("not held")
    else:
        out.put("released")


def release_and_die(name: str, when: str) -> None:
    """Release *name* (held by another process) and SIGKILL this process part-way.

    ``when="took"``: once the release has taken the token and recorded so (the first
    bytecode at which ``H`` is 0 and any intent in the record is past ``TAKING``);
    ``when="trywait"``: the instant the trywait of ``H`` has returned.
    """
    import sys

    from aplock._posix import handle as _handle
    from aplock._posix import record as _state

    lock = aplock.Lock(name)
    h = lock._h
    assert isinstance(h, _handle.Handle)
    token, words = h.token, h.words
    intent = getattr(_state, "INTENT_WORD", None)

    def took() -> bool:
        return token.value == 0 and (intent is None or words[intent] & 0xF0 not in (0, 0x10))

    def trace(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode" and took():
            os.kill(os.getpid(), signal.SIGKILL)
        return trace

    def profile(frame: Any, event: str, arg: Any) -> None:
        called = getattr(arg, "__name__", "")
        if event == "c_return" and getattr(arg, "__self__", None) is token and called == "acquire":
            os.kill(os.getpid(), signal.SIGKILL)

    if when == "took":
        sys.settrace(trace)
    else:
        sys.setprofile(profile)
    lock.release()
    os._exit(0)  # pragma: no cover - the release never got that far
