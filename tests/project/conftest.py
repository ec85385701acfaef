"""Start the long checks of this folder's tests in the background as soon as collection
has selected them (see ``tests.support.background``), and stop any left at the end."""

from __future__ import annotations

import pytest

from tests.support import background


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the background jobs that the selected tests will read."""
    background.start_for(session.items)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Kill and reap the jobs that are still running (their tests did not run)."""
    background.stop_all()
