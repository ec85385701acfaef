"""Runs every case of every metric in a fresh process, repeats, aggregates, cleans up."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._worker import RESULT_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._core import Case, Metric, Mode, Rows, Target

ROOT = Path(__file__).resolve().parent.parent
SHM = Path("/dev/shm")


@dataclass
class MetricRun:
    """The outcome of one metric: raw samples per case, aggregated rows, targets."""

    module: str
    metric: Metric
    cases: list[Case]
    samples: dict[tuple[str, str], list[dict[str, float]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    rows: Rows = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0


def load(module: str) -> Metric:
    """The ``METRIC`` of a metric module."""
    metric: Metric = importlib.import_module(module).METRIC
    return metric


def sweep(tag: str) -> list[str]:
    """Remove whatever OS objects and temporary files a case with *tag* left behind."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(SHM):
            if tag in entry:
                with contextlib.suppress(FileNotFoundError):
                    (SHM / entry).unlink()
                    removed.append(entry)
    tmp = Path(tempfile.gettempdir())
    for path in tmp.glob(f"{tag}*"):
        shutil.rmtree(path, ignore_errors=True)
    return removed


def run_case(module: str, case: Case, tag: str, timeout: float) -> dict[str, Any]:
    """Run *case* in a fresh interpreter (its own process group); return its result."""
    spec = json.dumps({"module": module, "case": case.to_json(), "tag": tag})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(spec, timeout=timeout)
    except subprocess.TimeoutExpired:
        # The case's own children share its process group: kill them with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            if "error" in result:
                result["stderr"] = err[-2000:]
            return result
    return {"error": f"no result (exit code {proc.returncode})", "stderr": err[-2000:]}


def aggregate(metric: Metric, samples: dict[tuple[str, str], list[dict[str, float]]]) -> Rows:
    """Combine the repeats of every case: each field as it says, extra keys by median."""
    rows: Rows = {}
    by_key = {f.key: f for f in metric.fields}
    for key, runs in samples.items():
        if not runs:
            continue
        row: dict[str, float] = {}
        names = {k for run in runs for k in run}
        for name in sorted(names):
            values = [run[name] for run in runs if name in run]
            fld = by_key.get(name)
            row[name] = fld.combine(values) if fld else float(statistics.median(values))
        rows[key] = row
    return rows


def run_metric(
    module: str,
    mode: Mode,
    counter: list[int],
    progress: Callable[[str], None],
) -> MetricRun:
    """Run every case of one metric *mode.repeats* times, interleaving the peers."""
    metric = load(module)
    result = MetricRun(module, metric, [])
    result.skipped = metric.available()
    if result.skipped:
        progress(f"[{metric.name}] skipped: {result.skipped}")
        return result
    started = time.monotonic()
    result.cases = metric.cases(mode)
    for case in result.cases:
        result.samples[case.key] = []
    for rep in range(mode.repeats):
        for case in result.cases:
            counter[0] += 1
            tag = f"apb{os.getpid()}n{counter[0]:05d}"
            try:
                outcome = run_case(module, case, tag, mode.case_timeout)
            finally:
                left = sweep(tag)
            label = f"{case.peer}" + (f" [{case.variant}]" if case.variant else "")
            if left:
                result.errors.append(f"{label}: left OS objects behind: {left}")
            if "error" in outcome:
                msg = f"{label}: {outcome['error']}"
                result.errors.append(msg)
                progress(f"[{metric.name}] {rep + 1}/{mode.repeats} {msg}")
                if outcome.get("stderr"):
                    progress(outcome["stderr"].rstrip())
                continue
            values: dict[str, float] = outcome["values"]
            result.samples[case.key].append(values)
            primary = metric.primary
            shown = primary.show(values.get(primary.key))
            progress(f"[{metric.name}] {rep + 1}/{mode.repeats} {label}: {primary.label} {shown}")
    result.rows = aggregate(metric, result.samples)
    result.targets = metric.targets(result.rows)
    result.seconds = time.monotonic() - started
    return result


def run_all(
    modules: Sequence[str],
    mode: Mode,
    progress: Callable[[str], None],
    on_metric: Callable[[MetricRun], None],
) -> list[MetricRun]:
    """Run every metric module in order; call *on_metric* as each one finishes."""
    counter = [0]
    runs = []
    for module in modules:
        run = run_metric(module, mode, counter, progress)
        on_metric(run)
        runs.append(run)
    return runs
