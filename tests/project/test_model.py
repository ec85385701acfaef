"""The Promela model of the lock protocol (model/), checked with spin.

Each check of ``model/checks.tsv`` is one property in one scenario; today's code is
expected to pass some and to fail others (the known defects). A check expected to fail
is marked ``xfail(strict=True)``: once the protocol is fixed it passes, the mark turns it
into a failure, and the fix flips the check's ``today`` column to ``pass``.

The quick checks run together, two at a time, in one call of ``model/run.py``; so do
the seeded bugs of the three original defects and of the new code (``CORE_MUTANTS``).
Both calls start in the background, at low priority, as soon as collection has selected
a test that reads them (``tests.support.background``), and run while the other tests do.
They are marked ``model`` and run with ``-m model`` (CI's model step), not in the normal
run; the check that the model's code references still match the code does. The stress
checks (bigger configurations) and the other seeded bugs run under ``-m stress``.
Without spin or a C compiler the checks skip, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import background

MODEL = Path(__file__).resolve().parents[2] / "model"
RUN = MODEL / "run.py"


def _rows(table: str) -> list[list[str]]:
    lines = (MODEL / table).read_text().splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


#: name -> (today, tier, what) for every check of checks.tsv.
CHECKS = {row[0]: (row[3], row[4], row[5]) for row in _rows("checks.tsv")}
#: (define, check, bug) for every seeded bug of mutants.tsv.
MUTANTS = [(row[0], row[1], row[2]) for row in _rows("mutants.tsv")]
#: The seeded bugs checked with the quick checks (``-m model``): the three defects the
#: protocol fixed (pid compared instead of the key, a foreign /proc trusted, no intents)
#: and three bugs of the new code.
CORE_MUTANTS = (
    "MUT_FAST_PID_ONLY",
    "MUT_FOREIGN_TRUSTED",
    "MUT_NO_INTENT",
    "MUT_SETTLE_FINISHES_TAKING",
    "MUT_HOLDER_NEVER_RELEASING",
    "MUT_SETTLE_ONE_READ",
)


def _missing_tool() -> str | None:
    if shutil.which("spin") is None:
        return "spin is not installed (apt-get install spin)"
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        return "no C compiler to build spin's verifier (apt-get install gcc)"
    return None


def _require_tools() -> None:
    missing = _missing_tool()
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the model's checks must run in CI: {missing}")
    pytest.skip(missing)


def _parse(done: subprocess.CompletedProcess[str], args: tuple[str, ...]) -> list[dict[str, Any]]:
    """The results of a finished model/run.py, one per check."""
    if done.returncode not in (0, 1):
        pytest.fail(f"model/run.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _run(*args: str, timeout: float) -> list[dict[str, Any]]:
    """Run model/run.py with *args* and ``--json``; the results, one per check."""
    done = subprocess.run(
        [sys.executable, str(RUN), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return _parse(done, args)


def _in_background(fixture: str, *args: str) -> background.Job:
    """model/run.py with *args* and ``--json``, started when collection selects a test
    that uses *fixture* (see ``tests.support.background``)."""
    return background.job(fixture, [sys.executable, str(RUN), "--json", *args])


def _verdict(result: dict[str, Any]) -> str:
    return (
        f"{result['name']}: {result['errors']} errors, {result['states']} states, depth "
        f"{result['depth']}, counterexample of {result['steps']} steps"
        + (f" ({result['message']})" if result["message"] else "")
        + f"; see: model/run.sh --trail {result['name']}"
    )


def _param(name: str) -> Any:
    today, _, what = CHECKS[name]
    if today == "fail":
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=what))
    return name


QUICK = [_param(name) for name, (_, tier, _) in CHECKS.items() if tier == "quick"]
STRESS = [_param(name) for name, (_, tier, _) in CHECKS.items() if tier == "stress"]


QUICK_ARGS = ("-j", "2")
QUICK_JOB = _in_background("quick_results", *QUICK_ARGS)


@pytest.fixture(scope="session")
def quick_results() -> dict[str, dict[str, Any]]:
    """Every quick check, run once for the session (two at a time, in the background)."""
    _require_tools()
    return {r["name"]: r for r in _parse(QUICK_JOB.wait(timeout=420), QUICK_ARGS)}


@pytest.mark.model
@pytest.mark.timeout(480)
@pytest.mark.parametrize("name", QUICK)
def test_model_check(name: str, quick_results: dict[str, dict[str, Any]]) -> None:
    """The property holds in the scenario: spin finds no counterexample."""
    result = quick_results[name]
    assert not result["message"], _verdict(result)
    assert result["errors"] == 0, _verdict(result)


@pytest.mark.stress
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", STRESS)
def test_model_check_stress(name: str) -> None:
    """The bigger configurations: more acquisitions, more deaths."""
    _require_tools()
    (result,) = _run(name, timeout=870)
    assert not result["message"], _verdict(result)
    assert result["errors"] == 0, _verdict(result)


CORE_ARGS = ("--mutants", "-j", "2", *(a for d in CORE_MUTANTS for a in ("--mutant", d)))
CORE_JOB = _in_background("core_mutant_results", *CORE_ARGS)


@pytest.fixture(scope="session")
def core_mutant_results() -> dict[str, dict[str, Any]]:
    """The core seeded bugs, each against its check, run once (two at a time, in the
    background)."""
    _require_tools()
    return {r["name"]: r for r in _parse(CORE_JOB.wait(timeout=420), CORE_ARGS)}


def _check_caught(define: str, check: str, bug: str, result: dict[str, Any]) -> None:
    assert not result["message"], _verdict(result)
    assert result["errors"] > 0, f"{check} does not notice {define}: {bug}"


def _mutants(core: bool) -> list[Any]:
    return [pytest.param(*m, id=m[0]) for m in MUTANTS if (m[0] in CORE_MUTANTS) == core]


@pytest.mark.model
@pytest.mark.timeout(480)
@pytest.mark.parametrize(("define", "check", "bug"), _mutants(core=True))
def test_model_catches_seeded_bug(
    define: str, check: str, bug: str, core_mutant_results: dict[str, dict[str, Any]]
) -> None:
    """Each seeded bug makes its check find a counterexample: the property has teeth."""
    assert CHECKS[check][0] == "pass", f"{check} must pass today to show that {define} is caught"
    _check_caught(define, check, bug, core_mutant_results[define])


@pytest.mark.stress
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("define", "check", "bug"), _mutants(core=False))
def test_model_catches_seeded_bug_stress(define: str, check: str, bug: str) -> None:
    """The other seeded bugs, one at a time."""
    _require_tools()
    assert CHECKS[check][0] == "pass", f"{check} must pass today to show that {define} is caught"
    (result,) = _run("-D", define, check, timeout=270)
    _check_caught(define, check, bug, result)


@pytest.mark.timeout(60)
def test_model_mirrors_the_code() -> None:
    """Every step's code reference (``FILE:LINE Function: code``) is in that function.

    The references are checked against the commit the model mirrors (model/MIRRORS).
    ``model/run.sh --refs`` lists the steps whose code has changed since, in src/aplock:
    update them, and MIRRORS, when the model follows the protocol to a new commit.
    """
    if shutil.which("git") is None or not (MODEL.parent / ".git").exists():
        pytest.skip("the model's references are checked against a commit: no git history")
    done = subprocess.run(
        [sys.executable, str(RUN), "--refs", "--at", "mirrored"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    if done.returncode == 2:
        pytest.skip(f"the mirrored commit is not in this clone: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
