"""Who a process is, and proof that a recorded process is dead.

A holder is recorded as ``(pid, start, ns, key)``: its process id, its start time in
clock ticks since boot (``/proc/<pid>/stat`` field 22, so a reused pid is not mistaken
for the holder), the inode of its pid namespace (so that processes in other pid
namespaces that share ``/dev/shm`` are never judged by a pid that means something else
here), and a random word of its own (``key``) that lets a process recognise its own
acquisitions with one comparison, whatever pid other processes have.

``/proc`` is trusted only when it is this pid namespace's own: ``/proc/self`` names our
own pid. A pid namespace that sees another namespace's ``/proc`` (``unshare -p -f``
without ``--mount-proc``, a container given the host's ``/proc``) would read some other
process's entry for a pid; there a holder's death is proven only by ``kill(pid, 0)``
failing with ``ESRCH``, and a reused pid or a zombie holder is taken for alive.

Where ``/proc`` is missing (macOS), ``start`` and ``ns`` are 0 and death is proven by the
pid alone; pid reuse is then not detected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    """A process as the state record stores it (``key`` 0: not known)."""

    pid: int
    start: int
    ns: int
    key: int = 0


def _read_stat(pid: int | str) -> tuple[str, int] | None:
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


def _proc_is_ours() -> bool:
    """Whether ``/proc`` shows this pid namespace (``/proc/self`` is our own pid)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


HAS_PROC = _has_proc()


def start_time(pid: int) -> int:
    """Start time of *pid* in clock ticks since boot, or 0 where unknown."""
    if not HAS_PROC or not _trusted():
        return 0
    try:
        stat = _read_stat(pid)
    except PermissionError:
        return 0
    return 0 if stat is None else stat[1]


def _own_start() -> int:
    """This process's start time, from ``/proc/self`` (right whosever ``/proc`` it is)."""
    if not HAS_PROC:
        return 0
    try:
        stat = _read_stat("self")
    except PermissionError:
        return 0
    return 0 if stat is None else stat[1]


def _new_key() -> int:
    """A random, non-zero, positive 63-bit word."""
    return int.from_bytes(os.urandom(8), "little") >> 1 or 1


_identity: Identity | None = None
_proc_trusted: bool | None = None


def _trusted() -> bool:
    global _proc_trusted
    if _proc_trusted is None:
        _proc_trusted = HAS_PROC and _proc_is_ours()
    return _proc_trusted


def identity() -> Identity:
    """This process's identity (cached; recomputed in a forked child)."""
    global _identity
    if _identity is None:
        _identity = Identity(os.getpid(), _own_start(), _pid_namespace(), _new_key())
    return _identity


def _forget_identity() -> None:
    global _identity, _proc_trusted
    _identity = None
    _proc_trusted = None


os.register_at_fork(after_in_child=_forget_identity)


def identity_of(pid: int) -> Identity:
    """The identity of another live process, for handing a lock to it (key unknown)."""
    return Identity(pid, start_time(pid), identity().ns)


def judge(who: Identity) -> bool | None:
    """Whether the recorded process *who* is alive: ``False`` only on proof of death.

    ``None`` means it cannot be told: no holder recorded (pid 0 or detached), or a
    process of another pid namespace.
    """
    me = identity()
    if who.pid <= 0 or who.ns != me.ns:
        return None
    try:
        os.kill(who.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, and belongs to another user
    if not HAS_PROC or not _trusted():
        return True  # the pid exists here; reuse and zombies cannot be told
    try:
        stat = _read_stat(who.pid)
    except PermissionError:
        return True  # /proc mounted with hidepid: cannot tell
    if stat is None:
        # The pid exists (kill said so) but /proc hides it, or it exited just now: not
        # proof; the next check's kill() will tell.
        return True
    state, start = stat
    return not (state in ("Z", "X", "x") or (who.start not in (0, start)))


def is_proven_dead(who: Identity) -> bool:
    """Whether the recorded process *who* has certainly exited.

    ``False`` means "alive or cannot tell": a pid from another pid namespace, or an
    unrecorded holder, is never judged dead.
    """
    return judge(who) is False
