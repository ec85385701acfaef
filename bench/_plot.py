"""``python -m bench --plot``: one figure of a run, a panel per metric.

A metric with a ratio gets one bar per peer (per variant): aplock's time per operation
divided by the peer's, on a log scale around 1, so that every panel reads the same way
whether its figure is a time or a throughput (< 1: aplock is faster). Where the run has
a row of aplock on its pure-Python path (variant ``pure path``, or ``N=8, pure path``
beside ``N=8``), the panel shows that path against the same peers too, in lighter bars.
A metric whose figure is a count that must be zero (such as leaks) gets the counts
themselves.

The figure is drawn from the JSON a run writes (``_report.to_json``), so a saved run can
be drawn again later. matplotlib is imported only here, and only when a figure is drawn.
"""

from __future__ import annotations

import importlib.util
import math
import textwrap
from typing import TYPE_CHECKING, Any

from ._core import PURE_VARIANT as PURE
from ._core import SUBJECT

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes

COLUMNS = 3
TIMES = "\N{MULTIPLICATION SIGN}"
SLOWER = "#c44e52"
FASTER = "#55a868"
COUNT = "#8c8c8c"
#: How opaque the bars of the pure path are.
PURE_ALPHA = 0.45


class PlotError(Exception):
    """The figure cannot be drawn: matplotlib is missing, or the results are not a run's."""


def require() -> None:
    """Raise ``PlotError`` unless matplotlib can be imported."""
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotError(
            "--plot needs matplotlib, which is not installed; it is in the bench "
            "dependency group: pip install --group bench (or: pip install matplotlib)"
        )


def relative_time(metric: dict[str, Any], row: dict[str, Any]) -> float | None:
    """aplock's time per operation divided by the row's peer's (``None`` if unknown).

    The run's ratio is ``aplock / peer`` of the metric's primary figure; for a throughput
    (higher is better) its inverse is the ratio of the times per operation.
    """
    ratio = row.get("ratio")
    if ratio is None or ratio <= 0 or not math.isfinite(ratio):
        return None
    return float(1 / ratio if metric["higher_is_better"] else ratio)


def _label(row: dict[str, Any]) -> str:
    return f"{row['variant']} · {row['peer']}" if row["variant"] else str(row["peer"])


def _times(value: float) -> str:
    return (f"{value:.2g}" if value < 10 else f"{value:,.0f}") + TIMES


def _positions(rows: list[dict[str, Any]]) -> list[float]:
    """One y position per row, top down, with a gap between variants."""
    ys: list[float] = []
    y = 0.0
    for i, row in enumerate(rows):
        if i and row["variant"] != rows[i - 1]["variant"]:
            y += 0.6
        ys.append(y)
        y += 1.0
    return ys


def _is_pure(row: dict[str, Any]) -> bool:
    return bool(row.get("pure"))


def _pure_rows(metric: dict[str, Any]) -> list[dict[str, Any]]:
    """aplock's pure path against the peers of the compiled path's variant.

    The ratio is made as the run makes aplock's: the pure row's primary figure over the
    peer's, in the same run.
    """
    key = metric["primary"]
    rows: list[dict[str, Any]] = metric["rows"]
    out = []
    for pure in rows:
        if pure["peer"] != SUBJECT or not pure["variant"].endswith(PURE):
            continue
        base = pure["variant"].removesuffix(PURE).removesuffix(", ")
        mine = (pure["values"] or {}).get(key)
        for row in rows:
            theirs = (row["values"] or {}).get(key)
            if row["variant"] != base or row["peer"] == SUBJECT or not mine or not theirs:
                continue
            variant = f"{base}, {PURE}" if base else PURE
            out.append({**row, "variant": variant, "ratio": mine / theirs, "pure": True})
    return out


