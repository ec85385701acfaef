"""fork(): a child gets bookkeeping and a guard description of its own, whatever the
parent's other threads were doing at that instant.

A forked child shares its parent's open file descriptions, so an inherited guard
descriptor would share the parent's ``flock``: the child reopens it (and raises on use
if it cannot). Each case forks while another thread of the parent is inside the guard
or waiting for the lock, or forks twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

import aplock
from tests.support import adversarial_workers as aw
from tests.support import workers
from tests.support.procs import FORK, SPAWN, running, wait_until, waiting_for_flock


def fork_again(name: str, conn: Any) -> None:
    """A fork-context child: use the lock, then fork a grandchild that uses it too."""
    lock = aplock.Lock(name)
    with lock:
        pass
    pid = os.fork()
    if pid == 0:  # the grandchild
        try:
            with aplock.Lock(name):
                pass
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    conn.send(("grandchild exited", os.waitstatus_to_exitcode(status)))


def child_meets_parents_guard(name: str, conn: Any) -> None:
    """A fork-context child whose parent's thread held the guard at fork time."""
    lock = aplock.Lock(name)
    h = aw.handle_of(lock)
    with h.guard.held(block=False) as got:
        conn.send(("while parent holds", got))
    conn.recv()  # the parent has left the guard
    with h.guard.held(block=False) as got:
        conn.send(("after parent left", got))


@pytest.mark.timeout(60)
def test_a_forked_child_can_fork_again(lock_name: str) -> None:
    parent, child = FORK.Pipe(duplex=False)
    with running(fork_again, lock_name, child, ctx=FORK, grace=5) as (proc,):
        ok = parent.poll(5)
        if not ok:
            proc.kill()
        assert ok, "the forked child deadlocked in os.fork()"
        assert parent.recv() == ("grandchild exited", 0)


def test_fork_while_another_thread_is_inside_the_guard(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    lock.acquire()
    lock.hand_off(None)  # so that any release goes through the guard
    h = aw.handle_of(lock)
    entered, leave = threading.Event(), threading.Event()

    def sit_in_guard() -> None:
        with h.guard.held():
            entered.set()
            leave.wait(30)

    sitter = threading.Thread(target=sit_in_guard)
    sitter.start()
    assert entered.wait(30)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            signal.alarm(30)
            aplock.Lock(lock_name).release()  # waits for the parent's guard, then releases
            code = 0
        finally:
            os._exit(code)
    try:
        wait_until(lambda: waiting_for_flock(pid), what="the child to wait for the guard")
        assert lock.locked(), "the child got through a guard held by another process"
    finally:
        leave.set()
        sitter.join(30)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not lock.locked()


@pytest.mark.timeout(60)
def test_a_child_forked_while_a_parent_thread_holds_the_guard_is_excluded(
    lock_name: str,
) -> None:
    lock = aplock.Lock(lock_name)
    h = aw.handle_of(lock)
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with h.guard.held():
            inside.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(10)
        to_child, from_parent = FORK.Pipe()
        with running(child_meets_parents_guard, lock_name, from_parent, ctx=FORK) as _:
            assert to_child.poll(30)
            assert to_child.recv() == ("while parent holds", False)
            leave.set()
            holder.join(10)
            to_child.send("left")
            assert to_child.poll(30)
            assert to_child.recv() == ("after parent left", True)
    finally:
        leave.set()
        holder.join(10)


GUARD_THEN_FORK = """
import os, sys, threading, time, aplock
lock = aplock.Lock(sys.argv[1])
entered = threading.Event()
def sit_in_guard():
    with lock._h.guard.held():
        entered.set()
        time.sleep(600)
threading.Thread(target=sit_in_guard, daemon=True).start()
entered.wait(30)
child = os.fork()
if child == 0:                  # past its at-fork handlers: say so
    print("child", os.getpid(), flush=True)
    time.sleep(600)             # keeps every descriptor it inherited open
    os._exit(0)
time.sleep(600)
"""


def test_a_guard_held_by_a_killed_parent_is_free_while_its_forked_child_lives(
    lock_name: str,
) -> None:
    """A forked child gets a guard descriptor of its own: one inherited from a parent
    that dies inside the guard would otherwise keep the guard taken while the child lives."""
    lock = aplock.Lock(lock_name)
    h = aw.handle_of(lock)
    proc = subprocess.Popen(
        [sys.executable, "-c", GUARD_THEN_FORK, lock_name], stdout=subprocess.PIPE, text=True
    )
    child = 0
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline().split()[1])
        with h.guard.held(block=False) as got:
            assert not got, "the guard is free while the parent sits in it"
        proc.kill()
        proc.wait(30)
        with h.guard.held(block=False) as got:
            assert got, "the dead parent's guard stays held by its forked child"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if child:
            os.kill(child, signal.SIGKILL)  # an orphan now: init reaps it
        assert proc.stdout is not None
        proc.stdout.close()


FAILED_REOPEN = """
import os, sys, aplock
from aplock import errors
from aplock._posix import ipc as _posix
lock = aplock.Lock(sys.argv[1])
def cannot_reopen(name, fd, base):
    raise errors.LockUnavailableError(name, "reopening its guard after fork() failed")
_posix.reopen_guard = cannot_reopen
pid = os.fork()
if pid == 0:
    try:
        with lock._h.guard.held():
            os._exit(1)  # used the parent's guard description
    except errors.LockUnavailableError:
        os._exit(0)
    os._exit(2)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.timeout(60)
def test_a_child_that_cannot_reopen_its_guard_raises_instead_of_sharing_it(
    lock_name: str,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", FAILED_REOPEN, lock_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-500:]
    assert proc.stdout.split() == ["0"], proc.stdout


def test_fork_while_another_thread_waits(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    acquired, release = SPAWN.Event(), SPAWN.Event()
    with running(workers.hold, lock_name, acquired, release) as (holder,):
        assert acquired.wait(60)
        results: list[bool] = []
        waiter = threading.Thread(target=lambda: results.append(lock.acquire(timeout=30)))
        waiter.start()
        wait_until(lambda: aw.parked(waiter), what="the waiter to wait for the lock")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                signal.alarm(30)
                child = aplock.Lock(lock_name)
                if child.acquire(timeout=20):
                    child.release()
                    code = 0
            finally:
                os._exit(code)
        release.set()
        waiter.join(30)
        assert results == [True]
        lock.release()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        holder.join(30)
    assert not lock.locked()
