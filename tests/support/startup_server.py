"""Run the FastAPI start-up example under real servers, and read its journal.

Servers are run, read and reaped by ``tests.support.served``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aplock
from aplock.startup import FileMarker
from tests.support import served
from tests.support.served import Entry, stop

if TYPE_CHECKING:
    from collections.abc import Iterator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_startup"
#: gunicorn's worker class for uvicorn: the ``uvicorn-worker`` package, or the
#: deprecated module that older uvicorn releases still ship.
GUNICORN_WORKER = (
    "uvicorn_worker.UvicornWorker"
    if importlib.util.find_spec("uvicorn_worker") is not None
    else "uvicorn.workers.UvicornWorker"
)
SERVERS = ("uvicorn", "gunicorn", "gunicorn-preload")

__all__ = [
    "EXAMPLE",
    "GUNICORN_WORKER",
    "SERVERS",
    "Entry",
    "Server",
    "check_journal",
    "serving",
    "stop",
]


def command(server: str, port: int, workers: int) -> list[str]:
    """The command line that serves the example app with *workers* workers."""
    if server == "uvicorn":
        return [
            *(sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(EXAMPLE)),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        ]
    preload = ["--preload"] if server == "gunicorn-preload" else []
    return [
        *(sys.executable, "-m", "gunicorn", "app:app", "--chdir", str(EXAMPLE)),
        *("-k", GUNICORN_WORKER, "-w", str(workers), "-b", f"127.0.0.1:{port}"),
        *("--graceful-timeout", "5", *preload),
    ]


@dataclass
class Server(served.Server):
    """A running start-up example: its version is the lock's name."""

    name: str = ""

    def wait_ready(self, workers: int) -> list[Entry]:
        """Wait until *workers* live workers finished start-up and HTTP answers."""

        def ready(entries: list[Entry]) -> bool:
            pids = {e["pid"] for e in entries if e["event"] == "ready"} - set(self.killed)
            return len(pids) >= workers

        self.wait_for(ready, f"{workers} workers to be ready", timeout=40)
        response = self.get("/")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["version"] == self.name
        assert isinstance(body["ran_startup"], bool)
        return self.entries()


@contextlib.contextmanager
def serving(
    server: str, tmp_path: Path, name: str, *, seconds: float, workers: int = 4
) -> Iterator[Server]:
    """Serve the example with lock *name* (also its key); clean up everything after."""
    env = {
        "APP_VERSION": name,
        "STARTUP_JOURNAL": str(tmp_path / served.JOURNAL),
        "STARTUP_SECONDS": str(seconds),
        "STARTUP_LOCK": name,
    }
    try:
        with served.launch(
            Server, tmp_path, lambda port: command(server, port, workers), env, name=name
        ) as srv:
            yield srv
    finally:
        aplock.unlink(name)
        FileMarker().clear(name)


def check_journal(entries: list[Entry], killed: dict[int, float]) -> Entry:
    """Check the work ran to completion exactly once and no two runs overlapped.

    *killed* maps each SIGKILLed pid to when it was killed; a run by a killed process
    counts as ending then. Returns the completed run's ``done`` entry.
    """
    starts = [e for e in entries if e["event"] == "start"]
    dones = [e for e in entries if e["event"] == "done"]
    readies = [e for e in entries if e["event"] == "ready"]
    assert len(dones) == 1, f"the work completed {len(dones)} times: {entries}"
    (done,) = dones
    # Every run either completed or was killed, and the runs did not overlap in time.
    previous_end = float("-inf")
    previous_generation = 0
    for start in starts:
        assert start["t"] > previous_end, f"two runs overlapped: {entries}"
        assert start["generation"] > previous_generation, entries
        if start["pid"] == done["pid"]:
            assert start["generation"] == done["generation"]
            previous_end = done["t"]
        else:
            assert start["pid"] in killed, f"a run neither completed nor was killed: {entries}"
            previous_end = killed[start["pid"]]
        previous_generation = start["generation"]
    assert starts[-1]["pid"] == done["pid"], entries
    # One worker ran it; every other worker waited for it, then skipped it.
    ran = [e for e in readies if e["ran"]]
    assert [e["pid"] for e in ran] == [done["pid"]], entries
    assert all(e["t"] >= done["t"] for e in readies), f"a worker skipped too early: {entries}"
    assert len({e["pid"] for e in readies}) == len(readies), entries
    assert not {e["pid"] for e in readies} & set(killed), entries
    return done
