"""Metric 9: named semaphores, uncontended and with 8 processes on a value-3 semaphore.

Two variants, each reported in acquisitions per second (``acquire()`` + ``release()``
pairs), so that the ``aplock/peer`` ratio reads the same way in both:

- **uncontended**: one process, a free semaphore of value 3; the median of timed batches,
  also shown in ns per pair.
- **8 procs, value 3**: 8 processes loop until a common deadline: acquire, raise their
  own flag in shared memory, yield the CPU once (``os.sched_yield``: the others run while
  this one holds its permit, as they would while it did real work), count the processes
  inside (its largest value is the measured maximum concurrency, which must not exceed
  3), lower the flag, release. Also: fairness (fewest / most acquisitions of one
  process).

The count can miss holders but never invent one. A process's flag is a word only it
writes, made odd right after ``acquire()`` returns and even right before ``release()``.
The counter reads every flag twice, one pass after the other, and counts the flags that
were odd and unchanged in both: each of those processes was inside for the whole time
from its first read to its second, so all of them were inside together at the instant
between the two passes. (One pass alone would not do: a process preempted in the middle
of it can count one holder that left and another that came in after.) A count above 3
is therefore a real violation.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from typing import Any

import posix_ipc

import aplock

from ._core import Case, Field, Metric, Mode, Rows, Target, value_target
from ._measure import median, per_op_ns, race, shared_words, workdir

NAME = "semaphore"
VALUE = 3
PROCESSES = 8
UNCONTENDED = "uncontended"
CONTENDED = f"{PROCESSES} procs, value {VALUE}"
STOP, OPS, TOP, FLAGS = 0, 1, 1 + PROCESSES, 1 + 2 * PROCESSES  # word indices
FORK = multiprocessing.get_context("fork")


class SemPeer:
    """A cross-process counting semaphore under test.

    ``prepare`` creates it in the measuring process (before any fork) and returns its
    context; ``open`` gives a process its handle, with ``acquire()`` and ``release()``.
    """

    key = ""
    note = ""

    def prepare(self, tag: str, tmp: str) -> Any:
        """Create the semaphore for a case; return what ``open`` needs."""
        return f"{tag}.sem"

    def open(self, ctx: Any) -> Any:
        """This process's handle."""
        raise NotImplementedError

    def cleanup(self, ctx: Any) -> None:
        """Remove the case's OS objects."""


class AplockSemaphore(SemPeer):
    key = "aplock"
    note = f"aplock.Semaphore(name, {VALUE}): acquire() / release(), permits owned (the default)"
    cls: type[aplock.Semaphore] = aplock.Semaphore

    def prepare(self, tag: str, tmp: str) -> Any:
        name = super().prepare(tag, tmp)
        self.cls(name, VALUE).close()
        return name

    def open(self, ctx: Any) -> Any:
        return self.cls(ctx, VALUE)

    def cleanup(self, ctx: Any) -> None:
        aplock.unlink(ctx)


class AplockBounded(AplockSemaphore):
    key = "aplock.Bounded"
    note = f"aplock.BoundedSemaphore(name, {VALUE}): the same, and release() never exceeds it"
    cls = aplock.BoundedSemaphore


class MpSemaphore(SemPeer):
    key = "mp.Semaphore"
    note = f"multiprocessing.Semaphore({VALUE}) created before fork(), inherited by the children"

    def prepare(self, tag: str, tmp: str) -> Any:
        return FORK.Semaphore(VALUE)

    def open(self, ctx: Any) -> Any:
        return ctx


class PosixIpc(SemPeer):
    key = "posix_ipc"
    note = f"posix_ipc.Semaphore(name, O_CREX, initial_value={VALUE}): a bare kernel semaphore"

    def prepare(self, tag: str, tmp: str) -> Any:
        name = f"/{tag}.sem.raw"
        posix_ipc.Semaphore(name, posix_ipc.O_CREX, 0o600, VALUE).close()
        return name

    def open(self, ctx: Any) -> Any:
        return posix_ipc.Semaphore(ctx)

    def cleanup(self, ctx: Any) -> None:
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(ctx)


class Portalocker(SemPeer):
    key = "portalocker"
    note = (
        f"portalocker.BoundedSemaphore({VALUE}, name, directory=<scratch>, timeout=60): "
        "a lock file per slot; a waiter retries every 0.25 s (its default)"
    )

    def prepare(self, tag: str, tmp: str) -> Any:
        return (f"{tag}.sem", tmp)

    def open(self, ctx: Any) -> Any:
        import portalocker

        name, tmp = ctx
        return portalocker.BoundedSemaphore(VALUE, name=name, directory=tmp, timeout=60)


PEERS: dict[str, SemPeer] = {
    p.key: p for p in (AplockSemaphore(), AplockBounded(), MpSemaphore(), PosixIpc(), Portalocker())
}


