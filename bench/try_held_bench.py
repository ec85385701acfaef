"""Metric 2: ``acquire(block=False)`` on a lock that another process holds, in ns."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ._core import PURE_VARIANT, Case, Field, Metric, Mode, Rows, Target, ratio_target
from ._measure import forked, median, per_op_ns, workdir
from ._sync_peers import NOTES, PEERS
from .sync_uncontended_bench import select_path

if TYPE_CHECKING:
    from ._sync_peers import Context

NAME = "try_held"


def cases(mode: Mode) -> list[Case]:
    params = {"batch_seconds": mode.batch_seconds, "batches": mode.batches}
    # aplock on its compiled fast path (the default, where it is built), and once more
    # on its pure-Python path (APLOCK_PURE=1), side by side.
    pure = Case(NAME, "aplock", PURE_VARIANT, {**params, "pure": True})
    return [*(Case(NAME, peer, "", params) for peer in PEERS), pure]


def _hold(peer_key: str, ctx: Context, ready: int, done: int) -> None:
    """In a child: take the lock, say so, hold it until told, release it."""
    peer = PEERS[peer_key]
    handle = peer.open(ctx)
    handle.acquire()
    os.write(ready, b"h")
    os.read(done, 1)
    handle.release()


def measure(case: Case, tag: str) -> dict[str, float]:
    peer = PEERS[case.peer]
    select_path(case)
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    with workdir(tag) as tmp:
        ctx = peer.prepare(tag, tmp)
        try:
            with forked(_hold, [(case.peer, ctx, ready_w, done_r)]):
                try:
                    if os.read(ready_r, 1) != b"h":
                        raise RuntimeError("the holder process did not take the lock")
                    handle = peer.open(ctx)
                    if peer.try_once(handle):
                        raise RuntimeError("acquired a lock that another process holds")
                    samples = per_op_ns(
                        lambda n: peer.try_loop(handle, n),
                        case.params["batch_seconds"],
                        case.params["batches"],
                    )
                    if peer.try_once(handle):
                        raise RuntimeError("acquired a lock that another process holds")
                finally:
                    os.write(done_w, b"d")
        finally:
            peer.cleanup(ctx)
            for fd in (ready_r, ready_w, done_r, done_w):
                os.close(fd)
    return {"ns_per_try": median(samples), "best_ns_per_try": min(samples)}


def targets(rows: Rows) -> list[Target]:
    return [
        ratio_target(
            rows,
            NAME,
            "try-acquire of a held lock <= 1.5x multiprocessing.Lock",
            "",
            "mp.Lock",
            "ns_per_try",
            at_most=1.5,
        ),
    ]


METRIC = Metric(
    name=NAME,
    title="2. acquire(block=False) on a lock held by another process (ns per call, lower is "
    "better)",
    fields=(Field("ns_per_try", "ns/call"), Field("best_ns_per_try", "best ns/call", agg="min")),
    higher_is_better=False,
    cases=cases,
    measure=measure,
    targets=targets,
    notes=NOTES,
)
