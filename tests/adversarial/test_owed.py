"""Acquisitions owed by interrupted acquires: marked in the record, freed by the next waiter.

An acquire that a raising signal handler interrupts after it took the lock gives it
back; when a second handler cuts the give-back short, the acquisition stays marked
owed, and the next waiter (in any process) frees it. The mark must never free a later
acquisition, nor one that is only half published.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType
from typing import Any

import pytest

import aplock
from aplock._posix import fastpath
from aplock._posix import handle as _handle
from aplock._posix import record as _state
from tests.support import adversarial_workers as aw
from tests.support.procs import SPAWN, bad_outcomes, hammer_with_signals, running

# -- workers (module level, so that spawned children can import them) -------------------


class First(Exception):
    """Raised by the SIGUSR1 handler."""


class Second(Exception):
    """Raised by the SIGUSR2 handler."""


ARMED = False


def _raise_first(signum: int, frame: FrameType | None) -> None:
    if ARMED:
        raise First


def _raise_second(signum: int, frame: FrameType | None) -> None:
    if ARMED:
        raise Second


def _state_of(lock: aplock.Lock) -> tuple[int, int, str]:
    h = aw.handle_of(lock)
    pid = h.snapshot().pid
    who = "me" if pid == os.getpid() else "nobody" if pid == 0 else "other"
    owed = h.words[_state.OWED_WORD] == h.words[_state.GENERATION_WORD]
    return h.sem.value, h.token.value, f"{who}, owed" if owed else who


def _settled_by_a_waiter(lock: aplock.Lock) -> bool:
    """An owed acquisition must be freed by the next waiter within a slice or two."""
    if not lock.acquire(timeout=0.5):
        return False
    lock.release()
    return True


class _TokenThenTwoSignals:
    """Stands in for the token: after a real post, two raising signals become pending.

    This is what two signals arriving together look like (a double Ctrl-C, SIGTERM and
    SIGINT, SIGUSR1 and SIGUSR2): CPython runs the first handler right after the post,
    and, since it raised, schedules the rest for the very next check.
    """

    def __init__(self, real: Any) -> None:
        self.real = real

    def acquire(self, timeout: float | None = None) -> None:
        self.real.acquire(timeout)

    def release(self) -> None:
        self.real.release()
        both = {signal.SIGUSR1, signal.SIGUSR2}
        signal.pthread_sigmask(signal.SIG_BLOCK, both)
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR2)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, both)  # both handlers are now due

    @property
    def value(self) -> int:
        return int(self.real.value)


def two_signals_after_publish(name: str, conn: Any) -> None:
    """Acquire while two raising signals land right after the token's post; report.

    It instruments the Python steps (the token's post), so it runs on the pure path: the
    compiled path has no step between the post and the return.
    """
    global ARMED
    os.environ[fastpath.PURE_ENV] = "1"  # a spawned child: its handle is opened below
    signal.signal(signal.SIGUSR1, _raise_first)
    signal.signal(signal.SIGUSR2, _raise_second)
    lock = aplock.Lock(name)
    h = aw.handle_of(lock)
    real = h.token
    h.token = _TokenThenTwoSignals(real)  # type: ignore[assignment]
    raised = ""
    try:
        ARMED = True
        lock.acquire()
        ARMED = False
    except (First, Second) as exc:
        ARMED = False
        raised = type(exc).__name__
    finally:
        ARMED = False
        h.token = real
    state = _state_of(lock)
    settled = state == (0, 1, "me, owed") and _settled_by_a_waiter(lock)
    conn.send((raised, state, settled))
    if h.sem.value == 0:
        lock.release()


def paired_signal_calls(name: str, seconds: float, conn: Any) -> None:
    """Acquire and release in a loop while the parent sends SIGUSR1+SIGUSR2 pairs.

    Records, for each interruption, whether ``acquire()`` had returned and what state
    the lock was left in. Sends ``"ready"``, then a dict of outcomes.
    """
    global ARMED
    signal.signal(signal.SIGUSR1, _raise_first)
    signal.signal(signal.SIGUSR2, _raise_second)
    lock = aplock.Lock(name)
    h = aw.handle_of(lock)
    outcomes: dict[str, int] = {"calls": 0}
    conn.send("ready")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        outcomes["calls"] += 1
        got = False
        try:
            ARMED = True
            got = lock.acquire()
            lock.release()
            got = False
            ARMED = False
        except (First, Second):
            ARMED = False
            state = _state_of(lock)
            if state[:2] == (1, 0):
                key = "free"
            elif state[:2] == (0, 1) and state[2].startswith("me") and got:
                key = "held: acquire() had returned"
            elif state == (0, 1, "me, owed"):
                if _settled_by_a_waiter(lock):
                    key = "owed: freed by the next waiter"
                else:
                    key = "LEAKED: owed, and no waiter freed it"
            elif state == (0, 1, "me"):
                key = "LEAKED: acquire() raised, lock left held by this process"
            else:
                key = f"BROKEN: {state}"
            outcomes[key] = outcomes.get(key, 0) + 1
            if h.sem.value == 0 and h.token.value == 1:
                lock.release()
            elif key.startswith("BROKEN"):
                break
    ARMED = False
    conn.send(outcomes)


# -- raising handlers at once --------------------------------------------------------------


@pytest.mark.timeout(60)
def test_two_signals_after_the_post_leave_nothing_held(lock_name: str) -> None:
    """A second raising handler cuts the give-back short: the acquisition stays marked
    owed in the record, and the next waiter frees it."""
    parent, child = SPAWN.Pipe(duplex=False)
    with running(two_signals_after_publish, lock_name, child) as _:
        assert parent.poll(60), "the child never reported"
        raised, state, settled = parent.recv()
    assert raised, "acquire() was not interrupted"
    freed = state[:2] == (1, 0) or (state == (0, 1, "me, owed") and settled)
    assert freed, (
        f"acquire() raised {raised} but left the lock {state} (waiter freed it: {settled})"
    )


SIGNALS = {"pairs": (signal.SIGUSR1, signal.SIGUSR2), "single": (signal.SIGUSR1,)}


def interrupted_acquires(name: str, signals: str, seconds: float) -> None:
    """Interrupt acquires with *signals* for *seconds*; none may leave the lock held."""
    outcomes = hammer_with_signals(
        paired_signal_calls, name, seconds, signals=SIGNALS[signals], seed=7
    )
    assert sum(n for k, n in outcomes.items() if k != "calls") > 20, "too few interruptions"
    assert not bad_outcomes(outcomes), outcomes


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signals", list(SIGNALS))
def test_signals_never_leave_an_interrupted_acquire_held(lock_name: str, signals: str) -> None:
    interrupted_acquires(lock_name, signals, 1.0)


@pytest.mark.stress
@pytest.mark.timeout(120)
@pytest.mark.parametrize("signals", list(SIGNALS))
def test_signals_never_leave_an_interrupted_acquire_held_stress(
    lock_name: str, signals: str
) -> None:
    interrupted_acquires(lock_name, signals, 20.0)


# -- the owed mark: who may act on it ------------------------------------------------


def _mark_current_owed(h: _handle.Handle) -> int:
    generation = h.words[_state.GENERATION_WORD]
    h.words[_state.OWED_WORD] = generation
    return generation


def test_a_stale_owed_mark_never_frees_a_later_acquisition(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    h = aw.handle_of(lock)
    assert lock.acquire(False)
    owed = _mark_current_owed(h)
    lock.release()  # someone released the owed acquisition after all...
    assert lock.acquire(False)  # ...and a later one holds the lock now
    h.settle()
    assert (h.sem.value, h.token.value) == (0, 1), "a later acquisition was freed"
    assert lock.acquisition is not None
    assert lock.acquisition.generation == owed + 1
    lock.release()


def test_an_owed_mark_leaves_a_half_published_acquisition_alone(lock_name: str) -> None:
    """The owed acquisition was freed and a new acquirer has taken ``L`` but not yet
    published: the generation still matches, and settling must do nothing."""
    lock = aplock.Lock(lock_name)
    h = aw.handle_of(lock)
    assert lock.acquire(False)
    _mark_current_owed(h)
    lock.release()
    h.sem.acquire(0)  # the next acquirer, before its publish()
    h.settle()
    assert (h.sem.value, h.token.value) == (0, 0), "settling posted a lock it did not own"
    h.publish()
    lock.release()
    assert (h.sem.value, h.token.value) == (1, 0)


def acquire_within(name: str, timeout: float, conn: Any) -> None:
    lock = aplock.Lock(name, recovery_interval=None)  # never takes a dead holder's over
    start = time.monotonic()
    got = lock.acquire(timeout=timeout)
    conn.send((got, time.monotonic() - start))
    if got:
        lock.release()


@pytest.mark.timeout(60)
def test_a_waiter_in_another_process_frees_an_owed_acquisition(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    h = aw.handle_of(lock)
    assert lock.acquire(False)
    _mark_current_owed(h)  # as an interrupted acquire() that could not give it back
    parent, child = SPAWN.Pipe(duplex=False)
    with running(acquire_within, lock_name, 10.0, child) as _:
        assert parent.poll(60)
        got, waited = parent.recv()
    assert got, "an owed acquisition stayed held"
    assert waited < 5
    assert not lock.locked()
