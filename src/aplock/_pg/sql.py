"""The PostgreSQL backend's advisory key and SQL text (pure logic, no I/O, no psycopg).

A lock name maps to one 64-bit advisory key::

    key = int.from_bytes(sha256(b"aplock:" + name.encode("utf-8", "surrogatepass"))
                         .digest()[:8], "big", signed=True)

which PostgreSQL (11 and later) computes itself as::

    SELECT ('x' || encode(substring(sha256(convert_to('aplock:' || $1, 'UTF8'))
                                    from 1 for 8), 'hex'))::bit(64)::bigint

so tools in any language, and plain SQL, can find or take the same lock.

An acquisition's fencing token (its *generation*) is the server's transaction id,
assigned in the statement that got the lock, after the lock was granted: the
epoch-extended 64-bit ``pg_current_xact_id()`` (``txid_current()`` before PostgreSQL
13). Transaction ids come from one counter per cluster, so the generation is greater
than that of every acquisition, of any lock, that came before. It takes no table.
"""

from __future__ import annotations

import hashlib
import math

from aplock._names import validate

KEY_PREFIX = b"aplock:"
"""Bytes hashed in front of the UTF-8 name, so aplock's keys stay apart from other uses."""
#: Largest value of ``lock_timeout`` (milliseconds): PostgreSQL's ``INT_MAX``.
MAX_LOCK_TIMEOUT_MS = 2**31 - 1

KEY_SQL = (
    "SELECT ('x' || encode(substring(sha256(convert_to('aplock:' || %s, 'UTF8')) "
    "from 1 for 8), 'hex'))::bit(64)::bigint"
)
"""The query by which the server computes ``advisory_key`` of the name bound to ``%s``."""

# The advisory lock of a bigint key, as pg_locks shows it: high and low 32 bits in
# classid and objid, objsubid 1 (the two-int4 form uses objsubid 2), in this database.
_THIS_KEY = (
    "locktype = 'advisory' AND objsubid = 1"
    " AND classid = ((%(key)s::bigint >> 32) & 4294967295)::oid"
    " AND objid = (%(key)s::bigint & 4294967295)::oid"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_MINE = f"{_THIS_KEY} AND granted AND pid = pg_backend_pid()"

#: Release it, but only if the session is still the one that took it (``%(pid)s``):
#: ``NULL`` if the session changed, else whether the session held it.
UNLOCK = "SELECT CASE WHEN pg_backend_pid() = %(pid)s THEN pg_advisory_unlock(%(key)s) END"
#: Release it if this session holds it, whatever this process believes (clean-up).
UNLOCK_IF_HELD = f"SELECT pg_advisory_unlock(%(key)s) FROM pg_locks WHERE {_MINE}"
#: ``(backend pid, whether this session holds the lock)``.
HELD = f"SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_locks WHERE {_MINE})"
#: Whether any session holds the lock.
LOCKED = f"SELECT EXISTS (SELECT 1 FROM pg_locks WHERE {_THIS_KEY} AND granted)"
#: Run once on a session the lock opens (PostgreSQL 14 and later, ``SETUP_SINCE``): an
#: idle holder is the normal case, so the server must never end its session for idling.
SETUP = "SET idle_session_timeout = 0"
SETUP_SINCE = 140000
#: Results of a ``wait_statement``; the row of the last is ``(generation, backend pid)``.
WAIT_RESULTS = 4
#: The first server version (``server_version_num``) with ``pg_current_xact_id()``.
XACT_ID_SINCE = 130000


def advisory_key(name: str) -> int:
    """The signed 64-bit PostgreSQL advisory key of lock *name* (see the module docstring).

    Raises:
        TypeError: *name* is not a string.
        ValueError: *name* is empty.
    """
    raw = hashlib.sha256(KEY_PREFIX + validate(name).encode("utf-8", "surrogatepass"))
    return int.from_bytes(raw.digest()[:8], "big", signed=True)


def lock_timeout_ms(remaining: float | None) -> int:
    """The ``lock_timeout`` for a wait of *remaining* seconds (``None``: forever).

    ``0`` means no timeout to PostgreSQL; a positive wait is rounded up to whole
    milliseconds (so it never ends early) and capped at the largest value the server
    takes (the caller waits again for what is left).
    """
    if remaining is None:
        return 0
    return min(max(math.ceil(remaining * 1000.0), 1), MAX_LOCK_TIMEOUT_MS)


def generation(server_version: int) -> str:
    """The SQL expression of a new generation (a ``bigint``) on a server of that version.

    Evaluating it gives the statement's transaction a transaction id, if it has none
    yet: that consumes one, and a standby (a server in recovery) refuses it.
    """
    if server_version >= XACT_ID_SINCE:
        return "pg_current_xact_id()::text::bigint"  # xid8 has no cast to bigint
    return "txid_current()"


def try_statement(server_version: int) -> str:
    """Take the lock if it is free: ``(generation, backend pid)``, the generation
    ``NULL`` if the lock is held (then no transaction id is consumed)."""
    return (
        f"SELECT CASE WHEN pg_try_advisory_lock(%(key)s) THEN {generation(server_version)} END,"
        " pg_backend_pid()"
    )


def wait_statement(key: int, timeout_ms: int, server_version: int) -> str:
    """One round trip that blocks in the server until the lock is taken or time runs out.

    A simple-protocol query string of four statements, which PostgreSQL runs as one
    implicit transaction: ``SET LOCAL`` therefore lasts only for this wait, and a
    ``statement_timeout`` configured for the role cannot cut a longer wait short. The
    statement after the wait runs only once the lock was granted; its result, the
    last, is ``(generation, backend pid)``. Both numbers are ``int``, formatted by us.
    """
    return (
        "SET LOCAL statement_timeout = 0; "
        f"SET LOCAL lock_timeout = {int(timeout_ms)}; "
        f"SELECT pg_advisory_lock({int(key)}); "
        f"SELECT {generation(server_version)}, pg_backend_pid()"
    )
