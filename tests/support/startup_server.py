"""Run the FastAPI start-up example under real servers, and read its journal.

Servers run as subprocesses in their own session (process group) on 127.0.0.1 and are
always stopped and reaped: SIGTERM to the master first (it stops and reaps its workers),
then SIGKILL to the whole group.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

import aplock
from aplock.startup import FileMarker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_startup"
#: gunicorn's worker class for uvicorn: the ``uvicorn-worker`` package, or the
#: deprecated module that older uvicorn releases still ship.
GUNICORN_WORKER = (
    "uvicorn_worker.UvicornWorker"
    if importlib.util.find_spec("uvicorn_worker") is not None
    else "uvicorn.workers.UvicornWorker"
)
SERVERS = ("uvicorn", "gunicorn", "gunicorn-preload")

Entry = dict[str, Any]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
class Server:
    """A running server and the files it writes."""

    proc: subprocess.Popen[bytes]
    port: int
    journal: Path
    log: Path
    name: str
    killed: dict[int, float] = field(default_factory=dict)

    def entries(self) -> list[Entry]:
        """The journal so far (complete lines only)."""
        try:
            text = self.journal.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines(keepends=True) if line[-1] == "\n"]

    def wait_for(
        self, predicate: Callable[[list[Entry]], bool], what: str, timeout: float = 40
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

    def wait_ready(self, workers: int) -> list[Entry]:
        """Wait until *workers* live workers finished start-up and HTTP answers."""

        def ready(entries: list[Entry]) -> bool:
            pids = {e["pid"] for e in entries if e["event"] == "ready"} - set(self.killed)
            return len(pids) >= workers

        self.wait_for(ready, f"{workers} workers to be ready")
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
            body = response.json()
            assert body["version"] == self.name
            assert isinstance(body["ran_startup"], bool)
            return self.entries()

    def kill(self, pid: int) -> None:
        """SIGKILL one worker, noting when."""
        self.killed[pid] = time.monotonic()
        os.kill(pid, signal.SIGKILL)

    def fail(self, why: str) -> None:
        """Fail the test with the server's output and the journal."""
        log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
        raise AssertionError(f"{why}\n--- journal:\n{self.entries()}\n--- server log:\n{log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server gracefully if it will, else kill its process group; always reap."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


@contextlib.contextmanager
def serving(
    server: str, tmp_path: Path, name: str, *, seconds: float, workers: int = 4
) -> Iterator[Server]:
    """Serve the example with lock *name* (also its key); clean up everything after."""
    port = free_port()
    journal = tmp_path / "journal.jsonl"
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "APP_VERSION": name,
        "STARTUP_JOURNAL": str(journal),
        "STARTUP_SECONDS": str(seconds),
        "STARTUP_LOCK": name,
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
        yield Server(proc, port, journal, log, name)
    finally:
        stop(proc)
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
