"""Drivers that run inside their own pid namespace (``unshare -p -f``), for the tests of
identities: pid reuse, the same pid in another namespace, another namespace's ``/proc``.

Run as ``python -m tests.support.ns_driver MODE ARGS...`` from the repository root; the driver
is pid 1 of its namespace, chooses the pids of its children by writing
``/proc/sys/kernel/ns_last_pid`` (root only), reaps every child, and prints one JSON
line with what it saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from typing import Any

import aplock
from aplock._posix import handle as _handle

#: Exit codes of a child's release().
RELEASED, NOT_HELD = 0, 3
#: ``STUCK_AFTER`` in the drivers, so that a waiter that must not repair a half-done step
#: need not wait out the default to show it (read at each use).
STUCK_AFTER = 0.1
#: How long a driver's waiter waits for a lock it must not get: 16 recovery checks of
#: 0.05 s, 8 times ``STUCK_AFTER``.
MUST_NOT_GET = 0.8


def set_last_pid(pid: int) -> None:
    """Make the next child of this pid namespace get *pid* + 1."""
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid))


def fork_as(pid: int) -> int:
    """fork(), with the child getting *pid* in this pid namespace (0 in the child)."""
    set_last_pid(pid - 1)
    child = os.fork()
    if child == 0:
        if os.getpid() != pid:  # pragma: no cover - another process took the pid
            os._exit(97)
        return 0
    if child != pid:
        raise RuntimeError(f"wanted pid {pid}, got {child}")
    return child


def handle_of(lock: aplock.Lock) -> _handle.Handle:
    h = lock._h
    assert isinstance(h, _handle.Handle)
    return h


def release_paused(name: str, paused_fd: int, resume_fd: int) -> None:
    """Release *name*, pausing right after the release has taken the token ``H``.

    Writes ``p`` to *paused_fd* when paused and waits for a byte on *resume_fd*; writes
    ``e`` when release() has returned or raised. Exits with ``RELEASED``/``NOT_HELD``.
    """
    lock = aplock.Lock(name)
    token = handle_of(lock).token

    def hook(frame: Any, event: str, arg: Any) -> None:
        called = getattr(arg, "__name__", "")
        if event == "c_return" and getattr(arg, "__self__", None) is token and called == "acquire":
            sys.setprofile(None)
            os.write(paused_fd, b"p")
            os.read(resume_fd, 1)

    sys.setprofile(hook)
    try:
        lock.release()
        code = RELEASED
    except aplock.LockNotHeldError:
        code = NOT_HELD
    sys.setprofile(None)
    os.write(paused_fd, b"e")
    os._exit(code)


def die_holding(name: str) -> int:
    """Fork a child that acquires *name* and exits without releasing; return its pid."""
    pid = os.fork()
    if pid == 0:
        aplock.Lock(name).acquire()
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def judge_paused_release(name: str, paused_fd: int, resume_fd: int, wait: Any) -> dict[str, Any]:
    """Y is releasing a dead holder's lock and is paused: see what a waiter W does.

    *wait* reaps Y and returns its exit code.
    """
    paused = os.read(paused_fd, 1) == b"p"
    w = aplock.Lock(name, recovery_interval=0.05)
    h = handle_of(w)
    got_while_paused = w.acquire(timeout=MUST_NOT_GET)
    os.write(resume_fd, b"r")
    y_code = wait()
    got = got_while_paused or w.acquire(timeout=5.0)
    # While W holds the lock, nobody else may get it.
    second = os.fork()
    if second == 0:
        os._exit(1 if aplock.Lock(name).acquire(False) else 0)
    _, status = os.waitpid(second, 0)
    values = (h.sem.value, h.token.value)
    return {
        "paused": paused,
        "got_while_paused": got_while_paused,
        "got": got,
        "second_got_it": os.waitstatus_to_exitcode(status) == 1,
        "values_while_held": values,
        "releaser_exit": y_code,
    }


def reused_pid(name: str) -> dict[str, Any]:
    """X acquires and dies; Y, with X's pid, releases and pauses after taking ``H``."""
    x = die_holding(name)
    paused_r, paused_w = os.pipe()
    resume_r, resume_w = os.pipe()
    if fork_as(x) == 0:
        release_paused(name, paused_w, resume_r)

    def wait() -> int:
        return os.waitstatus_to_exitcode(os.waitpid(x, 0)[1])

    return {"dead_pid": x, **judge_paused_release(name, paused_r, resume_w, wait)}


def other_namespace(name: str) -> dict[str, Any]:
    """As ``reused_pid``, but Y has X's pid in a pid namespace of its own."""
    x = die_holding(name)
    paused_r, paused_w = os.pipe()
    resume_r, resume_w = os.pipe()
    cmd = [
        *("unshare", "-p", "-f", "--mount-proc"),
        *(sys.executable, "-m", "tests.support.ns_driver", "release-as", str(x), name),
        *(str(paused_w), str(resume_r)),
    ]
    proc = subprocess.Popen(cmd, pass_fds=(paused_w, resume_r))
    os.close(paused_w)
    os.close(resume_r)
    return {"dead_pid": x, **judge_paused_release(name, paused_r, resume_w, proc.wait)}


def release_as(pid: int, name: str, paused_fd: int, resume_fd: int) -> int:
    """In a new pid namespace: run ``release_paused`` as *pid*; return its exit code."""
    if fork_as(pid) == 0:
        release_paused(name, paused_fd, resume_fd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def foreign_proc(name: str, zombie: int) -> dict[str, Any]:
    """Without our own /proc: a live holder has the pid that /proc shows as a zombie."""
    held_r, held_w = os.pipe()
    done_r, done_w = os.pipe()
    if fork_as(zombie) == 0:
        lock = aplock.Lock(name)
        lock.acquire()
        os.write(held_w, b"h")
        os.read(done_r, 1)
        try:
            lock.release()
        except aplock.LockNotHeldError:
            os._exit(NOT_HELD)
        os._exit(RELEASED)
    os.read(held_r, 1)
    waiter = aplock.Lock(name, recovery_interval=0.05)
    info = waiter.info()
    robbed = waiter.acquire(timeout=MUST_NOT_GET)
    if robbed:
        waiter.release()
    os.write(done_w, b"d")
    code = os.waitstatus_to_exitcode(os.waitpid(zombie, 0)[1])
    return {
        "proc_is_ours": os.readlink("/proc/self") == str(os.getpid()),
        "holder_pid": info.holder_pid,
        "holder_alive": info.holder_alive,
        "robbed": robbed,
        "holder_exit": code,
    }


def main(argv: list[str]) -> int:
    warnings.simplefilter("ignore")
    _handle.STUCK_AFTER = STUCK_AFTER
    mode, *args = argv
    if mode == "release-as":
        pid, name, paused_fd, resume_fd = args
        return release_as(int(pid), name, int(paused_fd), int(resume_fd))
    try:
        if mode == "reused-pid":
            result = reused_pid(args[0])
        elif mode == "other-namespace":
            result = other_namespace(args[0])
        elif mode == "foreign-proc":
            result = foreign_proc(args[0], int(args[1]))
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        aplock.unlink(args[0])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
