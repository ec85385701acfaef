"""Fixtures of the command's tests: running it as another user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

import pytest

#: The uid and gid the tests run the command as when they need another user.
NOBODY = 65534
SETPRIV_ARGS = (f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def as_nobody() -> Run:
    """Run ``python ARGS`` as uid/gid 65534; skip when that is not possible here."""
    if os.geteuid() != 0:
        pytest.skip("needs root: it creates a lock as root and inspects it as uid 65534")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv (util-linux) to run the command as another user")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [setpriv, *SETPRIV_ARGS, sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd="/",
        )

    probe = run("-c", "import aplock.__main__")
    if probe.returncode != 0:
        pytest.skip(
            f"uid {NOBODY} cannot import aplock from {sys.executable} (make the venv and "
            f"the source tree readable by it): {probe.stderr.strip()[-300:]}"
        )
    return run
