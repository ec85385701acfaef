"""Child-process code for the adversarial tests (importable by name, so spawn finds it).

Nothing here uses a ``multiprocessing.Queue`` from a process that may be killed: killed
processes report through files and shared memory only, so that a SIGKILL can never
leave a queue's write lock held.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from types import FrameType
from typing import Any

import aplock
from aplock._core import core_of
from aplock._deadline import Deadline
from aplock._posix import handle as _handle
from aplock._posix import identity as _process
from aplock._posix import record as _state


def handle_of(lock: aplock.Lock) -> _handle.Handle:
    """The POSIX handle behind *lock* (its internals, for tests that inspect them)."""
    h = lock._h
    assert isinstance(h, _handle.Handle)
    return h


def parked(thread: threading.Thread) -> bool:
    """Whether *thread* (of this process) is in a semaphore wait of the lock protocol."""
    frame = sys._current_frames().get(thread.ident or 0)
    return frame is not None and frame.f_code.co_qualname in ("Handle.take", "FastHandle.take")


def reset(lock: aplock.Lock) -> None:
    """Make *lock* free again, whatever a test left it as (test-only surgery)."""
    h = lock._h
    assert isinstance(h, _handle.Handle)
    with h.guard.held():
        h.words[_state.INTENT_WORD] = 0
        if h.token.value == 1:
            h.token.acquire(0)
        h.words[_state.PID_WORD] = 0
        if h.sem.value == 0:
            h.sem.release()


# -- the shared scoreboard of the chaos tests ------------------------------------------

#: Words of the scoreboard (a file every worker maps): who is inside the critical
#: section, the latest fencing token seen there, and counters.
OWNER, LAST_GEN, ACQUIRED, VIOLATIONS, LEAKS, CANCELLED, TIMEOUTS, STOP = range(8)
BOARD_WORDS = 64
BOARD_SIZE = BOARD_WORDS * 8
#: Thread ids in the ``OWNER`` word are ``pid * TID_SCALE + thread index``.
TID_SCALE = 1000


def create_board(path: str) -> None:
    """Create an all-zero scoreboard file."""
    with open(path, "wb") as f:
        f.write(b"\0" * BOARD_SIZE)


@contextlib.contextmanager
def board(path: str) -> Iterator[memoryview]:
    """Map the scoreboard as 64-bit words."""
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, BOARD_SIZE)
    finally:
        os.close(fd)
    words = memoryview(mm).cast("q")
    try:
        yield words
    finally:
        words.release()
        mm.close()


def report(directory: str, text: str) -> None:
    """Append one line to this process's report file (read by the test afterwards)."""
    with open(os.path.join(directory, f"report-{os.getpid()}.txt"), "a") as f:
        f.write(text.rstrip("\n") + "\n")


def owner_alive(owner: int) -> bool:
    """Whether the thread recorded in the ``OWNER`` word belongs to a live process."""
    pid = owner // TID_SCALE
    return not _process.is_proven_dead(_process.identity_of(pid)) if pid > 0 else False


def critical_section(
    words: memoryview, lock: aplock.Lock, tid: int, hold: float, where: str, out: str
) -> None:
    """Check exclusion on entry and exit; ``hold`` is spent between a read and a write."""
    owner = words[OWNER]
    if owner not in (0, tid) and owner_alive(owner):
        words[VIOLATIONS] += 1
        report(out, f"VIOLATION {where}: entered while live {owner} was inside")
    words[OWNER] = tid
    acq = lock.acquisition
    generation = acq.generation if acq is not None else -1
    last = words[LAST_GEN]
    if generation <= last:
        words[VIOLATIONS] += 1
        report(out, f"VIOLATION {where}: fencing token {generation} after {last}")
    words[LAST_GEN] = generation
    count = words[ACQUIRED]
    if hold:
        time.sleep(hold)
    words[ACQUIRED] = count + 1  # read-sleep-write: a second holder would lose an update
    if words[OWNER] != tid:
        words[VIOLATIONS] += 1
        report(out, f"VIOLATION {where}: {words[OWNER]} entered while {tid} was inside")
    words[OWNER] = 0


