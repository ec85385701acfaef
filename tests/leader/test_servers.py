"""The leader examples under real servers: 4 workers, one scheduler, failover, shutdown.

``examples/fastapi_leader`` under ``uvicorn --workers 4`` (``AsyncLeadership``) and
``examples/wsgi_leader`` under gunicorn's sync workers (``Leadership``). Each test checks
from the scheduler's own journal that at most one worker ran it at any instant (terms
from ``start`` to ``stop``, or to the SIGKILL of their worker) with growing tokens, that
a SIGKILLed leader is replaced within the bound, that a graceful hand-over is prompt,
and that stopping the server leaves no job and no worker running.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import pytest

from aplock._leader_sides import LeaderFile
from aplock.sync import RECOVERY_INTERVAL
from tests.support import leader_journal
from tests.support.leader_server import Served, alive, serving
from tests.support.served import stop

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.leader_journal import Entry

pytestmark = pytest.mark.timeout(90)

WORKERS = 4
#: A SIGKILLed leader's job restarts elsewhere within this: the lock's recovery interval,
#: one wait slice, and the slack that docs/how-to/leader.md documents.
TAKEOVER_BOUND = RECOVERY_INTERVAL + 0.05 + 0.5
#: A graceful hand-over (the leader's worker stops) to a waiting standby.
HANDOVER_BOUND = 1.0


def _kill_leader(srv: Served) -> tuple[int, float]:
    """SIGKILL the leader once it beats; return its pid and how long the takeover took."""
    entries = srv.wait_ready(WORKERS)
    leader = srv.leader(entries)
    assert leader is not None
    srv.wait_beats(leader)
    srv.kill(leader)

    def replaced(entries: list[Entry]) -> bool:
        return any(e["pid"] != leader for e in leader_journal.starts(entries)[-1:])

    entries = srv.wait_for(replaced, "another worker to take over")
    new = leader_journal.starts(entries)[-1]
    assert new["took_over_from"] == leader, entries
    return leader, new["t"] - srv.killed[leader]


def _shut_down(srv: Served, name: str) -> list[leader_journal.Term]:
    """Stop the server gracefully; check that no job and no worker is left."""
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(30)
    entries = srv.entries()
    order = leader_journal.check_one_writer(entries, srv.killed)
    assert all(t.stopped for t in order if t.pid not in srv.killed), order
    assert not [p for p in {e["pid"] for e in entries} if alive(p)]
    # The last leader stopped gracefully, so it removed its leader file.
    assert LeaderFile(name).read() is None
    stop(srv.proc)
    return order


def _handovers(order: list[leader_journal.Term], killed: dict[int, float]) -> list[float]:
    """The seconds from each graceful stop to the next term's start."""
    return [gap for a, _, gap in leader_journal.gaps(order) if a.stopped and a.pid not in killed]


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_one_scheduler_failover_and_shutdown(server: str, tmp_path: Path, lock_name: str) -> None:
    with serving(server, tmp_path, lock_name) as srv:
        killed, takeover = _kill_leader(srv)
        srv.wait_ready(WORKERS)  # the server replaced the killed worker
        order = _shut_down(srv, lock_name)
    assert takeover <= TAKEOVER_BOUND, f"takeover took {takeover:.3f} s"
    assert [t.pid for t in order if t.killed] == [killed]
    assert len({t.pid for t in order}) == len(order)


def test_uvicorn_rolling_restart(tmp_path: Path, lock_name: str) -> None:
    # SIGHUP: uvicorn starts a new worker, then terminates an old one, one by one. The
    # leader is among the old ones: its lifespan exit hands the job over at once.
    with serving("uvicorn", tmp_path, lock_name) as srv:
        before = srv.wait_ready(WORKERS)
        old = srv.ready_pids(before)
        srv.proc.send_signal(signal.SIGHUP)

        def replaced(entries: list[Entry]) -> bool:
            leader = srv.leader(entries)
            new = srv.ready_pids(entries) - old
            return len(new) >= WORKERS and leader in new and not any(alive(p) for p in old)

        entries = srv.wait_for(replaced, "every worker to be replaced", timeout=60)
        leader = srv.leader(entries)
        assert leader is not None
        srv.wait_beats(leader)
        order = _shut_down(srv, lock_name)
    assert len(order) >= 2, order
    handovers = _handovers(order, srv.killed)
    assert handovers, order
    assert max(handovers) < HANDOVER_BOUND, handovers


@pytest.mark.stress
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_leaders_killed_again_and_again(server: str, tmp_path: Path, lock_name: str) -> None:
    with serving(server, tmp_path, lock_name) as srv:
        takeovers = [_kill_leader(srv)[1] for _ in range(6)]
        srv.wait_ready(WORKERS)
        order = _shut_down(srv, lock_name)
    assert max(takeovers) <= TAKEOVER_BOUND, takeovers
    assert sum(t.killed for t in order) == 6


@pytest.mark.stress
def test_gunicorn_rolling_restart(tmp_path: Path, lock_name: str) -> None:
    with serving("gunicorn", tmp_path, lock_name) as srv:
        old = srv.ready_pids(srv.wait_ready(WORKERS))
        srv.proc.send_signal(signal.SIGHUP)

        def replaced(entries: list[Entry]) -> bool:
            new = srv.ready_pids(entries) - old
            return len(new) >= WORKERS and srv.leader(entries) in new

        entries = srv.wait_for(replaced, "every worker to be replaced", timeout=60)
        leader = srv.leader(entries)
        assert leader is not None
        srv.wait_beats(leader)
        order = _shut_down(srv, lock_name)
    assert len(order) >= 2, order
