"""Build the optional C extension ``aplock._posix._fast`` (the lock's compiled fast path).

Compiled with the interpreter's own compiler and headers (``sysconfig``: ``LDSHARED``,
the include directory); where either is missing, or ``APLOCK_BUILD_PURE=1`` is set, the
build goes on without it and aplock runs on its pure-Python path. A regular wheel gets
the module (and a platform tag); an editable install gets it in the source tree, beside
``_fast.c``, where the editable path finds it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = "src/aplock/_posix/_fast.c"
PACKAGE_DIR = "aplock/_posix"


class FastPathHook(BuildHookInterface):  # type: ignore[type-arg]
    """Compile ``_fast.c``; skip it (with a warning) if that is not possible here."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if os.environ.get("APLOCK_BUILD_PURE", "") not in ("", "0"):
            self.app.display_info("aplock: APLOCK_BUILD_PURE is set: building without _fast")
            return
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        source = os.path.join(self.root, SOURCE)
        if version == "editable":
            target = os.path.join(os.path.dirname(source), f"_fast{suffix}")
            self._compile(source, target)
            return
        out = os.path.join(tempfile.mkdtemp(prefix="aplock-build-"), f"_fast{suffix}")
        if self._compile(source, out):
            build_data["force_include"][out] = f"{PACKAGE_DIR}/_fast{suffix}"
            build_data["pure_python"] = False
            build_data["infer_tag"] = True

    def _compile(self, source: str, target: str) -> bool:
        include = sysconfig.get_paths().get("include", "")
        linker = os.environ.get("LDSHARED") or sysconfig.get_config_var("LDSHARED")
        if not linker or not os.path.exists(os.path.join(include, "Python.h")):
            self.app.display_warning(
                "aplock: no compiler or Python headers: building without the compiled "
                "fast path (aplock runs on its pure-Python path)"
            )
            return False
        command = [
            *shlex.split(linker),
            "-fPIC",
            "-O2",
            "-Wall",
            "-I",
            include,
            source,
            "-o",
            target,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as exc:
            self.app.display_warning(f"aplock: cannot run the compiler ({exc}): no fast path")
            return False
        if done.returncode != 0:
            self.app.display_warning(
                "aplock: compiling the fast path failed: building without it\n"
                f"{shlex.join(command)}\n{done.stderr}"
            )
            return False
        return True
