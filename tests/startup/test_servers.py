"""The FastAPI start-up example under real uvicorn and gunicorn servers with 4 workers.

Each test checks, from the work's own journal, that the start-up work completed exactly
once, that no two runs of it overlapped, and that every other worker waited for it and
then skipped it.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tests.support.startup_server import EXAMPLE, SERVERS, Entry, check_journal, serving

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)

WORKERS = 4


def starts(entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if e["event"] == "start"]


@pytest.mark.parametrize("server", SERVERS)
def test_work_runs_once_while_workers_start(server: str, tmp_path: Path, lock_name: str) -> None:
    with serving(server, tmp_path, lock_name, seconds=0.5) as srv:
        entries = srv.wait_ready(WORKERS)
    done = check_journal(entries, {})
    (start,) = starts(entries)
    assert start["took_over_from"] is None
    assert done["pid"] == start["pid"]
    # The server and all its workers were stopped and reaped.
    assert srv.proc.returncode is not None
    assert not [pid for pid in {e["pid"] for e in entries} if _alive(pid)]


def test_rolling_restart_does_not_rerun_the_work(tmp_path: Path, lock_name: str) -> None:
    # uvicorn's SIGHUP starts a new worker and waits for it to be ready before it
    # stops an old one: old and new workers overlap, and the new ones skip the work.
    # Two workers show it; each more only adds a start-up to wait for, one at a time.
    workers = 2
    with serving("uvicorn", tmp_path, lock_name, seconds=0.5, workers=workers) as srv:
        before = srv.wait_ready(workers)
        old = {e["pid"] for e in before if e["event"] == "ready"}
        srv.proc.send_signal(signal.SIGHUP)

        def replaced(entries: list[Entry]) -> bool:
            ready = {e["pid"] for e in entries if e["event"] == "ready"}
            return len(ready - old) == workers and not any(_alive(pid) for pid in old)

        entries = srv.wait_for(replaced, "every worker to be replaced")
        srv.wait_ready(workers)
    check_journal(entries, {})
    assert len(starts(entries)) == 1
    assert [e["ran"] for e in entries if e["event"] == "ready"].count(True) == 1


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_every_runner_killed_until_one_completes(
    server: str, tmp_path: Path, lock_name: str
) -> None:
    # The first kill is a worker killed midway, whose work another completes; the last
    # run must last long enough for the kills to land first (a journal poll, 20 ms).
    with serving(server, tmp_path, lock_name, seconds=1.0) as srv:
        for round_ in range(1, 4):
            runs = srv.wait_for(_runs_started(round_), f"run {round_} to start")
            srv.kill(starts(runs)[-1]["pid"])
        entries = srv.wait_ready(WORKERS)
    check_journal(entries, srv.killed)
    runs = starts(entries)
    assert len(runs) == 4
    for earlier, later in itertools.pairwise(runs):
        assert later["took_over_from"] == earlier["pid"]


def test_journal_goes_to_the_temporary_directory_by_default(tmp_path: Path, lock_name: str) -> None:
    # Run from a clone, the example must not leave its journal in the working directory.
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "STARTUP_JOURNAL"}
    path = os.pathsep.join(filter(None, [str(EXAMPLE), env.get("PYTHONPATH")]))
    env.update(TMPDIR=str(tmp), STARTUP_LOCK=lock_name, PYTHONPATH=path)
    subprocess.run(
        [sys.executable, "-c", "import app; app.journal('probe')"],
        cwd=cwd,
        env=env,
        check=True,
        timeout=60,
    )
    assert list(cwd.iterdir()) == []
    (journal,) = tmp.iterdir()
    assert [json.loads(line)["event"] for line in journal.read_text().splitlines()] == ["probe"]


def _runs_started(count: int) -> Callable[[list[Entry]], bool]:
    return lambda entries: len(starts(entries)) >= count


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
