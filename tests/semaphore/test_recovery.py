"""Holders that die: their permits come back to the waiters, once each, with a warning.

A waiter frees the permits of holders proven dead every ``recovery_interval``, so a dead
holder's permit reaches a waiter within ``recovery_interval`` plus a slice (50 ms) of
the start of its wait; ``BOUND`` adds a margin for a loaded machine. A live holder, even
a stopped one, is never robbed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import aplock
from aplock._deadline import SLICE
from tests.support import sem_workers
from tests.support.procs import SPAWN, kill, running

INTERVAL = 0.1
#: The documented bound, and a margin for a loaded machine.
BOUND = INTERVAL + SLICE + 1.0


def _results(queue: Any, count: int) -> list[Any]:
    return [queue.get(timeout=60) for _ in range(count)]


@pytest.mark.parametrize("bounded", [False, True])
def test_permits_of_a_killed_holder_come_back_once_with_a_warning(
    lock_name: str, bounded: bool
) -> None:
    sem = sem_workers.open_semaphore(lock_name, 3, bounded, INTERVAL)
    ready, start, done = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    queue = SPAWN.Queue()
    with running(sem_workers.hold, lock_name, 3, bounded, 2, ready) as (holder,):
        assert ready.wait(60)
        assert sem.acquire(False)  # the third permit: ours, alive
        kill(holder)
        holder.join(10)
        with running(
            sem_workers.acquire_report,
            lock_name, 3, bounded, 30.0, INTERVAL, start, queue, done,
            count=2,
        ):  # fmt: skip
            start.set()
            got = _results(queue, 2)
            assert all(ok for _, ok, _, _ in got)
            assert sorted(pid for _, _, pids, _ in got for pid in pids) == [holder.pid] * 2
            assert all(seconds < BOUND for _, _, _, seconds in got), got
            assert sem.get_value() == 0
            assert not sem.acquire(timeout=3 * INTERVAL)  # no permit came back twice
            done.set()
            assert _results(queue, 2) == ["released", "released"]
    sem.release()
    assert sem.get_value() == 3
    assert sem.info().recoveries == 2


def test_the_acquirer_of_each_dead_permit_is_warned_in_this_process(lock_name: str) -> None:
    sem = aplock.BoundedSemaphore(lock_name, 2, recovery_interval=INTERVAL)
    with running(sem_workers.acquire_and_exit, lock_name, 2, True, 2) as (child,):
        child.join(30)
    assert sem.get_value() == 0
    assert [h.alive for h in sem.info().holders] == [False, False]
    caught = []
    for _ in range(2):
        with pytest.warns(aplock.AbandonedLockWarning) as one:
            assert sem.acquire(timeout=BOUND)
        caught += list(one)
    assert [w.message.pid for w in caught] == [child.pid] * 2  # type: ignore[union-attr]
    assert caught[0].filename == __file__  # the warning points at the user's acquire()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sem.release()
        sem.release()
        assert sem.acquire(False)  # a permit given back is not warned of again
    sem.release()


def test_a_warning_that_raises_gives_the_permit_back(lock_name: str) -> None:
    sem = aplock.Semaphore(lock_name, 1, recovery_interval=INTERVAL)
    with running(sem_workers.acquire_and_exit, lock_name, 1, False, 1) as (child,):
        child.join(30)
    with pytest.raises(aplock.AbandonedLockWarning):  # filterwarnings = error
        sem.acquire(timeout=BOUND)
    assert sem.get_value() == 1


@pytest.mark.parametrize("sig", [signal.SIGSTOP, None], ids=["stopped", "running"])
def test_a_live_holder_is_never_robbed(lock_name: str, sig: int | None) -> None:
    sem = aplock.BoundedSemaphore(lock_name, 2, recovery_interval=0.02)
    ready, release = SPAWN.Event(), SPAWN.Event()
    with running(sem_workers.hold, lock_name, 2, True, 2, ready, release) as (holder,):
        assert ready.wait(60)
        if sig is not None:
            kill(holder, sig)
        try:
            assert not sem.acquire(timeout=0.5)  # 25 recovery checks: it is alive
            assert [h.alive for h in sem.info().holders] == [True, True]
        finally:
            if sig is not None:
                kill(holder, signal.SIGCONT)
        release.set()
        assert sem.acquire(timeout=30)  # given back by the holder itself: no warning
        holder.join(30)
    assert holder.exitcode == 0
    sem.release()
    assert sem.info().recoveries == 0


def _race_releases_with_recovery(name: str, seed: int) -> None:
    """A holder of all three permits is killed; two processes that hold nothing release,
    at random instants, while three waiters recover (at least one permit must be). Each
    acquisition ends once: by a release or a recovery."""
    rng = random.Random(seed)
    sem = aplock.BoundedSemaphore(name, 3, recovery_interval=0.02)
    ready, start, done = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    queue = SPAWN.Queue()
    with running(sem_workers.hold, name, 3, True, 3, ready) as (holder,):
        assert ready.wait(60)
        releasers = running(
            sem_workers.release_once, name, 3, True, start, queue, rng.uniform(0, 0.04), count=2
        )
        waiters = running(
            sem_workers.acquire_report, name, 3, True, 5.0, 0.02, start, queue, done, count=3
        )
        with releasers, waiters:
            time.sleep(rng.uniform(0, 0.05))  # the kill lands anywhere near the start
            kill(holder)
            start.set()
            outcomes = _results(queue, 5)
            # (a releaser may have given back a waiter's permit: any process may)
            done.set()
            outcomes += _results(queue, 3)
    grants = [o for o in outcomes if isinstance(o, tuple)]
    words = [o for o in outcomes if isinstance(o, str)]
    assert len(grants) == 3, outcomes
    assert all(ok for _, ok, _, _ in grants), outcomes
    warned = [pid for _, _, pids, _ in grants for pid in pids]
    assert set(warned) <= {holder.pid}, "a warning named a live process: it was robbed"
    recoveries = sem.info().recoveries
    # Six acquisitions (the holder's three, the waiters' three), each ended once.
    # (a waiter whose permit a releaser gave back finds itself "robbed", and releases
    # nothing: that is multiprocessing's semantics, not a recovery's doing)
    assert recoveries >= 1
    assert words.count("ok") + words.count("released") + recoveries == 6, outcomes
    assert set(words) <= {"ok", "released", "robbed", "LockNotHeldError"}
    assert sem.get_value() == 3
    # Every freed permit warns the one acquisition that claims it: ours claim the rest.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert sem.acquire(False)
    ours = [w.message.pid for w in caught if isinstance(w.message, aplock.AbandonedLockWarning)]
    assert set(ours) <= {holder.pid}
    assert len(warned) + len(ours) == recoveries
    for _ in range(3):
        sem.release()


def test_releases_racing_a_recovery(lock_name: str) -> None:
    for seed in range(4):
        _race_releases_with_recovery(lock_name, seed)
        aplock.unlink(lock_name)


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_releases_racing_a_recovery_long(lock_name: str) -> None:
    for seed in range(40):
        _race_releases_with_recovery(lock_name, seed)
        aplock.unlink(lock_name)


def _recoveries_race(name: str, rounds: int, holders: int = 6) -> None:
    """Holders of one permit each are killed; as many waiters recover at once, and
    claim. A recovery frees only what it judged dead and is still so: no waiter is
    robbed of the permit it claimed from another's recovery."""
    waiters = holders
    for _ in range(rounds):
        sem = aplock.BoundedSemaphore(name, holders, recovery_interval=0.005)
        ready = [SPAWN.Event() for _ in range(holders)]
        start, done = SPAWN.Event(), SPAWN.Event()
        queue = SPAWN.Queue()
        with contextlib.ExitStack() as stack:
            dead = [
                stack.enter_context(running(sem_workers.hold, name, holders, True, 1, ev))[0]
                for ev in ready
            ]
            assert all(ev.wait(60) for ev in ready)
            for proc in dead:
                kill(proc)
            for proc in dead:
                proc.join(10)
            with running(
                sem_workers.acquire_report, name, holders, True, 30.0, 0.005, start, queue,
                done, count=waiters,
            ):  # fmt: skip
                start.set()
                grants = _results(queue, waiters)
                done.set()
                ends = _results(queue, holders)
        got = [g for g in grants if g[1]]
        assert len(got) == holders, grants
        assert ends == ["released"] * holders, ends
        warned = sorted(pid for _, _, pids, _ in got for pid in pids)
        assert warned == sorted(int(p.pid or 0) for p in dead), grants
        assert sem.info().recoveries == holders
        assert sem.get_value() == holders
        sem.unlink()


