"""Who a process is, and proof that a recorded process is dead.

A holder is recorded as ``(pid, start, ns)``: its process id, its start time in clock
ticks since boot (``/proc/<pid>/stat`` field 22, so a reused pid is not mistaken for the
holder) and the inode of its pid namespace (so that processes in other pid namespaces
that share ``/dev/shm`` are never judged by a pid that means something else here).

Where ``/proc`` is missing (macOS), ``start`` and ``ns`` are 0 and death is proven by the
pid alone; pid reuse is then not detected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    """A process as the state record stores it."""

    pid: int
    start: int
    ns: int


def _read_stat(pid: int) -> tuple[str, int] | None:
    """``(state, start ticks)`` of *pid* from ``/proc``, or ``None`` if it has no entry."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may contain anything: split after it.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode("ascii"), int(fields[19])


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _has_proc() -> bool:
    return os.path.exists("/proc/self/stat")


HAS_PROC = _has_proc()


def start_time(pid: int) -> int:
    """Start time of *pid* in clock ticks since boot, or 0 where unknown."""
    if not HAS_PROC:
        return 0
    try:
        stat = _read_stat(pid)
    except PermissionError:
        return 0
    return 0 if stat is None else stat[1]


_identity: Identity | None = None


def identity() -> Identity:
    """This process's identity (cached; recomputed in a forked child)."""
    global _identity
    if _identity is None:
        _identity = Identity(os.getpid(), start_time(os.getpid()), _pid_namespace())
    return _identity


def _forget_identity() -> None:
    global _identity
    _identity = None


os.register_at_fork(after_in_child=_forget_identity)


def identity_of(pid: int) -> Identity:
    """The identity of another live process, for handing a lock to it."""
    return Identity(pid, start_time(pid), identity().ns)


def is_proven_dead(who: Identity) -> bool:
    """Whether the recorded process *who* has certainly exited.

    ``False`` means "alive or cannot tell": a pid from another pid namespace, or an
    unrecorded holder, is never judged dead.
    """
    me = identity()
    if who.pid <= 0 or who.ns != me.ns:
        return False
    try:
        os.kill(who.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, and belongs to another user
    if not HAS_PROC:
        return False
    try:
        stat = _read_stat(who.pid)
    except PermissionError:
        return False  # /proc mounted with hidepid: cannot tell
    if stat is None:
        # The pid exists (kill said so) but /proc hides it, or it exited just now: not
        # proof; the next check's kill() will tell.
        return False
    state, start = stat
    return state in ("Z", "X", "x") or (who.start not in (0, start))
