"""Holders that die: proof of death, exactly one takeover, fencing tokens, hand-offs."""

from __future__ import annotations

import inspect
import os
import random
import time
import warnings
from typing import Any

import anyio
import pytest

import aplock
from aplock._posix import handle as _handle
from aplock._posix import identity as _process
from aplock._posix import record as _state
from aplock.sync import RECOVERY_INTERVAL
from tests.support import workers
from tests.support.procs import SPAWN, kill, running

#: Default detection bound: recovery interval + one slice, with slack for a busy machine.
BOUND = 3.0


def test_sigkilled_holder_is_recovered_with_a_warning(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        before = lock.info()
        assert before.holder_pid == proc.pid
        assert before.holder_alive is True
        kill(proc)
        start = time.monotonic()
        with pytest.warns(aplock.AbandonedLockWarning) as record:
            assert lock.acquire(timeout=30)
        elapsed = time.monotonic() - start
    assert elapsed < BOUND, f"recovery took {elapsed:.2f}s"
    warning = record[0].message
    assert isinstance(warning, aplock.AbandonedLockWarning)
    assert warning.pid == proc.pid
    assert warning.generation == before.generation
    acq = lock.acquisition
    assert acq is not None
    assert acq.abandoned_pid == proc.pid
    assert acq.generation == before.generation + 1
    info = lock.info()
    assert info.holder_pid == os.getpid()
    assert info.recoveries == 1
    lock.release()
    with lock:  # an ordinary acquisition afterwards
        acq = lock.acquisition
        assert acq is not None
        assert acq.abandoned_pid is None


@pytest.mark.parametrize("how", ["acquire", "with", "async with"])
def test_the_take_over_warning_points_at_the_callers_line(lock_name: str, how: str) -> None:
    import anyio

    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        kill(proc)
        proc.join(30)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if how == "acquire":
                line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
                assert lock.acquire(timeout=30)
                lock.release()
            elif how == "with":
                line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
                with lock:
                    pass
            else:

                async def main() -> int:
                    line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
                    async with aplock.AsyncLock(lock):
                        pass
                    return line

                line = anyio.run(main)
    (warning,) = [w for w in caught if issubclass(w.category, aplock.AbandonedLockWarning)]
    assert (warning.filename, warning.lineno) == (__file__, line)


def test_a_zombie_holder_is_dead(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        lock.acquire()
        os.write(w, b"x")
        os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"x"
    os.close(r)
    try:
        # not reaped yet: the holder is a zombie
        with pytest.warns(aplock.AbandonedLockWarning):
            assert lock.acquire(timeout=30)
        lock.release()
    finally:
        os.waitpid(pid, 0)


def test_a_stopped_holder_is_never_robbed(lock_name: str) -> None:
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        assert proc.pid is not None
        os.kill(proc.pid, 19)  # SIGSTOP
        try:
            assert lock.acquire(timeout=0.5) is False  # ten recovery checks
            assert lock.info().holder_alive is True
        finally:
            os.kill(proc.pid, 18)  # SIGCONT
        kill(proc)


def test_a_reused_pid_is_not_mistaken_for_the_holder(lock_name: str) -> None:
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    handle = lock._h
    assert isinstance(handle, _handle.Handle)
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, aplock.__name__ + lock_name, acquired) as (other,):
        assert acquired.wait(60)
        assert other.pid is not None
        lock.acquire()
        # The record names a live process, as the holder did, with its start time:
        lock.hand_off(other.pid)
        assert lock.acquire(timeout=0.4) is False  # eight recovery checks
        # Same pid, another start time: a different process that reuses the pid.
        snap = handle.snapshot()
        with handle.guard.held():
            held = snap.holder
            reused = _process.Identity(other.pid, held.start + 1, held.ns)
            _state.write_hold(handle.mm, snap.generation, reused, snap.acquired_at)
        with pytest.warns(aplock.AbandonedLockWarning):
            assert lock.acquire(timeout=30)
        lock.release()
        kill(other)
    aplock.unlink(aplock.__name__ + lock_name)


def test_proof_of_death() -> None:
    me = _process.identity()
    assert not _process.is_proven_dead(me)
    assert _process.is_proven_dead(_process.Identity(me.pid, me.start + 1, me.ns))
    assert not _process.is_proven_dead(_process.Identity(me.pid, me.start, me.ns + 1))
    assert not _process.is_proven_dead(_process.Identity(0, 0, me.ns))
    assert not _process.is_proven_dead(_process.Identity(-1, 0, me.ns))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0)
    os.waitpid(pid, 0)
    assert _process.is_proven_dead(_process.Identity(pid, 0, me.ns))


def takeover_round(lock_name: str, path: str, backends: list[str], delay: float) -> None:
    """Kill a holder while one waiting process per entry of *backends* waits for it.

    ``"sync"`` waits with ``Lock``, anything else with ``AsyncLock`` on that backend.
    Exactly one waiter must take the lock over, with the warning, and the waiters'
    read-modify-writes of the counter in *path* must not overlap.
    """
    with open(path, "w") as f:
        f.write("0")
    acquired = SPAWN.Event()
    ready = [SPAWN.Event() for _ in backends]
    out: Any = SPAWN.Queue()
    waiters = [
        SPAWN.Process(target=workers.waiter_report, args=(lock_name, r, out, path))
        if backend == "sync"
        else SPAWN.Process(
            target=workers.async_waiter_report, args=(lock_name, r, out, path, backend)
        )
        for r, backend in zip(ready, backends, strict=True)
    ]
    with running(workers.hold_until_killed, lock_name, acquired) as (holder,):
        assert acquired.wait(60)
        for w in waiters:
            w.start()
        try:
            for r in ready:
                assert r.wait(60)
            time.sleep(delay)
            kill(holder)
            results = [out.get(timeout=60) for _ in waiters]
        finally:
            for w in waiters:
                w.join(30)
                if w.is_alive():
                    w.kill()
                    w.join()
    takeovers = [r for r in results if r[1] is not None]
    assert len(takeovers) == 1, results
    assert takeovers[0][1] == holder.pid
    assert takeovers[0][2] == [holder.pid]
    assert sum(bool(r[2]) for r in results) == 1, results
    with open(path) as f:
        assert int(f.read()) == len(backends), "mutual exclusion broke after the takeover"


