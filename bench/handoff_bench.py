"""Metric 3: cross-process handoff latency, from ``release()`` to the waiter's wake-up.

Two processes pass one lock back and forth. In each round the holder waits until the
other process is parked in ``acquire()`` (a short sleep after a pipe message), stamps
the monotonic clock into shared memory and releases; the waiter stamps the clock as
soon as its ``acquire()`` returns. The difference is one handoff. Then the roles swap.
Both processes are pinned either to the same CPU or to two different CPUs.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from ._core import Case, Field, Metric, Mode, Rows, Target, ratio_target
from ._measure import cpus, forked, join_all, median, percentile, pin, shared_words, workdir
from ._sync_peers import NOTES, PEERS

if TYPE_CHECKING:
    from ._sync_peers import Context

NAME = "handoff"
SAME, TWO = "same CPU", "two CPUs"
#: Seconds the holder waits before releasing, so that the waiter is parked in the kernel.
PARK = 0.002
#: Rounds for peers whose waiters poll (each handoff then takes milliseconds).
POLLING_ROUNDS = 16


def cases(mode: Mode) -> list[Case]:
    variants = [SAME, TWO] if len(cpus()) >= 2 else [SAME]
    out = []
    for variant in variants:
        for key, peer in PEERS.items():
            rounds = min(mode.rounds, POLLING_ROUNDS) if peer.polls else mode.rounds
            out.append(Case(NAME, key, variant, {"rounds": rounds}))
    return out


def _player(
    peer_key: str,
    ctx: Context,
    me: int,
    cpu: int,
    rounds: int,
    inbox: int,
    outbox: int,
    words: memoryview,
) -> None:
    """One side of the ping-pong; ``words[0]`` is the release stamp, latencies follow."""
    pin(cpu)
    handle = PEERS[peer_key].open(ctx)
    acquire, release, clock = handle.acquire, handle.release, time.perf_counter_ns
    base = 1 + me * rounds

    def hold_then_release() -> None:
        time.sleep(PARK)
        words[0] = clock()
        release()
        os.read(inbox, 1)  # the other side has it

    def wait_then_acquire(i: int) -> None:
        acquire()
        words[base + i] = clock() - words[0]
        os.write(outbox, b"g")

    if me == 0:
        acquire()
        os.write(outbox, b"r")
        for i in range(rounds):
            hold_then_release()
            wait_then_acquire(i)
        release()
    else:
        os.read(inbox, 1)
        for i in range(rounds):
            wait_then_acquire(i)
            hold_then_release()


def measure(case: Case, tag: str) -> dict[str, float]:
    peer = PEERS[case.peer]
    rounds = int(case.params["rounds"])
    usable = cpus()
    pair = (usable[0], usable[0]) if case.variant == SAME else (usable[0], usable[1])
    a_to_b, b_to_a = os.pipe(), os.pipe()
    mm, words = shared_words(1 + 2 * rounds)
    with workdir(tag) as tmp:
        ctx = peer.prepare(tag, tmp)
        try:
            args = [
                (case.peer, ctx, 0, pair[0], rounds, b_to_a[0], a_to_b[1], words),
                (case.peer, ctx, 1, pair[1], rounds, a_to_b[0], b_to_a[1], words),
            ]
            with forked(_player, args) as procs:
                join_all(procs, timeout=60 + rounds * (PARK + 0.3))
            latencies = [words[1 + i] / 1000 for i in range(2 * rounds)]
        finally:
            peer.cleanup(ctx)
            for fd in (*a_to_b, *b_to_a):
                os.close(fd)
            words.release()
            mm.close()
    return {
        "us_median": median(latencies),
        "us_p90": percentile(latencies, 90),
        "handoffs": float(len(latencies)),
    }


def targets(rows: Rows) -> list[Target]:
    return [
        ratio_target(
            rows,
            NAME,
            f"handoff latency ({variant}) <= 1.2x raw posix_ipc",
            variant,
            "posix_ipc",
            "us_median",
            at_most=1.2,
        )
        for variant in (SAME, TWO)
        if (variant, "posix_ipc") in rows
    ]


METRIC = Metric(
    name=NAME,
    title="3. Cross-process handoff latency, release() to the waiter's return (us, lower is "
    "better)",
    fields=(
        Field("us_median", "median us", ".1f"),
        Field("us_p90", "p90 us", ".1f"),
        Field("handoffs", "handoffs", ".0f", agg="sum"),
    ),
    higher_is_better=False,
    cases=cases,
    measure=measure,
    targets=targets,
    notes=(
        *NOTES,
        f"the holder sleeps {PARK * 1000:.0f} ms before each release so that the "
        f"waiter is parked; polling peers run {POLLING_ROUNDS} rounds",
    ),
)
