"""aplock on PostgreSQL advisory locks: the same ``Lock`` and ``AsyncLock``, across hosts.

``PgLock(name, dsn)`` and ``AsyncPgLock(name, dsn)`` have the shape of ``aplock.Lock``
and ``aplock.AsyncLock``; moving from one host to many is a change of constructor.
Each lock is a session-level advisory lock on the key ``advisory_key(name)``.
``PgMarker`` and ``AsyncPgMarker`` record completed work for ``aplock.startup.Once``
and ``AsyncOnce`` in a table, so that start-up work runs once across hosts.

Needs psycopg 3.2 or later: ``pip install 'aplock[postgres]'``. The rest of aplock never
imports this module or psycopg.
"""

from __future__ import annotations

try:
    import psycopg
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "aplock.postgres needs psycopg 3 (PostgreSQL driver), which is not installed: "
        "pip install 'aplock[postgres]'"
    ) from _exc

if tuple(int(p) for p in psycopg.__version__.split(".")[:2]) < (3, 2):  # pragma: no cover
    raise ImportError(
        f"aplock.postgres needs psycopg 3.2 or later, found {psycopg.__version__}: "
        "pip install -U 'aplock[postgres]'"
    )

from ._pgaio import AsyncPgLock
from ._pgerrors import LockLostError
from ._pgmarker import AsyncPgMarker, PgMarker
from ._pgsql import KEY_PREFIX, KEY_SQL, advisory_key
from ._pgsync import ConnectionPool, PgLock

__all__ = [
    "KEY_PREFIX",
    "KEY_SQL",
    "AsyncPgLock",
    "AsyncPgMarker",
    "ConnectionPool",
    "LockLostError",
    "PgLock",
    "PgMarker",
    "advisory_key",
]
