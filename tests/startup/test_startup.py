"""aplock.startup: run start-up work once among processes, threads and tasks."""

from __future__ import annotations

import json
import os
import pickle
import stat
import sys
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

import aplock
from aplock.startup import AsyncOnce, FileMarker, Once, OnceTimeoutError
from tests.support import startup_workers
from tests.support.procs import SPAWN, kill, running

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def name(lock_name: str) -> Iterator[str]:
    """A fresh lock name whose run-once markers are removed after the test."""
    yield lock_name
    FileMarker().clear(lock_name)


class Counter:
    """Work that counts its runs."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1

    async def run_async(self) -> None:
        await anyio.sleep(0.01)
        self.runs += 1


# -- sync -------------------------------------------------------------------------------


def test_runs_once_then_skips(name: str) -> None:
    work = Counter()
    once = Once(name, key="v1")
    assert not once.done()
    assert once.run(work) is True
    assert once.run(work) is False
    assert Once(name, key="v1").run(work) is False
    assert work.runs == 1
    assert once.done()
    assert not aplock.Lock(name).locked()


def test_reset_makes_the_next_run_run(name: str) -> None:
    work = Counter()
    once = Once(name, key="v1")
    once.run(work)
    assert once.reset() is True
    assert once.reset() is False
    assert not once.done()
    assert once.run(work) is True
    assert work.runs == 2


def test_keys_are_independent_and_old_keys_stay_done(name: str) -> None:
    # A rolling restart overlaps old and new workers: an old worker restarted after the
    # new version ran must still skip its own (already done) work.
    work = Counter()
    assert Once(name, key="v1").run(work)
    assert Once(name, key="v2").run(work)
    assert not Once(name, key="v1").run(work)
    assert not Once(name, key="v2").run(work)
    assert work.runs == 2
    assert FileMarker().clear(name) == 2
    assert not Once(name, key="v1").done()


def test_failed_work_leaves_the_marker_unset_and_the_lock_free(name: str) -> None:
    once = Once(name, key="v1")

    def broken() -> None:
        raise RuntimeError("migration failed")

    with pytest.raises(RuntimeError, match="migration failed"):
        once.run(broken)
    assert not once.done()
    assert not aplock.Lock(name).locked()
    work = Counter()
    assert once.run(work) is True
    assert work.runs == 1


def test_threads_run_the_work_once(name: str) -> None:
    work = Counter()
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def worker() -> None:
        once = Once(name, key="v1")
        barrier.wait()
        results.append(once.run(work))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 7 + [True]
    assert work.runs == 1


def test_processes_run_the_work_once(name: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    go = SPAWN.Event()
    results = SPAWN.Queue()
    with running(startup_workers.run_once, name, "v1", str(journal), go, results, count=4) as procs:
        go.set()
        outcomes = dict(results.get(timeout=30) for _ in procs)
        for p in procs:
            p.join(30)
    lines = journal.read_text().splitlines()
    assert list(outcomes.values()).count(True) == 1
    (runner,) = (pid for pid, ran in outcomes.items() if ran)
    assert lines == [f"start {runner}", f"done {runner}"]


def test_work_killed_midway_is_redone_by_the_next_holder(name: str) -> None:
    started = SPAWN.Event()
    with running(startup_workers.run_once_and_hang, name, "v1", started) as (proc,):
        assert started.wait(30)
        assert not Once(name, key="v1").done()
        kill(proc)
        proc.join(10)
    work = Counter()
    with pytest.warns(aplock.AbandonedLockWarning) as caught:
        assert Once(name, key="v1").run(work) is True
    assert work.runs == 1
    assert caught[0].message.pid == proc.pid  # type: ignore[union-attr]
    assert Once(name, key="v1").done()
    assert not aplock.Lock(name).locked()


def leave_a_dead_runner(name: str) -> None:
    """Kill a process while it runs the work for key "v1": its lock is abandoned."""
    started = SPAWN.Event()
    with running(startup_workers.run_once_and_hang, name, "v1", started) as (proc,):
        assert started.wait(30)
        kill(proc)
        proc.join(10)


def abandoned_warning(caught: list[warnings.WarningMessage]) -> warnings.WarningMessage:
    (warning,) = [w for w in caught if issubclass(w.category, aplock.AbandonedLockWarning)]
    return warning


@pytest.mark.parametrize("method", ["run", "reset"])
def test_takeover_warning_points_at_the_caller(name: str, method: str) -> None:
    leave_a_dead_runner(name)
    once = Once(name, key="v1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if method == "run":
            line = sys._getframe().f_lineno + 1
            assert once.run(Counter()) is True
        else:
            line = sys._getframe().f_lineno + 1
            assert once.reset() is False
    warning = abandoned_warning(caught)
    assert (warning.filename, warning.lineno) == (__file__, line)


def test_timeout_waiting_for_the_lock(name: str) -> None:
    lock = aplock.Lock(name)
    once = Once(lock, key="v1")
    work = Counter()
    with lock:
        with pytest.raises(OnceTimeoutError) as info:
            once.run(work, timeout=0.1)
        with pytest.raises(TimeoutError):
            once.reset(timeout=0)
    assert work.runs == 0
    err = info.value
    assert isinstance(err, aplock.LockError)
    assert (err.name, err.key, err.timeout) == (name, "v1", 0.1)
    assert repr(name) in str(err)
    assert "'v1'" in str(err)
    assert "python -m aplock show" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is OnceTimeoutError
    assert (copy.name, copy.key, copy.timeout, str(copy)) == (name, "v1", 0.1, str(err))


def test_accepts_lock_objects(name: str) -> None:
    lock = aplock.Lock(name)
    assert Once(lock, key="k").lock is lock
    assert Once(aplock.AsyncLock(lock), key="k").lock is lock
    async_once = AsyncOnce(lock, key="k")
    assert isinstance(async_once.lock, aplock.AsyncLock)
    assert async_once.lock.name == name
    once = Once(name, key="k")
    assert (once.name, once.key) == (name, "k")
    assert isinstance(once.marker, FileMarker)
    assert repr(once) == f"<aplock.startup.Once {name!r} key='k'>"
    assert repr(async_once) == f"<aplock.startup.AsyncOnce {name!r} key='k'>"


@pytest.mark.parametrize(("key", "error"), [("", ValueError), (None, TypeError), (1, TypeError)])
def test_bad_keys(name: str, key: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="key"):
        Once(name, key=key)  # type: ignore[arg-type]
    with pytest.raises(error, match="key"):
        AsyncOnce(name, key=key)  # type: ignore[arg-type]


# -- a lock and marker of another backend ----------------------------------------------


class MemoryLock:
    """A lock of the ``SupportsLock`` shape that is not an aplock lock."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return self._lock.acquire(block, -1 if timeout is None else timeout)

    def release(self) -> None:
        self._lock.release()


