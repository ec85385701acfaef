"""The shared-memory state record that lives beside each lock's semaphores.

Layout (native byte order, every field 8-byte aligned; all zeros is a valid free lock)::

    offset  field         meaning
    0       version       layout version (0 or 1)
    8       generation    fencing token of the latest acquisition (grows by 1 each time)
    16      start         holder's process start time, clock ticks since boot
    24      ns            holder's pid-namespace inode
    32      acquired_at   wall-clock time of the latest acquisition (for display)
    40      pid           holder pid: 0 = none, -1 = detached (handed off to nobody)
    48      recoveries    how many times a dead holder's lock was taken over
    56      abandoned_pid pid of the latest dead holder taken over
    64      recovered_gen generation of the acquisition that took it over
    72      name_len      length of the UTF-8 name that follows
    80      owed          generation of an acquisition whose acquire() raised and that
                          its process could not give back (see ``_handle``); it is
                          stale once ``generation`` has moved past it
    88      name          the user's lock name (for inspection), truncated to fit

Only the process that owns the lock's token writes ``generation`` .. ``pid``, and writes
them in that order, ``pid`` last: a reader that sees a pid sees the rest of its
acquisition once the token is published (see ``_handle``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._process import Identity

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

SIZE = 4096
VERSION = 1
DETACHED = -1

HOLD = struct.Struct("@QQQdq")  # generation, start, ns, acquired_at, pid
HOLD_OFFSET = 8
GENERATION = struct.Struct("@Q")
GENERATION_OFFSET = 8
PID = struct.Struct("@q")
PID_OFFSET = 40
#: Indexes of the fields in the record viewed as 64-bit words.
GENERATION_WORD = GENERATION_OFFSET // 8
PID_WORD = PID_OFFSET // 8
RECOVERY = struct.Struct("@QqQ")  # recoveries, abandoned_pid, recovered_gen
RECOVERY_OFFSET = 48
NAME_LEN = struct.Struct("@Q")
NAME_LEN_OFFSET = 72
OWED_WORD = 80 // 8
NAME_OFFSET = 88
NAME_MAX_BYTES = SIZE - NAME_OFFSET


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read of the record."""

    generation: int
    holder: Identity
    acquired_at: float
    recoveries: int
    abandoned_pid: int
    recovered_generation: int

    @property
    def pid(self) -> int:
        """The recorded holder pid (0: none, -1: detached)."""
        return self.holder.pid


def read(buf: ReadableBuffer) -> Snapshot:
    """Read the record from a buffer (an ``mmap`` or bytes)."""
    generation, start, ns, acquired_at, pid = HOLD.unpack_from(buf, HOLD_OFFSET)
    recoveries, abandoned, recovered = RECOVERY.unpack_from(buf, RECOVERY_OFFSET)
    holder = Identity(pid, start, ns)
    return Snapshot(generation, holder, acquired_at, recoveries, abandoned, recovered)


def encode_name(name: str) -> bytes:
    """The record's copy of *name*: UTF-8, cut at a character boundary to fit."""
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= NAME_MAX_BYTES:
        return raw
    return raw[:NAME_MAX_BYTES].decode("utf-8", "ignore").encode("utf-8")


def read_name(buf: ReadableBuffer) -> str:
    """The user's name stored in the record ('' if it was never written)."""
    (length,) = NAME_LEN.unpack_from(buf, NAME_LEN_OFFSET)
    length = min(length, NAME_MAX_BYTES)
    raw = bytes(memoryview(buf)[NAME_OFFSET : NAME_OFFSET + length])
    return raw.decode("utf-8", "surrogatepass")
