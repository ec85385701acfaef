"""Host-wide inspection of aplock locks, for the ``aplock`` command (Linux).

Locks are found through their state records in ``/dev/shm``; the processes that have a
lock open are found through ``/proc/<pid>/maps`` (every handle maps its record), so that
``clean`` never removes a lock that a running process still uses: that process would
keep the old objects while new openers got new ones, and the two would no longer
exclude each other.
"""

from __future__ import annotations

import mmap
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from . import _names, _posix, _state
from ._process import is_proven_dead
from .sync import Lock


@dataclass(frozen=True, slots=True)
class HostLock:
    """One lock found on this host.

    Attributes:
        name: the user's name (from the record; '' if it was never written).
        base: the POSIX base name of its objects.
        locked: whether it is held (``None`` if the semaphore is missing).
        holder_pid: recorded holder (``None`` if none, ``-1`` if detached).
        holder_alive: whether the holder is alive (``None`` if unknown or no holder).
        held_for: seconds since it was acquired (``None`` if free).
        generation: fencing token of the latest acquisition.
        recoveries: how many abandoned acquisitions were taken over.
        users: pids of live processes that have it open.
        stuck: held by nobody: a process died in mid-acquire or mid-release.
    """

    name: str
    base: str
    locked: bool | None
    holder_pid: int | None
    holder_alive: bool | None
    held_for: float | None
    generation: int
    recoveries: int
    users: tuple[int, ...]
    stuck: bool

    @property
    def removable(self) -> bool:
        """Whether ``clean`` may remove it without ``--force``."""
        return not self.users and (not self.locked or self.holder_alive is False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["users"] = list(self.users)
        data["removable"] = self.removable
        return data


def _users() -> dict[str, list[int]]:
    """Record entry -> pids of other live processes that map it."""
    found: dict[str, list[int]] = {}
    me = os.getpid()
    marker = f"{_posix.SHM_DIR}/{_names.PREFIX}"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/maps", encoding="utf-8", errors="replace") as f:
                maps = f.read()
        except OSError:
            continue
        for line in maps.splitlines():
            at = line.find(marker)
            if at >= 0:
                path = line[at:].removesuffix(" (deleted)")
                found.setdefault(os.path.basename(path), []).append(int(entry))
    return {k: sorted(set(v)) for k, v in found.items()}


def _read_record(entry: str) -> bytes | None:
    try:
        fd = os.open(f"{_posix.SHM_DIR}/{entry}", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size < _state.SIZE:
            return None
        with mmap.mmap(fd, _state.SIZE, prot=mmap.PROT_READ) as mm:
            return bytes(mm)
    finally:
        os.close(fd)


def scan() -> list[HostLock]:
    """Every aplock lock on this host that this user can read."""
    users = _users()
    found = []
    for entry in _posix.record_entries():
        if not _names.is_record_name(entry):
            continue
        raw = _read_record(entry)
        if raw is None:
            continue
        base = _names.base_of_record(entry)
        found.append(_describe(base, raw, tuple(users.get(entry, ()))))
    return found


def _describe(base: str, raw: bytes, users: tuple[int, ...]) -> HostLock:
    snap = _state.read(raw)
    names = _names.PosixNames(base)
    values = _posix.peek_values(names.semaphore, names.token)
    locked = None if values is None else values[0] == 0
    stuck = values is not None and values == (0, 0)
    pid = snap.pid if (locked or locked is None) and snap.pid != 0 else None
    alive = None
    if pid is not None and pid > 0:
        alive = not is_proven_dead(snap.holder)
    held_for = max(time.time() - snap.acquired_at, 0.0) if locked and snap.pid else None
    return HostLock(
        _state.read_name(raw),
        base,
        locked,
        pid,
        alive,
        held_for,
        snap.generation,
        snap.recoveries,
        users,
        stuck,
    )


def find(name: str) -> HostLock | None:
    """The lock named *name*, or ``None`` if it does not exist on this host."""
    base = _names.posix_names(name, short=_posix.SHORT_NAMES).base
    for lock in scan():
        if lock.base == base:
            return lock
    return None


def repair(name: str, observe: float) -> bool:
    """Free the stuck lock *name* if it stays stuck for *observe* seconds."""
    lock = Lock(name)
    try:
        return lock._h.repair_stuck(observe)
    finally:
        lock.close()


def remove(lock: HostLock) -> None:
    """Remove the lock's OS objects."""
    _posix.unlink(lock.name or lock.base, _names.PosixNames(lock.base))
