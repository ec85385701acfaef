"""The ``aplock`` command, end to end as a subprocess (its argument checks in process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import aplock
from aplock._cli import inspect as _inspect
from aplock._cli.command import main
from aplock._names import posix_names
from aplock._posix import record as _state
from aplock.startup import FileMarker
from tests.cli.conftest import NOBODY, Run
from tests.support import private_shm, workers
from tests.support.procs import SPAWN, kill, running

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, errors: str = "strict") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aplock", *args],
        capture_output=True,
        text=True,
        errors=errors,
        timeout=120,
        check=False,
    )


def cli_here(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command's ``main`` in this process: for the cases that only check the
    arguments (usage errors, help), which touch no lock and need no process of their own."""
    try:
        code: Any = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def listed(name: str) -> dict[str, Any] | None:
    out = cli("list", "--json")
    assert out.returncode == 0, out.stderr
    return next((lock for lock in json.loads(out.stdout) if lock["name"] == name), None)


def test_list_and_show_a_held_lock(lock_name: str) -> None:
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        entry = listed(lock_name)
        assert entry is not None
        assert entry["locked"] is True
        assert entry["holder_pid"] == proc.pid
        assert entry["holder_alive"] is True
        assert entry["generation"] == 1
        assert entry["held_for"] >= 0
        assert proc.pid in entry["users"]
        assert entry["removable"] is False
        table = cli("list")
        assert table.returncode == 0
        assert "NAME" in table.stdout
        assert lock_name in table.stdout
        assert f"{proc.pid} (alive)" in table.stdout
        show = cli("show", lock_name)
        assert show.returncode == 0
        assert "held" in show.stdout
        kill(proc)
        proc.join(10)
        dead = json.loads(cli("show", lock_name, "--json").stdout)
        assert dead["holder_alive"] is False
        assert dead["removable"] is True
        assert "DEAD" in cli("show", lock_name).stdout


def test_show_missing_lock_exits_1(lock_name: str) -> None:
    out = cli("show", lock_name)
    assert out.returncode == 1
    assert "no lock named" in out.stderr


