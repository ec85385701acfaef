"""Bad ``block`` and ``timeout`` arguments, and the messages they must give.

Shared by the bad-input tests of the POSIX classes (``tests/unit/test_bad_input.py``)
and of the PostgreSQL ones (``tests/postgres/test_bad_input.py``); see the former's
docstring for the rules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

TIMEOUT = "timeout must be a number of seconds or None, not "
BLOCK = "block must be True or False, not "


class RaisingBool:
    """A ``block`` whose truth test raises (multiprocessing never calls it on 3.11)."""

    def __bool__(self) -> bool:
        raise RuntimeError("truth test called")

    def __repr__(self) -> str:
        return "RaisingBool()"


@dataclass(frozen=True)
class Bad:
    """A bad call: its arguments, the error, and what the message says after the lock."""

    id: str
    kwargs: dict[str, Any] = field(hash=False)
    error: type[Exception]
    says: str


BAD = [
    Bad("str", {"timeout": "abc"}, TypeError, TIMEOUT + "'abc'"),
    Bad("numeric-str", {"timeout": "0.2"}, TypeError, TIMEOUT + "'0.2'"),
    Bad("bytes", {"timeout": b"1"}, TypeError, TIMEOUT + "b'1'"),
    Bad("list", {"timeout": [1]}, TypeError, TIMEOUT + "[1]"),
    Bad("complex", {"timeout": 1j}, TypeError, TIMEOUT + "1j"),
    Bad("nan", {"timeout": math.nan}, ValueError, TIMEOUT + "NaN"),
    Bad("minus-nan", {"timeout": -math.nan}, ValueError, TIMEOUT + "NaN"),
    Bad("decimal-nan", {"timeout": Decimal("NaN")}, ValueError, TIMEOUT + "NaN"),
    Bad("huge-int", {"timeout": 10**400}, OverflowError, "timeout is too large"),
    Bad("block-str", {"block": "no"}, TypeError, BLOCK + "'no'"),
    Bad("block-none", {"block": None}, TypeError, BLOCK + "None"),
    Bad("block-list", {"block": []}, TypeError, BLOCK + "[]"),
    Bad("block-float", {"block": 0.5}, TypeError, BLOCK + "0.5; to wait at most 0.5 seconds"),
    Bad("block-raising-bool", {"block": RaisingBool()}, TypeError, BLOCK + "RaisingBool()"),
    Bad("block-and-timeout", {"block": "no", "timeout": "abc"}, TypeError, BLOCK + "'no'"),
    Bad("no-block-str", {"block": False, "timeout": "abc"}, TypeError, TIMEOUT + "'abc'"),
    Bad("no-block-list", {"block": False, "timeout": [1]}, TypeError, TIMEOUT + "[1]"),
    Bad("int-no-block-str", {"block": 0, "timeout": "0.2"}, TypeError, TIMEOUT + "'0.2'"),
]

bad_calls = pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])


def expected(bad: Bad, kind: str, name: str) -> str:
    """The message's start, as a regex: ``aplock.Lock('x').acquire(): timeout must...``."""
    return "^" + re.escape(f"{kind}({name!r}).acquire(): {bad.says}")
