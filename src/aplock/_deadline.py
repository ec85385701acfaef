"""Monotonic deadlines and wait slices (pure logic, no I/O).

Every wait in aplock is measured on ``time.monotonic`` and cut into bounded slices, so
that a wall-clock step or a platform without ``sem_timedwait`` can never stretch a wait
by more than one slice, and so that a waiter regularly gets the chance to check for
cancellation, signals and an abandoned holder.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

#: Longest single blocking wait on a semaphore.
SLICE = 0.05


def normalize_timeout(block: bool, timeout: float | None) -> float | None:
    """Apply ``multiprocessing.Lock.acquire`` rules: the timeout to wait, ``None`` = forever.

    ``block=False`` never waits and ignores *timeout*; a negative timeout means zero.
    """
    if not block:
        return 0.0
    if timeout is None:
        return None
    timeout = float(timeout)
    if math.isnan(timeout):
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    return max(timeout, 0.0)


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point on the monotonic clock, or ``None`` for "never"."""

    at: float | None

    @classmethod
    def after(cls, timeout: float | None, *, now: float | None = None) -> Deadline:
        """The deadline *timeout* seconds from now (``None``: no deadline)."""
        if timeout is None or math.isinf(timeout):
            return cls(None)
        return cls((time.monotonic() if now is None else now) + timeout)

    def remaining(self, *, now: float | None = None) -> float | None:
        """Seconds left (never negative), or ``None`` for no deadline."""
        if self.at is None:
            return None
        return max(self.at - (time.monotonic() if now is None else now), 0.0)

    def expired(self, *, now: float | None = None) -> bool:
        """Whether no time is left."""
        return self.remaining(now=now) == 0.0

    def slice(self, longest: float = SLICE, *, now: float | None = None) -> float:
        """The next wait: at most *longest*, never past the deadline."""
        left = self.remaining(now=now)
        return longest if left is None else min(left, longest)
