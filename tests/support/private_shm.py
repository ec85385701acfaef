"""Scripts run with a private, empty ``/dev/shm`` (a mount namespace of their own).

For tests that sweep the whole of ``/dev/shm`` (``aplock clean`` with no name): what
they remove or keep is then only what the script made.
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

ROOT = Path(__file__).resolve().parents[2]


def private_shm() -> list[str]:
    """A command prefix that runs a command with a private, empty /dev/shm (or skip)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare (util-linux) for a private /dev/shm")
    prefix = [unshare, "--mount"] if os.geteuid() == 0 else [unshare, "-r", "--mount"]
    prefix += ["sh", "-c", 'mount -t tmpfs tmpfs /dev/shm && exec "$@"', "sh"]
    probe = subprocess.run(
        [*prefix, "true"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private /dev/shm: {probe.stderr.strip()}")
    return prefix


def run_script(script: str) -> Any:
    """Run the Python *script* there, from the checkout; the JSON it prints last."""
    out = subprocess.run(
        [*private_shm(), sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)
