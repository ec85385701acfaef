"""AsyncLeadership on asyncio, uvloop and Trio, within one process.

Several leaderships of one lock in one process exclude each other as processes do (an
aplock lock is not recursive). Jobs report through events and a list of (what, token,
time); ``RemoteLock`` stands for a lock that a live holder can lose (a PostgreSQL
session that ends), so that its loss, its lease and the settle time are tested without a
server (``test_postgres.py`` does it with one).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

import aplock
from aplock._leader_sides import LeaderFile
from aplock.errors import LockLostError
from aplock.leader import AsyncLeadership, LeaderTerm, lease, settle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

FAST = 0.05  # check_interval of the tests that need the remote timings short
WAIT = 10  # the most seconds any test waits for a job to start or end


class Jobs:
    """Jobs that record when they start and end, and wake the test."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, int | None, float]] = []
        self.started = anyio.Event()
        self.ended = anyio.Event()

    def job(self, tag: str, *, fail: int = 0) -> Callable[[LeaderTerm], Awaitable[None]]:
        """A job that runs until cancelled; its first *fail* runs raise at once."""
        runs = [0]

        async def job(term: LeaderTerm) -> None:
            runs[0] += 1
            self.log.append((tag, "start", term.token, time.monotonic()))
            self.started.set()
            if runs[0] <= fail:
                self.log.append((tag, "raise", term.token, time.monotonic()))
                raise RuntimeError(f"job {tag} failed")
            try:
                await anyio.sleep_forever()
            finally:
                self.log.append((tag, "end", term.token, time.monotonic()))
                self.ended.set()

        return job

    async def next_start(self) -> tuple[str, str, int | None, float]:
        with anyio.fail_after(WAIT):
            await self.started.wait()
        self.started = anyio.Event()
        return [e for e in self.log if e[1] == "start"][-1]

    async def next_end(self) -> None:
        with anyio.fail_after(WAIT):
            await self.ended.wait()
        self.ended = anyio.Event()

    def events(self, tag: str | None = None) -> list[str]:
        return [f"{t}:{what}" for t, what, _, _ in self.log if tag in (None, t)]


async def test_enter_returns_at_once_and_the_leader_runs_the_job(leader_name: str) -> None:
    jobs = Jobs()
    blocker = aplock.Lock(leader_name)
    blocker.acquire()  # the lock is taken: entering must not wait for it
    leadership = AsyncLeadership(leader_name, jobs.job("a"))
    began = time.monotonic()
    async with leadership:
        assert time.monotonic() - began < 0.1
        assert leadership.running
        assert (leadership.leading, leadership.term) == (False, None)  # no narrowing
        blocker.release()
        _, _, token, _ = await jobs.next_start()
        term = leadership.term
        assert term is not None
        assert leadership.leading
        acquisition = blocker.acquisition  # the lock's, whichever object reads it
        assert acquisition is not None
        assert token == term.token == acquisition.generation
        assert term.pid == os.getpid()
        assert term.took_over_from is None
        assert term.name == leader_name
        assert abs(term.since - time.time()) < 5
        assert "leading" in repr(leadership)
        file = LeaderFile(leader_name).read()
        assert file == {"name": leader_name, "pid": term.pid, "since": term.since, "token": token}
    # Leaving cancelled the job, ended the term, released the lock, removed the file.
    assert jobs.events() == ["a:start", "a:end"]
    assert term.ended
    assert not leadership.leading
    assert not leadership.running
    assert not blocker.locked()
    assert LeaderFile(leader_name).read() is None


async def test_one_of_two_leads_the_other_takes_over_when_it_leaves(leader_name: str) -> None:
    jobs = Jobs()
    a = AsyncLeadership(leader_name, jobs.job("a"))
    b = AsyncLeadership(leader_name, jobs.job("b"))
    await a.__aenter__()
    await b.__aenter__()
    try:
        first, _, token1, _ = await jobs.next_start()
        leader, standby = (a, b) if first == "a" else (b, a)
        await anyio.sleep(0.3)  # the standby does not run the job meanwhile
        assert jobs.events() == [f"{first}:start"]
        assert leader.leading
        assert not standby.leading
        left = time.monotonic()
        await leader.__aexit__(None, None, None)
        second, _, token2, started = await jobs.next_start()
        assert second != first
        assert started - left < 0.5
        assert token1 is not None
        assert token2 is not None
        assert token2 > token1
        assert standby.leading
    finally:
        await a.__aexit__(None, None, None)
        await b.__aexit__(None, None, None)
    assert jobs.events() == [f"{first}:start", f"{first}:end", f"{second}:start", f"{second}:end"]


