"""Identities and dead releasers: pid reuse, other pid namespaces, a releaser killed mid-way.

Containers that share an IPC namespace but not a pid namespace are an ordinary
deployment; there the same pid means different processes, and ``/proc`` may be some
other namespace's. Each test here reproduces one way that broke the lock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest

import aplock
from aplock._posix import handle as _handle
from tests.support import workers
from tests.support.procs import SPAWN, running

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

needs_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to make pid namespaces",
)


def in_namespace(*args: str, mount_proc: bool = True) -> dict[str, object]:
    """Run ``tests.support.ns_driver`` as pid 1 of a new pid namespace; return its report."""
    cmd = ["unshare", "-p", "-f", *(["--mount-proc"] if mount_proc else [])]
    cmd += [sys.executable, "-m", "tests.support.ns_driver", *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"driver failed ({done.returncode}):\n{done.stderr}"
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def check_release_of_a_dead_holders_lock(result: dict[str, object]) -> None:
    assert result["paused"], "the releaser never took the token"
    assert not result["got_while_paused"], (
        "a waiter took the lock over while another process was releasing it"
    )
    assert result["got"], "the waiter never got the lock after the release"
    assert not result["second_got_it"], "two processes held the lock at once"
    assert result["values_while_held"] == [0, 1], f"semaphores {result['values_while_held']}"
    assert result["releaser_exit"] == 0, "the release of the dead holder's lock failed"


@needs_unshare
@pytest.mark.timeout(60)
def test_a_release_by_a_process_with_a_dead_holders_pid_is_not_the_holders(
    lock_name: str,
) -> None:
    """X acquires and dies; Y gets X's pid and releases, paused after taking ``H``.

    Y is not X: its release takes the guarded path, so a waiter cannot take the lock
    over under it, and exclusion holds after it resumes.
    """
    check_release_of_a_dead_holders_lock(in_namespace("reused-pid", lock_name))


@needs_unshare
@pytest.mark.timeout(60)
def test_a_release_from_another_pid_namespace_with_the_same_pid(lock_name: str) -> None:
    """As above, with Y in a pid namespace of its own, where it has X's pid."""
    check_release_of_a_dead_holders_lock(in_namespace("other-namespace", lock_name))


@needs_unshare
@pytest.mark.timeout(60)
def test_a_live_holder_is_not_robbed_where_proc_is_another_namespaces(
    lock_name: str,
) -> None:
    """``unshare -p -f`` without ``--mount-proc``: the holder is pid K in its namespace,
    while ``/proc/K`` is a zombie of the outer namespace. Its death cannot be proven
    from such a ``/proc``, so it is never taken over."""
    zombie = os.fork()
    if zombie == 0:
        os._exit(0)
    try:
        # The child is now a zombie in this namespace (not reaped until the end).
        result = in_namespace("foreign-proc", lock_name, str(zombie), mount_proc=False)
    finally:
        os.waitpid(zombie, 0)
    assert result["proc_is_ours"] is False, "the driver saw its own /proc"
    assert result["holder_pid"] == zombie
    assert not result["robbed"], "a waiter took the lock over from its live holder"
    assert result["holder_alive"] is not False, "info() reported a live holder as dead"
    assert result["holder_exit"] == 0, "the holder's release failed"


@pytest.mark.timeout(60)
def test_a_releaser_killed_after_taking_the_token_does_not_wedge_the_lock(
    lock_name: str,
) -> None:
    """X holds; Y releases it and is SIGKILLed right after taking ``H``.

    Y's release had begun: a waiter finishes it and gets the lock; X's own release
    afterwards finds the lock free (the second release of one acquisition).
    """
    acquired, release = SPAWN.Event(), SPAWN.Event()
    out = SPAWN.Queue()
    with running(workers.hold_then_release, lock_name, acquired, release, out):
        assert acquired.wait(30)
        with running(workers.release_and_die, lock_name, "took") as (y,):
            y.join(30)
        assert y.exitcode == -9
        lock = aplock.Lock(lock_name, recovery_interval=0.05)
        assert lock.acquire(timeout=3), "the lock stayed taken after its releaser died"
        h = lock._h
        assert isinstance(h, _handle.Handle)
        assert (h.sem.value, h.token.value) == (0, 1)
        lock.release()
        release.set()
        assert out.get(timeout=30) == "not held"


@pytest.mark.timeout(60)
def test_a_releaser_killed_as_its_trywait_returns_leaves_the_holder_able_to_release(
    lock_name: str,
) -> None:
    """As above, with Y killed the instant its trywait of ``H`` returned: it may not
    have recorded that it took ``H``, and the live holder may be releasing at that very
    moment, so waiters leave the lock to its holder. The holder's release works, and
    then a waiter gets the lock."""
    acquired, release = SPAWN.Event(), SPAWN.Event()
    out = SPAWN.Queue()
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    with running(workers.hold_then_release, lock_name, acquired, release, out):
        assert acquired.wait(30)
        with running(workers.release_and_die, lock_name, "trywait") as (y,):
            y.join(30)
        assert y.exitcode == -9
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no take-over from the live holder
            assert not lock.acquire(timeout=0.5), "a waiter took a live holder's lock"
        release.set()
        assert out.get(timeout=30) == "released", "the live holder could not release"
        assert lock.acquire(timeout=3), "the lock stayed taken after its holder released"
        lock.release()
