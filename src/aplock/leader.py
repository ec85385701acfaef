"""One leader among many processes: run a job in exactly one of them, with failover.

Every worker of ``uvicorn --workers N``, gunicorn or N replicas enters the same
leadership; each campaigns in the background for one named lock, and whichever holds it
runs the job while the others stand by. ``AsyncLeadership`` is for an ASGI lifespan
(asyncio and Trio); ``Leadership`` runs in threads, for sync frameworks::

    async with AsyncLeadership("myapp.scheduler", run_scheduler):
        yield  # the app serves; in one process, run_scheduler(term) runs

How it behaves, and why:

- **Campaigning** never delays start-up: entering returns at once. A standby waits for
  the lock the way the lock waits (an aplock lock: in 50 ms slices, taking a dead
  holder's lock over within its ``recovery_interval``; a PostgreSQL lock: blocked in the
  server), so a standby costs no polling. The sync helper waits for a lock that is not
  an aplock lock in waits of ``check_interval`` seconds, to notice ``stop()``.
- **Exactly one job.** The job runs only while the lock is held, and the lock is given
  back only after the job has ended. The leader confirms the lock every
  ``check_interval`` seconds (an aplock lock: a read of its record; a lock with a
  ``check()`` method, such as ``PgLock``: one round trip), and, for a PostgreSQL lock on
  Linux, at once when the server hangs up on its session (``pg_terminate_backend``).
  Once it is lost, the job is cancelled at once (a sync job is told through
  ``term.ended``).
- **Locks that a live holder can lose** (those with ``check()``: a PostgreSQL session
  can end while its process lives) are *remote*: the leader counts the lock lost when
  no check has confirmed it for ``3 * check_interval`` (its lease: a check that hangs),
  and a new leader waits ``3.5 * check_interval`` (its settle time) after taking the
  lock before it starts the job, so that a previous leader that lost its session has
  cancelled its job first. An aplock lock needs no settle: it is only taken over from a
  holder proven dead.
- **The fencing token** is the lock's generation (``term.token``): greater for every
  new term. The job should pass it to what it writes, so that a resource can refuse a
  leader that was presumed dead. A PostgreSQL lock's is the transaction id of the round
  trip that took it: increasing across the whole cluster (not consecutive), one
  transaction id consumed per term, on the primary only (not a standby). A lock without
  generations gives ``None``.
- **A job that returns** ends its work, not the term: the process stays leader,
  running nothing, until it exits or loses the lock. Work that needs doing once per
  leader is done once, not over and over; a job with nothing to do may just return;
  for periodic work, loop inside the job (or start a scheduler in it).
- **A job that raises** is logged (logger ``aplock``, with the traceback), leadership
  is released at once (a standby takes over), and this process campaigns again after
  ``retry_delay`` seconds, doubled for each failure in a row up to ``max_retry_delay``
  (a job that ran that long before it raised starts the count again). Failures to
  campaign (the server unreachable) back off the same way.
- **Leaving** (lifespan exit, ``stop()``) cancels the job, waits until it has ended,
  releases the lock and removes this process from the campaign: a waiting standby
  takes over at once (plus the settle time of a remote lock). Neither helper installs
  signal handlers: uvicorn and gunicorn turn ``SIGTERM`` into lifespan shutdown or
  worker exit, and ``Leadership`` stops at interpreter exit (``atexit``, waiting
  ``EXIT_TIMEOUT`` seconds at most for the job). A process killed outright (SIGKILL, or
  SIGTERM without a handler) leaves its lock to be recovered like any dead holder's.
- **Observable:** ``leading`` and ``term`` (``token``, ``since``, ``took_over_from``);
  with an aplock lock the leader also writes ``/dev/shm/<lock>.leader`` (see
  ``aplock._leader_sides.LeaderFile``) beside the lock, and its pid is the lock's holder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._leader_sides import SupportsLeaderLock
from ._leader_term import (
    CHECK_INTERVAL,
    EXIT_TIMEOUT,
    MAX_RETRY_DELAY,
    RETRY_DELAY,
    LeaderTerm,
    lease,
    settle,
)
from ._leader_threads import Leadership

if TYPE_CHECKING:
    from ._leader_async import AsyncLeadership, SupportsAsyncLeaderLock

__all__ = [
    "CHECK_INTERVAL",
    "EXIT_TIMEOUT",
    "MAX_RETRY_DELAY",
    "RETRY_DELAY",
    "AsyncLeadership",
    "LeaderTerm",
    "Leadership",
    "SupportsAsyncLeaderLock",
    "SupportsLeaderLock",
    "lease",
    "settle",
]

# -- the async twin, loaded with AnyIO on first use ------------------------------------------

_LAZY = {"AsyncLeadership": "_leader_async", "SupportsAsyncLeaderLock": "_leader_async"}

if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import importlib  # noqa: PLC0415 - only for the async names

        value = getattr(importlib.import_module(f"aplock.{module}"), name)
        globals()[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(_LAZY))
