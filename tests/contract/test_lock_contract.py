"""The lock contract, once, over every class with the shape of a lock.

``Lock``, ``AsyncLock``, ``PgLock``, ``AsyncPgLock`` and the semaphores with value 1
(``Semaphore``, ``BoundedSemaphore``, ``AsyncSemaphore``), each on asyncio and Trio (an
async class on uvloop too); a sync class is driven through ``drive.Primitive`` (its
blocking calls in worker threads). A case that needs a capability a class does not have
skips, naming it; where the classes differ in a documented way, the case checks each
one's side. The classes' own behaviour (recovery, fork, processes, sessions) is in
their own suites.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import re
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import aplock
from tests.contract import kinds
from tests.contract.conftest import Site
from tests.contract.drive import PROMPT, Inside, Primitive, assert_free, run_workers
from tests.contract.kinds import Kind

pytestmark = pytest.mark.anyio

KINDS = kinds.LOCKS


# ---- acquire and release -----------------------------------------------------------


async def test_acquire_release(kind: Kind, site: Site) -> None:
    p, other = site.open(), site.open()
    assert p.obj.name == site.name
    assert not p.held()
    assert await p.acquire() is True
    assert p.held()
    if other.sees_others:
        assert other.held(), "another object of the name does not see it held"
    assert site.sessions_holding() in (None, 1)
    await p.arelease()
    assert not p.held()
    if other.sees_others:
        assert not other.held()
    assert site.sessions_holding() in (None, 0)


async def test_context_manager_releases_on_exit_and_on_error(kind: Kind, site: Site) -> None:
    p = site.open()
    obj = p.obj
    if kind.is_async:
        async with obj as entered:
            assert entered is obj
            assert p.held()
        assert not p.held()
        with pytest.raises(KeyError):
            async with obj:
                raise KeyError
    else:

        def use() -> None:
            with obj as entered:
                assert entered is obj
                assert p.held()
            assert not p.held()
            with pytest.raises(KeyError), obj:
                raise KeyError

        await anyio.to_thread.run_sync(use)
    assert not p.held()
    await assert_free(p)


async def test_not_recursive(kind: Kind, site: Site) -> None:
    p = site.open()
    async with p.holding():
        assert await p.acquire(False) is False
        start = time.monotonic()
        assert await p.acquire(timeout=0.05) is False  # it waits, then gives up
        assert 0.045 <= time.monotonic() - start < 2.0
        # On PostgreSQL the session asked the server once: no re-entrant second hold.
        assert site.sessions_holding() in (None, 1)
    await assert_free(p)


async def test_block_false_never_waits_and_ignores_timeout(kind: Kind, site: Site) -> None:
    holder, p = site.open(), site.open()
    async with holder.holding():
        start = time.monotonic()
        assert await p.acquire(False, 10) is False
        assert await p.acquire(False, None) is False
        assert await p.acquire(0, 10) is False  # an int block, as multiprocessing takes
        assert time.monotonic() - start < 1.0
    assert await p.acquire(False, 5) is True
    await p.arelease()


async def test_zero_or_negative_timeout_means_one_try(kind: Kind, site: Site) -> None:
    holder, p = site.open(), site.open()
    for timeout in (0, -1, -1e9):
        async with holder.holding():
            start = time.monotonic()
            assert await p.acquire(timeout=timeout) is False
            assert time.monotonic() - start < 1.0
        assert await p.acquire(timeout=timeout) is True
        assert await p.acquire(timeout=timeout) is False  # held by itself now
        await p.arelease()


async def test_timeout_elapses(kind: Kind, site: Site) -> None:
    holder, p = site.open(), site.open()
    async with holder.holding():
        start = time.monotonic()
        assert await p.acquire(timeout=0.1) is False
        elapsed = time.monotonic() - start
    assert 0.095 <= elapsed < 2.0, f"a 0.1 s timeout took {elapsed:.3f} s"
    await assert_free(p)


async def test_release_of_a_free_one_raises(kind: Kind, site: Site) -> None:
    if not kind.release_free_raises:
        kind.lacks("error on release() of a free one (its count goes above its value)")
    p = site.open()
    with pytest.raises(aplock.LockNotHeldError, match=kind.not_held_says) as info:
        p.release()
    assert isinstance(info.value, ValueError)  # what the contract names
    assert isinstance(info.value, aplock.LockError)
    assert info.value.name == site.name
    async with p.holding():
        pass
    with pytest.raises(aplock.LockNotHeldError):
        p.release()
    await assert_free(p)  # a failed release leaves it usable


async def test_release_then_an_immediate_try_succeeds(kind: Kind, site: Site) -> None:
    """Right after this object's synchronous ``release()``, a try gets the free primitive
    (an ``AsyncPgLock`` waits for its own unlock, which is not waiting for the lock)."""
    p = site.open()
    for _ in range(5):
        assert await p.acquire()
        p.release()
        assert await p.acquire(False), "a try right after release() failed"
        p.release()
        assert await p.acquire(timeout=0)
        await p.arelease()


async def test_release_by_another_thread(kind: Kind, site: Site) -> None:
    if not kind.release_by_other_thread:
        kind.lacks("release() from another thread (only from its event loop)")
    p = site.open()
    assert await p.acquire()
    await anyio.to_thread.run_sync(p.release)
    assert not p.held()
    await assert_free(p)


async def test_release_from_another_task(kind: Kind, site: Site) -> None:
    p = site.open()
    assert await p.acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(p.arelease)
    assert not p.held()
    await assert_free(p)


async def test_release_by_another_object(kind: Kind, site: Site) -> None:
    p, other = site.open(), site.open()
    assert await p.acquire()
    if kind.release_by_other_object:
        other.release()
        assert not p.held()
        await assert_free(other)
    else:
        with pytest.raises(
            aplock.LockNotHeldError, match="only be released by the session"
        ) as info:
            other.release()
        assert isinstance(info.value, aplock.LockError)
        assert info.value.name == site.name
        assert p.held()
        assert await other.acquire(False) is False, "the failed release released it"
        await p.arelease()
        await assert_free(other)


# ---- exclusion ---------------------------------------------------------------------


@pytest.mark.parametrize("other", ["same-class", "twin"])
async def test_two_objects_of_one_name_exclude_each_other(
    kind: Kind, site: Site, other: str
) -> None:
    """Two objects of one name are one primitive, whether of this class or of its sync
    or async twin; an object of another name is another primitive."""
    a = site.open()
    b = site.open() if other == "same-class" else site.open_twin()
    # Names that differ only in case are other names too.
    strangers = [site.open(name=site.other_name(suffix)) for suffix in (".x", ".X")]
    assert await a.acquire()
    if b.sees_others:
        assert b.held()
    assert await b.acquire(False) is False
    for stranger in strangers:
        assert await stranger.acquire(False), f"{stranger.name!r} is held too"
    for stranger in strangers:
        await stranger.arelease()
    await a.arelease()
    assert await b.acquire(False)
    if a.sees_others:
        assert a.held()
    assert await a.acquire(False) is False
    await b.arelease()
    await assert_free(a)


async def test_mutual_exclusion_of_threads_and_tasks(kind: Kind, site: Site) -> None:
    """Eight workers on two objects, one of this class and one of its twin (threads for
    the sync one, tasks for the async one): never two inside at once."""
    inside = Inside()
    await run_workers([site.open(), site.open_twin()], 8, kind.exclusion_rounds, inside)
    assert inside.most == 1, "two workers were inside at once"
    assert inside.entries == 8 * kind.exclusion_rounds


@pytest.mark.parametrize("waiter_object", ["same", "other"])
async def test_a_waiter_wakes_promptly_after_release(
    kind: Kind, site: Site, waiter_object: str
) -> None:
    """``acquire()`` with no timeout waits while held, and returns promptly once the
    holder releases, whether the waiter waits on the holder's object or another."""
    holder = site.open()
    waiter = holder if waiter_object == "same" else site.open()
    assert await holder.acquire()
    started, done = anyio.Event(), anyio.Event()
    woke: list[float] = []

    async def wait() -> None:
        started.set()
        assert await waiter.acquire() is True
        woke.append(time.monotonic())
        done.set()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await started.wait()
            await site.until_waiting(waiter, done, seen=waiter is not holder)
            released = time.monotonic()
            holder.release()
            await done.wait()
    assert woke[0] - released < PROMPT, f"the waiter woke {woke[0] - released:.3f} s late"
    await waiter.arelease()
    await assert_free(holder)


