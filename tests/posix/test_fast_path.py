"""The compiled fast path beside the pure-Python one: one lock, either path, any mix.

A process on one path and a process on the other share a lock: they exclude each other,
and each recovers the other's dead holder. The errors a user can cause are the same on
both paths. Skipped where the extension is not built (except under CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator

import pytest

import aplock
from aplock._posix import fastpath
from tests.support import fast_workers as fw
from tests.support.procs import SPAWN, kill, running

#: Skipped where the extension is not built, except under CI, which builds it.
pytestmark = pytest.mark.skipif(
    not fastpath.built() and not os.environ.get("CI"), reason="the extension is not built"
)


def test_the_extension_is_built() -> None:
    # Under CI a missing extension fails here, rather than every other test skipping.
    assert fastpath.built(), "aplock._posix._fast did not build: see pip's output"


PATHS = [pytest.param(True, id="pure"), pytest.param(False, id="compiled")]


@pytest.fixture
def restore_env() -> Iterator[None]:
    """Put ``APLOCK_PURE`` back as it was (``open_on_path`` sets it)."""
    before = os.environ.get(fastpath.PURE_ENV)
    yield
    if before is None:
        os.environ.pop(fastpath.PURE_ENV, None)
    else:
        os.environ[fastpath.PURE_ENV] = before


@pytest.mark.timeout(120)
def test_a_process_on_each_path_excludes_the_other(
    lock_name: str, tmp_path: os.PathLike[str]
) -> None:
    path = os.path.join(tmp_path, "counter")
    with open(path, "wb") as f:
        f.write(bytes(8))
    rounds = 3000
    ready_pure, ready_fast, go = SPAWN.Event(), SPAWN.Event(), SPAWN.Event()
    with (
        running(fw.count, lock_name, True, path, rounds, ready_pure, go) as (pure,),
        running(fw.count, lock_name, False, path, rounds, ready_fast, go) as (fast,),
    ):
        assert ready_pure.wait(60)
        assert ready_fast.wait(60)
        go.set()
        pure.join(100)
        fast.join(100)
        assert (pure.exitcode, fast.exitcode) == (0, 0)
    with open(path, "rb") as f:
        assert int.from_bytes(f.read(8), sys.byteorder) == 2 * rounds  # no update lost
    assert not aplock.Lock(lock_name).locked()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("holder_pure", PATHS)
def test_a_dead_holder_on_one_path_is_recovered_on_the_other(
    lock_name: str, holder_pure: bool, restore_env: None
) -> None:
    acquired = SPAWN.Event()
    with running(fw.hold_until_killed, lock_name, holder_pure, acquired) as (holder,):
        assert acquired.wait(60)
        lock = fw.open_on_path(lock_name, not holder_pure)
        assert not lock.acquire(False)
        kill(holder)
        holder.join(10)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert lock.acquire(timeout=20)
        assert [type(w.message) for w in caught] == [aplock.AbandonedLockWarning]
        acquisition = lock.acquisition
        assert acquisition is not None
        assert acquisition.abandoned_pid == holder.pid
        lock.release()
        assert not lock.locked()


def _errors(name: str, pure: bool) -> list[tuple[type[BaseException], str]]:
    lock = fw.open_on_path(name, pure)
    seen: list[tuple[type[BaseException], str]] = []
    with pytest.raises(ValueError, match="nobody holds it") as not_held:
        lock.release()
    seen.append((not_held.type, str(not_held.value)))
    lock.close()
    for call in (lock.acquire, lambda: lock.acquire(False), lock.release, lock.locked):
        with pytest.raises(aplock.LockClosedError) as closed:
            call()
        seen.append((closed.type, str(closed.value)))
    aplock.unlink(name)  # the next open in this process gets a handle of its own
    return seen


def test_the_errors_are_the_same_on_both_paths(lock_name: str, restore_env: None) -> None:
    pure, compiled = _errors(lock_name, True), _errors(lock_name, False)
    assert pure == compiled
    assert pure[0][0] is aplock.LockNotHeldError


@pytest.mark.parametrize("pure", PATHS)
def test_the_version_line_names_the_path(pure: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != fastpath.PURE_ENV}
    if pure:
        env[fastpath.PURE_ENV] = "1"
    out = subprocess.run(
        [sys.executable, "-m", "aplock", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    ).stdout
    assert ("pure Python" in out) == pure, out
    assert ("compiled fast path" in out) != pure, out


@pytest.mark.parametrize("pure", PATHS)
def test_each_path_is_the_one_selected(lock_name: str, pure: bool, restore_env: None) -> None:
    lock = fw.open_on_path(lock_name, pure)  # raises if it is not
    with lock:
        assert lock.locked()
    assert not lock.locked()
