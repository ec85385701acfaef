"""Leadership (threads), with real threads, and its arguments; exit and fork in children.

Several leaderships of one lock in one process exclude each other as processes do. Jobs
run in their own threads and report through a queue; they return when ``term.ended``.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from typing import TYPE_CHECKING

import pytest

import aplock
from aplock._leader_sides import LeaderFile
from aplock.errors import LockLostError
from aplock.leader import AsyncLeadership, Leadership, LeaderTerm, lease, settle
from tests.support import leader_journal

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.timeout(30)

FAST = 0.05


class Jobs:
    """Sync jobs that record when they start and end."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, str, int | None, float]] = queue.Queue()
        self.log: list[tuple[str, str, int | None, float]] = []

    def job(self, tag: str, *, fail: int = 0) -> Callable[[LeaderTerm], None]:
        runs = [0]

        def job(term: LeaderTerm) -> None:
            runs[0] += 1
            self._put(tag, "start", term)
            if runs[0] <= fail:
                raise RuntimeError(f"job {tag} failed")
            term.wait()
            self._put(tag, "end", term)

        return job

    def _put(self, tag: str, what: str, term: LeaderTerm) -> None:
        self.events.put((tag, what, term.token, time.monotonic()))

    def next(self, what: str) -> tuple[str, str, int | None, float]:
        while True:
            event = self.events.get(timeout=10)
            self.log.append(event)
            if event[1] == what:
                return event


def test_start_returns_at_once_and_the_leader_runs_the_job(leader_name: str) -> None:
    jobs = Jobs()
    blocker = aplock.Lock(leader_name)
    blocker.acquire()
    leadership = Leadership(leader_name, jobs.job("a"))
    began = time.monotonic()
    with leadership:
        assert time.monotonic() - began < 0.1
        assert leadership.running
        assert leadership.wait_leading(0.2) is False
        assert "standing by" in repr(leadership)
        blocker.release()
        _, _, token, _ = jobs.next("start")
        assert leadership.wait_leading(5)
        term = leadership.term
        assert term is not None
        acquisition = blocker.acquisition
        assert acquisition is not None
        assert token == term.token == acquisition.generation
        assert term.pid == os.getpid()
        assert LeaderFile(leader_name).read() == {
            "name": leader_name,
            "pid": term.pid,
            "since": term.since,
            "token": token,
        }
    jobs.next("end")
    assert term.ended
    assert not leadership.leading
    assert not leadership.running
    assert not blocker.locked()
    assert LeaderFile(leader_name).read() is None
    assert "stopped" in repr(leadership)


def test_one_of_two_leads_and_the_other_takes_over_on_stop(leader_name: str) -> None:
    jobs = Jobs()
    a = Leadership(leader_name, jobs.job("a")).start()
    b = Leadership(leader_name, jobs.job("b")).start()
    try:
        first, _, token1, _ = jobs.next("start")
        leader, standby = (a, b) if first == "a" else (b, a)
        assert leader.wait_leading(5)
        time.sleep(0.3)  # the standby does not run the job meanwhile
        assert jobs.events.empty()
        assert not standby.leading
        stopped = time.monotonic()
        assert leader.stop(5)
        second, _, token2, started = jobs.next("start")
        assert second != first
        assert started - stopped < 0.5
        assert token1 is not None
        assert token2 is not None
        assert token2 > token1
    finally:
        assert a.stop(5)
        assert b.stop(5)


def test_a_job_that_raises_is_logged_and_leadership_moves(
    leader_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = Jobs()
    with caplog.at_level(logging.INFO, logger="aplock"):
        a = Leadership(leader_name, jobs.job("a", fail=1), retry_delay=0.3).start()
        try:
            assert jobs.next("start")[0] == "a"
            raised = time.monotonic()
            with Leadership(leader_name, jobs.job("b")):
                tag, _, _, started = jobs.next("start")
                assert tag == "b"
                assert started - raised < 0.5
            tag, _, _, again = jobs.next("start")  # a campaigns again after its delay
            assert tag == "a"
            assert again - raised >= 0.3
            assert a.leading
        finally:
            assert a.stop(5)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "aplock"]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "job a failed" in str(errors[0].exc_info[1])


