"""Facts about the machine and the software a run measured, for the report."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = (
    "aplock",
    "posix_ipc",
    "anyio",
    "trio",
    "uvloop",
    "filelock",
    "portalocker",
    "fasteners",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _revision(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def facts(root: Path) -> dict[str, Any]:
    """Cores, CPU, OS, Python and the versions of aplock and every peer."""
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "executable": sys.executable,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "revision": _revision(root),
        "versions": {p: _version(p) for p in PACKAGES},
    }


def summary(info: dict[str, Any]) -> str:
    """The facts as a few lines of text."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    return (
        f"machine: {info['cpus']} CPUs ({info['cpus_usable']} usable), {info['cpu_model']}, "
        f"{info['os']}\n"
        f"python:  {info['python']}\n"
        f"load:    {' '.join(str(x) for x in info['load_average'])} (1/5/15 min) at start\n"
        f"commit:  {info['revision']}\n"
        f"versions: {versions}"
    )