def cases(mode: Mode) -> list[Case]:
    quiet = {"batch_seconds": mode.batch_seconds, "batches": mode.batches}
    busy = {"duration": mode.duration}
    return [
        *(Case(NAME, peer, UNCONTENDED, quiet) for peer in PEERS),
        *(Case(NAME, peer, CONTENDED, busy) for peer in PEERS),
    ]


def _pairs(handle: Any, n: int) -> None:
    acquire, release = handle.acquire, handle.release
    for _ in range(n):
        acquire()
        release()


def _uncontended(peer: SemPeer, ctx: Any, params: dict[str, Any]) -> dict[str, float]:
    handle = peer.open(ctx)
    samples = per_op_ns(lambda n: _pairs(handle, n), params["batch_seconds"], params["batches"])
    ns = median(samples)
    return {"ops_per_s": 1e9 / ns, "ns_per_pair": ns}


def _contend(peer_key: str, ctx: Any, me: int, ready: int, go: int, words: memoryview) -> None:
    handle = PEERS[peer_key].open(ctx)
    acquire, release, clock = handle.acquire, handle.release, time.perf_counter_ns
    pause = os.sched_yield
    flags = words[FLAGS : FLAGS + PROCESSES]
    mine = FLAGS + me
    os.write(ready, b"r")
    os.read(go, 1)
    stop = words[STOP]
    ops = top = 0
    while clock() < stop:
        acquire()
        words[mine] += 1  # odd: inside
        pause()  # let the others run while this one holds a permit, as real work would
        first, second = flags.tolist(), flags.tolist()
        inside = sum(1 for a, b in zip(first, second, strict=True) if a == b and a & 1)
        if inside > top:  # noqa: PLR1730 (max() would lengthen the section it measures)
            top = inside
        words[mine] += 1  # even: outside
        release()
        ops += 1
    words[OPS + me] = ops
    words[TOP + me] = top


def _contended(peer: SemPeer, ctx: Any, params: dict[str, Any]) -> dict[str, float]:
    duration = float(params["duration"])
    mm, words = shared_words(FLAGS + PROCESSES)
    try:
        elapsed = race(_contend, (peer.key, ctx), PROCESSES, words, STOP, duration, slack=120)
        ops = [words[OPS + i] for i in range(PROCESSES)]
        top = max(words[TOP + i] for i in range(PROCESSES))
    finally:
        words.release()
        mm.close()
    total = sum(ops)
    return {
        "ops_per_s": total / elapsed,
        "max_inside": float(top),
        "fairness": min(ops) / max(ops) if max(ops) else 0.0,
        "acquisitions": float(total),
    }


def measure(case: Case, tag: str) -> dict[str, float]:
    peer = PEERS[case.peer]
    with workdir(tag) as tmp:
        ctx = peer.prepare(tag, tmp)
        try:
            if case.variant == UNCONTENDED:
                return _uncontended(peer, ctx, dict(case.params))
            return _contended(peer, ctx, dict(case.params))
        finally:
            peer.cleanup(ctx)


def targets(rows: Rows) -> list[Target]:
    ours = [
        rows.get((CONTENDED, key), {}).get("max_inside") for key in ("aplock", "aplock.Bounded")
    ]
    seen = [top for top in ours if top is not None]
    bound = Target(
        NAME,
        f"semaphore, {CONTENDED}: never more than {VALUE} inside (Semaphore, BoundedSemaphore)",
        f"{max(seen):.0f}" if seen else "n/a",
        (max(seen) <= VALUE) if len(seen) == len(ours) else None,
    )
    reached = value_target(
        rows,
        NAME,
        f"semaphore, {CONTENDED}: {VALUE} inside at once is reached",
        CONTENDED,
        "aplock",
        "max_inside",
        at_least=VALUE,
        fmt=".0f",
    )
    return [bound, reached]


METRIC = Metric(
    name=NAME,
    title=(
        "9. Named semaphores: acquire() + release() per second, alone and with "
        f"{PROCESSES} processes on value {VALUE} (higher is better)"
    ),
    fields=(
        Field("ops_per_s", "acquisitions/s"),
        Field("ns_per_pair", "ns/pair", agg="median"),
        Field("max_inside", "max inside", agg="max"),
        Field("fairness", "fairness", ".2f"),
        Field("acquisitions", "acquisitions", agg="sum"),
    ),
    higher_is_better=True,
    cases=cases,
    measure=measure,
    targets=targets,
    notes=(
        *(f"{p.key}: {p.note}" for p in PEERS.values()),
        f"{CONTENDED}: each holder yields its CPU once inside (os.sched_yield)",
        "max inside = the most processes seen inside at once (flags in shared memory, "
        "read twice: never an overcount)",
        "fairness = fewest / most acquisitions of one process in the run",
    ),
)
