"""Helpers to run real child processes in tests: spawned by name, always reaped."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.context
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SPAWN = mp.get_context("spawn")
FORK = mp.get_context("fork")


@contextmanager
def running(
    target: Callable[..., Any],
    *args: Any,
    ctx: multiprocessing.context.BaseContext = SPAWN,
    count: int = 1,
    grace: float = 10.0,
) -> Iterator[list[multiprocessing.process.BaseProcess]]:
    """Start *count* processes running ``target(*args)``; reap them on exit.

    On exit each child gets *grace* seconds to finish by itself before it is killed:
    killing a child that is still flushing a ``multiprocessing.Queue`` can leave the
    queue's shared write lock held, wedging every later writer.
    """
    procs = [ctx.Process(target=target, args=args, daemon=True) for _ in range(count)]  # type: ignore[attr-defined]
    for p in procs:
        p.start()
    try:
        yield procs
    finally:
        end = time.monotonic() + grace
        for p in procs:
            p.join(max(end - time.monotonic(), 0))
            if p.is_alive():
                p.kill()
                p.join(10)


def kill(proc: multiprocessing.process.BaseProcess, sig: int = signal.SIGKILL) -> None:
    """Send *sig* to a child process (default SIGKILL)."""
    assert proc.pid is not None
    os.kill(proc.pid, sig)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll *predicate* until true; fail after *timeout* seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.005)