class AsyncMemoryLock:
    """A lock of the ``SupportsAsyncLock`` shape that is not an aplock lock."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = anyio.Lock()

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        with anyio.move_on_after(timeout if block and timeout is not None else float("inf")):
            await self._lock.acquire()
            return True
        return False

    def release(self) -> None:
        self._lock.release()


class MemoryMarker:
    """A ``Marker``."""

    def __init__(self) -> None:
        self.done: set[tuple[str, str]] = set()

    def is_done(self, name: str, key: str) -> bool:
        return (name, key) in self.done

    def mark_done(self, name: str, key: str) -> None:
        self.done.add((name, key))

    def clear(self, name: str, key: str | None = None) -> int:
        gone = {(n, k) for n, k in self.done if n == name and key in (None, k)}
        self.done -= gone
        return len(gone)


class AsyncMemoryMarker:
    """An ``AsyncMarker``."""

    def __init__(self) -> None:
        self.sync = MemoryMarker()

    async def is_done(self, name: str, key: str) -> bool:
        await anyio.lowlevel.checkpoint()
        return self.sync.is_done(name, key)

    async def mark_done(self, name: str, key: str) -> None:
        await anyio.lowlevel.checkpoint()
        self.sync.mark_done(name, key)

    async def clear(self, name: str, key: str | None = None) -> int:
        await anyio.lowlevel.checkpoint()
        return self.sync.clear(name, key)


def test_another_backend_needs_its_own_marker() -> None:
    with pytest.raises(TypeError, match="marker"):
        Once(MemoryLock("other"), key="v1")
    with pytest.raises(TypeError, match="marker"):
        AsyncOnce(AsyncMemoryLock("other"), key="v1")


def test_sync_once_with_another_backend() -> None:
    marker = MemoryMarker()
    once = Once(MemoryLock("other"), key="v1", marker=marker)
    work = Counter()
    assert once.run(work)
    assert not once.run(work)
    assert marker.done == {("other", "v1")}
    assert once.reset()
    assert marker.done == set()


@pytest.mark.anyio
@pytest.mark.parametrize("marker_kind", ["sync", "async"])
async def test_async_once_with_another_backend(marker_kind: str) -> None:
    marker = MemoryMarker() if marker_kind == "sync" else AsyncMemoryMarker()
    work = Counter()
    results: list[bool] = []

    async def start_worker() -> None:
        once = AsyncOnce(lock, key="v1", marker=marker)
        results.append(await once.run(work.run_async))

    lock = AsyncMemoryLock("other")
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(start_worker)
    assert sorted(results) == [False] * 4 + [True]
    assert work.runs == 1
    once = AsyncOnce(lock, key="v1", marker=marker)
    assert await once.done()
    assert await once.reset()
    assert not await once.done()


# -- async -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_tasks_run_the_work_once(name: str) -> None:
    work = Counter()
    results: list[bool] = []

    async def start_worker() -> None:
        results.append(await AsyncOnce(name, key="v1").run(work.run_async))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(start_worker)
    assert sorted(results) == [False] * 9 + [True]
    assert work.runs == 1
    once = AsyncOnce(name, key="v1")
    assert await once.done()
    assert not aplock.Lock(name).locked()
    assert await once.reset()
    assert not await once.done()


@pytest.mark.anyio
async def test_async_once_accepts_plain_functions(name: str) -> None:
    work = Counter()
    assert await AsyncOnce(name, key="v1").run(work)
    assert work.runs == 1


@pytest.mark.anyio
async def test_async_failed_work_leaves_the_marker_unset(name: str) -> None:
    once = AsyncOnce(name, key="v1")

    async def broken() -> None:
        raise RuntimeError("warm-up failed")

    with pytest.raises(RuntimeError, match="warm-up failed"):
        await once.run(broken)
    assert not await once.done()
    assert not aplock.Lock(name).locked()


@pytest.mark.anyio
async def test_async_cancelled_work_leaves_the_marker_unset(name: str) -> None:
    once = AsyncOnce(name, key="v1")
    started = anyio.Event()

    async def slow() -> None:
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(once.run, slow)
        await started.wait()
        tg.cancel_scope.cancel()
    assert not await once.done()
    assert not aplock.Lock(name).locked()


@pytest.mark.anyio
async def test_async_timeout_waiting_for_the_lock(name: str) -> None:
    lock = aplock.AsyncLock(name)
    once = AsyncOnce(lock, key="v1")
    work = Counter()
    async with lock:
        with pytest.raises(OnceTimeoutError):
            await once.run(work.run_async, timeout=0.1)
        with pytest.raises(OnceTimeoutError):
            await once.reset(timeout=0.05)
    assert work.runs == 0


@pytest.mark.anyio
async def test_async_work_killed_midway_is_redone(name: str) -> None:
    started = SPAWN.Event()
    with running(startup_workers.run_once_and_hang, name, "v1", started) as (proc,):
        assert await anyio.to_thread.run_sync(started.wait, 30)
        kill(proc)
        await anyio.to_thread.run_sync(proc.join, 10)
    work = Counter()
    with pytest.warns(aplock.AbandonedLockWarning):
        assert await AsyncOnce(name, key="v1").run(work.run_async) is True
    assert work.runs == 1
    assert await AsyncOnce(name, key="v1").done()


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["run", "reset"])
async def test_async_takeover_warning_points_at_the_caller(name: str, method: str) -> None:
    await anyio.to_thread.run_sync(leave_a_dead_runner, name)
    once = AsyncOnce(name, key="v1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if method == "run":
            line = sys._getframe().f_lineno + 1
            assert await once.run(Counter().run_async) is True
        else:
            line = sys._getframe().f_lineno + 1
            assert await once.reset() is False
    warning = abandoned_warning(caught)
    assert (warning.filename, warning.lineno) == (__file__, line)


# -- FileMarker ----------------------------------------------------------------------------


def test_file_marker_files(name: str, tmp_path: Path) -> None:
    marker = FileMarker(tmp_path)
    assert marker.directory == str(tmp_path)
    path = Path(marker.path(name, "release 2.0/\u03b1"))
    assert path.parent == tmp_path
    assert path.name.startswith(f"aplock.{name.replace('.', '_')}.")
    assert ".once.release_2_0." in path.name
    assert marker.path(name, "a") != marker.path(name, "b")
    assert marker.path(name, "a") != marker.path(name + "x", "a")
    assert not marker.is_done(name, "release 2.0/\u03b1")
    marker.mark_done(name, "release 2.0/\u03b1")
    assert marker.is_done(name, "release 2.0/\u03b1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    record = json.loads(path.read_text())
    assert record["name"] == name
    assert record["key"] == "release 2.0/\u03b1"
    assert record["pid"] == os.getpid()
    marker.mark_done(name, "other")
    marker.mark_done(name + "x", "other")
    assert marker.clear(name, "other") == 1
    assert marker.clear(name, "other") == 0
    assert marker.clear(name) == 1
    assert marker.clear(name + "x") == 1
    assert list(tmp_path.iterdir()) == []
    assert FileMarker(tmp_path / "missing").clear(name) == 0
    assert repr(marker) == f"FileMarker({str(tmp_path)!r}, mode=0o600)"


def test_file_marker_mode(name: str, tmp_path: Path) -> None:
    marker = FileMarker(tmp_path, mode=0o640)
    marker.mark_done(name, "v1")
    assert stat.S_IMODE(os.stat(marker.path(name, "v1")).st_mode) == 0o640


def test_default_marker_lives_beside_the_lock(name: str) -> None:
    once = Once(name, key="v1")
    once.run(Counter())
    marker = FileMarker()
    if os.path.isdir("/dev/shm"):
        assert marker.directory == "/dev/shm"
    assert os.path.exists(marker.path(name, "v1"))


def test_file_marker_refuses_a_link(name: str, tmp_path: Path) -> None:
    marker = FileMarker(tmp_path)
    target = tmp_path / "target"
    target.write_text("")
    os.symlink(target, marker.path(name, "v1"))
    with pytest.raises(aplock.LockPermissionError, match="not a regular file"):
        marker.is_done(name, "v1")
    with pytest.raises(aplock.LockPermissionError, match=repr(name)):
        marker.mark_done(name, "v1")
    assert target.read_text() == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_file_marker_distrusts_another_users_marker(name: str, tmp_path: Path) -> None:
    marker = FileMarker(tmp_path)
    marker.mark_done(name, "v1")
    os.chown(marker.path(name, "v1"), 12345, -1)
    with pytest.raises(aplock.LockPermissionError, match="uid 12345"):
        marker.is_done(name, "v1")
    assert FileMarker(tmp_path, mode=0o666).is_done(name, "v1")