# ---- async: checkpoints and cancellation --------------------------------------------


async def test_acquire_is_a_checkpoint_even_when_free(kind: Kind, site: Site) -> None:
    if not kind.is_async:
        kind.lacks("async acquire()")
    p = site.open()
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        for _ in range(20):
            await p.obj.acquire()  # must yield to the event loop, even when free
            p.release()
        assert ran > 0
        tg.cancel_scope.cancel()
    await assert_free(p)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await p.obj.acquire()
    assert scope.cancelled_caught
    assert not p.held()
    await assert_free(p)


@pytest.mark.parametrize("how", ["move_on_after", "fail_after", "cancel_scope", "task_group"])
async def test_outer_cancellation_interrupts_a_wait(kind: Kind, site: Site, how: str) -> None:
    if not kind.is_async:
        kind.lacks("async acquire()")
    holder, waiter = site.open(), site.open()
    assert await holder.acquire()
    start = time.monotonic()
    if how == "move_on_after":
        with anyio.move_on_after(0.1):
            await waiter.obj.acquire()
    elif how == "fail_after":
        with pytest.raises(TimeoutError), anyio.fail_after(0.1):
            await waiter.obj.acquire()
    elif how == "cancel_scope":
        never = anyio.Event()
        with anyio.CancelScope() as scope:

            async def cancel_once_waiting() -> None:
                await site.until_waiting(waiter, never)
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_once_waiting)
                await waiter.obj.acquire()
        assert scope.cancelled_caught
    else:
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter.obj.acquire)
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, f"cancellation took {elapsed:.2f} s"
    # The wait has ended everywhere (in the server too), and the waiter got nothing.
    assert site.waiters(waiter) in (None, 0)
    if not waiter.sees_others:
        assert not waiter.held()
    assert await waiter.acquire(False) is False, "the holder lost it to a cancelled waiter"
    if kind.info:
        assert [pid for pid, _, _ in kinds.holders(holder.obj.info())] == [os.getpid()]
    await holder.arelease()
    await assert_free(waiter)


