"""The shared-memory record of a named semaphore: a header and a table of owned permits.

Layout (native byte order, every field an aligned 8-byte word; all zeros is a record
that no opener has claimed yet)::

    offset  field          meaning
    0       layout         ``record.SEMAPHORE_LAYOUT`` once claimed (written last)
    8       kind           1: ``Semaphore``, 2: ``BoundedSemaphore`` (``record.SEMAPHORE_KINDS``)
    16      value          the value it was created with
    24      extra          releases that found no permit held (``Semaphore`` only): the
                           semaphore has ``value + extra`` permits
    32      generation     fencing token of the latest acquisition (grows by 1 each time)
    40      recoveries     how many dead holders' permits were freed
    48      abandoned_pid  pid of the latest dead holder whose permit was freed
    80      name_len       length of the UTF-8 name at ``NAME_OFFSET`` (as in a lock's record)
    256     name           the user's name, whole
    4352    slots          ``CAPACITY`` slots of ``SLOT_WORDS`` words, one per held permit:

    slot word  field
    0          generation  of the acquisition that holds it
    1          acquired_at wall-clock time of that acquisition (for display)
    2          start       holder's process start time (``identity``)
    3          ns          holder's pid-namespace inode
    4          key         holder's process key
    5          pid         holder's pid; 0: the slot is free
    6          abandoned   in a free slot: the pid of the dead holder whose permit it was,
                           until an acquisition claims it (and is warned); else 0

Every permit is in exactly one place: a slot with a pid (held) or one of the free permits,
``value + extra - held``. All held slots lie below ``value + extra``, which never shrinks,
so a free slot is always found there while a permit is free. The slots are written only
under the guard, each change by one call (``CLAIM`` or ``FREE_DEAD``) or one word store,
so any prefix of a guarded section is a valid state (see ``aplock._posix.semaphore``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import record as _record
from .identity import Identity

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: The most permits a semaphore can have (``value`` plus releases above it).
CAPACITY = 1024
LAYOUT = _record.SEMAPHORE_LAYOUT
KIND_SEMAPHORE = 1
KIND_BOUNDED = 2
KIND_NAMES = _record.SEMAPHORE_KINDS

LAYOUT_WORD = 0
KIND_WORD = _record.SEMAPHORE_KIND_OFFSET // 8
VALUE_WORD = 2
EXTRA_WORD = 3
GENERATION_WORD = 4
RECOVERIES_WORD = 5
ABANDONED_PID_WORD = 6
NAME_LEN_OFFSET = _record.NAME_LEN_OFFSET
NAME_OFFSET = _record.NAME_OFFSET
#: The header words a claim zeroes before it writes its own (up to the name's length).
HEADER_WORDS = NAME_LEN_OFFSET // 8

SLOTS_OFFSET = NAME_OFFSET + _record.NAME_MAX_BYTES
SLOT_WORDS = 7
SLOT_BYTES = SLOT_WORDS * 8
SLOTS_WORD = SLOTS_OFFSET // 8
#: Word offsets within a slot.
S_GEN, S_AT, S_START, S_NS, S_KEY, S_PID, S_ABANDONED = range(SLOT_WORDS)
SIZE = 64 * 1024

#: A claim: generation, acquired_at, the holder's identity words, abandoned = 0.
CLAIM = struct.Struct(f"@Qd{_record.IDENTITY.size}sq")
#: Freeing a dead holder's slot, at its pid word: pid = 0, abandoned = the dead pid.
FREE_DEAD = struct.Struct("@qq")
_SLOT = struct.Struct("@QdQQqqq")
_HEADER = struct.Struct("@QQQQQQq")

assert SLOTS_OFFSET + CAPACITY * SLOT_BYTES <= SIZE
assert _SLOT.size == SLOT_BYTES


def slot_word(slot: int) -> int:
    """The index, in the record viewed as words, of *slot*'s first word."""
    return SLOTS_WORD + slot * SLOT_WORDS


def slot_offset(slot: int) -> int:
    """The byte offset of *slot*."""
    return SLOTS_OFFSET + slot * SLOT_BYTES


@dataclass(frozen=True, slots=True)
class Permit:
    """A held permit, as one read of the record shows it.

    Attributes:
        slot: its slot in the table.
        generation: the fencing token of the acquisition that holds it.
        holder: the holder's process.
        acquired_at: wall-clock time of the acquisition.
    """

    slot: int
    generation: int
    holder: Identity
    acquired_at: float


@dataclass(frozen=True, slots=True)
class Table:
    """One read of a semaphore's record (unguarded: for display and inspection).

    Attributes:
        kind: ``"semaphore"`` or ``"bounded semaphore"`` (``""`` if not claimed yet).
        value: the value it was created with.
        extra: releases that raised the count above *value*.
        generation: the latest acquisition's fencing token.
        recoveries: how many dead holders' permits were freed.
        abandoned_pid: the latest dead holder whose permit was freed (0: none).
        held: the held permits, oldest first.
        abandoned: free slots still marked with the dead holder whose permit they were.
    """

    kind: str
    value: int
    extra: int
    generation: int
    recoveries: int
    abandoned_pid: int
    held: tuple[Permit, ...]
    abandoned: tuple[int, ...] = ()

    @property
    def permits(self) -> int:
        """How many permits the semaphore has: ``value + extra``."""
        return self.value + self.extra

    @property
    def free(self) -> int:
        """How many permits are free."""
        return self.permits - len(self.held)


def read(buf: ReadableBuffer) -> Table:
    """Read a semaphore's record from a buffer of at least ``SIZE`` bytes."""
    layout, kind, value, extra, generation, recoveries, abandoned_pid = _HEADER.unpack_from(buf, 0)
    name = KIND_NAMES.get(kind, "unknown") if layout == LAYOUT else ""
    permits = min(value + extra, CAPACITY) if layout == LAYOUT else 0
    held: list[Permit] = []
    abandoned: list[int] = []
    for slot in range(permits):
        gen, at, start, ns, key, pid, dead = _SLOT.unpack_from(buf, slot_offset(slot))
        if pid:
            held.append(Permit(slot, gen, Identity(pid, start, ns, key), at))
        elif dead:
            abandoned.append(dead)
    held.sort(key=lambda permit: permit.generation)
    return Table(
        name, value, extra, generation, recoveries, abandoned_pid, tuple(held), tuple(abandoned)
    )
