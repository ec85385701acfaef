"""Long checks that run as a child process while the rest of the suite runs.

Some checks are one long command whose output several tests read (the model's checks,
the benchmark harness's smoke run). Each is declared here as a ``Job`` by the module
whose fixture reads it; once collection has selected a test that uses that fixture,
``start_for`` starts the command at the lowest CPU priority, so that it only takes the
CPU the other tests leave idle, and the fixture waits for it with ``Job.wait``. Its
output goes to files in a directory of the job's own (``Job.scratch``), so that nothing
blocks however much it writes; ``{scratch}`` in an argument stands for that directory.
``stop_all`` kills and reaps whatever still runs when the session ends, and removes the
jobs' directories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Every job declared so far, by the name of the fixture that reads it.
JOBS: dict[str, Job] = {}


@dataclass
class Job:
    """One command, started at most once per session, whose result fixtures wait for."""

    fixture: str
    argv: Sequence[str]
    cwd: str | None = None
    env: Mapping[str, str] | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _result: subprocess.CompletedProcess[str] | None = field(default=None, repr=False)
    _scratch: str | None = field(default=None, repr=False)

    @property
    def scratch(self) -> str:
        """The directory that ``{scratch}`` in the command stands for."""
        assert self._scratch is not None, f"the job of {self.fixture} was not started"
        return self._scratch

    def start(self) -> None:
        """Start the command (at the lowest priority) unless it has been started."""
        if self._proc is not None or self._result is not None:
            return
        nice = ["nice", "-n", "19"] if shutil.which("nice") else []
        self._scratch = tempfile.mkdtemp(prefix="aplock-tests-")
        argv = [arg.replace("{scratch}", self._scratch) for arg in self.argv]
        out, err = self._files()
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            self._proc = subprocess.Popen(
                [*nice, *argv],
                cwd=self.cwd,
                env=None if self.env is None else dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                # A process group of its own, so that stop() can kill the command's
                # children too; the same session, so that the kernel's scheduler (with
                # autogroups, one per session) honours its low priority against the tests.
                process_group=0,
            )

    def _files(self) -> tuple[str, str]:
        return os.path.join(self.scratch, "stdout"), os.path.join(self.scratch, "stderr")

    def wait(self, timeout: float) -> subprocess.CompletedProcess[str]:
        """Start the command if need be and wait for it; its exit status and output.

        Raises ``subprocess.TimeoutExpired`` (after killing it) if it runs longer than
        *timeout* seconds from now.
        """
        if self._result is None:
            self.start()
            assert self._proc is not None
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                raise
            out, err = self._files()
            self._result = subprocess.CompletedProcess(
                list(self.argv), self._proc.returncode, _read(out), _read(err)
            )
            self._proc = None
        return self._result

    def stop(self) -> None:
        """Kill the command and its children if it still runs, reap it, and remove its
        scratch directory."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
            self._proc = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def job(fixture: str, argv: Sequence[str], **options: Any) -> Job:
    """Declare the job that fixture *fixture* reads (once per name)."""
    if fixture not in JOBS:
        JOBS[fixture] = Job(fixture, argv, **options)
    return JOBS[fixture]


def start_for(items: Iterable[Any]) -> list[str]:
    """Start the jobs whose fixtures the selected test *items* use; return their names."""
    used = {name for item in items for name in getattr(item, "fixturenames", ())}
    started = [name for name in JOBS if name in used]
    for name in started:
        JOBS[name].start()
    return started


def stop_all() -> None:
    """Kill and reap every job that still runs; remove every job's directory."""
    for each in JOBS.values():
        each.stop()
