"""The ``aplock`` command on leaders: list and show a leadership, and its stale leader
file; clean removes the file with its lock, or alone when its lock is gone or free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import aplock
from aplock._leader_sides import LeaderFile
from tests.cli.conftest import Run
from tests.support import leader_workers, private_shm, workers
from tests.support.procs import SPAWN, kill, running

pytestmark = pytest.mark.timeout(90)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aplock", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def listed(name: str) -> dict[str, Any] | None:
    out = cli("list", "--json")
    assert out.returncode == 0, out.stderr
    return next((e for e in json.loads(out.stdout) if e["name"] == name), None)


def row(table: str, name: str) -> str:
    """The table's line of the lock *name*."""
    return next(line for line in table.splitlines() if line.startswith(name + " "))


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait(30)
    return proc.pid


@pytest.fixture
def leader_file(lock_name: str) -> Iterator[LeaderFile]:
    """The leader file of the test's lock, removed after the test if it is left."""
    file = LeaderFile(lock_name)
    yield file
    file.clear()


def test_list_and_show_a_leader_then_its_stale_file_which_clean_removes(
    lock_name: str, leader_file: LeaderFile
) -> None:
    receiver, sender = SPAWN.Pipe(duplex=False)
    started = time.time()
    with running(leader_workers.lead_until_killed, lock_name, sender) as (proc,):
        assert receiver.poll(60), "the leader's job never ran"
        token = receiver.recv()
        entry = listed(lock_name)
        assert entry is not None
        leader = entry["leader"]
        assert (leader["pid"], leader["token"]) == (proc.pid, token)
        assert (leader["stale"], leader["alive"], leader["stale_reason"]) == (False, True, None)
        assert token == entry["generation"] == 1
        assert leader["name"] == lock_name
        assert leader["path"] == leader_file.path
        assert started - 1 <= leader["since"] <= time.time()
        table = cli("list")
        assert table.returncode == 0, table.stderr
        assert "LEADER" in table.stdout.splitlines()[0]
        assert f"{proc.pid}, token {token}, since " in row(table.stdout, lock_name)
        show = cli("show", lock_name)
        assert show.returncode == 0, show.stderr
        assert f"leader: pid {proc.pid}, token {token}, since " in show.stdout

        kill(proc)
        proc.join(10)
        stale = listed(lock_name)
        assert stale is not None
        assert stale["leader"]["stale"] is True
        assert stale["leader"]["alive"] is False
        assert stale["leader"]["stale_reason"] == f"pid {proc.pid} is dead"
        assert f"stale: pid {proc.pid} is dead" in row(cli("list").stdout, lock_name)
        assert "stale leader file: " in cli("show", lock_name).stdout

        cleaned = cli("clean", lock_name)
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        assert f"removed {lock_name!r} and its leader file" in cleaned.stdout
        assert not os.path.exists(leader_file.path)
        assert listed(lock_name) is None


