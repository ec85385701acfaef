"""Handing an acquisition to another acquirer in this process, without freeing it.

When a task releases a lock (or a permit) that a task of the same event loop waits for,
the gate (``aplock._gate``) hands it over in the loop: the acquisition ends and a new
one of this process begins at once, without the OS object ever being free. Each
handover is a new acquisition, with the next generation (the fencing token stays
strictly increasing per acquisition) and a new acquisition time.

- lock: only an acquisition that ``R`` records as this process's (the unguarded
  release's condition): trywait ``H`` -> write ``R`` (the next generation, now, this
  process; one call) -> post ``H``. ``L`` stays taken. It is ``publish`` without the
  wait for ``L``, done by the process that holds ``L``: every prefix is a state the
  protocol already knows (``H`` taken by the holder's own unguarded step, or ``R``
  naming this process with ``H`` at 0, which a waiter repairs if this process dies
  there, as after a kill in ``release``).
- semaphore: under the guard, the slot of this process's latest acquisition is
  rewritten as a new claim (the generation bumped first, then the slot in one call,
  as ``claim`` does). The permit is never free, so ``W`` is not posted.

Either returns ``False`` when there is nothing of this process's to hand over; the
caller then releases as usual (which raises if nothing is held).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import ipc as _posix
from . import record as _record
from . import slots as _slots

if TYPE_CHECKING:
    from .handle import Handle
    from .semaphore import SemHandle

_BusyError = _posix.BusyError
_FAST_HOLD = _record.FAST_HOLD
_HOLD_AT = _record.HOLD_OFFSET
_GEN_WORD = _record.GENERATION_WORD
_KEY_WORD = _record.KEY_WORD
_CLAIM = _slots.CLAIM
_SEM_GEN = _slots.GENERATION_WORD
_now = time.time


def hand_over_lock(h: Handle) -> bool:
    """End this process's acquisition of the lock and begin the next one, ``L`` kept.

    Written like ``Handle.release``'s own path: once ``H`` is taken, what it obliges is
    done in a ``finally`` with no call before its post. A signal handler's exception once
    ``H`` is taken (the handover is then always completed) releases the new acquisition
    before it propagates: no task was granted it, and the release asked for happened.
    """
    words = h.words
    if words[_KEY_WORD] != h.me_key:
        return False  # not ours (or detached): a real release, guarded if need be
    token, mm, me_words = h.token, h.mm, h.me_words
    now = _now()
    took = True
    try:
        try:
            token.acquire(0)
        except _BusyError:
            took = False  # another releaser has it: our release finds out how it ended
        finally:
            if took:
                try:
                    _FAST_HOLD.pack_into(mm, _HOLD_AT, words[_GEN_WORD] + 1, now, me_words)
                finally:
                    token.release()
    except BaseException:
        if took:
            h.release()  # the new acquisition, which no task holds
        raise
    return took


def hand_over_permit(h: SemHandle) -> bool:
    """End this process's latest acquisition of a permit and begin the next one in its slot.

    A signal handler's exception as the guard is left (the commit done) gives the new
    acquisition back before it propagates: the release then happened, nothing leaks.
    """
    words = h.words
    slot = -1
    generation = 0
    try:
        with h.guard.held():
            slot = h.own_slot()
            if slot < 0:
                return False
            generation = words[_SEM_GEN] + 1
            words[_SEM_GEN] = generation  # first: a death right after only skips one
            _CLAIM.pack_into(h.mm, _slots.slot_offset(slot), generation, _now(), h.me_words, 0)
            h.mine.append((slot, generation))
    except BaseException:
        if generation:
            h.give_back(slot, generation)
        raise
    return True
