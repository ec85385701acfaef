"""A FastAPI service whose scheduler runs in exactly one worker, with failover.

Run it from this directory with several workers::

    uvicorn scheduler_app:app --workers 4

Every worker enters ``AsyncLeadership`` in its lifespan; the one that holds the lock
runs ``run_scheduler``, an APScheduler 3 ``AsyncIOScheduler`` whose job writes a
heartbeat to a journal. Kill that worker (``kill -9`` the pid of the journal's last
``start`` line) and another worker starts the scheduler within about a quarter of a
second; stop the server and the scheduler stops with it.

Settings, from the environment:

- ``LEADER_JOURNAL``: the journal, one JSON object a line (default
  ``aplock-leader-journal-<uid>.jsonl`` in the temporary directory).
- ``LEADER_LOCK``: the lock's name (default ``aplock-example.scheduler``).
- ``BEAT_SECONDS``: seconds between heartbeats (default ``1``).
"""

import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from fastapi import FastAPI

from aplock.leader import AsyncLeadership, LeaderTerm

JOURNAL = os.environ.get(
    "LEADER_JOURNAL",
    os.path.join(tempfile.gettempdir(), f"aplock-leader-journal-{os.getuid()}.jsonl"),
)
LOCK = os.environ.get("LEADER_LOCK", "aplock-example.scheduler")
BEAT_SECONDS = float(os.environ.get("BEAT_SECONDS", "1"))


def journal(event: str, **fields: object) -> None:
    """Append one line to the journal (one write, so lines never interleave)."""
    line = {"event": event, "pid": os.getpid(), "t": time.monotonic(), **fields}
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


async def heartbeat(term: LeaderTerm) -> None:
    """The scheduled job: here, a line in the journal with the term's fencing token."""
    if term.ended:  # a run APScheduler started just as leadership ended
        return
    journal("beat", token=term.token)


async def run_scheduler(term: LeaderTerm) -> None:
    """The leader's job: run the scheduler until leadership ends (this is cancelled)."""
    scheduler = AsyncIOScheduler()
    scheduler.add_job(heartbeat, "interval", seconds=BEAT_SECONDS, args=[term])
    scheduler.start(paused=True)  # if it cannot start, the job raises and leadership is released
    journal("start", token=term.token, took_over_from=term.took_over_from)
    scheduler.resume()
    try:
        await anyio.sleep_forever()
    finally:
        scheduler.shutdown(wait=False)
        journal("stop", token=term.token)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncLeadership(LOCK, run_scheduler) as leadership:
        app.state.leadership = leadership
        journal("ready")
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def root() -> dict[str, object]:
    """Which worker answered, and whether it leads."""
    term = app.state.leadership.term
    return {
        "pid": os.getpid(),
        "leading": term is not None,
        "token": term.token if term else None,
        "since": term.since if term else None,
    }
