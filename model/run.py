#!/usr/bin/env python3
"""Build and run the model's checks with spin; print one line per check.

    model/run.sh                    the quick checks (checks.tsv), two at a time
    model/run.sh excl live          some checks, by name
    model/run.sh --stress           the quick and the stress checks
    model/run.sh -D MUT_FAST_PID_ONLY excl_reuse   a check with a seeded bug (mutations.pml)
    model/run.sh --trail excl_reuse the counterexample, step by step
    model/run.sh --mutants [--mutant MUT_X]   seeded bugs against their checks
    model/run.sh --refs             are the model's code references still in src/aplock?
    model/run.sh --refs --at mirrored   ... in the commits the models mirror (MIRRORS,
                                        SEMAPHORE_MIRRORS for semaphore.pml)
    model/run.sh --list             the checks

Each check generates the verifier (spin -a) of its model (checks.tsv's optional seventh
column: aplock.pml, the lock's, by default; semaphore.pml, the semaphore's), compiles it
with the C compiler ($CC, cc by default; $CFLAGS, -O0 by default: the models are small
and compiling dominates) and runs it: safety properties breadth-first (the
counterexample found is a shortest one), liveness with weak fairness. The line says how
many errors it found, how many states it stored, the depth it reached, the
counterexample's length (trail: transitions of pan; steps: the steps of processes that
touch shared state, what the compact trail lists) and whether that is what today's code
is expected to give (checks.tsv).

Exit status: 0 when every result is the expected one (or, with -D, always when the runs
worked), 1 otherwise, 2 when a tool is missing or a build fails.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = Path(__file__).resolve().parent
ROOT = MODEL.parent
SOURCES = ROOT / "src" / "aplock"
MAIN = "aplock.pml"
#: Safety checks; LIVE is the one LTL property (weak fairness).
SAFETY = ("EXCL", "NOROB", "ONCE", "RACE")


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of checks.tsv."""

    name: str
    prop: str
    defines: tuple[str, ...]
    today: str
    tier: str
    what: str
    main: str = MAIN

    @property
    def liveness(self) -> bool:
        return self.prop == "LIVE"


@dataclasses.dataclass
class Result:
    """What one run of pan found."""

    name: str
    prop: str
    defines: list[str]
    errors: int
    states: int
    depth: int
    trail: int
    steps: int
    seconds: float
    expected: str
    ok: bool
    message: str = ""
    counterexample: list[str] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        verdict = "ok" if self.ok else "UNEXPECTED"
        if self.expected == "-":
            verdict = "-"
        found = f"errors={self.errors}"
        if self.errors:
            found += f" trail={self.trail} steps={self.steps}"
        return (
            f"{self.name:<16} {self.prop:<6} {found:<32} states={self.states:<9} "
            f"depth={self.depth:<5} {self.seconds:6.1f}s  today={self.expected:<5} {verdict}"
            + (f"  ({self.message})" if self.message else "")
        )


def load_checks() -> list[Check]:
    """The checks of checks.tsv, in order."""
    checks = []
    for raw in (MODEL / "checks.tsv").read_text().splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        name, prop, defines, today, tier, what, *model = raw.split("\t")
        checks.append(
            Check(
                name,
                prop,
                tuple(d for d in defines.split(",") if d),
                today,
                tier,
                what,
                model[0] if model else MAIN,
            )
        )
    return checks


def tools() -> tuple[str, str] | str:
    """``(spin, cc)`` or the reason they cannot be used."""
    spin = shutil.which("spin")
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if spin is None:
        return "spin is not installed (apt-get install spin)"
    if cc is None:
        return "no C compiler (set CC, or apt-get install gcc)"
    return spin, cc


