"""SIGKILL a process at every bytecode of every step of the protocol, and look at the wreck.

A driver process forks a child per kill point; the child runs one operation of the
protocol (acquire, a waiter's acquire, release, release by another process, hand-off,
recovery of a dead holder, repair of a half-done one) under a tracer that SIGKILLs it
just before the N-th bytecode executed inside aplock. The driver then classifies what
the dead child left behind and acts as the next waiter:

- ``free``: the kill came before the lock was taken or after it was released;
- ``recovered``: a complete acquisition by a dead process, taken over with a warning;
- ``repaired``: a half-done step by a dead process, taken over after ``STUCK_AFTER``
  (shortened in the drivers: nothing changes a dead process's step);
- ``stuck``: the documented window (lock taken, nobody recorded): no waiter may take it,
  and the operator's ``repair`` frees it;
- ``completed``: another process's release of the driver's acquisition was killed after
  it had taken the token and recorded so: the next waiter finishes the release and gets
  the lock;
- ``handed-back``: the record names the driver (the kill came before a release by
  another process had taken the token, at the instant it did, or after a hand-off to
  the driver): the driver's own release works.

Never acceptable: both semaphores posted, a free lock with a recorded holder, a waiter
taking a lock whose holder lives, a recovery beyond its bound, or one without a warning.

The kill points are the bytecodes of the pure-Python steps, so the drivers run on the
pure path (``APLOCK_PURE=1``); the compiled path does the same steps in C, where the
model's kills between steps stand for them (``model/README.md``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter

import pytest

import aplock
from aplock._posix import fastpath
from tests.support import killpoint_workers as kw
from tests.support.procs import running


@pytest.fixture(autouse=True)
def _pure_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drivers (spawned: they inherit the environment) trace the Python steps."""
    monkeypatch.setenv(fastpath.PURE_ENV, "1")


#: Normal runs visit every STRIDE-th bytecode (from a varying offset); stress runs all.
STRIDES = {
    "acquire": 8,
    "acquire_wait": 30,
    "release": 6,
    "release_other": 20,
    "hand_off": 40,
    "recover": 60,
    "repair": 40,
}
#: Outcomes allowed per operation (see the module docstring).
ALLOWED = {
    "acquire": {"free", "stuck", "repaired", "recovered"},
    "acquire_wait": {"free", "stuck", "repaired", "recovered"},
    "release": {"free", "stuck", "repaired", "recovered"},
    "release_other": {"free", "stuck", "handed-back", "completed"},
    "hand_off": {"repaired", "recovered", "handed-back"},
    "recover": {"repaired", "recovered"},
    "repair": {"repaired", "recovered"},
}


def explore(
    names: list[str], strides: dict[str, int], offset: int, out: str, stop: bool = False
) -> list[list[str]]:
    """Run one driver per operation (in parallel); return the table of kill points."""
    ops = [op for op in kw.OPS if op in strides]
    files = {op: os.path.join(out, f"{op}.tsv") for op in ops}
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(
                running(kw.killpoints, name, op, strides[op], offset % strides[op], files[op], stop)
            )[0]
            for name, op in zip(names, kw.OPS, strict=True)
            if op in ops
        ]
        for proc in procs:
            proc.join(1700)
    for proc in procs:
        assert proc.exitcode == 0, f"a kill-point driver failed (exit code {proc.exitcode})"
    rows: list[list[str]] = []
    for op in ops:
        with open(files[op]) as f:
            lines = [line.rstrip("\n") for line in f if not line.startswith("#")]
        assert lines, f"no kill point explored for {op}"
        rows.extend(line.split("\t") for line in lines)
    return rows


def check(rows: list[list[str]]) -> str:
    """Assert the rules of the module docstring; return a summary table."""
    summary: Counter[tuple[str, str]] = Counter()
    problems = []
    for op, at, where, values, holder, outcome, seconds in rows:
        summary[op, outcome] += 1
        if outcome not in ALLOWED[op]:
            problems.append(f"{op} killed at #{at} ({where}): {values} {holder} -> {outcome}")
        if outcome == "stuck" and holder != "none":
            problems.append(f"{op} #{at}: stuck with a {holder} holder recorded")
        del seconds
    table = "\n".join(f"{op:14} {outcome:12} {n}" for (op, outcome), n in sorted(summary.items()))
    assert not problems, "\n".join(problems) + "\n" + table
    return table


