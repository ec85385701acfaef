"""Timing loops, forked helper processes and scratch space for the metric modules."""

from __future__ import annotations

import contextlib
import gc
import mmap
import multiprocessing
import multiprocessing.process
import os
import shutil
import statistics
import tempfile
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

FORK = multiprocessing.get_context("fork")


def per_op_ns(loop: Callable[[int], object], batch_seconds: float, batches: int) -> list[float]:
    """Time ``loop(n)`` in *batches* batches of about *batch_seconds*; ns per operation.

    ``n`` is calibrated first so that one batch lasts about *batch_seconds*. The
    garbage collector is off while timing.
    """
    n = 64
    while True:  # calibrate (also warms up)
        start = time.perf_counter_ns()
        loop(n)
        elapsed = time.perf_counter_ns() - start
        if elapsed >= batch_seconds * 1e9 / 4 or n >= 1 << 26:
            break
        n *= 4
    n = max(1, int(n * batch_seconds * 1e9 / max(elapsed, 1)))
    results = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(batches):
            start = time.perf_counter_ns()
            loop(n)
            results.append((time.perf_counter_ns() - start) / n)
    finally:
        if gc_was:
            gc.enable()
    return results


def median(values: Sequence[float]) -> float:
    """The median (of a non-empty sequence)."""
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return float(ordered[index])


@contextlib.contextmanager
def workdir(tag: str) -> Iterator[str]:
    """A scratch directory for lock files, removed afterwards."""
    path = tempfile.mkdtemp(prefix=f"{tag}.")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def forked(
    target: Callable[..., object], args: Sequence[tuple[Any, ...]]
) -> Iterator[list[multiprocessing.process.BaseProcess]]:
    """Fork one child per argument tuple running ``target(*args)``; always reaped."""
    procs: list[multiprocessing.process.BaseProcess] = [
        FORK.Process(target=target, args=a, daemon=True) for a in args
    ]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            if p.pid is not None:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join(5)


def join_all(procs: Sequence[multiprocessing.process.BaseProcess], timeout: float) -> None:
    """Wait for every child to exit; raise if one fails or hangs."""
    end = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    hung = [p for p in procs if p.is_alive()]
    if hung:
        raise TimeoutError(f"{len(hung)} helper process(es) still running after {timeout} s")
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"helper process(es) failed with exit codes {failed}")


def race(
    target: Callable[..., object],
    head: tuple[Any, ...],
    n: int,
    words: memoryview,
    stop_word: int,
    duration: float,
    slack: float,
) -> float:
    """Run *n* forked ``target(*head, i, ready, go, words)`` for *duration*; the seconds run.

    Each child writes a byte to ``ready`` once set up and reads one from ``go`` to start;
    they run until ``words[stop_word]`` (a ``perf_counter_ns`` deadline) and must exit
    within *slack* seconds after it.
    """
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        args = [(*head, i, ready_w, go_r, words) for i in range(n)]
        with forked(target, args) as procs:
            for _ in range(n):
                os.read(ready_r, 1)
            start = time.perf_counter_ns()
            words[stop_word] = start + int(duration * 1e9)
            os.write(go_w, b"g" * n)
            join_all(procs, timeout=duration + slack)
        return (words[stop_word] - start) / 1e9
    finally:
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)


def shared_words(count: int) -> tuple[mmap.mmap, memoryview]:
    """Anonymous shared memory of *count* 64-bit words, inherited across fork."""
    mm = mmap.mmap(-1, 8 * count)
    return mm, memoryview(mm).cast("q")


def pin(cpu: int | None) -> None:
    """Pin this process to *cpu* (``None``: leave it)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0))
