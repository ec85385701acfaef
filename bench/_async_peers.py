"""The async locks compared: aplock.AsyncLock, the naive thread-per-waiter designs,
filelock's AsyncFileLock, and anyio.Lock as the in-process floor.

Every lock object is used as ``async with lock:``. Peers that are cross-process locks
also provide a synchronous *holder* (to hold the same lock from another thread) and a
``settle`` step that counts leaked acquisitions after a cancellation round.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import posix_ipc

import aplock

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import TracebackType

BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
}


def run(backend: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run *main* on one of ``BACKENDS``."""
    name, options = BACKENDS[backend]
    return anyio.run(main, backend=name, backend_options=options)


class ThreadCount:
    """Counts the threads started from now on, and the peak of extra live threads."""

    def __init__(self) -> None:
        self.base = threading.active_count()
        self.started = 0
        self.peak = 0
        original = threading.Thread.start
        counter = self

        def start(thread: threading.Thread) -> None:
            original(thread)
            counter.started += 1
            counter.peak = max(counter.peak, threading.active_count() - counter.base)

        threading.Thread.start = start  # type: ignore[method-assign,assignment]


@dataclass
class Context:
    """Where a case's lock lives, and the objects made for it."""

    name: str
    path: str
    objects: list[Any] = field(default_factory=list)
    shared: Any = None


class AsyncPeer:
    """An async lock under test."""

    key = ""
    backends: tuple[str, ...] = ("asyncio", "uvloop", "trio")
    #: Whether another process can use the same lock (and so whether it has a holder).
    cross_process = True
    #: Whether a waiter polls (sleeps and retries) instead of being woken.
    polls = False
    note = ""

    def prepare(self, tag: str, workdir: str) -> Context:
        """Create the lock's OS objects for a case (outside any event loop)."""
        return Context(f"{tag}.alock", os.path.join(workdir, f"{self.key}.lock"))

    def make(self, ctx: Context) -> Any:
        """A lock object for one task (inside the event loop)."""
        raise NotImplementedError

    def holder(self, ctx: Context) -> tuple[Callable[[], object], Callable[[], object]]:
        """Synchronous ``acquire``, ``release`` of the same lock, used from one thread."""
        raise NotImplementedError

    async def settle(self, ctx: Context) -> int:
        """After a round whose tasks are all done: count (and repair) leaked acquisitions."""
        raise NotImplementedError

    def cleanup(self, ctx: Context) -> None:
        """Remove the case's OS objects."""


class Aplock(AsyncPeer):
    key = "aplock"
    note = "aplock: aplock.AsyncLock(name), one object shared by the tasks"

    def prepare(self, tag: str, workdir: str) -> Context:
        ctx = super().prepare(tag, workdir)
        ctx.shared = aplock.AsyncLock(ctx.name)
        return ctx

    def make(self, ctx: Context) -> Any:
        return ctx.shared

    def holder(self, ctx: Context) -> tuple[Callable[[], object], Callable[[], object]]:
        lock = ctx.shared.lock
        return lock.acquire, lock.release

    async def settle(self, ctx: Context) -> int:
        lock = ctx.shared.lock
        if lock.acquire(False):
            lock.release()
            return 0
        lock.release()  # held, and no task or thread owns it: a leaked acquisition
        return 1

    def cleanup(self, ctx: Context) -> None:
        ctx.shared.lock.close()
        aplock.unlink(ctx.name)


class AnyioLock(AsyncPeer):
    key = "anyio.Lock"
    cross_process = False
    note = "anyio.Lock: anyio.Lock(), in-process only, the floor for the cost of an async lock"

    def make(self, ctx: Context) -> Any:
        if ctx.shared is None:
            ctx.shared = anyio.Lock()
        return ctx.shared


