"""Fixtures shared by every test: unique lock names, both async backends, leak checks."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import aplock

SHM = "/dev/shm"
#: Tags this run's lock names, so that its checks ignore other runs on the same host;
#: the workers of a ``pytest -n`` run share their controller's.
RUN = uuid.uuid4().hex[:8]
#: Tags this process's lock names: ``RUN``, and in a worker of ``pytest -n`` its id, so
#: that a test's own leak check ignores what tests of other workers do meanwhile.
SESSION = RUN
_at_start: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    """In a worker of ``pytest -n``: take the run's tag from the controller."""
    global RUN, SESSION  # set before any test module imports them
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        RUN = workerinput["aplock_run"]
        SESSION = f"{RUN}w{workerinput['workerid'].removeprefix('gw').zfill(3)}"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """In the controller of ``pytest -n``: give every worker the run's tag."""
    node.workerinput["aplock_run"] = RUN


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def aplock_objects() -> set[str]:
    """The aplock semaphores and records present in /dev/shm."""
    try:
        entries = os.listdir(SHM)
    except FileNotFoundError:
        return set()
    return {e for e in entries if e.startswith(("aplock.", "sem.aplock."))}


def pytest_sessionstart(session: pytest.Session) -> None:
    """Remember what was in /dev/shm before the run (its controller's, with ``-n``)."""
    if not _is_worker(session.config):
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


@dataclass(frozen=True)
class Leftovers:
    """The aplock objects that appeared in /dev/shm during the run, by whose they are."""

    ours: list[str]
    others: list[str]
    failed_the_run: bool


_LEFTOVERS = pytest.StashKey[Leftovers]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the whole run if its tests (or their child processes) left objects in /dev/shm.

    Lock names in tests carry ``SESSION``, and so does the readable part of their POSIX
    names: objects without it belong to other programs or other runs on the host, and
    only get a note in the summary. With ``-n``, the controller checks, once every worker
    has ended.
    """
    if _is_worker(session.config):
        return
    new = aplock_objects() - _at_start
    ours = sorted(e for e in new if RUN in e)
    fails = bool(ours) and session.exitstatus == pytest.ExitCode.OK
    if fails:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    others = sorted(e for e in new if RUN not in e)
    session.config.stash[_LEFTOVERS] = Leftovers(ours, others, fails)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Say why a run whose tests all passed failed, and what appeared without our tag."""
    left = config.stash.get(_LEFTOVERS, None)
    if left is None:
        return
    write = terminalreporter.write_line
    if left.ours:
        terminalreporter.section("aplock objects left behind", sep="=", red=True)
        write(
            ("every test passed, but this run fails: " if left.failed_the_run else "")
            + f"this run's tests (or their child processes) left {len(left.ours)} aplock "
            f"objects in {SHM}, named with this run's session tag {RUN!r}. A session- "
            "or module-scoped fixture, or a child process that outlived its test, did not "
            "unlink its lock:"
        )
        for entry in left.ours:
            write(f"  {entry}")
        write(f"remove them with: rm {SHM}/*{RUN}*")
    if left.others:
        write(
            f"note: {len(left.others)} aplock objects appeared in {SHM} during the run "
            "without this run's session tag (other programs or test runs on this host); "
            "not counted"
        )


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


@pytest.fixture
def dsn() -> str:
    """The PostgreSQL test server's connection string (skips, or fails when
    ``APLOCK_REQUIRE_POSTGRES`` is set, without one)."""
    from tests.support import pg_helpers

    return pg_helpers.require_server()


@pytest.fixture
def pg(dsn: str) -> Iterator[tuple[str, Any]]:
    """A fresh lock name and an admin connection; no session may hold the lock after."""
    from tests.support import pg_helpers

    yield from pg_helpers.name_and_admin(dsn)
