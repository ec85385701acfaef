"""The ``aplock`` command, end to end as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

import aplock

from . import workers
from .procs import SPAWN, kill, running


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aplock", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def listed(name: str) -> dict[str, Any] | None:
    out = cli("list", "--json")
    assert out.returncode == 0, out.stderr
    return next((lock for lock in json.loads(out.stdout) if lock["name"] == name), None)


def test_list_and_show_a_held_lock(lock_name: str) -> None:
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        entry = listed(lock_name)
        assert entry is not None
        assert entry["locked"] is True
        assert entry["holder_pid"] == proc.pid
        assert entry["holder_alive"] is True
        assert entry["generation"] == 1
        assert entry["held_for"] >= 0
        assert proc.pid in entry["users"]
        assert entry["removable"] is False
        table = cli("list")
        assert table.returncode == 0
        assert "NAME" in table.stdout
        assert lock_name in table.stdout
        assert f"{proc.pid} (alive)" in table.stdout
        show = cli("show", lock_name)
        assert show.returncode == 0
        assert "held" in show.stdout
        kill(proc)
        proc.join(10)
        dead = json.loads(cli("show", lock_name, "--json").stdout)
        assert dead["holder_alive"] is False
        assert dead["removable"] is True
        assert "DEAD" in cli("show", lock_name).stdout


def test_show_missing_lock_exits_1(lock_name: str) -> None:
    out = cli("show", lock_name)
    assert out.returncode == 1
    assert "no lock named" in out.stderr


def test_clean_refuses_a_live_holder_unless_forced(lock_name: str) -> None:
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        refused = cli("clean", lock_name)
        assert refused.returncode == 1
        assert "refused" in refused.stdout
        assert "--force" in refused.stdout
        assert listed(lock_name) is not None
        forced = cli("clean", lock_name, "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        assert [e["name"] for e in json.loads(forced.stdout)["removed"]] == [lock_name]
        assert listed(lock_name) is None
        kill(proc)


def test_clean_removes_free_and_dead_locks_not_open_elsewhere(lock_name: str) -> None:
    free, dead = lock_name + ".free", lock_name + ".dead"
    aplock.Lock(free).close()
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, dead, acquired) as (proc,):
        assert acquired.wait(60)
        kill(proc)
        proc.join(10)
    out = cli("clean", free, dead, "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(e["name"] for e in json.loads(out.stdout)["removed"]) == sorted([free, dead])
    assert aplock.unlink(free) is False
    assert aplock.unlink(dead) is False


def test_clean_refuses_a_free_lock_that_a_process_has_open(lock_name: str) -> None:
    opened, stop = SPAWN.Event(), SPAWN.Event()
    with running(workers.keep_open, lock_name, opened, stop) as (proc,):
        assert opened.wait(60)
        out = cli("clean", lock_name)
        assert out.returncode == 1
        assert f"open in pid {proc.pid}" in out.stdout
        stop.set()


def test_usage_errors_exit_2() -> None:
    assert cli().returncode == 2
    assert cli("frobnicate").returncode == 2
    assert cli("--version").stdout.startswith("aplock ")


@pytest.mark.timeout(180)
def test_demo_shows_exclusion() -> None:
    out = cli("demo", "--rounds", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mutual exclusion held." in out.stdout
    assert "overlaps: 0" in out.stdout
    assert "acquired" in out.stdout


def test_repair_frees_a_stuck_lock_and_only_a_stuck_lock(lock_name: str) -> None:
    with running(workers.die_before_recording, lock_name) as (proc,):
        proc.join(30)
    entry = listed(lock_name)
    assert entry is not None
    assert entry["stuck"] is True
    assert "stuck" in cli("show", lock_name).stdout
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    assert lock.acquire(timeout=0.5) is False  # nobody recorded: no waiter can recover it
    out = cli("repair", lock_name, "--observe", "0.2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "repaired" in out.stdout
    assert lock.acquire(timeout=5)
    refused = cli("repair", lock_name, "--observe", "0.2")
    assert refused.returncode == 1
    assert "not stuck" in refused.stdout
    lock.release()
    assert cli("repair", lock_name + ".missing").returncode == 1
