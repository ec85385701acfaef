"""Waiting inside an event loop for any backend's primitive: the gates.

The async façades (``AsyncLock``, and any primitive that has a ``Core``) are written
once on AnyIO over this module:

- **No thread for a free primitive.** ``acquire()`` checkpoints, then tries the core on
  the event-loop thread; only a contended acquire touches a thread.
- **One waiting thread per primitive per event loop.** The tasks of one loop that wait
  for one primitive queue FIFO in the loop's gate for it. While any wait, one thread of
  aplock's own (never from AnyIO's default pool, which FastAPI's sync endpoints share)
  waits through a core of its own in slices, is woken by the kernel when the primitive
  is posted, and grants it to the first task in the queue through that task's event
  loop.
- **Handoff in the loop, bounded.** A task that releases while a task of its own loop
  waits hands the primitive straight to that task (``release``): a new acquisition with
  the next generation, made through the core without the OS primitive ever being free,
  and without the thread. At most ``HANDOFF_LIMIT`` handoffs in a row, and none once
  ``HANDOFF_WINDOW`` has passed since the first of them: then a real release gives the
  threads and processes that wait on the OS primitive their turn.
- **Cancellation never leaks an acquisition.** A task that stops waiting leaves the
  queue under the gate's mutex; if it was granted the primitive meanwhile, it gives it
  on to the next task (within the bound) or back. The thread exits within one slice
  once no task waits, so ``asyncio.run`` and ``trio.run`` shut down promptly.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from ._deadline import Deadline
from ._eventloop import current_loop, notifier, running_loop

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from ._core import Core, Takeover

_WAITING, _GRANTED, _GONE, _FAILED = 0, 1, 2, 3

#: The most handoffs in a row from task to task of one loop before a real release.
HANDOFF_LIMIT = 64
#: Seconds after the first handoff of a row past which the next release is a real one.
HANDOFF_WINDOW = 0.001
_monotonic = time.monotonic


class _Waiter:
    """One task waiting in a gate; its state changes only under the gate's mutex."""

    __slots__ = ("error", "event", "state", "takeover")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.state = _WAITING
        self.takeover: Takeover | None = None
        self.error: BaseException | None = None


class Gate:
    """The tasks of one event loop that wait for one primitive: FIFO, at most one thread.

    While tasks wait, one thread (the gate's server) waits for the primitive in slices;
    each time it gets it, it grants it to the first waiting task, wakes that task
    through its event loop, and goes back to waiting for the next one. It exits once no
    task waits. A task that stops waiting leaves the queue under the mutex; if it was
    granted the primitive meanwhile, it releases it.
    """

    __slots__ = ("mutex", "notify", "server", "streak", "streak_since", "waiters")

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.waiters: deque[_Waiter] = deque()
        self.server: threading.Thread | None = None
        self.notify: Callable[[Callable[[], object]], object] | None = None
        #: Handoffs in a row since the last real release from this loop, and when the
        #: first of them was made (touched only by the loop's own thread).
        self.streak = 0
        self.streak_since = 0.0

    @property
    def waiting(self) -> int:
        """How many tasks wait."""
        return len(self.waiters)


# the core's gate key -> event loop (asyncio loop or Trio token) -> gate
_gates: dict[Hashable, weakref.WeakKeyDictionary[object, Gate]] = {}
_gates_lock = threading.Lock()


def gate_for(core: Core) -> Gate:
    """The current event loop's gate for *core*'s primitive."""
    key = core.gate_key
    loop = current_loop()
    per_loop = _gates.get(key)
    if per_loop is not None:
        gate = per_loop.get(loop)
        if gate is not None:
            return gate
    with _gates_lock:
        per_loop = _gates.setdefault(key, weakref.WeakKeyDictionary())
        gate = per_loop.get(loop)
        if gate is None:
            gate = per_loop[loop] = Gate()
        return gate


def _gate_here(core: Core) -> Gate | None:
    """The running event loop's gate for *core*'s primitive, if it has one."""
    per_loop = _gates.get(core.gate_key)
    if not per_loop:
        return None
    loop = running_loop()
    return None if loop is None else per_loop.get(loop)


def _forget_gates() -> None:
    global _gates_lock
    _gates_lock = threading.Lock()
    _gates.clear()


os.register_at_fork(after_in_child=_forget_gates)


async def acquire(core: Core, wait: float | None) -> bool:
    """An async acquire of *core*: checkpoint, try, then queue in the gate.

    *wait* is the normalized timeout (``None``: forever, ``0.0``: do not wait).
    """
    await anyio.lowlevel.checkpoint()
    gate = gate_for(core)
    if not gate.waiting and core.try_acquire():
        return True
    if wait == 0.0:
        return False
    return await wait_in(gate, core, Deadline.after(wait))


