"""Frozen processes, impostor records, racing releases, fork, close and unlink under use."""

from __future__ import annotations

import mmap
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from typing import Any

import anyio
import pytest

import aplock
from aplock._posix import handle as _handle
from aplock._posix import identity as _process
from aplock._posix import record as _state
from tests.support import adversarial_workers as aw
from tests.support import workers
from tests.support.procs import SPAWN, kill, running, wait_until


def handle_of(lock: aplock.Lock) -> _handle.Handle:
    h = lock._h
    assert isinstance(h, _handle.Handle)
    return h


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def leave_a_dead_holder(name: str) -> int:
    with running(workers.acquire_and_exit, name) as (proc,):
        proc.join(60)
    assert proc.pid is not None
    return proc.pid


# -- a process frozen inside the guard ---------------------------------------------------


def frozen_in_guard_then(name: str, body: Any) -> tuple[float, bool]:
    """With the holder dead and another process frozen inside the guard, run *body* in a
    thread; return how long it ran and whether it was still running after 4 s."""
    leave_a_dead_holder(name)
    inside = SPAWN.Event()
    with running(aw.freeze_in_guard, name, inside) as (frozen,):
        assert inside.wait(60)
        assert frozen.pid is not None
        wait_until(lambda: stopped(frozen.pid), what="the frozen process to stop")  # type: ignore[arg-type]
        took: list[float] = []

        def timed() -> None:
            start = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                body()
            took.append(time.monotonic() - start)

        thread = threading.Thread(target=timed, daemon=True)
        thread.start()
        thread.join(4)
        hung = thread.is_alive()
        os.kill(frozen.pid, signal.SIGCONT)
        thread.join(30)
        frozen.join(30)
    return took[0], hung


def test_a_frozen_process_in_the_guard_does_not_stretch_a_timeout(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    results: list[bool] = []
    took, hung = frozen_in_guard_then(lock_name, lambda: results.append(lock.acquire(timeout=1.0)))
    if results and results[0]:
        lock.release()
    assert not hung, "acquire(timeout=1.0) still waiting after 4 s"
    assert took < 4, f"acquire(timeout=1.0) returned after {took:.1f} s"


@pytest.mark.parametrize("backend", ["trio"])
def test_a_frozen_process_in_the_guard_does_not_block_cancellation(
    lock_name: str, backend: str
) -> None:
    alock = aplock.AsyncLock(lock_name)
    results: list[bool] = []

    async def attempt() -> None:
        with anyio.move_on_after(1.0):
            results.append(await alock.acquire())

    took, hung = frozen_in_guard_then(lock_name, lambda: anyio.run(attempt, backend=backend))
    if results and results[0]:
        alock.release()
    assert not hung, "move_on_after(1.0) had not cancelled the wait after 4 s"
    assert took < 4, f"move_on_after(1.0) took {took:.1f} s to cancel the wait"


# -- stopped holders are never robbed ------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_stopped_holder_is_never_robbed_by_several_waiters(lock_name: str) -> None:
    acquired = SPAWN.Event()
    out: Any = SPAWN.Queue()
    with running(workers.hold_until_killed, lock_name, acquired) as (holder,):
        assert acquired.wait(60)
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGSTOP)
        try:
            # Each waits 6 recovery intervals of 0.25 s and more than 2 * STUCK_AFTER.
            with running(workers.try_acquire, lock_name, 1.5, out, count=4):
                results = [out.get(timeout=60) for _ in range(4)]
        finally:
            os.kill(holder.pid, signal.SIGCONT)
        assert [got for _, got, _ in results] == [False] * 4, results
        lock = aplock.Lock(lock_name)
        assert lock.info().holder_pid == holder.pid
        kill(holder)
        holder.join(10)
        with pytest.warns(aplock.AbandonedLockWarning):
            assert lock.acquire(timeout=30)
        lock.release()


# -- impostor records --------------------------------------------------------------------


def forge(lock: aplock.Lock, pid: int, start: int, ns: int) -> None:
    """Rewrite the holder of the current (held) acquisition, under the guard."""
    h = handle_of(lock)
    snap = h.snapshot()
    with h.guard.held():
        _state.write_hold(
            h.mm, snap.generation, _process.Identity(pid, start, ns), snap.acquired_at
        )


