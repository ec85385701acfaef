"""One leader among many processes: run a job in exactly one of them, with failover.

Every worker of ``uvicorn --workers N``, gunicorn or N replicas enters the same
leadership; each campaigns in the background for one named lock, and whichever holds it
runs the job while the others stand by. ``AsyncLeadership`` is for an ASGI lifespan
(asyncio and Trio); ``Leadership`` runs in threads, for sync frameworks::

    async with AsyncLeadership("myapp.scheduler", run_scheduler):
        yield  # the app serves; in one process, run_scheduler(term) runs

How it behaves, and why:

- **Campaigning** never delays start-up: entering returns at once. A standby waits for
  the lock the way the lock waits (an aplock lock: in 50 ms slices, taking a dead
  holder's lock over within its ``recovery_interval``; a PostgreSQL lock: blocked in the
  server), so a standby costs no polling. The sync helper waits for a lock that is not
  an aplock lock in waits of ``check_interval`` seconds, to notice ``stop()``.
- **Exactly one job.** The job runs only while the lock is held, and the lock is given
  back only after the job has ended. The leader confirms the lock every
  ``check_interval`` seconds (an aplock lock: a read of its record; a lock with a
  ``check()`` method, such as ``PgLock``: one round trip). Once it is lost, the job is
  cancelled at once (a sync job is told through ``term.ended``).
- **Locks that a live holder can lose** (those with ``check()``: a PostgreSQL session
  can end while its process lives) are *remote*: the leader counts the lock lost when
  no check has confirmed it for ``3 * check_interval`` (its lease: a check that hangs),
  and a new leader waits ``3.5 * check_interval`` (its settle time) after taking the
  lock before it starts the job, so that a previous leader that lost its session has
  cancelled its job first. An aplock lock needs no settle: it is only taken over from a
  holder proven dead.
- **The fencing token** is the lock's generation (``term.token``): greater for every
  new term. The job should pass it to what it writes, so that a resource can refuse a
  leader that was presumed dead. A lock without generations gives ``None``.
- **A job that returns** ends its work, not the term: the process stays leader,
  running nothing, until it exits or loses the lock. Work that needs doing once per
  leader is done once, not over and over; a job with nothing to do may just return;
  for periodic work, loop inside the job (or start a scheduler in it).
- **A job that raises** is logged (logger ``aplock``, with the traceback), leadership
  is released at once (a standby takes over), and this process campaigns again after
  ``retry_delay`` seconds, doubled for each failure in a row up to ``max_retry_delay``
  (a job that ran that long before it raised starts the count again). Failures to
  campaign (the server unreachable) back off the same way.
- **Leaving** (lifespan exit, ``stop()``) cancels the job, waits until it has ended,
  releases the lock and removes this process from the campaign: a waiting standby
  takes over at once (plus the settle time of a remote lock). Neither helper installs
  signal handlers: uvicorn and gunicorn turn ``SIGTERM`` into lifespan shutdown or
  worker exit, and ``Leadership`` stops at interpreter exit (``atexit``, waiting
  ``EXIT_TIMEOUT`` seconds at most for the job). A process killed outright (SIGKILL, or
  SIGTERM without a handler) leaves its lock to be recovered like any dead holder's.
- **Observable:** ``leading`` and ``term`` (``token``, ``since``, ``took_over_from``);
  with an aplock lock the leader also writes ``/dev/shm/<lock>.leader`` (see
  ``aplock._leader_sides.LeaderFile``) beside the lock, and its pid is the lock's holder.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import math
import os
import threading
import time
import typing
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._leader_sides import (
    Backoff,
    PosixSide,
    SupportsLeaderLock,
    SyncSide,
    Won,
    posix_lock_of,
)
from .errors import LockError
from .sync import Lock

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Self

    from ._leader_async import AsyncLeadership, SupportsAsyncLeaderLock
    from .aio import AsyncLock

__all__ = [
    "CHECK_INTERVAL",
    "EXIT_TIMEOUT",
    "MAX_RETRY_DELAY",
    "RETRY_DELAY",
    "AsyncLeadership",
    "LeaderTerm",
    "Leadership",
    "SupportsAsyncLeaderLock",
    "SupportsLeaderLock",
    "lease",
    "settle",
]

logger = logging.getLogger("aplock")

CHECK_INTERVAL = 0.2
"""Default seconds between two confirmations, by the leader, that it holds the lock."""
RETRY_DELAY = 1.0
"""Default seconds before campaigning again after the job raised (doubled in a row)."""
MAX_RETRY_DELAY = 30.0
"""Default cap of the delay before campaigning again."""
EXIT_TIMEOUT = 10.0
"""Seconds that ``Leadership`` waits at interpreter exit for its job to end."""
#: Seconds after which a job that was told its term ended and has not returned is logged.
_SLOW_STOP = 5.0


def lease(check_interval: float) -> float:
    """Seconds without confirmation after which a remote lock is counted as lost."""
    return 3.0 * check_interval


def settle(check_interval: float) -> float:
    """Seconds a new leader of a remote lock waits before it starts the job.

    Longer than the lease: by then a previous leader that lost the lock has noticed it
    and cancelled its job.
    """
    return 3.5 * check_interval


@dataclass(frozen=True, slots=True)
class LeaderTerm:
    """One term of leadership of this process: what the job is passed.

    Attributes:
        name: the lock's name.
        token: the fencing token: the lock's generation for this term (``None`` for a
            lock without generations). Greater than that of every earlier term.
        since: when the term started (``time.time()``).
        pid: this process.
        took_over_from: the pid of a leader that died holding the lock, if this term
            took the lock over from it.
    """

    name: str
    token: int | None
    since: float
    pid: int
    took_over_from: int | None = None
    _over: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def ended(self) -> bool:
        """Whether the term has ended (lost, or leaving): the job must stop now."""
        return self._over.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the term ends or *timeout* passes; return ``ended``.

        For sync jobs (``Leadership``): ``while not term.wait(60): do_the_work()``.
        """
        return self._over.wait(timeout)

    def _end(self) -> None:
        self._over.set()


