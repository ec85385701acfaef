"""Where earlier releases defined ``PgLock``: pickles they made name it here, so it stays.

New code imports ``aplock.postgres``.
"""

from __future__ import annotations

from .postgres import PgLock

__all__ = ["PgLock"]