@pytest.mark.timeout(120)
def test_impostor_records(lock_name: str) -> None:
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    acquired = SPAWN.Event()
    me = _process.identity()
    with running(workers.hold_until_killed, lock_name + ".other", acquired) as (other,):
        assert acquired.wait(60)
        assert other.pid is not None
        live = _process.identity_of(other.pid)
        dead = leave_a_dead_holder(lock_name + ".dead")
        never_taken = [
            ("a live pid whose start time is unknown", live.pid, 0, me.ns),
            ("a live pid", live.pid, live.start, me.ns),
            ("a live pid from another pid namespace", live.pid, live.start + 1, me.ns + 1),
            ("a dead pid from another pid namespace", dead, 1, me.ns + 1),
            ("detached", _state.DETACHED, 0, 0),
        ]
        for what, pid, start, ns in never_taken:
            assert lock.acquire(timeout=5)
            forge(lock, pid, start, ns)
            assert lock.acquire(timeout=0.5) is False, f"took over from {what}"
            lock.release()
        taken = [
            ("a live pid reused by another process", live.pid, live.start + 1, me.ns),
            ("a dead pid", dead, 1, me.ns),
            ("this process, with another start time", me.pid, me.start + 1, me.ns),
        ]
        for what, pid, start, ns in taken:
            assert lock.acquire(timeout=5)
            forge(lock, pid, start, ns)
            with pytest.warns(aplock.AbandonedLockWarning) as caught:
                assert lock.acquire(timeout=10), f"never took over from {what}"
            assert caught[0].message.pid == pid  # type: ignore[union-attr]
            lock.release()
        kill(other)
    aplock.unlink(lock_name + ".other")
    aplock.unlink(lock_name + ".dead")


# -- racing releases and acquires ------------------------------------------------------


def release_race(name: str, rounds: int) -> None:
    """Each round: the lock is held; 3 threads and 2 processes race to release it while
    2 threads and 1 process race to acquire (and release) it. Accounting must balance."""
    lock = aplock.Lock(name)
    h = handle_of(lock)
    roles = ["release"] * 5 + ["acquire"] * 3
    parties = len(roles) + 1
    start, done = SPAWN.Barrier(parties, timeout=60), SPAWN.Barrier(parties, timeout=60)
    counts: Any = SPAWN.Array("q", 2 * len(roles), lock=False)
    in_processes = [3, 4, 7]
    procs = [
        SPAWN.Process(target=aw.race_party, args=(name, i, roles[i], rounds, start, done, counts))
        for i in in_processes
    ]
    threads = [
        threading.Thread(
            target=aw.race_party, args=(name, i, roles[i], rounds, start, done, counts)
        )
        for i in range(len(roles))
        if i not in in_processes
    ]
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    acquired = released = 0
    try:
        for _ in range(rounds):
            assert lock.acquire(timeout=30)
            acquired += 1
            start.wait()
            done.wait()
            values = (h.sem.value, h.token.value)
            assert values in ((1, 0), (0, 1)), f"semaphores {values}"
            won_acquires = acquired + sum(counts[0::2])
            won_releases = released + sum(counts[1::2])
            assert won_acquires - won_releases == (1 if values == (0, 1) else 0), (
                f"{won_acquires} acquisitions but {won_releases} releases, {values}"
            )
            if values == (0, 1):
                lock.release()
                released += 1
    finally:
        for t in threads:
            t.join(60)
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()


@pytest.mark.timeout(120)
def test_releases_race_new_acquisitions(lock_name: str) -> None:
    release_race(lock_name, 250)


@pytest.mark.stress
@pytest.mark.timeout(900)
def test_releases_race_new_acquisitions_stress(lock_name: str) -> None:
    release_race(lock_name, 5000)


# -- fork --------------------------------------------------------------------------------


