"""Errors of the PostgreSQL backend, and the translation of psycopg's into them.

No psycopg exception reaches the user bare: each becomes an aplock error that names the
lock, says what failed and what to do, and keeps the psycopg error as ``__cause__``::

    LockError
    ├── LockLostError          this object held the lock, but its session ended or changed
    └── LockUnavailableError   (OSError) the server cannot be reached or refused the request
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg.conninfo import conninfo_to_dict

from .errors import LockError, LockUnavailableError

if TYPE_CHECKING:
    from typing import Any

__all__ = ["LockLostError"]


class LockLostError(LockError):
    """This object held the lock, but the PostgreSQL session that held it is gone.

    The server released the lock when the session ended (connection dropped,
    ``pg_terminate_backend``, server restart), or something else released the
    session's locks (``pg_advisory_unlock_all``, ``DISCARD ALL``), or a
    transaction-pooling proxy moved the connection to another session. Another
    process may hold the lock now: whatever it protected may have been changed
    since. Raised by ``release()`` (which still leaves the object not holding the
    lock, ready to acquire again) and by ``check()``.
    """


def target(conninfo: str | None, conn: Any = None) -> str:
    """A password-free description of the server, for messages."""
    try:
        if conn is not None:
            params = {"host": conn.info.host, "port": conn.info.port, "dbname": conn.info.dbname}
        else:
            params = conninfo_to_dict(conninfo or "")
    except Exception:  # a closed connection or an unparsable string: say less
        return "PostgreSQL"
    host = params.get("host") or "localhost"
    return f"PostgreSQL at {host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def unavailable(name: str, where: str, doing: str, exc: BaseException) -> LockUnavailableError:
    """The error for a failed request that did not take or release the lock."""
    return LockUnavailableError(
        name,
        f"{doing} on {where} failed ({type(exc).__name__}: {str(exc).strip()}); check that "
        "the server is up and reachable and that the connection string or connection is right",
    )


def lost(name: str, why: str) -> LockLostError:
    """The error for a holder whose session no longer holds the lock."""
    return LockLostError(
        name,
        f"{why}, so this object no longer holds the lock and another process may have "
        "taken it. Treat what it protected as possibly changed, then acquire it again",
    )


def lost_connection(name: str, exc: BaseException) -> LockLostError:
    """The error for a holder whose connection broke."""
    return lost(
        name,
        f"the connection to PostgreSQL broke while this object held it "
        f"({type(exc).__name__}: {str(exc).strip()}) and the server released it with the session",
    )


SESSION_CHANGED = (
    "the connection now talks to a different server session than the one that took it "
    "(a transaction- or statement-pooling proxy such as PgBouncer in transaction mode "
    "breaks session advisory locks: connect directly or through session pooling)"
)
NOT_IN_SESSION = (
    "the server says its session no longer holds it (released behind aplock's back: "
    "pg_advisory_unlock_all(), DISCARD ALL, or a pooler's reset query)"
)