def names_for(lock_name: str) -> list[str]:
    return [f"{lock_name}.{op}" for op in kw.OPS]


def unlink_all(names: list[str]) -> None:
    """Remove the drivers' locks, and again if a straggler (a child thawed late) reopens one."""
    quiet = 0
    deadline = time.monotonic() + 15
    while quiet < 3 and time.monotonic() < deadline:
        found = [aplock.unlink(name) for name in names]
        quiet = 0 if any(found) else quiet + 1
        time.sleep(0.1)


@pytest.mark.timeout(300)
def test_sigkill_at_sampled_bytecodes(lock_name: str, tmp_path: os.PathLike[str]) -> None:
    names = names_for(lock_name)
    try:
        rows = explore(names, STRIDES, offset=os.getpid(), out=str(tmp_path))
    finally:
        unlink_all(names)
    print("\n" + check(rows))


@pytest.mark.stress
@pytest.mark.timeout(1800)
def test_sigkill_at_every_bytecode(lock_name: str, tmp_path: os.PathLike[str]) -> None:
    names = names_for(lock_name)
    try:
        rows = explore(names, dict.fromkeys(kw.OPS, 1), offset=0, out=str(tmp_path))
    finally:
        unlink_all(names)
    table = check(rows)
    print("\n" + table)
    windows: dict[str, list[str]] = {}
    for op, at, where, _values, _holder, outcome, _seconds in rows:
        if outcome == "stuck":
            windows.setdefault(f"{op} {outcome}", []).append(f"#{at} {where}")
    for key, points in windows.items():
        print(f"{key}: {len(points)} bytecodes, {points[0]} .. {points[-1]}")


# -- SIGSTOP instead of SIGKILL: a frozen process is alive and must never be robbed -----

#: Outcomes when the child is frozen at a bytecode: the waiter (timeout 0.3 s, many times
#: the drivers' recovery interval and ``STUCK_AFTER``) got a free lock, or waited in
#: vain. Never "overrun": the waiter's timeout must hold even while the child is frozen
#: inside the guard.
STOPPED = {"got", "waited", "free", "recovered", "repaired", "handed-back"}


def check_stopped(rows: list[list[str]]) -> str:
    summary: Counter[tuple[str, str]] = Counter()
    problems = []
    for op, at, where, values, holder, outcome, _seconds in rows:
        summary[op, outcome] += 1
        if outcome not in STOPPED:
            problems.append(f"{op} frozen at #{at} ({where}): {values} {holder} -> {outcome}")
    table = "\n".join(f"{op:14} {outcome:12} {n}" for (op, outcome), n in sorted(summary.items()))
    assert not problems, "\n".join(problems) + "\n" + table
    return table


@pytest.mark.timeout(300)
def test_sigstop_at_sampled_bytecodes(lock_name: str, tmp_path: os.PathLike[str]) -> None:
    names = names_for(lock_name)
    strides = {"acquire": 18, "release": 13, "release_other": 60, "repair": 130}
    try:
        rows = explore(names, strides, offset=os.getpid(), out=str(tmp_path), stop=True)
    finally:
        unlink_all(names)
    print("\n" + check_stopped(rows))


@pytest.mark.stress
@pytest.mark.timeout(3000)
def test_sigstop_at_every_bytecode(lock_name: str, tmp_path: os.PathLike[str]) -> None:
    names = names_for(lock_name)
    strides = {"acquire": 1, "acquire_wait": 2, "release": 1, "release_other": 1}
    strides |= {"hand_off": 2, "recover": 3, "repair": 3}
    try:
        rows = explore(names, strides, offset=0, out=str(tmp_path), stop=True)
    finally:
        unlink_all(names)
    print("\n" + check_stopped(rows))
