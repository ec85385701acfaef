"""The ``aplock`` command: inspect and clean the locks and semaphores on this host, and
their leaders' files, or run the demo.

Exit status: 0 success, including a sweep (``clean`` with no names) that left locks in use
in place; 1 a named lock or semaphore does not exist, ``clean NAME`` or ``repair``
refused (it is in use, belongs to another user, or has nothing to repair), or removing
something failed; 2 bad usage (an empty name, say).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aplock._names import validate
from aplock._posix import fastpath as _fastpath
from aplock._version import __version__
from aplock.errors import LockError

from . import demo as _demo
from . import inspect as _inspect
from . import leaders as _leaders

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .leaders import Leader

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

REPAIR_HELP = (
    "free a stuck lock (taken, but by nobody: a process died mid-acquire or mid-release), "
    "or the permits of a semaphore's dead holders, in place, without restarting its users"
)
REPAIR_DESCRIPTION = (
    "Free a stuck lock (taken, but by nobody: a process died mid-acquire or mid-release) "
    "in place, without restarting its users. repair observes the stuck state (both of the "
    "lock's semaphores at 0, no live holder recorded) unchanged for --observe seconds, "
    "then frees the lock. A semaphore is never stuck: given one, repair frees at once the "
    "permits of its holders proven dead (the next waiter would free them within its "
    "recovery interval), which needs no observation and never robs a live holder. It is "
    "safe unless a user of the lock is paused (SIGSTOP, a debugger) during the observation "
    "right between taking the lock semaphore and recording itself, or, in a release, "
    "between clearing its record and posting the semaphore: when it resumes, two "
    "processes can hold the lock."
)


def _printable(text: str) -> str:
    """*text* with every character a terminal would not print as such escaped, as repr does."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def _label(lock: _inspect.HostLock) -> str:
    return repr(lock.name or lock.base)


#: How many of a semaphore's holding processes the HOLDER column names (``x2``: a
#: process that holds two permits).
HOLDERS_SHOWN = 3
_ALIVE = {True: "alive", False: "DEAD", None: "?"}


def _holder(lock: _inspect.HostLock) -> str:
    if lock.is_semaphore:
        if not lock.holders:
            return "-"
        permits: dict[int, list[_inspect.Holder]] = {}
        for h in lock.holders:
            permits.setdefault(h.pid, []).append(h)
        shown = [
            f"{pid} ({_ALIVE[held[0].alive]})" + (f" x{len(held)}" if len(held) > 1 else "")
            for pid, held in list(permits.items())[:HOLDERS_SHOWN]
        ]
        more = len(permits) - HOLDERS_SHOWN
        return ", ".join(shown) + (f" +{more} more" if more > 0 else "")
    if lock.holder_pid is None:
        return "-"
    if lock.holder_pid < 0:
        return "detached"
    return f"{lock.holder_pid} ({_ALIVE[lock.holder_alive]})"


def _state(lock: _inspect.HostLock) -> str:
    if not lock.readable:
        if lock.layout is None:
            return f"unreadable (uid {lock.owner_uid})"
        return f"unreadable (layout {lock.layout})"
    if lock.is_semaphore:
        return f"{lock.free}/{lock.value} free"
    if lock.locked is None:
        return "?"
    if lock.stuck:
        return "stuck"
    return "held" if lock.locked else "free"


