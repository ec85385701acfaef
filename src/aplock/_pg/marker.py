"""Completion markers in a PostgreSQL table, for ``aplock.startup.Once`` / ``AsyncOnce``.

A marker must be shared by exactly the processes that share the lock: with a
``PgLock``, that is everyone who reaches the database, so the marker is a row there::

    CREATE TABLE aplock_once (
        name    text NOT NULL,
        key     text NOT NULL,
        done_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (name, key)
    )

The table is created on the first ``mark_done`` (which ``Once`` calls only while
holding the lock); until then ``is_done`` answers ``False``. Create it yourself (for
example in a migration) if the application's role may not create tables.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import psycopg
from psycopg import errors as pgerrors
from psycopg import sql as pgsql

from .translate import target, unavailable

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    _T = TypeVar("_T")

__all__ = ["AsyncPgMarker", "PgMarker"]

DEFAULT_TABLE = "aplock_once"

_CREATE = """CREATE TABLE IF NOT EXISTS {} (
    name    text NOT NULL,
    key     text NOT NULL,
    done_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, key)
)"""


class PgMarker:
    """Records in a PostgreSQL table which ``(name, key)`` work has completed.

    The ``aplock.startup.Marker`` for ``Once`` with a ``PgLock``: every host that
    reaches the database sees the same answers. ``mark_done`` is one ``INSERT``, atomic.

    Args:
        conninfo_or_connection: a connection string (each call opens a short-lived
            connection: markers are read a few times per start-up) or a
            ``psycopg.Connection`` in autocommit mode.
        table: the table's name, optionally schema-qualified (``"ops.aplock_once"``).

    Example::

        from aplock.postgres import PgLock, PgMarker
        from aplock.startup import Once

        Once(PgLock("app.migrate", DSN), key=HEAD, marker=PgMarker(DSN)).run(migrate)
    """

    def __init__(
        self, conninfo_or_connection: str | psycopg.Connection[Any], *, table: str = DEFAULT_TABLE
    ) -> None:
        if isinstance(conninfo_or_connection, psycopg.Connection):
            if not conninfo_or_connection.autocommit:
                raise ValueError(
                    "PgMarker needs a connection in autocommit mode (each mark must commit "
                    "at once): connect with autocommit=True, or pass a connection string"
                )
        elif not isinstance(conninfo_or_connection, str):
            raise TypeError(
                "PgMarker needs a connection string or a psycopg.Connection, not "
                f"{type(conninfo_or_connection).__name__}"
            )
        if not table or not all(table.split(".")):
            raise ValueError(f"invalid table name {table!r}: use 'table' or 'schema.table'")
        self._arg = conninfo_or_connection
        self._table = pgsql.Identifier(*table.split("."))
        self.table = table

    def _run(self, name: str, doing: str, func: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        arg = self._arg
        where = target(arg) if isinstance(arg, str) else target(None, arg)
        try:
            if isinstance(arg, str):
                with psycopg.connect(arg, autocommit=True) as conn:
                    return func(conn)
            return func(arg)
        except psycopg.Error as exc:
            raise unavailable(name, where, f"{doing} in table {self.table!r}", exc) from exc

    def is_done(self, name: str, key: str) -> bool:
        """Whether the work of lock *name* has completed for *key*."""

        def query(conn: psycopg.Connection[Any]) -> bool:
            statement = pgsql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE name = %s AND key = %s)")
            try:
                row = conn.execute(statement.format(self._table), [name, key]).fetchone()
            except pgerrors.UndefinedTable:
                return False
            return bool(row and row[0])

        return self._run(name, "reading the marker", query)

    def mark_done(self, name: str, key: str) -> None:
        """Record that the work of lock *name* has completed for *key* (atomic)."""
        insert = pgsql.SQL("INSERT INTO {} (name, key) VALUES (%s, %s) ON CONFLICT DO NOTHING")

        def write(conn: psycopg.Connection[Any]) -> None:
            try:
                conn.execute(insert.format(self._table), [name, key])
            except pgerrors.UndefinedTable:
                # Another lock's holder may create it at the same moment.
                with suppress(pgerrors.UniqueViolation, pgerrors.DuplicateTable):
                    conn.execute(pgsql.SQL(_CREATE).format(self._table))
                conn.execute(insert.format(self._table), [name, key])

        self._run(name, "setting the marker", write)

    def clear(self, name: str, key: str | None = None) -> int:
        """Forget *key* (every key of *name* if ``None``); return how many were set."""

        def delete(conn: psycopg.Connection[Any]) -> int:
            statement = pgsql.SQL("DELETE FROM {} WHERE name = %s").format(self._table)
            params: list[str] = [name]
            if key is not None:
                statement = pgsql.SQL("{} AND key = %s").format(statement)
                params.append(key)
            try:
                return conn.execute(statement, params).rowcount
            except pgerrors.UndefinedTable:
                return 0

        return self._run(name, "clearing the marker", delete)

    def __repr__(self) -> str:
        return f"<aplock.postgres.PgMarker table {self.table!r}>"


class AsyncPgMarker:
    """``PgMarker`` for ``aplock.startup.AsyncOnce``: the same table, async methods.

    Each call runs ``PgMarker``'s in a worker thread, so it works under asyncio and
    Trio alike (a marker is read a few times per start-up: a thread costs nothing
    that matters there).

    Args:
        conninfo_or_connection: as for ``PgMarker``.
        table: as for ``PgMarker``.

    Example::

        from aplock.postgres import AsyncPgLock, AsyncPgMarker
        from aplock.startup import AsyncOnce

        once = AsyncOnce(AsyncPgLock("app.migrate", DSN), key=HEAD, marker=AsyncPgMarker(DSN))
        await once.run(migrate)
    """

    def __init__(
        self, conninfo_or_connection: str | psycopg.Connection[Any], *, table: str = DEFAULT_TABLE
    ) -> None:
        self._marker = PgMarker(conninfo_or_connection, table=table)

    @property
    def table(self) -> str:
        """The table's name."""
        return self._marker.table

    async def is_done(self, name: str, key: str) -> bool:
        """Whether the work of lock *name* has completed for *key*."""
        return await anyio.to_thread.run_sync(self._marker.is_done, name, key)

    async def mark_done(self, name: str, key: str) -> None:
        """Record that the work of lock *name* has completed for *key* (atomic)."""
        await anyio.to_thread.run_sync(self._marker.mark_done, name, key)

    async def clear(self, name: str, key: str | None = None) -> int:
        """Forget *key* (every key of *name* if ``None``); return how many were set."""
        return await anyio.to_thread.run_sync(self._marker.clear, name, key)

    def __repr__(self) -> str:
        return f"<aplock.postgres.AsyncPgMarker table {self.table!r}>"
