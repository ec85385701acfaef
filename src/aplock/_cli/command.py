"""The ``aplock`` command: inspect and clean the locks and semaphores on this host, or run
the demo.

Exit status: 0 success, including a sweep (``clean`` with no names) that left locks in use
in place; 1 a named lock or semaphore does not exist, ``clean NAME`` or ``repair``
refused (it is in use, belongs to another user, or has nothing to repair), or removing
something failed; 2 bad usage (an empty name, say).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any

from aplock._names import validate
from aplock._version import __version__
from aplock.errors import LockError

from . import demo as _demo
from . import inspect as _inspect

if TYPE_CHECKING:
    from collections.abc import Sequence

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


def _columns(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _table(locks: Sequence[_inspect.HostLock]) -> str:
    rows = [("NAME", "KIND", "STATE", "HOLDER", "HELD FOR", "GENERATION", "OPEN IN")]
    for lock in locks:
        held = "-" if lock.held_for is None else f"{lock.held_for:.1f}s"
        generation = "-" if lock.generation is None else str(lock.generation)
        users = ",".join(map(str, lock.users)) or "-"
        name = _printable(lock.name) if lock.name else lock.base
        kind = lock.kind or "?"
        rows.append((name, kind, _state(lock), _holder(lock), held, generation, users))
    return _columns(rows)


def _holders_table(lock: _inspect.HostLock) -> str:
    """Every holder of a semaphore's permits, one a line, oldest first."""
    rows = [("PERMIT HOLDER", "STATE", "HELD FOR", "GENERATION")]
    for h in lock.holders:
        rows.append((str(h.pid), _ALIVE[h.alive], f"{h.held_for:.1f}s", str(h.generation)))
    return _columns(rows)


def _print(locks: Sequence[_inspect.HostLock], as_json: bool) -> None:
    if as_json:
        print(json.dumps([lock.to_json() for lock in locks], indent=2))
    elif locks:
        print(_table(locks))
    else:
        print("no aplock locks or semaphores on this host")


def _missing(name: str) -> int:
    print(f"aplock: no lock named {name!r} on this host", file=sys.stderr)
    return EXIT_REFUSED


def _cmd_list(args: argparse.Namespace) -> int:
    _print(_inspect.scan(), args.json)
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    lock = _inspect.find(args.name)
    if lock is None:
        return _missing(args.name)
    if args.json:
        print(json.dumps(lock.to_json(), indent=2))
        return EXIT_OK
    print(_table([lock]))
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


def _cmd_clean(args: argparse.Namespace) -> int:
    """Remove the named locks, or sweep them all; a sweep leaves locks in use and succeeds."""
    sweep = not args.names
    missing = False
    if sweep:
        locks = _inspect.scan()
    else:
        locks = []
        for name in args.names:
            found = _inspect.find(name)
            if found is None:
                _missing(name)
                missing = True
            else:
                locks.append(found)
    removed: list[tuple[_inspect.HostLock, list[str]]] = []
    refused: list[tuple[_inspect.HostLock, str]] = []
    failed: list[tuple[_inspect.HostLock, str]] = []
    for lock in locks:
        why = _refusal(lock, args.force)
        if why is not None:
            refused.append((lock, why))
            continue
        try:
            markers = _inspect.remove(lock)
        except LockError as exc:
            failed.append((lock, exc.detail))
        else:
            removed.append((lock, markers))
    if args.json:
        report: dict[str, list[dict[str, Any]]] = {
            "removed": [lock.to_json() | {"markers": markers} for lock, markers in removed],
            "refused": [lock.to_json() | {"reason": why} for lock, why in refused],
            "failed": [lock.to_json() | {"error": error} for lock, error in failed],
        }
        print(json.dumps(report, indent=2))
    else:
        for lock, markers in removed:
            n = len(markers)
            also = f" and its {n} run-once marker{'s' if n > 1 else ''}" if n else ""
            print(f"removed {_label(lock)}{also}")
        for lock, why in refused:
            print(f"refused {_label(lock)}: {why}")
        for lock, error in failed:
            print(f"aplock: could not remove {_label(lock)}: {error}", file=sys.stderr)
    if failed or missing or (refused and not sweep):
        return EXIT_REFUSED
    return EXIT_OK


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
    p.add_argument("--version", action="version", version=f"aplock {__version__}")
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