def test_fork_while_another_thread_is_inside_the_guard(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    lock.acquire()
    lock.hand_off(None)  # so that any release goes through the guard
    h = handle_of(lock)
    entered, leave = threading.Event(), threading.Event()

    def sit_in_guard() -> None:
        with h.guard.held():
            entered.set()
            leave.wait(30)

    sitter = threading.Thread(target=sit_in_guard)
    sitter.start()
    assert entered.wait(30)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            signal.alarm(30)
            aplock.Lock(lock_name).release()  # waits for the parent's guard, then releases
            code = 0
        finally:
            os._exit(code)
    time.sleep(0.3)  # the child is now waiting for the guard the parent's thread holds
    assert lock.locked(), "the child got through a guard held by another process"
    leave.set()
    sitter.join(30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not lock.locked()


GUARD_THEN_FORK = """
import os, sys, threading, time, aplock
lock = aplock.Lock(sys.argv[1])
entered = threading.Event()
def sit_in_guard():
    with lock._h.guard.held():
        entered.set()
        time.sleep(600)
threading.Thread(target=sit_in_guard, daemon=True).start()
entered.wait(30)
child = os.fork()
if child == 0:                  # past its at-fork handlers: say so
    print("child", os.getpid(), flush=True)
    time.sleep(600)             # keeps every descriptor it inherited open
    os._exit(0)
time.sleep(600)
"""


def test_a_guard_held_by_a_killed_parent_is_free_while_its_forked_child_lives(
    lock_name: str,
) -> None:
    """A forked child gets a guard descriptor of its own: one inherited from a parent
    that dies inside the guard would otherwise keep the guard taken while the child lives."""
    lock = aplock.Lock(lock_name)
    h = handle_of(lock)
    proc = subprocess.Popen(
        [sys.executable, "-c", GUARD_THEN_FORK, lock_name], stdout=subprocess.PIPE, text=True
    )
    child = 0
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline().split()[1])
        with h.guard.held(block=False) as got:
            assert not got, "the guard is free while the parent sits in it"
        proc.kill()
        proc.wait(30)
        with h.guard.held(block=False) as got:
            assert got, "the dead parent's guard stays held by its forked child"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        if child:
            os.kill(child, signal.SIGKILL)  # an orphan now: init reaps it
        assert proc.stdout is not None
        proc.stdout.close()


def test_fork_while_another_thread_waits(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    acquired, release = SPAWN.Event(), SPAWN.Event()
    with running(workers.hold, lock_name, acquired, release) as (holder,):
        assert acquired.wait(60)
        results: list[bool] = []
        waiter = threading.Thread(target=lambda: results.append(lock.acquire(timeout=30)))
        waiter.start()
        time.sleep(0.2)  # the waiter is parked in the semaphore wait
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                signal.alarm(30)
                child = aplock.Lock(lock_name)
                if child.acquire(timeout=20):
                    child.release()
                    code = 0
            finally:
                os._exit(code)
        release.set()
        waiter.join(30)
        assert results == [True]
        lock.release()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        holder.join(30)
    assert not lock.locked()


# -- close and unlink under use ----------------------------------------------------------

CLOSE_RACE = """
import os, sys, threading, time
import aplock
name = sys.argv[1]
holder = os.fork()
if holder == 0:
    lock = aplock.Lock(name)
    lock.acquire()
    time.sleep(1.0)
    lock.release()
    os._exit(0)
time.sleep(0.3)
lock = aplock.Lock(name)
results = []
def wait():
    try:
        results.append(lock.acquire(timeout=5))
    except aplock.LockError as exc:
        results.append(type(exc).__name__)
waiter = threading.Thread(target=wait)
waiter.start()
time.sleep(0.2)          # parked in the semaphore wait
lock.close()             # the only object for the name: the handle closes
waiter.join(10)
os.waitpid(holder, 0)
print(results)
"""


def test_close_while_another_thread_waits_does_not_crash(lock_name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CLOSE_RACE), lock_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"


def test_closing_other_objects_while_threads_churn(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    stop = threading.Event()
    errors: list[BaseException] = []
    entries = [0]

    def churn() -> None:
        try:
            while not stop.is_set():
                if lock.acquire(timeout=1):
                    entries[0] += 1
                    lock.release()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            other = aplock.Lock(lock_name)
            other.acquire(timeout=0.01) and other.release()  # type: ignore[func-returns-value]
            other.close()
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert entries[0] > 0
    assert not lock.locked()


def test_unlink_while_held_splits_the_lock(lock_name: str) -> None:
    """Documented: after unlink, new openers get a new lock; old handles keep the old one."""
    lock = aplock.Lock(lock_name)
    lock.acquire()
    assert aplock.unlink(lock_name)
    # Objects that were open keep the old lock; a new object opens the new one, as a
    # new process does.
    new = aplock.Lock(lock_name)
    assert new.acquire(False) is True
    new.release()
    start, out = SPAWN.Event(), SPAWN.Queue()
    with running(workers.open_only, lock_name, start, out):
        start.set()
        got_elsewhere = out.get(timeout=60)
    assert got_elsewhere is True, "a new process got the old (held) lock"
    lock.release()
    lock.close()
    aplock.unlink(lock_name)  # the new process's objects


# -- /proc hiding other users' processes ---------------------------------------------------

HIDEPID = """
import sys, time, warnings
import aplock
warnings.simplefilter("always")
lock = aplock.Lock(sys.argv[1], mode=0o666)
try:
    with warnings.catch_warnings(record=True) as caught:
        got = lock.acquire(timeout=1.5)
    print("acquired" if got else "waited", len(caught))
except BaseException as exc:
    print("raised", type(exc).__module__ + "." + type(exc).__name__)
"""


def can_hide_pids() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t proc -o hidepid=2 proc /proc"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def wait_as_nobody_with(option: str, name: str) -> str:
    """Run a waiter as user nobody in a mount namespace whose /proc has *option*."""
    script = (
        f"mount -t proc -o {option} proc /proc && exec setpriv --reuid=65534 "
        '--regid=65534 --clear-groups "$0" -c "$1" "$2"'
    )
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, sys.executable, HIDEPID, name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


needs_hidepid = pytest.mark.skipif(
    not can_hide_pids(), reason="needs root, unshare, setpriv and mount -t proc"
)


@needs_hidepid
@pytest.mark.parametrize(
    "option",
    [
        "hidepid=0",
        pytest.param(
            "hidepid=2",
        ),
        pytest.param(
            "hidepid=1",
        ),
    ],
)
def test_another_users_live_holder_is_never_robbed(lock_name: str, option: str) -> None:
    lock = aplock.Lock(lock_name, mode=0o666)
    lock.acquire()
    try:
        outcome = wait_as_nobody_with(option, lock_name)
        assert outcome == "waited 0", f"live holder, waiter saw: {outcome}"
        assert lock.info().holder_pid == os.getpid()
    finally:
        h = handle_of(lock)
        if h.snapshot().pid != os.getpid():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert lock.acquire(timeout=10)  # the robber exited holding it
        lock.release()


# -- creation races and handles that come and go ---------------------------------------------


def test_processes_opening_new_names_at_once_get_one_lock(lock_name: str) -> None:
    names = [f"{lock_name}.{i}" for i in range(12)]
    parties = 5
    start = SPAWN.Barrier(parties, timeout=60)
    pipes = [SPAWN.Pipe(duplex=False) for _ in range(parties)]
    procs = [
        SPAWN.Process(target=aw.open_race, args=(names, start, w), daemon=True) for _, w in pipes
    ]
    answers: dict[str, list[bool]] = {}
    try:
        for p in procs:
            p.start()
        for r, _ in pipes:
            for _ in names:
                assert r.poll(60)
                name, got = r.recv()
                answers.setdefault(name, []).append(got)
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
        for name in names:
            aplock.unlink(name)
    for name, got in answers.items():
        assert sorted(got) == [False] * (parties - 1) + [True], f"{name}: {got}"


GUARD_AND_CLOSE = """
import fcntl, os, sys, threading, time
import aplock
name = sys.argv[1]
holder = os.fork()
if holder == 0:
    lock = aplock.Lock(name)
    lock.acquire()
    time.sleep(2)
    lock.release()
    os._exit(0)
time.sleep(0.3)
first = aplock.Lock(name)
outcome = []
def wait_on_first():
    try:
        outcome.append(first.acquire(timeout=20))
    except BaseException as exc:
        outcome.append(type(exc).__name__)
def parked():
    frame = sys._current_frames().get(waiter.ident)
    while frame is not None:
        if frame.f_code.co_qualname == "LockCore.wait":
            return True
        frame = frame.f_back
    return False
waiter = threading.Thread(target=wait_on_first)
waiter.start()
while not parked():             # waiting in slices, on the handle of `first`
    time.sleep(0.005)
time.sleep(0.1)
first.close()
second = aplock.Lock(name)
h = second._h
with h.guard.held():
    waiter.join(30)             # it notices the close (or wins) and lets go of its handle
    probe = os.fork()
    if probe == 0:
        try:
            fcntl.flock(h.guard_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os._exit(1)         # held by the parent: as it should be
        os._exit(0)
    _, status = os.waitpid(probe, 0)
print(outcome, "guard-free" if os.waitstatus_to_exitcode(status) == 0 else "guard-held")
os.waitpid(holder, 0)
"""


def test_the_guard_survives_other_handles_of_the_name_closing(lock_name: str) -> None:
    """A thread inside the guard keeps it while another object for the name is closed and
    the thread that was waiting on it lets go of its handle (POSIX record locks are lost
    when the process closes *any* descriptor of the file)."""
    proc = subprocess.run(
        [sys.executable, "-c", GUARD_AND_CLOSE, lock_name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    assert proc.stdout.split()[-1] == "guard-held", proc.stdout


@pytest.mark.timeout(120)
def test_the_guard_holds_while_other_threads_open_and_drop_lock_objects(
    lock_name: str, tmp_path: os.PathLike[str]
) -> None:
    """The natural ``with aplock.Lock(name):`` per call: objects (and so handles) come and
    go in some threads while another thread is inside the guard."""
    flag = os.path.join(tmp_path, "flag")
    with open(flag, "wb") as f:
        f.write(b"\0" * 8)
    fd = os.open(flag, os.O_RDWR)
    mm = mmap.mmap(fd, 8)
    os.close(fd)
    words = memoryview(mm).cast("q")
    aplock.Lock(lock_name).close()  # create the lock's objects
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            aplock.Lock(lock_name)  # dropped at once: its handle dies unless in use

    def sit_in_guard() -> None:
        while not stop.is_set():
            h = handle_of(aplock.Lock(lock_name))
            with h.guard.held():
                words[0] = 1
                for _ in range(100):
                    pass
                words[0] = 0
            del h

    r, w = SPAWN.Pipe(duplex=False)
    try:
        with running(aw.guard_prober, lock_name, flag, 6.0, w) as (prober,):
            assert r.poll(60)
            assert r.recv() == "ready"
            threads = [threading.Thread(target=churn) for _ in range(2)]
            threads.append(threading.Thread(target=sit_in_guard))
            for t in threads:
                t.start()
            try:
                assert r.poll(60)
                taken, inside = r.recv()
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
            prober.join(30)
    finally:
        words.release()
        mm.close()
    assert taken > 0
    assert inside == 0, f"another process took the guard {inside} times while it was held"


def test_an_interrupted_acquire_racing_a_release_never_posts_twice(lock_name: str) -> None:
    """The interleaving, step by step (each step is real code, in the order two threads
    can run it): an acquire whose publish() is cut short by a signal handler's exception
    right after it posted the token, while another thread releases the lock (as any
    thread may) and has taken the token but not yet posted ``L``."""
    lock = aplock.Lock(lock_name)
    h = handle_of(lock)
    h.sem.acquire(0)  # the acquire takes L...
    before = h.words[_state.GENERATION_WORD]
    h.publish()  # ...records itself and posts H; the handler's exception comes right after
    h.token.acquire(0)  # the racing release() takes H...
    h.give_back(before)  # ...while the interrupted acquire gives back what it took...
    h.words[_state.PID_WORD] = 0  # ...and the release goes on:
    h.sem.release()
    values = (h.sem.value, h.token.value)
    assert values == (1, 0), f"semaphores {values}: two holders can get in"


def test_an_interrupted_acquire_never_gives_back_a_later_acquisition(lock_name: str) -> None:
    """As above, but the racing release has finished and another acquire has taken the
    lock since: giving back must leave that later acquisition alone."""
    lock = aplock.Lock(lock_name)
    h = handle_of(lock)
    h.sem.acquire(0)
    before = h.words[_state.GENERATION_WORD]
    h.publish()  # the handler's exception comes right after this
    lock.release()  # a racing release, whole
    assert lock.acquire(False)  # a later acquisition
    h.give_back(before)  # the interrupted acquire gives back what it took
    assert (h.sem.value, h.token.value) == (0, 1), "the later acquisition was released"
    assert lock.acquisition is not None
    assert lock.acquisition.generation == before + 2
    lock.release()
    assert (h.sem.value, h.token.value) == (1, 0)
