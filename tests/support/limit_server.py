"""Run the FastAPI concurrency-limit example under real servers, load it, read its journal.

The server is run, read and reaped by ``tests.support.served``. Load comes from client threads,
each sending one request at a time on a new connection (so that the kernel spreads them
over the workers), until told to stop. Every request's ``enter`` and ``exit`` lines in
the journal give the interval during which it was inside the limited section; the
worker's clock is ``time.monotonic()``, the same clock as the test's on Linux.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

import aplock
from tests.support import served
from tests.support.served import Entry
from tests.support.startup_server import GUNICORN_WORKER

if TYPE_CHECKING:
    from collections.abc import Iterator

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_limit"
#: What the example logs once per worker when its start-up is complete.
STARTED = "Application startup complete"


def command(server: str, port: int, workers: int) -> list[str]:
    """The command line that serves the example app with *workers* workers."""
    if server == "uvicorn":
        return [
            *(sys.executable, "-m", "uvicorn", "limit_app:app", "--app-dir", str(EXAMPLE)),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        ]
    return [
        *(sys.executable, "-m", "gunicorn", "limit_app:app", "--chdir", str(EXAMPLE)),
        *("-k", GUNICORN_WORKER, "-w", str(workers), "-b", f"127.0.0.1:{port}"),
        *("--graceful-timeout", "5"),
    ]


@dataclass(frozen=True)
class Visit:
    """One request's stay in the limited section.

    ``exit`` is when it journaled its exit, or, for a request of a worker that was
    killed inside, when the worker was killed; ``None`` while it is still inside.
    """

    request: str
    pid: int
    enter: float
    exit: float | None


@dataclass
class LimitServer(served.Server):
    """A running concurrency-limit example."""

    shown: int | None = field(default=40, kw_only=True)

    @property
    def url(self) -> str:
        """The limited endpoint."""
        return f"http://127.0.0.1:{self.port}/render"

    def visits(self) -> list[Visit]:
        """Every request's interval in the section, in the order they entered."""
        return visits(self.entries(), self.killed)

    def wait_started(self, workers: int) -> None:
        """Wait until *workers* workers have started and HTTP answers."""

        def started() -> bool:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            return log.count(STARTED) >= workers

        self.until(started, f"{workers} workers to start", every=0.01)
        response = self.get("/docs")
        assert response.status_code == 200, response.text


@contextlib.contextmanager
def serving(
    server: str,
    tmp_path: Path,
    name: str,
    *,
    limit: int,
    seconds: float,
    workers: int = 4,
) -> Iterator[LimitServer]:
    """Serve the example with semaphore *name* of value *limit*; clean up after."""
    env = {
        "LIMIT": str(limit),
        "LIMIT_SECONDS": str(seconds),
        "LIMIT_JOURNAL": str(tmp_path / served.JOURNAL),
        "LIMIT_SEMAPHORE": name,
    }
    try:
        with served.launch(
            LimitServer, tmp_path, lambda port: command(server, port, workers), env
        ) as srv:
            yield srv
    finally:
        aplock.unlink(name)


@dataclass
class Load:
    """Client threads that each send requests, one at a time, until stopped.

    ``done`` holds ``(time, outcome)`` per request: the status code, or the name of the
    exception (a request to a worker that was killed fails).
    """

    url: str
    clients: int
    requests_each: int | None = None
    done: list[tuple[float, int | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each time
        with httpx.Client(timeout=30, limits=limits) as client:
            sent = 0
            while not self._stop.is_set() and sent != self.requests_each:
                sent += 1
                outcome: int | str
                try:
                    outcome = client.get(self.url).status_code
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                with self._lock:
                    self.done.append((time.monotonic(), outcome))

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 40) -> None:
        """Let every client finish its request in flight, and wait for them."""
        self._stop.set()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(end - time.monotonic(), 0))
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"

    def join(self, timeout: float = 40) -> None:
        """Wait for clients that send a fixed number of requests to finish them."""
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(end - time.monotonic(), 0))
        assert not any(t.is_alive() for t in self._threads), "a client thread hung"

    def outcomes(self, after: float = float("-inf")) -> list[int | str]:
        """The outcomes of the requests that ended after *after*."""
        with self._lock:
            return [outcome for t, outcome in self.done if t > after]


def visits(entries: list[Entry], killed: dict[int, float]) -> list[Visit]:
    """Pair the journal's ``enter`` and ``exit`` lines into visits (see ``Visit``)."""
    exits = {e["request"]: e["t"] for e in entries if e["event"] == "exit"}
    found = []
    for e in entries:
        if e["event"] != "enter":
            continue
        end = exits.get(e["request"])
        if end is None and e["pid"] in killed:
            end = killed[e["pid"]]
        found.append(Visit(e["request"], e["pid"], e["t"], end))
    return found


def inside_over_time(found: list[Visit]) -> list[tuple[float, int]]:
    """``(time, requests inside right after it)`` at every enter and exit.

    At equal times an exit counts first: a permit is released after its holder's
    ``exit`` line and taken before the next holder's ``enter`` line.
    """
    events = [(v.enter, 1) for v in found]
    events += [(v.exit, -1) for v in found if v.exit is not None]
    events.sort(key=lambda ev: (ev[0], ev[1]))
    level = 0
    steps = []
    for t, change in events:
        level += change
        steps.append((t, level))
    return steps


def most_inside(found: list[Visit]) -> int:
    """The most requests inside the section at once."""
    return max((level for _, level in inside_over_time(found)), default=0)


def first_reached(found: list[Visit], count: int, after: float) -> float | None:
    """The first time after *after* when *count* requests were inside, if any."""
    return next((t for t, level in inside_over_time(found) if t > after and level >= count), None)


def open_at(found: list[Visit], pid: int, t: float) -> list[Visit]:
    """The visits of worker *pid* that were inside at time *t*."""
    return [v for v in found if v.pid == pid and v.enter < t and (v.exit is None or v.exit >= t)]


def first_waiting(entries: list[Entry], killed: dict[int, float], after: float) -> float | None:
    """The first time from *after* on when a request of a live worker waited to enter.

    A request waits from its ``wait`` line to its ``enter`` line (or to the end of the
    journal if it has not entered yet).
    """
    enters = {e["request"]: e["t"] for e in entries if e["event"] == "enter"}
    return min(
        (
            max(e["t"], after)
            for e in entries
            if e["event"] == "wait"
            and e["pid"] not in killed
            and enters.get(e["request"], float("inf")) > after
        ),
        default=None,
    )


def overlap_across_workers(found: list[Visit]) -> bool:
    """Whether requests of two different workers were ever inside at once."""
    return any(
        a.pid != b.pid
        and a.enter < (b.exit if b.exit is not None else float("inf"))
        and b.enter < (a.exit if a.exit is not None else float("inf"))
        for i, a in enumerate(found)
        for b in found[i + 1 :]
    )