def test_exactly_one_of_several_waiting_processes_takes_over(
    lock_name: str, tmp_path: os.PathLike[str]
) -> None:
    takeover_round(lock_name, os.path.join(tmp_path, "counter"), ["sync"] * 4, delay=0.3)


def test_detached_hand_off_is_never_taken_over(lock_name: str) -> None:
    done = SPAWN.Event()
    with running(workers.hand_off_and_exit, lock_name, None, done) as (proc,):
        assert done.wait(60)
        proc.join(30)
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    info = lock.info()
    assert info.locked
    assert info.holder_pid == -1
    assert "detached" in repr(lock)
    # Its holder exited, but it was handed off: ten recovery checks leave it alone.
    assert lock.acquire(timeout=0.5) is False
    lock.release()  # the deliberate releaser
    assert lock.acquire(timeout=5)
    lock.release()


def test_hand_off_to_another_process_watches_that_process(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name + ".other", acquired) as (other,):
        assert acquired.wait(60)
        assert other.pid is not None
        lock.acquire()
        lock.hand_off(other.pid)
        assert lock.info().holder_pid == other.pid
        kill(other)
        with pytest.warns(aplock.AbandonedLockWarning) as record:
            assert lock.acquire(timeout=30)
        assert record[0].message.pid == other.pid  # type: ignore[union-attr]
        lock.release()
    aplock.unlink(lock_name + ".other")


def test_hand_off_needs_the_lock_held(lock_name: str) -> None:
    with pytest.raises(aplock.LockNotHeldError, match="hand_off"):
        aplock.Lock(lock_name).hand_off()


def test_recovery_can_be_turned_off(lock_name: str) -> None:
    lock = aplock.Lock(lock_name, recovery_interval=None)
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        kill(proc)
        proc.join(10)
        # Two intervals of the default: a waiter that checked would have taken it over.
        assert lock.acquire(timeout=2 * RECOVERY_INTERVAL) is False
        assert lock.info().holder_alive is False
    with pytest.warns(aplock.AbandonedLockWarning):
        assert aplock.Lock(lock_name).acquire(timeout=30)
    lock.release()


def test_a_holder_killed_after_recording_itself_is_repaired(lock_name: str) -> None:
    with running(workers.die_after_recording, lock_name) as (proc,):
        proc.join(30)
    lock = aplock.Lock(lock_name)
    handle = lock._h
    assert isinstance(handle, _handle.Handle)
    assert (handle.sem.value, handle.token.value) == (0, 0)
    start = time.monotonic()
    with pytest.warns(aplock.AbandonedLockWarning):
        assert lock.acquire(timeout=30)
    assert time.monotonic() - start < BOUND + _handle.STUCK_AFTER
    assert (handle.sem.value, handle.token.value) == (0, 1)
    lock.release()
    assert (handle.sem.value, handle.token.value) == (1, 0)


def test_the_guard_survives_its_holder_dying(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    lock.acquire()
    lock.hand_off(None)  # a release must now go through the guard
    inside = SPAWN.Event()
    with running(workers.die_in_guard, lock_name, inside) as (proc,):
        assert inside.wait(60)
        kill(proc)
        proc.join(10)
        lock.release()  # takes the guard the dead process held
    assert not lock.locked()


@pytest.mark.anyio
async def test_async_waiter_recovers(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)

        async def acquire_while_the_holder_dies() -> bool:
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_once_waiting)
                got = await alock.acquire(timeout=30)
            return got  # noqa: RET504 - mypy cannot see that the group returns

        async def kill_once_waiting() -> None:
            with anyio.fail_after(10):
                while alock.statistics().tasks_waiting == 0:
                    await anyio.sleep(0.005)
            kill(proc)

        start = time.monotonic()
        with pytest.warns(aplock.AbandonedLockWarning):
            got = await acquire_while_the_holder_dies()
        assert got
        assert time.monotonic() - start < BOUND
        acq = alock.acquisition
        assert acq is not None
        assert acq.abandoned_pid == proc.pid
        alock.release()


def kill_rounds(lock_name: str, rounds: int, seed: int, tmp: str) -> None:
    """Kill the holder at a random moment while a sync, an asyncio and a Trio waiter wait."""
    rng = random.Random(seed)
    lock = aplock.Lock(lock_name)
    for i in range(rounds):
        path = os.path.join(tmp, f"counter{i}")
        takeover_round(lock_name, path, ["sync", "asyncio", "trio"], rng.uniform(0, 0.5))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert lock.acquire(timeout=5)
        lock.release()


def test_kill_holders_at_random_points(lock_name: str, tmp_path: os.PathLike[str]) -> None:
    kill_rounds(lock_name, 2, seed=4, tmp=str(tmp_path))


@pytest.mark.stress
@pytest.mark.timeout(1200)
def test_kill_holders_at_random_points_stress(lock_name: str, tmp_path: os.PathLike[str]) -> None:
    kill_rounds(lock_name, 60, seed=5, tmp=str(tmp_path))
