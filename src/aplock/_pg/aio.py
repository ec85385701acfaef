"""The async runner, and ``AsyncBackend``: what ``aplock.postgres.AsyncPgLock`` calls.

``run`` executes a flow's steps (see ``steps.py``) on psycopg's ``AsyncConnection``,
and does nothing else: what to do is the protocol's (``protocol.py``). A step runs
shielded from cancellation unless it is ``interruptible``; a ``Wait`` runs shielded
while a watcher sends the server cancel requests until the statement ends, and then
the cancellation goes on, thrown into the flow, which releases the lock if the
statement got it after all.

``AsyncBackend`` adds what tasks need, per event loop, through one of two drivers:

- **Native** (asyncio, uvloop): the protocol through ``run`` on the event loop itself;
  no thread at all, however many tasks wait.
- **Threaded** (Trio, or a sync connection or pool, or a ``PgLock`` given): psycopg's
  async code runs only on asyncio, so a ``sync.Backend``'s blocking calls run in a
  worker thread, one per lock object at a time, drawn from the lock's own limiter.

The tasks of one object queue FIFO on an in-loop gate; only the task at its head talks
to the server.
"""

from __future__ import annotations

import logging
import math
import weakref
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import psycopg
from psycopg.rows import tuple_row

from aplock import _eventloop
from aplock._deadline import Deadline
from aplock.errors import LockClosedError, LockError, LockNotHeldError

from . import steps
from .protocol import AdvisoryLock, Held, acquisition_of, session_socket
from .sources import Dedicated, Gates, Source, async_source
from .steps import CANCEL_TIMEOUT, AsyncConnection, Cancel, Connection, Step, Steps, one_row
from .sync import Backend, request_cancel
from .translate import NOT_HELD

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aplock.sync import Acquisition

    from .sources import AsyncConnectionPool
    from .steps import Flow

__all__ = ["AsyncBackend", "run"]

logger = logging.getLogger("aplock.postgres")

_T = TypeVar("_T")

#: Seconds between cancel requests while a cancelled wait has not ended yet (a request
#: that reaches the server just before the statement does is ignored by it).
RESEND_CANCEL = 0.2
_CLOSED = "this AsyncPgLock was closed; create a new one"


async def run(flow: Flow[AsyncConnection, _T]) -> _T:
    """Execute *flow*'s steps on the event loop; return what the flow returns."""
    walk = Steps(flow)
    while (step := walk.next()) is not None:
        watched = isinstance(step, steps.Wait)  # shielded inside _watched, not against it
        try:
            with anyio.CancelScope(shield=not (watched or step.interruptible)):
                walk.send(await _perform(step))
        except BaseException as exc:
            walk.throw(exc)
    return walk.result


async def _perform(step: Step[AsyncConnection]) -> object:
    if isinstance(step, steps.Wait):
        return await _watched(partial(_execute, step), partial(_cancel_wait, step))
    return await _execute(step)


async def _execute(step: Step[AsyncConnection]) -> object:
    match step:
        case steps.Execute():
            cursor = step.conn.cursor(row_factory=tuple_row)
            await cursor.execute(step.statement, step.params)
            step.last_result(cursor)
            return one_row(await cursor.fetchone()) if step.fetch else None
        case steps.Connect():
            return await psycopg.AsyncConnection.connect(step.conninfo, **step.options)
        case steps.Close():
            await step.conn.close()
        case steps.GetConn():
            pool = cast("AsyncConnectionPool", step.pool)
            timeout = step.timeout
            return await (pool.getconn() if timeout is None else pool.getconn(timeout=timeout))
        case steps.PutConn():
            await cast("AsyncConnectionPool", step.pool).putconn(step.conn)
        case steps.SetAutocommit():
            await step.conn.set_autocommit(step.on)
        case _:
            raise AssertionError(f"unknown step {step!r}")
    return None


async def _cancel_wait(step: steps.Wait[AsyncConnection]) -> None:
    step.cancel.request()
    await _send_cancel(step.conn)