def _number(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else -1


def _sh(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_check(
    check: Check, extra: tuple[str, ...] = (), trail: bool = False, timeout: float = 900
) -> Result:
    """Generate, compile and run the verifier of *check* in a scratch directory."""
    found = tools()
    if isinstance(found, str):
        raise RuntimeError(found)
    spin, cc = found
    defines = [f"-DPROP_{check.prop}", *(f"-D{d}" for d in (*check.defines, *extra))]
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"aplock-model-{check.name}-") as scratch:
        work = Path(scratch)
        for pml in MODEL.glob("*.pml"):
            shutil.copy(pml, work)
        made = _sh([spin, "-a", *defines, check.main], work, timeout)
        if made.returncode != 0 or not (work / "pan.c").exists():
            raise RuntimeError(f"spin -a failed for {check.name}:\n{made.stdout}{made.stderr}")
        cflags = os.environ.get("CFLAGS", "-O0 -w").split()
        if check.liveness:
            pan_defs, pan_args = ["-DCOLLAPSE", "-DNFAIR=4"], ["-a", "-f", "-i", "-m5000000"]
        else:
            pan_defs, pan_args = ["-DSAFETY", "-DBFS", "-DCOLLAPSE"], []
        built = _sh([cc, *cflags, *pan_defs, "-o", "pan", "pan.c"], work, timeout)
        if built.returncode != 0:
            raise RuntimeError(f"compiling pan failed for {check.name}:\n{built.stderr}")
        ran = _sh(["./pan", *pan_args], work, timeout)
        out = ran.stdout + ran.stderr
        errors = _number(r"errors: (\d+)", out)
        states = _number(r"(\d+) states, stored", out)
        depth = _number(r"depth reached (\d+)", out)
        message = ""
        if errors < 0:
            message = "pan did not finish: " + out.strip().splitlines()[-1] if out.strip() else ""
        if "search not completed" in out or "max search depth too small" in out:
            message = "search incomplete (depth limit)"
        n_trail, steps, listing = 0, 0, []
        trail_file = work / f"{check.main}.trail"
        if errors > 0 and trail_file.exists():
            n_trail = sum(
                1 for row in trail_file.read_text().splitlines() if not row.startswith("-")
            )
            replay = _sh([spin, "-t", "-p", *defines, check.main], work, timeout)
            listing = compact_trail(replay.stdout, work)
            steps = sum(1 for row in listing if row.strip()[:1].isdigit())
    expected = "-" if extra else check.today
    ok = (
        errors >= 0
        and not message.startswith("pan did not")
        and (expected == "-" or (errors == 0) == (expected == "pass"))
    )
    if "incomplete" in message and errors == 0:
        ok = False
    return Result(
        check.name,
        check.prop,
        [*check.defines, *extra],
        errors,
        states,
        depth,
        n_trail,
        steps,
        time.monotonic() - began,
        expected,
        ok,
        message,
        listing if trail else [],
    )


# -- the compact counterexample --------------------------------------------------------

_SHARED = re.compile(
    r"\b(L|H|r_gen|r_pid|r_start|r_ns|r_owed|guard|deaths|alive\[me\]|up\[me\])\s*=[^=]"
    r"|\b(L|H|guard)\s*[<>=!]=?\s*\d|r_gen\b|r_pid\b|r_owed\b|s_gen = r_gen"
    r"|\b(sl_pid|sl_dead|sl_gen|m_extra|m_gen|S)\b"
)
_STEP = re.compile(r"^\s*(\d+):\s+proc\s+(\d+) \((\w+):\d+\) (\S+?):(\d+) .*?\[(.*)\]\s*$")
_REF = re.compile(
    r"/\*\s*((?:_handle|_process|sync|_gate|_posix|_posix/\w+)\.py:\d+ [\w.]+: .*?)\s*\*/"
)


def _refs_by_line(work: Path) -> dict[str, dict[int, str]]:
    """For each model file, the code reference in force at each line."""
    table: dict[str, dict[int, str]] = {}
    for pml in work.glob("*.pml"):
        current = ""
        lines: dict[int, str] = {}
        for number, text in enumerate(pml.read_text().splitlines(), start=1):
            ref = _REF.search(text)
            if ref:
                current = ref.group(1)
            elif text.strip().startswith("inline ") or text.strip() == "}":
                current = ""
            lines[number] = current
        table[pml.name] = lines
    return table


def compact_trail(replay: str, work: Path) -> list[str]:
    """The steps of a ``spin -t -p`` replay that touch shared state, one per line."""
    refs = _refs_by_line(work)
    rows: list[str] = []
    last_key: tuple[str, str] | None = None
    killed: tuple[str, str] | None = None
    count = 0
    for text in replay.splitlines():
        if "START OF CYCLE" in text:
            rows.append("   --- the cycle (repeats forever) starts here ---")
            last_key = None
            continue
        match = _STEP.match(text)
        if not match:
            continue
        number, proc, ptype, file, line, stmt = match.groups()
        if ptype not in ("Proc", "SProc") or killed == (number, proc):
            continue
        slot = int(proc) - 1  # proc 0 is init
        if stmt.startswith("deaths = "):
            what = "SIGKILL (its guard, if it held it, is dropped)"
            killed = (number, proc)
        elif stmt == "up[me] = 1":
            what = "starts"
        elif stmt in ("alive[me] = 1", "((guard==255))"):
            continue
        elif stmt == "((guard!=255))":
            what = "finds the guard busy"
        elif stmt == "guard = me":
            what = "takes the guard"
        elif stmt == "guard = 255":
            what = "releases the guard"
        elif stmt == "alive[me] = 0":
            what = "exits"
        elif _SHARED.search(stmt):
            ref = refs.get(file, {}).get(int(line), "") or f"{file}:{line}"
            if (proc, ref) == last_key:
                continue
            last_key = (proc, ref)
            what = f"{ref}   [{stmt}]"
        else:
            continue
        if not what.startswith("_") and not what.startswith(("sync", "os.", "protocol", "scen")):
            last_key = None
        count += 1
        rows.append(f"{count:4}  slot {slot}  {what}")
    return rows


# -- the code references ---------------------------------------------------------------


def _functions(path: Path) -> dict[str, str]:
    """Qualified name -> source of every function and method in *path*."""
    source = path.read_text()
    tree = ast.parse(source)
    found: dict[str, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found[f"{prefix}{child.name}"] = ast.get_source_segment(source, child) or ""
                visit(child, f"{prefix}{child.name}.")

    visit(tree, "")
    return found


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _mirrors_table(pml: str) -> list[list[str]]:
    table = "SEMAPHORE_MIRRORS" if pml.startswith("semaphore") else "MIRRORS"
    lines = (MODEL / table).read_text().splitlines()
    return [line.split() for line in lines if line.strip() and not line.startswith("#")]


def mirrored_commit(pml: str = MAIN) -> str:
    """The commit whose code a model file mirrors: model/SEMAPHORE_MIRRORS for the
    semaphore's (semaphore*.pml), model/MIRRORS for the lock's (their first line)."""
    return _mirrors_table(pml)[0][0]


def mirrored_later(pml: str = MAIN) -> dict[str, str]:
    """Source files whose steps a model file mirrors at a later commit: file -> commit
    (the other lines of its MIRRORS table, ``FILE COMMIT``: steps added since, such as
    the in-loop handover, mirror the commit that brought them)."""
    return {row[0]: row[1] for row in _mirrors_table(pml)[1:]}


def sources_at(rev: str, into: Path) -> Path:
    """Write src/aplock of commit *rev* under *into*; the directory of its files."""
    listing = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", f"{rev}:src/aplock"],
        capture_output=True,
        text=True,
        check=True,
    )
    for name in listing.stdout.split():
        if name.endswith(".py"):
            shown = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{rev}:src/aplock/{name}"],
                capture_output=True,
                text=True,
                check=True,
            )
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            (into / name).write_text(shown.stdout)
    return into


