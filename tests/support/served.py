"""Real servers for the examples' tests: started, read through their journal, always reaped.

A server runs as a subprocess in its own session (process group) on 127.0.0.1, with its
output in ``server.log`` and the example's journal in ``journal.jsonl`` of the test's
``tmp_path``. It is always stopped and reaped: SIGTERM to the master first (it stops
and reaps its workers), then SIGKILL to the whole group. ``startup_server``,
``limit_server`` and ``leader_server`` build on this for their examples.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

Entry = dict[str, Any]
#: The journal's file name in the test's ``tmp_path`` (the examples take its path from
#: the environment).
JOURNAL = "journal.jsonl"

S = TypeVar("S", bound="Server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def read_journal(path: Path | str) -> list[Entry]:
    """The complete lines of a journal so far (none if it does not exist yet)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


@dataclass
class Server:
    """A running server, its journal and its log; the workers the test killed, and when."""

    proc: subprocess.Popen[bytes]
    port: int
    journal: Path
    log: Path
    killed: dict[int, float] = field(default_factory=dict)
    #: How many of the journal's last lines a failure shows (``None``: all).
    shown: int | None = field(default=None, kw_only=True)

    def entries(self) -> list[Entry]:
        """The journal so far."""
        return read_journal(self.journal)

    def until(
        self, predicate: Callable[[], bool], what: str, timeout: float = 30, every: float = 0.02
    ) -> None:
        """Poll *predicate* until it holds; fail with the server's log if not."""
        end = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                self.fail(f"the server exited ({self.proc.returncode}) before {what}")
            if time.monotonic() > end:
                self.fail(f"timed out waiting for {what}")
            time.sleep(every)

    def wait_for(
        self, predicate: Callable[[list[Entry]], bool], what: str, timeout: float = 30
    ) -> list[Entry]:
        """Poll the journal until *predicate* holds of it; return the entries it held of."""
        seen: list[list[Entry]] = []

        def holds() -> bool:
            seen[:] = [self.entries()]
            return predicate(seen[0])

        self.until(holds, what, timeout)
        return seen[0]

    def get(self, path: str = "/", within: float = 20) -> httpx.Response:
        """GET *path*, retrying while the server does not answer yet (for *within* s)."""
        end = time.monotonic() + within
        while True:
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2)
            except httpx.TransportError:
                if time.monotonic() > end:
                    self.fail("HTTP never answered")
                time.sleep(0.02)

    def kill(self, pid: int) -> float:
        """SIGKILL one worker; return when (the journal's clock, ``time.monotonic()``)."""
        self.killed[pid] = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        return self.killed[pid]

    def fail(self, why: str) -> None:
        """Fail the test with the journal and the server's output."""
        log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
        entries = self.entries()
        journal = entries if self.shown is None else entries[-self.shown :]
        raise AssertionError(f"{why}\n--- journal:\n{journal}\n--- server log:\n{log}")


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
def launch(
    cls: type[S],
    tmp_path: Path,
    argv: Callable[[int], list[str]],
    env: Mapping[str, str],
    **fields: Any,
) -> Iterator[S]:
    """Run ``argv(port)`` with *env* added to the environment; stop and reap it after.

    *fields* go to *cls* beside the process, port, journal and log.
    """
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv(port),
            env={**os.environ, **env},
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield cls(proc, port, tmp_path / JOURNAL, log, **fields)
    finally:
        stop(proc)
