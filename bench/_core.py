"""The types every metric module shares: modes, cases, fields, targets.

A metric module (``bench/<name>_bench.py``) defines one ``METRIC = Metric(...)``. The
runner asks it for its cases, runs each case in a fresh interpreter (``bench._worker``),
aggregates the repeats and asks it which targets the aggregate meets.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

#: The peer every ratio is taken from: ``aplock value / peer value``.
SUBJECT = "aplock"
#: The variant of aplock's rows on its pure-Python path (the others: its compiled path);
#: a metric with other variants names it ``<variant>, pure path``.
PURE_VARIANT = "pure path"

Agg = Literal["median", "sum", "max", "min"]
JSONValue = Any


@dataclass(frozen=True, slots=True)
class Mode:
    """How long and how often to measure.

    Attributes:
        name: ``full``, ``quick`` or ``smoke``.
        repeats: fresh processes per case; every reported figure is their median.
        batch_seconds: length of one timed batch of a micro-benchmark.
        batches: timed batches per process (their median is that process's figure).
        rounds: rounds of the round-based metrics (handoff, cancellation).
        duration: seconds each contended-throughput run lasts.
        case_timeout: seconds after which one case's process group is killed.
    """

    name: str
    repeats: int
    batch_seconds: float
    batches: int
    rounds: int
    duration: float
    case_timeout: float

    def scaled(self, value: float) -> float:
        """*value* (a full-mode size) scaled down for quicker modes."""
        return value * {"full": 1.0, "quick": 0.3, "smoke": 0.1}.get(self.name, 1.0)


MODES = {
    "full": Mode(
        "full",
        repeats=5,
        batch_seconds=0.1,
        batches=7,
        rounds=400,
        duration=1.0,
        case_timeout=180.0,
    ),
    "quick": Mode(
        "quick",
        repeats=1,
        batch_seconds=0.03,
        batches=3,
        rounds=60,
        duration=0.25,
        case_timeout=60.0,
    ),
    "smoke": Mode(
        "smoke",
        repeats=1,
        batch_seconds=0.005,
        batches=1,
        rounds=8,
        duration=0.05,
        case_timeout=30.0,
    ),
}


@dataclass(frozen=True, slots=True)
class Case:
    """One thing to measure in one fresh process: a metric, a peer, a variant."""

    metric: str
    peer: str
    variant: str = ""
    params: Mapping[str, JSONValue] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        """``(variant, peer)``: the row this case fills."""
        return (self.variant, self.peer)

    def to_json(self) -> dict[str, JSONValue]:
        """A JSON-able form (see ``from_json``)."""
        return {
            "metric": self.metric,
            "peer": self.peer,
            "variant": self.variant,
            "params": dict(self.params),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, JSONValue]) -> Case:
        """The case ``to_json`` described."""
        return cls(raw["metric"], raw["peer"], raw["variant"], dict(raw["params"]))


@dataclass(frozen=True, slots=True)
class Field:
    """One measured quantity of a metric.

    Attributes:
        key: its key in a case's result.
        label: column heading.
        fmt: format spec for the table.
        agg: how repeats are combined: ``median`` for timings, ``sum`` for counts that
            must be zero (lost updates, leaks), ``max`` for peaks.
    """

    key: str
    label: str
    fmt: str = ".0f"
    agg: Agg = "median"

    def combine(self, values: Sequence[float]) -> float:
        """Combine one value per repeat into the reported figure."""
        if self.agg == "sum":
            return float(sum(values))
        if self.agg == "max":
            return float(max(values))
        if self.agg == "min":
            return float(min(values))
        return float(statistics.median(values))

    def show(self, value: float | None) -> str:
        """*value* formatted for a table cell."""
        return "n/a" if value is None else format(value, self.fmt)


Rows = dict[tuple[str, str], dict[str, float]]
"""Aggregated figures: ``(variant, peer) -> {field key: value}``."""


@dataclass(frozen=True, slots=True)
class Target:
    """A target of the project, judged on the figures of one run."""

    metric: str
    text: str
    measured: str
    met: bool | None  # None: could not be judged (a case failed or was not run)
    note: str = ""

    @property
    def status(self) -> str:
        """``met``, ``MISSED`` or ``n/a``."""
        return "n/a" if self.met is None else ("met" if self.met else "MISSED")


@dataclass(frozen=True, slots=True)
class Metric:
    """What a metric module provides.

    Attributes:
        name: short identifier (``--only`` takes it).
        title: heading of its table.
        fields: the quantities its cases report; ``fields[0]`` is the primary one, whose
            ratio ``aplock/peer`` the table shows.
        higher_is_better: direction of the primary field (for reading the ratio).
        cases: the cases to run in a mode.
        measure: runs one case, in a fresh process; returns ``{field key: value}``
            (extra keys are kept in the JSON output).
        targets: judges the aggregated rows.
        notes: lines printed under the table (what the peers are configured as).
        available: ``None`` if the metric can run here, else why it is skipped.
        show_ratio: whether the table shows ``aplock/peer`` (not for counts that must
            be zero, such as leaks).
    """

    name: str
    title: str
    fields: tuple[Field, ...]
    higher_is_better: bool
    cases: Callable[[Mode], list[Case]]
    measure: Callable[[Case, str], dict[str, float]]
    targets: Callable[[Rows], list[Target]] = lambda rows: []
    notes: tuple[str, ...] = ()
    available: Callable[[], str | None] = lambda: None
    show_ratio: bool = True

    @property
    def primary(self) -> Field:
        """The field the ``aplock/peer`` ratio is taken on."""
        return self.fields[0]


def ratio(rows: Rows, variant: str, peer: str, key: str) -> float | None:
    """``aplock / peer`` for field *key* in *variant*, or ``None`` if either is missing."""
    mine = rows.get((variant, SUBJECT), {}).get(key)
    theirs = rows.get((variant, peer), {}).get(key)
    if mine is None or theirs is None or theirs == 0:
        return None
    return mine / theirs


def ratio_target(
    rows: Rows,
    metric: str,
    text: str,
    variant: str,
    peer: str,
    key: str,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
) -> Target:
    """A target of the form ``aplock/peer <= at_most`` (or ``>= at_least``).

    It is judged as ``aplock <= at_most * peer`` (or ``>=``), so that a peer's 0 (a
    fairness of 0 in a short run, say) still gives an answer.
    """
    mine = rows.get((variant, SUBJECT), {}).get(key)
    theirs = rows.get((variant, peer), {}).get(key)
    if mine is None or theirs is None:
        return Target(metric, text, "n/a", None)
    met = (at_most is None or mine <= at_most * theirs) and (
        at_least is None or mine >= at_least * theirs
    )
    shown = f"{mine / theirs:.2f}x" if theirs else f"{mine:.3g} (the peer's: 0)"
    return Target(metric, text, shown, met)


def value_target(
    rows: Rows,
    metric: str,
    text: str,
    variant: str,
    peer: str,
    key: str,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
    fmt: str = ".2f",
) -> Target:
    """A target on one figure of one row."""
    value = rows.get((variant, peer), {}).get(key)
    if value is None:
        return Target(metric, text, "n/a", None)
    met = (at_most is None or value <= at_most) and (at_least is None or value >= at_least)
    return Target(metric, text, format(value, fmt), met)
