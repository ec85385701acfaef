"""psycopg's errors translated into aplock's, and the descriptions of a server they use.

No psycopg exception reaches the user bare: each becomes an aplock error
(``LockUnavailableError``, ``LockLostError``; the tree is drawn in ``aplock.errors``)
that names the lock, says what failed and what to do, and keeps the psycopg error as
``__cause__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict

from aplock.errors import LockLostError, LockUnavailableError

if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "NOT_HELD",
    "NOT_IN_SESSION",
    "SESSION_CHANGED",
    "lost",
    "lost_connection",
    "target",
    "unavailable",
]


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
    if isinstance(exc, pgerrors.ReadOnlySqlTransaction):
        advice = (
            "the server refuses to write (a standby in recovery, or a read-only session): "
            "aplock.postgres needs the primary, which assigns the transaction ids that are "
            "the locks' fencing tokens and whose advisory locks every client sees; connect "
            "to it (for example with target_session_attrs=read-write)"
        )
    else:
        advice = (
            "check that the server is up and reachable and that the connection string or "
            "connection is right"
        )
    return LockUnavailableError(
        name, f"{doing} on {where} failed ({type(exc).__name__}: {str(exc).strip()}); {advice}"
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
NOT_HELD = (
    "release() of a lock this object does not hold. A PostgreSQL advisory lock can only "
    "be released by the session, and so the lock object, that acquired it: call "
    "release() on that object (from any thread)"
)
