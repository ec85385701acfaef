"""Child processes for the in-loop handoff tests (importable by name, so spawn finds them)."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import anyio.lowlevel

import aplock


def wait_for_lock(name: str, ready: Any, go: Any, timeout: float, out: Any) -> None:
    """When *go* is set, acquire lock *name* (up to *timeout*); put (got, seconds waited)."""
    lock = aplock.Lock(name)
    ready.set()
    go.wait(60)
    start = time.monotonic()
    got = lock.acquire(timeout=timeout)
    waited = time.monotonic() - start
    if got:
        lock.release()
    out.put((got, waited))


def wait_for_permit(name: str, value: int, ready: Any, go: Any, timeout: float, out: Any) -> None:
    """``wait_for_lock`` for a permit of semaphore *name*."""
    sem = aplock.Semaphore(name, value)
    ready.set()
    go.wait(60)
    start = time.monotonic()
    got = sem.acquire(timeout=timeout)
    waited = time.monotonic() - start
    if got:
        sem.release()
    out.put((got, waited))


def try_lock(name: str, out: Any) -> None:
    """Put whether lock *name* is free: ``acquire(block=False)``, released again."""
    lock = aplock.Lock(name)
    got = lock.acquire(block=False)
    if got:
        lock.release()
    out.put(got)


def stream_then_die(name: str, backend: str, entries: int) -> None:
    """Tasks of one loop take lock *name* in turn; the *entries*-th exits holding it."""

    async def main() -> None:
        lock = aplock.AsyncLock(name)
        count = 0

        async def task() -> None:
            nonlocal count
            while True:
                async with lock:
                    count += 1
                    if count == entries:
                        os._exit(0)  # dies holding an acquisition handed over in the loop
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(task)

    anyio.run(main, backend=backend)


def try_permit(name: str, value: int, out: Any) -> None:
    """Put how many permits of semaphore *name* could be taken at once without waiting."""
    sem = aplock.Semaphore(name, value)
    got = 0
    while got <= value and sem.acquire(block=False):
        got += 1
    for _ in range(got):
        sem.release()
    out.put(got)