def check_timings(check_interval: float, retry_delay: float, max_retry_delay: float) -> None:
    """Raise ``ValueError`` unless the timings are positive, finite and in order."""
    for what, value in (
        ("check_interval", check_interval),
        ("retry_delay", retry_delay),
        ("max_retry_delay", max_retry_delay),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{what} must be a number of seconds, not {value!r}")
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{what} must be a positive, finite number of seconds, not {value!r}")
    if max_retry_delay < retry_delay:
        raise ValueError(
            f"max_retry_delay ({max_retry_delay!r}) must not be less than retry_delay "
            f"({retry_delay!r})"
        )


def check_job(job: object, *, want_async: bool) -> None:
    """Raise ``TypeError`` unless *job* is a callable of the right kind."""
    if not callable(job):
        raise TypeError(f"the job must be a callable taking a LeaderTerm, not {job!r}")
    is_async = inspect.iscoroutinefunction(job) or inspect.iscoroutinefunction(type(job).__call__)
    if is_async and not want_async:
        raise TypeError(
            f"{job!r} is an async function: run it with aplock.leader.AsyncLeadership, "
            "or pass Leadership a plain function"
        )


@dataclass
class _JobOutcome:
    returned: bool = False
    failure: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Raised:
    """The term ended because the job raised *exc*."""

    exc: BaseException


class Leadership:
    """Run a job in exactly one process among those that share a lock, in threads.

    For sync frameworks (Flask, Django under gunicorn, scripts): ``start()`` returns at
    once; a daemon thread campaigns for the lock, and in the process that holds it runs
    ``job(term)`` in a thread of its own. The job must return soon after ``term.ended``
    becomes true (``term.wait(timeout)`` sleeps until then): a thread cannot be
    cancelled, and the lock is given back only after the job returned. See the module
    docstring for the whole behaviour.

    Start it in each worker process, after any fork (with gunicorn's ``--preload``, in a
    ``post_worker_init`` hook rather than at import). It stops at interpreter exit.

    Args:
        name_or_lock: a lock name (an ``aplock.Lock`` is opened for it), an aplock
            ``Lock`` or ``AsyncLock``, a ``PgLock``, or any lock of the
            ``SupportsLeaderLock`` shape.
        job: a function taking the ``LeaderTerm``; what it returns is ignored.
        check_interval: seconds between confirmations that the lock is still held.
        retry_delay: seconds before campaigning again after the job raised.
        max_retry_delay: the most seconds of that delay, doubled for failures in a row.

    Examples:
        >>> import aplock.leader
        >>> def job(term):
        ...     term.wait()  # the work goes here, until the term ends
        >>> with aplock.leader.Leadership("docs.leader", job) as leadership:
        ...     print(leadership.wait_leading(5), leadership.term.token)
        True 1
        >>> leadership.leading
        False
        >>> aplock.unlink("docs.leader")
        True
    """

    def __init__(
        self,
        name_or_lock: str | Lock | AsyncLock | SupportsLeaderLock,
        job: Callable[[LeaderTerm], object],
        *,
        check_interval: float = CHECK_INTERVAL,
        retry_delay: float = RETRY_DELAY,
        max_retry_delay: float = MAX_RETRY_DELAY,
    ) -> None:
        check_timings(check_interval, retry_delay, max_retry_delay)
        check_job(job, want_async=False)
        lock = Lock(name_or_lock) if isinstance(name_or_lock, str) else name_or_lock
        posix = posix_lock_of(lock)
        self._posix = PosixSide(posix) if posix is not None else None
        self._other: SyncSide | None = None
        if posix is None:
            _check_sync_lock(lock)
            self._other = SyncSide(typing.cast("SupportsLeaderLock", lock))
        self._lock = lock
        self._name = lock.name
        self._job = job
        self._interval = float(check_interval)
        self._retry = (float(retry_delay), float(max_retry_delay))
        self._remote = self._other is not None and self._other.remote
        self._fresh()

    def _fresh(self) -> None:
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._elected = threading.Condition(self._mutex)
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._job_thread: threading.Thread | None = None
        self._term: LeaderTerm | None = None

    @property
    def lock(self) -> object:
        """The lock campaigned for (the ``aplock.Lock`` opened for a name, or the one given)."""
        return self._lock

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._name

    @property
    def term(self) -> LeaderTerm | None:
        """This process's current term (``None`` while it does not lead)."""
        term = self._term
        return None if term is None or term.ended else term

    @property
    def leading(self) -> bool:
        """Whether this process leads now (its job runs, or ran and returned)."""
        return self.term is not None

    @property
    def running(self) -> bool:
        """Whether it was started and has not stopped yet."""
        return self._thread is not None and not self._done.is_set()

    def wait_leading(self, timeout: float | None = None) -> bool:
        """Block until this process leads, or *timeout* passes; return ``leading``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._elected:
            while not self.leading and self.running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._elected.wait(left)
        return self.leading

    def start(self) -> Self:
        """Start campaigning in the background; return at once.

        Raises:
            RuntimeError: it is already running.
        """
        with self._mutex:
            if self._thread is not None and self._thread.is_alive():
                raise RuntimeError(f"lock {self.name!r}: this Leadership is already running")
            self._stop = threading.Event()
            self._wake = threading.Event()
            self._done = threading.Event()
            thread = threading.Thread(
                target=self._run, name=f"aplock leader {self.name}", daemon=True
            )
            self._thread = thread
            _running.add(self)
            _stop_last_at_exit()
            thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop: end the term (the job is told), wait for the job, release, stop campaigning.

        Args:
            timeout: the most seconds to wait; ``None`` waits until the job returned.

        Returns:
            whether everything has stopped (``False`` if the time ran out; the lock is
            then released as soon as the job returns). Called from the job's own thread,
            it only asks, and returns ``False``.
        """
        self._stop.set()
        term = self._term
        if term is not None:
            term._end()
        self._wake.set()
        thread = self._thread
        if thread is None:
            return True
        if threading.current_thread() in (thread, self._job_thread):
            return False
        thread.join(timeout)
        return not thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        term = self.term
        if term is not None:
            state = f"leading since {time.strftime('%H:%M:%S', time.localtime(term.since))}"
            state += f", token {term.token}"
        elif self.running:
            state = "standing by"
        else:
            state = "stopped"
        return f"<aplock.leader.Leadership {self.name!r} {state}>"

    # -- the campaign thread ---------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(*self._retry)
        stop = self._stop
        try:
            while not stop.is_set():
                try:
                    won = self._campaign()
                except Exception as exc:
                    delay = backoff.failed()
                    logger.warning(
                        "lock %r: campaigning for leadership failed (%s); trying again in %.3g s",
                        self.name,
                        exc,
                        delay,
                    )
                    stop.wait(delay)
                    continue
                if won is None:
                    break
                started = time.monotonic()
                outcome = self._lead(won)
                if isinstance(outcome, Raised):
                    if time.monotonic() - started >= self._retry[1]:
                        backoff.reset()
                    delay = backoff.failed()
                    logger.error(
                        "lock %r: the leader's job raised; leadership released, campaigning "
                        "again in %.3g s",
                        self.name,
                        delay,
                        exc_info=outcome.exc,
                    )
                    stop.wait(delay)
                else:
                    backoff.reset()
        except BaseException:
            logger.exception("lock %r: leadership stopped by an unexpected error", self.name)
        finally:
            _running.discard(self)
            with self._elected:
                self._done.set()
                self._elected.notify_all()

    def _campaign(self) -> Won | None:
        stopped = self._stop.is_set
        if self._posix is not None:
            took_over_from = None
            if not self._posix.try_take():
                got, took_over_from = self._posix.wait(stopped)
                if not got:
                    return None
            won: Won | None = self._posix.won(took_over_from)
        else:
            assert self._other is not None
            won = self._other.take(stopped, self._interval)
        if won is not None and stopped():
            self._give_back(lost=None, wrote_file=False)
            return None
        return won

    def _lead(self, won: Won) -> Raised | str:
        """Hold one term: settle, run the job, watch the lock; give it back at the end."""
        watcher = _Watcher(self, self._other) if self._remote and self._other else None
        term: LeaderTerm | None = None
        job_thread: threading.Thread | None = None
        outcome: Raised | str = "stopped"
        lost: str | None = None
        try:
            if watcher is not None:
                watcher.start()
                lost = self._settle(watcher)
                if lost is not None:
                    return "lost"
                if self._stop.is_set():
                    return outcome
            term = LeaderTerm(self.name, won.token, time.time(), os.getpid(), won.took_over_from)
            log_elected(term)
            with self._elected:
                self._term = term
                self._elected.notify_all()
            if self._posix is not None:
                self._posix.file.write(term.pid, term.since, term.token)
            box = _JobOutcome()
            job_thread = threading.Thread(
                target=self._run_job, args=(term, box), name=f"aplock job {self.name}", daemon=True
            )
            self._job_thread = job_thread
            job_thread.start()
            outcome, lost = self._watch(won, watcher, box)
        finally:
            if term is not None:
                term._end()
            if job_thread is not None:
                _join_job(job_thread, self.name)
                self._job_thread = None
            if watcher is not None:
                watcher.over.set()
                watcher.join()
            self._give_back(lost=lost, wrote_file=term is not None)
            self._term = None
        return outcome

    def _settle(self, watcher: _Watcher) -> str | None:
        end = time.monotonic() + settle(self._interval)
        while (left := end - time.monotonic()) > 0 and not self._stop.is_set():
            lost = watcher.verdict()
            if lost is not None:
                return lost
            self._wake.wait(min(left, self._interval))
            self._wake.clear()
        return watcher.verdict()

    def _watch(
        self, won: Won, watcher: _Watcher | None, box: _JobOutcome
    ) -> tuple[Raised | str, str | None]:
        said_returned = False
        while True:
            if self._stop.is_set():
                return "stopped", None
            if box.failure is not None:
                return Raised(box.failure), None
            if box.returned and not said_returned:
                said_returned = True
                logger.info(
                    "lock %r: the leader's job returned; this process stays leader until it "
                    "exits or loses the lock",
                    self.name,
                )
            if self._posix is not None:
                lost = self._posix.lost(won)
            else:
                lost = watcher.verdict() if watcher is not None else None
            if lost is not None:
                logger.warning("lock %r: leadership lost (%s); the job is stopped", self.name, lost)
                return "lost", lost
            self._wake.wait(watcher.next_wait() if watcher is not None else self._interval)
            self._wake.clear()

    def _run_job(self, term: LeaderTerm, box: _JobOutcome) -> None:
        try:
            self._job(term)
        except BaseException as exc:
            box.failure = exc
        else:
            box.returned = True
        finally:
            self._wake.set()

    def _give_back(self, *, lost: str | None, wrote_file: bool) -> None:
        try:
            if self._posix is not None:
                if lost is None:  # a lost aplock lock is someone else's now
                    if wrote_file:
                        self._posix.file.remove(os.getpid())
                    self._posix.release()
            else:
                assert self._other is not None
                self._other.release(lost=lost is not None)
        except LockError as exc:
            logger.warning("lock %r: giving leadership back failed: %s", self.name, exc)

    def _forget(self) -> None:
        """In a forked child: it runs nothing and holds nothing of the parent's."""
        self._fresh()


class _Watcher(threading.Thread):
    """Confirms a remote lock every ``check_interval`` during a term (a check can hang)."""

    def __init__(self, leadership: Leadership, side: SyncSide) -> None:
        super().__init__(name=f"aplock leader check {side.name}", daemon=True)
        self._side = side
        self._wake = leadership._wake
        self._interval = leadership._interval
        self._lease = lease(leadership._interval)
        self.over = threading.Event()
        self.confirmed_at = time.monotonic()  # the acquisition just confirmed it
        self.lost: str | None = None
        self.failure: str | None = None

    def run(self) -> None:
        while not self.over.wait(self._interval):
            started = time.monotonic()
            why = self._side.confirm()
            if why is None:
                self.confirmed_at = started
            elif why.startswith("lost: "):
                self.lost = why.removeprefix("lost: ")
                self._wake.set()
                return
            else:
                self.failure = why

    def verdict(self) -> str | None:
        """Why the lock counts as lost now, or ``None``."""
        if self.lost is not None:
            return self.lost
        unconfirmed = time.monotonic() - self.confirmed_at
        if unconfirmed > self._lease:
            return f"not confirmed for {unconfirmed:.3g} s ({self.failure or 'no answer'})"
        return None

    def next_wait(self) -> float:
        """How long the leader may sleep before it must look at the verdict again."""
        return max(min(self._interval, self.confirmed_at + self._lease - time.monotonic()), 0.001)


def _check_sync_lock(lock: object) -> None:
    acquire = getattr(lock, "acquire", None)
    if not callable(acquire) or not callable(getattr(lock, "release", None)):
        raise TypeError(
            f"{type(lock).__name__} is not a lock: Leadership needs a name, an aplock lock, "
            "a PgLock, or an object with acquire(block, timeout), release() and name"
        )
    if inspect.iscoroutinefunction(acquire):
        raise TypeError(
            f"{type(lock).__name__} is an async lock: use aplock.leader.AsyncLeadership "
            "with it, or pass Leadership its sync twin (PgLock for an AsyncPgLock)"
        )


def log_elected(term: LeaderTerm) -> None:
    if term.took_over_from is not None:
        logger.warning(
            "lock %r: pid %d took leadership over from pid %d, which died leading; "
            "token %s. Check what its job left half done.",
            term.name,
            term.pid,
            term.took_over_from,
            term.token,
        )
    else:
        logger.info("lock %r: pid %d leads now; token %s", term.name, term.pid, term.token)


def _join_job(thread: threading.Thread, name: str) -> None:
    thread.join(_SLOW_STOP)
    if thread.is_alive():
        logger.warning(
            "lock %r: the job has not returned %g s after its term ended; leadership is "
            "kept until it does (a sync job must return once term.ended is true)",
            name,
            _SLOW_STOP,
        )
        thread.join()


# -- process life: interpreter exit and fork -----------------------------------------------

_running: weakref.WeakSet[Leadership] = weakref.WeakSet()


def _stop_at_exit() -> None:
    running = list(_running)
    for leadership in running:
        leadership._stop.set()
        term = leadership._term
        if term is not None:
            term._end()
        leadership._wake.set()
    deadline = time.monotonic() + EXIT_TIMEOUT
    for leadership in running:
        with contextlib.suppress(Exception):
            leadership.stop(max(deadline - time.monotonic(), 0.0))


def _forget_after_fork() -> None:
    for leadership in list(_running):
        leadership._forget()
    _running.clear()


def _stop_last_at_exit() -> None:
    """Stop at exit before anything registered so far, such as the lock's finalizers.

    ``atexit`` runs the latest registration first; a ``weakref.finalize`` (the lock's
    handle has one) registers weakref's own hook once, when the first one is made.
    """
    atexit.unregister(_stop_at_exit)
    atexit.register(_stop_at_exit)


os.register_at_fork(after_in_child=_forget_after_fork)

# -- the async twin, loaded with AnyIO on first use ------------------------------------------

_LAZY = {"AsyncLeadership": "_leader_async", "SupportsAsyncLeaderLock": "_leader_async"}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib  # noqa: PLC0415 - only for the async names

        value = getattr(importlib.import_module(f"aplock.{module}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))
