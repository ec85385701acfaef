"""Kill-point drivers: SIGKILL (or SIGSTOP) a forked child at every N-th bytecode of one
operation of the lock protocol, then judge what it left as the next waiter would.

Run by ``tests/adversarial/test_killpoints.py`` in spawned processes (importable by
name); each driver reports through a file only, since its children are killed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import aplock
from aplock._core import core_of
from aplock._deadline import Deadline
from aplock._posix import handle as _handle
from aplock._posix import identity as _process
from aplock._posix import record as _state
from tests.support.adversarial_workers import reset

APLOCK_DIR = os.path.dirname(aplock.__file__)


def _trace_to_death(at: int, log: list[str] | None, sig: int = signal.SIGKILL) -> None:
    """Send *sig* to this process just before the *at*-th bytecode run inside aplock.

    With *log*, record where each bytecode is instead (and never signal).
    """
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "opcode":
            count += 1
            if log is not None:
                code = frame.f_code
                log.append(
                    f"{os.path.basename(code.co_filename)}:{frame.f_lineno} "
                    f"{code.co_name}@{frame.f_lasti}"
                )
            elif count == at:
                os.kill(os.getpid(), sig)
        return local

    def start(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename.startswith(APLOCK_DIR):
            frame.f_trace_opcodes = True
            return local
        return None

    sys.settrace(start)


@dataclass(frozen=True, slots=True)
class KillPoint:
    """What one SIGKILL left behind, and what the next waiter made of it."""

    op: str
    at: int
    where: str
    sem: int
    token: int
    holder: str  # "none", "detached", "dead", "live"
    outcome: str  # "free", "recovered", "repaired", "stuck", "completed", "BROKEN ..."
    seconds: float


def _fork(body: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            body()
        finally:
            os._exit(0)
    return pid


def _reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return status


def _dead_holder(lock: aplock.Lock, half_done: bool) -> None:
    """Leave *lock* held by a process that died (after its token, or just before)."""

    def die() -> None:
        h = lock._h
        assert isinstance(h, _handle.Handle)
        if half_done:
            h.sem.acquire(0)
            me = _process.identity()
            generation = h.words[_state.GENERATION_WORD] + 1
            _state.write_hold(h.mm, generation, me, time.time())
        else:
            lock.acquire()

    _reap(_fork(die))


def _holder_state(h: _handle.Handle) -> str:
    snap = h.snapshot()
    if snap.pid == 0:
        return "none"
    if snap.pid < 0:
        return "detached"
    return "dead" if _process.is_proven_dead(snap.holder) else "live"


OPS = ("acquire", "acquire_wait", "release", "release_other", "hand_off", "recover", "repair")
#: ``STUCK_AFTER`` in the kill-point drivers: nothing changes a dead child's half-done
#: step, so their waiters need not wait out the default before they repair it.
KILLPOINT_STUCK_AFTER = 0.05
#: How long a kill-point driver waits, as a waiter, for a lock that must stay taken
#: (15 recovery checks of 0.02 s, 6 times ``KILLPOINT_STUCK_AFTER``).
KILLPOINT_WAIT = 0.3


def _operation(
    op: str, lock: aplock.Lock, driver: int
) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(prepare, traced)`` for *op*: prepare runs in the child untraced, then traced."""
    h = lock._h
    assert isinstance(h, _handle.Handle)

    def nothing() -> None:
        pass

    def acquire() -> None:
        lock.acquire()

    def acquire_wait() -> None:
        core_of(lock).wait(Deadline.after(5), None)

    def hand_off() -> None:
        lock.hand_off(driver)

    def recover() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h.recover()

    def suspect() -> None:
        h._suspect = h._held_by()
        h._suspect_since = time.monotonic() - 10 * _handle.STUCK_AFTER

    table: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "acquire": (nothing, acquire),
        "acquire_wait": (nothing, acquire_wait),
        "release": (acquire, lock.release),
        "release_other": (nothing, lock.release),
        "hand_off": (acquire, hand_off),
        "recover": (nothing, recover),
        "repair": (suspect, recover),
    }
    return table[op]


def _setup(op: str, lock: aplock.Lock) -> None:
    """Bring *lock* (free) into the state that *op* starts from."""
    if op == "release_other":
        assert lock.acquire(timeout=5)  # held by the (live) driver
    elif op == "recover":
        _dead_holder(lock, half_done=False)
    elif op == "repair":
        _dead_holder(lock, half_done=True)


