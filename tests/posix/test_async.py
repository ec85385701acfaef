"""AsyncLock's own behaviour on asyncio, uvloop and Trio: its sync lock, bounded threads,
several event loops, processes, shutdown.

The contract it shares with every lock class (acquire, release, timeouts, checkpoints,
cancellation, acquire_nowait, close, repr) is ``tests/contract``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import anyio
import anyio.to_thread
import pytest

import aplock
from aplock._posix.lock import LockCore
from tests.support import workers
from tests.support.procs import SPAWN, running

pytestmark = pytest.mark.anyio


async def test_accepts_a_sync_lock(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    alock = aplock.AsyncLock(lock)
    assert alock.lock is lock
    async with alock:
        assert lock.locked()


def test_shares_the_process_handle_with_the_sync_lock(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)
    assert isinstance(alock.lock, aplock.Lock)
    assert alock.lock._h is aplock.Lock(lock_name)._h


async def test_created_outside_the_loop_and_used_in_several_runs(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)

    def other_run() -> None:
        async def main() -> None:
            async with alock:
                pass

        anyio.run(main)

    await anyio.to_thread.run_sync(other_run)
    async with alock:
        pass


async def test_uncontended_acquire_uses_no_thread(
    lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_threads(*args: object, **kwargs: object) -> None:
        raise AssertionError("the uncontended path started a worker thread")

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_threads)
    alock = aplock.AsyncLock(lock_name)
    before = threading.active_count()
    for _ in range(100):
        async with alock:
            pass
    assert threading.active_count() == before


async def test_200_waiters_use_one_thread_and_leave_the_loop_free(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)
    acquired, release = SPAWN.Event(), SPAWN.Event()
    order: list[int] = []
    gaps: list[float] = []

    async def waiter(i: int) -> None:
        async with alock:
            order.append(i)

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    with running(workers.hold, lock_name, acquired, release):
        assert acquired.wait(60)
        baseline = threading.active_count()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            async with anyio.create_task_group() as waiters:
                for i in range(200):
                    waiters.start_soon(waiter, i)
                    await anyio.sleep(0)  # start in order
                await anyio.sleep(0.3)
                assert alock.statistics().tasks_waiting == 200
                # one thread waits on the OS semaphore, whatever the number of tasks
                assert threading.active_count() <= baseline + 1
                # AnyIO's default thread pool is untouched: unrelated work runs at once
                start = time.monotonic()
                assert await anyio.to_thread.run_sync(lambda: 42) == 42
                assert time.monotonic() - start < 2.0
                release.set()
            tg.cancel_scope.cancel()
    assert order == list(range(200)), "waiters of one loop are served first come, first served"
    assert max(gaps) < 1.0, "the event loop stalled while tasks waited"


async def test_excludes_other_processes_both_ways(lock_name: str, anyio_backend: Any) -> None:
    alock = aplock.AsyncLock(lock_name)
    acquired, release = SPAWN.Event(), SPAWN.Event()
    with running(workers.hold, lock_name, acquired, release):
        assert acquired.wait(60)
        assert await alock.acquire(timeout=0.2) is False
        release.set()
        assert await alock.acquire(timeout=30)
    out: Any = SPAWN.Queue()
    with running(workers.async_acquire_then_report, lock_name, anyio_backend[0], out):
        time.sleep(0.2)
        assert out.empty(), "another process got in while this task held the lock"
        alock.release()
        assert isinstance(out.get(timeout=60), int)


def test_several_event_loops_in_several_threads(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)
    inside = 0
    worst = 0
    done = 0

    def loop(backend: str) -> None:
        async def task() -> None:
            nonlocal inside, worst, done
            for _ in range(20):
                async with alock:
                    inside += 1
                    worst = max(worst, inside)
                    await anyio.sleep(0.001)
                    inside -= 1
                    done += 1

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(task)

        anyio.run(main, backend=backend)

    threads = [threading.Thread(target=loop, args=(b,)) for b in ("asyncio", "trio") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert worst == 1
    assert done == 4 * 5 * 20


def test_works_in_a_forked_child(lock_name: str) -> None:
    alock = aplock.AsyncLock(lock_name)

    async def use() -> None:
        async with alock:
            pass

    anyio.run(use)  # gates exist in the parent now
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            anyio.run(use)
            os.write(w, b"ok")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 2) == b"ok"
    os.close(r)
    os.waitpid(pid, 0)


SHUTDOWN = """
import sys, time, aplock
name, backend = sys.argv[1], sys.argv[2]
async def main():
    import anyio
    alock = aplock.AsyncLock(name)
    with anyio.move_on_after(0.3):
        await alock.acquire()
start = time.monotonic()
if backend == "asyncio":
    import asyncio
    asyncio.run(main())
else:
    import trio
    trio.run(main)
print(round(time.monotonic() - start, 2))
"""

SHUTDOWN_PENDING = """
import asyncio, sys, time, aplock
async def main():
    alock = aplock.AsyncLock(sys.argv[1])
    asyncio.get_running_loop().create_task(alock.acquire())  # still waiting at exit
    await asyncio.sleep(0.3)
start = time.monotonic()
asyncio.run(main())
print(round(time.monotonic() - start, 2))
"""


@pytest.mark.parametrize(
    ("script", "backend"),
    [(SHUTDOWN, "asyncio"), (SHUTDOWN, "trio"), (SHUTDOWN_PENDING, "asyncio")],
    ids=["asyncio.run", "trio.run", "asyncio.run-pending-task"],
)
def test_run_returns_promptly_after_a_cancelled_wait(
    lock_name: str, script: str, backend: str
) -> None:
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), lock_name, backend],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        proc.kill()
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 3.0, f"shutdown took {out.stdout.strip()}s"


async def test_a_failed_wait_reaches_every_waiting_task(
    lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alock = aplock.AsyncLock(lock_name)
    acquired = SPAWN.Event()
    errors: list[BaseException] = []

    def failing_wait(*args: object) -> tuple[bool, None]:
        raise aplock.LockUnavailableError(lock_name, "the OS refused the wait")

    async def waiter() -> None:
        try:
            await alock.acquire()
        except aplock.LockUnavailableError as exc:
            errors.append(exc)

    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        monkeypatch.setattr(LockCore, "wait", failing_wait)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(waiter)
        proc.kill()
    assert len(errors) == 3
    assert all(lock_name in str(e) for e in errors)
