"""Helpers for the PostgreSQL backend's tests: the server, names, child processes.

The server is ``$APLOCK_TEST_POSTGRES`` (default: the loopback one CI starts). Without a
reachable server the tests skip, saying why, unless ``APLOCK_REQUIRE_POSTGRES=1``, in
which case they fail: CI sets it, so they never skip there silently.
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

DSN = os.environ.get("APLOCK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

_reason: list[str | None] = []


def unreachable_reason() -> str | None:
    """Why the test server cannot be used, or ``None`` if it can (checked once)."""
    if not _reason:
        try:
            with psycopg.connect(DSN, connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
            _reason.append(None)
        except psycopg.Error as exc:
            _reason.append(f"no PostgreSQL server at APLOCK_TEST_POSTGRES={DSN!r}: {exc}")
    return _reason[0]


def require_server() -> str:
    """The DSN of a usable server; skip (or, if required, fail) the test otherwise."""
    reason = unreachable_reason()
    if reason is not None:
        if os.environ.get("APLOCK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"APLOCK_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(f"{reason} (set APLOCK_REQUIRE_POSTGRES=1 to make this an error)")
    return DSN


def key_holders(conn: psycopg.Connection[Any], key: int) -> tuple[list[int], int]:
    """(backend pids holding advisory *key*, number of sessions waiting for it)."""
    rows = conn.execute(
        "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
        " AND classid = ((%(k)s::bigint >> 32) & 4294967295)::oid"
        " AND objid = (%(k)s::bigint & 4294967295)::oid",
        {"k": key},
    ).fetchall()
    return [pid for pid, granted in rows if granted], sum(1 for _, g in rows if not g)


def wait_until(predicate: Any, timeout: float = 10.0, what: str = "") -> None:
    """Poll *predicate* until true; fail after *timeout* seconds."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.005)


def name_and_admin(dsn: str) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    """A fresh lock name and an admin connection; at the end, no session may hold it."""
    from aplock.postgres import advisory_key

    name = f"pgtest.{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        yield name, admin
        key = advisory_key(name)
        if key_holders(admin, key) == ([], 0):
            return
        gc.collect()  # lock objects a test dropped close their sessions
        wait_until(
            lambda: key_holders(admin, key) == ([], 0),
            timeout=5,
            what=f"no session to hold or wait for {name!r} after the test",
        )


def terminate(admin: psycopg.Connection[Any], pid: int) -> None:
    """``pg_terminate_backend`` a session and wait until it is gone."""
    admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_until(
        lambda: (
            not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        ),
        what=f"backend {pid} to end",
    )


# ---- child process targets (spawned: importable by module name) ---------------------


def hold_until_killed(dsn: str, name: str, ready: Any) -> None:
    """Take the lock, say so, then wait to be killed."""
    from aplock.postgres import PgLock

    lock = PgLock(name, dsn)
    lock.acquire()
    ready.set()
    time.sleep(600)


def try_once(dsn: str, name: str, result: Any) -> None:
    """Report whether the lock could be taken without waiting."""
    from aplock.postgres import PgLock

    lock = PgLock(name, dsn)
    got = lock.acquire(False)
    result.put(got)
    if got:
        lock.release()
    lock.close()


def count_in_lock(dsn: str, name: str, path: str, rounds: int) -> None:
    """*rounds* times: under the lock, prove no one else is inside, then bump a counter."""
    from aplock.postgres import PgLock

    lock = PgLock(name, dsn)
    marker = path + ".inside"
    for _ in range(rounds):
        with lock:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails on overlap
            os.close(fd)
            with open(path) as f:
                value = int(f.read())
            with open(path, "w") as f:
                f.write(str(value + 1))
            os.unlink(marker)
    lock.close()


def record_generations(dsn: str, name: str, path: str, rounds: int) -> None:
    """*rounds* times: under the lock, append ``pid generation`` to the file at *path*."""
    from aplock.postgres import PgLock

    lock = PgLock(name, dsn)
    for _ in range(rounds):
        with lock:
            acquisition = lock.acquisition
            assert acquisition is not None
            with open(path, "a") as f:
                f.write(f"{os.getpid()} {acquisition.generation}\n")
            time.sleep(0.002)  # long enough for the other process to queue in the server
    lock.close()


def unpickle_and_try(pickled: bytes, result: Any) -> None:
    """Unpickle a lock and report whether it could be taken without waiting."""
    import pickle

    lock = pickle.loads(pickled)
    got = lock.acquire(False)
    result.put(got)
    if got:
        lock.release()
    lock.close()


def run_once_in_child(dsn: str, name: str, path: str, backend: str) -> None:
    """Start up like a replica: ``AsyncOnce`` on an ``AsyncPgLock`` and ``AsyncPgMarker``."""
    import anyio

    from aplock.postgres import AsyncPgLock, AsyncPgMarker
    from aplock.startup import AsyncOnce

    async def work() -> None:
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")
        await anyio.sleep(0.2)  # long enough for the others to be waiting

    async def main() -> None:
        lock = AsyncPgLock(name, dsn)
        marker = AsyncPgMarker(dsn, table="aplock_once_test")
        await AsyncOnce(lock, key="v1", marker=marker).run(work, timeout=60)
        await lock.aclose()

    anyio.run(main, backend=backend)
