"""Monotonic deadlines and timeout normalization: pure, no semaphore created."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

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
        (True, -math.inf, 0.0),
        (True, 1e300, 1e300),
        (True, 2**53 + 1, float(2**53)),
        (True, True, 1.0),  # a bool is an int, for timeout as for multiprocessing
        (True, False, 0.0),
        (True, Decimal("0.5"), 0.5),
        (True, Fraction(1, 4), 0.25),
        (1, None, None),
        (2, 3, 3.0),
        (0, None, 0.0),
        (0, 3, 0.0),
        (False, math.nan, 0.0),  # block=False ignores the value, not the type
        (False, Decimal("NaN"), 0.0),
    ],
)
def test_normalize_timeout_follows_multiprocessing(
    block: object, timeout: object, expected: float | None
) -> None:
    got = normalize_timeout(block, timeout)
    assert got == expected
    assert got is None or type(got) is float


@pytest.mark.parametrize(
    ("block", "timeout", "error", "message"),
    [
        (True, "abc", TypeError, "timeout must be a number of seconds or None, not 'abc'"),
        (True, "0.2", TypeError, "timeout must be a number of seconds or None, not '0.2'"),
        (True, b"1", TypeError, "timeout must be a number of seconds or None, not b'1'"),
        (True, bytearray(b"1"), TypeError, "timeout must be a number of seconds or None, "),
        (True, [1], TypeError, "timeout must be a number of seconds or None, not [1]"),
        (True, 1j, TypeError, "timeout must be a number of seconds or None, not 1j"),
        (False, "abc", TypeError, "timeout must be a number of seconds or None, not 'abc'"),
        (True, math.nan, ValueError, "timeout must be a number of seconds or None, not NaN"),
        (True, Decimal("NaN"), ValueError, "timeout must be a number of seconds or None, not NaN"),
        (True, 10**400, OverflowError, "timeout is too large to convert to float: 1000000"),
        (False, 10**400, OverflowError, "timeout is too large to convert to float: "),
        ("no", None, TypeError, "block must be True or False, not 'no'"),
        (None, None, TypeError, "block must be True or False, not None"),
        ([], 1, TypeError, "block must be True or False, not []"),
        ("no", "abc", TypeError, "block must be True or False, not 'no'"),  # block first
        (
            0.5,
            None,
            TypeError,
            "block must be True or False, not 0.5; to wait at most 0.5 seconds, pass timeout=0.5",
        ),
    ],
)
def test_bad_arguments_are_refused(
    block: object, timeout: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        normalize_timeout(block, timeout, "aplock.Lock", "x")
    assert str(info.value).startswith("aplock.Lock('x').acquire(): " + message)


def test_message_without_a_lock() -> None:
    with pytest.raises(TypeError) as info:
        normalize_timeout(True, "abc")
    assert str(info.value) == "acquire(): timeout must be a number of seconds or None, not 'abc'"


def test_the_truth_test_of_block_is_never_called() -> None:
    class Raising:
        def __bool__(self) -> bool:
            raise RuntimeError("called")

        def __repr__(self) -> str:
            return "Raising()"

    with pytest.raises(TypeError, match=r"block must be True or False, not Raising\(\)$"):
        normalize_timeout(Raising(), None)


def test_an_object_with_index_is_an_int() -> None:
    class Two:
        def __index__(self) -> int:
            return 2

    assert normalize_timeout(Two(), Two()) == 2.0


def test_a_failing_float_conversion_names_the_lock() -> None:
    class Broken:
        def __float__(self) -> float:
            raise ValueError("no float today")

        def __repr__(self) -> str:
            return "Broken()"

    with pytest.raises(ValueError, match=r"^acquire\(\): .* not Broken\(\) \(no float today\)$"):
        normalize_timeout(True, Broken())
    with pytest.raises(ValueError, match=r"not Decimal\('sNaN'\)"):
        normalize_timeout(True, Decimal("sNaN"))


def test_messages_survive_huge_and_broken_reprs() -> None:
    class BadRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with pytest.raises(TypeError, match=r"not <.*BadRepr object>$"):
        normalize_timeout(True, BadRepr())
    with pytest.raises(TypeError) as info:
        normalize_timeout(True, "x" * 1000)
    assert str(info.value).endswith("... <str object>")
    assert len(str(info.value)) < 200
    digits = 10**5000  # repr() raises for it, beyond the default limit of 4,300 digits
    with pytest.raises(OverflowError, match=r"too large to convert to float: .*forever$"):
        normalize_timeout(True, digits)


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
