"""Leaderships in spawned processes, SIGKILLed at random instants.

Three workers campaign for one lock; the test kills the leader (now and then a standby)
at a random instant of its term, again and again, replacing each killed worker, then
stops them all. From the job's journal: at most one term at any instant, growing
tokens, each takeover of a dead leader within the bound, and no job left running.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

import pytest

from aplock._leader_sides import LeaderFile
from aplock.sync import RECOVERY_INTERVAL
from tests.support import leader_journal
from tests.support.leader_workers import Crew

if TYPE_CHECKING:
    from pathlib import Path

#: A dead leader's job restarts in a standby within this: the recovery interval, one
#: wait slice, and the documented slack.
TAKEOVER_BOUND = RECOVERY_INTERVAL + 0.05 + 0.5


def kill_round(crew: Crew, rng: random.Random, kills: int) -> list[float]:
    """Kill *kills* leaders (and a standby now and then); the takeover times."""
    import time

    takeovers = []
    for _ in range(kills):
        start = crew.wait_term()
        leader = start["pid"]
        time.sleep(rng.uniform(0.0, 0.3))  # a random instant of its term
        if rng.random() < 0.25:  # a standby dies too: the next leader must not care
            standby = rng.choice([p for p in crew.procs if p != leader])
            crew.kill(standby)
            crew.wait_ready(crew.spawn())
        sent = crew.kill(leader)
        new = crew.wait_term(other_than=leader)
        assert new["took_over_from"] == leader, crew.entries()
        takeovers.append(new["t"] - sent)
        crew.wait_ready(crew.spawn())
    return takeovers


def run(kind: str, name: str, tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    journal = str(tmp_path / "journal.jsonl")
    with Crew(kind, name, journal) as crew:
        for _ in range(3):
            crew.wait_ready(crew.spawn())
        takeovers = kill_round(crew, rng, kills)
    assert crew.exit_codes() == [0] * len(crew.exit_codes())
    order = leader_journal.check_one_writer(crew.entries(), crew.killed)
    assert all(t.stopped or t.killed for t in order)
    assert sum(t.killed for t in order) == kills
    assert max(takeovers) <= TAKEOVER_BOUND, (seed, takeovers)
    # The last leader stopped gracefully: its leader file went with it.
    assert LeaderFile(name).read() is None
    assert not [p for p in crew.killed if os.path.exists(f"/proc/{p}")]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["asyncio", "trio", "threads"])
def test_leaders_killed_at_random_instants(kind: str, leader_name: str, tmp_path: Path) -> None:
    run(kind, leader_name, tmp_path, kills=3, seed=random.randrange(2**32))


@pytest.mark.stress
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["asyncio", "trio", "threads"])
def test_leaders_killed_at_random_instants_many_times(
    kind: str, leader_name: str, tmp_path: Path
) -> None:
    run(kind, leader_name, tmp_path, kills=30, seed=random.randrange(2**32))
