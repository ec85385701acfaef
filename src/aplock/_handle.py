"""This process's single handle on a named lock, and the protocol that makes it safe.

One lock is three OS objects: the lock semaphore ``L`` (1 when free), the token
semaphore ``H`` (1 while an acquisition is complete) and the state record ``R``.
Invariant: ``L + H <= 1``, so no two holders can ever exist, whatever users do.

- acquire:  wait ``L`` -> write ``R`` (holder last) -> post ``H``
- release:  trywait ``H`` (exactly one racing releaser wins; the rest get
  ``LockNotHeldError``) -> clear ``R.pid`` -> post ``L``
- recover:  under the guard, when ``R`` names a holder proven dead: trywait ``H`` and,
  if ``R`` still names that holder, write ourselves into ``R`` and post ``H`` back.
  ``L`` stays taken: the dead holder's acquisition becomes ours.

Every uncontended step is a userspace atomic in glibc: no system call, no guard. The
guard (``_posix.Guard``) serializes only the rare paths: recovery, hand-off, release by a
process other than the recorded holder, and a release that found ``H`` busy.

A process dies *between* two of these steps only in a window of a few bytecodes (see
``docs/concepts.md``). If it dies after writing ``R`` and before the matching step on
the other semaphore, ``R`` names it, ``H`` and ``L`` are both 0, and no live process is
mid-operation (cross-process releasers hold the guard); a waiter that sees that state
unchanged for ``STUCK_AFTER`` seconds repairs it.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from . import _posix, _state
from ._names import PosixNames, posix_names
from ._process import Identity, identity, is_proven_dead
from .errors import LockClosedError, LockNotHeldError, LockPermissionError

#: Default permission bits of a lock's OS objects: only this user may open them.
DEFAULT_MODE = 0o600
#: How long a dead holder's half-finished step must stay unchanged before it is repaired.
STUCK_AFTER = 0.5

_HOLD = _state.HOLD
_HOLD_AT = _state.HOLD_OFFSET
_GEN_WORD = _state.GENERATION_WORD
_PID_WORD = _state.PID_WORD
_BusyError = _posix.BusyError
_now = time.time


@dataclass(frozen=True, slots=True)
class Takeover:
    """The result of recovering a dead holder's lock."""

    generation: int
    dead_pid: int
    dead_generation: int


