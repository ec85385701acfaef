"""Metric 1: an uncontended ``acquire()`` + ``release()`` pair, in ns."""

from __future__ import annotations

import os

from ._core import PURE_VARIANT, Case, Field, Metric, Mode, Rows, Target, ratio_target
from ._measure import median, per_op_ns, workdir
from ._sync_peers import NOTES, PEERS

NAME = "sync_uncontended"


def select_path(case: Case) -> None:
    """Put this case's process (and its children) on aplock's pure path if it asks."""
    if case.params.get("pure"):
        os.environ["APLOCK_PURE"] = "1"  # before the case opens its locks


def cases(mode: Mode) -> list[Case]:
    params = {"batch_seconds": mode.batch_seconds, "batches": mode.batches}
    # aplock on its compiled fast path (the default, where it is built), and once more
    # on its pure-Python path (APLOCK_PURE=1), side by side.
    pure = Case(NAME, "aplock", PURE_VARIANT, {**params, "pure": True})
    return [*(Case(NAME, peer, "", params) for peer in PEERS), pure]


def measure(case: Case, tag: str) -> dict[str, float]:
    peer = PEERS[case.peer]
    select_path(case)
    with workdir(tag) as tmp:
        ctx = peer.prepare(tag, tmp)
        try:
            handle = peer.open(ctx)
            samples = per_op_ns(
                lambda n: peer.pair_loop(handle, n),
                case.params["batch_seconds"],
                case.params["batches"],
            )
        finally:
            peer.cleanup(ctx)
    return {"ns_per_pair": median(samples), "best_ns_per_pair": min(samples)}


def targets(rows: Rows) -> list[Target]:
    return [
        ratio_target(
            rows,
            NAME,
            "sync uncontended pair <= 1.5x raw posix_ipc",
            "",
            "posix_ipc",
            "ns_per_pair",
            at_most=1.5,
        ),
    ]


METRIC = Metric(
    name=NAME,
    title="1. Sync uncontended acquire() + release() (ns per pair, lower is better)",
    fields=(Field("ns_per_pair", "ns/pair"), Field("best_ns_per_pair", "best ns/pair", agg="min")),
    higher_is_better=False,
    cases=cases,
    measure=measure,
    targets=targets,
    notes=NOTES,
)
