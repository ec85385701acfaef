"""The ``aplock`` command: inspect and clean the locks on this host, or run the demo.

Exit status: 0 success; 1 a named lock does not exist, or ``clean`` or ``repair``
refused (the lock is in use); 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from . import _demo, _inspect
from ._version import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

EXIT_OK = 0
EXIT_REFUSED = 1


def _holder(lock: _inspect.HostLock) -> str:
    if lock.holder_pid is None:
        return "-"
    if lock.holder_pid < 0:
        return "detached"
    state = {True: "alive", False: "DEAD", None: "?"}[lock.holder_alive]
    return f"{lock.holder_pid} ({state})"


def _state(lock: _inspect.HostLock) -> str:
    if lock.locked is None:
        return "?"
    if lock.stuck:
        return "stuck"
    return "held" if lock.locked else "free"


def _table(locks: Sequence[_inspect.HostLock]) -> str:
    rows = [("NAME", "STATE", "HOLDER", "HELD FOR", "GENERATION", "OPEN IN")]
    for lock in locks:
        held = "-" if lock.held_for is None else f"{lock.held_for:.1f}s"
        users = ",".join(map(str, lock.users)) or "-"
        rows.append(
            (lock.name or lock.base, _state(lock), _holder(lock), held, str(lock.generation), users)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _print(locks: Sequence[_inspect.HostLock], as_json: bool) -> None:
    if as_json:
        print(json.dumps([lock.to_json() for lock in locks], indent=2))
    elif locks:
        print(_table(locks))
    else:
        print("no aplock locks on this host")


def _cmd_list(args: argparse.Namespace) -> int:
    _print(_inspect.scan(), args.json)
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    lock = _inspect.find(args.name)
    if lock is None:
        print(f"aplock: no lock named {args.name!r} on this host", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(lock.to_json(), indent=2))
    else:
        print(_table([lock]))
    return EXIT_OK


def _cmd_clean(args: argparse.Namespace) -> int:
    if args.names:
        locks = []
        missing = False
        for name in args.names:
            found = _inspect.find(name)
            if found is None:
                print(f"aplock: no lock named {name!r} on this host", file=sys.stderr)
                missing = True
            else:
                locks.append(found)
    else:
        locks, missing = _inspect.scan(), False
    removed, refused = [], []
    for lock in locks:
        if lock.removable or args.force:
            _inspect.remove(lock)
            removed.append(lock)
        else:
            refused.append(lock)
    if args.json:
        print(
            json.dumps(
                {
                    "removed": [lock.to_json() for lock in removed],
                    "refused": [lock.to_json() for lock in refused],
                },
                indent=2,
            )
        )
    else:
        for lock in removed:
            print(f"removed {lock.name or lock.base!r}")
        for lock in refused:
            why = (
                f"open in pid {', '.join(map(str, lock.users))}"
                if lock.users
                else f"held by live pid {lock.holder_pid}"
            )
            print(f"refused {lock.name or lock.base!r}: {why} (use --force to remove anyway)")
    return EXIT_REFUSED if refused or missing else EXIT_OK


def _cmd_repair(args: argparse.Namespace) -> int:
    found = _inspect.find(args.name)
    if found is None:
        print(f"aplock: no lock named {args.name!r} on this host", file=sys.stderr)
        return EXIT_REFUSED
    if not found.stuck:
        print(f"refused {args.name!r}: not stuck ({_state(found)}); nothing to repair")
        return EXIT_REFUSED
    if _inspect.repair(args.name, args.observe):
        print(f"repaired {args.name!r}: it is free again")
        return EXIT_OK
    print(f"refused {args.name!r}: its state changed while observed; it is in use")
    return EXIT_REFUSED


def _cmd_demo(args: argparse.Namespace) -> int:
    return _demo.run(rounds=args.rounds)


def parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="aplock", description="Inspect and clean aplock locks on this host."
    )
    p.add_argument("--version", action="version", version=f"aplock {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list the locks on this host with their state")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(run=_cmd_list)
    show = sub.add_parser("show", help="show one lock")
    show.add_argument("name", help="the lock's name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=_cmd_show)
    clean = sub.add_parser(
        "clean",
        help="remove locks that no running process has open and that are free or whose "
        "holder is dead",
    )
    clean.add_argument("names", nargs="*", help="only these locks (default: all)")
    clean.add_argument("--force", action="store_true", help="remove even locks in use")
    clean.add_argument("--json", action="store_true", help="print JSON")
    clean.set_defaults(run=_cmd_clean)
    repair = sub.add_parser(
        "repair",
        help="free a stuck lock (taken, but by nobody: a process died mid-acquire); "
        "stop or pause its users first",
    )
    repair.add_argument("name", help="the lock's name")
    repair.add_argument(
        "--observe",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long the stuck state must stay unchanged (default 1)",
    )
    repair.set_defaults(run=_cmd_repair)
    demo = sub.add_parser("demo", help="spawned processes and async tasks share one lock")
    demo.add_argument("--rounds", type=int, default=3, help="critical sections per task")
    demo.set_defaults(run=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``aplock`` command."""
    args = parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
