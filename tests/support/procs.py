"""Helpers to run real child processes in tests: spawned by name, always reaped."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.context
import os
import random
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


def stopped(pid: int) -> bool:
    """Whether process *pid* is stopped (by SIGSTOP), as ``/proc`` says."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def waiting_for_flock(pid: int) -> bool:
    """Whether process *pid* is blocked waiting for a ``flock`` (a guard), as
    ``/proc/locks`` lists it."""
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if fields[1:3] == ["->", "FLOCK"] and fields[5:6] == [str(pid)]:
                return True
    return False


def sleeping_in_futex(pid: int) -> bool:
    """Whether the main thread of process *pid* sleeps in a futex wait, as a semaphore
    wait does (in a single-threaded child nothing else waits on a futex)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "futex" in f.read()
    except FileNotFoundError:
        return False


def leave_a_dead_holder(name: str) -> int:
    """Let a spawned child acquire lock *name* and exit holding it; return its pid."""
    from tests.support import workers

    with running(workers.acquire_and_exit, name) as (proc,):
        proc.join(60)
    assert proc.pid is not None
    return proc.pid


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll *predicate* until true; fail after *timeout* seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.005)


def hammer_with_signals(
    target: Callable[..., Any],
    *args: Any,
    signals: tuple[int, ...] = (signal.SIGUSR1,),
    seed: int = 1,
) -> dict[str, int]:
    """Run ``target(*args, conn)`` in a spawned child, sending it *signals* until it reports.

    The child sends ``"ready"``, then (when it is done) a dict of outcomes, which is
    returned. The signals go out together, at random instants 0 to 0.3 ms apart.
    """
    parent, child = SPAWN.Pipe(duplex=False)
    with running(target, *args, child) as (proc,):
        assert parent.poll(60), "the child never got ready"
        assert parent.recv() == "ready"
        assert proc.pid is not None
        rng = random.Random(seed)
        while not parent.poll():
            try:
                for sig in signals:
                    os.kill(proc.pid, sig)
            except ProcessLookupError:
                break
            until = time.perf_counter() + rng.uniform(0, 0.0003)
            while time.perf_counter() < until:
                pass
        assert parent.poll(60), "the child never reported"
        outcomes: dict[str, int] = parent.recv()
    print(f"\n{target.__name__}{args[1:]}: {outcomes}")
    return outcomes


def bad_outcomes(outcomes: dict[str, int]) -> dict[str, int]:
    """The outcomes that are failures: their names start with an upper-case word."""
    return {k: n for k, n in outcomes.items() if k.isupper() or k.split(":")[0].isupper()}
