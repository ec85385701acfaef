"""Metric 4: contended throughput of N processes on one lock, with a correctness check.

Each process loops until a common deadline: acquire, read a shared counter, write it
back plus one (a non-atomic read-modify-write that loses updates unless the lock
excludes), release. Reported: total acquisitions per second, lost updates (total
acquisitions minus the final counter: must be 0) and fairness (fewest / most
acquisitions of any one process).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from ._core import PURE_VARIANT, Case, Field, Metric, Mode, Rows, Target, ratio_target
from ._measure import race, shared_words, workdir
from ._sync_peers import NOTES, PEERS
from .sync_uncontended_bench import select_path

if TYPE_CHECKING:
    from ._sync_peers import Context

NAME = "contended"
COUNTS = (2, 4, 8)
COUNTER, STOP, OPS = 0, 1, 2  # word indices in the shared memory


def cases(mode: Mode) -> list[Case]:
    cases = [
        Case(NAME, peer, f"N={n}", {"processes": n, "duration": mode.duration})
        for n in COUNTS
        for peer in PEERS
    ]
    # aplock on its pure-Python path too (APLOCK_PURE=1), with the most processes.
    n = COUNTS[-1]
    params = {"processes": n, "duration": mode.duration, "pure": True}
    return [*cases, Case(NAME, "aplock", f"N={n}, {PURE_VARIANT}", params)]


def _contend(peer_key: str, ctx: Context, me: int, ready: int, go: int, words: memoryview) -> None:
    handle = PEERS[peer_key].open(ctx)
    acquire, release, clock = handle.acquire, handle.release, time.perf_counter_ns
    os.write(ready, b"r")
    os.read(go, 1)
    stop = words[STOP]
    ops = 0
    while clock() < stop:
        acquire()
        words[COUNTER] = words[COUNTER] + 1
        release()
        ops += 1
    words[OPS + me] = ops


def measure(case: Case, tag: str) -> dict[str, float]:
    peer = PEERS[case.peer]
    select_path(case)
    n = int(case.params["processes"])
    duration = float(case.params["duration"])
    mm, words = shared_words(OPS + n)
    with workdir(tag) as tmp:
        ctx = peer.prepare(tag, tmp)
        try:
            elapsed = race(_contend, (case.peer, ctx), n, words, STOP, duration, slack=60)
            ops = [words[OPS + i] for i in range(n)]
            counter = words[COUNTER]
        finally:
            peer.cleanup(ctx)
            words.release()
            mm.close()
    total = sum(ops)
    return {
        "ops_per_s": total / elapsed,
        "lost_updates": float(total - counter),
        "fairness": min(ops) / max(ops) if max(ops) else 0.0,
        "acquisitions": float(total),
    }


def targets(rows: Rows) -> list[Target]:
    out = [
        ratio_target(
            rows,
            NAME,
            "contended N=8 >= 0.6x raw posix_ipc ops/s",
            "N=8",
            "posix_ipc",
            "ops_per_s",
            at_least=0.6,
        ),
        ratio_target(
            rows,
            NAME,
            "contended N=8 fairness >= 0.8x raw posix_ipc's",
            "N=8",
            "posix_ipc",
            "fairness",
            at_least=0.8,
        ),
    ]
    lost = [
        rows[(f"N={n}", "aplock")]["lost_updates"] for n in COUNTS if (f"N={n}", "aplock") in rows
    ]
    out.append(
        Target(
            NAME,
            "contended: zero lost updates (N=2, 4, 8)",
            f"{sum(lost):.0f}" if lost else "n/a",
            (sum(lost) == 0) if lost else None,
        )
    )
    return out


METRIC = Metric(
    name=NAME,
    title="4. Contended throughput, N processes on one lock (acquisitions/s, higher is better)",
    fields=(
        Field("ops_per_s", "ops/s"),
        Field("lost_updates", "lost updates", agg="sum"),
        Field("fairness", "fairness", ".2f"),
        Field("acquisitions", "acquisitions", agg="sum"),
    ),
    higher_is_better=True,
    cases=cases,
    measure=measure,
    targets=targets,
    notes=(*NOTES, "fairness = fewest / most acquisitions of one process in the run"),
)
