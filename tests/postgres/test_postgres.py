"""PgLock's own behaviour on PostgreSQL advisory locks, against a real server: the key,
the protocol, sessions, connections, pools, processes.

The contract it shares with every lock class (acquire, release, timeouts, threads,
exclusion, close, pickling, repr) is ``tests/contract``.
"""

from __future__ import annotations

import ast
import hashlib
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import aplock
from aplock._deadline import Deadline
from aplock._pg import sql as pgsql
from aplock._pg.protocol import AdvisoryLock, Held
from aplock._pg.sources import Source
from aplock._pg.steps import Cancel, Execute, Step, Wait
from aplock.postgres import KEY_SQL, LockLostError, PgLock, PgMarker, advisory_key
from aplock.startup import Once
from tests.support import pg_helpers
from tests.support.procs import SPAWN, kill, running

Admin = psycopg.Connection[Any]


@pytest.fixture
def locks(dsn: str, pg: tuple[str, Admin]) -> Iterator[list[PgLock]]:
    """Two PgLocks on the test name, each with its own session; closed after the test."""
    made = [PgLock(pg[0], dsn), PgLock(pg[0], dsn)]
    yield made
    for lock in made:
        lock.close()


# ---- the key: pure, and the same as the server computes --------------------------


def test_key_is_the_documented_formula() -> None:
    name = "orders.migrate"
    digest = hashlib.sha256(b"aplock:" + name.encode()).digest()
    assert advisory_key(name) == int.from_bytes(digest[:8], "big", signed=True)
    assert advisory_key(name) == 2485941605434209034  # fixed forever: other tools rely on it


def test_keys_differ_and_span_the_signed_range() -> None:
    keys = {advisory_key(f"n{i}") for i in range(2000)}
    assert len(keys) == 2000
    assert min(keys) < 0 < max(keys)
    assert all(-(2**63) <= k < 2**63 for k in keys)