def release(core: Core) -> None:
    """Release *core*'s primitive; to the next waiting task of this loop if the bound allows.

    The handoff (``Core.hand_over``) is made under the gate's mutex with the first
    waiting task marked granted in the same step, so that a task that stops waiting
    meanwhile either finds itself granted (and gives it on or back) or is not chosen.
    It needs a second task waiting behind that one: the gate's thread, which waits on
    the OS primitive while any task waits, then always has a task to grant it to, and
    never takes a post meant for others only to give it back. So the last task of a
    queue is granted by the thread, as is every task when only one waits at a time.
    Outside an event loop, with fewer than two tasks of this loop waiting, past the
    bound, or with nothing of this process's to hand over, it is a real release.
    """
    gate = _gate_here(core)
    if gate is None or len(gate.waiters) < 2:
        if gate is not None:
            gate.streak = 0
        core.release()
        return
    now = _monotonic()
    if gate.streak == 0:
        gate.streak_since = now
    waiter = None
    if gate.streak < HANDOFF_LIMIT and now - gate.streak_since < HANDOFF_WINDOW:
        with gate.mutex:
            if len(gate.waiters) > 1 and core.hand_over():
                waiter = gate.waiters.popleft()
                waiter.state = _GRANTED
                waiter.takeover = None
    if waiter is None:
        gate.streak = 0
        core.release()
        return
    gate.streak += 1
    waiter.event.set()


async def wait_in(gate: Gate, core: Core, deadline: Deadline) -> bool:
    """Queue in *gate* until granted *core*'s primitive or *deadline*; warn on takeover."""
    waiter = _Waiter()
    with gate.mutex:
        gate.waiters.append(waiter)
        if gate.server is None:
            gate.notify = notifier(current_loop())
            # The server waits through a core of its own, so that closing any one
            # waiter's object cannot end the others' waits.
            gate.server = threading.Thread(
                target=_serve,
                args=(core.for_waiter(), gate),
                name=f"aplock {core.name}",
                daemon=True,
            )
            gate.server.start()
    try:
        if deadline.at is None:
            await waiter.event.wait()  # no cancel scope of our own: the common case
        else:
            with anyio.move_on_after(_seconds(deadline)):
                await waiter.event.wait()
    except BaseException:
        if _leave(gate, waiter):
            release(core)  # granted while we were being cancelled: give it on, or back
        with anyio.CancelScope(shield=True):
            await _server_idle(gate)
        raise
    if waiter.error is not None:
        raise waiter.error
    if not _leave(gate, waiter):
        await _server_idle(gate)
        return False
    if waiter.takeover is not None:
        core.warn_abandoned(waiter.takeover)
    return True


def _seconds(deadline: Deadline) -> float:
    left = deadline.remaining()
    return float("inf") if left is None else left


def _leave(gate: Gate, waiter: _Waiter) -> bool:
    """Stop waiting; return whether the primitive had been granted to *waiter*."""
    with gate.mutex:
        if waiter.state == _GRANTED:
            return True
        if waiter.state == _WAITING:
            gate.waiters.remove(waiter)
        waiter.state = _GONE
        return False


def _serve(core: Core, gate: Gate) -> None:
    """A gate's server thread; if waiting fails, every waiting task gets the error."""
    try:
        _grant_in_order(core, gate)
    except BaseException as exc:  # e.g. the primitive was closed, or the OS refused a wait
        with gate.mutex:
            failed = list(gate.waiters)
            gate.waiters.clear()
            for waiter in failed:
                waiter.state, waiter.error = _FAILED, exc
            notify = gate.notify
            gate.server = gate.notify = None
        for waiter in failed:
            try:
                notify(waiter.event.set)  # type: ignore[misc]
            except RuntimeError:  # its event loop is gone: nobody left to tell
                break


def _grant_in_order(core: Core, gate: Gate) -> None:
    """Grant the primitive to the gate's waiting tasks, in order, until none waits."""
    forever = Deadline(None)

    def nobody_waits() -> bool:
        return not gate.waiters

    while True:
        with gate.mutex:
            if not gate.waiters:
                gate.server = gate.notify = None
                return
        got, takeover = core.wait(forever, nobody_waits)
        if not got:
            continue
        with gate.mutex:
            waiter = gate.waiters.popleft() if gate.waiters else None
            if waiter is not None:
                waiter.state = _GRANTED
                waiter.takeover = takeover
            notify = gate.notify
        if waiter is None:
            core.release()  # everybody left meanwhile; exit at the top if still nobody
            continue
        try:
            notify(waiter.event.set)  # type: ignore[misc]
        except RuntimeError:  # its event loop is gone
            core.release()
            with gate.mutex:
                gate.server = gate.notify = None
            return


async def _server_idle(gate: Gate) -> None:
    """After the last waiter left: wait (at most a slice) until the server has stopped.

    So that, once a cancelled or timed-out ``acquire()`` returns, no thread of this
    process is still about to take the primitive on its behalf.
    """
    server = gate.server
    while server is not None and gate.server is server and not gate.waiters:
        await anyio.sleep(0.001)
