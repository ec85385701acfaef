"""``python -m bench``: run aplock and its peers side by side and print the tables.

Run from the repository root with the ``bench`` extra installed::

    python -m bench            # full run, a few minutes
    python -m bench --quick    # smoke run, under a minute
    python -m bench --only handoff --only contended --json out.json
    python -m bench --quick --plot            # and draw the figure beside the JSON
    python -m bench --from out.json --plot docs/img/bench.png   # draw a saved run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

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
    parser.add_argument(
        "--plot",
        metavar="PATH",
        nargs="?",
        const=PLOT_BESIDE,
        type=Path,
        help="draw the run as a PNG figure (needs matplotlib, in the bench group); "
        "default: beside the JSON results, with the suffix .png",
    )
    parser.add_argument(
        "--from",
        dest="source",
        metavar="RESULTS",
        type=Path,
        help="run nothing: draw the figure of a saved run's JSON (implies --plot)",
    )
    parser.add_argument("--list", action="store_true", help="list the metrics and exit")
    return parser


#: ``--plot`` without a path (told apart by identity): the figure goes beside the JSON.
PLOT_BESIDE = Path("results.png")


def _figure(args: argparse.Namespace, results: Path) -> Path:
    """Where the figure of the run saved at *results* goes."""
    plot: Path | None = args.plot
    return results.with_suffix(".png") if plot is None or plot is PLOT_BESIDE else plot


def _cannot_plot(args: argparse.Namespace) -> str | None:
    """Why ``--plot``/``--from`` cannot draw, checked before anything runs."""
    from ._plot import PlotError, require

    try:
        require()
    except PlotError as exc:
        return str(exc)
    plot: Path | None = args.plot
    if plot is not None and plot is not PLOT_BESIDE and plot.suffix.lower() != ".png":
        return f"--plot {plot}: the figure is a PNG, its path must end in .png"
    return None


def _draw(data: dict[str, Any], path: Path) -> int:
    from ._plot import PlotError, plot

    try:
        plot(data, path)
    except PlotError as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"python -m bench: cannot write the figure to {path}: {exc}", file=sys.stderr)
        return 2
    print(f"figure written to {path}")
    return 0


def _redraw(args: argparse.Namespace) -> int:
    """``--from RESULTS``: draw a saved run, limited to the ``--only`` metrics."""
    if args.mode or args.repeats or args.json or args.list:
        print(
            "--from draws a saved run: --quick, --smoke, --repeats, --json and --list "
            "do not apply to it",
            file=sys.stderr,
        )
        return 2
    source: Path = args.source
    try:
        data = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        print(f"--from {source}: cannot read the results: {exc}", file=sys.stderr)
        return 2
    if args.only and isinstance(data, dict) and isinstance(data.get("metrics"), dict):
        unknown = [n for n in args.only if n not in data["metrics"]]
        if unknown:
            known = sorted(data["metrics"])
            print(f"--only {unknown}: not in {source}; it holds {known}", file=sys.stderr)
            return 2
        data["metrics"] = {n: m for n, m in data["metrics"].items() if n in args.only}
    return _draw(data, _figure(args, source))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (or draw a saved run); exit status 1 if any case failed or left
    OS objects behind, 2 if the command line or the figure could not be used."""
    args = _parser().parse_args(argv)
    if args.plot is not None or args.source is not None:
        why = _cannot_plot(args)
        if why:
            print(f"python -m bench: {why}", file=sys.stderr)
            return 2
    if args.source is not None:
        return _redraw(args)
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
    status = 0 if data["ok"] else 1
    if args.plot is not None:
        status = max(status, _draw(data, _figure(args, path)))
    return status


if __name__ == "__main__":
    sys.exit(main())
