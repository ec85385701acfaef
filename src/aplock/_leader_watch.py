"""How a leader watches a lock that a live holder can lose: checks, and hang-ups.

A remote lock (one with ``check()``, such as ``PgLock``) is confirmed every
``check_interval``. A PostgreSQL session can end while its process lives
(``pg_terminate_backend``, a server restart); the server then sends an error and closes
the connection. Waiting between checks for that hang-up instead of sleeping (``Hangup``:
the lock's session socket, ``_session_socket()``, in an epoll instance, on Linux) brings
the check forward, so that the job is stopped at once rather than up to a
``check_interval`` later. Only the check decides that the lock is lost: a hang-up never
counts as a loss by itself. ``Watcher`` is the thread that does this for ``Leadership``;
``AsyncLeadership`` waits on the same ``Hangup`` in its confirming task.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from typing import TYPE_CHECKING

from ._leader_term import lease

if TYPE_CHECKING:
    from ._leader_sides import SyncSide

__all__ = ["Hangup", "Watcher"]

#: The longest single wait of a watcher for a hang-up (``poll`` takes an int of ms).
_LONGEST_POLL = 3600.0

#: The epoll event of a peer that closed its end (Linux only).
_RDHUP: int | None = getattr(select, "EPOLLRDHUP", None)


class Hangup:
    """Waits for the server to hang up on a session: an epoll instance (Linux) that is
    readable once the peer of the session's socket has closed the connection.

    A terminated backend sends an error and closes its end; data that arrives for the
    connection's owner (results, notices, notifications) is not a hang-up and does not
    wake it (``EPOLLRDHUP``, not ``EPOLLIN``). It never reads the socket, and only
    tells when to check the lock: the check says whether it is lost.
    """

    __slots__ = ("_epoll",)

    def __init__(self, epoll: select.epoll) -> None:
        self._epoll = epoll

    @staticmethod
    def possible(lock: object) -> bool:
        """Whether *lock* shows its session's socket and this platform can watch it."""
        return _RDHUP is not None and callable(getattr(lock, "_session_socket", None))

    @classmethod
    def watch(cls, lock: object) -> Hangup | None:
        """A watch on the socket of *lock*'s session; ``None`` where there is none to
        watch (``possible`` is false, or the lock holds no session now)."""
        if _RDHUP is None or not cls.possible(lock):
            return None
        fd = lock._session_socket()  # type: ignore[attr-defined]
        if not isinstance(fd, int):
            return None
        epoll = select.epoll()
        try:
            epoll.register(fd, _RDHUP)  # a hang-up, or an error (EPOLLHUP and EPOLLERR: always)
        except OSError:  # closed meanwhile: the next check tells
            epoll.close()
            return None
        return cls(epoll)

    def fileno(self) -> int:
        """What to wait on for readability: readable once the peer hung up."""
        return self._epoll.fileno()

    def hung_up(self) -> bool:
        """Whether the peer has hung up (no wait)."""
        return bool(self._epoll.poll(0))

    def close(self) -> None:
        """Stop watching (the session's socket is left as it is)."""
        self._epoll.close()


class Watcher(threading.Thread):
    """Confirms a remote lock every ``check_interval`` during a term of ``Leadership``
    (in a thread of its own: a check can hang), and at once when the server hangs up on
    the lock's session (``Hangup``).

    A hang-up only brings the next check forward: the check says whether the lock is
    lost. Should a check after a hang-up not find the lock lost, the watcher goes back
    to the timer alone for the rest of the term (the hang-up would wake it again at
    once: it must not spin).
    """

    def __init__(self, side: SyncSide, wake: threading.Event, interval: float) -> None:
        super().__init__(name=f"aplock leader check {side.name}", daemon=True)
        self._side = side
        self._wake = wake  # set when the lock is lost
        self._interval = interval
        self._lease = lease(interval)
        self.over = threading.Event()
        self.confirmed_at = time.monotonic()  # the acquisition just confirmed it
        self.lost: str | None = None
        self.failure: str | None = None
        self._mutex = threading.Lock()
        self._wakeup: tuple[int, int] | None = None  # a pipe that stop() writes to
        self._hangups = Hangup.possible(side.lock)

    def stop(self) -> None:
        """End the watching now, even in the middle of a wait."""
        self.over.set()
        with self._mutex:
            if self._wakeup is not None:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._wakeup[1], b"\0")

    def run(self) -> None:
        if self._hangups:
            read, write = os.pipe()
            os.set_blocking(write, False)
            with self._mutex:
                self._wakeup = (read, write)
        try:
            while True:
                hung_up = self._pause()
                if self.over.is_set():
                    return
                started = time.monotonic()
                why = self._side.confirm()
                if why is not None and why.startswith("lost: "):
                    self.lost = why.removeprefix("lost: ")
                    self._wake.set()
                    return
                if hung_up:
                    self._hangups = False
                if why is None:
                    self.confirmed_at = started
                else:
                    self.failure = why
        finally:
            with self._mutex:
                wakeup, self._wakeup = self._wakeup, None
            if wakeup is not None:
                os.close(wakeup[0])
                os.close(wakeup[1])

    def _pause(self) -> bool:
        """Wait ``check_interval``, or until ``stop()`` or the server hangs up on the
        lock's session; return whether it hung up."""
        wakeup = self._wakeup
        hangup = Hangup.watch(self._side.lock) if self._hangups and wakeup else None
        if hangup is None or wakeup is None:
            self.over.wait(self._interval)
            return False
        try:
            poller = select.poll()
            poller.register(hangup.fileno(), select.POLLIN)
            poller.register(wakeup[0], select.POLLIN)
            end = time.monotonic() + self._interval
            while not self.over.is_set() and (left := end - time.monotonic()) > 0:
                if poller.poll(min(left, _LONGEST_POLL) * 1000.0):
                    break
            return hangup.hung_up()
        finally:
            hangup.close()

    def verdict(self) -> str | None:
        """Why the lock counts as lost now, or ``None``."""
        if self.lost is not None:
            return self.lost
        unconfirmed = time.monotonic() - self.confirmed_at
        if unconfirmed > self._lease:
            return f"not confirmed for {unconfirmed:.3g} s ({self.failure or 'no answer'})"
        return None

    def next_wait(self) -> float:
        """How long the leader may sleep before it must look at the verdict again."""
        return max(min(self._interval, self.confirmed_at + self._lease - time.monotonic()), 0.001)
