"""``python -m aplock demo``, end to end as a subprocess (its argument check in process)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aplock._cli.command import main
from aplock._names import posix_names

SHM = "/dev/shm"

NO_TRIO = """
import sys


class _NoTrio:
    def find_spec(self, name, path=None, target=None):
        if name == "trio" or name.startswith("trio."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTrio())
"""


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aplock", "demo", *args],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
        env=env,
    )


def _demo_names(stdout: str) -> list[str]:
    """The lock names the demo says it uses."""
    return re.findall(r"lock '(aplock-demo\.[^']+)'", stdout)


def _left_in_shm(names: list[str]) -> list[str]:
    bases = [posix_names(name).base for name in names]
    return [e for e in os.listdir(SHM) if any(base in e for base in bases)]


def _check_timeline(stdout: str) -> None:
    """The header's columns start where the cells' do; generation is explained."""
    lines = stdout.splitlines()
    header = next(line for line in lines if "participant" in line and "generation" in line)
    cells = [line for line in lines if re.match(r"\s+\+\s*\d+\.\d+s ", line)]
    assert cells
    for column in ("participant", "event", "generation"):
        at = header.index(column)
        for line in cells:
            assert line[at - 1] == " ", (column, header, line)
            assert line[at] != " ", (column, header, line)
    assert "fencing token" in stdout


def _check_takeover(stdout: str) -> None:
    """A holder was SIGKILLed; a waiter took the lock over; every child is gone."""
    held = re.search(r"pid (\d+) took the lock \(generation (\d+)\)", stdout)
    assert held, stdout
    dead_pid, dead_generation = int(held[1]), int(held[2])
    assert "SIGKILL" in stdout
    took = re.search(r"pid (\d+), waiting for it, took it over ([\d.]+) s after the kill", stdout)
    assert took, stdout
    waiter_pid, seconds = int(took[1]), float(took[2])
    assert seconds < 5
    warned = re.search(
        r"AbandonedLockWarning: dead holder pid (\d+), its generation (\d+); "
        r"new generation (\d+)",
        stdout,
    )
    assert warned, stdout
    assert (int(warned[1]), int(warned[2])) == (dead_pid, dead_generation)
    assert int(warned[3]) == dead_generation + 1
    assert "dead holder taken over." in stdout
    for pid in (dead_pid, waiter_pid):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped: not even a zombie is left


@pytest.mark.timeout(180)
def test_demo_shows_exclusion_and_a_killed_holder_taken_over() -> None:
    out = demo("--rounds", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mutual exclusion held." in out.stdout
    assert "overlaps: 0" in out.stdout
    assert "trio" in out.stdout
    assert "skipped" not in out.stdout
    _check_timeline(out.stdout)
    _check_takeover(out.stdout)
    names = _demo_names(out.stdout)
    assert len(names) >= 2
    assert _left_in_shm(names) == []


@pytest.mark.timeout(180)
def test_demo_runs_without_trio(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(NO_TRIO)  # every process, children too
    path = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    blocked = subprocess.run(
        [sys.executable, "-c", "import trio"], capture_output=True, env=env, timeout=60, check=False
    )
    assert blocked.returncode != 0
    out = demo("--rounds", "1", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Trio is not installed: its part of the demo is skipped" in out.stdout
    assert "mutual exclusion held." in out.stdout
    assert "trio/task" not in out.stdout
    _check_timeline(out.stdout)
    _check_takeover(out.stdout)
    assert _left_in_shm(_demo_names(out.stdout)) == []


@pytest.mark.parametrize("rounds", ["0", "-1"])
def test_demo_refuses_zero_rounds(rounds: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--rounds", rounds]) == 2  # in this process: it starts nothing
    out, err = capsys.readouterr()
    assert "mutual exclusion held" not in out
    assert "--rounds must be at least 1" in err
