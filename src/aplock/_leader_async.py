"""``AsyncLeadership``: ``aplock.leader`` for async code, on asyncio and Trio (AnyIO).

Exported as ``aplock.leader.AsyncLeadership`` and ``aplock.AsyncLeadership``; loaded on
first use, so that sync users of ``aplock.leader`` never import AnyIO. The behaviour is
the module docstring of ``aplock.leader``; this is its async driver:

- the campaign is a background task of the event loop (``_eventloop.spawn``), inside a
  cancel scope that leaving the ``async with`` cancels, then waits for;
- an aplock lock is waited for in one thread of the leadership's own, through the
  lock's core (no ``AbandonedLockWarning``; the takeover is logged and in the term), and
  that wait ends within a slice of a cancellation without leaking the lock;
- a term is a task group: the job in a cancel scope of its own, and, for a remote lock,
  a task that confirms it every ``check_interval`` (and at once when the server hangs up
  on the lock's session: ``aplock._leader_watch``) and a timer for its lease. A loss
  cancels the job's scope at once; the lock is given back after the group has exited,
  so only once the job has ended.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio  # noqa: TID251 - the async driver of aplock.leader
import anyio.lowlevel  # noqa: TID251
import anyio.to_thread  # noqa: TID251

from . import _eventloop
from ._leader_sides import Backoff, PosixSide, Won, describe_failed_check, posix_lock_of, token_of
from ._leader_term import (
    CHECK_INTERVAL,
    MAX_RETRY_DELAY,
    RETRY_DELAY,
    Campaign,
    LeaderTerm,
    Raised,
    check_job,
    check_timings,
    lease,
    log_elected,
    settle,
)
from ._leader_watch import Hangup
from .errors import LockError
from .sync import Lock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import TracebackType
    from typing import Self

    from .aio import AsyncLock

__all__ = ["AsyncLeadership", "SupportsAsyncLeaderLock"]

logger = logging.getLogger("aplock")

#: Whether AnyIO can wait for a file descriptor (4.7 and later): for ``Hangup``.
_CAN_WAIT_FOR_HANGUPS = hasattr(anyio, "wait_readable") and hasattr(anyio, "notify_closing")


class SupportsAsyncLeaderLock(Protocol):
    """An async lock ``AsyncLeadership`` can lead through: ``AsyncLock``, ``AsyncPgLock``...

    An ``arelease()`` coroutine, if the lock has one, is used to give it back; a
    ``check()`` method (raising ``LockLostError`` once the lock is lost; it may be
    async) makes it a lock that a live holder can lose, confirmed with it.
    """

    @property
    def name(self) -> str:
        """The lock's name."""

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire as ``AsyncLock.acquire`` does; ``False`` if the time ran out."""

    def release(self) -> None:
        """Release the lock."""


@dataclass
class _Term:
    """What the tasks of one term share."""

    supervise: anyio.CancelScope
    job_scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    confirmed_at: float = field(default_factory=time.monotonic)
    term: LeaderTerm | None = None
    lost: str | None = None
    failure: Exception | None = None
    unconfirmed: str | None = None

    def lose(self, why: str, name: str) -> None:
        """The lock is lost: end the term and cancel the job, at once."""
        if self.lost is not None:
            return
        self.lost = why
        logger.warning("lock %r: leadership lost (%s); the job is cancelled", name, why)
        self.end()

    def end(self) -> None:
        """End the term: the job's scope and the term's supervision are cancelled."""
        if self.term is not None:
            self.term._end()
        self.job_scope.cancel()
        self.supervise.cancel()


class _Handover:
    """A thread's wait for a lock, and whether its task still wants what it gets."""

    __slots__ = ("abandoned", "delivered", "finished", "mutex", "started")

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.abandoned = False
        self.started = False
        self.delivered = False
        self.finished = False

    def start(self) -> bool:
        """Whether the thread may wait: its task has not given up on it yet."""
        with self.mutex:
            self.started = not self.abandoned
            return self.started

    def abandon(self) -> tuple[bool, bool]:
        """The task gives up: (whether the thread had started, whether it got the lock)."""
        with self.mutex:
            self.abandoned = True
            return self.started, self.delivered

    def is_abandoned(self) -> bool:
        return self.abandoned