def _settle(op: str, at: int, where: str, lock: aplock.Lock) -> KillPoint:
    """Classify what the dead child left, then try to take the lock as the next waiter."""
    h = lock._h
    assert isinstance(h, _handle.Handle)
    sem, token = h.sem.value, h.token.value
    holder = _holder_state(h)
    me = os.getpid()

    def point(outcome: str, seconds: float = 0.0) -> KillPoint:
        return KillPoint(op, at, where, sem, token, holder, outcome, seconds)

    if sem + token > 1:
        return point("BROKEN: both semaphores posted")
    if sem == 1 and holder != "none":
        return point(f"BROKEN: free but the record names a {holder} holder")
    if holder == "live" and h.snapshot().pid == me:
        # The record names us: the child was releasing our acquisition, or handing
        # the lock to us. A release that had taken H is finished by the next waiter;
        # otherwise the lock is still ours, and our release must work.
        if token == 0 and lock.acquire(timeout=0.5):
            lock.release()
            return point("completed")
        try:
            lock.release()
        except aplock.LockNotHeldError:
            return point("BROKEN: the live holder could not release its lock")
        return point("handed-back")
    if holder in ("live", "detached") or (sem, token, holder) == (0, 0, "none"):
        # Nobody can be proven dead: a waiter must not get it, whatever it waits.
        if lock.acquire(timeout=KILLPOINT_WAIT):
            return point("BROKEN: acquired a lock whose holder is alive or unknown")
        reset(lock)
        return point("wedged-live" if holder == "live" else "stuck")
    bound = 3.0 + (_handle.STUCK_AFTER if token == 0 else 0.0)
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = lock.acquire(timeout=bound + 10)
    took = time.monotonic() - start
    if not got:
        reset(lock)
        return point("BROKEN: never recovered", took)
    snap = h.snapshot()
    warned = any(isinstance(w.message, aplock.AbandonedLockWarning) for w in caught)
    lock.release()
    if snap.pid != me or took > bound:
        return point(f"BROKEN: recovered as pid {snap.pid} after {took:.2f}s", took)
    if sem == 1:
        return point("free" if not warned else "BROKEN: warned for a free lock", took)
    return point(("repaired" if token == 0 else "recovered") if warned else "silent", took)


def _stopped(op: str, at: int, where: str, lock: aplock.Lock, child: int) -> KillPoint:
    """The child is frozen at bytecode *at*: wait for the lock as a waiter, thaw it, judge.

    A waiter must never take over from the frozen (live) child, and its timeout
    (``KILLPOINT_WAIT``) must hold even then. A helper thaws the child after a few
    seconds in any case, so that a waiter stuck behind it ends.
    """
    h = lock._h
    assert isinstance(h, _handle.Handle)
    sem, token, holder = h.sem.value, h.token.value, _holder_state(h)

    def thaw_later() -> None:
        time.sleep(4)
        os.kill(child, signal.SIGCONT)

    thawer = _fork(thaw_later)
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = lock.acquire(timeout=KILLPOINT_WAIT)
    took = time.monotonic() - start
    # Taking over from the child is robbery only while it lives: after a thaw it may
    # have finished its step and exited holding the lock, which is a plain recovery.
    robbed = [
        w.message
        for w in caught
        if isinstance(w.message, aplock.AbandonedLockWarning)
        and w.message.pid == child
        and not _process.is_proven_dead(_process.identity_of(child))
    ]
    if got:
        lock.release()
    os.kill(child, signal.SIGCONT)
    os.kill(thawer, signal.SIGKILL)
    _reap(thawer)
    _reap(child)
    after = _settle(op, at, where, lock)
    if robbed:
        outcome = "BROKEN: took the lock over from a frozen, live process"
    elif after.outcome.startswith("BROKEN"):
        outcome = after.outcome
    elif took > KILLPOINT_WAIT + 1.5:
        outcome = "overrun"  # the waiter's timeout did not hold
    else:
        outcome = "got" if got else "waited"
    return KillPoint(op, at, where, sem, token, holder, outcome, took)


def killpoints(name: str, op: str, stride: int, offset: int, out: str, stop: bool = False) -> None:
    """Kill (or freeze) a forked child at every *stride*-th bytecode of *op*.

    Writes one line per point to *out*. Runs in a fresh (spawned, single-threaded)
    process, so forking is safe.
    """
    warnings.simplefilter("ignore")
    _handle.STUCK_AFTER = KILLPOINT_STUCK_AFTER  # read at each use, here and in the forks
    lock = aplock.Lock(name, recovery_interval=0.02)
    driver = os.getpid()
    prepare, traced = _operation(op, lock, driver)
    # A dry run lists the bytecodes of the operation.
    _setup(op, lock)
    r, w = os.pipe()

    def dry() -> None:
        os.close(r)
        log: list[str] = []
        prepare()
        _trace_to_death(0, log)
        traced()
        sys.settrace(None)
        os.write(w, "\n".join(log).encode())

    pid = _fork(dry)
    os.close(w)
    with os.fdopen(r) as f:
        where = f.read().splitlines()
    _reap(pid)
    _settle(op, 0, "", lock)
    with open(out, "a") as f:
        f.write(f"# {op} {len(where)}\n")
    sig = signal.SIGSTOP if stop else signal.SIGKILL
    for at in range(1 + offset, len(where) + 1, stride):
        _setup(op, lock)

        def child(at: int = at) -> None:
            prepare()
            _trace_to_death(at, None, sig)
            traced()

        pid = _fork(child)
        _, status = os.waitpid(pid, os.WUNTRACED)
        if os.WIFSTOPPED(status):
            point = _stopped(op, at, where[at - 1], lock, pid)
        else:
            died = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            point = _settle(op, at, where[at - 1] if died else "(survived)", lock)
        with open(out, "a") as f:
            f.write(
                f"{point.op}\t{point.at}\t{point.where}\t{point.sem}{point.token}\t"
                f"{point.holder}\t{point.outcome}\t{point.seconds:.2f}\n"
            )
