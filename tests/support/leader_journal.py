"""The leader's journal: JSON lines that jobs write, and the check that one ran at a time.

A job writes ``{"event": "start" | "beat" | "stop", "pid", "token", "t"}`` lines (``t`` on
``time.monotonic``, which is host-wide on Linux, so the lines of several processes
compare), with one ``os.write`` per line so that lines never interleave. A term runs
from a process's ``start`` to its ``stop``, or, for a process the test killed, to the
later of its last line and the moment the test sent the signal.
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

    A process has at most one term at a time: its ``beat`` and ``stop`` lines belong to
    its open term, and must carry that term's token. *killed* maps each pid the test
    SIGKILLed to the time (monotonic) it sent the signal.
    """
    open_terms: dict[int, Term] = {}
    order: list[Term] = []
    last_seen: dict[int, float] = {}
    for e in entries:
        pid = e["pid"]
        if e["event"] == "start":
            assert pid not in open_terms, f"two terms at once in process {pid}: {entries}"
            term = Term(pid, e.get("token"), e["t"], took_over_from=e.get("took_over_from"))
            open_terms[pid] = term
            order.append(term)
            last_seen[pid] = e["t"]
        elif e["event"] in ("beat", "stop"):
            current = open_terms.get(pid)
            assert current is not None, f"a {e['event']} outside any term: {e}"
            assert e.get("token") == current.token, f"a line of another term: {e}"
            if e["event"] == "beat":
                current.beats.append(e["t"])
            else:
                current.end, current.stopped = e["t"], True
                del open_terms[pid]
            last_seen[pid] = e["t"]
    for pid, term in open_terms.items():
        if pid in killed:
            term.killed = True
            term.end = max(last_seen[pid], killed[pid])
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