class NaiveLock:
    """``async with`` over a bare semaphore, waiting in a thread: what users write today.

    Counts the acquisitions its threads make and the ones its tasks receive; the
    difference is acquisitions that nobody owns (their task was cancelled).
    """

    def __init__(self, sem: posix_ipc.Semaphore, wait: Callable[[Callable[[], None]], Any]):
        self.sem = sem
        self._wait = wait
        self._mutex = threading.Lock()
        self.blocked = 0  # threads inside sem.acquire()
        self.taken = 0  # acquisitions made by threads
        self.owned = 0  # acquisitions handed to a task

    def _take(self) -> None:
        with self._mutex:
            self.blocked += 1
        try:
            self.sem.acquire()
        finally:
            with self._mutex:
                self.blocked -= 1
                self.taken += 1

    async def __aenter__(self) -> NaiveLock:
        await self._wait(self._take)
        self.owned += 1
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.sem.release()

    def settle(self) -> int:
        """Let every orphaned thread take the semaphore; return the new unowned acquisitions."""
        deadline = time.monotonic() + 5
        while self.blocked and time.monotonic() < deadline:
            before = self.taken
            self.sem.release()  # an orphan takes it, as it would take a real release
            while self.taken == before and time.monotonic() < deadline:
                time.sleep(0.0002)
        try:
            self.sem.acquire(0)
        except posix_ipc.BusyError:
            self.sem.release()  # held by nobody: restore the lock for the next round
        else:
            self.sem.release()
        leaked = self.taken - self.owned
        self.taken = self.owned = 0
        return leaked


class _Naive(AsyncPeer):
    def _sem_name(self, ctx: Context) -> str:
        return f"/{ctx.name}.raw"

    def prepare(self, tag: str, workdir: str) -> Context:
        ctx = super().prepare(tag, workdir)
        sem = posix_ipc.Semaphore(self._sem_name(ctx), posix_ipc.O_CREX, 0o600, 1)
        ctx.shared = NaiveLock(sem, self._waiter())
        return ctx

    def _waiter(self) -> Callable[[Callable[[], None]], Any]:
        raise NotImplementedError

    def make(self, ctx: Context) -> Any:
        return ctx.shared

    def holder(self, ctx: Context) -> tuple[Callable[[], object], Callable[[], object]]:
        sem = ctx.shared.sem
        return sem.acquire, sem.release

    async def settle(self, ctx: Context) -> int:
        leaked: int = ctx.shared.settle()
        return leaked

    def cleanup(self, ctx: Context) -> None:
        ctx.shared.sem.close()
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(self._sem_name(ctx))


class NaiveAsyncio(_Naive):
    key = "to_thread"
    backends = ("asyncio", "uvloop")
    note = "to_thread: await asyncio.to_thread(sem.acquire) on a posix_ipc.Semaphore"

    def _waiter(self) -> Callable[[Callable[[], None]], Any]:
        return asyncio.to_thread


class NaiveAnyio(_Naive):
    key = "anyio.to_thread"
    note = "anyio.to_thread: await anyio.to_thread.run_sync(sem.acquire, abandon_on_cancel=True)"

    def _waiter(self) -> Callable[[Callable[[], None]], Any]:
        def wait(fn: Callable[[], None]) -> Any:
            return anyio.to_thread.run_sync(fn, abandon_on_cancel=True)

        return wait


class AsyncFileLockPeer(AsyncPeer):
    key = "AsyncFileLock"
    backends = ("asyncio", "uvloop")
    polls = True
    note = "AsyncFileLock: filelock.AsyncFileLock(path), one object per task, defaults (polls)"

    def make(self, ctx: Context) -> Any:
        import filelock

        lock = filelock.AsyncFileLock(ctx.path)
        ctx.objects.append(lock)
        return lock

    def holder(self, ctx: Context) -> tuple[Callable[[], object], Callable[[], object]]:
        import filelock

        lock = filelock.FileLock(ctx.path)
        return lock.acquire, lock.release

    async def settle(self, ctx: Context) -> int:
        await anyio.sleep(0.01)  # let executor calls of cancelled tasks finish
        leaked = 0
        for lock in ctx.objects:
            if lock.is_locked:
                leaked += 1
                await lock.release(force=True)
        ctx.objects.clear()
        fd = os.open(ctx.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            leaked += 1  # held by a descriptor that no object knows
        finally:
            os.close(fd)
        return leaked


PEERS: dict[str, AsyncPeer] = {
    p.key: p for p in (Aplock(), AnyioLock(), NaiveAsyncio(), NaiveAnyio(), AsyncFileLockPeer())
}
NOTES = tuple(f"{p.note}" for p in PEERS.values())
