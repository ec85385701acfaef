"""Tables (Markdown, so a run can be pasted into ``docs/benchmarks.md``) and JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core import SUBJECT, Mode, ratio

if TYPE_CHECKING:
    from ._runner import MetricRun


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(header), rule, *(line(r) for r in body)])


def _order(run: MetricRun) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for case in run.cases:
        seen.setdefault(case.key, None)
    return list(seen)


def metric_text(run: MetricRun) -> str:
    """One metric's table, with the ``aplock/peer`` ratio of its primary figure."""
    metric = run.metric
    lines = [f"### {metric.title}", ""]
    if run.skipped:
        return "\n".join([*lines, f"skipped: {run.skipped}", ""])
    with_variant = any(case.variant for case in run.cases)
    header = (["variant"] if with_variant else []) + ["peer"]
    header += [f.label for f in metric.fields]
    if metric.show_ratio:
        header.append(f"{SUBJECT}/peer")
    body = []
    for variant, peer in _order(run):
        row = run.rows.get((variant, peer))
        cells = ([variant] if with_variant else []) + [peer]
        if row is None:
            cells += ["failed"] * len(metric.fields)
        else:
            cells += [f.show(row.get(f.key)) for f in metric.fields]
        if metric.show_ratio:
            r = ratio(run.rows, variant, peer, metric.primary.key)
            cells.append("" if peer == SUBJECT else ("n/a" if r is None else f"{r:.2f}"))
        body.append(cells)
    lines.append(_table(header, body))
    if metric.notes:
        lines += ["", *(f"- {n}" for n in metric.notes)]
    if run.errors:
        lines += ["", *(f"- error: {e}" for e in run.errors)]
    return "\n".join([*lines, ""])


def targets_text(runs: list[MetricRun]) -> str:
    """Every target with its measured figure and whether it is met."""
    body = [[t.text, t.measured, t.status] for run in runs for t in run.targets]
    if not body:
        return ""
    return "### Targets\n\n" + _table(["target", "measured", "status"], body) + "\n"


def to_json(
    runs: list[MetricRun], mode: Mode, machine: dict[str, Any], command: str, seconds: float
) -> dict[str, Any]:
    """The whole run as JSON-able data."""
    metrics: dict[str, Any] = {}
    for run in runs:
        metric = run.metric
        rows = []
        for variant, peer in _order(run):
            values = run.rows.get((variant, peer))
            r = ratio(run.rows, variant, peer, metric.primary.key)
            rows.append(
                {
                    "variant": variant,
                    "peer": peer,
                    "values": values,
                    "ratio": None if peer == SUBJECT or not metric.show_ratio else r,
                    "samples": run.samples.get((variant, peer), []),
                }
            )
        metrics[metric.name] = {
            "module": run.module,
            "title": metric.title,
            "primary": metric.primary.key,
            "higher_is_better": metric.higher_is_better,
            "show_ratio": metric.show_ratio,
            "fields": {f.key: {"label": f.label, "agg": f.agg} for f in metric.fields},
            "rows": rows,
            "targets": [
                {"text": t.text, "measured": t.measured, "met": t.met, "note": t.note}
                for t in run.targets
            ],
            "errors": run.errors,
            "skipped": run.skipped,
            "seconds": round(run.seconds, 2),
        }
    return {
        "command": command,
        "mode": {"name": mode.name, "repeats": mode.repeats},
        "machine": machine,
        "seconds": round(seconds, 1),
        "metrics": metrics,
        "ok": all(not run.errors for run in runs),
    }
