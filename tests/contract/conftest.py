"""The contract suite's fixtures: each case runs over the kinds its module lists.

A test module sets ``KINDS`` (``kinds.LOCKS`` or ``kinds.SEMAPHORES``); every test that
takes ``kind`` runs once per kind, and ``site`` opens that kind's objects on a fresh
name: a POSIX name from ``lock_name``, or a PostgreSQL name from ``pg`` (which skips
without a server, or fails when ``APLOCK_REQUIRE_POSTGRES=1``). A kind's known defects
mark its cases ``xfail(strict=True)``. The sync kinds run on asyncio and Trio, the async
ones on uvloop too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import aplock
from aplock.postgres import advisory_key
from tests.contract.drive import Primitive
from tests.contract.kinds import BY_ID, Kind
from tests.support import pg_helpers


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every case that takes ``kind`` over its module's ``KINDS``."""
    if "kind" in metafunc.fixturenames:
        kinds: tuple[Kind, ...] = metafunc.module.KINDS
        metafunc.parametrize("kind", kinds, ids=str)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the cases that a kind declares as known defects ``xfail(strict=True)``; run
    the sync kinds on asyncio and Trio only (on uvloop the adapter would be all that
    changes), the async kinds on every event loop."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        kind = params.params.get("kind") if params is not None else None
        if params is None or not isinstance(kind, Kind) or not isinstance(item, pytest.Function):
            keep.append(item)
            continue
        backend = params.params.get("anyio_backend")
        if not kind.is_async and isinstance(backend, tuple) and backend[1].get("use_uvloop"):
            drop.append(item)
            continue
        keep.append(item)
        others = [str(v) for k, v in params.params.items() if k not in ("kind", "anyio_backend")]
        case = item.originalname
        for key in (case, *(f"{case}[{v}]" for v in others)):
            reason = kind.defects.get(key)
            if reason is not None:
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"{kind.id}: {reason}"))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


class Site:
    """Where a case opens its objects: one name, and the server for PostgreSQL kinds."""

    def __init__(self, kind: Kind, name: str, dsn: str | None, admin: Any) -> None:
        self.kind = kind
        self.name = name
        self.dsn = dsn
        self.admin = admin
        self.opened: list[Primitive] = []
        self.other_names: list[str] = []

    def open(
        self, kind: Kind | None = None, *, value: int = 1, name: str | None = None
    ) -> Primitive:
        """An object of *kind* (the case's kind by default) on the name (or *name*)."""
        kind = kind or self.kind
        obj = kind.open(self.name if name is None else name, self.dsn, value)
        prim = Primitive(kind, obj, value)
        self.opened.append(prim)
        return prim

    def open_twin(self, *, value: int = 1) -> Primitive:
        """An object of the kind's twin (its sync or async side) on the name."""
        return self.open(BY_ID[self.kind.twin], value=value)

    def other_name(self, suffix: str = ".other") -> str:
        """Another name, cleaned up after the case."""
        name = self.name + suffix
        self.other_names.append(name)
        return name

    def waiters(self, prim: Primitive) -> int | None:
        """How many wait for the primitive, where that can be seen: sessions waiting in
        the server, or an ``AsyncLock``'s tasks of this event loop; else ``None``."""
        if self.admin is not None:
            return pg_helpers.key_holders(self.admin, advisory_key(self.name))[1]
        if isinstance(prim.obj, aplock.AsyncLock):
            return prim.obj.statistics().tasks_waiting
        return None

    def sessions_holding(self) -> int | None:
        """How many server sessions hold the name (``None`` for a POSIX kind)."""
        if self.admin is None:
            return None
        return len(pg_helpers.key_holders(self.admin, advisory_key(self.name))[0])

    async def until_waiting(self, prim: Primitive, done: anyio.Event, *, seen: bool = True) -> None:
        """Return once *prim* is seen waiting (or, where that cannot be seen, once it has
        not returned for 0.05 s); fail if its acquire returned (*done*) before.

        ``seen=False``: the wait cannot be seen (an object waiting for itself waits in
        the object, not in the server).
        """
        if not seen or self.waiters(prim) is None:
            with anyio.move_on_after(0.05):
                await done.wait()
        else:
            with anyio.fail_after(10):
                while not self.waiters(prim) and not done.is_set():
                    await anyio.sleep(0.005)
        assert not done.is_set(), "acquire() returned while the primitive was held"

    def close(self) -> None:
        """Close every object the case opened; unlink the other names."""
        for prim in self.opened:
            prim.close_quietly()
        for name in self.other_names:
            if self.kind.backend == "posix":
                aplock.unlink(name)


@pytest.fixture
def site(kind: Kind, request: pytest.FixtureRequest) -> Iterator[Site]:
    """The case's kind on a fresh name (and server, for a PostgreSQL kind)."""
    if kind.backend == "postgres":
        dsn = request.getfixturevalue("dsn")
        name, admin = request.getfixturevalue("pg")
        made = Site(kind, name, dsn, admin)
    else:
        made = Site(kind, request.getfixturevalue("lock_name"), None, None)
    try:
        yield made
    finally:
        with contextlib.suppress(aplock.LockClosedError):
            made.close()
