"""A FastAPI service whose limited section runs at most N at a time across all workers.

Run it from this directory with several workers::

    uvicorn limit_app:app --workers 4

``GET /render`` does its slow part (here a pretend call to a service that accepts only
``LIMIT`` requests at a time) under an ``aplock.AsyncSemaphore`` of value ``LIMIT``: every
worker opens the same semaphore by name, so at most ``LIMIT`` requests are inside at
once among all the workers, however many requests arrive. The others wait their turn
without blocking their worker's event loop. Kill a worker while it is inside
(``kill -9`` a pid of an ``enter`` line of the journal with no ``exit``) and its permit
comes back to the waiters within about ``recovery_interval`` (0.25 s) plus 50 ms.

Settings, from the environment:

- ``LIMIT``: how many requests may be inside at once (default ``2``).
- ``LIMIT_SECONDS``: how long the limited section takes (default ``0.5``).
- ``LIMIT_JOURNAL``: the file where every request writes ``wait``, ``enter`` and ``exit``,
  one JSON object a line (default ``aplock-limit-journal-<uid>.jsonl`` in the temporary
  directory: ``$TMPDIR``, else ``/tmp``).
- ``LIMIT_SEMAPHORE``: the semaphore's name (default ``aplock-example.render``).
"""

import itertools
import json
import os
import tempfile
import time
import warnings
from typing import TextIO

import anyio
from fastapi import FastAPI

import aplock

LIMIT = int(os.environ.get("LIMIT", "2"))
SECONDS = float(os.environ.get("LIMIT_SECONDS", "0.5"))
JOURNAL = os.environ.get(
    "LIMIT_JOURNAL",
    os.path.join(tempfile.gettempdir(), f"aplock-limit-journal-{os.getuid()}.jsonl"),
)
# One semaphore for every worker: the same name and the same value in each.
SEMAPHORE = aplock.AsyncSemaphore(os.environ.get("LIMIT_SEMAPHORE", "aplock-example.render"), LIMIT)

_requests = itertools.count(1)


def journal(event: str, **fields: object) -> None:
    """Append one line to the journal (one write, so lines never interleave)."""
    line = {"event": event, "pid": os.getpid(), "t": time.monotonic(), **fields}
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


# The acquisition that gets the permit of a worker that died is warned: log each one.
warnings.simplefilter("always", aplock.AbandonedLockWarning)
_show_warning = warnings.showwarning


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    if isinstance(message, aplock.AbandonedLockWarning):
        journal("recovered", dead_pid=message.pid)
    _show_warning(message, category, filename, lineno, file, line)


warnings.showwarning = _log_warning

app = FastAPI()


@app.get("/render")
async def render() -> dict[str, object]:
    request = f"{os.getpid()}-{next(_requests)}"
    journal("wait", request=request)
    async with SEMAPHORE:  # waits, without blocking the event loop, for one of LIMIT permits
        journal("enter", request=request)
        await anyio.sleep(SECONDS)  # the limited work
        journal("exit", request=request)
    return {"pid": os.getpid(), "request": request}