async def test_a_job_that_raises_is_logged_and_leadership_moves(
    leader_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = Jobs()
    a = AsyncLeadership(leader_name, jobs.job("a", fail=5), retry_delay=0.2, max_retry_delay=0.4)
    b = AsyncLeadership(leader_name, jobs.job("b"))
    with caplog.at_level(logging.INFO, logger="aplock"):
        async with a:
            tag, _, _, _ = await jobs.next_start()
            assert tag == "a"
            raised_at = jobs.log[-1][3]
            async with b:
                # a's lock was released when its job raised; b takes it at once.
                tag, _, _, started = await jobs.next_start()
                assert tag == "b"
                assert started - raised_at < 0.5
            # b left; a campaigns again after its delay, and fails again.
            tag, _, _, _ = await jobs.next_start()
            assert tag == "a"
            second_raise = jobs.log[-1][3]
            tag, _, _, third = await jobs.next_start()
            assert tag == "a"
            assert third - second_raise >= 0.4 * 0.9  # the delay doubled (0.2, then 0.4)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "aplock"]
    assert len(errors) >= 2
    assert errors[0].exc_info is not None
    assert "job a failed" in str(errors[0].exc_info[1])
    assert "campaigning again in 0.2 s" in errors[0].getMessage()
    assert not aplock.Lock(leader_name).locked()


async def test_a_job_that_returns_keeps_leadership_until_exit(
    leader_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int | None] = []
    returned = anyio.Event()

    async def job(term: LeaderTerm) -> None:
        runs.append(term.token)
        returned.set()

    jobs = Jobs()
    with caplog.at_level(logging.INFO, logger="aplock"):
        async with AsyncLeadership(leader_name, job) as a:
            with anyio.fail_after(WAIT):
                await returned.wait()
            async with AsyncLeadership(leader_name, jobs.job("standby")) as b:
                await anyio.sleep(0.5)
                assert runs == [runs[0]]  # not run again
                assert a.leading
                assert not b.leading
                assert jobs.log == []  # the standby never ran its job
                assert aplock.Lock(leader_name).locked()
    assert any("job returned" in r.getMessage() for r in caplog.records)


async def test_a_lost_lock_cancels_the_job_at_once(leader_name: str) -> None:
    jobs = Jobs()
    async with AsyncLeadership(leader_name, jobs.job("a"), check_interval=FAST) as a:
        _, _, token1, _ = await jobs.next_start()
        # Another process releases the lock behind the leader's back (misuse).
        released = time.monotonic()
        aplock.Lock(leader_name).release()
        await jobs.next_end()
        assert jobs.log[-1][3] - released < FAST + 0.2
        # Campaigning resumes: the lock is free, so a new term starts, with a new token.
        _, _, token2, _ = await jobs.next_start()
        assert token1 is not None
        assert token2 is not None
        assert token2 > token1
        assert a.leading
    assert jobs.events() == ["a:start", "a:end", "a:start", "a:end"]


class RemoteLock:
    """A lock of the AsyncPgLock shape over an aplock lock, that a live holder can lose.

    ``terminate()`` is the server ending the session: the lock is free at once for the
    others, and this object's ``check()`` raises ``LockLostError`` (or hangs, with
    *hang*) from then on.
    """

    def __init__(self, name: str, *, hang: bool = False) -> None:
        self.name = name
        self._lock = aplock.AsyncLock(name)
        self._hang = hang
        self._lost = False
        self.checks = 0

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        got = await self._lock.acquire(block, timeout)
        if got:
            self._lost = False
        return got

    def release(self) -> None:
        if self._lost:
            self._lost = False
            raise LockLostError(self.name, "the session ended")
        self._lock.release()

    async def check(self) -> None:
        self.checks += 1
        await anyio.sleep(0)
        if self._lost:
            if self._hang:
                await anyio.sleep_forever()
            raise LockLostError(self.name, "the session ended")

    def terminate(self) -> None:
        self._lost = True
        self._lock.release()


@pytest.mark.parametrize("hang", [False, True], ids=["check-fails", "check-hangs"])
async def test_a_remote_lock_lost_cancels_the_job_before_the_next_leader_starts(
    leader_name: str, hang: bool
) -> None:
    jobs = Jobs()
    locks = {"a": RemoteLock(leader_name, hang=hang), "b": RemoteLock(leader_name, hang=hang)}
    a = AsyncLeadership(locks["a"], jobs.job("a"), check_interval=FAST)
    b = AsyncLeadership(locks["b"], jobs.job("b"), check_interval=FAST)
    entered = time.monotonic()
    async with a, b:
        first, _, token, started = await jobs.next_start()
        assert token is None  # the lock has no generations
        assert [t.leading for t in (a, b)].count(True) == 1
        assert started - entered >= settle(FAST) - 0.005  # even the first leader settles
        terminated = time.monotonic()
        locks[first].terminate()
        second, _, _, restarted = await jobs.next_start()
        assert second != first
        old_end = next(e[3] for e in jobs.log if e[:2] == (first, "end"))
        assert old_end < restarted
        assert old_end - terminated <= (lease(FAST) if hang else FAST) + 0.1
        assert restarted - terminated >= settle(FAST) - 0.005  # event loops wake a bit early
    assert jobs.events(first) == [f"{first}:start", f"{first}:end"]
    assert locks[first].checks > 0


async def test_leaving_while_standing_by_or_settling_is_prompt(leader_name: str) -> None:
    jobs = Jobs()
    blocker = aplock.Lock(leader_name)
    blocker.acquire()
    standby = AsyncLeadership(leader_name, jobs.job("a"))
    began = time.monotonic()
    async with standby:
        await anyio.sleep(0.2)  # waiting for the lock in its thread
    assert time.monotonic() - began < 0.2 + 0.3
    blocker.release()
    assert not blocker.locked()  # the abandoned wait did not take it afterwards
    await anyio.sleep(0.1)
    assert not blocker.locked()
    # Leaving during a remote lock's settle time: the job never ran, nothing is held.
    remote = AsyncLeadership(RemoteLock(leader_name), jobs.job("b"), check_interval=1.0)
    async with remote:
        await anyio.sleep(0.2)
    assert jobs.log == []
    assert not blocker.locked()


async def test_leaving_just_as_the_wait_for_the_lock_begins_is_prompt(leader_name: str) -> None:
    # Left k event-loop steps after entering: at some k the thread's call is cancelled
    # before a worker thread ran it, so it never runs; leaving must not wait for it.
    jobs = Jobs()
    blocker = aplock.Lock(leader_name)
    blocker.acquire()
    for steps in range(10):
        for _ in range(5):
            began = time.monotonic()
            with anyio.fail_after(WAIT):  # a hang is caught by the test's timeout
                async with AsyncLeadership(leader_name, jobs.job("a")):
                    for _ in range(steps):
                        await anyio.lowlevel.checkpoint()
            assert time.monotonic() - began < 1, steps
    blocker.release()
    await anyio.sleep(0.05)
    assert not blocker.locked()  # no abandoned wait took it afterwards
    assert jobs.log == []


async def test_an_outer_cancellation_ends_everything(leader_name: str) -> None:
    jobs = Jobs()
    with anyio.move_on_after(5) as scope:
        async with AsyncLeadership(leader_name, jobs.job("a")):
            await jobs.next_start()
            scope.cancel()
            await anyio.sleep_forever()
    assert jobs.events() == ["a:start", "a:end"]
    assert not aplock.Lock(leader_name).locked()


async def test_the_term_is_over_when_the_job_cleans_up(leader_name: str) -> None:
    seen: list[bool] = []
    started = anyio.Event()

    async def job(term: LeaderTerm) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            seen.append(term.ended)

    async with AsyncLeadership(leader_name, job):
        with anyio.fail_after(WAIT):
            await started.wait()
    assert seen == [True]


async def test_entering_twice_is_refused(leader_name: str) -> None:
    jobs = Jobs()
    leadership = AsyncLeadership(leader_name, jobs.job("a"))
    async with leadership:
        with pytest.raises(RuntimeError, match="already entered"):
            await leadership.__aenter__()
    async with leadership:  # again, after leaving
        await jobs.next_start()
    assert jobs.events() == ["a:start", "a:end"]


async def test_a_sync_lock_and_an_async_lock_are_led_through(leader_name: str) -> None:
    jobs = Jobs()
    lock = aplock.Lock(leader_name)
    async with AsyncLeadership(lock, jobs.job("a")) as leadership:
        await jobs.next_start()
        assert leadership.lock.lock is lock  # type: ignore[attr-defined]
        assert lock.locked()
    async with AsyncLeadership(aplock.AsyncLock(lock), jobs.job("b")):
        await jobs.next_start()
    assert jobs.events() == ["a:start", "a:end", "b:start", "b:end"]


async def test_the_lock_is_given_back_only_once_the_job_has_ended(leader_name: str) -> None:
    cleaned: list[float] = []
    started = anyio.Event()

    async def slow_to_stop(term: LeaderTerm) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.3)  # a scheduler that finishes a run in progress
            cleaned.append(time.monotonic())

    jobs = Jobs()
    first = AsyncLeadership(leader_name, slow_to_stop)
    await first.__aenter__()
    try:
        with anyio.fail_after(WAIT):
            await started.wait()
        async with AsyncLeadership(leader_name, jobs.job("b")):
            await first.__aexit__(None, None, None)
            _, _, _, took_over = await jobs.next_start()
    finally:
        await first.__aexit__(None, None, None)
    assert cleaned
    assert took_over > cleaned[0]
