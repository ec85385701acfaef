"""What both leadership helpers share: the timings, the term, the checks of arguments.

Presented by ``aplock.leader``; ``aplock._leader_threads`` and ``aplock._leader_async``
are the two drivers.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
from dataclasses import dataclass, field

__all__ = [
    "CHECK_INTERVAL",
    "EXIT_TIMEOUT",
    "MAX_RETRY_DELAY",
    "RETRY_DELAY",
    "Campaign",
    "LeaderTerm",
    "Raised",
    "check_job",
    "check_timings",
    "lease",
    "log_elected",
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
@dataclass(frozen=True, slots=True)
class Raised:
    """The term ended because the job raised *exc*."""

    exc: BaseException


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


class Campaign:
    """What both leadership helpers show: the lock, its name, this process's term."""

    _lock: object
    _name: str
    _term: LeaderTerm | None

    @property
    def lock(self) -> object:
        """The lock campaigned for (the aplock lock opened for a name, or the one given)."""
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