def shown_rows(metric: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a panel draws: the peers (and the pure path's) for a ratio, every row
    for a count."""
    rows: list[dict[str, Any]] = metric["rows"]
    if not metric["show_ratio"]:
        return rows
    return [r for r in rows if r["peer"] != SUBJECT] + _pure_rows(metric)


def _rows_axis(ax: Axes, rows: list[dict[str, Any]], ys: list[float], extent: float) -> None:
    """Row labels top down (aplock's in bold); *extent* keeps bars alike across panels."""
    ax.set_yticks(ys, [_label(r) for r in rows], fontsize=8)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        if row["peer"] == SUBJECT:
            tick.set_fontweight("bold")
        if _is_pure(row):
            tick.set_fontstyle("italic")
    ax.set_ylim(extent - 0.4, -0.6)


def _ratio_panel(ax: Axes, metric: dict[str, Any], extent: float) -> None:
    rows = shown_rows(metric)
    values = [relative_time(metric, r) for r in rows]
    ys = _positions(rows)
    known = [v for v in values if v is not None]
    lo, hi = min([0.1, *known]), max([10.0, *known])
    pad = 10 ** (0.25 * math.log10(hi / lo) + 0.35)
    ax.set_xscale("log")
    ax.set_xlim(lo / pad, hi * pad)
    for y, value, row in zip(ys, values, rows, strict=True):
        if value is None:
            ax.text(1.0, y, "  n/a", va="center", ha="left", fontsize=8, color=COUNT)
            continue
        color = SLOWER if value > 1 else FASTER
        alpha = PURE_ALPHA if _is_pure(row) else 1.0
        ax.barh(y, value - 1, left=1.0, height=0.8, color=color, alpha=alpha)
        side = 1.12 if value >= 1 else 1 / 1.12
        ax.text(
            value * side,
            y,
            _times(value),
            va="center",
            ha="left" if value >= 1 else "right",
            fontsize=8,
        )
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("aplock's time per operation ÷ the peer's", fontsize=8)
    _rows_axis(ax, rows, ys, extent)


def _count_panel(ax: Axes, metric: dict[str, Any], extent: float) -> None:
    rows = shown_rows(metric)
    key = metric["primary"]
    values = [(r["values"] or {}).get(key) for r in rows]
    ys = _positions(rows)
    top = max([1.0, *(v for v in values if v is not None)])
    ax.set_xlim(0, top * 1.25)
    for y, value in zip(ys, values, strict=True):
        shown = "failed" if value is None else f"{value:,.0f}"
        if value:
            ax.barh(y, value, height=0.8, color=COUNT)
        ax.text((value or 0) + top * 0.02, y, shown, va="center", ha="left", fontsize=8)
    ax.set_xlabel(metric["fields"][key]["label"], fontsize=8)
    _rows_axis(ax, rows, ys, extent)


def _extent(metric: dict[str, Any]) -> float:
    """How many row heights a metric's panel needs."""
    ys = _positions(shown_rows(metric))
    return ys[-1] + 1 if ys else 1.0


def _panel(ax: Axes, metric: dict[str, Any], extent: float) -> None:
    ax.set_title(textwrap.fill(metric["title"], 52), fontsize=9, loc="left")
    ax.tick_params(axis="x", labelsize=8)
    if metric.get("skipped") or not metric["rows"]:
        ax.set_axis_off()
        ax.text(0, 0.5, f"skipped: {metric.get('skipped')}", fontsize=8, wrap=True)
        return
    if metric["show_ratio"]:
        _ratio_panel(ax, metric, extent)
    else:
        _count_panel(ax, metric, extent)


def _heading(data: dict[str, Any]) -> str:
    machine = data["machine"]
    mode = data["mode"]
    return (
        "aplock beside its peers, one run: aplock's time per operation ÷ each peer's "
        "(log scale; < 1: aplock is faster)\n"
        f"{data['command']} ({mode['name']}: {mode['repeats']} fresh process(es) per case, "
        f"{data['seconds']:.0f} s) · {machine['cpus']} CPUs ({machine['cpus_usable']} usable), "
        f"{machine['cpu_model']} · {machine['python']} · commit {machine['revision']}"
    )


def check(data: Any) -> None:
    """Raise ``PlotError`` unless *data* has the shape of a run's JSON."""
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise PlotError("not the results of a run of python -m bench: no 'metrics'")
    missing = [k for k in ("command", "mode", "machine", "seconds") if k not in data]
    if missing:
        raise PlotError(f"not the results of a run of python -m bench: no {missing}")
    if not data["metrics"]:
        raise PlotError("the results hold no metric")
    for name, metric in data["metrics"].items():
        keys = ("title", "primary", "higher_is_better", "show_ratio", "rows", "fields")
        absent = [k for k in keys if not isinstance(metric, dict) or k not in metric]
        if absent:
            raise PlotError(f"metric {name!r} of the results has no {absent}")


def plot(data: dict[str, Any], path: Path) -> Path:
    """Draw the run *data* (a run's JSON, see ``_report.to_json``) into the PNG *path*."""
    require()
    check(data)
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    metrics = list(data["metrics"].values())
    rows = math.ceil(len(metrics) / COLUMNS)
    extents = [
        max(_extent(m) for m in metrics[r * COLUMNS : (r + 1) * COLUMNS]) for r in range(rows)
    ]
    heights = [e + 4 for e in extents]
    fig = Figure(figsize=(18, 0.22 * sum(heights) + 1.2), layout="constrained")
    grid = fig.add_gridspec(rows, COLUMNS, height_ratios=heights)
    for i, metric in enumerate(metrics):
        ax = fig.add_subplot(grid[i // COLUMNS, i % COLUMNS])
        _panel(ax, metric, extents[i // COLUMNS])
    fig.suptitle(_heading(data), fontsize=10)
    handles = [
        Patch(color=FASTER, label="aplock faster than the peer"),
        Patch(color=SLOWER, label="aplock slower than the peer"),
    ]
    if any(_pure_rows(m) for m in metrics if m["show_ratio"]):
        handles.append(
            Patch(color=SLOWER, alpha=PURE_ALPHA, label="aplock's pure-Python path (italic rows)")
        )
    if any(not m["show_ratio"] for m in metrics):
        handles.append(Patch(color=COUNT, label="a count that must be 0 (aplock's rows in bold)"))
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path