def test_clean_refuses_a_live_holder_unless_forced(lock_name: str) -> None:
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        refused = cli("clean", lock_name)
        assert refused.returncode == 1
        assert "refused" in refused.stdout
        assert "--force" in refused.stdout
        assert listed(lock_name) is not None
        forced = cli("clean", lock_name, "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        assert [e["name"] for e in json.loads(forced.stdout)["removed"]] == [lock_name]
        assert listed(lock_name) is None
        kill(proc)


def test_clean_removes_free_and_dead_locks_not_open_elsewhere(lock_name: str) -> None:
    free, dead = lock_name + ".free", lock_name + ".dead"
    aplock.Lock(free).close()
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, dead, acquired) as (proc,):
        assert acquired.wait(60)
        kill(proc)
        proc.join(10)
    out = cli("clean", free, dead, "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(e["name"] for e in json.loads(out.stdout)["removed"]) == sorted([free, dead])
    assert aplock.unlink(free) is False
    assert aplock.unlink(dead) is False


def test_clean_refuses_a_free_lock_that_a_process_has_open(lock_name: str) -> None:
    opened, stop = SPAWN.Event(), SPAWN.Event()
    with running(workers.keep_open, lock_name, opened, stop) as (proc,):
        assert opened.wait(60)
        out = cli("clean", lock_name)
        assert out.returncode == 1
        assert f"open in pid {proc.pid}" in out.stdout
        stop.set()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_here(capsys).returncode == 2
    assert cli_here(capsys, "frobnicate").returncode == 2
    assert cli("--version").stdout.startswith("aplock ")  # the entry point, end to end


def test_repair_frees_a_stuck_lock_and_only_a_stuck_lock(lock_name: str) -> None:
    with running(workers.die_before_recording, lock_name) as (proc,):
        proc.join(30)
    entry = listed(lock_name)
    assert entry is not None
    assert entry["stuck"] is True
    assert "stuck" in cli("show", lock_name).stdout
    lock = aplock.Lock(lock_name, recovery_interval=0.05)
    assert lock.acquire(timeout=0.5) is False  # nobody recorded: no waiter can recover it
    out = cli("repair", lock_name, "--observe", "0.2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "repaired" in out.stdout
    assert lock.acquire(timeout=5)
    refused = cli("repair", lock_name, "--observe", "0.2")
    assert refused.returncode == 1
    assert "not stuck" in refused.stdout
    lock.release()
    assert cli("repair", lock_name + ".missing").returncode == 1


# -- another user's locks -----------------------------------------------------------------


def test_another_users_lock_breaks_nothing(lock_name: str, as_nobody: Run) -> None:
    theirs, mine = lock_name, lock_name + ".mine"
    aplock.Lock(theirs).close()  # root's, mode 0600: uid 65534 can read none of it
    base = posix_names(theirs).base
    try:
        made = as_nobody("-c", f"import aplock; aplock.Lock({mine!r}).close()")
        assert made.returncode == 0, made.stderr

        out = as_nobody("-m", "aplock", "list", "--json")
        assert out.returncode == 0, out.stderr
        entries = {e["base"]: e for e in json.loads(out.stdout)}
        assert entries[base]["readable"] is False
        assert entries[base]["owner_uid"] == 0
        assert entries[base]["removable"] is False
        own = entries[posix_names(mine).base]
        assert (own["name"], own["readable"], own["owner_uid"]) == (mine, True, NOBODY)

        table = as_nobody("-m", "aplock", "list")
        assert table.returncode == 0, table.stderr
        assert any(
            base in line and "unreadable (uid 0)" in line for line in table.stdout.splitlines()
        )

        show = as_nobody("-m", "aplock", "show", theirs)
        assert show.returncode == 0, show.stderr
        assert theirs in show.stdout
        assert "unreadable (uid 0)" in show.stdout
        show_mine = as_nobody("-m", "aplock", "show", mine)
        assert show_mine.returncode == 0, show_mine.stderr
        assert "free" in show_mine.stdout

        refused = as_nobody("-m", "aplock", "clean", theirs)
        assert refused.returncode == 1
        assert refused.stderr == ""
        assert "belongs to uid 0" in refused.stdout
        cleaned = as_nobody("-m", "aplock", "clean", mine)
        assert cleaned.returncode == 0, cleaned.stderr
        assert f"removed {mine!r}" in cleaned.stdout
        assert aplock.unlink(mine) is False

        sweep = as_nobody("-m", "aplock", "clean", "--json")
        assert sweep.returncode == 0, sweep.stderr
        assert base in [e["base"] for e in json.loads(sweep.stdout)["refused"]]
        assert os.path.exists(f"/dev/shm/{base}.s")
    finally:
        aplock.unlink(mine)


def test_a_shared_lock_is_not_removed_by_a_user_who_cannot_see_its_users(
    lock_name: str, as_nobody: Run
) -> None:
    made = as_nobody("-c", f"import aplock; aplock.Lock({lock_name!r}, mode=0o666).close()")
    assert made.returncode == 0, made.stderr
    opened = aplock.Lock(lock_name, mode=0o666)  # root's process: hidden from uid 65534
    try:
        refused = as_nobody("-m", "aplock", "clean", lock_name)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "its mode 0o666 lets other users open it" in refused.stdout
        assert (
            json.loads(as_nobody("-m", "aplock", "show", lock_name, "--json").stdout)["removable"]
            is False
        )
        forced = as_nobody("-m", "aplock", "clean", lock_name, "--force")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert f"removed {lock_name!r}" in forced.stdout
    finally:
        opened.close()


def test_a_record_of_another_layout_or_no_record_at_all_breaks_nothing(lock_name: str) -> None:
    foreign, fifo = lock_name + ".foreign", lock_name + ".fifo"
    record = f"/dev/shm/{posix_names(foreign).base}.s"
    pipe = f"/dev/shm/{posix_names(fifo).base}.s"
    with open(record, "wb") as f:
        f.write((99).to_bytes(8, sys.byteorder) + b"\xff" * (_state.SIZE - 8))  # layout 99
    os.mkfifo(pipe)  # opening it to read would wait for a writer
    try:
        out = cli("list", "--json")
        assert out.returncode == 0, out.stderr
        entries = {e["base"]: e for e in json.loads(out.stdout)}
        assert posix_names(fifo).base not in entries
        entry = entries[posix_names(foreign).base]
        assert (entry["readable"], entry["layout"], entry["removable"]) == (False, 99, False)
        assert "unreadable (layout 99)" in cli("show", foreign).stdout
        refused = cli("clean", foreign)
        assert refused.returncode == 1
        assert "cannot be understood (layout version 99)" in refused.stdout
        assert os.path.exists(record)
    finally:
        os.unlink(record)
        os.unlink(pipe)


# -- bad names and odd names --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("show", ""), ("show", "", "--json"), ("clean", ""), ("clean", "x.y", ""), ("repair", "")],
    ids=["show", "show-json", "clean", "clean-second", "repair"],
)
def test_an_empty_name_is_a_one_line_usage_error(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    out = cli_here(capsys, *args)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("aplock: ")
    assert "must not be empty" in out.stderr


@pytest.mark.parametrize("observe", ["-1", "0", "nan", "inf"])
def test_a_bad_observation_time_is_a_one_line_usage_error(
    observe: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = cli_here(capsys, "repair", "some.lock", "--observe", observe)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert "--observe must be a number of seconds above 0" in out.stderr


def test_list_escapes_control_characters_but_json_keeps_the_name(lock_name: str) -> None:
    odd = lock_name + "\x00nul\nnewline\x1b[31mesc\udcffsurrogate é日本"
    aplock.Lock(odd).close()
    try:
        table = cli("list", errors="surrogateescape")
        assert table.returncode == 0, table.stderr
        assert "\x00" not in table.stdout
        assert "\x1b" not in table.stdout
        assert not any("\udc80" <= c <= "\udcff" for c in table.stdout)  # undecodable bytes
        line = next(line for line in table.stdout.splitlines() if lock_name in line)
        assert lock_name + r"\x00nul\nnewline\x1b[31mesc\udcffsurrogate é日本" in line
        entry = listed(odd)
        assert entry is not None
        assert entry["name"] == odd
    finally:
        aplock.unlink(odd)


# -- clean: sweeps and run-once markers ---------------------------------------------------


SWEEP = r"""
import json, os, subprocess, sys
import aplock
from aplock.startup import FileMarker

def cli(*args):
    r = subprocess.run([sys.executable, "-m", "aplock", *args], capture_output=True,
                       text=True, timeout=60)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}

holder = subprocess.Popen(
    [sys.executable, "-c", "import sys, aplock; l = aplock.Lock('sweep.busy'); l.acquire(); "
     "print('ready', flush=True); sys.stdin.read(); l.release(); l.close()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
try:
    assert holder.stdout.readline() == "ready\n"
    aplock.Lock("sweep.idle").close()
    FileMarker().mark_done("sweep.idle", "v1")
    FileMarker().mark_done("sweep.busy", "v1")
    result = {"sweep": cli("clean"), "named": cli("clean", "sweep.busy")}
finally:
    holder.stdin.close()
    holder.wait(30)
result["left"] = sorted(os.listdir("/dev/shm"))
print(json.dumps(result))
"""


def test_a_sweep_that_refuses_locks_in_use_succeeds_and_says_so() -> None:
    result = private_shm.run_script(SWEEP)
    sweep, named = result["sweep"], result["named"]
    assert sweep["rc"] == 0, sweep
    assert "removed 'sweep.idle' and its 1 run-once marker" in sweep["out"]
    assert "refused 'sweep.busy': open in pid" in sweep["out"]
    assert named["rc"] == 1, named
    assert "refused 'sweep.busy'" in named["out"]
    busy = posix_names("sweep.busy").base
    assert result["left"] == sorted(
        [
            f"{busy}.s",
            f"sem.{busy}",
            f"sem.{busy}.h",
            os.path.basename(FileMarker().path("sweep.busy", "v1")),
        ]
    )


def test_clean_removes_the_run_once_markers_of_the_lock_it_removes(lock_name: str) -> None:
    other = lock_name + ".other"
    markers = FileMarker()
    aplock.Lock(lock_name).close()
    aplock.Lock(other).close()
    try:
        for key in ("v1", "v2"):
            markers.mark_done(lock_name, key)
        markers.mark_done(other, "v1")
        found = _inspect.find(lock_name)
        assert found is not None
        expected = sorted(markers.path(lock_name, key) for key in ("v1", "v2"))
        assert _inspect.marker_files(found) == expected
        out = cli("clean", lock_name, "--json")
        assert out.returncode == 0, out.stderr
        (removed,) = json.loads(out.stdout)["removed"]
        assert removed["name"] == lock_name
        assert removed["markers"] == expected
        assert not markers.is_done(lock_name, "v1")
        assert not markers.is_done(lock_name, "v2")
        assert markers.is_done(other, "v1")
        aplock.Lock(lock_name).close()
        markers.mark_done(lock_name, "v3")
        text = cli("clean", lock_name)
        assert text.returncode == 0, text.stderr
        assert f"removed {lock_name!r} and its 1 run-once marker" in text.stdout
        assert not markers.is_done(lock_name, "v3")
    finally:
        markers.clear(lock_name)
        markers.clear(other)
        aplock.unlink(other)


# -- repair: what it promises -------------------------------------------------------------


def _words(text: str) -> str:
    return " ".join(text.split())


def test_repair_help_and_the_how_to_say_the_same_thing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # as in a pipe: argparse wraps to the terminal
    usage, description, *_ = cli_here(capsys, "repair", "--help").stdout.split("\n\n")
    assert usage.startswith("usage: aplock repair")
    description = _words(description)
    how_to = _words((ROOT / "docs" / "how-to" / "inspect-and-clean.md").read_text())
    assert "without restarting its users" in description
    assert "without restarting its users" in how_to
    caveat = description[description.find("It is safe unless") :]
    assert caveat.startswith("It is safe unless a user of the lock is paused (SIGSTOP, a debugger)")
    assert caveat in how_to
    for text in (description, how_to, _words(cli_here(capsys, "--help").stdout)):
        assert "stop or pause its users first" not in text
        assert "stop the lock's users first" not in text
