"""The PostgreSQL backend: the only package of aplock that imports psycopg.

``aplock.postgres`` is its façade. Inside, each concern is a module:

- ``sql``: the advisory key of a name and the SQL text (pure logic, no psycopg).
- ``steps``: the I/O a flow may ask for, and ``Cancel``, the state of a stoppable wait.
- ``sources``: where a lock's session comes from (a connection string, the user's
  connection, a pool), written once for sync and async connections, as flows.
- ``protocol``: the lock protocol, written once as flows that yield steps (sans-I/O).
- ``sync``: the sync runner, which executes steps with blocking psycopg calls, and
  ``Backend``, what ``PgLock`` calls.
- ``aio``: the async runner, which executes the same steps on ``AsyncConnection``
  (asyncio), and ``AsyncBackend``, what ``AsyncPgLock`` calls, per event loop.
- ``translate``: psycopg's errors turned into aplock's.
- ``marker``: ``PgMarker`` and ``AsyncPgMarker``, completion markers in a table.

Importing it without psycopg 3.2 or later raises an ``ImportError`` that says what to
install.
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
