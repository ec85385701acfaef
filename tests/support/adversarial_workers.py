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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import aplock
from aplock._core import core_of
from aplock._deadline import Deadline
from aplock._posix import handle as _handle
from aplock._posix import identity as _process
from aplock._posix import record as _state

APLOCK_DIR = os.path.dirname(aplock.__file__)

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


# -- killing a process at every bytecode of an operation -------------------------------


def _trace_to_death(at: int, log: list[str] | None, sig: int = signal.SIGKILL) -> None:
    """Send *sig* to this process just before the *at*-th bytecode run inside aplock.

    With *log*, record where each bytecode is instead (and never signal).
    """
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "opcode":
            count += 1
            if log is not None:
                code = frame.f_code
                log.append(
                    f"{os.path.basename(code.co_filename)}:{frame.f_lineno} "
                    f"{code.co_name}@{frame.f_lasti}"
                )
            elif count == at:
                os.kill(os.getpid(), sig)
        return local

    def start(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename.startswith(APLOCK_DIR):
            frame.f_trace_opcodes = True
            return local
        return None

    sys.settrace(start)


@dataclass(frozen=True, slots=True)
class KillPoint:
    """What one SIGKILL left behind, and what the next waiter made of it."""

    op: str
    at: int
    where: str
    sem: int
    token: int
    holder: str  # "none", "detached", "dead", "live"
    outcome: str  # "free", "recovered", "repaired", "stuck", "completed", "BROKEN ..."
    seconds: float


def _fork(body: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            body()
        finally:
            os._exit(0)
    return pid


def _reap(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return status


def _dead_holder(lock: aplock.Lock, half_done: bool) -> None:
    """Leave *lock* held by a process that died (after its token, or just before)."""

    def die() -> None:
        h = lock._h
        assert isinstance(h, _handle.Handle)
        if half_done:
            h.sem.acquire(0)
            me = _process.identity()
            generation = h.words[_state.GENERATION_WORD] + 1
            _state.write_hold(h.mm, generation, me, time.time())
        else:
            lock.acquire()

    _reap(_fork(die))


def _holder_state(h: _handle.Handle) -> str:
    snap = h.snapshot()
    if snap.pid == 0:
        return "none"
    if snap.pid < 0:
        return "detached"
    return "dead" if _process.is_proven_dead(snap.holder) else "live"


def _reset(lock: aplock.Lock) -> None:
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


OPS = ("acquire", "acquire_wait", "release", "release_other", "hand_off", "recover", "repair")


def _operation(
    op: str, lock: aplock.Lock, driver: int
) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(prepare, traced)`` for *op*: prepare runs in the child untraced, then traced."""
    h = lock._h
    assert isinstance(h, _handle.Handle)

    def nothing() -> None:
        pass

    def acquire() -> None:
        lock.acquire()

    def acquire_wait() -> None:
        core_of(lock).wait(Deadline.after(5), None)

    def hand_off() -> None:
        lock.hand_off(driver)

    def recover() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h.recover()

    def suspect() -> None:
        h._suspect = h._held_by()
        h._suspect_since = time.monotonic() - 10 * _handle.STUCK_AFTER

    table: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "acquire": (nothing, acquire),
        "acquire_wait": (nothing, acquire_wait),
        "release": (acquire, lock.release),
        "release_other": (nothing, lock.release),
        "hand_off": (acquire, hand_off),
        "recover": (nothing, recover),
        "repair": (suspect, recover),
    }
    return table[op]


def _setup(op: str, lock: aplock.Lock) -> None:
    """Bring *lock* (free) into the state that *op* starts from."""
    if op == "release_other":
        assert lock.acquire(timeout=5)  # held by the (live) driver
    elif op == "recover":
        _dead_holder(lock, half_done=False)
    elif op == "repair":
        _dead_holder(lock, half_done=True)


def _settle(op: str, at: int, where: str, lock: aplock.Lock) -> KillPoint:
    """Classify what the dead child left, then try to take the lock as the next waiter."""
    h = lock._h
    assert isinstance(h, _handle.Handle)
    sem, token = h.sem.value, h.token.value
    holder = _holder_state(h)
    me = os.getpid()

    def point(outcome: str, seconds: float = 0.0) -> KillPoint:
        return KillPoint(op, at, where, sem, token, holder, outcome, seconds)

    if sem + token > 1:
        return point("BROKEN: both semaphores posted")
    if sem == 1 and holder != "none":
        return point(f"BROKEN: free but the record names a {holder} holder")
    if holder == "live" and h.snapshot().pid == me:
        # The record names us: the child was releasing our acquisition, or handing
        # the lock to us. A release that had taken H is finished by the next waiter;
        # otherwise the lock is still ours, and our release must work.
        if token == 0 and lock.acquire(timeout=0.5):
            lock.release()
            return point("completed")
        try:
            lock.release()
        except aplock.LockNotHeldError:
            return point("BROKEN: the live holder could not release its lock")
        return point("handed-back")
    if holder in ("live", "detached") or (sem, token, holder) == (0, 0, "none"):
        # Nobody can be proven dead: a waiter must not get it, whatever it waits.
        if lock.acquire(timeout=0.3):
            return point("BROKEN: acquired a lock whose holder is alive or unknown")
        _reset(lock)
        return point("wedged-live" if holder == "live" else "stuck")
    bound = 3.0 + (_handle.STUCK_AFTER if token == 0 else 0.0)
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = lock.acquire(timeout=bound + 10)
    took = time.monotonic() - start
    if not got:
        _reset(lock)
        return point("BROKEN: never recovered", took)
    snap = h.snapshot()
    warned = any(isinstance(w.message, aplock.AbandonedLockWarning) for w in caught)
    lock.release()
    if snap.pid != me or took > bound:
        return point(f"BROKEN: recovered as pid {snap.pid} after {took:.2f}s", took)
    if sem == 1:
        return point("free" if not warned else "BROKEN: warned for a free lock", took)
    return point(("repaired" if token == 0 else "recovered") if warned else "silent", took)


def _stopped(op: str, at: int, where: str, lock: aplock.Lock, child: int) -> KillPoint:
    """The child is frozen at bytecode *at*: wait for the lock as a waiter, thaw it, judge.

    A waiter must never take over from the frozen (live) child, and its timeout must
    hold even then. A helper thaws the child after a few seconds in any case, so that
    a waiter stuck behind it ends.
    """
    h = lock._h
    assert isinstance(h, _handle.Handle)
    sem, token, holder = h.sem.value, h.token.value, _holder_state(h)

    def thaw_later() -> None:
        time.sleep(4)
        os.kill(child, signal.SIGCONT)

    thawer = _fork(thaw_later)
    start = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = lock.acquire(timeout=1.0)
    took = time.monotonic() - start
    # Taking over from the child is robbery only while it lives: after a thaw it may
    # have finished its step and exited holding the lock, which is a plain recovery.
    robbed = [
        w.message
        for w in caught
        if isinstance(w.message, aplock.AbandonedLockWarning)
        and w.message.pid == child
        and not _process.is_proven_dead(_process.identity_of(child))
    ]
    if got:
        lock.release()
    os.kill(child, signal.SIGCONT)
    os.kill(thawer, signal.SIGKILL)
    _reap(thawer)
    _reap(child)
    after = _settle(op, at, where, lock)
    if robbed:
        outcome = "BROKEN: took the lock over from a frozen, live process"
    elif after.outcome.startswith("BROKEN"):
        outcome = after.outcome
    elif took > 2.5:
        outcome = "overrun"  # the waiter's timeout (1 s) did not hold
    else:
        outcome = "got" if got else "waited"
    return KillPoint(op, at, where, sem, token, holder, outcome, took)


def killpoints(name: str, op: str, stride: int, offset: int, out: str, stop: bool = False) -> None:
    """Kill (or freeze) a forked child at every *stride*-th bytecode of *op*.

    Writes one line per point to *out*. Runs in a fresh (spawned, single-threaded)
    process, so forking is safe.
    """
    warnings.simplefilter("ignore")
    lock = aplock.Lock(name, recovery_interval=0.02)
    driver = os.getpid()
    prepare, traced = _operation(op, lock, driver)
    # A dry run lists the bytecodes of the operation.
    _setup(op, lock)
    r, w = os.pipe()

    def dry() -> None:
        os.close(r)
        log: list[str] = []
        prepare()
        _trace_to_death(0, log)
        traced()
        sys.settrace(None)
        os.write(w, "\n".join(log).encode())

    pid = _fork(dry)
    os.close(w)
    with os.fdopen(r) as f:
        where = f.read().splitlines()
    _reap(pid)
    _settle(op, 0, "", lock)
    with open(out, "a") as f:
        f.write(f"# {op} {len(where)}\n")
    sig = signal.SIGSTOP if stop else signal.SIGKILL
    for at in range(1 + offset, len(where) + 1, stride):
        _setup(op, lock)

        def child(at: int = at) -> None:
            prepare()
            _trace_to_death(at, None, sig)
            traced()

        pid = _fork(child)
        _, status = os.waitpid(pid, os.WUNTRACED)
        if os.WIFSTOPPED(status):
            point = _stopped(op, at, where[at - 1], lock, pid)
        else:
            died = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            point = _settle(op, at, where[at - 1] if died else "(survived)", lock)
        with open(out, "a") as f:
            f.write(
                f"{point.op}\t{point.at}\t{point.where}\t{point.sem}{point.token}\t"
                f"{point.holder}\t{point.outcome}\t{point.seconds:.2f}\n"
            )


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
    _reset(lock)
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


def guard_is_free(name: str, out: Any) -> None:
    """Report whether this process can take the lock's guard right now (without waiting)."""
    import fcntl

    lock = aplock.Lock(name)
    h = lock._h
    assert isinstance(h, _handle.Handle)
    try:
        fcntl.flock(h.guard_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        out.send(False)
    else:
        fcntl.flock(h.guard_fd, fcntl.LOCK_UN)
        out.send(True)


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
