"""The shared-memory state record that lives beside each lock's semaphores.

Layout (native byte order, every field 8-byte aligned; all zeros is a valid free lock)::

    offset  field         meaning
    0       version       layout version (0 or 2)
    8       generation    fencing token of the latest acquisition (grows by 1 each time)
    16      acquired_at   wall-clock time of the latest acquisition (for display)
    24      start         holder's process start time, clock ticks since boot
    32      ns            holder's pid-namespace inode
    40      key           holder's process key: a random word of its own, 0 if unknown
    48      pid           holder pid: 0 = none, -1 = detached (handed off to nobody)
    56      recoveries    how many times a dead holder's lock was taken over
    64      abandoned_pid pid of the latest dead holder taken over
    72      recovered_gen generation of the acquisition that took it over
    80      name_len      length of the UTF-8 name stored at ``NAME_OFFSET``
    88      owed          generation of an acquisition whose acquire() raised and that
                          its process could not give back (see ``_handle``); it is
                          stale once ``generation`` has moved past it
    96      intent        the guarded section in progress: kind | phase << 8 (0: none)
    104     intent_pid    pid of the process that wrote the intent (for display)
    112     (reserved)
    256     name          the user's lock name, whole (at most ``NAME_MAX_BYTES``)

Only the process that owns the lock's token writes ``generation`` .. ``pid``, and writes
them with one call (the holder's four words are one 32-byte copy, ``IDENTITY``): a
reader that sees the token posted sees the whole acquisition (see ``_handle``). A
take-over writes them together with the recovery fields, in one call as well.
``intent`` is written and read only under the guard (``Intent`` says what each value
means).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aplock._names import MAX_LENGTH

from .identity import Identity

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

SIZE = 8192
VERSION = 2
DETACHED = -1

HOLD = struct.Struct("@QdQQqq")  # generation, acquired_at, start, ns, key, pid
HOLD_OFFSET = 8
#: The holder's words (start, ns, key, pid): packed once per process, copied per acquire.
IDENTITY = struct.Struct("@QQqq")
#: The hot path's write: generation, acquired_at and the holder's packed identity.
FAST_HOLD = struct.Struct(f"@Qd{IDENTITY.size}s")
#: A take-over: the hold fields and the recovery fields, in one call.
TAKEOVER = struct.Struct("@QdQQqqQqQ")
GENERATION = struct.Struct("@Q")
GENERATION_OFFSET = 8
PID_OFFSET = 48
#: Indexes of the fields in the record viewed as 64-bit words.
GENERATION_WORD = GENERATION_OFFSET // 8
START_WORD = 24 // 8
NS_WORD = 32 // 8
KEY_WORD = 40 // 8
PID_WORD = PID_OFFSET // 8
RECOVERY = struct.Struct("@QqQ")  # recoveries, abandoned_pid, recovered_gen
RECOVERY_OFFSET = 56
NAME_LEN = struct.Struct("@Q")
NAME_LEN_OFFSET = 80
OWED_WORD = 88 // 8
INTENT_WORD = 96 // 8
INTENT_PID_WORD = 104 // 8
NAME_OFFSET = 256
#: Room for the longest name (``_names.MAX_LENGTH`` characters) in UTF-8.
NAME_MAX_BYTES = 4 * MAX_LENGTH


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read of the record."""

    generation: int
    holder: Identity
    acquired_at: float
    recoveries: int
    abandoned_pid: int
    recovered_generation: int
    intent: int = 0
    intent_pid: int = 0

    @property
    def pid(self) -> int:
        """The recorded holder pid (0: none, -1: detached)."""
        return self.holder.pid


def read(buf: ReadableBuffer) -> Snapshot:
    """Read the record from a buffer (an ``mmap`` or bytes)."""
    generation, acquired_at, start, ns, key, pid = HOLD.unpack_from(buf, HOLD_OFFSET)
    recoveries, abandoned, recovered = RECOVERY.unpack_from(buf, RECOVERY_OFFSET)
    intent, intent_pid = struct.unpack_from("@qq", buf, INTENT_WORD * 8)
    holder = Identity(pid, start, ns, key)
    return Snapshot(
        generation, holder, acquired_at, recoveries, abandoned, recovered, intent, intent_pid
    )