async def cancellation_rounds(kind: Kind, site: Site, rounds: int, seed: int) -> dict[str, int]:
    """Cancel a waiter at a random moment, racing the holder's release (from another
    thread where the class allows, else from another task); after each round the
    primitive must be free."""
    rng = random.Random(seed)
    holder, waiter = site.open(), site.open()
    outcomes = {"acquired": 0, "cancelled": 0}
    for _ in range(rounds):
        assert await holder.acquire(timeout=10)
        release_after, cancel_after = rng.uniform(0, 0.02), rng.uniform(0, 0.02)
        got = False

        async def wait(delay: float) -> None:
            nonlocal got
            with anyio.move_on_after(delay):
                got = await waiter.obj.acquire()

        if kind.release_by_other_thread:
            timer = threading.Timer(release_after, holder.release)
            timer.start()
            await wait(cancel_after)
            timer.join()
        else:
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait, cancel_after)
                await anyio.sleep(release_after)
                await holder.arelease()
        if got:
            outcomes["acquired"] += 1
            await waiter.arelease()
        else:
            outcomes["cancelled"] += 1
        assert site.waiters(waiter) in (None, 0)
        if not waiter.sees_others:
            assert not waiter.held()
        await assert_free(holder)  # a leaked acquisition would show here
    return outcomes


async def test_cancelling_a_waiter_at_random_never_leaks(kind: Kind, site: Site) -> None:
    if not kind.is_async:
        kind.lacks("async acquire()")
    outcomes = await cancellation_rounds(kind, site, kind.cancel_rounds, seed=1)
    assert outcomes["acquired"] > 0, outcomes  # both sides of the race were run
    assert outcomes["cancelled"] > 0, outcomes


