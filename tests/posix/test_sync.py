"""aplock.Lock's own behaviour: its handle, OS objects and processes.

The lock contract that every lock class shares (acquire, release, timeouts, threads,
close, pickling, repr, the fencing token, info) is ``tests/contract``.
"""

from __future__ import annotations

import concurrent.futures
import os
import pickle
import queue
import stat
import threading
import time

import pytest

import aplock
from aplock import _names
from aplock._posix import handle as _handle
from aplock._posix import registry as _registry
from tests.support import workers
from tests.support.procs import FORK, SPAWN, running

# -- names and handles ----------------------------------------------------------------


def test_same_name_is_one_handle(lock_name: str) -> None:
    a, b = aplock.Lock(lock_name), aplock.Lock(lock_name)
    assert a._h is b._h


def test_unlink_refuses_bad_names() -> None:
    with pytest.raises(ValueError, match="empty"):
        aplock.unlink("")
    with pytest.raises(TypeError):
        aplock.unlink(None)  # type: ignore[arg-type]


def test_bad_recovery_interval(lock_name: str) -> None:
    with pytest.raises(ValueError, match="recovery_interval"):
        aplock.Lock(lock_name, recovery_interval=0)


def test_creation_race_many_processes_one_lock(lock_name: str) -> None:
    start = SPAWN.Event()
    out = SPAWN.Queue()
    with running(workers.open_only, lock_name, start, out, count=8) as procs:
        time.sleep(0.5)  # let the interpreters start; the race is on the release below
        start.set()
        results = [out.get(timeout=60) for _ in procs]
    assert results.count(True) == 1, results
    lock = aplock.Lock(lock_name)
    handle = lock._h
    assert isinstance(handle, _handle.Handle)
    assert lock.locked()  # the winner exited holding it
    assert handle.token.value == 1
    assert handle.sem.value == 0


# -- lifecycle ------------------------------------------------------------------------


def test_handle_closes_with_last_user(lock_name: str) -> None:
    import weakref

    a, b = aplock.Lock(lock_name), aplock.Lock(lock_name)
    assert isinstance(a._h, _handle.Handle)
    handle = weakref.ref(a._h)
    a.close()
    assert handle() in _registry.open_handles()
    b.close()
    assert handle() is None, "the OS handle outlived its last user"
    assert not [h for h in _registry.open_handles() if h.name == lock_name]
    c = aplock.Lock(lock_name)
    with c:
        pass


