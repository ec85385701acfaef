"""Functions that child processes run in the run-once tests (importable by name for spawn)."""

from __future__ import annotations

import os
import time
from typing import Any

from aplock.startup import Once


def append(path: str, line: str) -> None:
    """Append one line to *path* in a single write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def run_once(name: str, key: str, journal: str, go: Any, results: Any) -> None:
    """Wait for *go*, then run the work once; report whether this process ran it."""
    once = Once(name, key=key)
    go.wait(30)

    def work() -> None:
        append(journal, f"start {os.getpid()}")
        time.sleep(0.2)
        append(journal, f"done {os.getpid()}")

    results.put((os.getpid(), once.run(work)))


def run_once_and_hang(name: str, key: str, started: Any) -> None:
    """Start the work, say so, and never finish it (the test kills this process)."""
    once = Once(name, key=key)

    def work() -> None:
        started.set()
        time.sleep(3600)

    once.run(work)
