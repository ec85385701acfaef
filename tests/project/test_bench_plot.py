"""``python -m bench --plot`` draws a saved run into a PNG, and says so when it cannot."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench._plot import relative_time, shown_rows

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(120)


def _row(variant: str, peer: str, value: float, ratio: float | None) -> dict[str, Any]:
    return {"variant": variant, "peer": peer, "values": {"v": value}, "ratio": ratio}


def _metric(title: str, rows: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "title": title,
        "primary": "v",
        "higher_is_better": kw.get("higher_is_better", False),
        "show_ratio": kw.get("show_ratio", True),
        "fields": {"v": {"label": "v", "agg": "median"}},
        "rows": rows,
        "skipped": kw.get("skipped"),
    }


#: A small run as ``python -m bench`` saves it: a time with variants whose ratios span
#: decades, a throughput, a count that must be zero, and a skipped metric.
RESULTS: dict[str, Any] = {
    "command": "python -m bench --smoke",
    "mode": {"name": "smoke", "repeats": 1},
    "machine": {
        "cpus": 2,
        "cpus_usable": 2,
        "cpu_model": "test CPU",
        "python": "CPython 3.11",
        "revision": "0000000",
    },
    "seconds": 1.0,
    "ok": True,
    "metrics": {
        "latency": _metric(
            "1. latency (us, lower is better)",
            [
                _row("one CPU", "aplock", 40.0, None),
                _row("one CPU", "posix_ipc", 20.0, 2.0),
                _row("one CPU", "filelock", 40000.0, 0.001),
                _row("two CPUs", "aplock", 100.0, None),
                _row("two CPUs", "posix_ipc", 50.0, 2.0),
            ],
        ),
        "throughput": _metric(
            "2. throughput (ops/s, higher is better)",
            [
                _row("", "aplock", 100.0, None),
                _row("", "mp.Lock", 400.0, 0.25),
                _row("", "posix_ipc", 200.0, 0.5),
                _row("pure path", "aplock", 50.0, None),
            ],
            higher_is_better=True,
        ),
        "leaks": _metric(
            "3. leaks (must be 0)",
            [_row("", "aplock", 0.0, None), _row("", "to_thread", 12.0, None)],
            show_ratio=False,
        ),
        "absent": _metric("4. absent", [], skipped="not here"),
    },
}


def _bench(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``python -m bench ARGS`` from the repository root, after *prelude* (Python)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    code = f"{prelude}\nimport sys\nfrom bench.__main__ import main\nsys.exit(main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", head
    assert head[12:16] == b"IHDR", head
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.fixture
def saved_run(tmp_path: Path) -> Path:
    if importlib.util.find_spec("matplotlib") is None:
        if os.environ.get("CI"):
            pytest.fail("matplotlib (bench dependency group) must be installed in CI")
        pytest.skip("matplotlib is not installed (pip install --group bench)")
    path = tmp_path / "run.json"
    path.write_text(json.dumps(RESULTS))
    return path


def test_draws_a_saved_run_beside_its_results(saved_run: Path) -> None:
    done = _bench("--from", str(saved_run), "--plot")
    assert done.returncode == 0, done.stderr
    figure = saved_run.with_suffix(".png")
    assert f"figure written to {figure}" in done.stdout
    width, height = _png_size(figure)
    assert width >= 1000
    assert height >= 300


def test_draws_only_the_chosen_metrics_where_told(saved_run: Path) -> None:
    figure = saved_run.parent / "img" / "bench.png"
    done = _bench("--from", str(saved_run), "--only", "leaks", "--plot", str(figure))
    assert done.returncode == 0, done.stderr
    assert _png_size(figure)[0] >= 1000
    assert not saved_run.with_suffix(".png").exists()
    done = _bench("--from", str(saved_run), "--only", "handoff")
    assert done.returncode == 2
    assert "--only ['handoff']: not in" in done.stderr


def test_refuses_what_is_not_a_run(saved_run: Path) -> None:
    done = _bench("--from", str(saved_run), "--plot", str(saved_run.with_suffix(".svg")))
    assert done.returncode == 2
    assert "its path must end in .png" in done.stderr
    saved_run.write_text(json.dumps({"metrics": {}}))
    done = _bench("--from", str(saved_run))
    assert done.returncode == 2
    assert "not the results of a run of python -m bench" in done.stderr
    assert not saved_run.with_suffix(".png").exists()


def test_without_matplotlib_says_so_before_running_anything() -> None:
    # A None entry in sys.modules makes ``import matplotlib`` fail, as if not installed.
    done = _bench("--smoke", "--plot", prelude="import sys; sys.modules['matplotlib'] = None")
    assert done.returncode == 2
    assert "--plot needs matplotlib" in done.stderr
    assert "pip install --group bench" in done.stderr
    assert done.stdout == ""


def test_ratios_read_as_aplock_time_over_the_peer_time() -> None:
    latency, throughput = RESULTS["metrics"]["latency"], RESULTS["metrics"]["throughput"]
    assert relative_time(latency, latency["rows"][1]) == 2.0
    # 100 ops/s against 400: aplock takes four times as long per operation.
    assert relative_time(throughput, throughput["rows"][1]) == 4.0
    assert relative_time(latency, latency["rows"][0]) is None


def test_the_pure_path_is_drawn_against_the_same_peers() -> None:
    latency, throughput = RESULTS["metrics"]["latency"], RESULTS["metrics"]["throughput"]
    assert [(r["variant"], r["peer"]) for r in shown_rows(latency)] == [
        ("one CPU", "posix_ipc"),
        ("one CPU", "filelock"),
        ("two CPUs", "posix_ipc"),
    ]
    rows = shown_rows(throughput)
    assert [(r["variant"], r["peer"], r.get("pure", False)) for r in rows] == [
        ("", "mp.Lock", False),
        ("", "posix_ipc", False),
        ("pure path", "mp.Lock", True),
        ("pure path", "posix_ipc", True),
    ]
    # 50 ops/s on the pure path against 400 and 200: 8 and 4 times as long per operation.
    assert [relative_time(throughput, r) for r in rows[2:]] == [8.0, 4.0]
