"""Metric 7: cancellation safety: waiters cancelled at random moments racing the release.

Each round a thread takes the lock and releases it after a random delay; meanwhile
a few tasks wait for the lock, each under ``anyio.move_on_after`` with its own random
deadline drawn from the same window, so that cancellations land before, during and
after the release. When every task is done, the lock must be free: an acquisition
that no task or thread owns is a leak. For the naive designs, a waiter thread still
blocked after its task was cancelled also counts as a leak: it will take the next
release and nobody will ever release it.
"""

from __future__ import annotations

import random
import threading
import time

import anyio
import anyio.lowlevel

from ._async_peers import BACKENDS, PEERS, AsyncPeer, Context, run
from ._core import Case, Field, Metric, Mode, Rows, Target
from ._measure import workdir

NAME = "cancellation"
WAITERS = 4
#: Release moments and cancel deadlines are drawn uniformly from [0, WINDOW) seconds.
WINDOW = 0.003


def cases(mode: Mode) -> list[Case]:
    return [
        Case(NAME, key, backend, {"rounds": mode.rounds, "seed": 5})
        for backend in BACKENDS
        for key, peer in PEERS.items()
        if peer.cross_process and backend in peer.backends
    ]


class _Rounds:
    """The rounds of one case, and what they observed."""

    def __init__(self, peer: AsyncPeer, ctx: Context, seed: int) -> None:
        self.peer, self.ctx = peer, ctx
        self.rng = random.Random(seed)
        self.stats = {"acquired": 0, "cancelled": 0, "leaks": 0, "overlaps": 0}
        self.inside = 0  # holders inside the critical section now (the holder thread too)
        self.mutex = threading.Lock()

    def enter(self) -> None:
        with self.mutex:
            self.inside += 1
            self.stats["overlaps"] += self.inside > 1

    def leave(self) -> None:
        with self.mutex:
            self.inside -= 1

    async def waiter(self, delay: float) -> None:
        with anyio.move_on_after(delay) as scope:
            async with self.peer.make(self.ctx):
                self.stats["acquired"] += 1
                self.enter()
                try:
                    await anyio.lowlevel.checkpoint()
                finally:
                    self.leave()
        self.stats["cancelled"] += scope.cancelled_caught

    def _hold(self, held: threading.Event, seconds: float) -> None:
        acquire, release = self.peer.holder(self.ctx)
        acquire()
        self.enter()
        held.set()
        time.sleep(seconds)
        self.leave()
        release()

    async def one(self) -> None:
        held = threading.Event()
        holder = threading.Thread(
            target=self._hold, args=(held, self.rng.uniform(0, WINDOW)), daemon=True
        )
        holder.start()
        if not held.wait(10):
            raise RuntimeError("the holder thread could not take the lock")
        async with anyio.create_task_group() as tg:
            for _ in range(WAITERS):
                tg.start_soon(self.waiter, self.rng.uniform(0, WINDOW))
        holder.join()
        self.stats["leaks"] += await self.peer.settle(self.ctx)


def measure(case: Case, tag: str) -> dict[str, float]:
    peer = PEERS[case.peer]
    rounds = int(case.params["rounds"])
    with workdir(tag) as tmp:
        ctx = peer.prepare(tag, tmp)
        try:
            state = _Rounds(peer, ctx, int(case.params["seed"]))

            async def main() -> None:
                for _ in range(rounds):
                    await state.one()

            run(case.variant, main)
        finally:
            peer.cleanup(ctx)
    return {
        "leaks": float(state.stats["leaks"]),
        "rounds": float(rounds),
        "cancelled": float(state.stats["cancelled"]),
        "acquired": float(state.stats["acquired"]),
        "overlaps": float(state.stats["overlaps"]),
    }


def targets(rows: Rows) -> list[Target]:
    leaks = [rows[(b, "aplock")]["leaks"] for b in BACKENDS if (b, "aplock") in rows]
    overlaps = [rows[(b, "aplock")]["overlaps"] for b in BACKENDS if (b, "aplock") in rows]
    if not leaks:
        return [Target(NAME, "cancellation: zero leaks", "n/a", None)]
    return [
        Target(
            NAME,
            "cancellation: zero leaks (asyncio, uvloop, Trio)",
            f"{sum(leaks):.0f}",
            sum(leaks) == 0,
        ),
        Target(
            NAME,
            "cancellation: never two holders at once",
            f"{sum(overlaps):.0f}",
            sum(overlaps) == 0,
        ),
    ]


METRIC = Metric(
    name=NAME,
    title=f"7. Cancellation safety: {WAITERS} waiters per round cancelled at random moments "
    "(leaks, must be 0)",
    fields=(
        Field("leaks", "leaks", agg="sum"),
        Field("rounds", "rounds", agg="sum"),
        Field("cancelled", "cancelled waits", agg="sum"),
        Field("acquired", "acquisitions", agg="sum"),
        Field("overlaps", "two holders", agg="sum"),
    ),
    higher_is_better=False,
    show_ratio=False,
    cases=cases,
    measure=measure,
    targets=targets,
    notes=(
        *(p.note for p in PEERS.values() if p.cross_process),
        f"release moments and cancel deadlines drawn from [0, {WINDOW * 1000:.0f}) ms",
    ),
)
