"""Driving an object of any kind from async code, the same way whatever its class.

``Primitive`` wraps an object: the blocking calls of a sync class run in a worker
thread, an async class is awaited. ``run_workers`` runs critical sections under it in
threads (sync objects) and tasks (async ones) at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread

from aplock.postgres import AsyncPgLock
from tests.contract.kinds import Kind

#: The most seconds between a release and the wake-up of the task or thread waiting.
PROMPT = 0.5


class Primitive:
    """An object of any kind, driven from async code the same way.

    A sync class's ``acquire()`` runs in a worker thread (it may block); an async
    class's is awaited. ``release()`` is the synchronous call every class has;
    ``arelease()`` also waits until the release has reached every other object (an
    ``AsyncPgLock``'s ``release()`` only starts the unlock).
    """

    def __init__(self, kind: Kind, obj: Any, value: int = 1) -> None:
        self.kind = kind
        self.obj = obj
        self.value = value

    def __repr__(self) -> str:
        return f"<Primitive {self.kind.id} {self.obj!r}>"

    @property
    def name(self) -> str:
        """The primitive's name."""
        return str(self.obj.name)

    async def acquire(self, block: Any = True, timeout: Any = None) -> bool:
        """The class's ``acquire(block, timeout)``."""
        if self.kind.is_async:
            got = await self.obj.acquire(block, timeout)
        else:
            got = await anyio.to_thread.run_sync(self.obj.acquire, block, timeout)
        assert isinstance(got, bool), f"acquire() returned {got!r}, not a bool"
        return got

    def release(self) -> None:
        """The class's synchronous ``release()``."""
        self.obj.release()

    async def arelease(self) -> None:
        """Release, and wait until every other object can see it."""
        if isinstance(self.obj, AsyncPgLock):
            await self.obj.arelease()
        else:
            self.obj.release()

    def held(self) -> bool:
        """Whether it is held, as ``locked()`` tells (see ``Kind.locked``), or, for a
        semaphore, whether fewer permits than its value are free."""
        if self.kind.counting:
            return int(self.obj.get_value()) < self.value
        return bool(self.obj.locked())

    @property
    def sees_others(self) -> bool:
        """Whether ``held()`` tells of other objects' acquisitions too."""
        return self.kind.locked != "object"

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """Hold it: ``async with`` for an async class; a sync one's ``__enter__`` runs
        in a worker thread."""
        if self.kind.is_async:
            async with self.obj:
                yield
        else:
            await anyio.to_thread.run_sync(self.obj.__enter__)
            try:
                yield
            finally:
                self.obj.__exit__(None, None, None)

    async def aclose(self) -> None:
        """Close it with the method that closes it in any state (``Kind.close``)."""
        if self.kind.close == "aclose":
            await self.obj.aclose()
        else:
            self.obj.close()

    def close_quietly(self) -> None:
        """Close it without awaiting, after a test (an ``AsyncPgLock`` still held is
        left to the garbage collector, which ends its session)."""
        try:
            self.obj.close()
        except RuntimeError:
            if not isinstance(self.obj, AsyncPgLock):
                raise

    def repr_in(self, state: Literal["free", "held", "closed"]) -> str:
        """What ``repr()`` should be in *state*."""
        template = {
            "free": self.kind.repr_free,
            "held": self.kind.repr_held,
            "closed": self.kind.repr_closed,
        }[state]
        key = getattr(self.obj, "key", None)
        return template.format(
            cls=type(self.obj).__name__, name=self.name, pid=os.getpid(), key=key
        )


async def assert_free(prim: Primitive) -> None:
    """Nobody holds the primitive: *prim* takes it at once (and gives it back)."""
    if prim.sees_others:
        assert not prim.held(), f"{prim.name!r} is held by nobody, yet held() says so"
    assert await prim.acquire(False), f"{prim.name!r} should be free"
    await prim.arelease()


class Inside:
    """Counts the workers inside a critical section, and the most at once."""

    def __init__(self) -> None:
        self.now = self.most = self.entries = 0

    def enter(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def leave(self) -> None:
        self.now -= 1
        self.entries += 1


async def run_workers(objs: list[Primitive], workers: int, rounds: int, inside: Inside) -> None:
    """*workers* workers, *rounds* times each, enter and leave a section under the
    primitive: a thread each for sync objects, a task each for async ones, taking the
    objects in turn."""

    def sync_worker(obj: Any) -> None:
        for _ in range(rounds):
            with obj:
                inside.enter()
                time.sleep(0)  # let another thread run, inside
                inside.leave()

    async def async_worker(obj: Any) -> None:
        for _ in range(rounds):
            async with obj:
                inside.enter()
                await anyio.lowlevel.checkpoint()
                inside.leave()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(workers):
                p = objs[i % len(objs)]
                if p.kind.is_async:
                    tg.start_soon(async_worker, p.obj)
                else:
                    tg.start_soon(anyio.to_thread.run_sync, sync_worker, p.obj)
