"""Monotonic deadlines and timeout normalization: pure, no semaphore created."""

from __future__ import annotations

import math

import pytest

from aplock._deadline import SLICE, Deadline, normalize_timeout


@pytest.mark.parametrize(
    ("block", "timeout", "expected"),
    [
        (False, None, 0.0),
        (False, 10, 0.0),
        (True, None, None),
        (True, -1, 0.0),
        (True, 0, 0.0),
        (True, 2.5, 2.5),
        (True, math.inf, math.inf),
    ],
)
def test_normalize_timeout_follows_multiprocessing(
    block: bool, timeout: float | None, expected: float | None
) -> None:
    assert normalize_timeout(block, timeout) == expected


def test_nan_timeout_is_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        normalize_timeout(True, math.nan)


def test_deadline_remaining_and_slices() -> None:
    d = Deadline.after(1.0, now=100.0)
    assert d.remaining(now=100.25) == pytest.approx(0.75)
    assert d.slice(now=100.0) == SLICE
    assert d.slice(now=100.99) == pytest.approx(0.01)
    assert d.slice(now=200.0) == 0.0
    assert d.expired(now=101.0)
    assert not d.expired(now=100.5)


def test_no_deadline_never_expires() -> None:
    for forever in (Deadline.after(None), Deadline.after(math.inf)):
        assert forever.at is None
        assert forever.remaining() is None
        assert not forever.expired()
        assert forever.slice() == SLICE
