"""The fencing token of the PostgreSQL locks: ``acquisition.generation``, the transaction
id that the server assigns in the round trip that gets the lock, against a real server.

Transaction ids come from one counter per cluster, so generations grow across
connections, processes and locks, and a takeover from a terminated session gets a
greater one; ``acquisition`` is ``None`` while the object holds nothing.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest

import aplock
from aplock._pg import sql as pgsql
from aplock._pg.translate import unavailable
from aplock.postgres import AsyncPgLock, LockLostError, PgLock
from tests.support import pg_helpers
from tests.support.procs import running

Admin = psycopg.Connection[Any]


@pytest.fixture
def locks(dsn: str, pg: tuple[str, Admin]) -> Iterator[list[PgLock]]:
    """Two PgLocks on the test name, each with its own session; closed after the test."""
    made = [PgLock(pg[0], dsn), PgLock(pg[0], dsn)]
    yield made
    for lock in made:
        lock.close()


def generation(lock: PgLock | AsyncPgLock) -> int:
    """The generation of the acquisition *lock* holds (it must hold one)."""
    acquisition = lock.acquisition
    assert acquisition is not None, f"{lock!r} has no acquisition"
    assert acquisition.abandoned_pid is None
    assert type(acquisition.generation) is int
    return acquisition.generation


def xact_id(admin: Admin) -> int:
    """A transaction id of the admin session's own (each statement is a transaction)."""
    row = admin.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
    assert row is not None
    return int(row[0])


def strictly_increasing(values: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def wait_in_the_server(pg: tuple[str, Admin], lock: PgLock) -> tuple[threading.Thread, list[bool]]:
    """Start ``lock.acquire()`` in a thread and return once it waits in the server."""
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(lock.acquire(timeout=20)))
    waiter.start()
    pg_helpers.wait_until(
        lambda: pg_helpers.key_holders(pg[1], lock.key)[1] == 1, what="the waiter to queue"
    )
    return waiter, got


def test_acquisition_is_none_unless_held(locks: list[PgLock]) -> None:
    a, b = locks
    assert a.acquisition is None
    assert a.acquire(False)
    assert isinstance(a.acquisition, aplock.Acquisition)
    generation(a)
    assert b.acquire(False) is False
    assert b.acquisition is None
    assert b.acquire(timeout=0.05) is False  # a wait in the server that timed out
    assert b.acquisition is None
    a.release()
    assert a.acquisition is None
    assert b.acquisition is None
    with a:
        generation(a)
    assert a.acquisition is None
    a.acquire()
    a.close()  # releases
    assert a.acquisition is None


def test_generation_is_a_transaction_id_of_the_acquiring_round_trip(
    locks: list[PgLock], pg: tuple[str, Admin]
) -> None:
    a, _ = locks
    before = xact_id(pg[1])
    a.acquire()
    assert before < generation(a) < xact_id(pg[1])
    a.release()


def test_generations_grow_across_two_connections_and_other_locks(
    dsn: str, locks: list[PgLock], pg: tuple[str, Admin]
) -> None:
    a, b = locks
    other = PgLock(pg[0] + ".other", dsn)
    seen: list[int] = []
    for _ in range(5):
        assert a.acquire(False)  # the try
        seen.append(generation(a))
        waiter, got = wait_in_the_server(pg, b)  # the wait
        a.release()
        waiter.join(20)
        assert got == [True]
        seen.append(generation(b))
        with other:  # another lock of the same cluster
            seen.append(generation(other))
        b.release()
    other.close()
    assert strictly_increasing(seen), seen


def test_generations_grow_across_spawned_processes(
    dsn: str, pg: tuple[str, Admin], tmp_path: Any
) -> None:
    path = tmp_path / "generations"
    path.write_text("")
    rounds = 20
    with running(pg_helpers.record_generations, dsn, pg[0], str(path), rounds, count=2) as procs:
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
    lines = [line.split() for line in path.read_text().splitlines()]
    assert len(lines) == 2 * rounds
    assert len({pid for pid, _ in lines}) == 2
    seen = [int(g) for _, g in lines]  # in the order of the acquisitions (under the lock)
    assert strictly_increasing(seen), seen


def test_a_takeover_from_a_terminated_session_gets_a_greater_generation(
    locks: list[PgLock], pg: tuple[str, Admin]
) -> None:
    a, b = locks
    a.acquire()
    first = generation(a)
    (pid,), _ = pg_helpers.key_holders(pg[1], a.key)
    waiter, got = wait_in_the_server(pg, b)
    pg_helpers.terminate(pg[1], pid)
    waiter.join(20)
    assert got == [True]
    taken_over = generation(b)
    assert taken_over > first
    with pytest.raises(LockLostError):
        a.check()
    with pytest.raises(LockLostError):
        a.release()
    assert a.acquisition is None
    b.release()
    assert a.acquire(timeout=10)  # a new session
    assert generation(a) > taken_over
    a.release()


def test_both_server_expressions_give_the_same_transaction_id(dsn: str) -> None:
    """Before PostgreSQL 13 the generation is ``txid_current()``: the same counter."""
    old, new = pgsql.generation(pgsql.XACT_ID_SINCE - 1), pgsql.generation(pgsql.XACT_ID_SINCE)
    assert "txid_current()" in old
    assert "pg_current_xact_id()" in new
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT {old}, {new}").fetchone()
    assert row is not None
    assert row[0] == row[1]
    assert type(row[0]) is int
    assert type(row[1]) is int


def test_a_standby_refusing_a_transaction_id_says_to_use_the_primary() -> None:
    refused = psycopg.errors.ReadOnlySqlTransaction(
        "cannot execute pg_current_xact_id() during recovery"
    )
    error = unavailable("jobs", "PostgreSQL at db:5432/app", "taking the lock", refused)
    assert error.name == "jobs"
    assert "standby" in str(error)
    assert "connect to it" in str(error)


@pytest.mark.anyio
async def test_async_generations_grow_and_vanish_at_release(
    dsn: str, pg: tuple[str, Admin]
) -> None:
    lock, other = AsyncPgLock(pg[0], dsn), AsyncPgLock(pg[0], dsn)
    seen: list[int] = []
    assert lock.acquisition is None
    async with lock:
        seen.append(generation(lock))
    assert lock.acquisition is None
    assert await lock.acquire(block=False)
    seen.append(generation(lock))
    got: list[bool] = []

    async def wait_for_it() -> None:
        got.append(await other.acquire(timeout=20))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_it)
        with anyio.fail_after(10):
            while pg_helpers.key_holders(pg[1], lock.key)[1] != 1:
                await anyio.sleep(0.005)
        assert other.acquisition is None  # waiting is not holding
        lock.release()  # in the background: the acquisition ends at once
        assert lock.acquisition is None
    assert got == [True]
    seen.append(generation(other))
    await other.arelease()
    assert other.acquisition is None
    assert strictly_increasing(seen), seen
    await lock.aclose()
    await other.aclose()
