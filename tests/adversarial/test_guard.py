"""The guard: exclusion across processes while handles come and go, and a frozen holder.

The guard is a ``flock`` on a description of the record that each handle opens for
itself; the kernel drops it when its holder dies. It must keep other processes out
while this process opens and closes other handles of the same name (POSIX record locks
would be lost on the first ``close``), and a process frozen inside it must neither
stretch another's timeout nor block its cancellation.
"""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from typing import Any

import anyio
import pytest

import aplock
from tests.support import adversarial_workers as aw
from tests.support.procs import SPAWN, leave_a_dead_holder, running, stopped, wait_until

# -- a process frozen inside the guard ---------------------------------------------------


def frozen_in_guard_then(name: str, body: Any) -> tuple[float, bool]:
    """With the holder dead and another process frozen inside the guard, run *body* in a
    thread; return how long it ran and whether it was still running after 4 s."""
    leave_a_dead_holder(name)
    inside = SPAWN.Event()
    with running(aw.freeze_in_guard, name, inside) as (frozen,):
        assert inside.wait(60)
        assert frozen.pid is not None
        wait_until(lambda: stopped(frozen.pid), what="the frozen process to stop")  # type: ignore[arg-type]
        took: list[float] = []

        def timed() -> None:
            start = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                body()
            took.append(time.monotonic() - start)

        thread = threading.Thread(target=timed, daemon=True)
        thread.start()
        thread.join(4)
        hung = thread.is_alive()
        os.kill(frozen.pid, signal.SIGCONT)
        thread.join(30)
        frozen.join(30)
    return took[0], hung


