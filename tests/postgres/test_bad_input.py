"""Bad ``block`` and ``timeout`` values fail on every call of ``PgLock`` and ``AsyncPgLock``,
the lock free or held, before any round trip; none takes or waits for the lock (see
``tests/unit/test_bad_input.py`` for the rules, which are ``multiprocessing``'s).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import psycopg
import pytest

from aplock.postgres import AsyncPgLock, PgLock
from tests.support import pg_helpers
from tests.support.bad_calls import Bad, bad_calls, expected

Admin = psycopg.Connection[Any]


@pytest.fixture
def pg_held(dsn: str, pg: tuple[str, Admin]) -> Iterator[PgLock]:
    """A PgLock, in a session of its own, holding the test name until the test ends."""
    holder = PgLock(pg[0], dsn)
    assert holder.acquire(False)
    yield holder
    if holder.held:
        holder.release()
    holder.close()


@bad_calls
def test_pg_lock_free(dsn: str, pg: tuple[str, Admin], bad: Bad) -> None:
    lock = PgLock(pg[0], dsn)
    try:
        with pytest.raises(bad.error, match=expected(bad, "aplock.postgres.PgLock", pg[0])):
            lock.acquire(**bad.kwargs)
        assert not lock.held
        assert pg_helpers.key_holders(pg[1], lock.key) == ([], 0)
    finally:
        lock.close()


@bad_calls
@pytest.mark.timeout(10)  # a bad block taken for True would otherwise wait forever
def test_pg_lock_held(dsn: str, pg: tuple[str, Admin], pg_held: PgLock, bad: Bad) -> None:
    holders = pg_helpers.key_holders(pg[1], pg_held.key)[0]
    assert len(holders) == 1
    lock = PgLock(pg[0], dsn)
    try:
        with pytest.raises(bad.error, match=expected(bad, "aplock.postgres.PgLock", pg[0])):
            lock.acquire(**bad.kwargs)
        assert not lock.held
        assert pg_helpers.key_holders(pg[1], lock.key) == (holders, 0)  # none waits
    finally:
        lock.close()


@bad_calls
@pytest.mark.anyio
async def test_async_pg_lock_free(dsn: str, pg: tuple[str, Admin], bad: Bad) -> None:
    lock = AsyncPgLock(pg[0], dsn)
    try:
        kind = "aplock.postgres.AsyncPgLock"
        with pytest.raises(bad.error, match=expected(bad, kind, pg[0])):
            await lock.acquire(**bad.kwargs)
        assert not lock.held
        assert not lock.locked()
        assert pg_helpers.key_holders(pg[1], lock.key) == ([], 0)
    finally:
        await lock.aclose()


@bad_calls
@pytest.mark.anyio
async def test_async_pg_lock_held(
    dsn: str, pg: tuple[str, Admin], pg_held: PgLock, bad: Bad
) -> None:
    holders = pg_helpers.key_holders(pg[1], pg_held.key)[0]
    assert len(holders) == 1
    lock = AsyncPgLock(pg[0], dsn)
    try:
        kind = "aplock.postgres.AsyncPgLock"
        with anyio.fail_after(5), pytest.raises(bad.error, match=expected(bad, kind, pg[0])):
            await lock.acquire(**bad.kwargs)
        assert not lock.held
        assert not lock.locked()
        assert pg_helpers.key_holders(pg[1], lock.key) == (holders, 0)  # none waits
    finally:
        await lock.aclose()
