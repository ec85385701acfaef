"""Leadership across "hosts" on PostgreSQL: two process groups, each worker its own session.

The leader's session is ended behind its back (``pg_terminate_backend``): the server
frees the lock at once and a worker of either group takes it, while the old leader is
still alive. Its job must be cancelled before the new leader's first heartbeat, which
the journal shows (every term ended before the next started), and each term's fencing
token is greater than the one before. A SIGKILLed leader's session ends with it; a
graceful stop hands over after the settle time.

In one process: a term's token is the lock's acquisition generation, and a terminated
session ends the term at once (the server hangs up), long before the check interval.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import psycopg
import pytest

from aplock import _leader_async, _leader_threads, _leader_watch
from aplock.leader import AsyncLeadership, Leadership, LeaderTerm, settle
from aplock.postgres import AsyncPgLock, PgLock, advisory_key
from tests.support import leader_journal
from tests.support.leader_workers import CHECK_INTERVAL, Crew
from tests.support.pg_helpers import key_holders, terminate, wait_until

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(90)

KINDS = ["asyncio", "trio", "threads"]


def two_groups(crew: Crew, per_group: int = 2) -> dict[int, int]:
    """Start two process groups of workers; each worker's pid -> its group's pgid."""
    groups: dict[int, int] = {}
    for _ in range(2):
        first = crew.spawn(pgid=0)
        crew.wait_ready(first)
        groups[first] = first
        for _ in range(per_group - 1):
            pid = crew.spawn(pgid=first)
            crew.wait_ready(pid)
            groups[pid] = first
    ready = {e["pid"]: e["pgid"] for e in crew.entries() if e["event"] == "ready"}
    assert ready == groups
    return groups


def leader_backend(admin: Any, name: str) -> int:
    """The backend pid of the session that holds the lock."""
    holders: list[int] = []

    def one() -> bool:
        holders[:] = key_holders(admin, advisory_key(name))[0]
        return len(holders) == 1

    wait_until(one, what=f"one session to hold {name!r}")
    return holders[0]


def terminate_the_leader(crew: Crew, admin: Any, name: str) -> float:
    """End the leader's session; wait for the next term; the seconds until it started."""
    start = crew.wait_term()
    crew.wait_for(lambda es: len(leader_journal.terms(es, {})[-1].beats) >= 3, "heartbeats")
    ended = time.monotonic()
    terminate(admin, leader_backend(admin, name))
    entries = crew.wait_for(
        lambda es: leader_journal.starts(es)[-1]["t"] > start["t"], "the next term"
    )
    assert start["pid"] in crew.procs  # the old leader lives on, as a standby
    return float(leader_journal.starts(entries)[-1]["t"] - ended)


@pytest.mark.parametrize("kind", KINDS)
def test_a_terminated_session_cancels_the_job_before_the_next_leader_beats(
    kind: str, pg: tuple[str, Any], dsn: str, tmp_path: Path
) -> None:
    name, admin = pg
    with Crew(kind, name, str(tmp_path / "journal.jsonl"), dsn) as crew:
        two_groups(crew)
        takeovers = [terminate_the_leader(crew, admin, name) for _ in range(2)]
        # A SIGKILLed leader: its connection closes with it, the server frees the lock.
        start = crew.wait_term()
        sent = crew.kill(start["pid"])
        new = crew.wait_term(other_than=start["pid"])
        killed_takeover = new["t"] - sent
    assert crew.exit_codes() == [0] * len(crew.exit_codes())
    order = leader_journal.check_one_writer(crew.entries(), crew.killed)
    assert all(t.stopped or t.killed for t in order)
    assert len(order) >= 4
    # The fencing token is the acquisition's generation, a transaction id: it grew from
    # term to term (check_one_writer compares each with the one before).
    tokens = [t.token for t in order if type(t.token) is int]
    assert len(tokens) == len(order), order
    assert tokens == sorted(set(tokens)), tokens
    wanted = settle(CHECK_INTERVAL)
    for took in [*takeovers, killed_takeover]:
        assert wanted - 0.01 <= took <= wanted + 1.0, (takeovers, killed_takeover)


@pytest.mark.stress
@pytest.mark.parametrize("kind", KINDS)
def test_sessions_terminated_again_and_again(
    kind: str, pg: tuple[str, Any], dsn: str, tmp_path: Path
) -> None:
    name, admin = pg
    with Crew(kind, name, str(tmp_path / "journal.jsonl"), dsn) as crew:
        two_groups(crew)
        for _ in range(15):
            terminate_the_leader(crew, admin, name)
    order = leader_journal.check_one_writer(crew.entries(), crew.killed)
    assert len(order) >= 16


# ---- in one process: the term's token is the acquisition's generation ---------------


def test_a_pglock_term_carries_the_acquisition_generation(pg: tuple[str, Any], dsn: str) -> None:
    lock = PgLock(pg[0], dsn)
    tokens: list[int] = []

    def job(term: LeaderTerm) -> None:
        acquisition = lock.acquisition
        assert acquisition is not None
        assert type(term.token) is int
        assert term.token == acquisition.generation
        tokens.append(acquisition.generation)
        term.wait()

    for _ in range(2):
        with Leadership(lock, job, check_interval=0.05) as leadership:
            assert leadership.wait_leading(10)
        assert lock.acquisition is None
    lock.close()
    assert len(tokens) == 2
    assert tokens[0] < tokens[1]


