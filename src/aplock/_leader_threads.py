"""``Leadership``: ``aplock.leader`` in threads, for sync frameworks.

Exported as ``aplock.leader.Leadership`` and ``aplock.Leadership``. One daemon thread
per leadership campaigns and supervises each term; the job runs in a thread of its own
(and is told, through ``term.ended``, when its term ends); for a remote lock a third
thread confirms the lock every ``check_interval``, and at once when the server hangs up
on the lock's session (``aplock._leader_watch``), so that a check that hangs cannot
keep the supervisor from counting the lease. These threads block the asynchronous
signals, which therefore go to the main thread, where Python handles them. It stops at
interpreter exit (``atexit``) and forgets itself in a forked child.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import signal
import threading
import time
import typing
import weakref
from typing import TYPE_CHECKING

from ._leader_sides import Backoff, PosixSide, SupportsLeaderLock, SyncSide, Won, posix_lock_of
from ._leader_term import (
    CHECK_INTERVAL,
    EXIT_TIMEOUT,
    MAX_RETRY_DELAY,
    RETRY_DELAY,
    Campaign,
    LeaderTerm,
    Raised,
    check_job,
    check_timings,
    log_elected,
    logger,
    settle,
)
from ._leader_watch import Watcher
from .errors import LockError
from .sync import Lock

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Self

    from .aio import AsyncLock

__all__ = ["Leadership"]

#: Seconds after which a job that was told its term ended and has not returned is logged.
_SLOW_STOP = 5.0


class _JobOutcome:
    returned: bool = False
    failure: BaseException | None = None


class Leadership(Campaign):
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
        # Reentrant: stop() from a signal handler may interrupt the main thread inside it.
        self._mutex = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._elected = threading.Condition(self._mutex)
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._job_thread: threading.Thread | None = None
        self._term: LeaderTerm | None = None

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
            RuntimeError: it is already running, or the interpreter is shutting down.
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
            _stop_last_at_exit(self.name)
            self._thread = thread
            _running.add(self)
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
        self._ask_to_stop()
        thread = self._thread
        if thread is None:
            return True
        if threading.current_thread() in (thread, self._job_thread):
            return False
        thread.join(timeout)
        return not thread.is_alive()

    def _ask_to_stop(self) -> None:
        """Stop campaigning and end the term, without waiting.

        Under the mutex that ``_lead`` publishes a term under: either the term is
        published first and ended here, or ``_lead`` sees the stop and starts no job.
        """
        with self._mutex:
            self._stop.set()
            if self._term is not None:
                self._term._end()
        self._wake.set()

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
        _leave_signals_to_the_main_thread()  # the job's and the check's threads inherit it
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
        watcher = (
            Watcher(self._other, self._wake, self._interval)
            if self._remote and self._other
            else None
        )
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
                if self._stop.is_set():  # asked to stop since the lock was won
                    return outcome
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
                watcher.stop()
                watcher.join()
            self._give_back(lost=lost, wrote_file=self._term is not None)
            self._term = None
        return outcome

    def _settle(self, watcher: Watcher) -> str | None:
        end = time.monotonic() + settle(self._interval)
        while (left := end - time.monotonic()) > 0 and not self._stop.is_set():
            lost = watcher.verdict()
            if lost is not None:
                return lost
            self._wake.wait(min(left, self._interval))
            self._wake.clear()
        return watcher.verdict()

    def _watch(
        self, won: Won, watcher: Watcher | None, box: _JobOutcome
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


#: Signals raised in the thread that faults, which must stay open there.
_SYNCHRONOUS = frozenset(
    getattr(signal, n)
    for n in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT")
    if hasattr(signal, n)
)


def _leave_signals_to_the_main_thread() -> None:
    """Block, in this thread, the signals that any thread of the process may receive.

    The kernel gives a signal sent to the process to any thread that does not block
    it. Python runs handlers only in the main thread, and a main thread blocked in an
    untimed wait (``event.wait()``, ``lock.acquire()``) runs them only if the signal
    interrupts *it*: a SIGTERM that a thread of ours took would wait there forever.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals() - _SYNCHRONOUS)


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


def _end_terms_at_shutdown() -> None:
    """At the start of interpreter shutdown: stop campaigning, tell the jobs to end.

    This runs before the non-daemon threads are joined and before ``concurrent.futures``
    refuses new work, so no term begins in a process that is exiting (its job could not
    start a thread pool), and a job whose threads hold up the shutdown is told to end.
    """
    for leadership in list(_running):
        leadership._ask_to_stop()


def _stop_at_exit() -> None:
    running = list(_running)
    _end_terms_at_shutdown()
    deadline = time.monotonic() + EXIT_TIMEOUT
    for leadership in running:
        with contextlib.suppress(Exception):
            leadership.stop(max(deadline - time.monotonic(), 0.0))


def _forget_after_fork() -> None:
    for leadership in list(_running):
        leadership._forget()
    _running.clear()


def _stop_last_at_exit(name: str) -> None:
    """Stop at exit before anything registered so far, such as the lock's finalizers.

    ``atexit`` runs the latest registration first; a ``weakref.finalize`` (the lock's
    handle has one) registers weakref's own hook once, when the first one is made. The
    terms are ended earlier still, when interpreter shutdown begins, through the hook
    that ``concurrent.futures`` uses too (``threading._register_atexit``, run before the
    threads are joined; registered at the first start, so after the thread pools that
    were imported by then, and run before theirs).
    """
    global _shutdown_hooked
    atexit.unregister(_stop_at_exit)
    atexit.register(_stop_at_exit)
    register = getattr(threading, "_register_atexit", None)
    if not _shutdown_hooked and register is not None:
        try:
            register(_end_terms_at_shutdown)
        except RuntimeError:  # "can't register atexit after shutdown"
            raise RuntimeError(
                f"lock {name!r}: the interpreter is shutting down; a Leadership cannot start now"
            ) from None
        _shutdown_hooked = True


_shutdown_hooked = False


os.register_at_fork(after_in_child=_forget_after_fork)
