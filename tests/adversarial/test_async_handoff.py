"""Cancellation at random points while AsyncLock and AsyncSemaphore hand over in the loop:
nothing leaks, and another process then finds every permit free."""

from __future__ import annotations

import random
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aplock
from aplock import _gate
from tests.support import handoff_workers
from tests.support.procs import SPAWN, running

pytestmark = pytest.mark.anyio

VALUE = 3


async def cancel_storm(obj: Any, seed: int, tasks: int, rounds: int) -> int:
    """Tasks take *obj* in turn under random timeouts; a few whole rounds are cancelled
    at random instants. Returns how many acquisitions got in."""
    rng = random.Random(seed)
    entries = 0

    async def task(seed: float) -> None:
        nonlocal entries
        own = random.Random(seed)
        for _ in range(rounds):
            with anyio.move_on_after(own.uniform(0, 0.003)):
                async with obj:
                    entries += 1
                    if own.random() < 0.5:
                        await anyio.lowlevel.checkpoint()

    for _ in range(4):
        async with anyio.create_task_group() as tg:
            for _ in range(tasks):
                tg.start_soon(task, rng.random())
            await anyio.sleep(rng.uniform(0, 0.01))
            if rng.random() < 0.5:
                tg.cancel_scope.cancel()  # a whole round, at some point of its handoffs
    return entries


def lock_is_free(name: str) -> bool:
    out = SPAWN.Queue()
    with running(handoff_workers.try_lock, name, out):
        return bool(out.get(timeout=60))


def permits_free(name: str) -> int:
    out = SPAWN.Queue()
    with running(handoff_workers.try_permit, name, VALUE, out):
        return int(out.get(timeout=60))


@pytest.mark.parametrize("window", [_gate.HANDOFF_WINDOW, 60.0], ids=["bound", "long"])
async def test_cancelled_handoffs_leak_no_lock(
    lock_name: str, monkeypatch: pytest.MonkeyPatch, window: float
) -> None:
    monkeypatch.setattr(_gate, "HANDOFF_WINDOW", window)
    alock = aplock.AsyncLock(lock_name)
    generation = alock.info().generation
    entries = await cancel_storm(alock, seed=1, tasks=20, rounds=10)
    assert entries > 0
    assert alock.info().generation >= generation + entries
    assert lock_is_free(lock_name), "a cancelled handoff left the lock held"


@pytest.mark.parametrize("window", [_gate.HANDOFF_WINDOW, 60.0], ids=["bound", "long"])
async def test_cancelled_handoffs_leak_no_permit(
    lock_name: str, monkeypatch: pytest.MonkeyPatch, window: float
) -> None:
    monkeypatch.setattr(_gate, "HANDOFF_WINDOW", window)
    sem = aplock.AsyncSemaphore(lock_name, VALUE)
    entries = await cancel_storm(sem, seed=2, tasks=20, rounds=10)
    assert entries > 0
    assert sem.get_value() == VALUE
    assert permits_free(lock_name) == VALUE, "a cancelled handoff kept a permit"


@pytest.mark.stress
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", range(8))
async def test_cancelled_handoffs_leak_nothing_stress(
    lock_name: str, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    monkeypatch.setattr(_gate, "HANDOFF_WINDOW", 60.0)
    alock = aplock.AsyncLock(lock_name)
    for round_ in range(10):
        await cancel_storm(alock, seed=seed * 100 + round_, tasks=30, rounds=20)
        assert not alock.locked(), f"round {round_}: the lock stayed held"
    assert lock_is_free(lock_name)
