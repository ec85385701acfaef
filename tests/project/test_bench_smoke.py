"""The benchmark harness runs end to end and reports every metric (no timing asserted).

The smoke run starts in the background, at low priority, as soon as collection has
selected these tests, and runs while the other tests do.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import background

ROOT = Path(__file__).resolve().parents[2]

#: The metrics the harness must always report (a plugged-in metric may add more).
CORE_METRICS = (
    "sync_uncontended",
    "try_held",
    "handoff",
    "contended",
    "async_uncontended",
    "async_tasks",
    "cancellation",
)


def _rows(data: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = data["metrics"][metric]["rows"]
    return rows


def _aplock_values(data: dict[str, Any], metric: str) -> list[dict[str, float]]:
    return [row["values"] for row in _rows(data, metric) if row["peer"] == "aplock"]


def _smoke_job() -> background.Job:
    """``python -m bench --smoke``, started in the background once collection has selected
    a test that reads it (see ``tests.support.background``); its JSON goes to a file."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "bench", "--smoke", "--json", "{scratch}/smoke.json"]
    return background.job("smoke_run", argv, cwd=str(ROOT), env=env)


SMOKE = _smoke_job()


@pytest.fixture(scope="module")
def smoke_run() -> dict[str, Any]:
    """One ``python -m bench --smoke`` run, as its JSON output."""
    proc = SMOKE.wait(timeout=100)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "### Targets" in proc.stdout
    data: dict[str, Any] = json.loads((Path(SMOKE.scratch) / "smoke.json").read_text())
    return data


pytestmark = pytest.mark.timeout(120)


def test_reports_every_metric_with_a_ratio(smoke_run: dict[str, Any]) -> None:
    assert smoke_run["ok"], [m["errors"] for m in smoke_run["metrics"].values()]
    for metric in CORE_METRICS:
        rows = _rows(smoke_run, metric)
        peers = {row["peer"] for row in rows}
        assert "aplock" in peers, metric
        assert len(peers) > 1, metric
        assert all(row["values"] for row in rows), metric
        if smoke_run["metrics"][metric]["show_ratio"]:
            assert any(row["ratio"] is not None for row in rows), metric
    for name, metric_data in smoke_run["metrics"].items():
        assert metric_data["rows"] or metric_data["skipped"], name


def test_records_the_machine_and_versions(smoke_run: dict[str, Any]) -> None:
    machine = smoke_run["machine"]
    assert machine["cpus"] >= 1
    assert machine["python"]
    assert set(machine["versions"]) >= {"aplock", "posix_ipc", "anyio", "filelock"}


def test_aplock_loses_no_update_and_leaks_nothing(smoke_run: dict[str, Any]) -> None:
    contended = _aplock_values(smoke_run, "contended")
    assert len(contended) == 4  # N = 2, 4, 8 and, on the pure path, N = 8
    assert all(v["lost_updates"] == 0 and v["acquisitions"] > 0 for v in contended)
    cancellation = _aplock_values(smoke_run, "cancellation")
    assert len(cancellation) == 3
    assert all(v["leaks"] == 0 and v["overlaps"] == 0 for v in cancellation)
    tasks = _aplock_values(smoke_run, "async_tasks")
    assert all(v["overlaps"] == 0 for v in tasks)


def test_targets_are_judged(smoke_run: dict[str, Any]) -> None:
    targets = [t for m in smoke_run["metrics"].values() for t in m["targets"]]
    assert len(targets) >= 10
    assert all(t["met"] is not None for t in targets)


def test_a_ratio_target_is_judged_when_the_peer_gives_zero() -> None:
    from bench._core import ratio_target

    rows = {("N=8", "aplock"): {"f": 0.5}, ("N=8", "raw"): {"f": 0.0}}
    at_least = ratio_target(rows, "m", "t", "N=8", "raw", "f", at_least=0.8)
    at_most = ratio_target(rows, "m", "t", "N=8", "raw", "f", at_most=1.5)
    assert (at_least.met, at_most.met) == (True, False)
    rows[("N=8", "raw")] = {"f": 1.0}
    assert ratio_target(rows, "m", "t", "N=8", "raw", "f", at_least=0.8).met is False
    assert ratio_target(rows, "m", "t", "N=8", "raw", "f", at_most=0.5).measured == "0.50x"