@pytest.mark.stress
@pytest.mark.timeout(900)
async def test_cancelling_a_waiter_at_random_never_leaks_stress(kind: Kind, site: Site) -> None:
    if not kind.is_async:
        kind.lacks("async acquire()")
    outcomes = await cancellation_rounds(kind, site, kind.stress_rounds, seed=2)
    assert outcomes["acquired"] > 0, outcomes
    assert outcomes["cancelled"] > 0, outcomes


async def test_acquire_nowait(kind: Kind, site: Site) -> None:
    if not kind.acquire_nowait:
        kind.lacks("acquire_nowait()")
    p, other = site.open(), site.open()
    p.obj.acquire_nowait()
    assert p.held()
    with pytest.raises(anyio.WouldBlock):
        p.obj.acquire_nowait()
    with pytest.raises(anyio.WouldBlock):
        other.obj.acquire_nowait()
    p.release()
    other.obj.acquire_nowait()
    other.release()
    await assert_free(p)


# ---- close -------------------------------------------------------------------------


@pytest.mark.parametrize("use", ["acquire", "with", "release", "state"])
async def test_use_after_close_raises_lock_closed(kind: Kind, site: Site, use: str) -> None:
    p, other = site.open(), site.open()
    assert await p.acquire()  # on PostgreSQL: opens its session
    await p.arelease()
    assert not p.obj.closed
    await p.aclose()
    await p.aclose()  # idempotent
    assert p.obj.closed
    assert not other.obj.closed

    def enter_sync() -> None:
        with p.obj:
            pytest.fail("entered a closed object")

    async def use_it() -> object:
        if use == "acquire":
            return await p.acquire()
        if use == "with" and kind.is_async:
            async with p.obj:
                pytest.fail("entered a closed object")
        if use == "with":
            return await anyio.to_thread.run_sync(enter_sync)
        if use == "release":
            p.release()
            return None
        return p.held()

    with pytest.raises(aplock.LockClosedError) as info:
        await use_it()
    assert isinstance(info.value, aplock.LockError)
    assert info.value.name == site.name
    await assert_free(other)  # the other objects of the name keep working


async def test_closed_error_says_what_to_do(kind: Kind, site: Site) -> None:
    p = site.open()
    await p.aclose()
    with pytest.raises(aplock.LockClosedError) as info:
        await p.acquire(False)
    message = str(info.value)
    assert repr(site.name) in message
    assert "create a new" in message
    named = set(re.findall(r"aplock(?:\.\w+)+", message))
    assert named <= {kind.label, kinds.BY_ID[kind.twin].label}, message


async def test_close_keeps_or_releases_as_declared(kind: Kind, site: Site) -> None:
    p, other = site.open(), site.open()
    assert await p.acquire()
    await p.aclose()
    if kind.close_releases:
        assert await other.acquire(False), "closing the holder did not release it"
        await other.arelease()
    else:
        assert await other.acquire(False) is False, "closing released it"
        other.release()  # any object may release it
    await assert_free(other)


# ---- names and arguments ------------------------------------------------------------


async def test_unusual_names_work(kind: Kind, site: Site) -> None:
    for suffix in ("/with/slashes", " spaces and ünïcödé", "x" * 300):
        name = site.other_name(suffix)
        p, again = site.open(name=name), site.open(name=name)
        assert p.obj.name == name
        async with p.holding():
            assert p.held()
            assert await again.acquire(False) is False  # the same name is the same one
            if kind.info:
                assert p.obj.info().name == name
        await assert_free(again)


@pytest.mark.parametrize(
    ("bad", "error", "says"),
    [
        ("", ValueError, "lock name must not be empty"),
        ("x" * 1025, ValueError, "lock name must be at most 1024 characters"),
        (b"x", TypeError, "lock name must be a str, not bytes"),
        (None, TypeError, "lock name must be a str, not NoneType"),
    ],
    ids=["empty", "too-long", "bytes", "none"],
)
def test_bad_names_are_refused(
    kind: Kind, site: Site, bad: Any, error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=says):
        kind.open(bad, site.dsn, 1)


TIMEOUT = "timeout must be a number of seconds or None, not "
BLOCK = "block must be True or False, not "