def test_forced_clean_removes_a_live_leaders_lock_and_its_leader_file(
    lock_name: str, leader_file: LeaderFile
) -> None:
    receiver, sender = SPAWN.Pipe(duplex=False)
    with running(leader_workers.lead_until_killed, lock_name, sender) as (proc,):
        assert receiver.poll(60), "the leader's job never ran"
        receiver.recv()
        refused = cli("clean", lock_name)
        assert refused.returncode == 1
        assert f"refused {lock_name!r}: open in pid {proc.pid}" in refused.stdout
        assert "leader file" not in refused.stdout
        assert os.path.exists(leader_file.path)
        forced = cli("clean", lock_name, "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        (removed,) = json.loads(forced.stdout)["removed"]
        assert removed["leader"]["pid"] == proc.pid
        assert removed["leader_file"] == leader_file.path
        assert not os.path.exists(leader_file.path)
        assert listed(lock_name) is None
        kill(proc)


def test_a_leader_file_that_names_another_process_or_acquisition_is_stale(
    lock_name: str, leader_file: LeaderFile
) -> None:
    acquired = SPAWN.Event()
    with running(workers.hold_until_killed, lock_name, acquired) as (proc,):
        assert acquired.wait(60)
        assert proc.pid is not None
        leader_file.write(os.getpid(), time.time(), 1)  # alive, but not the holder
        entry = listed(lock_name)
        assert entry is not None
        leader = entry["leader"]
        assert (leader["pid"], leader["alive"], leader["stale"]) == (os.getpid(), True, True)
        assert leader["stale_reason"] == f"pid {os.getpid()} does not hold the lock"
        leader_file.write(proc.pid, time.time(), 5)  # the holder, another acquisition
        entry = listed(lock_name)
        assert entry is not None
        assert entry["leader"]["stale"] is True
        assert entry["leader"]["stale_reason"] == (
            "token 5 is not the lock's latest acquisition (generation 1)"
        )
        assert "stale: token 5" in row(cli("list").stdout, lock_name)
        refused = cli("clean", lock_name)
        assert refused.returncode == 1
        assert "leader file" not in refused.stdout  # the lock is held: its file stays
        assert os.path.exists(leader_file.path)
        kill(proc)


def test_clean_removes_the_stale_leader_file_of_a_free_lock_it_must_keep(
    lock_name: str, leader_file: LeaderFile
) -> None:
    opened, stop = SPAWN.Event(), SPAWN.Event()
    with running(workers.keep_open, lock_name, opened, stop) as (proc,):
        assert opened.wait(60)
        dead = dead_pid()
        leader_file.write(dead, time.time(), 1)
        entry = listed(lock_name)
        assert entry is not None
        assert entry["leader"]["stale_reason"] == f"pid {dead} is dead"
        out = cli("clean", lock_name, "--json")
        assert out.returncode == 1  # the lock itself is refused: it is open
        report = json.loads(out.stdout)
        assert [e["name"] for e in report["refused"]] == [lock_name]
        assert [f["path"] for f in report["leader_files"]["removed"]] == [leader_file.path]
        assert not os.path.exists(leader_file.path)
        kept = listed(lock_name)
        assert kept is not None
        assert kept["leader"] is None
        leader_file.write(dead, time.time(), 1)
        text = cli("clean", lock_name)
        assert f"refused {lock_name!r}: open in pid {proc.pid}" in text.stdout
        assert f"removed the stale leader file of {lock_name!r} (pid {dead} is dead)" in text.stdout
        assert not os.path.exists(leader_file.path)
        stop.set()


def test_a_leader_file_without_its_lock_breaks_nothing_and_clean_removes_it(
    lock_name: str, leader_file: LeaderFile
) -> None:
    garbage, fifo = LeaderFile(lock_name + ".garbage"), LeaderFile(lock_name + ".fifo")
    dead = dead_pid()
    leader_file.write(dead, time.time(), 7)
    with open(garbage.path, "w") as f:
        f.write("not json")
    os.mkfifo(fifo.path)  # opening it to read would wait for a writer
    try:
        table = cli("list")
        assert table.returncode == 0, table.stderr
        assert (
            f"stale leader file of {lock_name!r}: its lock is gone (it names pid {dead}, "
            "token 7, since "
        ) in table.stdout
        assert os.path.basename(garbage.path) + ": its lock is gone (not a leader record)" in (
            table.stdout
        )
        assert os.path.basename(fifo.path) not in table.stdout
        assert listed(lock_name) is None
        show = cli("show", lock_name)
        assert show.returncode == 1
        assert "no lock named" in show.stderr
        assert "its lock is gone" in show.stderr
        out = cli("clean", lock_name, lock_name + ".garbage", "--json")
        assert out.returncode == 0, out.stdout + out.stderr
        removed = json.loads(out.stdout)["leader_files"]["removed"]
        assert [f["path"] for f in removed] == [leader_file.path, garbage.path]
        assert removed[0]["stale_reason"] == "its lock is gone"
        assert not os.path.exists(leader_file.path)
        assert not os.path.exists(garbage.path)
        leader_file.write(dead, time.time(), 7)
        text = cli("clean", lock_name)
        assert text.returncode == 0, text.stderr
        assert f"removed the stale leader file of {lock_name!r} (its lock is gone)" in text.stdout
        assert cli("clean", lock_name).returncode == 1  # nothing of it is left
        assert os.path.exists(fifo.path)  # no leader file: not touched
    finally:
        garbage.clear()
        fifo.clear()


def test_the_command_reads_the_file_the_leader_writes(lock_name: str) -> None:
    """The path the command derives from a lock's POSIX names is ``LeaderFile``'s."""
    from aplock._cli import leaders
    from aplock._names import posix_names

    for name in (lock_name, lock_name + "\U0001f512/é x"):
        assert leaders.path_of(posix_names(name).base) == LeaderFile(name).path


SWEEP = r"""
import json, os, subprocess, sys, time
import aplock
from aplock._leader_sides import LeaderFile

def cli(*args):
    r = subprocess.run([sys.executable, "-m", "aplock", *args], capture_output=True,
                       text=True, timeout=60)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}

leader = subprocess.Popen(
    [sys.executable, "-c",
     "import sys, aplock\n"
     "from aplock.leader import Leadership\n"
     "kept = aplock.Lock('sweep.open')\n"
     "def job(term):\n"
     "    print('leading', flush=True)\n"
     "    term.wait()\n"
     "with Leadership('sweep.leader', job):\n"
     "    sys.stdin.read()\n"
     "kept.close()\n"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
try:
    assert leader.stdout.readline() == "leading\n"
    gone = subprocess.Popen(["true"])
    gone.wait()
    LeaderFile("sweep.gone").write(gone.pid, time.time(), 3)
    LeaderFile("sweep.open").write(gone.pid, time.time(), 4)
    aplock.Lock("sweep.free").close()
    LeaderFile("sweep.free").write(gone.pid, time.time(), 5)
    result = {"sweep": cli("clean")}
    result["after"] = cli("list", "--json")
    result["left"] = sorted(os.listdir("/dev/shm"))
finally:
    leader.stdin.close()
    leader.wait(30)
result["stopped"] = sorted(os.listdir("/dev/shm"))
print(json.dumps(result))
"""


def test_a_sweep_removes_stale_leader_files_and_keeps_a_live_leaders() -> None:
    result = private_shm.run_script(SWEEP)
    sweep = result["sweep"]
    assert sweep["rc"] == 0, sweep
    assert "removed 'sweep.free' and its leader file" in sweep["out"]
    assert "removed the stale leader file of 'sweep.gone' (its lock is gone)" in sweep["out"]
    assert "removed the stale leader file of 'sweep.open' (pid " in sweep["out"]
    assert "refused 'sweep.leader': open in pid" in sweep["out"]
    after = {e["name"]: e for e in json.loads(result["after"]["out"])}
    assert sorted(after) == ["sweep.leader", "sweep.open"]
    assert after["sweep.leader"]["leader"]["stale"] is False
    assert after["sweep.open"]["leader"] is None
    leaders = [e for e in result["left"] if e.endswith(".leader")]
    assert leaders == [os.path.basename(LeaderFile("sweep.leader").path)]
    assert not [e for e in result["stopped"] if e.endswith(".leader")]  # it stepped down


def test_another_users_leader_file_is_unreadable_and_not_removed(
    lock_name: str, leader_file: LeaderFile, as_nobody: Run
) -> None:
    mine = lock_name + ".mine"
    made = as_nobody("-c", f"import aplock; aplock.Lock({mine!r}).close()")
    assert made.returncode == 0, made.stderr
    theirs = LeaderFile(mine)
    try:
        theirs.write(dead_pid(), time.time(), 1)  # root's, mode 0600, beside uid 65534's lock
        leader_file.write(dead_pid(), time.time(), 1)  # root's, its lock gone
        table = as_nobody("-m", "aplock", "list")
        assert table.returncode == 0, table.stderr
        assert "unreadable (uid 0)" in row(table.stdout, mine)
        assert f"stale leader file of {os.path.basename(leader_file.path)}" in table.stdout
        refused = as_nobody("-m", "aplock", "clean", lock_name)
        assert refused.returncode == 1
        assert "refused the stale leader file of" in refused.stdout
        assert "belongs to uid 0" in refused.stdout
        assert os.path.exists(leader_file.path)
        cleaned = as_nobody("-m", "aplock", "clean", mine)
        assert cleaned.returncode == 1, cleaned.stdout + cleaned.stderr
        assert "removed the lock, but could not remove the leader file" in cleaned.stderr
        assert os.path.exists(theirs.path)
        assert listed(mine) is None
    finally:
        theirs.clear()
        aplock.unlink(mine)
