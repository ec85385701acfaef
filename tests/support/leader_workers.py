"""Child processes for the leadership tests (spawned by name): a worker of a "server".

Each worker enters a leadership whose job writes heartbeats to a journal (see
``leader_journal``) until it gets SIGTERM, which it turns into leaving, as servers do;
the test SIGKILLs some of them meanwhile.
*kind* is ``asyncio``, ``trio`` (``AsyncLeadership``) or ``threads`` (``Leadership``);
with a *dsn*, the lock is a PostgreSQL one (``AsyncPgLock`` or ``PgLock``) on a
connection of the worker's own.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tests.support import leader_journal

#: Seconds between two heartbeats of a job.
BEAT = 0.02
#: The leaders' check interval in these tests (the default).
CHECK_INTERVAL = 0.2


def worker(kind: str, name: str, journal: str, dsn: str | None = None, pgid: int = -1) -> None:
    """Lead or stand by until SIGTERM; join process group *pgid* (0: a new one).

    SIGUSR1 prints the stacks of its threads (``Crew`` sends it to a worker that does not
    stop in time, so that a hang says where).
    """
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if pgid >= 0:
        os.setpgid(0, pgid)
    if kind == "threads":
        _threads(name, journal, dsn)
    else:
        _async(kind, name, journal, dsn)


def _threads(name: str, journal: str, dsn: str | None) -> None:
    import signal
    import threading

    from aplock.leader import Leadership, LeaderTerm

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())

    def job(term: LeaderTerm) -> None:
        leader_journal.write(journal, "start", token=term.token, took_over_from=term.took_over_from)
        while not term.wait(BEAT):
            leader_journal.write(journal, "beat", token=term.token)
        leader_journal.write(journal, "stop", token=term.token)

    lock: Any = name
    if dsn is not None:
        from aplock.postgres import PgLock

        lock = PgLock(name, dsn)
    with Leadership(lock, job, check_interval=CHECK_INTERVAL):
        leader_journal.write(journal, "ready", pgid=os.getpgid(0))
        stop.wait()
    if dsn is not None:
        lock.close()


def _async(backend: str, name: str, journal: str, dsn: str | None) -> None:
    import signal

    import anyio

    from aplock.leader import AsyncLeadership, LeaderTerm

    async def job(term: LeaderTerm) -> None:
        leader_journal.write(journal, "start", token=term.token, took_over_from=term.took_over_from)
        try:
            while True:
                leader_journal.write(journal, "beat", token=term.token)
                await anyio.sleep(BEAT)
        finally:
            leader_journal.write(journal, "stop", token=term.token)

    async def main() -> None:
        lock: Any = name
        if dsn is not None:
            from aplock.postgres import AsyncPgLock

            lock = AsyncPgLock(name, dsn)
        with anyio.open_signal_receiver(signal.SIGTERM) as signals:
            async with AsyncLeadership(lock, job, check_interval=CHECK_INTERVAL):
                leader_journal.write(journal, "ready", pgid=os.getpgid(0))
                async for _ in signals:
                    break
        if dsn is not None:
            await lock.aclose()

    anyio.run(main, backend=backend)


def lead_until_killed(name: str, conn: Any) -> None:
    """Lead through the lock *name* with a job that waits; send the term's token over
    *conn* once the job runs (its leader file is written by then); live until killed."""
    from aplock.leader import Leadership, LeaderTerm

    def job(term: LeaderTerm) -> None:
        conn.send(term.token)
        term.wait()

    Leadership(name, job).start()
    while True:
        time.sleep(3600)


class Crew:
    """The test's side: workers spawned by name, killed, replaced, always reaped.

    Use it as a context manager; on exit it sends every worker SIGTERM, gives it time
    to leave its leadership, then kills and reaps whatever is left.
    """

    def __init__(self, kind: str, name: str, journal: str, dsn: str | None = None) -> None:
        from tests.support.procs import SPAWN

        self.kind, self.name, self.journal, self.dsn = kind, name, journal, dsn
        self.ctx = SPAWN
        self.procs: dict[int, Any] = {}
        self.killed: dict[int, float] = {}

    def spawn(self, pgid: int = -1) -> int:
        """Start one more worker (in process group *pgid*: 0 for a new one); its pid."""
        args = (self.kind, self.name, self.journal, self.dsn, pgid)
        proc = self.ctx.Process(target=worker, args=args, daemon=True)
        proc.start()
        assert proc.pid is not None
        self.procs[proc.pid] = proc
        return int(proc.pid)

    def entries(self) -> list[leader_journal.Entry]:
        """The journal so far."""
        return leader_journal.read(self.journal)

    def wait_for(
        self, predicate: Any, what: str, timeout: float = 30
    ) -> list[leader_journal.Entry]:
        """Poll the journal until *predicate* holds."""
        import time

        end = time.monotonic() + timeout
        while True:
            entries = self.entries()
            if predicate(entries):
                return entries
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}: {entries}")
            time.sleep(0.005)

    def wait_ready(self, pid: int) -> None:
        """Wait until worker *pid* has entered its leadership."""
        self.wait_for(
            lambda es: any(e["event"] == "ready" and e["pid"] == pid for e in es), f"{pid} ready"
        )

    def wait_term(self, *, other_than: int | None = None) -> leader_journal.Entry:
        """Wait for a running term (of a process other than *other_than*): its start."""

        def running(entries: list[leader_journal.Entry]) -> bool:
            order = leader_journal.terms(entries, self.killed)
            return bool(order) and order[-1].end is None and order[-1].pid != other_than

        entries = self.wait_for(running, "a term to start")
        return leader_journal.starts(entries)[-1]

    def kill(self, pid: int) -> float:
        """SIGKILL worker *pid*, reap it; return when the signal was sent."""
        import signal
        import time

        sent = time.monotonic()
        self.killed[pid] = sent
        os.kill(pid, signal.SIGKILL)
        self.procs.pop(pid).join(10)
        return sent

    def __enter__(self) -> Crew:
        return self

    def __exit__(self, *exc: object) -> None:
        import signal
        import time

        for pid, proc in self.procs.items():
            if proc.is_alive():
                os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 20
        for proc in self.procs.values():
            proc.join(max(end - time.monotonic(), 0))
        for pid, proc in self.procs.items():
            if proc.is_alive():
                os.kill(pid, signal.SIGUSR1)  # its stacks, on its stderr
                proc.join(1)
                proc.kill()
                proc.join(10)

    def exit_codes(self) -> list[int | None]:
        """The exit codes of the workers that were not killed."""
        return [p.exitcode for p in self.procs.values()]
