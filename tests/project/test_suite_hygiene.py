"""The suite's own checks: the end-of-run /dev/shm check blames only this run's leftovers,
and the test environment declares what the docs build needs.

The /dev/shm tests run pytest in a subprocess on a tiny test directory whose
``conftest.py`` is this suite's, so that the inner run has a session tag of its own.
"""

from __future__ import annotations

import os
import re
import tomllib
import uuid
from pathlib import Path

import pytest

import aplock
from tests.conftest import SESSION, SHM, aplock_objects

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
CONFTEST = ROOT / "tests" / "conftest.py"

#: The inner run's tests, told by environment variables which names to use.
INNER_TESTS = """
import os
import subprocess
import sys

import pytest

import aplock
from conftest import SESSION

OPEN_AND_KEEP = "import aplock, sys; aplock.Lock(sys.argv[1]).close()"


@pytest.fixture(scope="session")
def left_by_a_child():
    # Session-scoped, so that no test's own leak check sees the object appear.
    tag = os.environ.get("LEAK_TAG")
    if tag:
        name = f"test.{SESSION}.{tag}"
        subprocess.run([sys.executable, "-c", OPEN_AND_KEEP, name], check=True, timeout=60)
    yield


def test_passes(left_by_a_child):
    other = os.environ.get("OTHER_PROGRAM_LOCK")
    if other:
        # What another program on the host does meanwhile: its names carry no tag of ours.
        aplock.Lock(other).close()
"""


def inner_run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_inner=INNER_TESTS)
    return pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
        *args,
        timeout=120,
    )


def remove_objects_containing(tag: str) -> None:
    for entry in aplock_objects():
        if tag in entry:
            os.unlink(os.path.join(SHM, entry))


def test_objects_of_other_programs_do_not_fail_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = f"other-program.{SESSION}.{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OTHER_PROGRAM_LOCK", other)
    try:
        result = inner_run(pytester)
        assert any(other.replace(".", "_") in e for e in aplock_objects())
    finally:
        aplock.unlink(other)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.no_fnmatch_line("*left behind*")
    result.stdout.fnmatch_lines(["*without this run's session tag*not counted*"])


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "two-workers"])
def test_objects_left_by_this_run_fail_it_and_say_why(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str]
) -> None:
    # With -n, a worker's leftover is the run's: the controller finds it once all ended.
    tag = f"{SESSION}-{uuid.uuid4().hex[:8]}"
    other = f"other-program.{SESSION}.{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("LEAK_TAG", tag)
    monkeypatch.setenv("OTHER_PROGRAM_LOCK", other)
    try:
        result = inner_run(pytester, *workers)
    finally:
        remove_objects_containing(tag)
        aplock.unlink(other)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*aplock objects left behind*",
            "*every test passed, but this run fails: this run's tests*left 3 aplock objects*",
        ]
    )
    listed = [
        line.strip() for line in out.splitlines() if line.strip().startswith(("aplock.", "sem."))
    ]
    assert len(listed) == 3, out
    assert all(tag in entry for entry in listed), out
    assert other.replace(".", "_") not in out, out


def test_the_docs_build_gets_a_signature_formatter() -> None:
    # mkdocstrings formats the separate signatures with Black or Ruff; without either it
    # says so on every build and leaves them unformatted.
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    plain = {name: [d for d in deps if isinstance(d, str)] for name, deps in groups.items()}
    (docs,) = [d for d in plain.values() if any(x.startswith("mkdocstrings") for x in d)]
    names = {re.split(r"[\[<>=!~ ;]", d, maxsplit=1)[0].lower() for d in docs}
    assert names & {"ruff", "black"}, docs
