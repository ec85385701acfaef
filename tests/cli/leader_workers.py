"""Child processes for the tests of the ``aplock`` command on leaders (spawned by name)."""

from __future__ import annotations

import time
from typing import Any


def lead_until_killed(name: str, conn: Any) -> None:
    """Lead through the lock *name* with a job that waits; send the term's token over
    *conn* once the job runs (its leader file is written by then); live until killed."""
    from aplock.leader import Leadership, LeaderTerm

    def job(term: LeaderTerm) -> None:
        conn.send(term.token)
        term.wait()

    Leadership(name, job).start()
    while True:
        time.sleep(3600)
