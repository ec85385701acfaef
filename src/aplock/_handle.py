"""This process's single handle on a named lock, and the protocol that makes it safe.

One lock is three OS objects: the lock semaphore ``L`` (1 when free), the token
semaphore ``H`` (1 while an acquisition is complete) and the state record ``R``.
Invariant: ``L + H <= 1``, so no two holders can ever exist, whatever users do.

- acquire:  wait ``L`` -> write ``R`` (one call) -> post ``H``
- release:  trywait ``H`` (exactly one racing releaser wins; the rest get
  ``LockNotHeldError``) -> clear ``R.pid`` -> post ``L``
- give back (an acquire interrupted by a signal handler's exception): if ``R``'s
  generation is unchanged, post ``L``; else mark its generation owed in ``R`` (one
  store) and, under the guard, trywait ``H`` and free the lock only if ``R`` still holds
  that generation. A waiter that finds the current generation owed does the same (a
  second handler's exception cut the give-back short).
- recover:  under the guard, when ``R`` names a holder proven dead: trywait ``H`` and,
  if ``R`` still names that holder, write ourselves into ``R`` and post ``H`` back.
  ``L`` stays taken: the dead holder's acquisition becomes ours.

Every uncontended step is a userspace atomic in glibc: no system call, no guard. The
guard (``_posix.Guard``) serializes only the rare paths: recovery, hand-off, release by a
process other than the recorded holder, and a release that found ``H`` busy.

A signal handler's exception can surface after any call: ``try_take`` and ``take`` say
how each instant is undone, with no call in between for a second handler to interrupt.
A process dies *between* two of these steps only in a window of a few bytecodes (see
``docs/concepts.md``). If it dies after writing ``R`` and before the matching step on
the other semaphore, ``R`` names it, ``H`` and ``L`` are both 0, and no live process is
mid-operation (cross-process releasers hold the guard); a waiter that sees that state
unchanged for ``STUCK_AFTER`` seconds repairs it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from . import _posix, _state
from ._names import PosixNames, posix_names
from ._process import Identity, identity, is_proven_dead
from .errors import LockClosedError, LockError, LockNotHeldError, LockPermissionError

#: Default permission bits of a lock's OS objects: only this user may open them.
DEFAULT_MODE = 0o600
#: How long a dead holder's half-finished step must stay unchanged before it is repaired.
STUCK_AFTER = 0.5

_HOLD = _state.HOLD
_HOLD_AT = _state.HOLD_OFFSET
_GEN_WORD = _state.GENERATION_WORD
_PID_WORD = _state.PID_WORD
_OWED_WORD = _state.OWED_WORD
_BusyError = _posix.BusyError
_SignalError = _posix.SignalError
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
        with contextlib.ExitStack() as undo:  # close what was opened if a later step fails
            undo.callback(os.close, self.fd)
            undo.callback(self.mm.close)
            if owner != os.geteuid() and mode == DEFAULT_MODE and os.geteuid() != 0:
                raise LockPermissionError(
                    name,
                    f"its OS objects belong to uid {owner}, not to this user; use another "
                    "name, or pass the mode the owner shared it with (e.g. mode=0o666)",
                )
            self.sem = _posix.open_semaphore(name, self.names.semaphore, mode, 1)
            undo.callback(self.sem.close)
            self.token = _posix.open_semaphore(name, self.names.token, mode, 0)
            undo.callback(self.token.close)
            self.guard_fd = _posix.open_guard(name, self.fd, self.names.base, mode)
            undo.pop_all()
        if _state.NAME_LEN.unpack_from(self.mm, _state.NAME_LEN_OFFSET)[0] == 0:
            raw = _state.encode_name(name)
            self.mm[_state.NAME_OFFSET : _state.NAME_OFFSET + len(raw)] = raw
            _state.NAME_LEN.pack_into(self.mm, _state.NAME_LEN_OFFSET, len(raw))
        self.guard: _posix.Guard | _posix.FailedGuard = _posix.Guard(name, self.guard_fd)
        #: The record as 64-bit words: one aligned store per field on the hot path.
        self.words = memoryview(self.mm).cast("q")
        self._remember_identity()
        # The OS handles close when the last reference to this object goes, never while
        # a thread still waits on them (closing a semaphore under a waiter is a crash).
        weakref.finalize(
            self,
            _posix.close,
            name,
            (self.sem, self.token),
            (self.fd, self.guard_fd),
            self.mm,
            (self.words,),
        )
        self._suspect: _state.Snapshot | None = None
        self._suspect_since = 0.0

    # -- taking and releasing ------------------------------------------------------

    def try_take(self) -> int | None:
        """Take the lock if it is free, without waiting; return the new generation, or ``None``.

        A Python signal handler runs between two bytecodes of the main thread, and its
        exception can surface right after ``L`` was taken or anywhere after. Whatever
        the instant, it propagates and nothing is held: the steps that undo it are
        written out here (and in ``take``), with no call in between that a second
        handler could interrupt.
        """
        sem = self.sem
        try:
            sem.acquire(0)
        except _BusyError:
            return None
        except BaseException:
            sem.release()  # taken just before the exception
            raise
        words = self.words
        before = words[_GEN_WORD]
        try:
            # publish(), written out: this is the uncontended path.
            now = _now()
            try:
                _HOLD.pack_into(
                    self.mm, _HOLD_AT, before + 1, self.me_start, self.me_ns, now, self.me
                )
            finally:
                self.token.release()
        except BaseException:
            if words[_GEN_WORD] == before:
                sem.release()  # publish() never started: only L is ours
            else:
                words[_OWED_WORD] = before + 1
                self.give_back(before)
            raise
        return before + 1

    def take(self, seconds: float) -> int | None:
        """Wait up to *seconds* for the lock; return the new generation, or ``None``.

        Exceptions are handled as in ``try_take``. On the main thread, signals are also
        deferred while it waits (posix_ipc cannot resume a wait that a signal
        interrupted) and their handlers run once the outcome is settled.
        """
        if not _posix.HAS_TIMEDWAIT:
            return self._poll(seconds)
        sem = self.sem
        old = _posix.defer_signals()
        generation: int | None = None
        try:
            try:
                sem.acquire(seconds)
            except (_BusyError, _SignalError):
                return None
            except BaseException:
                sem.release()
                raise
            words = self.words
            before = words[_GEN_WORD]
            try:
                # A handler that runs once signals are unblocked may raise: if one is
                # pending, give the lock back rather than hand it to a caller that is
                # about to be interrupted.
                pending = old is not None and _posix.handled_signal_pending(old)
                if not pending:
                    generation = self.publish()
            except BaseException:
                if words[_GEN_WORD] == before:
                    sem.release()
                else:
                    words[_OWED_WORD] = before + 1
                    self.give_back(before)
                raise
            if pending:
                sem.release()
        finally:
            if old is not None:
                try:
                    _posix.restore_signals(old)
                except BaseException:
                    if generation is not None:
                        self.words[_OWED_WORD] = generation
                        self.give_back(before)
                    raise
        return generation

    def _poll(self, seconds: float) -> int | None:
        """``take`` where the platform has no timed wait: try every ``POLL`` seconds."""
        end = time.monotonic() + seconds
        while True:
            generation = self.try_take()
            if generation is not None:
                return generation
            left = end - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(_posix.POLL, left))  # signal handlers run here, as for any sleep

    def publish(self) -> int:
        """We hold ``L``: record ourselves as holder, then publish the token.

        The record is written by one call, after everything that could raise: a signal
        handler's exception comes before it (nothing written) or after it, when the
        token is posted anyway. So the generation tells ``give_back`` exactly how far
        this got.
        """
        now = _now()
        generation = self.words[_GEN_WORD] + 1
        try:
            _HOLD.pack_into(self.mm, _HOLD_AT, generation, self.me_start, self.me_ns, now, self.me)
        finally:
            self.token.release()
        return generation

    def give_back(self, before: int) -> None:
        """Undo an acquisition whose ``publish()`` ran but whose caller was interrupted.

        *before* is the generation read right after ``L`` was taken, so this acquisition
        is generation ``before + 1`` and its token was posted. Any thread or process may
        have released it since (and another may hold the lock now): under the guard, the
        token is taken and the lock freed only if it is still that acquisition's.

        The caller first marks the acquisition owed in the record (one store, which no
        signal handler can interrupt): if a second handler's exception cuts this call
        short, a waiter settles the debt instead (``settle_owed``).
        """
        with self.guard.held():
            self._free_if_current(before + 1)

    def settle_owed(self) -> None:
        """Free the current acquisition if its own process marked it owed (a waiter's job).

        Cheap unless there is a debt; never blocks (a busy guard: the next slice retries).
        """
        words = self.words
        owed = words[_OWED_WORD]
        if owed == 0 or owed != words[_GEN_WORD]:
            return
        with self.guard.held(block=False) as got:
            if got:
                self._free_if_current(owed)

    def _free_if_current(self, generation: int) -> None:
        """Under the guard: free acquisition *generation* if it still holds the lock."""
        words = self.words
        took = True
        try:
            self.token.acquire(0)
        except _BusyError:
            took = False  # a releaser has it (and posts L), or a later holder is publishing
        finally:
            if took:
                if words[_GEN_WORD] == generation:
                    words[_PID_WORD] = 0
                    self.sem.release()
                else:
                    self.token.release()  # a later acquisition's token: put it back

    def _remember_identity(self) -> None:
        me = identity()
        self.me, self.me_start, self.me_ns = me.pid, me.start, me.ns

    def release(self) -> None:
        """Release the lock; ``LockNotHeldError`` if nobody holds it."""
        words = self.words
        if words[_PID_WORD] == self.me:
            # _free(), written out: this is the uncontended path.
            took = True
            try:
                self.token.acquire(0)
            except _BusyError:
                took = False
            finally:
                if took:
                    words[_PID_WORD] = 0
                    self.sem.release()
            if took:
                return
        with self.guard.held():
            if not self._free():
                raise LockNotHeldError(
                    self.name,
                    "release() called but nobody holds it; release each acquisition exactly "
                    "once (use 'with lock:' to pair them)",
                )

    def _free(self) -> bool:
        """Take the token and free the lock; ``False`` if there was no token to take.

        Exactly one of any number of racing releasers takes the token. Once taken, the
        release completes even if a signal handler's exception arrives right then.
        """
        took = True
        try:
            self.token.acquire(0)
        except _BusyError:
            took = False
        finally:
            if took:
                self.words[_PID_WORD] = 0
                self.sem.release()
        return took

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
        now = _now()
        try:
            _state.RECOVERY.pack_into(
                mm, _state.RECOVERY_OFFSET, seen.recoveries + 1, seen.pid, generation
            )
            _HOLD.pack_into(mm, _HOLD_AT, generation, self.me_start, self.me_ns, now, self.me)
        finally:
            # Cut short by a signal handler's exception, this leaves either the dead
            # holder's acquisition (for the next waiter to take over) or a whole one of
            # ours: never a recorded holder without its token.
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
        who = to or Identity(_state.DETACHED, 0, 0)
        with self.guard.held():
            try:
                self.token.acquire(0)
            except _BusyError:
                raise LockNotHeldError(
                    self.name, "hand_off() needs the lock to be held; acquire it first"
                ) from None
            except BaseException:
                self.token.release()  # taken just before a signal handler raised
                raise
            try:
                snap = self.snapshot()
                _HOLD.pack_into(
                    self.mm, _HOLD_AT, snap.generation, who.start, who.ns, snap.acquired_at, who.pid
                )
            finally:
                self.token.release()

    def reset_after_fork(self) -> None:
        """Forget this process's in-memory state in a forked child.

        The semaphores and the record stay valid; the guard's descriptor is reopened so
        that this process's guard is its own, not its parent's. If that fails, the
        guard raises the error on use rather than share the parent's.
        """
        self._remember_identity()
        self._suspect = None
        try:
            _posix.reopen_guard(self.name, self.guard_fd, self.names.base)
        except LockError as exc:
            self.guard = _posix.FailedGuard(exc)
        else:
            self.guard = _posix.Guard(self.name, self.guard_fd)


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


# The hooks look the registry lock up when they run: a child replaces it with a new one,
# and the one it inherited (taken by ``_before_fork``) is never released.
def _before_fork() -> None:
    _registry_lock.acquire()


def _after_fork_in_parent() -> None:
    _registry_lock.release()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for handle in _registry.values():
        handle.reset_after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