def stale_refs(
    sources: Path = SOURCES, pmls: list[Path] | None = None, later: dict[str, Path] | None = None
) -> list[str]:
    """The code references of the model files *pmls* (all of them by default) whose code
    is no longer in the named function (in *sources*, or for a file of *later*, in the
    sources it names)."""
    problems: list[str] = []
    cache: dict[str, dict[str, str]] = {}
    later = later or {}
    for pml in pmls if pmls is not None else sorted(MODEL.glob("*.pml")):
        for number, text in enumerate(pml.read_text().splitlines(), start=1):
            for ref in _REF.finditer(text):
                where, code = ref.group(1).split(": ", 1)
                file_line, qualname = where.split(" ")
                file = file_line.split(":")[0]
                if file not in cache:
                    src = later.get(file, sources)
                    cache[file] = _functions(src / file) if (src / file).exists() else {}
                body = cache[file].get(qualname)
                code = code.split("  #")[0]
                if body is None:
                    problems.append(f"{pml.name}:{number}: {qualname} is not in {file}")
                elif _squash(code) not in _squash(body):
                    problems.append(f"{pml.name}:{number}: {qualname} no longer has: {code}")
    return problems


def load_mutants() -> list[tuple[str, str, str]]:
    """``(define, check, bug)`` for each line of mutants.tsv."""
    rows = []
    for raw in (MODEL / "mutants.tsv").read_text().splitlines():
        if raw.strip() and not raw.startswith("#"):
            define, check, bug = raw.split("\t")
            rows.append((define, check, bug))
    return rows