def my_leak(lock: aplock.Lock) -> bool:
    """Whether this process is recorded as holding *lock* (call when it should not)."""
    h = lock._h
    assert isinstance(h, _handle.Handle)
    return h.snapshot().pid == os.getpid() and h.token.value == 1


def chaos_sync(name: str, path: str, out: str, seed: int, threads: int) -> None:
    """Churn *name* from *threads* threads until told to stop (or killed).

    Each round picks a blocking, timed or non-blocking acquire, holds it for a random
    instant inside ``critical_section`` and releases it.
    """
    warnings.simplefilter("ignore")
    lock = aplock.Lock(name, recovery_interval=0.05)
    with board(path) as words:

        def loop(index: int) -> None:
            rng = random.Random(seed * 100 + index)
            tid = os.getpid() * TID_SCALE + index
            while not words[STOP]:
                kind = rng.random()
                if kind < 0.2:
                    got = lock.acquire(False)
                elif kind < 0.8:
                    got = lock.acquire(timeout=rng.uniform(0, 0.3))
                else:
                    got = lock.acquire(timeout=5)
                if not got:
                    words[TIMEOUTS] += 1
                    continue
                try:
                    hold = rng.choice((0.0, 0.0, 0.0005, rng.uniform(0, 0.01)))
                    critical_section(words, lock, tid, hold, f"sync {tid}", out)
                finally:
                    lock.release()

        pool = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()


def chaos_async(name: str, path: str, out: str, seed: int, backend: str, tasks: int) -> None:
    """Churn *name* from *tasks* tasks of one event loop, cancelling waits at random.

    When told to stop, check that no acquisition leaked: the process must not be
    recorded as the holder once all its tasks are done.
    """
    import anyio

    warnings.simplefilter("ignore")
    lock = aplock.Lock(name, recovery_interval=0.05)
    alock = aplock.AsyncLock(lock)

    with board(path) as words:

        async def task(index: int) -> None:
            rng = random.Random(seed * 100 + index)
            tid = os.getpid() * TID_SCALE + index
            while not words[STOP]:
                got = False
                with anyio.move_on_after(rng.uniform(0, 0.2)) as scope:
                    got = await alock.acquire(timeout=rng.choice((None, rng.uniform(0, 0.2))))
                if not got:
                    words[CANCELLED if scope.cancelled_caught else TIMEOUTS] += 1
                    continue
                try:
                    owner = words[OWNER]
                    if owner not in (0, tid) and owner_alive(owner):
                        words[VIOLATIONS] += 1
                        report(out, f"VIOLATION async {tid}: entered while {owner} was inside")
                    words[OWNER] = tid
                    count = words[ACQUIRED]
                    await anyio.sleep(rng.choice((0.0, 0.0, rng.uniform(0, 0.005))))
                    words[ACQUIRED] = count + 1
                    if words[OWNER] != tid:
                        words[VIOLATIONS] += 1
                        report(out, f"VIOLATION async {tid}: {words[OWNER]} entered meanwhile")
                    words[OWNER] = 0
                finally:
                    alock.release()

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                for i in range(tasks):
                    tg.start_soon(task, i)

        if backend == "trio":
            anyio.run(main, backend="trio")
        else:
            options = {"use_uvloop": backend == "uvloop"}
            anyio.run(main, backend="asyncio", backend_options=options)
        if my_leak(lock):
            words[LEAKS] += 1
            report(out, f"LEAK {backend}: this process holds the lock after all its tasks ended")


# -- signal handlers that raise -------------------------------------------------------


class Interrupted(Exception):
    """Raised by the test's signal handler."""


ARMED = False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if ARMED:
        raise Interrupted


def _state_after_interrupt(lock: aplock.Lock) -> str:
    """Classify the lock after an interrupted call, and make it free again."""
    h = lock._h
    assert isinstance(h, _handle.Handle)
    snap = h.snapshot()
    who = "me" if snap.pid == os.getpid() else "nobody" if snap.pid == 0 else "other"
    state = (h.sem.value, h.token.value, who)
    if state[:2] == (1, 0):
        return "free"
    if state == (0, 1, "me"):
        lock.release()
        return "held by this process"
    reset(lock)
    if state == (0, 0, "nobody"):
        return "STUCK: taken, nobody recorded"
    if state == (0, 0, "me"):
        return "WEDGED: recorded, token never posted"
    return f"UNEXPECTED {state}"