#: Where the first layout (version word 0) kept the name's length, always set once opened.
_FIRST_LAYOUT_NAME_LEN = 72


def layout(buf: ReadableBuffer) -> int:
    """The layout version of a record: ``VERSION``, 0 (never written yet) or an older one.

    The first layout left its version word at 0 but always stored the name's length at
    offset 72, where this layout keeps ``recovered_gen``, which is 0 until the version
    word has been written.
    """
    (version,) = GENERATION.unpack_from(buf, 0)
    if version == 0 and GENERATION.unpack_from(buf, _FIRST_LAYOUT_NAME_LEN)[0] != 0:
        return 1
    return int(version)


#: The layout word of a semaphore's record (``aplock._posix.slots``). A lock refuses it,
#: and so does a release of aplock that knows only locks (to it, an unknown layout).
SEMAPHORE_LAYOUT = 0x53454D41_00000001
#: Where a semaphore's record says which semaphore it is (``SEMAPHORE_KINDS``).
SEMAPHORE_KIND_OFFSET = 8
SEMAPHORE_KINDS = {1: "semaphore", 2: "bounded semaphore"}
LOCK_KIND = "lock"


def kind(buf: ReadableBuffer) -> str:
    """What a record holds: ``"lock"``, ``"semaphore"``, ``"bounded semaphore"``, ``""``.

    ``""`` is a record that no opener has claimed yet (its layout word is still 0); any
    other layout is ``"unknown"``. Claims are made under the guard, layout word last.
    """
    version = layout(buf)
    if version == VERSION:
        return LOCK_KIND
    if version == SEMAPHORE_LAYOUT:
        (word,) = GENERATION.unpack_from(buf, SEMAPHORE_KIND_OFFSET)
        return SEMAPHORE_KINDS.get(word, "unknown")
    return "" if version == 0 else "unknown"


def pack_identity(who: Identity) -> bytes:
    """*who* as the holder's words of the record (see ``FAST_HOLD``)."""
    return IDENTITY.pack(who.start, who.ns, who.key, who.pid)


def write_hold(buf: WriteableBuffer, generation: int, who: Identity, acquired_at: float) -> None:
    """Record *who* as the holder of acquisition *generation* (one call)."""
    FAST_HOLD.pack_into(buf, HOLD_OFFSET, generation, acquired_at, pack_identity(who))


def encode_name(name: str) -> bytes:
    """The record's copy of *name*: its UTF-8 bytes (a validated name always fits)."""
    return name.encode("utf-8", "surrogatepass")


def read_name(buf: ReadableBuffer) -> str:
    """The user's name stored in the record ('' if it was never written)."""
    (length,) = NAME_LEN.unpack_from(buf, NAME_LEN_OFFSET)
    length = min(length, NAME_MAX_BYTES)
    raw = bytes(memoryview(buf)[NAME_OFFSET : NAME_OFFSET + length])
    return raw.decode("utf-8", "surrogatepass")


class Intent:
    """The values of ``R.intent``: ``kind | phase | generation << 8``.

    Kinds: ``RELEASE`` frees the current acquisition; ``GIVE_BACK`` frees acquisition
    *generation* if it is still current and otherwise puts back the token it took;
    ``HAND_OFF`` rewrites the holder of acquisition *generation* and puts the token back.
    Phases: ``TAKING``, the writer is about to trywait ``H`` (*generation* is a hint);
    ``TOOK``, ``H`` is the writer's (*generation* is the acquisition it belongs to).
    """

    RELEASE = 1
    GIVE_BACK = 2
    HAND_OFF = 3
    TAKING = 0x10
    TOOK = 0x20

    @staticmethod
    def encode(kind: int, phase: int, generation: int) -> int:
        """The record word for *kind* in *phase* on *generation*."""
        return kind | phase | generation << 8

    @staticmethod
    def decode(word: int) -> tuple[int, int, int]:
        """``(kind, phase, generation)`` of a record word."""
        return word & 0x0F, word & 0xF0, word >> 8
