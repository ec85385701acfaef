"""The leader's journal: JSON lines that jobs write, and the check that one ran at a time.

A job writes ``{"event": "start" | "beat" | "stop", "pid", "token", "t"}`` lines (``t`` on
``time.monotonic``, which is host-wide on Linux, so the lines of several processes
compare), with one ``os.write`` per line so that lines never interleave. A term is the
``(pid, token)`` of a start; it ends at its ``stop``, or, for a process the test killed,
at the later of its last line and the moment the test sent the signal.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

Entry = dict[str, Any]


def write(path: str, event: str, **fields: object) -> None:
    """Append one line to the journal at *path*."""
    line = {"event": event, "pid": os.getpid(), "t": time.monotonic(), **fields}
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def read(path: str) -> list[Entry]:
    """The complete lines of the journal so far."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def starts(entries: list[Entry]) -> list[Entry]:
    """The ``start`` lines, in order."""
    return [e for e in entries if e["event"] == "start"]


@dataclass
class Term:
    """One leader's term, as the journal shows it."""

    pid: int
    token: int | None
    start: float
    end: float | None = None  # None: still running
    stopped: bool = False
    killed: bool = False
    took_over_from: int | None = None
    beats: list[float] = field(default_factory=list)


def terms(entries: list[Entry], killed: dict[int, float]) -> list[Term]:
    """The terms of the journal, in the order they started.

    *killed* maps each pid the test SIGKILLed to the time (monotonic) it sent the signal.
    """
    found: dict[tuple[int, Any], Term] = {}
    order: list[Term] = []
    last_seen: dict[tuple[int, Any], float] = {}
    for e in entries:
        key = (e["pid"], e.get("token"))
        if e["event"] == "start":
            assert key not in found, f"two starts of term {key}: {entries}"
            term = Term(e["pid"], e.get("token"), e["t"], took_over_from=e.get("took_over_from"))
            found[key] = term
            order.append(term)
        elif e["event"] in ("beat", "stop"):
            current = found.get(key)
            assert current is not None, f"a {e['event']} outside any term: {e}"
            assert current.end is None, f"a line after the term's stop: {e}"
            if e["event"] == "beat":
                current.beats.append(e["t"])
            else:
                current.end, current.stopped = e["t"], True
        last_seen[key] = e["t"]
    for key, term in found.items():
        if term.end is None and term.pid in killed:
            term.killed = True
            term.end = max(last_seen[key], killed[term.pid])
    return order


def check_one_writer(
    entries: list[Entry], killed: dict[int, float], *, running: int = 0
) -> list[Term]:
    """Check that at most one term ran at any instant, and that tokens only grew.

    Every term must have ended (a ``stop``, or its process killed), except the last
    *running* ones. Returns the terms.
    """
    order = terms(entries, killed)
    assert order, f"no term started: {entries}"
    for term in order[: len(order) - running]:
        assert term.end is not None, f"term {term} neither stopped nor was killed: {entries}"
    previous: Term | None = None
    for term in order:
        for beat in term.beats:
            assert term.start <= beat <= (term.end if term.end is not None else float("inf"))
        if previous is not None:
            assert previous.end is not None, f"{term} started while {previous} ran: {entries}"
            assert term.start > previous.end, f"{term} started while {previous} ran"
            if term.token is not None and previous.token is not None:
                assert term.token > previous.token, f"tokens went back: {previous} then {term}"
        previous = term
    return order


def gaps(order: list[Term]) -> list[tuple[Term, Term, float]]:
    """Each term with the next one, and the seconds from its end to the next's start."""
    return [(a, b, b.start - a.end) for a, b in itertools.pairwise(order) if a.end]
