"""A WSGI app for gunicorn's sync workers whose scheduler runs in exactly one worker.

Run it from this directory::

    gunicorn wsgi_app:app -w 4

Each worker imports this module and starts a ``Leadership`` (threads); the worker that
holds the lock runs ``run_scheduler``, an APScheduler 3 ``BackgroundScheduler`` whose
job writes a heartbeat to a journal. Kill that worker with ``kill -9`` and another one
takes over; gunicorn's graceful stop (``SIGTERM``, ``SIGHUP``) ends each worker
normally, and the leadership stops at interpreter exit, releasing the lock at once.

Do not combine it with ``--preload``: the module would run in the master before the
fork. (Start the leadership in a ``post_worker_init`` hook instead, then.)

Settings, from the environment: ``LEADER_JOURNAL``, ``LEADER_LOCK`` and ``BEAT_SECONDS``,
as for ``examples/fastapi_leader``.
"""

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]

from aplock.leader import Leadership, LeaderTerm

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


def heartbeat(term: LeaderTerm) -> None:
    """The scheduled job: a line in the journal with the term's fencing token."""
    if term.ended:  # leadership ended while this run was on its way
        return
    journal("beat", token=term.token)


def run_scheduler(term: LeaderTerm) -> None:
    """The leader's job: run the scheduler until the term ends, then stop it."""
    scheduler = BackgroundScheduler()
    scheduler.add_job(heartbeat, "interval", seconds=BEAT_SECONDS, args=[term])
    scheduler.start(paused=True)  # if it cannot start, the job raises and leadership is released
    journal("start", token=term.token, took_over_from=term.took_over_from)
    scheduler.resume()
    try:
        term.wait()  # until leadership is lost or the worker exits
    finally:
        scheduler.shutdown(wait=True)  # no run of the job is left when this returns
        journal("stop", token=term.token)


leadership = Leadership(LOCK, run_scheduler).start()
journal("ready")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Which worker answered, and whether it leads."""
    term = leadership.term
    body = {
        "pid": os.getpid(),
        "leading": term is not None,
        "token": term.token if term else None,
        "since": term.since if term else None,
    }
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]