def test_key_rejects_what_the_core_rejects() -> None:
    with pytest.raises(TypeError, match="must be a str"):
        advisory_key(b"x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        advisory_key("")


@pytest.mark.parametrize("name", ["orders.migrate", "my app/cache warmup", "é" * 300, "日本"])
def test_server_computes_the_same_key(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(KEY_SQL, [name]).fetchone()
    assert row is not None
    assert row[0] == advisory_key(name)


@pytest.mark.parametrize(
    ("remaining", "ms"),
    [(None, 0), (0.0, 1), (0.0001, 1), (0.25, 250), (1.0001, 1001), (1e12, 2**31 - 1)],
)
def test_lock_timeout_never_ends_a_wait_early(remaining: float | None, ms: int) -> None:
    assert pgsql.lock_timeout_ms(remaining) == ms


# ---- the protocol, without a server: it only yields steps ------------------------


class _Info:
    server_version = 150000


class _Conn:
    """What the protocol reads of a connection (it never calls one)."""

    closed = False
    info = _Info()


class _OneConnection(Source[Any]):
    """A source that lends one connection and takes no I/O to do it."""

    def __init__(self) -> None:
        self.conn: Any = _Conn()
        self.given_back = 0

    def borrow(self, name: str, deadline: Deadline) -> Generator[Step[Any], Any, Any]:
        yield from ()
        return self.conn

    def give_back(self, conn: Any) -> Generator[Step[Any], Any, None]:
        yield from ()
        self.given_back += 1


def _statement(step: Step[Any]) -> str:
    assert isinstance(step, Execute)
    return step.statement


def test_protocol_undoes_a_grant_cut_short_by_lock_timeout_and_waits_again() -> None:
    source = _OneConnection()
    flow = AdvisoryLock("jobs", 42, source).take(Deadline.after(60), Cancel())
    assert _statement(next(flow)) == pgsql.try_statement(150000)
    wait = flow.send((None, 7))  # held by someone else: wait in the server
    assert isinstance(wait, Wait)
    assert "pg_advisory_lock(42)" in wait.statement
    assert "lock_timeout" in wait.statement
    # lock_timeout can fail the statement just after the server granted the lock
    cleanup = flow.throw(psycopg.errors.LockNotAvailable("canceling statement: lock timeout"))
    assert _statement(cleanup) == pgsql.UNLOCK_IF_HELD
    assert isinstance(flow.send(None), Wait)  # then it waits again
    with pytest.raises(StopIteration) as done:
        flow.send((1234, 7))
    assert done.value.value == Held(source.conn, 7, 1234)
    assert source.given_back == 0  # the holder keeps its connection


def test_protocol_cancelled_wait_leaves_nothing_held() -> None:
    source, cancel = _OneConnection(), Cancel[Any]()
    flow = AdvisoryLock("jobs", 42, source).take(Deadline.after(60), cancel)
    next(flow)
    flow.send((None, 7))
    assert cancel.request() == (source.conn, False)  # the runner cancels in the server
    cleanup = flow.throw(psycopg.errors.QueryCanceled("canceling statement"))
    assert _statement(cleanup) == pgsql.UNLOCK_IF_HELD
    with pytest.raises(StopIteration) as done:
        flow.send(None)
    assert done.value.value is None
    assert source.given_back == 1


def test_protocol_interrupted_wait_is_undone_and_the_interruption_goes_on() -> None:
    source = _OneConnection()
    flow = AdvisoryLock("jobs", 42, source).take(Deadline.after(60), Cancel())
    next(flow)
    flow.send((None, 7))
    assert _statement(flow.throw(KeyboardInterrupt())) == pgsql.UNLOCK_IF_HELD
    with pytest.raises(KeyboardInterrupt):
        flow.send(None)
    assert source.given_back == 1


def test_protocol_turns_a_changed_session_into_lock_lost() -> None:
    source = _OneConnection()
    flow = AdvisoryLock("jobs", 42, source).unlock(Held(source.conn, 7, 1234))
    assert _statement(next(flow)) == pgsql.UNLOCK
    with pytest.raises(LockLostError, match="different server session"):
        flow.send((None,))  # the CASE found another backend pid: nothing unlocked


# ---- import hygiene -------------------------------------------------------------


def test_only_the_async_modules_of_the_backend_import_anyio() -> None:
    """ruff lets every module of aplock._pg import psycopg, so this checks the rest of
    its rule there: the async libraries only in the async runner and the markers."""
    async_libraries = {"asyncio", "anyio", "sniffio", "trio"}
    for path in sorted((Path(aplock.__file__).parent / "_pg").glob("*.py")):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.partition(".")[0])
        assert "posix_ipc" not in imported, path.name
        if path.name not in ("aio.py", "marker.py"):
            assert not imported & async_libraries, path.name
        assert "_eventloop" not in path.read_text() or path.name == "aio.py", path.name


def test_core_never_imports_psycopg() -> None:
    code = "import sys, aplock, aplock.aio, aplock.startup; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_import_without_psycopg_says_how_to_install() -> None:
    code = "import sys; sys.modules['psycopg'] = None; import aplock.postgres"
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.returncode != 0
    assert "pip install 'aplock[postgres]'" in out.stderr


def test_public_names_are_listed_and_documented() -> None:
    import inspect
    import types

    import aplock.postgres as module

    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(module.__all__) == public
    for name in module.__all__:
        obj = getattr(module, name)
        if isinstance(obj, (bytes, str)):
            continue
        assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (callable(member) or isinstance(member, property)):
                    assert inspect.getdoc(member), f"{name}.{attr}"


# ---- sessions: shared connections, pools, the server ---------------------------------


def test_shared_connection_objects_exclude_each_other(dsn: str, pg: tuple[str, Admin]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        a, b = PgLock(pg[0], conn), PgLock(pg[0], conn)
        assert a.acquire()
        assert b.acquire(timeout=0.2) is False  # same session: the gate, not the server
        assert b.locked()
        a.release()
        assert b.acquire(False)
        b.release()
        a.close()
        b.close()
        assert not conn.closed  # the user's connection stays open


def test_shared_connection_with_another_row_factory(dsn: str, pg: tuple[str, Admin]) -> None:
    """The lock reads its own rows as tuples, whatever rows the user's connection makes."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        lock = PgLock(pg[0], conn)
        assert lock.acquire(timeout=5)
        lock.check()
        lock.release()
        assert not lock.locked()
        lock.close()


def test_shared_connection_must_be_autocommit_and_idle(dsn: str, pg: tuple[str, Admin]) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(ValueError, match="autocommit"):
        PgLock(pg[0], conn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        lock = PgLock(pg[0], conn)
        with conn.transaction(), pytest.raises(RuntimeError, match="inside a transaction"):
            lock.acquire()
        lock.close()


def test_async_connection_is_refused_with_a_pointer() -> None:
    not_connected = object.__new__(psycopg.AsyncConnection)
    with pytest.raises(TypeError, match="AsyncPgLock"):
        PgLock("x", not_connected)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="connection string"):
        PgLock("x", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connection string"):
        PgLock("x", "this is = not = valid")


class _Pool:
    """The two methods of psycopg_pool.ConnectionPool that PgLock uses."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.free: list[psycopg.Connection[Any]] = []
        self.out = 0

    def getconn(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        self.out += 1
        return self.free.pop() if self.free else psycopg.connect(self.dsn)

    def putconn(self, conn: psycopg.Connection[Any]) -> None:
        self.out -= 1
        assert not conn.autocommit  # given back as it was lent
        if conn.closed:
            return
        self.free.append(conn)

    def close(self) -> None:
        for conn in self.free:
            conn.close()


def test_pool_lends_a_session_per_acquisition(dsn: str, pg: tuple[str, Admin]) -> None:
    pool = _Pool(dsn)
    a, b = PgLock(pg[0], pool), PgLock(pg[0], pool)
    try:
        assert a.acquire()
        assert pool.out == 1
        assert b.acquire(timeout=0.2) is False
        assert pool.out == 1  # the timed-out attempt gave its connection back
        assert b.locked()
        a.release()
        assert pool.out == 0
        with b:
            assert pool.out == 1
    finally:
        a.close()
        b.close()
        pool.close()


def test_unreachable_server_is_lock_unavailable(pg: tuple[str, Admin]) -> None:
    lock = PgLock(pg[0], "postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")
    with pytest.raises(
        aplock.LockUnavailableError, match=r"connecting on PostgreSQL at 127.0.0.1:1"
    ) as info:
        lock.acquire(timeout=1)
    assert info.value.name == pg[0]
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    lock.close()


def test_pickled_into_another_process_is_the_same_lock(dsn: str, locks: list[PgLock]) -> None:
    a, _ = locks
    copy = pickle.loads(pickle.dumps(a))
    assert (copy.key, copy.held) == (a.key, False)
    copy.close()
    a.acquire()
    result = SPAWN.Queue()
    with running(pg_helpers.unpickle_and_try, pickle.dumps(a), result) as procs:
        assert result.get(timeout=30) is False  # same lock in another process: held
        procs[0].join(30)
    a.release()
    with psycopg.connect(dsn, autocommit=True) as conn:
        shared = PgLock("x", conn)
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(shared)
        shared.close()


# ---- losing the session ------------------------------------------------------------


def test_terminated_holder_finds_out_and_the_waiter_gets_it(
    locks: list[PgLock], pg: tuple[str, Admin]
) -> None:
    a, b = locks
    a.acquire()
    (pid,), _ = pg_helpers.key_holders(pg[1], a.key)
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(b.acquire(timeout=20)))
    waiter.start()
    pg_helpers.wait_until(lambda: pg_helpers.key_holders(pg[1], a.key)[1] == 1, what="a waiter")
    pg_helpers.terminate(pg[1], pid)
    waiter.join(20)
    assert got == [True]
    assert a.held  # it cannot know without asking...
    with pytest.raises(LockLostError, match="connection to PostgreSQL broke") as info:
        a.check()  # ...and asking tells it
    assert info.value.name == a.name
    with pytest.raises(LockLostError):
        a.release()
    assert not a.held
    b.release()
    assert a.acquire(timeout=10)  # a new session, transparently
    a.release()


def test_idle_session_dropped_reconnects(locks: list[PgLock], pg: tuple[str, Admin]) -> None:
    a, _ = locks
    a.acquire()
    (pid,), _ = pg_helpers.key_holders(pg[1], a.key)
    a.release()
    pg_helpers.terminate(pg[1], pid)
    assert a.acquire(timeout=10)
    assert pg_helpers.key_holders(pg[1], a.key)[0] != [pid]
    a.release()


def test_locks_released_behind_our_back_are_reported(locks: list[PgLock]) -> None:
    a, _ = locks
    a.acquire()
    held = a._backend._held
    assert held is not None
    held.conn.execute("SELECT pg_advisory_unlock_all()")
    with pytest.raises(LockLostError, match="no longer holds it"):
        a.check()
    with pytest.raises(LockLostError, match="no longer holds it"):
        a.release()


def test_a_changed_session_is_never_unlocked(locks: list[PgLock], pg: tuple[str, Admin]) -> None:
    """What a transaction-pooling proxy does: the connection's session changes."""
    a, _ = locks
    a.acquire()
    held = a._backend._held
    assert held is not None
    a._backend._held = type(held)(held.conn, held.pid + 1, held.generation)  # a proxy's swap
    with pytest.raises(LockLostError, match="transaction mode"):
        a.check()
    with pytest.raises(LockLostError, match="transaction mode"):
        a.release()
    # The unlock was refused, so the session still holds the lock: end it.
    assert pg_helpers.key_holders(pg[1], a.key)[0] == [held.pid]
    a.close()
    pg_helpers.terminate(pg[1], held.pid)


# ---- processes ----------------------------------------------------------------------


def test_mutual_exclusion_across_processes(dsn: str, pg: tuple[str, Admin], tmp_path: Any) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    rounds, count = 25, 4
    with running(pg_helpers.count_in_lock, dsn, pg[0], str(counter), rounds, count=count) as procs:
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
    assert int(counter.read_text()) == rounds * count


def test_sigkilled_holder_releases_to_the_waiter(dsn: str, pg: tuple[str, Admin]) -> None:
    ready = SPAWN.Event()
    with running(pg_helpers.hold_until_killed, dsn, pg[0], ready) as (holder,):
        assert ready.wait(30)
        waiter = PgLock(pg[0], dsn)
        assert waiter.acquire(False) is False
        got: list[bool] = []
        thread = threading.Thread(target=lambda: got.append(waiter.acquire(timeout=20)))
        thread.start()
        pg_helpers.wait_until(
            lambda: pg_helpers.key_holders(pg[1], waiter.key)[1] == 1, what="the waiter to queue"
        )
        start = time.monotonic()
        kill(holder)
        thread.join(20)
        assert got == [True]
        assert time.monotonic() - start < 5  # the server ends the session at once
        waiter.release()
        waiter.close()


# ---- run-once start-up across hosts --------------------------------------------------


def test_once_runs_work_once_with_a_pg_marker(dsn: str, pg: tuple[str, Admin]) -> None:
    marker = PgMarker(dsn, table="aplock_once_test")
    lock = PgLock(pg[0], dsn)
    runs: list[int] = []
    try:
        assert Once(lock, key="v1", marker=marker).run(lambda: runs.append(1))
        assert not Once(lock, key="v1", marker=marker).run(lambda: runs.append(1))
        assert Once(lock, key="v1", marker=marker).done()
        assert runs == [1]
        assert Once(lock, key="v1", marker=marker).reset()
        assert not Once(lock, key="v1", marker=marker).done()
    finally:
        marker.clear(pg[0])
        lock.close()


def test_a_pickle_made_by_the_earlier_module_layout_still_loads() -> None:
    # What pickle.dumps(PgLock("x", "host=127.0.0.1 dbname=test")) gave when PgLock lived
    # in aplock._pgsync.
    old = (
        b"\x80\x04\x95B\x00\x00\x00\x00\x00\x00\x00\x8c\x0eaplock._pgsync\x94\x8c\x06PgLock"
        b"\x94\x93\x94\x8c\x01x\x94\x8c\x1ahost=127.0.0.1 dbname=test\x94\x86\x94R\x94."
    )
    lock = pickle.loads(old)
    try:
        assert isinstance(lock, PgLock)
        assert lock.name == "x"
    finally:
        lock.close()