def test_a_job_that_returns_keeps_leadership(
    leader_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: queue.Queue[int | None] = queue.Queue()
    jobs = Jobs()
    with (
        caplog.at_level(logging.INFO, logger="aplock"),
        Leadership(leader_name, lambda term: ran.put(term.token)) as a,
    ):
        ran.get(timeout=5)
        with Leadership(leader_name, jobs.job("standby")) as b:
            time.sleep(0.5)
            assert ran.empty()  # not run again
            assert a.leading
            assert not b.leading
            assert jobs.events.empty()
    assert any("job returned" in r.getMessage() for r in caplog.records)
    assert not aplock.Lock(leader_name).locked()


def test_a_lost_lock_ends_the_term_at_once(leader_name: str) -> None:
    jobs = Jobs()
    with Leadership(leader_name, jobs.job("a"), check_interval=FAST):
        _, _, token1, _ = jobs.next("start")
        released = time.monotonic()
        aplock.Lock(leader_name).release()  # misuse: another object releases it
        _, _, _, ended = jobs.next("end")
        assert ended - released < FAST + 0.2
        _, _, token2, _ = jobs.next("start")  # campaigning again: the lock was free
        assert token1 is not None
        assert token2 is not None
        assert token2 > token1


class RemoteLock:
    """A lock of the PgLock shape over an aplock lock, that a live holder can lose."""

    def __init__(self, name: str, hang: threading.Event | None = None) -> None:
        self.name = name
        self._lock = aplock.Lock(name)
        self._lost = False
        self._hang = hang  # once lost, check() hangs until it is set

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        got = self._lock.acquire(block, timeout)
        if got:
            self._lost = False
        return got

    def release(self) -> None:
        if self._lost:
            self._lost = False
            raise LockLostError(self.name, "the session ended")
        self._lock.release()

    def check(self) -> None:
        if self._lost and self._hang is not None:
            self._hang.wait()
        if self._lost:
            raise LockLostError(self.name, "the session ended")

    def terminate(self) -> None:
        self._lost = True
        self._lock.release()


@pytest.mark.parametrize("hang", [False, True], ids=["check-fails", "check-hangs"])
def test_a_remote_lock_lost_ends_the_term_before_the_next_leader_starts(
    leader_name: str, hang: bool
) -> None:
    jobs = Jobs()
    hung = threading.Event() if hang else None
    locks = {"a": RemoteLock(leader_name, hung), "b": RemoteLock(leader_name, hung)}
    entered = time.monotonic()
    with (
        Leadership(locks["a"], jobs.job("a"), check_interval=FAST),
        Leadership(locks["b"], jobs.job("b"), check_interval=FAST),
    ):
        first, _, token, started = jobs.next("start")
        assert token is None
        assert started - entered >= settle(FAST)
        terminated = time.monotonic()
        locks[first].terminate()
        tag, _, _, old_end = jobs.next("end")
        assert tag == first
        second, _, _, restarted = jobs.next("start")
        assert second != first
        assert old_end < restarted
        assert old_end - terminated < (lease(FAST) if hang else FAST) + 0.2
        assert restarted - terminated >= settle(FAST)
        if hung is not None:
            hung.set()  # the hung check returns: the old leader can clean up


def test_stop_from_the_job_only_asks(leader_name: str) -> None:
    answers: queue.Queue[bool] = queue.Queue()
    holder: list[Leadership] = []

    def job(term: LeaderTerm) -> None:
        answers.put(holder[0].stop())
        term.wait()

    leadership = Leadership(leader_name, job)
    holder.append(leadership)
    leadership.start()
    assert answers.get(timeout=5) is False
    assert leadership.stop(5)
    assert not aplock.Lock(leader_name).locked()


def test_start_twice_is_refused_and_restart_works(leader_name: str) -> None:
    jobs = Jobs()
    leadership = Leadership(leader_name, jobs.job("a"))
    with leadership:
        with pytest.raises(RuntimeError, match="already running"):
            leadership.start()
        jobs.next("start")
    jobs.next("end")
    with leadership:
        jobs.next("start")
    jobs.next("end")


def test_bad_arguments_are_refused(lock_name: str) -> None:
    def job(term: LeaderTerm) -> None:
        del term

    async def ajob(term: LeaderTerm) -> None:
        del term

    with pytest.raises(TypeError, match="AsyncLeadership"):
        Leadership(lock_name, ajob)
    with pytest.raises(TypeError, match="callable"):
        Leadership(lock_name, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a lock"):
        Leadership(object(), job)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async lock"):
        Leadership(RemoteAsync(lock_name), job)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is not async"):
        AsyncLeadership(RemoteLock(lock_name), ajob)  # type: ignore[arg-type]
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="check_interval"):
            Leadership(lock_name, job, check_interval=bad)
    with pytest.raises(TypeError, match="retry_delay"):
        Leadership(lock_name, job, retry_delay="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_retry_delay"):
        Leadership(lock_name, job, retry_delay=5, max_retry_delay=1)
    with pytest.raises(ValueError, match="empty"):
        Leadership("", job)


class RemoteAsync:
    """An object of the AsyncPgLock shape, for the argument checks."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        return True

    def release(self) -> None:
        pass


def test_it_stops_at_interpreter_exit(tmp_path: Path, leader_name: str) -> None:
    # A script that starts a leadership and ends normally (as a gunicorn worker does):
    # the job is told, returns, and the lock is released before the process exits.
    journal = tmp_path / "journal.jsonl"
    code = textwrap.dedent(
        """
        import sys
        from aplock.leader import Leadership
        from tests.support import leader_journal

        def job(term):
            leader_journal.write(sys.argv[2], "start", token=term.token)
            term.wait()
            leader_journal.write(sys.argv[2], "stop", token=term.token)

        leadership = Leadership(sys.argv[1], job).start()
        assert leadership.wait_leading(10)
        """
    )
    subprocess.run(
        [sys.executable, "-c", code, leader_name, str(journal)],
        check=True,
        timeout=30,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    order = leader_journal.check_one_writer(leader_journal.read(str(journal)), {})
    assert [t.stopped for t in order] == [True]
    assert not aplock.Lock(leader_name).locked()
    assert LeaderFile(leader_name).read() is None


def test_no_term_begins_once_the_process_is_exiting(tmp_path: Path, leader_name: str) -> None:
    # The script stands by while this test holds the lock, then ends; a non-daemon thread
    # holds up its exit (as a server's threads can). The lock is released then: the
    # exiting process must not take it and start a job (it could not start a thread
    # pool any more), and a live standby would wait for nothing.
    journal = tmp_path / "journal.jsonl"
    code = textwrap.dedent(
        """
        import sys, threading, time
        from aplock.leader import Leadership
        from tests.support import leader_journal

        def job(term):
            leader_journal.write(sys.argv[2], "start", token=term.token)
            term.wait()
            leader_journal.write(sys.argv[2], "stop", token=term.token)

        def linger():
            while threading.main_thread().is_alive():
                time.sleep(0.005)
            print("exiting", flush=True)
            time.sleep(1.0)  # the lock is free meanwhile

        Leadership(sys.argv[1], job).start()
        threading.Thread(target=linger).start()
        time.sleep(0.2)  # campaigning by now
        """
    )
    held = aplock.Lock(leader_name)
    assert held.acquire(timeout=5)
    released = False
    try:
        with subprocess.Popen(
            [sys.executable, "-c", code, leader_name, str(journal)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        ) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "exiting\n"
            held.release()
            released = True
            assert proc.wait(30) == 0
    finally:
        if not released:
            held.release()
    assert not journal.exists() or leader_journal.read(str(journal)) == []
    assert held.acquire(block=False)
    held.release()


def test_a_forked_child_does_not_lead(leader_name: str) -> None:
    jobs = Jobs()
    with Leadership(leader_name, jobs.job("a")) as leadership:
        assert leadership.wait_leading(5)
        read, write = os.pipe()
        with warnings.catch_warnings():  # Python 3.12+ warns of fork() with threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report what it believes, and leave at once
            try:
                os.write(write, b"%d%d" % (leadership.leading, leadership.running))
            finally:
                os._exit(0)
        os.close(write)
        try:
            with os.fdopen(read, "rb") as f:
                assert f.read() == b"00"
        finally:
            os.waitpid(pid, 0)
        assert leadership.leading  # the parent still does
        assert aplock.Lock(leader_name).locked()


def test_the_lock_is_given_back_only_once_the_job_has_returned(leader_name: str) -> None:
    cleaned: queue.Queue[float] = queue.Queue()

    def slow_to_stop(term: LeaderTerm) -> None:
        term.wait()
        time.sleep(0.3)  # a scheduler that finishes a run in progress
        cleaned.put(time.monotonic())

    jobs = Jobs()
    first = Leadership(leader_name, slow_to_stop).start()
    try:
        assert first.wait_leading(5)
        with Leadership(leader_name, jobs.job("b")):
            first.stop()
            _, _, _, took_over = jobs.next("start")
    finally:
        first.stop()
    assert took_over > cleaned.get(timeout=5)


def test_stop_from_a_signal_handler_inside_its_own_lock_does_not_deadlock(
    leader_name: str,
) -> None:
    # A handler runs between two bytecodes of the main thread, which may be inside
    # wait_leading() or start() at that moment, holding the leadership's lock: the stop
    # the handler asks for must not wait for that lock.
    jobs = Jobs()
    leadership = Leadership(leader_name, jobs.job("a")).start()
    try:
        jobs.next("start")
        previous = signal.signal(signal.SIGUSR1, lambda signum, frame: leadership.stop(0))
        try:
            with leadership._elected:  # where wait_leading() is between two waits
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
                time.sleep(0.01)  # the handler runs here
        finally:
            signal.signal(signal.SIGUSR1, previous)
        jobs.next("end")
        assert leadership.stop(10)
    finally:
        leadership.stop(10)


def test_its_threads_leave_signals_to_the_main_thread(leader_name: str) -> None:
    # A SIGTERM that one of them took would never run its handler while the main thread
    # blocks in an untimed wait; the kernel gives it only to threads that do not block it.
    started: queue.Queue[int] = queue.Queue()

    def job(term: LeaderTerm) -> None:
        started.put(threading.get_native_id())
        term.wait()

    with Leadership(RemoteLock(leader_name), job, check_interval=FAST) as leadership:
        job_tid = started.get(timeout=10)
        assert leadership.leading
        ours = [t for t in threading.enumerate() if t.name.startswith("aplock ")]
        assert {t.name.split()[1] for t in ours} == {"leader", "job"}
        for tid in [job_tid, *(t.native_id for t in ours)]:
            with open(f"/proc/self/task/{tid}/status") as f:
                blocked = next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk"))
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                assert blocked & (1 << (sig - 1)), (tid, sig)
            assert not blocked & (1 << (signal.SIGSEGV - 1))
    with open("/proc/self/status") as f:  # the main thread blocks nothing of ours
        main_blocked = next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk"))
    assert not main_blocked & (1 << (signal.SIGTERM - 1))
