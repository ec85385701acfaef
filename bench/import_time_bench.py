"""Metric 8: the time ``import aplock`` takes, beside its peers' modules, in ms.

Each case starts the import in several fresh interpreters under ``python -X importtime``
and sums the cumulative times of the import statement's top-level modules (everything
imported after ``site``, that is after the interpreter's own start-up).
"""

from __future__ import annotations

import subprocess
import sys

from ._core import Case, Field, Metric, Mode, Rows, Target, value_target
from ._measure import median

NAME = "import_time"

#: What each peer's users import to get its lock.
IMPORTS = {
    "aplock": "aplock",
    "mp.Lock": "multiprocessing.synchronize",
    "filelock": "filelock",
}
ASYNC_MODULES = frozenset({"asyncio", "anyio", "trio", "sniffio"})


def cases(mode: Mode) -> list[Case]:
    runs = max(2, round(mode.scaled(20)))
    return [
        Case(NAME, peer, "", {"module": module, "runs": runs}) for peer, module in IMPORTS.items()
    ]


def parse_importtime(stderr: str) -> tuple[float, list[str]]:
    """From ``-X importtime`` output: the statement's total in µs and the modules it loaded."""
    entries = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, rest = line.split("|", 2)
        if not cumulative.strip().isdigit():
            continue  # the header line
        depth = len(rest) - len(rest.lstrip(" "))
        entries.append((int(cumulative), depth == 1, rest.strip()))
    names = [name for _, _, name in entries]
    if "site" not in names:
        raise RuntimeError(f"no 'site' line in the -X importtime output:\n{stderr[-2000:]}")
    after_site = entries[len(names) - names[::-1].index("site") :]
    total = sum(cumulative for cumulative, top, _ in after_site if top)
    return float(total), [name for _, _, name in after_site]


def import_once(module: str) -> tuple[float, list[str]]:
    """Import *module* in a fresh interpreter; its import time in µs and modules loaded."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"import {module} failed:\n{proc.stderr[-2000:]}")
    return parse_importtime(proc.stderr)


def measure(case: Case, tag: str) -> dict[str, float]:
    module = case.params["module"]
    import_once(module)  # warm the bytecode caches and the page cache
    times, loaded = [], []
    for _ in range(case.params["runs"]):
        us, modules = import_once(module)
        times.append(us / 1000)
        loaded.append(modules)
    return {
        "best_ms": min(times),
        "median_ms": median(times),
        "modules": median([len(m) for m in loaded]),
        "async_loaded": float(any(ASYNC_MODULES & set(m) for m in loaded)),
    }


def targets(rows: Rows) -> list[Target]:
    return [
        value_target(
            rows,
            NAME,
            "import aplock loads no async library (asyncio, anyio, trio)",
            "",
            "aplock",
            "async_loaded",
            at_most=0,
            fmt=".0f",
        ),
    ]


METRIC = Metric(
    name=NAME,
    title="8. import time of the module a user imports (ms, lower is better)",
    fields=(
        Field("best_ms", "best ms", ".1f", agg="min"),
        Field("median_ms", "median ms", ".1f"),
        Field("modules", "modules loaded", ".0f"),
        Field("async_loaded", "async library loaded", ".0f", agg="max"),
    ),
    higher_is_better=False,
    cases=cases,
    measure=measure,
    targets=targets,
    notes=(
        "each case: the import in fresh interpreters under `python -X importtime`, the sum "
        "of its top-level modules' cumulative times; best and median of those runs",
        "aplock: `import aplock`; mp.Lock: `import multiprocessing.synchronize`; "
        "filelock: `import filelock`",
    ),
)