class Handle:
    """The OS objects of one lock, opened once per process and shared by all its users."""

    __slots__ = (
        "__weakref__",
        "_suspect",
        "_suspect_since",
        "fd",
        "guard",
        "guard_fd",
        "me",
        "me_ns",
        "me_start",
        "mm",
        "name",
        "names",
        "sem",
        "token",
        "words",
    )

    def __init__(self, name: str, mode: int) -> None:
        self.name = name
        self.names: PosixNames = posix_names(name, short=_posix.SHORT_NAMES)
        self.fd, self.mm, owner = _posix.open_record(name, self.names.record, mode, _state.SIZE)
        try:
            if owner != os.geteuid() and mode == DEFAULT_MODE and os.geteuid() != 0:
                raise LockPermissionError(
                    name,
                    f"its OS objects belong to uid {owner}, not to this user; use another "
                    "name, or pass the mode the owner shared it with (e.g. mode=0o666)",
                )
            self.sem = _posix.open_semaphore(name, self.names.semaphore, mode, 1)
            self.token = _posix.open_semaphore(name, self.names.token, mode, 0)
        except BaseException:
            self.mm.close()
            os.close(self.fd)
            raise
        if _state.NAME_LEN.unpack_from(self.mm, _state.NAME_LEN_OFFSET)[0] == 0:
            raw = _state.encode_name(name)
            self.mm[_state.NAME_OFFSET : _state.NAME_OFFSET + len(raw)] = raw
            _state.NAME_LEN.pack_into(self.mm, _state.NAME_LEN_OFFSET, len(raw))
        self.guard_fd = _posix.open_guard(name, self.fd, self.names.base, mode)
        self.guard = _posix.Guard(name, self.guard_fd)
        #: The record as 64-bit words: one aligned store per field on the hot path.
        self.words = memoryview(self.mm).cast("q")
        self._remember_identity()
        # The OS handles close when the last reference to this object goes, never while
        # a thread still waits on them (closing a semaphore under a waiter is a crash).
        fds = (self.fd,) if self.guard_fd == self.fd else (self.fd, self.guard_fd)
        weakref.finalize(
            self, _posix.close, name, (self.sem, self.token), fds, self.mm, (self.words,)
        )
        self._suspect: _state.Snapshot | None = None
        self._suspect_since = 0.0

    # -- the uncontended path ------------------------------------------------------

    def try_acquire(self) -> int | None:
        """Take the lock if it is free; return the new generation, or ``None``."""
        try:
            self.sem.acquire(0)
        except _BusyError:
            return None
        return self.publish()

    def publish(self) -> int:
        """We hold ``L``: record ourselves as holder, then publish the token."""
        generation = self.words[_GEN_WORD] + 1
        _HOLD.pack_into(self.mm, _HOLD_AT, generation, self.me_start, self.me_ns, _now(), self.me)
        self.token.release()
        return generation

    def _remember_identity(self) -> None:
        me = identity()
        self.me, self.me_start, self.me_ns = me.pid, me.start, me.ns

    def looks_held(self) -> bool:
        """A cheap check that may say "held" only while some acquisition is in force."""
        if _posix.HAS_VALUE:
            return self.sem.value == 0
        return self.words[_PID_WORD] != 0

    def release(self) -> None:
        """Release the lock; ``LockNotHeldError`` if nobody holds it."""
        words = self.words
        if words[_PID_WORD] == self.me:
            try:
                self.token.acquire(0)
            except _BusyError:
                pass
            else:
                words[_PID_WORD] = 0
                self.sem.release()
                return
        with self.guard.held():
            try:
                self.token.acquire(0)
            except _BusyError:
                raise LockNotHeldError(
                    self.name,
                    "release() called but nobody holds it; release each acquisition exactly "
                    "once (use 'with lock:' to pair them)",
                ) from None
            words[_PID_WORD] = 0
            self.sem.release()

    # -- waiting -------------------------------------------------------------------

    def wait(self, seconds: float) -> int | None:
        """Wait up to *seconds* for the lock; return the new generation, or ``None``."""
        return _posix.wait_then(self.sem, seconds, self.publish, self._undo, self.abandon)

    def _undo(self, _generation: int) -> None:
        self.release()

    def abandon(self) -> None:
        """We took ``L`` but an exception (a signal handler's) cut ``publish()`` short.

        Undo what part of it ran: if the token was posted, this is a whole acquisition
        and is released as such; otherwise clear our record and post ``L`` back.
        """
        try:
            self.token.acquire(0)
        except _BusyError:
            if _posix.value(self.sem) not in (0, None):
                return  # released already, by whoever it was handed to
        if self.words[_PID_WORD] == self.me:
            self.words[_PID_WORD] = 0
        self.sem.release()

    def locked(self) -> bool:
        """Whether some thread or process holds the lock now."""
        if _posix.HAS_VALUE:
            return self.sem.value == 0
        return self.words[_PID_WORD] != 0

    def snapshot(self) -> _state.Snapshot:
        """One read of the state record."""
        return _state.read(self.mm)

    # -- the rare paths --------------------------------------------------------------

    def recover(self) -> Takeover | None:
        """If the recorded holder is proven dead, take its lock over (exactly one waiter does)."""
        seen = self.snapshot()
        if seen.pid <= 0 or not is_proven_dead(seen.holder):
            self._suspect = None
            return None
        with self.guard.held(block=False) as got:
            # Busy: someone (maybe frozen) is inside; try again at the next check rather
            # than block a waiter's timeout or cancellation on it.
            if not got or self.snapshot() != seen:
                return None
            try:
                self.token.acquire(0)
            except _BusyError:
                return self._repair_half_done(seen)
            if self.snapshot() != seen:
                self.token.release()  # not the dead holder's token after all: put it back
                return None
            return self._take_over(seen)

    def _repair_half_done(self, seen: _state.Snapshot) -> Takeover | None:
        """``R`` names a dead process but ``H`` is 0: it died mid-acquire or mid-release."""
        try:
            self.sem.acquire(0)
        except _BusyError:
            pass
        else:  # the release had finished after all: a plain acquisition
            generation = self.publish()
            return Takeover(generation, 0, seen.generation)
        now = time.monotonic()
        if self._suspect != seen:
            self._suspect, self._suspect_since = seen, now
            return None
        if now - self._suspect_since < STUCK_AFTER:
            return None
        self._suspect = None
        return self._take_over(seen)

    def _take_over(self, seen: _state.Snapshot) -> Takeover:
        """Under the guard, owning the token (or repairing its loss): become the holder."""
        mm = self.mm
        generation = seen.generation + 1
        _state.RECOVERY.pack_into(
            mm, _state.RECOVERY_OFFSET, seen.recoveries + 1, seen.pid, generation
        )
        me = identity()
        _HOLD.pack_into(mm, _HOLD_AT, generation, me.start, me.ns, _now(), me.pid)
        self.token.release()
        return Takeover(generation, seen.pid, seen.generation)

    def repair_stuck(self, observe: float) -> bool:
        """Free a lock that nobody holds but that stays taken (an operator's command).

        A process killed in the few bytecodes between taking the lock semaphore and
        recording itself (or, in a release, between clearing its record and posting)
        leaves ``L`` and ``H`` both 0 with no live holder recorded. If that state holds
        unchanged for *observe* seconds, post ``L``. Returns whether it did.
        """

        def state() -> tuple[int, int, _state.Snapshot]:
            return self.sem.value, self.token.value, self.snapshot()

        first = state()
        sem, token, snap = first
        if (sem, token) != (0, 0) or (snap.pid != 0 and not is_proven_dead(snap.holder)):
            return False
        time.sleep(observe)
        with self.guard.held():
            if state() != first:
                return False
            self.words[_PID_WORD] = 0
            self.sem.release()
        return True

    def hand_off(self, to: Identity | None) -> None:
        """Record *to* (or nobody: detached) as the holder of the current acquisition."""
        with self.guard.held():
            try:
                self.token.acquire(0)
            except _BusyError:
                raise LockNotHeldError(
                    self.name, "hand_off() needs the lock to be held; acquire it first"
                ) from None
            snap = self.snapshot()
            who = to or Identity(_state.DETACHED, 0, 0)
            _HOLD.pack_into(
                self.mm, _HOLD_AT, snap.generation, who.start, who.ns, snap.acquired_at, who.pid
            )
            self.token.release()

    def reset_after_fork(self) -> None:
        """Forget this process's in-memory state in a forked child (the OS handles stay)."""
        self.guard = _posix.Guard(self.name, self.guard_fd)
        self._remember_identity()
        self._suspect = None


class ClosedHandle:
    """Stands in for the handle of a closed lock: any use raises ``LockClosedError``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        raise LockClosedError(
            self.name, "this object was closed; create a new aplock.Lock(name) to use it again"
        )


#: One handle per name per process: it stays registered, and open, for as long as
#: anything uses it (lock objects, or a thread still waiting on it).
_registry: weakref.WeakValueDictionary[str, Handle] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


def acquire_handle(name: str, mode: int) -> Handle:
    """This process's handle for *name*, opened on first use."""
    with _registry_lock:
        handle = _registry.get(name)
        if handle is None:
            handle = Handle(name, mode)
            _registry[name] = handle
        return handle


def open_handles() -> list[Handle]:
    """The handles open in this process."""
    with _registry_lock:
        return list(_registry.values())


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for handle in _registry.values():
        handle.reset_after_fork()


os.register_at_fork(
    before=_registry_lock.acquire,
    after_in_parent=_registry_lock.release,
    after_in_child=_after_fork_in_child,
)
