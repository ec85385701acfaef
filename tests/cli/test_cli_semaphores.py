"""The ``aplock`` command on semaphores: list, show, clean and repair, with real holders."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

import aplock
from tests.support import cli_semaphore_workers as sem_workers
from tests.support import workers
from tests.support.procs import SPAWN, kill, running

pytestmark = pytest.mark.timeout(90)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aplock", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def shown(name: str) -> dict[str, Any]:
    out = cli("show", name, "--json")
    assert out.returncode == 0, out.stderr
    entry: dict[str, Any] = json.loads(out.stdout)
    return entry


def listed(name: str) -> dict[str, Any] | None:
    out = cli("list", "--json")
    assert out.returncode == 0, out.stderr
    return next((e for e in json.loads(out.stdout) if e["name"] == name), None)


def test_list_and_show_a_semaphore_and_every_holder(lock_name: str) -> None:
    first, second, release = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    with running(sem_workers.hold_permits, lock_name, 4, False, 2, first, release) as (a,):
        assert first.wait(60)
        with running(sem_workers.hold_permits, lock_name, 4, False, 1, second, release) as (b,):
            assert second.wait(60)
            entry = listed(lock_name)
            assert entry is not None
            assert (entry["kind"], entry["value"], entry["free"]) == ("semaphore", 4, 1)
            assert entry["locked"] is False  # a permit is free: acquire() would not wait
            assert [(h["pid"], h["alive"]) for h in entry["holders"]] == [
                (a.pid, True),
                (a.pid, True),
                (b.pid, True),
            ]
            assert [h["generation"] for h in entry["holders"]] == [1, 2, 3]
            assert entry["generation"] == 3
            assert entry["stuck"] is False
            assert {a.pid, b.pid} <= set(entry["users"])
            assert entry["removable"] is False

            table = cli("list")
            assert table.returncode == 0, table.stderr
            (line,) = [line for line in table.stdout.splitlines() if lock_name in line]
            assert "semaphore" in line
            assert "1/4 free" in line
            assert f"{a.pid} (alive) x2, {b.pid} (alive)" in line

            text = cli("show", lock_name)
            assert text.returncode == 0, text.stderr
            assert "value 4, 1 free, 0 recovered from dead holders" in text.stdout
            holder_lines = text.stdout.split("PERMIT HOLDER", 1)[1].splitlines()[1:]
            assert [line.split()[:2] for line in holder_lines] == [
                [str(a.pid), "alive"],
                [str(a.pid), "alive"],
                [str(b.pid), "alive"],
            ]
            release.set()


def test_a_sigkilled_holder_is_shown_dead_and_repair_frees_its_permit(lock_name: str) -> None:
    first, second, release = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    with running(sem_workers.hold_permits, lock_name, 2, True, 1, first, release) as (alive,):
        assert first.wait(60)
        with running(sem_workers.hold_permits, lock_name, 2, True, 1, second) as (dead,):
            assert second.wait(60)
            kill(dead)
            dead.join(10)
        entry = shown(lock_name)
        assert entry["kind"] == "bounded semaphore"
        assert entry["free"] == 0
        assert entry["locked"] is True
        assert [(h["pid"], h["alive"]) for h in entry["holders"]] == [
            (alive.pid, True),
            (dead.pid, False),
        ]
        text = cli("show", lock_name).stdout
        assert f"{alive.pid} (alive), {dead.pid} (DEAD)" in text
        assert "0/2 free" in text

        refused = cli("clean", lock_name)
        assert refused.returncode == 1
        assert f"open in pid {alive.pid}" in refused.stdout

        repaired = cli("repair", lock_name)
        assert repaired.returncode == 0, repaired.stdout + repaired.stderr
        assert f"repaired {lock_name!r}: the permits of dead pid {dead.pid} are free again" in (
            repaired.stdout
        )
        after = shown(lock_name)
        assert (after["free"], after["recoveries"]) == (1, 1)
        assert [h["pid"] for h in after["holders"]] == [alive.pid]

        again = cli("repair", lock_name)
        assert again.returncode == 1
        assert "no permit is held by a dead process (1 held, 1 free)" in again.stdout

        # The permit it freed warns the acquisition that gets it, as a waiter's would.
        sem = aplock.BoundedSemaphore(lock_name, 2, recovery_interval=None)
        with pytest.warns(aplock.AbandonedLockWarning, match=f"pid {dead.pid}"):
            assert sem.acquire(block=False)
        sem.release()
        sem.close()
        release.set()


def test_clean_removes_semaphores_nobody_uses_and_refuses_live_holders(lock_name: str) -> None:
    idle, dead, closed = lock_name + ".idle", lock_name + ".dead", lock_name + ".closed"
    try:
        aplock.Semaphore(idle, 3).close()
        acquired = SPAWN.Event()
        with running(sem_workers.hold_permits, dead, 2, False, 2, acquired) as (proc,):
            assert acquired.wait(60)
            kill(proc)
            proc.join(10)
        held, release = SPAWN.Event(), SPAWN.Event()
        with running(sem_workers.hold_then_close, closed, 2, held, release) as (holder,):
            assert held.wait(60)
            entry = shown(closed)
            assert holder.pid not in entry["users"]  # it holds a permit but maps nothing
            assert entry["removable"] is False

            out = cli("clean", idle, dead, closed, "--json")
            assert out.returncode == 1, out.stdout + out.stderr
            report = json.loads(out.stdout)
            assert sorted(e["name"] for e in report["removed"]) == sorted([idle, dead])
            (refused,) = report["refused"]
            assert refused["name"] == closed
            assert refused["reason"] == (
                f"permits held by live pid {holder.pid} (use --force to remove anyway)"
            )
            assert aplock.unlink(idle) is False
            assert aplock.unlink(dead) is False
            assert listed(closed) is not None
            release.set()
        swept = cli("clean", closed)
        assert swept.returncode == 0, swept.stdout + swept.stderr
        assert f"removed {closed!r}" in swept.stdout
        assert aplock.unlink(closed) is False
    finally:
        for name in (idle, dead, closed):
            aplock.unlink(name)


def test_a_lock_and_a_semaphore_side_by_side(lock_name: str) -> None:
    pool = lock_name + ".pool"
    acquired = SPAWN.Event()
    try:
        sem = aplock.Semaphore(pool, 1)
        sem.release()
        sem.release()  # a Semaphore may be released above its value
        with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
            assert acquired.wait(60)
            out = cli("list", "--json")
            assert out.returncode == 0, out.stderr
            entries = {e["name"]: e for e in json.loads(out.stdout)}
            lock, semaphore = entries[lock_name], entries[pool]
            assert (lock["kind"], lock["value"], lock["free"]) == ("lock", None, None)
            assert [(h["pid"], h["alive"]) for h in lock["holders"]] == [(proc.pid, True)]
            assert (semaphore["kind"], semaphore["value"], semaphore["free"]) == (
                "semaphore",
                1,
                3,
            )
            assert semaphore["holders"] == []
            table = cli("list").stdout.splitlines()
            (lock_line,) = [line for line in table if lock_name in line and pool not in line]
            (pool_line,) = [line for line in table if pool in line]
            assert lock_line.split()[1:3] == ["lock", "held"]
            assert pool_line.split()[1:3] == ["semaphore", "3/1"]
            refused = cli("repair", pool)
            assert refused.returncode == 1
            assert "nothing to repair" in refused.stdout
            kill(proc)
        sem.close()
    finally:
        aplock.unlink(pool)
