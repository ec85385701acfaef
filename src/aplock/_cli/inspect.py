"""Host-wide inspection of aplock locks and semaphores, for the ``aplock`` command (Linux).

Locks and semaphores are found through their state records in ``/dev/shm`` (the record
says which kind it is; a semaphore's is read by ``aplock._posix.slots``); the processes
that have one open are found through ``/proc/<pid>/maps`` (every handle maps its
record), so that ``clean`` never removes one that a running process still uses: that
process would keep the old objects while new openers got new ones, and the two would no
longer exclude each other.

Another user's lock (created with the default mode ``0o600``) is listed as *unreadable*
with its owner's uid, and a record of another aplock release's layout as unreadable with
its layout version; nothing about one lock can make the inspection of another fail.
A lock's run-once markers (the files of ``startup.FileMarker`` in its default directory)
and its leader file (see ``leaders``) belong to it: ``remove`` removes them with it. The
leader file is read before the record, and judged against it.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import stat
import struct
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from aplock import _names
from aplock._core import core_of
from aplock._filemarker import MARKER_INFIX, FileMarker
from aplock._posix import ipc as _posix
from aplock._posix import record as _state
from aplock._posix import slots as _slots
from aplock._posix.identity import is_proven_dead, judge
from aplock.errors import LockPermissionError, LockUnavailableError
from aplock.semaphore import BoundedSemaphore, Semaphore
from aplock.sync import Lock

from . import leaders as _leaders
from .files import read_regular

if TYPE_CHECKING:
    from .leaders import Leader

#: The kinds of object a record can hold, as ``HostLock.kind`` names them.
LOCK = _state.LOCK_KIND
SEMAPHORE_KINDS = frozenset(_slots.KIND_NAMES.values())


@dataclass(frozen=True, slots=True)
class Holder:
    """One process holding a lock or a semaphore's permit.

    Attributes:
        pid: the holder's pid.
        alive: whether it is alive (``False`` only on proof of death; ``None`` if it cannot
            be told, e.g. a process of another pid namespace).
        held_for: seconds since it acquired.
        generation: the fencing token of its acquisition.
    """

    pid: int
    alive: bool | None
    held_for: float
    generation: int


@dataclass(frozen=True, slots=True)
class HostLock:
    """One lock or semaphore found on this host.

    Attributes:
        name: the user's name (from the record, or as looked up; '' if unknown).
        base: the POSIX base name of its objects.
        locked: whether it is held (``None`` if unknown: the semaphore is missing or
            cannot be opened); for a semaphore, whether no permit is free (an
            ``acquire()`` would wait), as ``asyncio.Semaphore.locked()`` means it.
        holder_pid: recorded holder (``None`` if none or unknown, ``-1`` if detached);
            always ``None`` for a semaphore, whose holders are in *holders*.
        holder_alive: whether the holder is alive (``None`` if unknown or no holder).
        held_for: seconds since it was acquired (``None`` if free or unknown); for a
            semaphore, since its oldest held permit was.
        generation: fencing token of the latest acquisition (``None`` if unreadable).
        recoveries: how many abandoned acquisitions were taken over (``None`` if
            unreadable).
        users: pids of live processes that have it open (among those this user may see).
        stuck: held by nobody: a process died in mid-acquire or mid-release.
        owner_uid: the uid that owns its state record.
        mode: the permission bits of its state record (the lock's ``mode``).
        readable: whether its state record could be read and understood: another user's
            lock with the default mode cannot be read, and a record of another aplock
            release's layout is not understood.
        layout: the layout version of its state record (``None`` if it cannot be read).
        kind: ``"lock"``, ``"semaphore"`` or ``"bounded semaphore"`` (``""`` when its
            record cannot be read).
        value: a semaphore's value, the permits it was created with (``None`` for a lock).
        free: a semaphore's free permits (``None`` for a lock); more than *value* after
            extra releases of a ``Semaphore``.
        holders: the processes that hold it: a lock's one holder, a semaphore's permit
            holders, oldest first (a process that holds several permits appears once per
            permit).
        leader: its leader file, judged against its record (``None`` if it has none);
            ``leader.leading`` says that the lock is a leadership and its holder leads.
    """

    name: str
    base: str
    locked: bool | None
    holder_pid: int | None
    holder_alive: bool | None
    held_for: float | None
    generation: int | None
    recoveries: int | None
    users: tuple[int, ...]
    stuck: bool
    owner_uid: int
    mode: int
    readable: bool = True
    layout: int | None = _state.VERSION
    kind: str = LOCK
    value: int | None = None
    free: int | None = None
    holders: tuple[Holder, ...] = ()
    leader: Leader | None = None

    @property
    def is_semaphore(self) -> bool:
        """Whether it is a semaphore (of either kind)."""
        return self.kind in SEMAPHORE_KINDS

    @property
    def removable(self) -> bool:
        """Whether ``clean`` may remove it without ``--force``."""
        return owner_refusal(self) is None and use_refusal(self) is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["users"] = list(self.users)
        data["holders"] = [asdict(holder) for holder in self.holders]
        data["removable"] = self.removable
        data["leader"] = None if self.leader is None else self.leader.to_json()
        return data


def owner_refusal(lock: HostLock) -> str | None:
    """Why this user cannot remove *lock* at all, even with ``--force`` (``None``: it can).

    ``/dev/shm`` is sticky: only a file's owner (or root) may remove it.
    """
    me = os.geteuid()
    if me in (0, lock.owner_uid):
        return None
    return f"belongs to uid {lock.owner_uid}: clean it as that user or as root"


def use_refusal(lock: HostLock) -> str | None:
    """Why ``clean`` must not remove *lock* without ``--force`` (``None``: it may).

    Only root sees which processes of other users have a lock open: for anyone else, a
    lock whose mode lets other users open it may be in use unseen.
    """
    if not lock.readable:
        if lock.layout is None:
            return "its state record cannot be read"
        return f"its state record cannot be understood (layout version {lock.layout})"
    if lock.users:
        return f"open in pid {', '.join(map(str, lock.users))}"
    if lock.mode & 0o077 and os.geteuid() != 0:
        return (
            f"its mode {lock.mode:#o} lets other users open it, and only root sees their "
            "processes: clean it as root"
        )
    if lock.is_semaphore:
        return _semaphore_use_refusal(lock)
    if not lock.locked or lock.holder_alive is False:
        return None
    if lock.stuck:
        return "stuck: held by nobody (free it with 'aplock repair NAME')"
    if lock.holder_pid is None:
        return "held"
    if lock.holder_pid < 0:
        return "held, handed off to no process"
    if lock.holder_alive:
        return f"held by live pid {lock.holder_pid}"
    return f"held by pid {lock.holder_pid}, which cannot be proven dead"


def _semaphore_use_refusal(sem: HostLock) -> str | None:
    """Why a semaphore nobody has open may not be removed: a holder not proven dead."""
    live = sorted({h.pid for h in sem.holders if h.alive})
    if live:
        return f"permits held by live pid {', '.join(map(str, live))}"
    unknown = sorted({h.pid for h in sem.holders if h.alive is None})
    if unknown:
        return f"permits held by pid {', '.join(map(str, unknown))}, which cannot be proven dead"
    return None


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


def _read_record(entry: str) -> tuple[os.stat_result, bytes | None] | None:
    """``(stat, bytes)`` of a state record, bytes ``None`` if this user may not read it.

    ``None`` if the entry is gone, is not a regular file, or is not sized yet.
    """

    def whole(fd: int, st: os.stat_result) -> bytes | None:
        if st.st_size < _state.SIZE:
            return None  # not sized yet by its creator
        # A lock's record is _state.SIZE bytes, a semaphore's _slots.SIZE: read either whole.
        size = min(st.st_size, max(_state.SIZE, _slots.SIZE))
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mm:
            return bytes(mm)

    return read_regular(f"{_posix.SHM_DIR}/{entry}", whole)


def _lock_at(entry: str, users: dict[str, list[int]]) -> HostLock | None:
    """The lock whose record is *entry*, with its leader file (read first, see ``leaders``)."""
    base = _names.base_of_record(entry)
    leader = _leaders.read(base)
    lock = _record_at(entry, base, users)
    if lock is None or leader is None:
        return lock
    leader = _leaders.judged(
        leader,
        locked=lock.locked if lock.readable else None,
        holder_pid=lock.holder_pid,
        holder_alive=lock.holder_alive,
        generation=lock.generation,
    )
    return dataclasses.replace(lock, leader=leader)


def _record_at(entry: str, base: str, users: dict[str, list[int]]) -> HostLock | None:
    found = _read_record(entry)
    if found is None:
        return None
    st, raw = found
    opened = tuple(users.get(entry, ()))
    layout = None if raw is None else _state.layout(raw)
    kind = None if raw is None else _state.kind(raw)
    if raw is not None and (kind in SEMAPHORE_KINDS or layout in (0, _state.VERSION)):
        try:
            if kind in SEMAPHORE_KINDS:
                return _describe_semaphore(base, raw, opened, st)
            return _describe(base, raw, opened, st)
        except (OSError, ValueError, OverflowError, struct.error):
            pass  # not what this release writes, whatever its layout word says
    return HostLock(
        "",
        base,
        None,
        None,
        None,
        None,
        None,
        None,
        opened,
        False,
        st.st_uid,
        stat.S_IMODE(st.st_mode),
        readable=False,
        layout=layout,
        kind="",
    )


def scan() -> list[HostLock]:
    """Every aplock lock and semaphore on this host; those this user cannot read are
    marked so."""
    users = _users()
    found = []
    for entry in _posix.record_entries():
        if _names.is_record_name(entry):
            lock = _lock_at(entry, users)
            if lock is not None:
                found.append(lock)
    return found


def _describe(base: str, raw: bytes, users: tuple[int, ...], st: os.stat_result) -> HostLock:
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
    holders: tuple[Holder, ...] = ()
    if pid is not None and pid > 0 and held_for is not None:
        holders = (Holder(pid, alive, held_for, snap.generation),)
    return HostLock(
        _name_in(raw),
        base,
        locked,
        pid,
        alive,
        held_for,
        snap.generation,
        snap.recoveries,
        users,
        stuck,
        st.st_uid,
        stat.S_IMODE(st.st_mode),
        holders=holders,
    )


def _describe_semaphore(
    base: str, raw: bytes, users: tuple[int, ...], st: os.stat_result
) -> HostLock:
    """A semaphore's entry, from one read of its record (``slots.read``)."""
    table = _slots.read(raw)
    now = time.time()
    holders = tuple(
        Holder(p.holder.pid, judge(p.holder), max(now - p.acquired_at, 0.0), p.generation)
        for p in table.held
    )
    return HostLock(
        _name_in(raw),
        base,
        table.free <= 0,
        None,
        None,
        max((h.held_for for h in holders), default=None),
        table.generation,
        table.recoveries,
        users,
        False,  # a permit is always held by a recorded process or free: never stuck
        st.st_uid,
        stat.S_IMODE(st.st_mode),
        layout=_state.layout(raw),
        kind=table.kind,
        value=table.value,
        free=table.free,
        holders=holders,
    )


def _name_in(raw: bytes) -> str:
    """The user's name stored in a record ('' if undecodable: not written by aplock)."""
    try:
        return _state.read_name(raw)
    except ValueError:
        return ""


def find(name: str) -> HostLock | None:
    """The lock named *name*, or ``None`` if it does not exist on this host."""
    base = _names.posix_names(name, short=_posix.SHORT_NAMES).base
    lock = _lock_at(base + _names.RECORD_SUFFIX, _users())
    if lock is None:
        return None
    return lock if lock.name == name else dataclasses.replace(lock, name=name)


def repair(name: str, observe: float) -> bool:
    """Free the stuck lock *name* if it stays stuck for *observe* seconds."""
    lock = Lock(name)
    try:
        return core_of(lock).repair(observe)
    finally:
        lock.close()


def repair_semaphore(sem: HostLock) -> bool:
    """Free the permits of *sem*'s holders proven dead now; whether it freed any.

    It opens the semaphore as its record says (kind, value, mode), so that the check of
    the value passes, and never waits for a permit.
    """
    if not sem.is_semaphore or sem.value is None:
        raise ValueError(f"{sem.name!r} is not a readable semaphore: {sem.kind or 'unreadable'}")
    cls = BoundedSemaphore if sem.kind == _slots.KIND_NAMES[_slots.KIND_BOUNDED] else Semaphore
    opened = cls(sem.name, sem.value, mode=sem.mode)
    try:
        return core_of(opened).repair(0.0)
    finally:
        opened.close()


def marker_files(lock: HostLock) -> list[str]:
    """The paths of *lock*'s run-once markers in ``FileMarker``'s default directory.

    A ``FileMarker`` names each file ``<base of the lock>.once.<key>``; markers kept in
    a directory of the user's choice (``FileMarker(directory)``) are not found.
    """
    directory = FileMarker().directory
    prefix = f"{lock.base}{MARKER_INFIX}"
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, e) for e in entries if e.startswith(prefix))


