"""A FastAPI service whose start-up work runs once, however many workers start.

Run it from this directory with several workers, under uvicorn or gunicorn::

    uvicorn app:app --workers 4
    gunicorn app:app -k uvicorn_worker.UvicornWorker -w 4

Every worker runs ``lifespan``. The first one to get there runs ``migrate()`` while the
others wait for the lock; when it is done they skip it. Restarted workers find the
work done and skip it at once. Kill the worker that runs it (``kill -9`` the pid the
journal shows) and another worker takes the lock over and runs the work again, to the
end.

Settings, from the environment:

- ``APP_VERSION``: the work runs once per version (default ``1``).
- ``STARTUP_JOURNAL``: the file where the work writes what it does, one JSON object
  a line (default ``aplock-startup-journal-<uid>.jsonl`` in the temporary directory:
  ``$TMPDIR``, else ``/tmp``).
- ``STARTUP_SECONDS``: how long the pretend migration takes (default ``2``).
- ``STARTUP_LOCK``: the lock's name (default ``aplock-example.migrate``).
"""

import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

import aplock
from aplock.startup import AsyncOnce

APP_VERSION = os.environ.get("APP_VERSION", "1")
JOURNAL = os.environ.get(
    "STARTUP_JOURNAL",
    os.path.join(tempfile.gettempdir(), f"aplock-startup-journal-{os.getuid()}.jsonl"),
)
SECONDS = float(os.environ.get("STARTUP_SECONDS", "2"))
LOCK = aplock.AsyncLock(os.environ.get("STARTUP_LOCK", "aplock-example.migrate"))

# The work runs once per APP_VERSION among all the processes that share LOCK.
migrations = AsyncOnce(LOCK, key=APP_VERSION)


def journal(event: str, **fields: object) -> None:
    """Append one line to the journal (one write, so lines never interleave)."""
    line = {"event": event, "pid": os.getpid(), "t": time.monotonic(), **fields}
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


async def migrate() -> None:
    """The start-up work: here, a pretend migration that takes a while."""
    acquisition = LOCK.acquisition  # the fencing token of this run, and any takeover
    assert acquisition is not None
    generation, abandoned = acquisition.generation, acquisition.abandoned_pid
    journal("start", generation=generation, took_over_from=abandoned)
    await anyio.sleep(SECONDS)
    journal("done", generation=generation)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.ran_startup = await migrations.run(migrate)
    journal("ready", ran=app.state.ran_startup)
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def root() -> dict[str, object]:
    return {"pid": os.getpid(), "version": APP_VERSION, "ran_startup": app.state.ran_startup}
