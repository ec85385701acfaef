"""The synchronous locks compared: aplock and its peers, behind one small interface.

Each peer is used the way its documentation shows, with its own bound methods in the
timed loops (no wrapper call per operation). A peer's *context* is created once per
case, before any child process is forked; each process then opens its own handle on
it (by name or path), except ``multiprocessing.Lock``, which children inherit.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from dataclasses import dataclass
from typing import Any

import posix_ipc

import aplock

FORK = multiprocessing.get_context("fork")


@dataclass(frozen=True, slots=True)
class Context:
    """Where a case's lock lives: a name, a path, or an inherited object."""

    name: str
    path: str
    inherited: Any = None


class SyncPeer:
    """A cross-process lock implementation under test."""

    key = ""
    #: Whether a blocked acquire polls (sleeps and retries) instead of waiting in the kernel.
    polls = False
    #: How the peer is configured, for the report.
    note = ""

    def prepare(self, tag: str, workdir: str) -> Context:
        """Create the lock for a case (in the measuring process, before forking)."""
        return Context(f"{tag}.lock", os.path.join(workdir, f"{self.key}.lock"))

    def open(self, ctx: Context) -> Any:
        """This process's handle; it has ``acquire()`` and ``release()``."""
        raise NotImplementedError

    def pair_loop(self, handle: Any, n: int) -> None:
        """*n* uncontended ``acquire()`` + ``release()`` pairs."""
        acquire, release = handle.acquire, handle.release
        for _ in range(n):
            acquire()
            release()

    def try_loop(self, handle: Any, n: int) -> None:
        """*n* non-blocking acquire attempts (on a lock another process holds)."""
        raise NotImplementedError

    def try_once(self, handle: Any) -> bool:
        """One non-blocking attempt; whether it acquired (then it is released again)."""
        raise NotImplementedError

    def cleanup(self, ctx: Context) -> None:
        """Remove the case's OS objects."""


class Aplock(SyncPeer):
    key = "aplock"
    note = "aplock.Lock(name): acquire() / release(), holder tracking on (the default)"

    def prepare(self, tag: str, workdir: str) -> Context:
        ctx = super().prepare(tag, workdir)
        aplock.Lock(ctx.name).close()
        return ctx

    def open(self, ctx: Context) -> aplock.Lock:
        return aplock.Lock(ctx.name)

    def try_loop(self, handle: Any, n: int) -> None:
        acquire = handle.acquire
        for _ in range(n):
            acquire(False)

    def try_once(self, handle: Any) -> bool:
        if handle.acquire(False):
            handle.release()
            return True
        return False

    def cleanup(self, ctx: Context) -> None:
        aplock.unlink(ctx.name)


class PosixIpc(SyncPeer):
    key = "posix_ipc"
    note = "posix_ipc.Semaphore(initial 1): acquire() / release(); try: acquire(0) + BusyError"

    @staticmethod
    def _name(ctx: Context) -> str:
        return f"/{ctx.name}.raw"

    def prepare(self, tag: str, workdir: str) -> Context:
        ctx = super().prepare(tag, workdir)
        posix_ipc.Semaphore(self._name(ctx), posix_ipc.O_CREX, 0o600, 1).close()
        return ctx

    def open(self, ctx: Context) -> posix_ipc.Semaphore:
        return posix_ipc.Semaphore(self._name(ctx))

    def try_loop(self, handle: Any, n: int) -> None:
        acquire, busy = handle.acquire, posix_ipc.BusyError
        for _ in range(n):
            try:  # noqa: SIM105 (contextlib.suppress would dominate the timing)
                acquire(0)
            except busy:
                pass

    def try_once(self, handle: Any) -> bool:
        try:
            handle.acquire(0)
        except posix_ipc.BusyError:
            return False
        handle.release()
        return True

    def cleanup(self, ctx: Context) -> None:
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(self._name(ctx))


class MpLock(SyncPeer):
    key = "mp.Lock"
    note = "multiprocessing.Lock() created before fork(), inherited by the children"

    def prepare(self, tag: str, workdir: str) -> Context:
        ctx = super().prepare(tag, workdir)
        return Context(ctx.name, ctx.path, FORK.Lock())

    def open(self, ctx: Context) -> Any:
        return ctx.inherited

    def try_loop(self, handle: Any, n: int) -> None:
        acquire = handle.acquire
        for _ in range(n):
            acquire(False)

    def try_once(self, handle: Any) -> bool:
        if handle.acquire(False):
            handle.release()
            return True
        return False


class FileLockPeer(SyncPeer):
    key = "filelock"
    polls = True
    note = "filelock.FileLock(path), defaults (a waiter polls every 50 ms)"

    def open(self, ctx: Context) -> Any:
        import filelock

        return filelock.FileLock(ctx.path)

    def try_loop(self, handle: Any, n: int) -> None:
        import filelock

        acquire, timeout = handle.acquire, filelock.Timeout
        for _ in range(n):
            try:  # noqa: SIM105 (contextlib.suppress would dominate the timing)
                acquire(blocking=False)
            except timeout:
                pass

    def try_once(self, handle: Any) -> bool:
        import filelock

        try:
            handle.acquire(blocking=False)
        except filelock.Timeout:
            return False
        handle.release()
        return True


class PortalockerPeer(SyncPeer):
    key = "portalocker"
    note = (
        "portalocker.Lock(path, flags=EXCLUSIVE): a blocking flock(), no polling; "
        "try: Lock(path, fail_when_locked=True)"
    )

    def open(self, ctx: Context) -> Any:
        import portalocker

        return portalocker.Lock(ctx.path, flags=portalocker.LockFlags.EXCLUSIVE)

    @staticmethod
    def _nonblocking(handle: Any) -> Any:
        import portalocker

        return portalocker.Lock(handle.filename, fail_when_locked=True)

    def try_loop(self, handle: Any, n: int) -> None:
        import portalocker

        acquire, busy = self._nonblocking(handle).acquire, portalocker.AlreadyLocked
        for _ in range(n):
            try:  # noqa: SIM105 (contextlib.suppress would dominate the timing)
                acquire()
            except busy:
                pass

    def try_once(self, handle: Any) -> bool:
        import portalocker

        lock = self._nonblocking(handle)
        try:
            lock.acquire()
        except portalocker.AlreadyLocked:
            return False
        lock.release()
        return True


class FastenersPeer(SyncPeer):
    key = "fasteners"
    polls = True
    note = "fasteners.InterProcessLock(path), defaults (a waiter polls, 10 to 100 ms)"

    def open(self, ctx: Context) -> Any:
        import fasteners  # type: ignore[import-untyped]

        return fasteners.InterProcessLock(ctx.path)

    def try_loop(self, handle: Any, n: int) -> None:
        acquire = handle.acquire
        for _ in range(n):
            acquire(blocking=False)

    def try_once(self, handle: Any) -> bool:
        if handle.acquire(blocking=False):
            handle.release()
            return True
        return False


PEERS: dict[str, SyncPeer] = {
    p.key: p
    for p in (Aplock(), PosixIpc(), MpLock(), FileLockPeer(), PortalockerPeer(), FastenersPeer())
}
NOTES = tuple(f"{p.key}: {p.note}" for p in PEERS.values())