def _since(when: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    except (OverflowError, OSError, ValueError):
        return f"{when:.0f}"


def _unreadable(leader: Leader) -> str:
    if os.geteuid() in (0, leader.owner_uid):
        return "not a leader record"
    return f"unreadable (uid {leader.owner_uid})"


def _term(leader: Leader) -> str:
    """``token 7, since 2025-01-02 10:42:07`` (of a readable leader file)."""
    token = "-" if leader.token is None else str(leader.token)
    since = "-" if leader.since is None else _since(leader.since)
    return f"token {token}, since {since}"


def _facts(leader: Leader) -> str:
    """``pid 18148, token 7, since 2025-01-02 10:42:07`` (of a readable leader file)."""
    return f"pid {leader.pid}, {_term(leader)}"


def _leader_cell(leader: Leader | None) -> str:
    """The LEADER column: the leader's pid, token and start, or why its file is stale."""
    if leader is None:
        return "-"
    if leader.pid is None:
        return _unreadable(leader)
    if leader.stale:
        return f"stale: {leader.stale_reason}"
    mark = "" if leader.stale is False else " (?)"
    return f"{leader.pid}{mark}, {_term(leader)}"


def _leader_line(leader: Leader) -> str:
    """One line on a lock's leader file, for ``show``."""
    if leader.pid is None:
        return f"leader file {leader.path}: {_unreadable(leader)}"
    if leader.stale:
        return (
            f"stale leader file: {leader.stale_reason} (it names {_facts(leader)}); {leader.path}"
        )
    if leader.stale is None:
        return (
            f"leader file: {_facts(leader)}, but whether it leads cannot be told (the lock's "
            f"record cannot be read); {leader.path}"
        )
    held = "" if leader.since is None else f" ({max(time.time() - leader.since, 0.0):.1f}s)"
    return f"leader: {_facts(leader)}{held}; {leader.path}"


def _stray_label(leader: Leader) -> str:
    return repr(leader.name) if leader.name else os.path.basename(leader.path)


def _stray_line(leader: Leader) -> str:
    """One line on a leader file whose lock is gone."""
    facts = f"it names {_facts(leader)}" if leader.pid is not None else _unreadable(leader)
    return f"stale leader file of {_stray_label(leader)}: its lock is gone ({facts}); {leader.path}"


def _columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _table(locks: Sequence[_inspect.HostLock]) -> str:
    """The locks, one a line; a LEADER column when one of them has a leader file."""
    leaders = any(lock.leader is not None for lock in locks)
    rows = [["NAME", "KIND", "STATE", "HOLDER", "HELD FOR", "GENERATION", "OPEN IN"]]
    if leaders:
        rows[0].append("LEADER")
    for lock in locks:
        held = "-" if lock.held_for is None else f"{lock.held_for:.1f}s"
        generation = "-" if lock.generation is None else str(lock.generation)
        users = ",".join(map(str, lock.users)) or "-"
        name = _printable(lock.name) if lock.name else lock.base
        kind = lock.kind or "?"
        row = [name, kind, _state(lock), _holder(lock), held, generation, users]
        if leaders:
            row.append(_printable(_leader_cell(lock.leader)))
        rows.append(row)
    return _columns(rows)


def _holders_table(lock: _inspect.HostLock) -> str:
    """Every holder of a semaphore's permits, one a line, oldest first."""
    rows = [("PERMIT HOLDER", "STATE", "HELD FOR", "GENERATION")]
    for h in lock.holders:
        rows.append((str(h.pid), _ALIVE[h.alive], f"{h.held_for:.1f}s", str(h.generation)))
    return _columns(rows)


def _print(locks: Sequence[_inspect.HostLock], as_json: bool) -> None:
    """The locks as a table or JSON; the table is followed by the leader files whose
    lock is gone (the JSON lists locks only)."""
    if as_json:
        print(json.dumps([lock.to_json() for lock in locks], indent=2))
        return
    print(_table(locks) if locks else "no aplock locks or semaphores on this host")
    strays = _leaders.without_lock()
    if strays:
        print()
        for leader in strays:
            print(_printable(_stray_line(leader)))


def _missing(name: str) -> int:
    print(f"aplock: no lock named {name!r} on this host", file=sys.stderr)
    return EXIT_REFUSED


def _cmd_list(args: argparse.Namespace) -> int:
    _print(_inspect.scan(), args.json)
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    lock = _inspect.find(args.name)
    if lock is None:
        status = _missing(args.name)
        stray = _leaders.without_lock_named(args.name)
        if stray is not None:
            print(
                _printable(f"aplock: {_stray_line(stray)}; 'aplock clean' removes it"),
                file=sys.stderr,
            )
        return status
    if args.json:
        print(json.dumps(lock.to_json(), indent=2))
        return EXIT_OK
    print(_table([lock]))
    if lock.leader is not None:
        print("\n" + _printable(_leader_line(lock.leader)))
    if lock.is_semaphore:
        print(
            f"\nvalue {lock.value}, {lock.free} free, {lock.recoveries} recovered from dead holders"
        )
        if lock.holders:
            print(_holders_table(lock))
    return EXIT_OK


def _refusal(lock: _inspect.HostLock, force: bool) -> str | None:
    why = _inspect.owner_refusal(lock)
    if why is not None or force:
        return why
    why = _inspect.use_refusal(lock)
    return None if why is None else f"{why} (use --force to remove anyway)"


def _also(removed: _inspect.Removed) -> str:
    """`` and its 2 run-once markers``, ``, its run-once marker and its leader file``..."""
    parts = []
    if n := len(removed.markers):
        parts.append(f"its {n} run-once marker{'s' if n > 1 else ''}")
    if removed.leader_file is not None:
        parts.append("its leader file")
    if len(parts) == 2:
        return f", {parts[0]} and {parts[1]}"
    return f" and {parts[0]}" if parts else ""


def _cmd_clean(args: argparse.Namespace) -> int:
    """Remove the named locks, or sweep them all; a sweep leaves locks in use and succeeds.

    A removed lock's leader file goes with it; a stale leader file whose lock is gone, or
    is free but stays (it is open somewhere), is removed on its own.
    """
    sweep = not args.names
    missing = False
    strays: list[tuple[str, Leader]] = []  # stale leader files removed on their own
    if sweep:
        locks = _inspect.scan()
        strays = [(_stray_label(leader), leader) for leader in _leaders.without_lock()]
    else:
        locks = []
        for name in args.names:
            found = _inspect.find(name)
            stray = None if found is not None else _leaders.without_lock_named(name)
            if found is not None:
                locks.append(found)
            elif stray is not None:
                strays.append((repr(name), stray))
            else:
                _missing(name)
                missing = True
    removed: list[tuple[_inspect.HostLock, _inspect.Removed]] = []
    refused: list[tuple[_inspect.HostLock, str]] = []
    failed: list[tuple[_inspect.HostLock, str]] = []
    for lock in locks:
        why = _refusal(lock, args.force)
        if why is not None:
            refused.append((lock, why))
            if lock.locked is False and lock.leader is not None and lock.leader.stale:
                strays.append((_label(lock), lock.leader))
            continue
        try:
            done = _inspect.remove(lock)
        except LockError as exc:
            failed.append((lock, exc.detail))
        else:
            removed.append((lock, done))
    files = _clean_leader_files(strays)
    if args.json:
        report: dict[str, Any] = {
            "removed": [
                lock.to_json() | {"markers": done.markers, "leader_file": done.leader_file}
                for lock, done in removed
            ],
            "refused": [lock.to_json() | {"reason": why} for lock, why in refused],
            "failed": [lock.to_json() | {"error": error} for lock, error in failed],
            "leader_files": {
                "removed": [leader.to_json() for _, leader in files.removed],
                "refused": [leader.to_json() | {"reason": why} for _, leader, why in files.refused],
                "failed": [leader.to_json() | {"error": e} for _, leader, e in files.failed],
            },
        }
        print(json.dumps(report, indent=2))
    else:
        for lock, done in removed:
            print(f"removed {_label(lock)}{_also(done)}")
        for lock, why in refused:
            print(f"refused {_label(lock)}: {why}")
        for label, leader in files.removed:
            print(f"removed the stale leader file of {label} ({leader.stale_reason})")
        for label, _, why in files.refused:
            print(f"refused the stale leader file of {label}: {why}")
        for lock, error in failed:
            print(f"aplock: could not remove {_label(lock)}: {error}", file=sys.stderr)
        for label, _, error in files.failed:
            print(f"aplock: stale leader file of {label}: {error}", file=sys.stderr)
    if failed or files.failed or missing or ((refused or files.refused) and not sweep):
        return EXIT_REFUSED
    return EXIT_OK


@dataclass
class _LeaderFiles:
    """What became of the stale leader files that ``clean`` removes on their own."""

    removed: list[tuple[str, Leader]] = field(default_factory=list)
    refused: list[tuple[str, Leader, str]] = field(default_factory=list)
    failed: list[tuple[str, Leader, str]] = field(default_factory=list)


def _clean_leader_files(strays: Sequence[tuple[str, Leader]]) -> _LeaderFiles:
    """Remove each ``(label, stale leader file)`` this user may; one replaced since it was
    read (by a new leader) is left alone, and not reported."""
    files = _LeaderFiles()
    for label, leader in strays:
        why = _leaders.owner_refusal(leader)
        if why is not None:
            files.refused.append((label, leader, why))
            continue
        try:
            if _leaders.remove(leader, label):
                files.removed.append((label, leader))
        except LockError as exc:
            files.failed.append((label, leader, exc.detail))
    return files


def _cmd_repair(args: argparse.Namespace) -> int:
    found = _inspect.find(args.name)
    if found is None:
        return _missing(args.name)
    why = _inspect.owner_refusal(found)
    if why is None and not found.readable:
        why = "its state record cannot be read"
    if why is not None:
        print(f"refused {args.name!r}: {why}")
        return EXIT_REFUSED
    if found.is_semaphore:
        return _repair_semaphore(found)
    if not found.stuck:
        print(f"refused {args.name!r}: not stuck ({_state(found)}); nothing to repair")
        return EXIT_REFUSED
    if _inspect.repair(args.name, args.observe):
        print(f"repaired {args.name!r}: it is free again")
        return EXIT_OK
    print(f"refused {args.name!r}: its state changed while observed; it is in use")
    return EXIT_REFUSED


def _repair_semaphore(sem: _inspect.HostLock) -> int:
    """Free the permits of *sem*'s dead holders, or refuse if none is dead."""
    label = _label(sem)
    dead = sorted({h.pid for h in sem.holders if h.alive is False})
    if not dead:
        held = len(sem.holders)
        print(
            f"refused {label}: no permit is held by a dead process ({held} held, "
            f"{sem.free} free); nothing to repair"
        )
        return EXIT_REFUSED
    if _inspect.repair_semaphore(sem):
        pids = ", ".join(map(str, dead))
        print(f"repaired {label}: the permits of dead pid {pids} are free again")
        return EXIT_OK
    print(f"refused {label}: nothing to repair; a waiter freed the dead holders' permits meanwhile")
    return EXIT_REFUSED


def _cmd_demo(args: argparse.Namespace) -> int:
    return _demo.run(rounds=args.rounds)


def parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="aplock", description="Inspect and clean aplock locks and semaphores on this host."
    )
    version = f"aplock {__version__} ({_fastpath.describe()})"
    p.add_argument("--version", action="version", version=version)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list the locks and semaphores on this host with their state")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(run=_cmd_list)
    show = sub.add_parser(
        "show", help="show one lock, or one semaphore with every holder of its permits"
    )
    show.add_argument("name", help="the lock's or semaphore's name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=_cmd_show)
    clean = sub.add_parser(
        "clean",
        help="remove locks and semaphores that no running process has open and that are "
        "free or whose holders are dead",
        description="Remove locks and semaphores that no running process has open and that "
        "are free or whose holders are all dead, with their run-once markers. Without names "
        "it sweeps every lock and semaphore on the host: those it refuses (in use, or another "
        "user's) stay and are listed, and it still exits with 0. With names, one that is "
        "refused or missing makes it exit with 1.",
    )
    clean.add_argument("names", nargs="*", help="only these (default: all)")
    clean.add_argument(
        "--force", action="store_true", help="remove even locks in use (not another user's)"
    )
    clean.add_argument("--json", action="store_true", help="print JSON")
    clean.set_defaults(run=_cmd_clean)
    repair = sub.add_parser("repair", help=REPAIR_HELP, description=REPAIR_DESCRIPTION)
    repair.add_argument("name", help="the lock's or semaphore's name")
    repair.add_argument(
        "--observe",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long a lock's stuck state must stay unchanged (default 1; "
        "not used for a semaphore)",
    )
    repair.set_defaults(run=_cmd_repair)
    demo = sub.add_parser(
        "demo",
        help="spawned processes and async tasks share a lock; a killed holder's lock is taken over",
    )
    demo.add_argument(
        "--rounds", type=int, default=3, help="critical sections per task (default 3, at least 1)"
    )
    demo.set_defaults(run=_cmd_demo)
    return p


def _usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with arguments that argparse accepted, if anything."""
    names = [args.name] if hasattr(args, "name") else getattr(args, "names", [])
    for name in names:
        try:
            validate(name)
        except ValueError as exc:
            return str(exc)
    observe = getattr(args, "observe", 1.0)
    if not (math.isfinite(observe) and observe > 0):
        return f"--observe must be a number of seconds above 0, not {observe}"
    rounds = getattr(args, "rounds", 1)
    if rounds < 1:
        return f"--rounds must be at least 1, not {rounds}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aplock`` command."""
    args = parser().parse_args(argv)
    error = _usage_error(args)
    if error is not None:
        print(f"aplock: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        status: int = args.run(args)
    except LockError as exc:
        print(f"aplock: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return status
