"""The documentation cannot rot: its code runs, its docstring examples pass, the site builds.

- Every ```python block in README.md and docs/**/*.md runs as a program of its own, in a
  fresh interpreter with warnings as errors. A block preceded by the line
  ``<!-- docs-test: skip -->`` is skipped (kept for the few that need a second terminal
  or a service the tests do not have); one preceded by ``<!-- docs-test: postgres -->``
  runs with ``$DATABASE_URL`` set to the test PostgreSQL server, and is skipped like the
  backend's own tests when there is none. ``--8<-- "path"`` lines (snippets) are
  replaced by the file, as the site build does. The /dev/shm objects of the locks a
  block names are removed before and after it.
- Every ``>>>`` example in the docstrings of aplock's modules passes under doctest.
- ``mkdocs build --strict`` succeeds.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import importlib
import io
import os
import pkgutil
import re
import subprocess
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

import aplock
from aplock._names import MAX_LENGTH, posix_names
from tests.conftest import SHM, aplock_objects
from tests.support.pg_helpers import require_server

ROOT = Path(__file__).resolve().parents[2]
_MARKER = re.compile(r"^<!-- docs-test: (?P<marker>skip|postgres) -->$")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>.*)$")
_SNIPPET = re.compile(r"""^[ \t]*--8<--[ \t]+["'](?P<path>[^"']+)["'][ \t]*$""")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    line: int
    language: str
    code: str
    marker: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _language(info: str) -> str:
    first = info.strip().split(maxsplit=1)[0] if info.strip() else ""
    return first.strip("{}").lstrip(".").lower()


def _expand_snippets(code: str) -> str:
    out = []
    for line in code.splitlines():
        match = _SNIPPET.match(line)
        out.append((ROOT / match["path"]).read_text() if match else line + "\n")
    return "".join(out)


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with snippets expanded."""
    lines = path.read_text().splitlines()
    found = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        end = i + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and not lines[end].strip().strip(fence[0])
        ):
            end += 1
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end])
        before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        marked = _MARKER.match(before)
        marker = marked["marker"] if marked else None
        found.append(Block(path, i + 1, _language(opening["info"]), _expand_snippets(body), marker))
        i = end + 1
    return found


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [f for f in files if f.exists()]


def python_blocks() -> list[Block]:
    return [b for f in markdown_files() for b in fenced_blocks(f) if b.language in ("python", "py")]


BLOCKS = python_blocks()


def remove_objects_of(code: str) -> None:
    """Remove the /dev/shm objects of every lock whose name is a string literal in *code*.

    Examples name their locks with literals; objects of other names (other processes on
    the host may be using aplock) are left alone.
    """
    names = {
        node.value
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and 0 < len(node.value) <= MAX_LENGTH
    }
    bases = {posix_names(name).base for name in names}
    for entry in aplock_objects():
        stem = entry.removeprefix("sem.")
        if any(stem == base or stem.startswith(f"{base}.") for base in bases):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM, entry))


def test_the_docs_have_code_to_run() -> None:
    assert len(BLOCKS) >= 20
    skipped = [b.id for b in BLOCKS if b.marker == "skip"]
    assert len(skipped) <= 5, f"too many untested examples: {skipped}"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_code_block_runs(block: Block, tmp_path: Path) -> None:
    env = dict(os.environ)
    if block.marker == "skip":
        pytest.skip("marked docs-test: skip")
    if block.marker == "postgres":
        env["DATABASE_URL"] = require_server()
    script = tmp_path / "example.py"
    script.write_text(block.code)
    remove_objects_of(block.code)
    try:
        result = subprocess.run(
            [sys.executable, "-W", "error", str(script)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
    finally:
        remove_objects_of(block.code)
    assert result.returncode == 0, (
        f"{block.id} failed:\n{block.code}\n--- stdout:\n{result.stdout}\n"
        f"--- stderr:\n{result.stderr}"
    )


def _modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(aplock.__path__, "aplock.")
        if m.name != "aplock.__main__"
    )


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples(module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # an optional dependency is missing
        pytest.skip(f"{module_name} cannot be imported: {exc}")
    out = io.StringIO()
    with redirect_stdout(out):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, out.getvalue()


@pytest.mark.timeout(120)
def test_site_builds_without_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "reference" / "index.html").exists()
