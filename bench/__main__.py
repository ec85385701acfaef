"""``python -m bench``: run aplock and its peers side by side and print the tables.

Run from the repository root with the ``bench`` extra installed::

    python -m bench            # full run, a few minutes
    python -m bench --quick    # smoke run, under a minute
    python -m bench --only handoff --only contended --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from . import METRIC_MODULES
from ._core import MODES
from ._machine import facts, summary
from ._report import metric_text, targets_text, to_json
from ._runner import ROOT, load, run_all


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark aplock against its peers, each measurement in a fresh process.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="mode",
        help="short run (one repeat, small sizes): under a minute",
    )
    size.add_argument(
        "--smoke",
        action="store_const",
        const="smoke",
        dest="mode",
        help="tiniest run, only to check that the harness works",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        metavar="N",
        help="fresh processes per case (default: 5, or 1 with --quick)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="METRIC",
        default=[],
        help="run only this metric (repeatable); see --list",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        type=Path,
        help="where to write the JSON results (default: bench/results/<mode>-<time>.json)",
    )
    parser.add_argument("--list", action="store_true", help="list the metrics and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; exit status 1 if any case failed or left OS objects behind."""
    args = _parser().parse_args(argv)
    mode = MODES[args.mode or "full"]
    if args.repeats:
        mode = dataclasses.replace(mode, repeats=args.repeats)
    names = {load(m).name: m for m in METRIC_MODULES}
    if args.list:
        for name, module in names.items():
            print(f"{name:20} {load(module).title}")
        return 0
    unknown = [n for n in args.only if n not in names]
    if unknown:
        print(f"unknown metric(s) {unknown}; known: {sorted(names)}", file=sys.stderr)
        return 2
    modules = [m for n, m in names.items() if not args.only or n in args.only]
    command = shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])])
    machine = facts(ROOT)
    print(f"# aplock benchmarks ({mode.name}: {mode.repeats} fresh process(es) per case)\n")
    print(f"command: {command}\n\n```\n{summary(machine)}\n```\n", flush=True)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    runs = run_all(modules, mode, progress, lambda run: print(metric_text(run), flush=True))
    seconds = time.monotonic() - started
    print(targets_text(runs))
    data = to_json(runs, mode, machine, command, seconds)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.json or ROOT / "bench" / "results" / f"{mode.name}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(runs)} metric(s) in {seconds:.0f} s; JSON written to {path}")
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
