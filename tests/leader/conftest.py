"""Fixtures of the leadership tests: a lock name whose leader file is removed after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aplock._leader_sides import LeaderFile


@pytest.fixture
def leader_name(lock_name: str) -> Iterator[str]:
    """A fresh lock name; its leader file (if a test's leader left one) is removed after."""
    yield lock_name
    LeaderFile(lock_name).clear()
