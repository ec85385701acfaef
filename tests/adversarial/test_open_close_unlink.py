"""Objects and OS objects that come and go while the lock is in use.

Processes that open a new name at the same instant get one lock; closing an object
while a thread waits on it, or while other threads churn the name, crashes nothing;
unlinking a held lock splits it (documented): old handles keep the old lock.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import aplock
from tests.support import adversarial_workers as aw
from tests.support import workers
from tests.support.procs import SPAWN, running


def test_processes_opening_new_names_at_once_get_one_lock(lock_name: str) -> None:
    names = [f"{lock_name}.{i}" for i in range(12)]
    parties = 5
    start = SPAWN.Barrier(parties, timeout=60)
    pipes = [SPAWN.Pipe(duplex=False) for _ in range(parties)]
    procs = [
        SPAWN.Process(target=aw.open_race, args=(names, start, w), daemon=True) for _, w in pipes
    ]
    answers: dict[str, list[bool]] = {}
    try:
        for p in procs:
            p.start()
        for r, _ in pipes:
            for _ in names:
                assert r.poll(60)
                name, got = r.recv()
                answers.setdefault(name, []).append(got)
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
        for name in names:
            aplock.unlink(name)
    for name, got in answers.items():
        assert sorted(got) == [False] * (parties - 1) + [True], f"{name}: {got}"


CLOSE_RACE = """
import os, sys, threading, time
import aplock
name = sys.argv[1]
held_r, held_w = os.pipe()
go_r, go_w = os.pipe()
holder = os.fork()
if holder == 0:
    lock = aplock.Lock(name)
    lock.acquire()
    os.write(held_w, b"x")
    os.read(go_r, 1)
    lock.release()
    os._exit(0)
os.read(held_r, 1)
lock = aplock.Lock(name)
results = []
def wait():
    try:
        results.append(lock.acquire(timeout=5))
    except aplock.LockError as exc:
        results.append(type(exc).__name__)
def in_semaphore_wait():
    frame = sys._current_frames().get(waiter.ident)
    return frame is not None and frame.f_code.co_qualname in ("Handle.take", "FastHandle.take")
waiter = threading.Thread(target=wait)
waiter.start()
while not in_semaphore_wait():
    time.sleep(0.001)
lock.close()             # the only object for the name: the handle closes
waiter.join(10)
os.write(go_w, b"x")
os.waitpid(holder, 0)
print(results)
"""


def test_close_while_another_thread_waits_does_not_crash(lock_name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CLOSE_RACE), lock_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    assert proc.stdout.strip() == "['LockClosedError']", proc.stdout


def test_closing_other_objects_while_threads_churn(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    stop = threading.Event()
    errors: list[BaseException] = []
    entries = [0]

    def churn() -> None:
        try:
            while not stop.is_set():
                if lock.acquire(timeout=1):
                    entries[0] += 1
                    lock.release()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            other = aplock.Lock(lock_name)
            other.acquire(timeout=0.01) and other.release()  # type: ignore[func-returns-value]
            other.close()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert entries[0] > 0
    assert not lock.locked()


def test_unlink_while_held_splits_the_lock(lock_name: str) -> None:
    """Documented: after unlink, new openers get a new lock; old handles keep the old one."""
    lock = aplock.Lock(lock_name)
    lock.acquire()
    assert aplock.unlink(lock_name)
    # Objects that were open keep the old lock; a new object opens the new one, as a
    # new process does.
    new = aplock.Lock(lock_name)
    assert new.acquire(False) is True
    new.release()
    start, out = SPAWN.Event(), SPAWN.Queue()
    with running(workers.open_only, lock_name, start, out):
        start.set()
        got_elsewhere = out.get(timeout=60)
    assert got_elsewhere is True, "a new process got the old (held) lock"
    lock.release()
    lock.close()
    aplock.unlink(lock_name)  # the new process's objects
