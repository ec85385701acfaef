"""Run the leader examples under real servers, and read their journals.

``examples/fastapi_leader`` under ``uvicorn --workers N`` (``AsyncLeadership``) and
``examples/wsgi_leader`` under gunicorn's sync workers (``Leadership``). Servers run in
their own session on 127.0.0.1 and are always stopped and reaped (see
``startup_server.stop``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

import aplock
from aplock._leader_sides import LeaderFile
from tests.support import leader_journal
from tests.support.startup_server import free_port, stop

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

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
class Served:
    """A running server, its journal and its log."""

    proc: subprocess.Popen[bytes]
    port: int
    journal: Path
    log: Path
    killed: dict[int, float] = field(default_factory=dict)

    def entries(self) -> list[Entry]:
        """The journal so far."""
        return leader_journal.read(str(self.journal))

    def wait_for(
        self, predicate: Callable[[list[Entry]], bool], what: str, timeout: float = 30
    ) -> list[Entry]:
        """Poll the journal until *predicate* holds; fail with the server's log if not."""
        end = time.monotonic() + timeout
        while True:
            entries = self.entries()
            if predicate(entries):
                return entries
            if self.proc.poll() is not None:
                self.fail(f"the server exited ({self.proc.returncode}) before {what}")
            if time.monotonic() > end:
                self.fail(f"timed out waiting for {what}")
            time.sleep(0.02)

    def ready_pids(self, entries: list[Entry]) -> set[int]:
        """The workers that started and were neither killed nor have exited."""
        return {e["pid"] for e in entries if e["event"] == "ready"} - set(self.killed)

    def wait_ready(self, workers: int) -> list[Entry]:
        """Wait until *workers* live workers are up, one leads, and HTTP answers."""

        def ready(entries: list[Entry]) -> bool:
            pids = {p for p in self.ready_pids(entries) if alive(p)}
            return len(pids) >= workers and self.leader(entries) in pids

        entries = self.wait_for(ready, f"{workers} workers up and one leading")
        end = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{self.port}/", timeout=2)
            except httpx.TransportError:
                if time.monotonic() > end:
                    self.fail("HTTP never answered")
                time.sleep(0.02)
                continue
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

    def kill(self, pid: int) -> None:
        """SIGKILL one worker, noting when."""
        self.killed[pid] = time.monotonic()
        os.kill(pid, signal.SIGKILL)

    def fail(self, why: str) -> None:
        """Fail the test with the journal and the server's output."""
        log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
        raise AssertionError(f"{why}\n--- journal:\n{self.entries()}\n--- server log:\n{log}")


@contextlib.contextmanager
def serving(server: str, tmp_path: Path, name: str, *, workers: int = 4) -> Iterator[Served]:
    """Serve the example for *server* with lock *name*; clean up everything after."""
    port = free_port()
    journal = tmp_path / "journal.jsonl"
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "LEADER_JOURNAL": str(journal),
        "LEADER_LOCK": name,
        "BEAT_SECONDS": str(BEAT),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command(server, port, workers),
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Served(proc, port, journal, log)
    finally:
        stop(proc)
        LeaderFile(name).clear()
        aplock.unlink(name)
