"""Signals during a blocked acquire behave as with multiprocessing.Lock.

A handler that returns normally neither raises nor shortens the wait; a handler that
raises interrupts the wait promptly with its own exception. Each case runs in a fresh
interpreter so that it owns its main thread and signal dispositions.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import faulthandler, os, signal, sys, threading, time
import aplock
faulthandler.dump_traceback_later(float(sys.argv[-1]), exit=True)  # a hang shows where
lock = aplock.Lock(sys.argv[1])
lock.acquire()  # held: the acquire below blocks
def later(delay, fn):
    t = threading.Timer(delay, fn); t.daemon = True; t.start()
def when_waiting(fn):
    # Run fn in another thread once the main thread waits in the lock's semaphore.
    main = threading.main_thread().ident
    def watch():
        while True:
            frame = sys._current_frames().get(main)
            if frame is not None and frame.f_code.co_qualname in ("Handle.take", "FastHandle.take"):
                break
            time.sleep(0.001)
        fn()
    threading.Thread(target=watch, daemon=True).start()
"""


def run(code: str, name: str, *args: str, timeout: float = 25) -> subprocess.CompletedProcess[str]:
    """Run *code* after ``PRELUDE`` in a fresh interpreter. A child still running 5 s
    before *timeout* prints every thread's stack to its stderr and exits."""
    script = PRELUDE + textwrap.dedent(code) + "\nlock.release()\naplock.unlink(sys.argv[1])\n"
    return subprocess.run(
        [sys.executable, "-c", script, name, *args, str(timeout - 5)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_handler_that_returns_neither_raises_nor_shortens_timeout(lock_name: str) -> None:
    proc = run(
        """
        ticks = []
        signal.signal(signal.SIGALRM, lambda *a: ticks.append(1))
        signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
        start = time.monotonic()
        got = lock.acquire(timeout=0.6)
        elapsed = time.monotonic() - start
        signal.setitimer(signal.ITIMER_REAL, 0)
        print(got, elapsed >= 0.59, len(ticks) > 10)
        """,
        lock_name,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True"]


def test_handler_that_returns_during_an_untimed_wait(lock_name: str) -> None:
    proc = run(
        """
        ticks = []
        signal.signal(signal.SIGUSR1, lambda *a: ticks.append(1))
        stop = threading.Event()
        def pester():
            while not stop.wait(0.005):
                os.kill(os.getpid(), signal.SIGUSR1)
        threading.Thread(target=pester, daemon=True).start()
        later(0.5, lock.release)       # released from another thread after 0.5 s
        start = time.monotonic()
        got = lock.acquire()           # no timeout: must wait through the signals
        stop.set()
        # standard signals coalesce while deferred: at least one run per slice waited
        print(got, time.monotonic() - start >= 0.45, len(ticks) >= 5)
        """,
        lock_name,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True"]


class_error = """
class Interrupted(Exception):
    pass
def raiser(*a):
    raise Interrupted("from the handler")
"""


@pytest.mark.parametrize("timeout", ["None", "30"])
def test_handler_exception_interrupts_promptly(lock_name: str, timeout: str) -> None:
    proc = run(
        class_error
        + f"""
signal.signal(signal.SIGUSR1, raiser)
when_waiting(lambda: os.kill(os.getpid(), signal.SIGUSR1))
start = time.monotonic()
try:
    lock.acquire(timeout={timeout})
except Interrupted as exc:
    print("Interrupted", str(exc).replace(" ", "_"), time.monotonic() - start < 2)
# the interrupted wait took nothing: the first acquisition is the only one
print(lock.acquire(False), lock.locked())
""",
        lock_name,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Interrupted", "from_the_handler", "True", "False", "True"]


def test_a_signal_taken_by_another_thread_leaves_nothing_blocked(lock_name: str) -> None:
    """In a process with other threads, a signal that the waiting main thread defers is
    delivered to another thread, and its handler runs on the main thread at its next
    bytecode. Once it has raised, the main thread's signal mask must be what it was."""
    proc = run(
        class_error
        + """
signal.signal(signal.SIGUSR1, raiser)
main = threading.main_thread().ident
go = threading.Semaphore(0)
def sender():  # started before any wait, so it never blocks SIGUSR1
    while go.acquire():
        while True:
            frame = sys._current_frames().get(main)
            if frame is not None and frame.f_code.co_qualname in ("Handle.take", "FastHandle.take"):
                break
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGUSR1)
threading.Thread(target=sender, daemon=True).start()
interrupted = blocked = 0
for _ in range(5):
    go.release()
    try:
        lock.acquire(timeout=10)
    except Interrupted:
        interrupted += 1
    if signal.SIGUSR1 in signal.pthread_sigmask(signal.SIG_BLOCK, ()):
        blocked += 1
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
print(interrupted, blocked)
""",
        lock_name,
    )
    assert proc.returncode == 0, proc.stderr
    interrupted, blocked = proc.stdout.split()
    assert interrupted == "5", f"only {interrupted} of 5 waits were interrupted"
    assert blocked == "0", f"{blocked} of 5 interruptions left the main thread's signals blocked"


def test_ctrl_c_raises_keyboard_interrupt(lock_name: str) -> None:
    proc = run(
        """
        when_waiting(lambda: os.kill(os.getpid(), signal.SIGINT))
        start = time.monotonic()
        try:
            lock.acquire()
        except KeyboardInterrupt:
            print("KeyboardInterrupt", time.monotonic() - start < 2)
        """,
        lock_name,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["KeyboardInterrupt", "True"]


def test_sigterm_handler_raising_system_exit_shuts_down(lock_name: str) -> None:
    proc = run(
        """
        def stop(*a):
            raise SystemExit(17)
        signal.signal(signal.SIGTERM, stop)
        when_waiting(lambda: os.kill(os.getpid(), signal.SIGTERM))
        try:
            lock.acquire()
        finally:
            lock.release()
            aplock.unlink(sys.argv[1])
        """,
        lock_name,
    )
    assert proc.returncode == 17, proc.stderr


def signal_racing_a_release(name: str, rounds: int) -> None:
    """*rounds* rounds of a signal whose handler raises, racing a release by another thread
    (before it, after it, or a little after): an interrupted acquire holds nothing."""
    proc = run(
        class_error
        + """
signal.signal(signal.SIGUSR1, raiser)
main = threading.main_thread().ident
outcomes = {"acquired": 0, "interrupted": 0}
for i in range(int(sys.argv[2])):
    go, done = threading.Event(), threading.Event()
    delay = (i % 30) / 3000
    def helper():
        go.wait()
        time.sleep(delay)
        if i % 3 == 0:
            lock.release(); signal.pthread_kill(main, signal.SIGUSR1)
        elif i % 3 == 1:
            signal.pthread_kill(main, signal.SIGUSR1); lock.release()
        else:
            lock.release(); time.sleep(delay); signal.pthread_kill(main, signal.SIGUSR1)
        done.set()
    threading.Thread(target=helper).start()
    go.set()
    try:
        assert lock.acquire(timeout=5)
        state = "acquired"
    except Interrupted:
        state = "interrupted"
    while True:  # let the signal land if it has not yet (outside acquire: ignored)
        try:
            done.wait(5); time.sleep(0.002)
            break
        except Interrupted:
            pass
    outcomes[state] += 1
    if state == "interrupted":
        # an interrupted acquire holds nothing: the lock is free after the release
        assert lock.acquire(False), "interrupted acquire leaked the lock"
    else:
        assert not lock.acquire(False)
print("consistent", outcomes["acquired"] > 0, outcomes["interrupted"] > 0)
""",
        name,
        str(rounds),
        timeout=60 + rounds / 10,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["consistent", "True", "True"]


def test_signal_racing_a_release_never_leaks_the_lock(lock_name: str) -> None:
    signal_racing_a_release(lock_name, 90)


@pytest.mark.stress
@pytest.mark.timeout(300)
def test_signal_racing_a_release_never_leaks_the_lock_stress(lock_name: str) -> None:
    signal_racing_a_release(lock_name, 3000)
