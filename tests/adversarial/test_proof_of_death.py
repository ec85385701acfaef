"""Who may be taken over: a live holder never, however it looks; a dead one always.

A stopped holder is alive. A record may name a process in another pid namespace, a pid
whose start time is unknown, or a pid reused by another process; a ``/proc`` mounted
with ``hidepid`` hides other users' processes from the waiter. Each case either must
never be taken over or must be, with the warning.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import warnings
from typing import Any

import pytest

import aplock
from aplock._posix import identity as _process
from aplock._posix import record as _state
from tests.support import adversarial_workers as aw
from tests.support import workers
from tests.support.procs import SPAWN, kill, leave_a_dead_holder, running

# -- stopped holders are never robbed ------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_stopped_holder_is_never_robbed_by_several_waiters(lock_name: str) -> None:
    acquired = SPAWN.Event()
    out: Any = SPAWN.Queue()
    with running(workers.hold_until_killed, lock_name, acquired) as (holder,):
        assert acquired.wait(60)
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGSTOP)
        try:
            # Each waits 6 recovery intervals of 0.25 s and more than 2 * STUCK_AFTER.
            with running(workers.try_acquire, lock_name, 1.5, out, count=4):
                results = [out.get(timeout=60) for _ in range(4)]
        finally:
            os.kill(holder.pid, signal.SIGCONT)
        assert [got for _, got, _ in results] == [False] * 4, results
        lock = aplock.Lock(lock_name)
        assert lock.info().holder_pid == holder.pid
        kill(holder)
        holder.join(10)
        with pytest.warns(aplock.AbandonedLockWarning):
            assert lock.acquire(timeout=30)
        lock.release()


# -- impostor records --------------------------------------------------------------------


def forge(lock: aplock.Lock, pid: int, start: int, ns: int) -> None:
    """Rewrite the holder of the current (held) acquisition, under the guard."""
    h = aw.handle_of(lock)
    snap = h.snapshot()
    with h.guard.held():
        _state.write_hold(
            h.mm, snap.generation, _process.Identity(pid, start, ns), snap.acquired_at
        )


@pytest.mark.timeout(60)
def test_impostor_records(lock_name: str) -> None:
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    acquired = SPAWN.Event()
    me = _process.identity()
    with running(workers.hold_until_killed, lock_name + ".other", acquired) as (other,):
        assert acquired.wait(60)
        assert other.pid is not None
        live = _process.identity_of(other.pid)
        dead = leave_a_dead_holder(lock_name + ".dead")
        never_taken = [
            ("a live pid whose start time is unknown", live.pid, 0, me.ns),
            ("a live pid", live.pid, live.start, me.ns),
            ("a live pid from another pid namespace", live.pid, live.start + 1, me.ns + 1),
            ("a dead pid from another pid namespace", dead, 1, me.ns + 1),
            ("detached", _state.DETACHED, 0, 0),
        ]
        for what, pid, start, ns in never_taken:
            assert lock.acquire(timeout=5)
            forge(lock, pid, start, ns)
            # Five recovery checks: each one judges the forged holder afresh.
            assert lock.acquire(timeout=0.25) is False, f"took over from {what}"
            lock.release()
        taken = [
            ("a live pid reused by another process", live.pid, live.start + 1, me.ns),
            ("a dead pid", dead, 1, me.ns),
            ("this process, with another start time", me.pid, me.start + 1, me.ns),
        ]
        for what, pid, start, ns in taken:
            assert lock.acquire(timeout=5)
            forge(lock, pid, start, ns)
            with pytest.warns(aplock.AbandonedLockWarning) as caught:
                assert lock.acquire(timeout=10), f"never took over from {what}"
            assert caught[0].message.pid == pid  # type: ignore[union-attr]
            lock.release()
        kill(other)
    aplock.unlink(lock_name + ".other")
    aplock.unlink(lock_name + ".dead")


# -- /proc hiding other users' processes ---------------------------------------------------

HIDEPID = """
import sys, time, warnings
import aplock
warnings.simplefilter("always")
lock = aplock.Lock(sys.argv[1], mode=0o666, recovery_interval=0.05)
try:
    with warnings.catch_warnings(record=True) as caught:
        got = lock.acquire(timeout=0.5)  # ten recovery checks
    print("acquired" if got else "waited", len(caught))
except BaseException as exc:
    print("raised", type(exc).__module__ + "." + type(exc).__name__)
"""


def can_hide_pids() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t proc -o hidepid=2 proc /proc"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def wait_as_nobody_with(option: str, name: str) -> str:
    """Run a waiter as user nobody in a mount namespace whose /proc has *option*."""
    script = (
        f"mount -t proc -o {option} proc /proc && exec setpriv --reuid=65534 "
        '--regid=65534 --clear-groups "$0" -c "$1" "$2"'
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, sys.executable, HIDEPID, name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


needs_hidepid = pytest.mark.skipif(
    not can_hide_pids(), reason="needs root, unshare, setpriv and mount -t proc"
)


@needs_hidepid
@pytest.mark.parametrize("option", ["hidepid=0", "hidepid=2", "hidepid=1"])
def test_another_users_live_holder_is_never_robbed(lock_name: str, option: str) -> None:
    lock = aplock.Lock(lock_name, mode=0o666)
    lock.acquire()
    try:
        outcome = wait_as_nobody_with(option, lock_name)
        assert outcome == "waited 0", f"live holder, waiter saw: {outcome}"
        assert lock.info().holder_pid == os.getpid()
    finally:
        h = aw.handle_of(lock)
        if h.snapshot().pid != os.getpid():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert lock.acquire(timeout=10)  # the robber exited holding it
        lock.release()
