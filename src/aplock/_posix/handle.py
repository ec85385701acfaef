"""This process's single handle on a named lock, and the protocol that makes it safe.

The protocol (the three OS objects, each step, intents, the windows a kill can hit) is
described in the package's docstring, ``aplock._posix``; the model in ``model/``
mirrors the methods here.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import weakref

from aplock._core import Takeover
from aplock._names import PosixNames, posix_names
from aplock.errors import LockError, LockKindError, LockNotHeldError

from . import ipc as _posix
from . import record as _state
from .identity import Identity, identity, is_proven_dead
from .record import Intent

#: Default permission bits of a lock's OS objects: only this user may open them.
DEFAULT_MODE = _posix.DEFAULT_MODE
#: How long a dead holder's half-finished step must stay unchanged before it is repaired.
STUCK_AFTER = 0.5
#: How long the holder's own process lets its other threads finish an unguarded step
#: before it settles an ambiguous intent (see ``Handle._holder_may_release``).
OWN_THREADS_GRACE = 0.05

_FAST_HOLD = _state.FAST_HOLD
_HOLD_AT = _state.HOLD_OFFSET
_GEN_WORD = _state.GENERATION_WORD
_KEY_WORD = _state.KEY_WORD
_PID_WORD = _state.PID_WORD
_OWED_WORD = _state.OWED_WORD
_INTENT_WORD = _state.INTENT_WORD
_INTENT_PID_WORD = _state.INTENT_PID_WORD
_BusyError = _posix.BusyError
_SignalError = _posix.SignalError
_HAS_VALUE = _posix.HAS_VALUE
_now = time.time


# The intent words, for steps that must not make a call (see ``_free_if_current``).
_RELEASE, _GIVE_BACK, _HAND_OFF = Intent.RELEASE, Intent.GIVE_BACK, Intent.HAND_OFF
_TAKING, _TOOK = Intent.TAKING, Intent.TOOK


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
        "me_key",
        "me_ns",
        "me_start",
        "me_words",
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
        with contextlib.ExitStack() as undo:  # close what was opened if a later step fails
            self.fd, self.mm, self.guard_fd, guard = _posix.open_guarded_record(
                name, self.names, mode, _state.SIZE, undo
            )
            self.guard: _posix.Guard | _posix.FailedGuard = guard
            version = _state.layout(self.mm)
            if version == 0:
                # A new name: claim it for a lock, under the guard (a semaphore may race).
                with self.guard.held():
                    if _state.layout(self.mm) == 0:
                        raw = _state.encode_name(name)
                        self.mm[_state.NAME_OFFSET : _state.NAME_OFFSET + len(raw)] = raw
                        _state.NAME_LEN.pack_into(self.mm, _state.NAME_LEN_OFFSET, len(raw))
                        _state.GENERATION.pack_into(self.mm, 0, _state.VERSION)
                    version = _state.layout(self.mm)
            if version == _state.SEMAPHORE_LAYOUT:
                raise LockKindError(name, _state.kind(self.mm), _state.LOCK_KIND)
            if version != _state.VERSION:
                raise LockError(
                    name,
                    f"its state record has layout version {version}, written by another "
                    f"aplock release (this one uses {_state.VERSION}); stop the processes "
                    "that use it and remove it with 'aplock clean NAME'",
                )
            self.sem = _posix.open_semaphore(name, self.names.semaphore, mode, 1)
            undo.callback(self.sem.close)
            self.token = _posix.open_semaphore(name, self.names.token, mode, 0)
            undo.callback(self.token.close)
            undo.pop_all()
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
        self._suspect: tuple[int, Identity] | None = None
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
        # Everything the record write needs is at hand before L is taken: a process
        # killed between taking L and writing R leaves the lock taken by nobody.
        words = self.words
        mm = self.mm
        me_words = self.me_words
        now = _now()
        try:
            sem.acquire(0)
        except _BusyError:
            return None
        except BaseException:
            sem.release()  # taken just before the exception
            raise
        before = words[_GEN_WORD]
        try:
            # publish(), written out: this is the uncontended path.
            try:
                _FAST_HOLD.pack_into(mm, _HOLD_AT, before + 1, now, me_words)
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
        words = self.words
        mm = self.mm
        me_words = self.me_words
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
            before = words[_GEN_WORD]
            try:
                # publish(), written out: the record is written as soon as L is ours.
                try:
                    _FAST_HOLD.pack_into(mm, _HOLD_AT, before + 1, _now(), me_words)
                finally:
                    self.token.release()
                generation = before + 1
                # A handler that runs once signals are unblocked may raise: if one is
                # pending, give the lock back rather than hand it to a caller that is
                # about to be interrupted.
                if old is not None and _posix.handled_signal_pending(old):
                    generation = None
                    words[_OWED_WORD] = before + 1
                    self.give_back(before)
            except BaseException:
                if words[_GEN_WORD] == before:
                    sem.release()
                elif generation is not None:
                    words[_OWED_WORD] = before + 1
                    self.give_back(before)
                raise
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
            _FAST_HOLD.pack_into(self.mm, _HOLD_AT, generation, now, self.me_words)
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
        short, a waiter settles the debt instead (``settle``).
        """
        with self.guard.held():
            if self._settle_intent():
                self._free_if_current(before + 1)

    def settle(self) -> None:
        """A waiter's chores: finish a section whose writer is gone, free an owed acquisition.

        Cheap unless there is an intent or a debt; never blocks (a busy guard: the next
        slice retries).
        """
        words = self.words
        owed = words[_OWED_WORD]
        if not words[_INTENT_WORD] and (owed == 0 or owed != words[_GEN_WORD]):
            return
        with self.guard.held(block=False) as got:
            if got and self._settle_intent():
                owed = words[_OWED_WORD]
                if owed != 0 and owed == words[_GEN_WORD]:
                    self._free_if_current(owed)

    def _free_if_current(self, generation: int) -> None:
        """Under the guard: free acquisition *generation* if it still holds the lock.

        Written like ``release``: a Python signal handler's exception may surface after
        any call even here (a signal delivered to another thread runs its handler on
        the main thread at the next check), so what a taken token obliges is done in a
        ``finally`` with no call before its one semaphore post.
        """
        words = self.words
        words[_INTENT_PID_WORD] = self.me
        words[_INTENT_WORD] = _GIVE_BACK | _TAKING | generation << 8
        took = True
        try:
            self.token.acquire(0)
        except _BusyError:
            took = False  # a releaser has it (and posts L), or a later holder is publishing
        finally:
            if took:
                words[_INTENT_WORD] = _GIVE_BACK | _TOOK | generation << 8
                if words[_GEN_WORD] == generation:
                    words[_PID_WORD] = 0
                    self.sem.release()
                else:
                    self.token.release()  # a later acquisition's token: put it back
            words[_INTENT_WORD] = 0

    def _remember_identity(self) -> None:
        me = identity()
        self.me, self.me_start, self.me_ns, self.me_key = me.pid, me.start, me.ns, me.key
        self.me_words = _state.pack_identity(me)

    def release(self) -> None:
        """Release the lock; ``LockNotHeldError`` if nobody holds it."""
        words = self.words
        if words[_KEY_WORD] == self.me_key:
            # This process's own acquisition, written out: this is the uncontended path.
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
        self.release_guarded()

    def release_guarded(self) -> None:
        """``release`` for any acquisition but this process's own, or a busy ``H``."""
        with self.guard.held():
            if not self._settle_intent() or not self._free():
                raise LockNotHeldError(
                    self.name,
                    "release() called but nobody holds it; release each acquisition exactly "
                    "once (use 'with lock:' to pair them)",
                )

    def _free(self) -> bool:
        """Under the guard: free the current acquisition; ``False`` if there is none.

        Exactly one of any number of racing releasers takes the token. Once taken, the
        release completes even if a signal handler's exception arrives right then (as in
        ``_free_if_current``); if this process dies inside, the next holder of the guard
        completes it (``_settle_intent``).
        """
        words = self.words
        words[_INTENT_PID_WORD] = self.me
        words[_INTENT_WORD] = _RELEASE | _TAKING | words[_GEN_WORD] << 8
        took = True
        try:
            self.token.acquire(0)
        except _BusyError:
            took = False
        finally:
            if took:
                words[_INTENT_WORD] = _RELEASE | _TOOK | words[_GEN_WORD] << 8
                words[_PID_WORD] = 0
                self.sem.release()
            words[_INTENT_WORD] = 0
        return took

    def _token_posted(self) -> bool:
        """Under the guard: whether ``H`` is posted (an acquisition is complete)."""
        if _HAS_VALUE:
            return bool(self.token.value)
        took = True
        try:
            self.token.acquire(0)
        except _BusyError:
            took = False
        finally:
            if took:
                self.token.release()  # first, whatever a signal handler raised meanwhile
        return took

    def _settle_intent(self) -> bool:
        """Under the guard: finish or undo the section of a writer that is gone.

        A section that had taken ``H`` for a release (phase ``TOOK``) is finished: that
        release happened. Anything else is undone: ``H`` goes back to the acquisition it
        came from, as if the section had never begun. Returns whether no intent is left;
        one that cannot be settled yet (see ``_holder_may_release``) stays for the
        recorded holder's process to settle, and the caller acts as if ``H`` were busy.
        """
        words = self.words
        word = words[_INTENT_WORD]
        if word == 0:
            return True
        kind, phase, target = Intent.decode(word)
        generation = words[_GEN_WORD]
        if phase == Intent.TOOK and kind != Intent.GIVE_BACK and generation != target:
            pass  # the acquisition it worked on has gone: the section was over
        elif phase == Intent.TOOK and (
            kind == Intent.RELEASE or (kind == Intent.GIVE_BACK and generation == target)
        ):
            # It held the current acquisition's token to free it: finish that, if that
            # acquisition is still the current one. The pid first, then the generation:
            # a publisher that took the L it had already posted writes both at once.
            if words[_PID_WORD] != 0 and words[_GEN_WORD] == target:
                words[_PID_WORD] = 0
                self.sem.release()
        elif self._token_posted() or words[_PID_WORD] == 0:
            pass  # it took no token, or the holder's own release has it
        elif self._holder_may_release():
            return False
        else:
            self.token.release()  # the token it took goes back to its acquisition
        words[_INTENT_WORD] = 0
        return True

    def _holder_may_release(self) -> bool:
        """Whether the recorded holder may be in its unguarded steps right now.

        Its own release (trywait ``H`` .. post ``L``) and its publishing (take ``L`` ..
        post ``H``) run without the guard, and only a process whose key is in ``R`` runs
        them. If that is another live process (or one that cannot be judged), it may
        be. If it is this process, its other threads are given ``OWN_THREADS_GRACE`` to
        finish such a step (they wait for nothing while in one) before the answer is no.
        """
        words = self.words
        pid = words[_PID_WORD]
        if pid == 0:
            return True  # cleared since the caller looked: its own release is under way
        if pid < 0 or words[_KEY_WORD] == 0:
            return False
        if words[_KEY_WORD] != self.me_key:
            return not is_proven_dead(self.snapshot().holder)
        if threading.active_count() == 1:
            return False
        seen = (self.token.value if _HAS_VALUE else 0, words[_PID_WORD], words[_GEN_WORD])
        end = time.monotonic() + OWN_THREADS_GRACE
        while time.monotonic() < end:
            time.sleep(sys.getswitchinterval())
            now = (self.token.value if _HAS_VALUE else 0, words[_PID_WORD], words[_GEN_WORD])
            if now != seen:
                return True  # another thread moved it: it was in such a step
        return False

    def locked(self) -> bool:
        """Whether some thread or process holds the lock now."""
        if _HAS_VALUE:
            return self.sem.value == 0
        return self.words[_PID_WORD] != 0

    def snapshot(self) -> _state.Snapshot:
        """One read of the state record."""
        return _state.read(self.mm)

    def _held_by(self) -> tuple[int, Identity]:
        snap = self.snapshot()
        return snap.generation, snap.holder

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
            if not got or not self._settle_intent():
                return None
            if self._held_by() != (seen.generation, seen.holder):
                return None
            if self._token_posted():
                return self._take_over(seen, post_token=False)
            return self._repair_half_done(seen)

    def _repair_half_done(self, seen: _state.Snapshot) -> Takeover | None:
        """``R`` names a dead process but ``H`` is 0: it died mid-acquire or mid-release."""
        words = self.words
        now = _now()
        took = True
        try:
            self.sem.acquire(0)
        except _BusyError:
            took = False
        finally:
            if took:  # the release had finished after all: a plain acquisition
                try:
                    _FAST_HOLD.pack_into(
                        self.mm, _HOLD_AT, words[_GEN_WORD] + 1, now, self.me_words
                    )
                finally:
                    self.token.release()
        if took:
            return Takeover(words[_GEN_WORD], 0, seen.generation)
        now = time.monotonic()
        held = (seen.generation, seen.holder)
        if self._suspect != held:
            self._suspect, self._suspect_since = held, now
            return None
        if now - self._suspect_since < STUCK_AFTER:
            return None
        self._suspect = None
        return self._take_over(seen, post_token=True)

    def _take_over(self, seen: _state.Snapshot, *, post_token: bool) -> Takeover:
        """Under the guard: become the holder of the dead holder's acquisition.

        One call writes the new holder and the recovery fields. With *post_token* (the
        dead holder's token was lost) the token is posted after it; if this process
        dies in between, ``R`` names it, dead, with ``H`` at 0, and the next waiter
        repairs that in turn.
        """
        generation = seen.generation + 1
        now = _now()
        try:
            _state.TAKEOVER.pack_into(
                self.mm,
                _HOLD_AT,
                generation,
                now,
                self.me_start,
                self.me_ns,
                self.me_key,
                self.me,
                seen.recoveries + 1,
                seen.pid,
                generation,
            )
        finally:
            if post_token:
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
            if not self._settle_intent() or state() != first:
                return False
            self.words[_PID_WORD] = 0
            self.sem.release()
        return True

    def hand_off(self, to: Identity | None) -> None:
        """Record *to* (or nobody: detached) as the holder of the current acquisition."""
        who = to or Identity(_state.DETACHED, 0, 0)
        words = self.words
        took = False
        with self.guard.held():
            if self._settle_intent():
                words[_INTENT_PID_WORD] = self.me
                words[_INTENT_WORD] = _HAND_OFF | _TAKING | words[_GEN_WORD] << 8
                took = True
                try:
                    self.token.acquire(0)
                except _BusyError:
                    took = False
                finally:
                    if took:
                        words[_INTENT_WORD] = _HAND_OFF | _TOOK | words[_GEN_WORD] << 8
                        try:
                            snap = self.snapshot()
                            _state.write_hold(self.mm, snap.generation, who, snap.acquired_at)
                        finally:
                            self.token.release()
                    words[_INTENT_WORD] = 0
        if not took:
            raise LockNotHeldError(
                self.name, "hand_off() needs the lock to be held; acquire it first"
            )

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
