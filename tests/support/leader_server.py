"""Run the leader examples under real servers, and read their journals.

``examples/fastapi_leader`` under ``uvicorn --workers N`` (``AsyncLeadership``) and
``examples/wsgi_leader`` under gunicorn's sync workers (``Leadership``). Servers are run,
read and reaped by ``tests.support.served``.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aplock
from aplock._leader_sides import LeaderFile
from tests.support import leader_journal, served

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support.leader_journal import Entry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Seconds between heartbeats of the examples' scheduled job, in the tests.
BEAT = 0.05


def command(server: str, port: int, workers: int) -> list[str]:
    """The command line that serves the example for *server* with *workers* workers."""
    if server == "uvicorn":
        return [
            *(sys.executable, "-m", "uvicorn", "scheduler_app:app"),
            *("--app-dir", str(EXAMPLES / "fastapi_leader")),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        ]
    assert server == "gunicorn"
    return [
        *(sys.executable, "-m", "gunicorn", "wsgi_app:app"),
        *("--chdir", str(EXAMPLES / "wsgi_leader"), "-k", "sync", "-w", str(workers)),
        *("-b", f"127.0.0.1:{port}", "--graceful-timeout", "10"),
    ]


def alive(pid: int) -> bool:
    """Whether *pid* is a live process (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@dataclass
class Served(served.Server):
    """A running leader example."""

    def ready_pids(self, entries: list[Entry]) -> set[int]:
        """The workers that started and were neither killed nor have exited."""
        return {e["pid"] for e in entries if e["event"] == "ready"} - set(self.killed)

    def wait_ready(self, workers: int) -> list[Entry]:
        """Wait until *workers* live workers are up, one leads, and HTTP answers."""

        def ready(entries: list[Entry]) -> bool:
            pids = {p for p in self.ready_pids(entries) if alive(p)}
            return len(pids) >= workers and self.leader(entries) in pids

        entries = self.wait_for(ready, f"{workers} workers up and one leading")
        response = self.get("/")
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"pid", "leading", "token", "since"}
        return entries

    @staticmethod
    def leader(entries: list[Entry]) -> int | None:
        """The pid of the latest term's leader, if that term has not stopped."""
        order = leader_journal.terms(entries, {})
        return order[-1].pid if order and not order[-1].stopped else None

    def wait_beats(self, pid: int, count: int = 3) -> None:
        """Wait until the leader *pid* has written *count* heartbeats in its term."""

        def beating(entries: list[Entry]) -> bool:
            order = leader_journal.terms(entries, {})
            return bool(order) and order[-1].pid == pid and len(order[-1].beats) >= count

        self.wait_for(beating, f"{count} heartbeats of {pid}")


@contextlib.contextmanager
def serving(server: str, tmp_path: Path, name: str, *, workers: int = 4) -> Iterator[Served]:
    """Serve the example for *server* with lock *name*; clean up everything after."""
    env = {
        "LEADER_JOURNAL": str(tmp_path / served.JOURNAL),
        "LEADER_LOCK": name,
        "BEAT_SECONDS": str(BEAT),
    }
    try:
        with served.launch(
            Served, tmp_path, lambda port: command(server, port, workers), env
        ) as srv:
            yield srv
    finally:
        LeaderFile(name).clear()
        aplock.unlink(name)