def run_mutant(check: Check, define: str) -> Result:
    """Run *check* with the seeded bug *define*: caught (ok) if it finds an error."""
    result = run_check(check, (define,))
    result.name = define
    result.expected = "fail"
    result.ok = result.errors > 0
    return result


def run_mutants(
    by_name: dict[str, Check], jobs: int, as_json: bool, only: tuple[str, ...] = ()
) -> int:
    """Run every seeded bug (or those in *only*) against its check; 0 if each is caught."""
    all_caught = True
    chosen = [(d, c) for d, c, _ in load_mutants() if not only or d in only]
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [pool.submit(run_mutant, by_name[check], define) for define, check in chosen]
        for future in futures:
            result = future.result()
            all_caught &= result.ok
            if as_json:
                print(json.dumps(dataclasses.asdict(result)), flush=True)
            else:
                caught = "caught" if result.ok else "MISSED"
                print(f"{result.line()}  {caught}", flush=True)
    return 0 if all_caught else 1


def run_refs(at: str | None) -> int:
    """Print the stale code references (against src/aplock, or commit *at*)."""
    if at:
        plan: list[tuple[Path, str, dict[str, str]]] = []
        for pml in sorted(MODEL.glob("*.pml")):
            if at == "mirrored":
                plan.append((pml, mirrored_commit(pml.name), mirrored_later(pml.name)))
            else:
                plan.append((pml, at, {}))
        revs = list(dict.fromkeys(r for _, rev, later in plan for r in (rev, *later.values())))
        problems = []
        with tempfile.TemporaryDirectory(prefix="aplock-model-src-") as scratch:
            trees: dict[str, Path] = {}
            for number, rev in enumerate(revs):
                try:
                    trees[rev] = sources_at(rev, Path(scratch) / str(number))
                except subprocess.CalledProcessError as exc:
                    print(f"cannot read commit {rev}: {exc.stderr.strip()}", file=sys.stderr)
                    return 2
            for pml, rev, later in plan:
                files = {file: trees[r] for file, r in later.items()}
                problems += stale_refs(trees[rev], [pml], files)
        where = "commit " + ", ".join(rev[:12] for rev in revs)
    else:
        problems, where = stale_refs(), "src/aplock"
    for problem in problems:
        print(problem)
    print(f"{len(problems)} stale code references (against {where})")
    return 1 if problems else 0


# -- the command -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="checks to run (default: the quick ones)")
    parser.add_argument("--stress", action="store_true", help="include the stress checks")
    parser.add_argument("-D", dest="extra", action="append", default=[], help="add a define")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="checks run at once")
    parser.add_argument("--trail", action="store_true", help="print counterexamples")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--list", action="store_true", help="list the checks")
    parser.add_argument(
        "--refs", action="store_true", help="check the code references against src/aplock"
    )
    parser.add_argument(
        "--at",
        metavar="REV",
        help="with --refs: against this commit ('mirrored': the one in model/MIRRORS)",
    )
    parser.add_argument(
        "--mutants", action="store_true", help="run each seeded bug against its check"
    )
    parser.add_argument(
        "--mutant", action="append", default=[], help="with --mutants: only this one"
    )
    args = parser.parse_args(argv)

    checks = load_checks()
    if args.list:
        for c in checks:
            print(f"{c.name:<16} {c.prop:<6} {c.tier:<6} today={c.today:<5} {c.what}")
        return 0
    if args.refs:
        return run_refs(args.at)
    found = tools()
    if isinstance(found, str):
        print(found, file=sys.stderr)
        return 2
    by_name = {c.name: c for c in checks}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        print(f"unknown checks: {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    if args.mutants:
        return run_mutants(by_name, args.jobs, args.json, tuple(args.mutant))
    chosen = (
        [by_name[n] for n in args.names]
        if args.names
        else [c for c in checks if c.tier == "quick" or args.stress]
    )
    extra = tuple(args.extra)
    all_ok = True
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(run_check, c, extra, args.trail) for c in chosen]
        for future in futures:
            try:
                result = future.result()
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(exc, file=sys.stderr)
                return 2
            all_ok &= result.ok
            if args.json:
                print(json.dumps(dataclasses.asdict(result)), flush=True)
                continue
            print(result.line(), flush=True)
            for row in result.counterexample:
                print(f"    {row}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
