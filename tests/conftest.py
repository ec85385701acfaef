"""Fixtures shared by every test: unique lock names, both async backends, leak checks."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

import aplock

SHM = "/dev/shm"
#: Tags this run's lock names, so that its checks ignore other runs on the same host.
SESSION = uuid.uuid4().hex[:8]
_at_start: set[str] = set()


def aplock_objects() -> set[str]:
    """The aplock semaphores and records present in /dev/shm."""
    try:
        entries = os.listdir(SHM)
    except FileNotFoundError:
        return set()
    return {e for e in entries if e.startswith(("aplock.", "sem.aplock."))}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remember what was in /dev/shm before the run."""
    _at_start.update(aplock_objects())


@pytest.fixture(autouse=True)
def _no_leaked_objects() -> Iterator[None]:
    """Fail any test that leaves an aplock object of this run behind in /dev/shm."""
    before = aplock_objects()
    yield
    leaked = {e for e in aplock_objects() - before if SESSION in e}
    if leaked:
        for entry in leaked:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM, entry))
        pytest.fail(f"test leaked aplock objects in {SHM}: {sorted(leaked)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the whole run if it left anything named aplock in /dev/shm."""
    left = aplock_objects() - _at_start
    if left:
        print(f"\naplock objects left in {SHM} after the run: {sorted(left)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def lock_name() -> Iterator[str]:
    """A fresh lock name, unlinked after the test."""
    name = f"test.{SESSION}.{uuid.uuid4().hex[:8]}"
    yield name
    aplock.unlink(name)


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    """Run every AnyIO test on asyncio, asyncio with uvloop, and Trio."""
    return request.param  # type: ignore[no-any-return]