def test_recoveries_racing_claims_rob_nobody(lock_name: str) -> None:
    _recoveries_race(lock_name, rounds=4)


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_recoveries_racing_claims_rob_nobody_long(lock_name: str) -> None:
    _recoveries_race(lock_name, rounds=60)


def _kill_at_random(name: str, tmp_path: Path, kills: int, seed: int) -> None:
    """Hammering processes are SIGKILLed at random instants and replaced; then all are.

    Every permit comes back, each once: the survivors never wait in vain, the permits
    the dead held at the end are recovered (with a warning each) and no more, and a
    dead permit warns exactly one acquirer.
    """
    rng = random.Random(seed)
    value = 3
    journal = str(tmp_path / f"journal.{seed}")
    sem = aplock.BoundedSemaphore(name, value, recovery_interval=INTERVAL)
    procs = []
    killed = 0
    try:
        for n in range(kills + 4):
            started = SPAWN.Event()
            proc = SPAWN.Process(
                target=sem_workers.hammer_forever,
                args=(name, value, True, journal, started, seed * 1000 + n),
                daemon=True,
            )
            proc.start()
            procs.append(proc)
            assert started.wait(60), "a hammer never got a permit: one was lost"
            if n >= 4:
                victim = procs[rng.randrange(len(procs) - 1)]
                if victim.is_alive():
                    time.sleep(rng.uniform(0, 0.01))
                    kill(victim)
                    killed += 1
            assert sem.get_value() <= value
        for proc in procs:
            if proc.is_alive():
                kill(proc)
                killed += 1
    finally:
        for proc in procs:
            proc.join(10)
    dead_held = len(sem.info().holders)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(value):
            assert sem.acquire(timeout=BOUND), "a permit never came back"
        assert not sem.acquire(timeout=3 * INTERVAL), "a permit came back twice"
    mine = [w for w in caught if isinstance(w.message, aplock.AbandonedLockWarning)]
    # Ours claim every slot: the permits the dead held, and any freed one still marked.
    assert len(mine) >= dead_held
    for _ in range(value):
        sem.release()
    assert sem.get_value() == value
    theirs = Path(journal).read_text().count("w") if os.path.exists(journal) else 0
    # Each freed permit warns the one acquisition that claims it (and every slot has been
    # claimed since); a hammer killed before its journal line loses its warning.
    recoveries = sem.info().recoveries
    assert recoveries - killed <= theirs + len(mine) <= recoveries


def test_sigkill_at_random_instants(lock_name: str, tmp_path: Path) -> None:
    _kill_at_random(lock_name, tmp_path, kills=6, seed=1)


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_sigkill_at_random_instants_long(lock_name: str, tmp_path: Path) -> None:
    for seed in range(10):
        _kill_at_random(lock_name, tmp_path, kills=30, seed=seed)
        aplock.unlink(lock_name)


def test_repair_frees_dead_holders_permits_without_a_waiter(lock_name: str) -> None:
    from aplock._core import core_of

    sem = aplock.Semaphore(lock_name, 2)
    with running(sem_workers.acquire_and_exit, lock_name, 2, False, 1) as (child,):
        child.join(30)
    assert sem.get_value() == 1
    assert core_of(sem).repair(0.0) is True
    assert sem.get_value() == 2
    assert core_of(sem).repair(0.0) is False
    with pytest.warns(aplock.AbandonedLockWarning) as caught:
        sem.acquire()  # the dead child's permit: its acquirer is told
    assert [w.message.pid for w in caught] == [child.pid]  # type: ignore[union-attr]
    sem.acquire()  # the other: no warning (filterwarnings = error)