def test_a_frozen_process_in_the_guard_does_not_stretch_a_timeout(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    results: list[bool] = []
    took, hung = frozen_in_guard_then(lock_name, lambda: results.append(lock.acquire(timeout=1.0)))
    if results and results[0]:
        lock.release()
    assert not hung, "acquire(timeout=1.0) still waiting after 4 s"
    assert took < 4, f"acquire(timeout=1.0) returned after {took:.1f} s"


@pytest.mark.parametrize("backend", ["trio"])
def test_a_frozen_process_in_the_guard_does_not_block_cancellation(
    lock_name: str, backend: str
) -> None:
    alock = aplock.AsyncLock(lock_name)
    results: list[bool] = []

    async def attempt() -> None:
        with anyio.move_on_after(1.0):
            results.append(await alock.acquire())

    took, hung = frozen_in_guard_then(lock_name, lambda: anyio.run(attempt, backend=backend))
    if results and results[0]:
        alock.release()
    assert not hung, "move_on_after(1.0) had not cancelled the wait after 4 s"
    assert took < 4, f"move_on_after(1.0) took {took:.1f} s to cancel the wait"


# -- exclusion while handles come and go --------------------------------------------------


def guard_churn(name: str, inside: Any, errors: Any, seconds: float, start: Any) -> None:
    """Threads enter the guard and count who is inside; others churn handles."""
    stop = threading.Event()

    def enter() -> None:
        while not stop.is_set():
            lock = aplock.Lock(name)
            h = aw.handle_of(lock)
            with h.guard.held():
                inside.value += 1
                if inside.value != 1:
                    errors.value += 1
                for _ in range(20):
                    pass
                inside.value -= 1
            del lock, h

    def churn() -> None:
        while not stop.is_set():
            lock = aplock.Lock(name)
            lock.locked()
            del lock

    start.wait()
    threads = [threading.Thread(target=enter) for _ in range(2)]
    threads += [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()


def guard_excludes(name: str, seconds: float) -> None:
    inside = SPAWN.RawValue("i", 0)
    errors = SPAWN.RawValue("i", 0)
    start = SPAWN.Event()
    with running(guard_churn, name, inside, errors, seconds, start, count=3, grace=30) as procs:
        start.set()
        for p in procs:
            p.join(30 + seconds)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert errors.value == 0, f"{errors.value} times two parties were inside the guard"


@pytest.mark.timeout(60)
def test_guard_excludes_across_processes_while_handles_come_and_go(lock_name: str) -> None:
    guard_excludes(lock_name, 1.0)


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_guard_excludes_across_processes_while_handles_come_and_go_stress(
    lock_name: str,
) -> None:
    guard_excludes(lock_name, 30.0)


GUARD_AND_CLOSE = """
import fcntl, os, sys, threading, time
import aplock
name = sys.argv[1]
held_r, held_w = os.pipe()
go_r, go_w = os.pipe()
holder = os.fork()
if holder == 0:
    lock = aplock.Lock(name)
    lock.acquire()
    os.write(held_w, b"x")
    os.read(go_r, 1)            # holds until the parent has probed the guard
    lock.release()
    os._exit(0)
os.read(held_r, 1)
first = aplock.Lock(name)
outcome = []
def wait_on_first():
    try:
        outcome.append(first.acquire(timeout=20))
    except BaseException as exc:
        outcome.append(type(exc).__name__)
def in_semaphore_wait():
    frame = sys._current_frames().get(waiter.ident)
    return frame is not None and frame.f_code.co_qualname in ("Handle.take", "FastHandle.take")
waiter = threading.Thread(target=wait_on_first)
waiter.start()
while not in_semaphore_wait():  # waiting in slices, on the handle of `first`
    time.sleep(0.001)
first.close()
second = aplock.Lock(name)
h = second._h
with h.guard.held():
    waiter.join(30)             # it notices the close (or wins) and lets go of its handle
    probe = os.fork()
    if probe == 0:
        try:
            fcntl.flock(h.guard_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os._exit(1)         # held by the parent: as it should be
        os._exit(0)
    _, status = os.waitpid(probe, 0)
os.write(go_w, b"x")
print(outcome, "guard-free" if os.waitstatus_to_exitcode(status) == 0 else "guard-held")
os.waitpid(holder, 0)
"""


def test_the_guard_survives_other_handles_of_the_name_closing(lock_name: str) -> None:
    """A thread inside the guard keeps it while another object for the name is closed and
    the thread that was waiting on it lets go of its handle (POSIX record locks are lost
    when the process closes *any* descriptor of the file)."""
    proc = subprocess.run(
        [sys.executable, "-c", GUARD_AND_CLOSE, lock_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    assert proc.stdout.split()[-1] == "guard-held", proc.stdout


def guard_holds_while_objects_churn(name: str, tmp: str, seconds: float) -> None:
    """The natural ``with aplock.Lock(name):`` per call: objects (and so handles) come and
    go in some threads while another thread is inside the guard, and another process
    takes the guard whenever it is free."""
    flag = os.path.join(tmp, "flag")
    with open(flag, "wb") as f:
        f.write(b"\0" * 8)
    fd = os.open(flag, os.O_RDWR)
    mm = mmap.mmap(fd, 8)
    os.close(fd)
    words = memoryview(mm).cast("q")
    aplock.Lock(name).close()  # create the lock's objects
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            aplock.Lock(name)  # dropped at once: its handle dies unless in use

    def sit_in_guard() -> None:
        while not stop.is_set():
            h = aw.handle_of(aplock.Lock(name))
            with h.guard.held():
                words[0] = 1
                for _ in range(100):
                    pass
                words[0] = 0
            del h

    r, w = SPAWN.Pipe(duplex=False)
    try:
        with running(aw.guard_prober, name, flag, seconds, w) as (prober,):
            assert r.poll(60)
            assert r.recv() == "ready"
            threads = [threading.Thread(target=churn) for _ in range(2)]
            threads.append(threading.Thread(target=sit_in_guard))
            for t in threads:
                t.start()
            try:
                assert r.poll(60 + seconds)
                taken, inside = r.recv()
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
            prober.join(30)
    finally:
        words.release()
        mm.close()
    print(f"\nthe prober took the guard {taken} times")
    assert taken > 0
    assert inside == 0, f"another process took the guard {inside} times while it was held"


@pytest.mark.timeout(60)
def test_the_guard_holds_while_other_threads_open_and_drop_lock_objects(
    lock_name: str, tmp_path: os.PathLike[str]
) -> None:
    guard_holds_while_objects_churn(lock_name, str(tmp_path), 1.5)


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_the_guard_holds_while_other_threads_open_and_drop_lock_objects_stress(
    lock_name: str, tmp_path: os.PathLike[str]
) -> None:
    guard_holds_while_objects_churn(lock_name, str(tmp_path), 30.0)
