"""Chaos: threads, processes and event loops churn one lock while processes die and freeze.

Sync workers (several threads each) and AsyncLock workers (asyncio, uvloop, Trio; their
waits cancelled at random) take the lock with every kind of acquire and check mutual
exclusion in a shared scoreboard: who is inside, a read-sleep-write counter, and
strictly increasing fencing tokens. Meanwhile the test SIGKILLs random workers
(holders, waiters, releasers, recoverers: whatever they are doing at that instant) and
respawns them, and SIGSTOPs others for longer than the recovery interval.

Checked: nobody ever enters while a live process is inside (a stopped holder is never
robbed); tokens always grow; the lock never stays wedged. A kill inside the
documented window leaves it stuck (taken, no holder recorded): the test then checks
that the state is exactly that, frees it with ``repair_stuck`` and counts it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

import aplock
from aplock._posix import handle as _handle
from aplock._posix import identity as _process
from tests.support import adversarial_workers as aw
from tests.support.procs import SPAWN


@dataclass
class Tally:
    """What one chaos run did and saw."""

    kills: int = 0
    stops: int = 0
    stuck: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _spawn(target: Any, *args: Any) -> Any:
    proc = SPAWN.Process(target=target, args=args, daemon=True)
    proc.start()
    return proc


def chaos(name: str, tmp: str, seconds: float, seed: int) -> Tally:
    rng = random.Random(seed)
    path = os.path.join(tmp, "board")
    aw.create_board(path)
    lock = aplock.Lock(name)
    h = lock._h
    assert isinstance(h, _handle.Handle)
    kinds: list[tuple[Any, tuple[Any, ...]]] = [
        (aw.chaos_sync, (name, path, tmp, 1, 2)),
        (aw.chaos_sync, (name, path, tmp, 2, 2)),
        (aw.chaos_async, (name, path, tmp, 3, "asyncio", 2)),
        (aw.chaos_async, (name, path, tmp, 4, "uvloop", 2)),
        (aw.chaos_async, (name, path, tmp, 5, "trio", 2)),
    ]
    procs = [_spawn(target, *args) for target, args in kinds]
    tally = Tally()
    with aw.board(path) as words:
        try:
            progress, progress_at = words[aw.ACQUIRED], time.monotonic()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(rng.uniform(0.05, 0.4))
                i = rng.randrange(len(procs))
                action = rng.random()
                if action < 0.45:
                    procs[i].kill()
                    procs[i].join(30)
                    tally.kills += 1
                    target, args = kinds[i]
                    procs[i] = _spawn(target, *args[:3], rng.randrange(1 << 30), *args[4:])
                elif action < 0.65:
                    os.kill(procs[i].pid, signal.SIGSTOP)
                    time.sleep(rng.uniform(0.3, 0.8))  # beyond the recovery interval
                    os.kill(procs[i].pid, signal.SIGCONT)
                    tally.stops += 1
                if words[aw.ACQUIRED] != progress:
                    progress, progress_at = words[aw.ACQUIRED], time.monotonic()
                elif time.monotonic() - progress_at > 3.0:
                    diagnose(h, tally)
                    progress_at = time.monotonic()
        finally:
            words[aw.STOP] = 1
            for proc in procs:
                if proc.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGCONT)
            deadline = time.monotonic() + 60
            for proc in procs:
                proc.join(max(deadline - time.monotonic(), 0.1))
                if proc.is_alive():
                    tally.problems.append(f"worker {proc.pid} did not stop when told to")
                    proc.kill()
                    proc.join(10)
        if words[aw.VIOLATIONS] or words[aw.LEAKS]:
            tally.problems.append(
                f"{words[aw.VIOLATIONS]} exclusion violations, {words[aw.LEAKS]} leaks"
            )
        counts = {
            "acquired": words[aw.ACQUIRED],
            "timeouts": words[aw.TIMEOUTS],
            "cancelled": words[aw.CANCELLED],
        }
    for report in glob.glob(os.path.join(tmp, "report-*.txt")):
        with open(report) as f:
            tally.problems.extend(f.read().splitlines())
    if lock.locked():
        holder = lock.info().holder_pid
        snap = h.snapshot()
        if snap.pid > 0 and _process.is_proven_dead(snap.holder):
            assert lock.acquire(timeout=10)  # a worker killed last, holding it
            lock.release()
        elif (h.sem.value, h.token.value) == (0, 0) and h.repair_stuck(1.0):
            tally.stuck.append("at the end")
        else:
            tally.problems.append(f"locked after every worker stopped (holder {holder})")
    print(f"\nchaos: {tally.kills} kills, {tally.stops} stops, {counts}, stuck: {tally.stuck}")
    assert counts["acquired"] > 0
    return tally


def diagnose(h: _handle.Handle, tally: Tally) -> None:
    """No progress for a while: tell the documented stuck state from a real wedge."""
    snap = h.snapshot()
    state = (h.sem.value, h.token.value)
    if state == (0, 0) and (snap.pid == 0 or _process.is_proven_dead(snap.holder)):
        if snap.pid == 0 and h.repair_stuck(1.0):
            tally.stuck.append(f"generation {snap.generation}")
            return
        if snap.pid > 0:
            tally.problems.append(f"half-done by dead pid {snap.pid}, not repaired in 3 s")
            return
    if state == (0, 1) and snap.pid > 0 and not _process.is_proven_dead(snap.holder):
        return  # held by a live worker that is slow (the machine is busy): not a wedge
    tally.problems.append(f"no progress for 3 s: values {state}, record {snap}")


@pytest.mark.timeout(180)
def test_chaos(lock_name: str, tmp_path: os.PathLike[str]) -> None:
    tally = chaos(lock_name, str(tmp_path), seconds=2, seed=7)
    assert not tally.problems, tally.problems


@pytest.mark.stress
@pytest.mark.timeout(1200)
def test_chaos_stress(lock_name: str, tmp_path: os.PathLike[str]) -> None:
    tally = chaos(lock_name, str(tmp_path), seconds=240, seed=11)
    assert not tally.problems, tally.problems