async def _send_cancel(conn: AsyncConnection) -> None:
    try:
        await conn.cancel_safe(timeout=CANCEL_TIMEOUT)
    except Exception as exc:  # the wait's own outcome tells what happened
        logger.debug("cancel request failed: %r", exc)


async def _watched(wait: Callable[[], Awaitable[_T]], cancel: Callable[[], Awaitable[None]]) -> _T:
    """Run *wait*, a statement blocking in the server, so that it is never interrupted.

    If the caller is cancelled meanwhile, *cancel* is called (again every
    ``RESEND_CANCEL`` seconds) until *wait* ends; then the cancellation goes on. An
    error of *wait* is raised as it is, never inside an exception group.
    """
    done = anyio.Event()
    waiting = False
    outcome: list[_T] = []
    failure: list[Exception] = []

    async def watch(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            if waiting:  # cancelled in start() below: there is nothing to cancel
                with anyio.CancelScope(shield=True):
                    while not done.is_set():
                        await cancel()
                        with anyio.move_on_after(RESEND_CANCEL):
                            await done.wait()

    async with anyio.create_task_group() as tg:
        await tg.start(watch)
        waiting = True
        try:
            # A cancellation that came while start() returned would find the watcher
            # already gone: take it now, before the statement is sent.
            await anyio.lowlevel.checkpoint_if_cancelled()
            with anyio.CancelScope(shield=True):
                try:
                    outcome.append(await wait())
                except Exception as exc:  # raised below, outside the task group
                    failure.append(exc)
        finally:
            done.set()
            tg.cancel_scope.cancel()
    if failure:
        raise failure.pop()
    return outcome[0]


class _Native:
    """The protocol through ``run`` on psycopg's ``AsyncConnection`` (asyncio)."""

    def __init__(self, name: str, key: int, source: Source[AsyncConnection]) -> None:
        self.source = source
        self.gate = _gates.get(source, key)
        self._protocol = AdvisoryLock(name, key, source)
        self._held: Held[AsyncConnection] | None = None

    @property
    def acquisition(self) -> Acquisition | None:
        """The generation of the acquisition held (``None`` if none)."""
        return acquisition_of(self._held)

    def session_socket(self) -> int | None:
        """The socket of the session that holds the lock (``None`` if none)."""
        return session_socket(self._held)

    async def take(self, deadline: Deadline) -> bool:
        """Take the lock by *deadline*; on cancellation leave nothing held and re-raise."""
        self._held = await run(self._protocol.take(deadline, Cancel()))
        return self._held is not None

    async def unlock(self) -> None:
        """Release the lock ``take`` took (``LockLostError`` if it had been lost)."""
        held, self._held = self._held, None
        assert held is not None
        await run(self._protocol.unlock(held))

    async def check(self) -> None:
        """Raise ``LockLostError`` unless the session still holds the lock."""
        assert self._held is not None
        await run(self._protocol.check(self._held))

    def close(self) -> None:
        """Close what this driver opened."""
        self.source.close()


class _Threaded:
    """A ``sync.Backend``'s blocking calls in worker threads (Trio; sync connections)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.gate = anyio.Semaphore(1, fast_acquire=True)
        # One thread for the head task's statement, one for a cancel request beside it.
        self._limiter = anyio.CapacityLimiter(2)

    @property
    def acquisition(self) -> Acquisition | None:
        """As ``_Native.acquisition``: the backend's."""
        return self.backend.acquisition

    def session_socket(self) -> int | None:
        """As ``_Native.session_socket``: the backend's."""
        return self.backend.session_socket()

    async def _in_thread(self, func: Callable[..., _T], *args: Any) -> _T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    async def take(self, deadline: Deadline) -> bool:
        """As ``_Native.take``, with a cancel request from a second thread."""
        cancel: Cancel[Connection] = Cancel()

        async def request() -> None:
            await self._in_thread(request_cancel, cancel)

        try:
            return await _watched(
                partial(self._in_thread, self.backend.acquire_cancellable, deadline, cancel),
                request,
            )
        except BaseException:
            # Whether the worker ended holding the lock or is still running (a native
            # asyncio cancellation does not wait for it), the lock is not left held:
            # either it is released here, or the worker releases it when it ends.
            with anyio.CancelScope(shield=True):
                if await self._in_thread(request_cancel, cancel):
                    await self._in_thread(self.backend.release_after_cancel)
            raise

    async def unlock(self) -> None:
        """As ``_Native.unlock``."""
        await self._in_thread(self.backend.release)

    async def check(self) -> None:
        """As ``_Native.check``."""
        await self._in_thread(self.backend.check)

    def close(self) -> None:
        """Nothing of its own to close: the backend is closed by its owner."""


_gates = Gates(partial(anyio.Semaphore, 1, fast_acquire=True))


class _Binding:
    """An ``AsyncBackend``'s driver in one event loop, and its pending release."""

    __slots__ = ("driver", "gate", "loop", "releasing")

    def __init__(self, loop: object, driver: _Native | _Threaded) -> None:
        self.loop = loop
        self.driver = driver
        self.gate = driver.gate
        self.releasing: anyio.Event | None = None

    @property
    def busy(self) -> bool:
        """Whether a task of this object holds the gate (acquiring, holding, releasing)."""
        return self.gate.value == 0

    async def released(self) -> None:
        """Wait for this object's own unlock, if one is on its way to the server."""
        releasing = self.releasing
        if releasing is not None and not releasing.is_set():
            await releasing.wait()


class AsyncBackend:
    """``AsyncPgLock``'s backend: the lock per event loop, through a driver.

    Args:
        name: the lock's name; *key* its advisory key.
        conninfo_or_connection: a connection string, a ``psycopg.AsyncConnection`` or an
            async pool (native), or a sync connection or pool (threaded).
        backend: a ``PgLock``'s backend to run in threads, instead of the above.
    """

    def __init__(
        self, name: str, key: int, conninfo_or_connection: object, backend: Backend | None
    ) -> None:
        self.name = name
        self._key = key
        self._source: Source[AsyncConnection] | None = None
        self._conninfo: str | None = None
        self._own_backend = backend is None
        if backend is None:
            self._source = async_source(name, conninfo_or_connection)
            if self._source is None:
                backend = Backend(name, key, conninfo_or_connection)
                if isinstance(conninfo_or_connection, str):
                    self._conninfo = conninfo_or_connection
        self._backend = backend
        self._binding: _Binding | None = None
        self.held = False
        self.closed = False

    def _bind(self) -> _Binding:
        loop = _eventloop.current_loop()
        binding = self._binding
        if binding is not None and binding.loop is loop:
            return binding
        if binding is not None and (self.held or binding.busy):
            raise RuntimeError(
                f"lock {self.name!r}: this AsyncPgLock is in use in another event loop; "
                "use one AsyncPgLock per event loop"
            )
        if binding is not None:
            binding.driver.close()
        self._binding = binding = _Binding(loop, self._driver(loop))
        return binding

    def _driver(self, loop: object) -> _Native | _Threaded:
        on_asyncio = _eventloop.is_asyncio(loop)
        if self._source is not None:
            if not on_asyncio:
                raise RuntimeError(
                    f"lock {self.name!r}: psycopg's AsyncConnection runs only on asyncio; "
                    "under Trio pass a connection string or a sync psycopg.Connection"
                )
            return _Native(self.name, self._key, self._source)
        if on_asyncio and self._conninfo is not None:
            dedicated: Dedicated[AsyncConnection] = Dedicated(self.name, self._conninfo)
            weakref.finalize(self, dedicated.close)  # a dropped lock ends its session
            return _Native(self.name, self._key, dedicated)
        assert self._backend is not None
        return _Threaded(self._backend)

    async def acquire(self, wait: float | None) -> bool:
        """Acquire within *wait* seconds (``None``: forever); always a checkpoint."""
        await anyio.lowlevel.checkpoint()
        if self.closed:
            raise LockClosedError(self.name, _CLOSED)
        binding = self._bind()
        await binding.released()  # this object's own unlock is no wait for the lock
        deadline = Deadline.after(wait)
        gate = binding.gate
        try:
            gate.acquire_nowait()
        except anyio.WouldBlock:
            left = deadline.remaining()
            if left == 0.0:
                return False
            with anyio.move_on_after(math.inf if left is None else left) as scope:
                await gate.acquire()
            if scope.cancelled_caught:
                return False
        try:
            got = await binding.driver.take(deadline)
        except BaseException:
            gate.release()
            raise
        if not got:
            gate.release()
            return False
        self.held = True
        return True

    def release(self) -> None:
        """Start the unlock in the background; a failure is logged, never raised."""
        binding = self._take_held()
        done = binding.releasing = anyio.Event()

        async def finish() -> None:
            try:
                await binding.driver.unlock()
            except LockError as exc:  # nobody awaits this: say it, never raise it
                logger.warning("release() in the background: %s", exc)
            except BaseException as exc:
                logger.warning(
                    "lock %r: release() did not reach the server (%r, e.g. the event loop "
                    "stopped); the session keeps the lock until its connection closes",
                    self.name,
                    exc,
                )
            finally:
                binding.gate.release()
                done.set()

        _eventloop.spawn(finish)

    async def arelease(self) -> None:
        """Release and wait until the server has (shielded: one round trip)."""
        binding = self._take_held()
        try:
            with anyio.CancelScope(shield=True):
                await binding.driver.unlock()
        finally:
            binding.gate.release()

    def _take_held(self) -> _Binding:
        if self.closed:
            raise LockClosedError(self.name, _CLOSED)
        binding = self._binding
        if not self.held or binding is None:
            raise LockNotHeldError(self.name, NOT_HELD)
        try:
            loop = _eventloop.current_loop()
        except RuntimeError:  # no event loop runs in this thread (anyio's NoEventLoopError)
            loop = None
        if binding.loop is not loop:
            raise RuntimeError(
                f"lock {self.name!r}: this AsyncPgLock is held in another event loop than "
                "the one running in this thread (if any); release it there"
            )
        self.held = False
        return binding

    @property
    def acquisition(self) -> Acquisition | None:
        """The generation of the acquisition this object holds (``None`` if none)."""
        binding = self._binding
        if not self.held or binding is None:
            return None
        return binding.driver.acquisition

    def session_socket(self) -> int | None:
        """The socket of the session that holds the lock for this object (``None`` if none)."""
        binding = self._binding
        if not self.held or binding is None:
            return None
        return binding.driver.session_socket()

    def locked(self) -> bool:
        """Whether this object holds the lock, or is acquiring or releasing it."""
        if self.closed:
            raise LockClosedError(self.name, _CLOSED)
        binding = self._binding
        return self.held or (binding is not None and binding.busy)

    async def check(self) -> None:
        """Confirm with the server that this object still holds the lock."""
        if not self.held or self._binding is None:
            raise LockNotHeldError(self.name, "check() of a lock this object does not hold")
        await self._binding.driver.check()

    async def aclose(self) -> None:
        """Release the lock if held, wait for a pending unlock, close what is ours."""
        if self.closed:
            return
        if self.held:
            with suppress(LockError):
                await self.arelease()
        if self._binding is not None:
            await self._binding.released()
        self._close_drivers()
        if self._own_backend and self._backend is not None:
            await anyio.to_thread.run_sync(self._backend.close)

    def close(self) -> None:
        """Close what is ours at once; ``RuntimeError`` if that would need a round trip."""
        if self.closed:
            return
        if self.locked():
            raise RuntimeError(
                f"lock {self.name!r}: close() of an AsyncPgLock that holds the lock, or is "
                "acquiring or releasing it: releasing takes a round trip to the server, so "
                "await aclose() instead (or release the lock first)"
            )
        self._close_drivers()
        if self._own_backend and self._backend is not None:
            self._backend.close()  # not held: no round trip

    def _close_drivers(self) -> None:
        self.closed = True
        binding, self._binding = self._binding, None
        if binding is not None:
            binding.driver.close()
