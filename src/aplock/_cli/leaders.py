"""The leader files on this host, for the ``aplock`` command: read, judged, removed.

A leader through an aplock lock (``aplock.leader``) writes ``<base of the lock>.leader``
beside the lock's objects in ``/dev/shm`` (``aplock._leader_sides.LeaderFile``): one
line of JSON with the lock's ``name``, the leader's ``pid``, ``since`` (Unix time) and
``token``. The lock's record stays the truth about who holds the lock; the file only
says that its holder leads. A file is *stale* when its lock is gone, when its pid is
dead or does not hold the lock, or when its token is not the lock's latest acquisition:
a leader that was killed leaves its file behind until the next leader replaces it.

A lock's leader file is read before its record. A leader writes its file only while it
holds the lock, and removes it before it releases, so a file judged stale against a
record read after it was stale when it was read. And it is removed only if it is still
the file that was read: a leader replaces its file (a new inode), never rewrites it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any, TypeGuard

from aplock import _names
from aplock._leader_sides import LEADER_SUFFIX
from aplock._posix import ipc as _posix
from aplock._posix.identity import Identity, identity, judge
from aplock.errors import LockPermissionError, LockUnavailableError

from .files import read_regular

#: The most a leader file is read of: a record with the longest name, escaped, fits.
MAX_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Leader:
    """A leader file and what it says, judged against its lock.

    Attributes:
        path: the file.
        owner_uid: the uid that owns it.
        name: the lock's name as the file gives it ('' if it cannot be read).
        pid: the leader's pid (``None``: the file cannot be read, or is no leader record).
        since: when its term began, a Unix time (``None`` likewise).
        token: its term's fencing token (``None`` if it has none or cannot be read).
        alive: whether *pid* is alive (``False`` only on proof of death; ``None`` if it
            cannot be told).
        stale: whether the file no longer names the lock's leader (``None`` if it cannot
            be told: the file or the lock's record cannot be read).
        stale_reason: why it is stale (``None`` unless *stale*).
        file_id: ``(st_dev, st_ino)`` of the file that was read, so that only that file
            is removed.
    """

    path: str
    owner_uid: int
    name: str
    pid: int | None
    since: float | None
    token: int | None
    alive: bool | None = None
    stale: bool | None = None
    stale_reason: str | None = None
    file_id: tuple[int, int] = (0, 0)

    @property
    def leading(self) -> bool:
        """Whether the file names the lock's live holder: the lock is a leadership."""
        return self.stale is False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (without *file_id*)."""
        data = dataclasses.asdict(self)
        del data["file_id"]
        return data


def path_of(base: str) -> str:
    """The path of the leader file of the lock whose POSIX base name is *base*."""
    return os.path.join(_posix.SHM_DIR, f"{base}{LEADER_SUFFIX}")


def is_leader_name(entry: str) -> bool:
    """Whether a ``/dev/shm`` entry is named as a leader file."""
    return entry.startswith(_names.PREFIX) and entry.endswith(LEADER_SUFFIX)


def read(base: str) -> Leader | None:
    """The leader file of the lock *base*, not judged yet; ``None`` if there is none.

    A file this user may not read, or that holds no leader record, is returned with
    *pid* ``None``; a FIFO or a link of that name is no leader file.
    """
    path = path_of(base)
    found = read_regular(path, lambda fd, st: os.read(fd, MAX_SIZE + 1))
    if found is None:
        return None
    st, data = found
    unread = Leader(path, st.st_uid, "", None, None, None, file_id=(st.st_dev, st.st_ino))
    if data is None or len(data) > MAX_SIZE:
        return unread
    try:
        record = json.loads(data.decode("utf-8", "surrogatepass"))
    except ValueError:
        return unread
    if not isinstance(record, dict):
        return unread
    pid: object = record.get("pid")
    since: object = record.get("since")
    token: object = record.get("token")
    name: object = record.get("name")
    if not (_is_int(pid) and pid > 0 and _is_number(since)):
        return unread
    if not (token is None or _is_int(token)):
        return unread
    name = name if isinstance(name, str) else ""
    return Leader(path, st.st_uid, name, pid, float(since), token, file_id=unread.file_id)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def _alive(pid: int) -> bool | None:
    """Whether *pid*, a process of this pid namespace as far as can be told, is alive."""
    return judge(Identity(pid, 0, identity().ns))


def judged(
    leader: Leader,
    *,
    locked: bool | None,
    holder_pid: int | None,
    holder_alive: bool | None,
    generation: int | None,
) -> Leader:
    """*leader* judged against its lock's record, read after the file.

    *locked* is ``None`` when the lock's state cannot be told (its record cannot be
    read); the holder and generation are the record's (*holder_pid* ``None`` when no
    process is recorded as holding it).
    """
    pid = leader.pid
    if pid is None:
        return leader
    if pid != holder_pid or locked is None:
        alive = _alive(pid)
        if alive is False:
            return _stale(leader, alive, f"pid {pid} is dead")
        if locked is None:
            return dataclasses.replace(leader, alive=alive, stale=None, stale_reason=None)
        if not locked:
            return _stale(leader, alive, "the lock is free")
        return _stale(leader, alive, f"pid {pid} does not hold the lock")
    if holder_alive is False:
        return _stale(leader, False, f"pid {pid} is dead")
    if leader.token is not None and generation is not None and leader.token != generation:
        return _stale(
            leader,
            holder_alive,
            f"token {leader.token} is not the lock's latest acquisition (generation {generation})",
        )
    return dataclasses.replace(leader, alive=holder_alive, stale=False, stale_reason=None)


def _stale(leader: Leader, alive: bool | None, why: str) -> Leader:
    return dataclasses.replace(leader, alive=alive, stale=True, stale_reason=why)


def _without_lock(base: str) -> Leader | None:
    """The leader file of *base* if its lock's record is gone (checked after the read)."""
    leader = read(base)
    if leader is None or os.path.lexists(
        os.path.join(_posix.SHM_DIR, f"{base}{_names.RECORD_SUFFIX}")
    ):
        return None
    alive = None if leader.pid is None else _alive(leader.pid)
    return _stale(leader, alive, "its lock is gone")