@pytest.mark.anyio
async def test_an_async_pglock_term_carries_the_acquisition_generation(
    pg: tuple[str, Any], dsn: str
) -> None:
    lock = AsyncPgLock(pg[0], dsn)
    tokens: list[int] = []
    started = anyio.Event()

    async def job(term: LeaderTerm) -> None:
        acquisition = lock.acquisition
        assert acquisition is not None
        assert type(term.token) is int
        assert term.token == acquisition.generation
        tokens.append(acquisition.generation)
        started.set()
        await anyio.sleep_forever()

    for _ in range(2):
        started = anyio.Event()
        async with AsyncLeadership(lock, job, check_interval=0.05):
            with anyio.fail_after(10):
                await started.wait()
        assert lock.acquisition is None
    await lock.aclose()
    assert len(tokens) == 2
    assert tokens[0] < tokens[1]


# ---- a terminated session is noticed at once, not at the next check -------------------

#: A check interval far longer than the tests wait: only a hang-up can stop the job in time.
LONG_INTERVAL = 60.0


@pytest.fixture
def no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new leader starts its job at once: the settle time of ``LONG_INTERVAL`` would
    be minutes, and what comes before the job is not what these tests are about."""
    monkeypatch.setattr(_leader_threads, "settle", lambda interval: 0.0)
    monkeypatch.setattr(_leader_async, "settle", lambda interval: 0.0)


def test_a_terminated_session_ends_a_threads_term_at_once(
    pg: tuple[str, Any], dsn: str, no_settle: None
) -> None:
    name, admin = pg
    lock = PgLock(name, dsn)
    started, ended = threading.Event(), threading.Event()

    def job(term: LeaderTerm) -> None:
        started.set()
        term.wait()
        ended.set()

    with Leadership(lock, job, check_interval=LONG_INTERVAL) as leadership:
        assert started.wait(10)
        time.sleep(0.2)  # the watcher is waiting by now
        (pid,), _ = key_holders(admin, lock.key)
        sent = time.monotonic()
        terminate(admin, pid)
        assert ended.wait(10), "the job was not told that its term ended"
        took = time.monotonic() - sent
        started.clear()
        assert started.wait(10)  # it leads again, on a new session
        assert leadership.leading
    lock.close()
    assert took < 2.0, took


@pytest.mark.anyio
async def test_a_terminated_session_cancels_an_async_job_at_once(
    pg: tuple[str, Any], dsn: str, no_settle: None
) -> None:
    name, admin = pg
    lock = AsyncPgLock(name, dsn)
    started = anyio.Event()
    cancelled: list[float] = []

    async def job(term: LeaderTerm) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.append(time.monotonic())

    async with AsyncLeadership(lock, job, check_interval=LONG_INTERVAL):
        with anyio.fail_after(10):
            await started.wait()
        await anyio.sleep(0.2)  # the confirming task is waiting by now
        (pid,), _ = key_holders(admin, lock.key)
        sent = time.monotonic()
        await anyio.to_thread.run_sync(terminate, admin, pid)
        with anyio.fail_after(10):
            while not cancelled:
                await anyio.sleep(0.005)
    await lock.aclose()
    assert cancelled[0] - sent < 2.0, cancelled[0] - sent


class _CountedPgLock(PgLock):
    checks = 0

    def check(self) -> None:
        type(self).checks += 1
        super().check()


def test_traffic_on_the_session_is_no_hang_up(
    pg: tuple[str, Any], dsn: str, no_settle: None
) -> None:
    """Results and notifications arriving on the lock's (shared) connection do not wake
    the watcher: it never checks before the interval, and the leader stays leader."""
    name, admin = pg
    started, ended = threading.Event(), threading.Event()

    def job(term: LeaderTerm) -> None:
        started.set()
        term.wait()
        ended.set()

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("LISTEN aplock_test")
        lock = _CountedPgLock(name, conn)
        with Leadership(lock, job, check_interval=LONG_INTERVAL) as leadership:
            assert started.wait(10)
            for _ in range(20):
                admin.execute("NOTIFY aplock_test, 'x'")
                conn.execute("SELECT pg_sleep(0.01)")
            time.sleep(0.2)
            assert leadership.leading
            assert not ended.is_set()
            assert _CountedPgLock.checks == 0
        lock.close()
    assert ended.is_set()


def test_where_hang_ups_cannot_be_watched_the_checks_still_notice(
    pg: tuple[str, Any], dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback of platforms without ``EPOLLRDHUP``: the check every interval."""
    monkeypatch.setattr(_leader_watch, "_RDHUP", None)
    name, admin = pg
    lock = PgLock(name, dsn)
    started, ended = threading.Event(), threading.Event()

    def job(term: LeaderTerm) -> None:
        started.set()
        term.wait()
        ended.set()

    with Leadership(lock, job, check_interval=0.1):
        assert started.wait(10)
        (pid,), _ = key_holders(admin, lock.key)
        terminate(admin, pid)
        assert ended.wait(10)
    lock.close()