def interrupted_calls(name: str, mode: str, seconds: float, conn: Any) -> None:
    """Call into the lock in a loop while the parent sends SIGUSR1, whose handler raises.

    Modes: ``fast`` (uncontended acquire + release), ``wait`` (the slow path of an
    acquire, on the main thread of a process that has another thread), and ``mask``
    (a timed acquire of a held lock, checking the signal mask after each interruption).
    Sends ``"ready"``, then a dict of outcomes.
    """
    global ARMED
    signal.signal(signal.SIGUSR1, _interrupt)
    lock = aplock.Lock(name)
    if mode == "wait":
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    outcomes: dict[str, int] = {}
    conn.send("ready")
    end = time.monotonic() + seconds
    calls = 0
    while time.monotonic() < end:
        calls += 1
        try:
            ARMED = True
            if mode == "fast":
                lock.acquire()
                lock.release()
            elif mode == "wait":
                core_of(lock).wait(Deadline.after(5), None)
                lock.release()
            else:
                lock.acquire(timeout=0.0005)
            ARMED = False
        except Interrupted:
            ARMED = False
            outcome = "interrupted" if mode == "mask" else _state_after_interrupt(lock)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if mode == "mask" and signal.SIGUSR1 in signal.pthread_sigmask(signal.SIG_BLOCK, ()):
            outcomes["SIGNALS LEFT BLOCKED"] = 1
            break
    ARMED = False
    outcomes["calls"] = calls
    conn.send(outcomes)


def _contend(name: str, stop: mmap.mmap) -> None:
    """Take and give back lock *name*, holding it ~100 us each time, until *stop*'s first
    byte is set or the process that forked this one is gone."""
    lock = aplock.Lock(name)
    parent = os.getppid()
    while not stop[0] and os.getppid() == parent:
        lock.acquire()
        until = time.perf_counter() + 0.0001
        while time.perf_counter() < until:
            pass
        lock.release()
        time.sleep(0)  # let the other side in


def interrupted_contended_acquires(
    name: str, seconds: float, to: str, path: str, conn: Any
) -> None:
    """Acquire a lock another process keeps taking, while the parent sends SIGUSR1.

    *to*: ``main`` (the signal interrupts the main thread's wait) or ``thread`` (the main
    thread blocks it, another thread takes it: its handler runs in the main thread at the
    next point where CPython runs handlers, wherever that is, the wait going on).
    *path*: ``pure`` puts this process on the pure-Python path, ``default`` leaves it as
    the environment says.

    An acquire that a handler's exception interrupts must hold nothing: once the
    exception is caught, this process may hold the lock only if ``acquire()`` had
    returned (``mine``: set with no call, so with no point where a handler runs, right
    after it returns), or if the acquisition is marked owed (a second handler raised
    while the first one's was being given back: the next waiter frees it). Sends
    ``"ready"``, then a dict of outcomes.
    """
    global ARMED
    if path == "pure":
        os.environ["APLOCK_PURE"] = "1"  # a spawned child: its handles are opened below
    stop = mmap.mmap(-1, 1)
    other = os.fork()  # this process is a daemon of multiprocessing: no Process of its own
    if other == 0:
        try:
            _contend(name, stop)
        finally:
            os._exit(0)
    signal.signal(signal.SIGUSR1, _interrupt)
    if to == "thread":
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    lock = aplock.Lock(name)
    h = handle_of(lock)
    outcomes: dict[str, int] = {"compiled path": int(lock._f is not None)}
    conn.send("ready")
    end = time.monotonic() + seconds
    calls = 0
    try:
        while time.monotonic() < end:
            calls += 1
            mine = False
            waits = lock.locked()  # then this acquire most likely waits
            try:
                ARMED = True
                lock.acquire()
                mine = True
                lock.release()
                ARMED = False
            except Interrupted:
                ARMED = False
                words = h.words
                held = h.snapshot().pid == os.getpid() and h.sem.value == 0
                owed = held and words[_state.OWED_WORD] == words[_state.GENERATION_WORD]
                key = "after acquire() returned" if mine else "in acquire()"
                if mine:
                    if held:  # else the release was done
                        lock.release()
                elif owed:
                    key = "in acquire(), left owed"  # the contender frees it
                elif held:
                    lock.release()
                    key = "LOST: held after an interrupted acquire()"
                elif waits:
                    key = "in a waiting acquire()"
                outcomes[key] = outcomes.get(key, 0) + 1
            time.sleep(0)  # let the other side in
    finally:
        ARMED = False
        stop[0] = 1
        if not _reaped(other, 10):  # it waits for a lock that nobody will release
            words = h.words
            state = (h.sem.value, h.token.value, h.snapshot().pid == os.getpid())
            debts = (words[_state.OWED_WORD], words[_state.GENERATION_WORD])
            outcomes[f"WEDGED: (L, H, mine) {state}, (owed, generation) {debts}"] = 1
            os.kill(other, signal.SIGKILL)
            os.waitpid(other, 0)
            reset(lock)
    outcomes["calls"] = calls
    conn.send(outcomes)