BAD_ARGUMENTS: list[tuple[Any, Any, type[Exception], str]] = [
    (True, "abc", TypeError, TIMEOUT + "'abc'"),
    (True, math.nan, ValueError, TIMEOUT + "NaN"),
    ("no", None, TypeError, BLOCK + "'no'"),
    (False, [1], TypeError, TIMEOUT + "[1]"),  # block=False ignores only its value
]


async def test_bad_arguments_are_refused_free_or_held(kind: Kind, site: Site) -> None:
    """A few bad calls, on every class (``tests/unit/test_bad_input.py`` has them all):
    each raises, naming the class, the lock and the parameter, and takes nothing."""
    holder, p = site.open(), site.open()
    for block, timeout, error, says in BAD_ARGUMENTS:
        expected = "^" + re.escape(f"{kind.label}({site.name!r}).acquire(): {says}")
        async with holder.holding():
            with anyio.fail_after(5), pytest.raises(error, match=expected):
                await p.acquire(block, timeout)
        with pytest.raises(error, match=expected):
            await p.acquire(block, timeout)
        await assert_free(p)  # a bad call takes nothing


# ---- pickling, repr and inspection --------------------------------------------------


async def test_pickles_by_name(kind: Kind, site: Site) -> None:
    p = site.open()
    if not kind.pickles:  # then it says so, and what to send instead
        with pytest.raises(TypeError, match=f"{site.name!r}.*cannot be pickled"):
            pickle.dumps(p.obj)
        return
    copy = Primitive(kind, pickle.loads(pickle.dumps(p.obj)))
    site.opened.append(copy)
    assert type(copy.obj) is type(p.obj)
    assert copy.name == site.name
    if kind.counting:
        assert copy.obj.value == p.obj.value
    assert await p.acquire()
    assert await copy.acquire(False) is False, "the copy is not the same primitive"
    await p.arelease()
    assert await copy.acquire(False)
    await copy.arelease()


async def test_repr_names_the_primitive_and_its_state(kind: Kind, site: Site) -> None:
    p = site.open()
    assert repr(p.obj) == p.repr_in("free")
    async with p.holding():
        assert repr(p.obj) == p.repr_in("held")
    await p.aclose()
    assert repr(p.obj) == p.repr_in("closed")


async def test_acquisition_is_a_fencing_token(kind: Kind, site: Site) -> None:
    if not kind.acquisition:
        kind.lacks("acquisition (fencing token)")
    p = site.open()
    assert p.obj.acquisition is None
    generations: list[int] = []
    for _ in range(3):
        async with p.holding():
            acquisition = p.obj.acquisition
            assert acquisition is not None
            assert acquisition.abandoned_pid is None
            generations.append(acquisition.generation)
    assert generations == sorted(set(generations)), generations  # strictly increasing
    if kind.backend == "posix":
        assert generations == [1, 2, 3]  # counted from a fresh lock's 0
    assert p.obj.acquisition is None


async def test_info_shows_the_holder_and_the_generation(kind: Kind, site: Site) -> None:
    if not kind.info:
        kind.lacks("info()")
    p = site.open()
    info = p.obj.info()
    assert (info.name, info.generation, kinds.holders(info)) == (site.name, 0, [])
    for generation in (1, 2):
        async with p.holding():
            info = p.obj.info()
            ((pid, alive, held_for),) = kinds.holders(info)
            assert (pid, alive) == (os.getpid(), True)
            assert 0 <= held_for < 60
            assert info.generation == generation
    assert kinds.holders(p.obj.info()) == []


async def test_hand_off_records_another_holder(kind: Kind, site: Site) -> None:
    if not kind.hand_off:
        kind.lacks("hand_off()")
    p, other = site.open(), site.open()
    with pytest.raises(aplock.LockNotHeldError):
        p.obj.hand_off(os.getppid())
    assert await p.acquire()
    p.obj.hand_off(os.getppid())
    assert p.obj.info().holder_pid == os.getppid()
    p.obj.hand_off(None)  # detached: nobody is watched
    assert p.obj.info().holder_pid == -1
    assert "locked (detached)" in repr(p.obj)
    other.release()
    await assert_free(p)
