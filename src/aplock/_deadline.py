"""Monotonic deadlines and wait slices (pure logic, no I/O).

Every wait in aplock is measured on ``time.monotonic`` and cut into bounded slices, so
that a wall-clock step or a platform without ``sem_timedwait`` can never stretch a wait
by more than one slice, and so that a waiter regularly gets the chance to check for
cancellation, signals and an abandoned holder.
"""

from __future__ import annotations

import math
import operator
import time
from dataclasses import dataclass

#: Longest single blocking wait on a semaphore.
SLICE = 0.05


def normalize_timeout(
    block: object, timeout: object, lock: str = "", name: str = ""
) -> float | None:
    """Check and apply ``multiprocessing.Lock.acquire``'s rules: the seconds to wait.

    Returns ``None`` to wait forever, ``0.0`` to try once without waiting. As in
    ``multiprocessing``, ``block=False`` ignores the value of *timeout* (but not its type),
    and a negative timeout means zero. Checks every argument, so that a bad call fails
    whether the lock is free or not.

    Args:
        block: ``True``, ``False`` or an ``int``, as ``multiprocessing`` takes it on
            Python 3.11 (later versions take any object's truth value). A float is
            refused: ``acquire(0.5)`` meant ``timeout=0.5``.
        timeout: seconds as any real number (``int``, ``float``, ``Decimal``,
            ``Fraction``...), or ``None``. Not a string, not NaN.
        lock: the class of the lock, for messages (``"aplock.Lock"``).
        name: the lock's name, for messages.

    Raises:
        TypeError: *block* is not a bool or int, or *timeout* is not a real number.
        ValueError: *timeout* is NaN (and *block* true).
        OverflowError: *timeout* is an int too large for a float.
    """
    if block is not True and block is not False:
        block = _checked_block(block, lock, name)
    if timeout is None:
        return None if block else 0.0
    seconds = timeout if type(timeout) is float else _seconds(timeout, lock, name)
    if not block:
        return 0.0
    if seconds > 0.0:
        return seconds
    if math.isnan(seconds):
        raise ValueError(f"{_call(lock, name)}timeout must be a number of seconds or None, not NaN")
    return 0.0


def _checked_block(block: object, lock: str, name: str) -> bool:
    """*block* as a bool, if it is an int (or has ``__index__``, as ``bool`` and ``int`` do)."""
    if isinstance(block, float):
        hint = f"; to wait at most {block!r} seconds, pass timeout={block!r}"
    else:
        hint = ""
    try:
        return operator.index(block) != 0  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{_call(lock, name)}block must be True or False, not {_shown(block)}{hint}"
        ) from None


def _seconds(timeout: object, lock: str, name: str) -> float:
    """*timeout* as a float, if it is a real number (what ``PyFloat_AsDouble`` takes).

    ``float()`` alone would also parse strings (``"0.2"``), which ``multiprocessing``
    refuses.
    """
    cls = type(timeout)
    if not (hasattr(cls, "__float__") or hasattr(cls, "__index__")):
        raise TypeError(
            f"{_call(lock, name)}timeout must be a number of seconds or None, not {_shown(timeout)}"
        )
    try:
        return float(timeout)  # type: ignore[arg-type]
    except OverflowError:
        raise OverflowError(
            f"{_call(lock, name)}timeout is too large to convert to float: {_shown(timeout)}; "
            "pass None to wait forever"
        ) from None
    except (TypeError, ValueError) as exc:  # e.g. a __float__ that fails, Decimal("sNaN")
        error = TypeError if isinstance(exc, TypeError) else ValueError
        raise error(
            f"{_call(lock, name)}timeout must be a number of seconds or None, "
            f"not {_shown(timeout)} ({exc})"
        ) from exc


def _call(lock: str, name: str) -> str:
    """The start of a message about a bad argument: ``"aplock.Lock('x').acquire(): "``."""
    return f"{lock}({name!r}).acquire(): " if lock else "acquire(): "


def _shown(value: object) -> str:
    """A short repr of *value* for a message, even if its ``repr()`` fails or is huge."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__, or an int of more than 4300 digits
        return f"<{type(value).__qualname__} object>"
    return text if len(text) <= 80 else f"{text[:60]}... <{type(value).__qualname__} object>"


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