def _reaped(pid: int, seconds: float) -> bool:
    """Wait up to *seconds* for child *pid* to exit; whether it did (and was reaped)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return True
        time.sleep(0.01)
    return False


# -- misc ----------------------------------------------------------------------------


def freeze_in_guard(name: str, inside: Any) -> None:
    """Enter the lock's guard and SIGSTOP this process there; leave when continued."""
    lock = aplock.Lock(name)
    h = lock._h
    assert isinstance(h, _handle.Handle)
    with h.guard.held():
        inside.set()
        os.kill(os.getpid(), signal.SIGSTOP)


def race_party(
    name: str, index: int, role: str, rounds: int, start: Any, done: Any, counts: Any
) -> None:
    """One party of the release/acquire race: each round, race a release or an acquire.

    ``counts[2 * index]`` counts won acquisitions, ``counts[2 * index + 1]`` won releases.
    """
    lock = aplock.Lock(name)
    rng = random.Random(index)
    for _ in range(rounds):
        start.wait()
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, 0.0005))
        if role == "acquire":
            if lock.acquire(timeout=rng.choice((0, 0.001))):
                counts[2 * index] += 1
                try:
                    lock.release()
                    counts[2 * index + 1] += 1
                except aplock.LockNotHeldError:
                    pass  # a racing release released it first: allowed
        else:
            try:
                lock.release()
                counts[2 * index + 1] += 1
            except aplock.LockNotHeldError:
                pass
        done.wait()


def open_race(names: list[str], start: Any, out: Any) -> None:
    """For each name, open it at the same instant as the others and try to take it."""
    locks = []
    for name in names:
        start.wait()
        lock = aplock.Lock(name)
        out.send((name, lock.acquire(False)))
        locks.append(lock)
    start.wait()  # everyone has answered: now the holders may let go
    for lock in locks:
        if lock.locked() and lock.info().holder_pid == os.getpid():
            lock.release()


def guard_prober(name: str, flag: str, seconds: float, conn: Any) -> None:
    """Take the lock's guard whenever it is free; count the times the owner of *flag*
    (a word that another process sets while it holds the guard) was inside meanwhile."""
    import fcntl

    lock = aplock.Lock(name)
    h = lock._h
    assert isinstance(h, _handle.Handle)
    fd = os.open(flag, os.O_RDWR)
    mm = mmap.mmap(fd, 8)
    os.close(fd)
    words = memoryview(mm).cast("q")
    conn.send("ready")
    taken = inside = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            fcntl.flock(h.guard_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue
        taken += 1
        if words[0]:
            inside += 1
        fcntl.flock(h.guard_fd, fcntl.LOCK_UN)
    words.release()
    mm.close()
    conn.send((taken, inside))