@dataclass(frozen=True, slots=True)
class Removed:
    """What ``remove`` removed besides the lock's OS objects."""

    markers: list[str]
    leader_file: str | None


def remove(lock: HostLock) -> Removed:
    """Remove the lock's OS objects, then its run-once markers and its leader file (the
    one that was read: not one written since by a leader of a new lock of that name).

    Raises:
        LockPermissionError, LockUnavailableError: an object, a marker or the leader file
            could not be removed (it belongs to another user, say).
    """
    name = lock.name or lock.base
    _posix.unlink(name, _names.PosixNames(lock.base))
    removed = []
    for path in marker_files(lock):
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        except PermissionError as exc:
            raise LockPermissionError(
                name,
                f"removed the lock but not its run-once marker {path}: it belongs to another "
                "user; remove it as that user or as root",
                exc.errno,
            ) from None
        except OSError as exc:
            raise LockUnavailableError(
                name,
                f"removed the lock but not its run-once marker {path}: {exc.strerror or exc}",
                exc.errno,
            ) from None
        removed.append(path)
    leader_file = None
    if lock.leader is not None:
        try:
            if _leaders.remove(lock.leader, name):
                leader_file = lock.leader.path
        except (LockPermissionError, LockUnavailableError) as exc:
            raise type(exc)(name, f"removed the lock, but {exc.detail}", exc.errno) from None
    return Removed(removed, leader_file)
