"""AsyncPgLock's own behaviour on asyncio, uvloop and Trio: sessions lost, connections,
event loops, the drivers, processes.

The contract it shares with every lock class (acquire, release, timeouts, exclusion,
checkpoints, cancellation at random moments, close, repr) is ``tests/contract``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import anyio
import psycopg
import pytest
from psycopg.rows import dict_row

import aplock
from aplock.postgres import AsyncPgLock, AsyncPgMarker, LockLostError, PgLock
from aplock.startup import AsyncOnce
from tests.support import pg_helpers
from tests.support.procs import running

Admin = psycopg.Connection[Any]

pytestmark = pytest.mark.anyio


def waiters(pg: tuple[str, Admin], lock: AsyncPgLock) -> int:
    return pg_helpers.key_holders(pg[1], lock.key)[1]


async def wait_for_waiters(pg: tuple[str, Admin], lock: AsyncPgLock, count: int) -> None:
    with anyio.fail_after(10):
        while waiters(pg, lock) != count:
            await anyio.sleep(0.005)


async def test_key_check_and_arelease(dsn: str, pg: tuple[str, Admin]) -> None:
    lock = AsyncPgLock(pg[0], dsn)
    assert lock.key == aplock.postgres.advisory_key(pg[0])
    async with lock:
        assert lock.held
        await lock.check()
    assert not lock.held
    with pytest.raises(aplock.LockNotHeldError, match="does not hold"):
        await lock.arelease()
    await lock.aclose()


async def test_lost_session_is_reported(dsn: str, pg: tuple[str, Admin]) -> None:
    lock, other = AsyncPgLock(pg[0], dsn), AsyncPgLock(pg[0], dsn)

    async def lose_it() -> None:
        async with lock:
            (pid,), _ = pg_helpers.key_holders(pg[1], lock.key)
            pg_helpers.terminate(pg[1], pid)
            assert await other.acquire(timeout=10)  # the server released it
            with pytest.raises(LockLostError, match="connection to PostgreSQL broke"):
                await lock.check()

    with pytest.raises(LockLostError):  # from leaving the async with
        await lose_it()
    assert not lock.held
    await other.arelease()
    assert await lock.acquire(timeout=10)  # reconnects
    await lock.arelease()
    await lock.aclose()
    await other.aclose()


async def test_background_release_of_a_lost_lock_is_logged(
    dsn: str, pg: tuple[str, Admin], caplog: pytest.LogCaptureFixture
) -> None:
    lock = AsyncPgLock(pg[0], dsn)
    await lock.acquire()
    (pid,), _ = pg_helpers.key_holders(pg[1], lock.key)
    pg_helpers.terminate(pg[1], pid)
    with caplog.at_level("WARNING", logger="aplock.postgres"):
        lock.release()  # synchronous: it cannot raise what the server has not said yet
        await lock.aclose()  # waits for the background release
    assert "connection to PostgreSQL broke" in caplog.text
    assert pg[0] in caplog.text


async def test_sync_connection_runs_in_threads(dsn: str, pg: tuple[str, Admin]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        a, b = AsyncPgLock(pg[0], conn), AsyncPgLock(pg[0], conn)
        async with a:
            assert await b.acquire(timeout=0.2) is False  # same session: still exclusive
        async with b:
            pass
        await a.aclose()
        await b.aclose()
        assert not conn.closed


async def test_wraps_a_pglock(dsn: str, pg: tuple[str, Admin]) -> None:
    sync = PgLock(pg[0], dsn)
    lock = AsyncPgLock(sync)
    with pytest.raises(TypeError, match="not both"):
        AsyncPgLock(sync, dsn)
    async with lock:
        assert sync.held
        assert await anyio.to_thread.run_sync(sync.acquire, True, 0.1) is False
    assert not sync.held
    await lock.aclose()
    assert not sync.closed  # not ours to close
    sync.close()


async def test_works_with_async_once(dsn: str, pg: tuple[str, Admin]) -> None:
    marker = AsyncPgMarker(dsn, table="aplock_once_test")
    lock = AsyncPgLock(pg[0], dsn)
    runs: list[int] = []

    async def work() -> None:
        runs.append(1)

    try:
        assert await AsyncOnce(lock, key="v1", marker=marker).run(work)
        assert not await AsyncOnce(lock, key="v1", marker=marker).run(work)
        assert runs == [1]
    finally:
        await marker.clear(pg[0])
        await lock.aclose()


# ---- asyncio only: native cancellation, no threads, AsyncConnection -----------------


def test_native_asyncio_cancellation_leaves_nothing_held(dsn: str, pg: tuple[str, Admin]) -> None:
    """asyncio.timeout and task.cancel(), not just AnyIO scopes, on both drivers."""

    async def main(arg: Any) -> None:
        holder, waiter = PgLock(pg[0], dsn), AsyncPgLock(pg[0], arg)
        holder.acquire()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await waiter.acquire()
        task = asyncio.ensure_future(waiter.acquire())
        await wait_for_waiters(pg, waiter, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        holder.release()
        for _ in range(50):  # a worker thread may still be winding down its wait
            if holder.acquire(False):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("a cancelled acquire left the lock held")
        holder.release()
        holder.close()
        await waiter.aclose()

    asyncio.run(main(dsn))
    with psycopg.connect(dsn, autocommit=True) as conn:
        asyncio.run(main(conn))


def test_native_driver_uses_no_threads(dsn: str, pg: tuple[str, Admin]) -> None:
    async def main() -> None:
        holder = PgLock(pg[0], dsn)
        locks = [AsyncPgLock(pg[0], dsn) for _ in range(5)]
        for lock in locks:  # connect first
            assert await lock.acquire()
            await lock.arelease()
        holder.acquire()
        before = threading.active_count()
        results: list[bool] = []

        async def wait(lock: AsyncPgLock) -> None:
            results.append(await lock.acquire(timeout=10))
            await lock.arelease()

        async with anyio.create_task_group() as tg:
            for lock in locks:
                for _ in range(4):
                    tg.start_soon(wait, lock)
            await wait_for_waiters(pg, locks[0], 5)  # one session per object waits
            assert threading.active_count() == before
            holder.release()
        assert results == [True] * 20
        holder.close()
        for lock in locks:
            await lock.aclose()

    asyncio.run(main())


def test_shared_async_connection(dsn: str, pg: tuple[str, Admin]) -> None:
    async def main() -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        a, b = AsyncPgLock(pg[0], conn), AsyncPgLock(pg[0], conn)
        async with a:
            assert await b.acquire(timeout=0.2) is False
        async with b:
            pass
        await a.aclose()
        await b.aclose()
        assert not conn.closed
        return conn

    conn = asyncio.run(main())
    lock = AsyncPgLock(pg[0], conn)

    async def under_trio() -> None:
        with pytest.raises(RuntimeError, match="only on asyncio"):
            await lock.acquire()

    anyio.run(under_trio, backend="trio")
    with pytest.raises(ValueError, match="autocommit"):
        asyncio.run(_non_autocommit(dsn, pg[0]))
    asyncio.run(conn.close())


def test_shared_async_connection_with_another_row_factory(dsn: str, pg: tuple[str, Admin]) -> None:
    async def main() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, row_factory=dict_row)
        lock = AsyncPgLock(pg[0], conn)
        async with lock:
            await lock.check()
        await lock.aclose()
        await conn.close()

    asyncio.run(main())


async def _non_autocommit(dsn: str, name: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        AsyncPgLock(name, conn)


def test_one_event_loop_at_a_time(dsn: str, pg: tuple[str, Admin]) -> None:
    lock = AsyncPgLock(pg[0], dsn)

    async def use() -> None:
        assert await lock.acquire(timeout=5)
        await lock.arelease()

    asyncio.run(use())  # an idle lock moves to the next event loop
    anyio.run(use, backend="trio")
    asyncio.run(use())

    held, done = threading.Event(), threading.Event()

    async def hold() -> None:
        await lock.acquire()
        held.set()
        await anyio.to_thread.run_sync(done.wait)
        await lock.arelease()

    thread = threading.Thread(target=asyncio.run, args=(hold(),))
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(RuntimeError, match="another event loop"):
            anyio.run(use, backend="trio")

        async def release() -> None:
            lock.release()

        with pytest.raises(RuntimeError, match="another event loop"):
            anyio.run(release, backend="trio")
    finally:
        done.set()
        thread.join(10)
    asyncio.run(lock.aclose())


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_once_across_processes(
    dsn: str, pg: tuple[str, Admin], tmp_path: Any, backend: str
) -> None:
    ran = tmp_path / "ran"
    ran.touch()
    try:
        with running(pg_helpers.run_once_in_child, dsn, pg[0], str(ran), backend, count=3) as procs:
            for proc in procs:
                proc.join(60)
                assert proc.exitcode == 0
        assert len(ran.read_text().split()) == 1
    finally:
        AsyncPgMarker(dsn, table="aplock_once_test")._marker.clear(pg[0])


async def test_unreachable_server_raises_the_error_itself(pg: tuple[str, Admin]) -> None:
    lock = AsyncPgLock(pg[0], "postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")
    with pytest.raises(aplock.LockUnavailableError, match="connecting on PostgreSQL") as info:
        await lock.acquire(timeout=1)
    assert type(info.value) is aplock.LockUnavailableError  # not an ExceptionGroup around it
    assert info.value.name == pg[0]
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    await lock.aclose()


async def test_close_without_awaiting(dsn: str, pg: tuple[str, Admin]) -> None:
    lock = AsyncPgLock(pg[0], dsn)
    assert await lock.acquire()
    with pytest.raises(RuntimeError, match=r"await aclose\(\)"):
        lock.close()  # releasing is a round trip: it refuses rather than leave it held
    lock.release()
    with pytest.raises(RuntimeError, match="releasing"):
        lock.close()  # the unlock is still on its way
    assert await lock.acquire(block=False)  # waits for that unlock
    await lock.arelease()
    lock.close()
    lock.close()  # idempotent
    assert lock.closed
    assert "closed" in repr(lock)
    with pytest.raises(aplock.LockClosedError, match="closed; create a new one"):
        await lock.acquire()
    other = AsyncPgLock(pg[0], dsn)
    assert await other.acquire(block=False)  # nothing was left held
    await other.aclose()


async def test_a_terminated_waiter_waits_on(dsn: str, pg: tuple[str, Admin]) -> None:
    """Its own session, broken in the server-side wait, is reopened once (no raw psycopg
    error, no exception group): then it gets the lock when the holder lets go."""
    holder, waiter = PgLock(pg[0], dsn), AsyncPgLock(pg[0], dsn)
    holder.acquire()

    def waiting_pid() -> int:
        while True:
            row = (
                pg[1]
                .execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
                    " AND NOT granted AND objid = (%s::bigint & 4294967295)::oid",
                    [waiter.key],
                )
                .fetchone()
            )
            if row is not None:
                return int(row[0])
            time.sleep(0.005)

    async def terminate_then_release() -> None:
        pid = await anyio.to_thread.run_sync(waiting_pid)
        pg_helpers.terminate(pg[1], pid)
        await wait_for_waiters(pg, waiter, 1)  # waiting again, in a new session
        holder.release()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(terminate_then_release)
            assert await waiter.acquire(timeout=15)
    await waiter.arelease()
    holder.close()
    await waiter.aclose()


def test_pickling_says_what_to_send_instead(dsn: str, lock_name: str) -> None:
    import pickle

    with pytest.raises(TypeError, match=f"{lock_name!r}.*cannot be pickled.*connection string"):
        pickle.dumps(AsyncPgLock(lock_name, dsn))


async def test_release_from_a_thread_without_a_loop_is_a_clear_error(
    dsn: str, pg: tuple[str, Admin], lock_name: str
) -> None:
    lock = AsyncPgLock(lock_name, dsn)
    await lock.acquire()
    errors: list[BaseException] = []

    def release() -> None:
        try:
            lock.release()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=release)
    thread.start()
    thread.join(10)
    assert len(errors) == 1
    assert type(errors[0]) is RuntimeError
    assert lock_name in str(errors[0])
    assert lock.locked()  # still held: release it where it was acquired
    await lock.arelease()
    await lock.aclose()