class AsyncLeadership(Campaign):
    """Run a job in exactly one process among those that share a lock, for async code.

    Made for the ``lifespan`` of an ASGI app, which every worker runs::

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with AsyncLeadership("myapp.scheduler", run_scheduler):
                yield

    Entering returns at once; in the background the process campaigns for the lock,
    and while it holds it runs ``await job(term)``. A loss of the lock cancels the job
    at once; leaving cancels it, waits until it has ended, and releases the lock, so a
    standby takes over. See ``aplock.leader`` for the whole behaviour.

    Args:
        name_or_lock: a lock name (an ``aplock.AsyncLock`` is opened for it), an aplock
            ``AsyncLock`` or ``Lock``, an ``AsyncPgLock``, or any lock of the
            ``SupportsAsyncLeaderLock`` shape.
        job: an async function taking the ``LeaderTerm``; what it returns is ignored.
        check_interval: seconds between confirmations that the lock is still held.
        retry_delay: seconds before campaigning again after the job raised.
        max_retry_delay: the most seconds of that delay, doubled for failures in a row.

    Examples:
        >>> import anyio, aplock.leader
        >>> async def job(term):
        ...     print("leading with token", term.token)
        ...     await anyio.sleep_forever()  # cancelled when leaving
        >>> async def main():
        ...     async with aplock.leader.AsyncLeadership("docs.async.leader", job):
        ...         await anyio.sleep(0.5)
        >>> anyio.run(main)
        leading with token 1
        >>> aplock.unlink("docs.async.leader")
        True
    """

    def __init__(
        self,
        name_or_lock: str | AsyncLock | Lock | SupportsAsyncLeaderLock,
        job: Callable[[LeaderTerm], Awaitable[object]],
        *,
        check_interval: float = CHECK_INTERVAL,
        retry_delay: float = RETRY_DELAY,
        max_retry_delay: float = MAX_RETRY_DELAY,
    ) -> None:
        check_timings(check_interval, retry_delay, max_retry_delay)
        check_job(job, want_async=True)
        from .aio import AsyncLock  # noqa: PLC0415 - aplock.aio loads with this module

        lock: object = (
            AsyncLock(name_or_lock) if isinstance(name_or_lock, str | Lock) else name_or_lock
        )
        posix = posix_lock_of(lock)
        self._posix = PosixSide(posix) if posix is not None else None
        self._check: Callable[[], object] | None = None
        if posix is None:
            _check_async_lock(lock)
            check = getattr(lock, "check", None)
            self._check = check if callable(check) else None
        self._lock = lock
        self._name: str = lock.name  # type: ignore[attr-defined]
        self._job = job
        self._interval = float(check_interval)
        self._retry = (float(retry_delay), float(max_retry_delay))
        self._term: LeaderTerm | None = None
        self._scope: anyio.CancelScope | None = None
        self._finished: anyio.Event | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def running(self) -> bool:
        """Whether it was entered and has not finished leaving yet."""
        return self._finished is not None and not self._finished.is_set()

    async def __aenter__(self) -> Self:
        if self.running:
            raise RuntimeError(f"lock {self._name!r}: this AsyncLeadership is already entered")
        self._scope = anyio.CancelScope()
        self._finished = anyio.Event()
        _eventloop.spawn(self._run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._scope is not None
        assert self._finished is not None
        term = self._term
        if term is not None:
            term._end()  # before the job is cancelled: its clean-up sees the term ended
        self._scope.cancel()
        with anyio.CancelScope(shield=True):
            await self._finished.wait()

    def __repr__(self) -> str:
        term = self.term
        if term is not None:
            state = f"leading since {time.strftime('%H:%M:%S', time.localtime(term.since))}"
            state += f", token {term.token}"
        elif self.running:
            state = "standing by"
        else:
            state = "not entered"
        return f"<aplock.leader.AsyncLeadership {self._name!r} {state}>"

    # -- the campaign task -------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._scope is not None
        assert self._finished is not None
        try:
            with self._scope:
                await self._campaign()
        except Exception:
            logger.exception("lock %r: leadership stopped by an unexpected error", self._name)
        finally:
            self._term = None
            self._finished.set()

    async def _campaign(self) -> None:
        backoff = Backoff(*self._retry)
        while True:
            try:
                won = await self._take()
            except Exception as exc:
                delay = backoff.failed()
                logger.warning(
                    "lock %r: campaigning for leadership failed (%s); trying again in %.3g s",
                    self._name,
                    exc,
                    delay,
                )
                await anyio.sleep(delay)
                continue
            started = time.monotonic()
            outcome = await self._lead(won)
            if isinstance(outcome, Raised):
                if time.monotonic() - started >= self._retry[1]:
                    backoff.reset()
                delay = backoff.failed()
                logger.error(
                    "lock %r: the leader's job raised; leadership released, campaigning "
                    "again in %.3g s",
                    self._name,
                    delay,
                    exc_info=outcome.exc,
                )
                await anyio.sleep(delay)
            else:
                backoff.reset()

    async def _take(self) -> Won:
        side = self._posix
        if side is None:
            while not await self._lock.acquire():  # type: ignore[attr-defined]
                pass
            return Won(token_of(self._lock), None)
        await anyio.lowlevel.checkpoint()
        if side.try_take():
            return side.won(None)
        return side.won(await self._wait_posix(side))

    async def _wait_posix(self, side: PosixSide) -> int | None:
        """Wait for the aplock lock in a thread; on cancellation, leak nothing."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        hand = _Handover()

        def wait() -> int | None:
            if not hand.start():
                return None
            try:
                while True:
                    got, took_over_from = side.wait(hand.is_abandoned)
                    with hand.mutex:
                        if hand.abandoned:
                            if got:
                                side.release()
                            return None
                        if got:
                            hand.delivered = True
                            return took_over_from
            finally:
                hand.finished = True

        try:
            return await anyio.to_thread.run_sync(
                wait, abandon_on_cancel=True, limiter=self._limiter
            )
        except BaseException:
            started, delivered = hand.abandon()
            if delivered:  # the thread got it as the task was cancelled: give it back
                side.release()
            # A thread that had not started never will wait (a cancelled call may never
            # run at all); one that had sees it within a slice and ends: once this
            # returns, nothing of this leadership can take the lock any more.
            if started:
                with anyio.CancelScope(shield=True):
                    while not hand.finished:
                        await anyio.sleep(0.002)
            raise

    async def _lead(self, won: Won) -> Raised | str:
        """Hold one term: settle, run the job, watch the lock; give it back at the end."""
        state = _Term(anyio.CancelScope())
        remote = self._check is not None
        try:
            async with anyio.create_task_group() as tg:
                with state.supervise:
                    if remote:
                        tg.start_soon(self._confirm, state)
                        tg.start_soon(self._lease_timer, state)
                        await anyio.sleep(settle(self._interval))
                    term = LeaderTerm(
                        self._name, won.token, time.time(), os.getpid(), won.took_over_from
                    )
                    state.term = self._term = term
                    log_elected(term)
                    if self._posix is not None:
                        self._posix.file.write(term.pid, term.since, term.token)
                    tg.start_soon(self._run_job, term, state)
                    await self._watch(won, state)
                state.end()
                tg.cancel_scope.cancel()
        finally:
            state.end()
            self._term = None
            with anyio.CancelScope(shield=True):
                await self._give_back(state)
        if state.lost is not None:
            return "lost"
        if state.failure is not None:
            return Raised(state.failure)
        return "stopped"

    async def _watch(self, won: Won, state: _Term) -> None:
        side = self._posix
        if side is None:  # a remote lock's tasks watch it; any other lock cannot be lost
            await anyio.sleep_forever()
        assert side is not None
        while True:
            await anyio.sleep(self._interval)
            why = side.lost(won)
            if why is not None:
                state.lose(why, self._name)
                return

    async def _run_job(self, term: LeaderTerm, state: _Term) -> None:
        with state.job_scope:
            try:
                await self._job(term)
            except Exception as exc:
                state.failure = exc
                state.end()
                return
            logger.info(
                "lock %r: the leader's job returned; this process stays leader until it "
                "leaves or loses the lock",
                self._name,
            )

    async def _confirm(self, state: _Term) -> None:
        assert self._check is not None
        hangups = _CAN_WAIT_FOR_HANGUPS and Hangup.possible(self._lock)
        while True:
            hung_up = await self._pause(hangups)
            started = time.monotonic()
            try:
                result = self._check()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                why = describe_failed_check(exc)
                if why.startswith("lost: "):
                    state.lose(why.removeprefix("lost: "), self._name)
                    return
                state.unconfirmed = why
            else:
                state.confirmed_at = started
            if hung_up:  # and not lost: the timer only from now on (see Watcher)
                hangups = False

    async def _pause(self, hangups: bool) -> bool:
        """Sleep ``check_interval``, or less if the server hangs up on the lock's session
        (see ``aplock._leader_watch``); return whether it hung up."""
        hangup = Hangup.watch(self._lock) if hangups else None
        if hangup is None:
            await anyio.sleep(self._interval)
            return False
        fileno = hangup.fileno()
        try:
            with anyio.move_on_after(self._interval):
                await anyio.wait_readable(fileno)
            return hangup.hung_up()
        finally:
            anyio.notify_closing(fileno)
            hangup.close()

    async def _lease_timer(self, state: _Term) -> None:
        limit = lease(self._interval)
        while True:
            unconfirmed = time.monotonic() - state.confirmed_at
            if unconfirmed > limit:
                why = f"not confirmed for {unconfirmed:.3g} s ({state.unconfirmed or 'no answer'})"
                state.lose(why, self._name)
                return
            await anyio.sleep(limit - unconfirmed + 0.001)

    async def _give_back(self, state: _Term) -> None:
        lost = state.lost is not None
        side = self._posix
        try:
            if side is not None:
                if not lost:  # a lost aplock lock is someone else's now
                    if state.term is not None:
                        side.file.remove(os.getpid())
                    side.release()
                return
            arelease = getattr(self._lock, "arelease", None)
            if callable(arelease):
                await arelease()
            else:
                self._lock.release()  # type: ignore[attr-defined]
        except LockError as exc:
            if not lost:
                logger.warning("lock %r: giving leadership back failed: %s", self._name, exc)
        except Exception as exc:
            logger.warning("lock %r: giving leadership back failed: %r", self._name, exc)


def _check_async_lock(lock: Any) -> None:
    acquire = getattr(lock, "acquire", None)
    if not callable(acquire) or not callable(getattr(lock, "release", None)):
        raise TypeError(
            f"{type(lock).__name__} is not a lock: AsyncLeadership needs a name, an aplock "
            "lock, an AsyncPgLock, or an object with async acquire(block, timeout), "
            "release() and name"
        )
    if not inspect.iscoroutinefunction(acquire):
        raise TypeError(
            f"{type(lock).__name__}.acquire is not async: use aplock.leader.Leadership with "
            "it, or its async twin (AsyncPgLock(pg_lock) for a PgLock)"
        )