def without_lock() -> list[Leader]:
    """Every leader file on this host whose lock is gone (stale, whatever it says)."""
    found = []
    for entry in _posix.record_entries():
        if is_leader_name(entry):
            leader = _without_lock(entry.removesuffix(LEADER_SUFFIX))
            if leader is not None:
                found.append(leader)
    return found


def without_lock_named(name: str) -> Leader | None:
    """The leader file of the lock *name* if that lock is gone."""
    return _without_lock(_names.posix_names(name, short=_posix.SHORT_NAMES).base)


def owner_refusal(leader: Leader) -> str | None:
    """Why this user cannot remove *leader* (``None``: it can); ``/dev/shm`` is sticky."""
    if os.geteuid() in (0, leader.owner_uid):
        return None
    return f"belongs to uid {leader.owner_uid}: remove it as that user or as root"


def remove(leader: Leader, label: str) -> bool:
    """Remove the leader file if it is still the one that was read; whether it was.

    Raises:
        LockPermissionError, LockUnavailableError: it could not be removed; the error
            names *label*.
    """
    try:
        st = os.stat(leader.path, follow_symlinks=False)
        if (st.st_dev, st.st_ino) != leader.file_id:
            return False  # replaced since it was read: a later leader's
        os.unlink(leader.path)
    except FileNotFoundError:
        return False
    except PermissionError as exc:
        raise LockPermissionError(
            label,
            f"could not remove the leader file {leader.path}: it belongs to another user; "
            "remove it as that user or as root",
            exc.errno,
        ) from None
    except OSError as exc:
        raise LockUnavailableError(
            label,
            f"could not remove the leader file {leader.path}: {exc.strerror or exc}",
            exc.errno,
        ) from None
    return True
