"""A named counting semaphore whose permits are owned: the handle, its protocol, its core.

**Objects.** One semaphore is three OS objects: the state record ``R`` (``slots``: the
value, the slot table of held permits, the generation), the wake-up semaphore ``W`` (a
kernel counting semaphore, under the name a lock gives its ``L``) and the guard (the
``flock`` of ``ipc.Guard``, which the kernel drops when its holder dies).

**The record is the truth; ``W`` only wakes.** Every permit is in exactly one place:
a slot that names its holder, or free (``value + extra - held``). Each change of that is
made under the guard by one call or one word store, its commit point:

- acquire (``claim``): under the guard, find a free slot; bump the generation; write the
  slot (one ``pack_into``: generation, time, our identity, ``abandoned = 0``). The guard
  is tried without blocking, again for a bounded patience (a slice, within the deadline).
- release: under the guard, clear the ``pid`` of one slot (one store), or, with no permit
  held, raise ``extra`` by one (``Semaphore``) or ``LockNotHeldError``
  (``BoundedSemaphore``); then post ``W`` if it holds fewer wake-ups than free permits.
  The slot given back: the latest acquisition of the releasing process, if it holds any;
  otherwise the oldest held permit (any thread or process may release, as with
  ``multiprocessing``, and a release by another process is how a permit is handed on).
- recover: a waiter, every ``recovery_interval``, reads the table unguarded, judges the
  holders, and for each one proven dead re-reads the slot under the guard and, if it is
  unchanged, frees it and marks it with the dead pid (one ``pack_into``), and posts ``W``.
  The acquisition that claims a marked slot gets the ``Takeover`` (and the user an
  ``AbandonedLockWarning``): each dead permit comes back once and warns once.
- wait: in slices (``Deadline``), ``sem_timedwait`` on ``W``; between slices, take a
  free permit if the table shows one, and recover.

Since every prefix of every guarded section is a valid state, no section needs an intent:
a process killed anywhere leaves each of its permits either held in a slot that names it
(recovered once it is proven dead) or free. What a kill can still cost:

- killed after the generation was bumped and before its slot was written: a generation
  is skipped (fencing tokens stay increasing);
- killed after a release's store and before its post of ``W`` (or a waiter killed after
  it consumed a post): a wake-up is lost, and the waiters find the free permit at the end
  of their slice (50 ms);
- stopped (SIGSTOP, a debugger) while it holds the guard: acquires keep their timeouts
  (and ``block=False`` answers within a slice) but get nothing, and releases wait, until
  it resumes; nothing is lost.

Nothing is ever taken by nobody, so ``repair`` has no stuck state to free: it recovers
the permits of dead holders without waiting for a waiter to do so.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from typing import TYPE_CHECKING, Literal

from aplock._core import Takeover, warn_abandoned
from aplock._deadline import SLICE
from aplock._names import PosixNames, posix_names
from aplock.errors import (
    LockError,
    LockKindError,
    LockNotHeldError,
)

from . import ipc as _posix
from . import record as _record
from . import slots as _slots
from .handover import hand_over_permit
from .identity import Identity, identity, is_proven_dead
from .registry import ClosedHandle, Registry

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from aplock._deadline import Deadline

_BusyError = _posix.BusyError
_SignalError = _posix.SignalError
_CLAIM = _slots.CLAIM
_FREE_DEAD = _slots.FREE_DEAD
_EXTRA = _slots.EXTRA_WORD
_GEN = _slots.GENERATION_WORD
_W = _slots.SLOT_WORDS
_P0 = _slots.SLOTS_WORD + _slots.S_PID
_K0 = _slots.SLOTS_WORD + _slots.S_KEY
_G0 = _slots.SLOTS_WORD + _slots.S_GEN
_CAPACITY = _slots.CAPACITY
_now = time.time
#: How long a try waits for a busy guard: a sync acquire's first try, and each slice.
TRY_PATIENCE = SLICE
_FIRST_PAUSE = 0.00005
_LAST_PAUSE = 0.001

#: A claimed permit: its generation, and the takeover if it was a dead holder's.
Grant = tuple[int, Takeover | None]


class SemHandle:
    """The OS objects of one semaphore, opened once per process and shared by its users."""

    __slots__ = (
        "__weakref__",
        "bounded",
        "fd",
        "guard",
        "guard_fd",
        "me_key",
        "me_words",
        "mine",
        "mm",
        "name",
        "names",
        "value",
        "wake",
        "words",
    )

    def __init__(self, name: str, mode: int, bounded: bool, value: int) -> None:
        self.name = name
        self.names: PosixNames = posix_names(name, short=_posix.SHORT_NAMES)
        with contextlib.ExitStack() as undo:  # close what was opened if a later step fails
            self.fd, self.mm, self.guard_fd, guard = _posix.open_guarded_record(
                name, self.names, mode, _slots.SIZE, undo
            )
            self.guard: _posix.Guard | _posix.FailedGuard = guard
            self.words = memoryview(self.mm).cast("q")
            undo.callback(self.words.release)
            self._claim_record(bounded, value)
            self.wake = _posix.open_semaphore(name, self.names.semaphore, mode, 0)
            undo.pop_all()
        #: Read once: the record's value and kind never change once claimed.
        self.value = self.words[_slots.VALUE_WORD]
        self.bounded = self.words[_slots.KIND_WORD] == _slots.KIND_BOUNDED
        #: This process's claims, latest last, as (slot, generation): a hint for release,
        #: checked against the record (others may have released them since).
        self.mine: list[tuple[int, int]] = []
        self._remember_identity()
        weakref.finalize(
            self, _posix.close, name, (self.wake,), (self.fd, self.guard_fd), self.mm, (self.words,)
        )

    def _claim_record(self, bounded: bool, value: int) -> None:
        """Under the guard: make a new record this semaphore's, or check that it is one."""
        words = self.words
        with self.guard.held():
            if _record.layout(self.mm) == 0:
                for word in range(1, _slots.HEADER_WORDS):
                    words[word] = 0  # what a killed claimer may have left
                raw = _record.encode_name(self.name)
                self.mm[_slots.NAME_OFFSET : _slots.NAME_OFFSET + len(raw)] = raw
                words[_slots.NAME_LEN_OFFSET // 8] = len(raw)
                words[_slots.KIND_WORD] = _slots.KIND_BOUNDED if bounded else _slots.KIND_SEMAPHORE
                words[_slots.VALUE_WORD] = value
                words[_slots.LAYOUT_WORD] = _slots.LAYOUT  # last: the claim is complete
        found = _record.kind(self.mm)
        if found == _record.LOCK_KIND:
            raise LockKindError(self.name, found, kind_name(bounded))
        if found not in _slots.KIND_NAMES.values():
            raise LockError(
                self.name,
                f"its state record has layout {_record.layout(self.mm):#x}, written by another "
                "aplock release; stop the processes that use it and remove it with "
                "'aplock clean NAME'",
            )

    def check(self, bounded: bool, value: int) -> None:
        """Raise unless the semaphore is of this kind and was created with *value*."""
        if self.bounded != bounded:
            raise LockKindError(self.name, kind_name(self.bounded), kind_name(bounded))
        if self.value != value:
            cls = "BoundedSemaphore" if bounded else "Semaphore"
            raise ValueError(
                f"aplock.{cls}({self.name!r}): it exists with value={self.value}, not "
                f"value={value}; open it with value={self.value}, or choose another name"
            )

    def is_current(self) -> bool:
        """Whether the record is still the one linked under its name (not unlinked since)."""
        path = os.path.join(_posix.SHM_DIR, self.names.record[1:])
        try:
            return os.stat(path).st_ino == os.fstat(self.fd).st_ino
        except FileNotFoundError:
            return not os.path.isdir(_posix.SHM_DIR)  # no /dev/shm to look in (macOS)

    def _remember_identity(self) -> None:
        me = identity()
        self.me_key = me.key
        self.me_words = _record.pack_identity(me)

    # -- permits ----------------------------------------------------------------------

    def permits(self) -> int:
        """How many permits the semaphore has (``value`` plus releases above it)."""
        return self.value + self.words[_EXTRA]

    def free(self) -> int:
        """How many permits are free now (one unguarded read of the table)."""
        total = self.value + self.words[_EXTRA]
        return self.words[_P0 : _P0 + _W * total : _W].tolist().count(0)

    def claim(self, patience: float = 0.0) -> Grant | None:
        """Take a free permit if there is one: its generation and takeover, or ``None``.

        The guard is tried without blocking, and again for up to *patience* seconds
        while another thread or process is inside it: a process stopped there delays an
        acquire by *patience* at most, and never blocks an event loop.
        """
        grant = self._claim_once()
        if grant is not False or patience <= 0.0:
            return grant or None
        end = time.monotonic() + patience
        pause = _FIRST_PAUSE
        while True:
            left = end - time.monotonic()
            if left <= 0.0:
                return None
            time.sleep(min(pause, left))
            pause = min(2 * pause, _LAST_PAUSE)
            grant = self._claim_once()
            if grant is not False:
                return grant

    def _claim_once(self) -> Grant | Literal[False] | None:
        """One try: the grant, ``None`` if no permit is free, ``False`` if the guard is busy.

        The slot is written by one call, the commit point. A signal handler's exception
        after it (inside the guard, or as the guard restores the signal mask) gives the
        permit back before it propagates: the slot and generation are known by then.
        """
        words = self.words
        slot = -1
        generation = 0
        try:
            with self.guard.held(block=False) as got:
                if not got:
                    return False
                total = self.value + words[_EXTRA]
                try:
                    slot = words[_P0 : _P0 + _W * total : _W].tolist().index(0)
                except ValueError:
                    return None
                at = _slots.slot_word(slot)
                dead_pid = words[at + _slots.S_ABANDONED]
                dead_generation = words[at + _slots.S_GEN]
                generation = words[_GEN] + 1
                words[_GEN] = generation  # first: a death right after only skips one
                _CLAIM.pack_into(
                    self.mm, _slots.slot_offset(slot), generation, _now(), self.me_words, 0
                )
                self.mine.append((slot, generation))
        except BaseException:
            if generation:
                self.give_back(slot, generation)
            raise
        if dead_pid:
            return generation, Takeover(generation, dead_pid, dead_generation)
        return generation, None

    def give_back(self, slot: int, generation: int) -> None:
        """Free *slot* if it still holds our acquisition *generation* (an interrupted claim)."""
        words = self.words
        at = _slots.slot_word(slot)
        with self.guard.held():
            if (
                words[at + _slots.S_GEN] == generation
                and words[at + _slots.S_KEY] == self.me_key
                and words[at + _slots.S_PID] != 0
            ):
                words[at + _slots.S_PID] = 0
                self._wake_waiters(1)

    def release(self) -> None:
        """Give back one permit (see the module docstring for which one)."""
        words = self.words
        with self.guard.held():
            slot = self.own_slot()
            if slot < 0:
                slot = self._oldest_slot()
            if slot >= 0:
                words[_slots.slot_word(slot) + _slots.S_PID] = 0  # the commit point
            elif self.bounded:
                raise LockNotHeldError(
                    self.name,
                    f"release() called but every permit ({self.value}) is free; release each "
                    "acquisition exactly once (use 'with sem:' to pair them)",
                )
            else:
                extra = words[_EXTRA]
                if self.value + extra >= _CAPACITY:
                    raise ValueError(
                        f"aplock.Semaphore({self.name!r}).release(): the count would exceed "
                        f"{_CAPACITY}, the most permits a semaphore can have"
                    )
                words[_EXTRA] = extra + 1  # the commit point
            self._wake_waiters(1)

    def own_slot(self) -> int:
        """Under the guard: the slot of this process's latest acquisition still held, or -1."""
        words = self.words
        mine = self.mine
        key = self.me_key
        while mine:
            slot, generation = mine[-1]
            at = _slots.slot_word(slot)
            if (
                words[at + _slots.S_PID] != 0
                and words[at + _slots.S_KEY] == key
                and words[at + _slots.S_GEN] == generation
            ):
                mine.pop()
                return slot
            mine.pop()  # released by another process since, or given back
        total = self.value + words[_EXTRA]
        keys = words[_K0 : _K0 + _W * total : _W].tolist()
        pids = words[_P0 : _P0 + _W * total : _W].tolist()
        gens = words[_G0 : _G0 + _W * total : _W].tolist()
        ours = [(gens[s], s) for s in range(total) if pids[s] and keys[s] == key]
        return max(ours)[1] if ours else -1

    def _oldest_slot(self) -> int:
        """Under the guard: the slot of the oldest held permit, or -1 if none is held."""
        words = self.words
        total = self.value + words[_EXTRA]
        pids = words[_P0 : _P0 + _W * total : _W].tolist()
        gens = words[_G0 : _G0 + _W * total : _W].tolist()
        held = [(gens[s], s) for s in range(total) if pids[s]]
        return min(held)[1] if held else -1

    def _wake_waiters(self, count: int) -> None:
        """Under the guard: post ``W`` up to *count* times, never above the free permits."""
        if not _posix.HAS_TIMEDWAIT:
            return  # waiters poll the table there
        for _ in range(count):
            if _posix.HAS_VALUE and self.wake.value >= self.free():
                return
            try:
                self.wake.release()
            except OSError:
                return  # at its maximum: the waiters are awake anyway

    def wait_for_wakeup(self, seconds: float) -> None:
        """Wait up to *seconds* for a post of ``W`` (a permit may have been freed).

        On the main thread signals are deferred while it waits, and their handlers run
        right after, when nothing is held; a wake-up consumed by an interrupted wait is
        posted back.
        """
        if not _posix.HAS_TIMEDWAIT:
            time.sleep(min(_posix.POLL, seconds))
            return
        old = _posix.defer_signals()
        woke = False
        try:
            try:
                self.wake.acquire(seconds)
                woke = True
            except (_BusyError, _SignalError):
                pass
        finally:
            if old is not None:
                try:
                    _posix.restore_signals(old)
                except BaseException:
                    if woke:
                        self.wake.release()
                    raise

    # -- the rare paths -----------------------------------------------------------------

    def _dead_holders(self) -> list[tuple[int, int, Identity]]:
        """One unguarded read: ``(slot, generation, holder)`` of each holder proven dead."""
        words = self.words
        total = self.value + words[_EXTRA]
        judged: dict[Identity, bool] = {}
        dead = []
        for slot in range(total):
            at = _slots.slot_word(slot)
            pid = words[at + _slots.S_PID]
            if pid == 0 or words[at + _slots.S_KEY] == self.me_key:
                continue
            who = Identity(
                pid, words[at + _slots.S_START], words[at + _slots.S_NS], words[at + _slots.S_KEY]
            )
            if who not in judged:
                judged[who] = is_proven_dead(who)
            if judged[who]:
                dead.append((slot, words[at + _slots.S_GEN], who))
        return dead

    def recover(self, *, block: bool = False) -> int:
        """Free the permits of holders proven dead, each once; return how many it freed.

        Each slot is read again under the guard and freed only if it still holds the
        acquisition that was judged: a slot released and claimed again meanwhile is not
        touched. A busy guard (without *block*) is tried again at the next check.
        """
        suspects = self._dead_holders()
        if not suspects:
            return 0
        words = self.words
        freed = 0
        with self.guard.held(block=block) as got:
            if not got:
                return 0
            for slot, generation, who in suspects:
                at = _slots.slot_word(slot)
                if (
                    words[at + _slots.S_GEN] != generation
                    or words[at + _slots.S_PID] != who.pid
                    or words[at + _slots.S_KEY] != who.key
                    or words[at + _slots.S_START] != who.start
                    or words[at + _slots.S_NS] != who.ns
                ):
                    continue  # released (and maybe claimed again) since it was read
                # The commit point: free, and marked for the acquisition that claims it.
                _FREE_DEAD.pack_into(self.mm, (at + _slots.S_PID) * 8, 0, who.pid)
                freed += 1
                words[_slots.RECOVERIES_WORD] += 1
                words[_slots.ABANDONED_PID_WORD] = who.pid
            self._wake_waiters(freed)
        return freed

    def snapshot(self) -> _slots.Table:
        """One read of the record."""
        return _slots.read(self.mm)

    def reset_after_fork(self) -> None:
        """In a forked child: a process of its own (its permits are its parent's)."""
        self._remember_identity()
        self.mine = []
        try:
            _posix.reopen_guard(self.name, self.guard_fd, self.names.base)
        except LockError as exc:
            self.guard = _posix.FailedGuard(exc)
        else:
            self.guard = _posix.Guard(self.name, self.guard_fd)


def kind_name(bounded: bool) -> str:
    """The kind of object a semaphore is, as errors and the record name it."""
    return _slots.KIND_NAMES[_slots.KIND_BOUNDED if bounded else _slots.KIND_SEMAPHORE]


# -- this process's handles ------------------------------------------------------------

_HANDLES: Registry[SemHandle] = Registry()


def _is_current(handle: SemHandle) -> bool:
    return handle.is_current()


def open_handle(name: str, mode: int, bounded: bool, value: int) -> SemHandle:
    """This process's handle for semaphore *name*, checked against *bounded* and *value*.

    A handle whose record was unlinked since (by ``aplock.unlink`` or another process)
    is replaced: new objects open the new semaphore, as other processes do.
    """
    handle = _HANDLES.get(name, lambda: SemHandle(name, mode, bounded, value), _is_current)
    handle.check(bounded, value)
    return handle


def forget_handle(name: str) -> None:
    """Let the next ``open_handle(name)`` open the OS objects anew (after an unlink)."""
    _HANDLES.forget(name)


class SemaphoreCore:
    """One object's use of the process's handle on a semaphore: the ``Core`` of
    ``aplock._core``. ``h`` is read afresh by every call, so that a ``close()`` from
    another thread ends a wait within a slice.
    """

    __slots__ = ("_bounded", "_mode", "_name", "_value", "h", "recovery_interval")

    def __init__(
        self, name: str, mode: int, bounded: bool, value: int, recovery_interval: float | None
    ) -> None:
        self._name = name
        self._mode = mode
        self._bounded = bounded
        self._value = value
        self.recovery_interval = recovery_interval
        self.h: SemHandle | ClosedHandle = open_handle(name, mode, bounded, value)

    @property
    def name(self) -> str:
        """The semaphore's name."""
        return self._name

    @property
    def gate_key(self) -> Hashable:
        """The kind, the name and the recovery setting: what a waiting thread shares."""
        return ("semaphore", self._name, self.recovery_interval)

    def try_acquire(self, patience: float = 0.0) -> bool:
        """Take a permit if one is free; warn if it was a dead holder's.

        With the default *patience*, it never waits (an event loop's fast path): a
        guard that another thread or process holds right now counts as no permit.
        """
        h = self.h
        if not h.free():
            return False
        grant = h.claim(patience)
        if grant is None:
            return False
        if grant[1] is not None:
            self.warn_abandoned(grant[1])
        return True

    def wait(
        self, deadline: Deadline, cancelled: Callable[[], bool] | None
    ) -> tuple[bool, Takeover | None]:
        """Wait in slices until a permit is ours, *deadline* or *cancelled*.

        Before each slice it takes a permit if the table shows one free; every
        ``recovery_interval`` it frees the permits of holders proven dead.
        """
        interval = self.recovery_interval
        check_at = time.monotonic() + interval if interval is not None else None
        while True:
            h = self.h  # each slice: a close() from another thread ends the wait
            if h.free():
                grant = h.claim(deadline.slice())
                if grant is not None:
                    return True, grant[1]
            if cancelled is not None and cancelled():
                return False, None
            now = time.monotonic()
            if check_at is not None and now >= check_at:
                check_at = now + interval  # type: ignore[operator]
                if h.recover():
                    continue  # take one of them now
            if deadline.expired(now=now):
                return False, None
            h.wait_for_wakeup(deadline.slice(now=now))

    def release(self) -> None:
        """Give back one permit (any thread or process may)."""
        self.h.release()

    def hand_over(self) -> bool:
        """Turn this process's latest permit into a new acquisition of this process."""
        h = self.h
        return isinstance(h, SemHandle) and hand_over_permit(h)

    def warn_abandoned(self, takeover: Takeover) -> None:
        """Warn of *takeover* at the user's frame; release if the warning raises."""
        warn_abandoned(self._name, takeover, self.release)

    def repair(self, observe: float) -> bool:
        """Free the permits of dead holders now, without a waiter; whether it freed any.

        No permit is ever held by nobody, so nothing needs *observe* seconds of watching.
        """
        return self.h.recover(block=True) > 0

    def for_waiter(self) -> SemaphoreCore:
        """A core of its own on the same handle, for a thread that waits for others."""
        return SemaphoreCore(
            self._name, self._mode, self._bounded, self._value, self.recovery_interval
        )

    @property
    def mode(self) -> int:
        """The permission bits the semaphore was opened with."""
        return self._mode

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return isinstance(self.h, ClosedHandle)

    def close(self) -> None:
        """Stop using the handle; later calls raise ``LockClosedError``."""
        if isinstance(self.h, SemHandle):
            opener = "aplock.BoundedSemaphore" if self._bounded else "aplock.Semaphore"
            self.h = ClosedHandle(self._name, opener)