def test_unlink(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    lock.close()
    assert lock.unlink() is True
    assert aplock.unlink(lock_name) is False  # absent is not an error


def test_a_lock_opened_after_unlink_is_the_new_lock(lock_name: str) -> None:
    """After ``unlink`` the objects that were open keep the old lock; new objects in
    this process open the new one, which is what every other process opens too."""
    old = aplock.Lock(lock_name)
    assert old.acquire(False)
    assert aplock.unlink(lock_name)
    new = aplock.Lock(lock_name)
    assert new.acquire(False), "the new lock is the old, unlinked one"
    out = SPAWN.Queue()
    with running(workers.try_acquire, lock_name, 0.2, out):
        _pid, got, _warned = out.get(timeout=30)
    assert not got, "another process does not share this process's new lock"
    new.release()
    old.release()


def test_nothing_is_unlinked_implicitly(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    names = _names.posix_names(lock_name)
    lock.close()
    del lock
    assert os.path.exists(f"/dev/shm/{names.record[1:]}")
    assert os.path.exists(f"/dev/shm/sem.{names.semaphore[1:]}")


# -- the OS objects -------------------------------------------------------------------


def test_objects_are_private_by_default(lock_name: str) -> None:
    aplock.Lock(lock_name)
    names = _names.posix_names(lock_name)
    paths = [
        f"/dev/shm/sem.{names.semaphore[1:]}",
        f"/dev/shm/sem.{names.token[1:]}",
        f"/dev/shm/{names.record[1:]}",
    ]
    for path in paths:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_mode_widens_exactly(lock_name: str) -> None:
    old = os.umask(0o022)
    try:
        aplock.Lock(lock_name, mode=0o666)
    finally:
        os.umask(old)
    names = _names.posix_names(lock_name)
    for path in (f"/dev/shm/sem.{names.semaphore[1:]}", f"/dev/shm/{names.record[1:]}"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666, path


# -- processes ------------------------------------------------------------------------


def test_release_by_another_process(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    lock.acquire()
    out = SPAWN.Queue()
    with running(workers.release, lock_name, out):
        assert out.get(timeout=60) == "ok"
    assert not lock.locked()
    with running(workers.release, lock_name, out):
        assert out.get(timeout=60) == "LockNotHeldError"


def test_excludes_a_holder_in_another_process(lock_name: str) -> None:
    acquired, release = SPAWN.Event(), SPAWN.Event()
    lock = aplock.Lock(lock_name)
    with running(workers.hold, lock_name, acquired, release):
        assert acquired.wait(60)
        assert lock.locked()
        assert lock.acquire(timeout=0.2) is False
        release.set()
        assert lock.acquire(timeout=30) is True
        lock.release()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_pickles_by_name_into_children(lock_name: str, method: str) -> None:
    import multiprocessing as mp

    ctx = mp.get_context(method)
    lock = aplock.Lock(lock_name)
    copy = pickle.loads(pickle.dumps(lock))
    assert copy.name == lock_name
    assert copy._h is lock._h
    out = ctx.Queue()
    lock.acquire()
    with running(workers.use_pickled, lock, out, ctx=ctx):
        assert out.get(timeout=60) == (lock_name, True)
        lock.release()
        assert out.get(timeout=60) is True


def test_process_pool_executor(lock_name: str) -> None:
    import multiprocessing as mp

    lock = aplock.Lock(lock_name)
    with lock, concurrent.futures.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        results = list(ex.map(workers.pool_task, [lock] * 4))
    assert results == [(lock_name, True)] * 4


def test_forked_child_uses_and_releases_inherited_lock(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    lock.acquire()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            lock.release()
            ok = lock.acquire(timeout=5)
            lock.release()
            os.write(w, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 2) == b"ok"
    os.close(r)
    os.waitpid(pid, 0)
    assert not lock.locked()


def test_forked_child_gets_fresh_bookkeeping(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    handle = lock._h
    assert isinstance(handle, _handle.Handle)
    held = threading.Event()
    done = threading.Event()

    def keep_registry_busy() -> None:
        with handle.guard.held():
            held.set()
            done.wait(30)

    t = threading.Thread(target=keep_registry_busy)
    t.start()
    held.wait()
    try:
        out = FORK.Queue()
        with running(workers.release, lock_name, out, ctx=FORK):
            # The parent's thread holds the guard: the child must not inherit it (it would
            # go in at once), but wait for it like any other process...
            with pytest.raises(queue.Empty):
                out.get(timeout=0.3)
            done.set()
            # ...and go on, with bookkeeping of its own, once the parent lets it go.
            assert out.get(timeout=30) == "LockNotHeldError"
    finally:
        done.set()
        t.join()


def test_mutual_exclusion_across_processes(lock_name: str, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "counter")
    with open(path, "w") as f:
        f.write("0")
    start = SPAWN.Event()
    with running(workers.increment, lock_name, path, 200, start, count=4) as procs:
        start.set()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
    with open(path) as f:
        assert int(f.read()) == 4 * 200


def test_close_while_another_thread_waits_ends_that_wait(lock_name: str) -> None:
    holder = aplock.Lock(lock_name)
    holder.acquire()
    lock = aplock.Lock(lock_name)
    holder.close()  # the waiter's object now holds the process's only reference
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            lock.acquire()
        except aplock.LockClosedError as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    lock.close()  # must neither crash the waiting thread nor leave it waiting
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1
    aplock.Lock(lock_name).release()


def test_the_longest_name_is_reported_whole_and_found_again(lock_name: str) -> None:
    from aplock._cli import inspect as _inspect

    name = lock_name + "\U0001f512" * (_names.MAX_LENGTH - len(lock_name))
    lock = aplock.Lock(name)
    try:
        found = _inspect.find(name)
        assert found is not None
        assert found.name == name
    finally:
        lock.close()
        aplock.unlink(name)
    with pytest.raises(ValueError, match="at most 1024 characters"):
        aplock.Lock(name + "x")


def test_a_record_of_the_first_layout_is_refused_with_what_to_do(lock_name: str) -> None:
    names = _names.posix_names(lock_name)
    path = f"/dev/shm/{names.record[1:]}"
    with open(path, "wb") as f:  # what the first layout left: version 0, name length at 72
        f.write(bytes(72) + (9).to_bytes(8, "little") + bytes(4096 - 80))
    try:
        with pytest.raises(aplock.LockError, match=r"layout version 1.*aplock clean"):
            aplock.Lock(lock_name)
    finally:
        os.unlink(path)
