"""Validate a user's lock name and map it to POSIX object names.

Pure logic, no I/O. A lock name is any non-empty ``str``; the POSIX name is a fixed
prefix, a readable slug of the name (where the platform allows long names), and a
96-bit BLAKE2b digest of the whole name, so that two different names never share an
object while ``ls /dev/shm`` still hints at which lock is which.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

PREFIX = "aplock."
#: The longest lock name, in characters (the state record stores the whole name).
MAX_LENGTH = 1024
#: Longest POSIX name on platforms with a short limit (macOS: PSEMNAMLEN is 31).
SHORT_NAME_MAX = 31
#: Characters kept in the readable slug on platforms with ``NAME_MAX`` 255 names.
SLUG_MAX = 48
_DIGEST_BYTES = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")

#: Suffixes of the objects that make up one lock (see ``_posix``).
SEM_SUFFIX = ""
TOKEN_SUFFIX = ".h"
RECORD_SUFFIX = ".s"


def validate(name: object) -> str:
    """Return *name* if it is a usable lock name, else raise ``TypeError``/``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"a lock name must be a str, not {type(name).__name__}: {name!r}")
    if not name:
        raise ValueError("a lock name must not be empty: choose a name such as 'myapp.migrate'")
    if len(name) > MAX_LENGTH:
        raise ValueError(
            f"a lock name must be at most {MAX_LENGTH} characters, not {len(name)} "
            f"({name[:40]!r}...): use a shorter name, or a digest of a long one"
        )
    return name


def digest(name: str) -> str:
    """The 20-character, lower-case base32 digest that identifies *name*."""
    raw = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_BYTES)
    return base64.b32encode(raw.digest()).decode("ascii").rstrip("=").lower()


def slug(name: str, limit: int = SLUG_MAX) -> str:
    """A readable, filesystem-safe hint of *name* (lossy: the digest is what identifies)."""
    return _UNSAFE.sub("_", name)[:limit].strip("_")


@dataclass(frozen=True, slots=True)
class PosixNames:
    """The POSIX names of the objects behind one lock."""

    base: str

    @property
    def semaphore(self) -> str:
        """The lock semaphore (value 1 when free)."""
        return f"/{self.base}{SEM_SUFFIX}"

    @property
    def token(self) -> str:
        """The held-token semaphore (value 1 while an acquisition is complete)."""
        return f"/{self.base}{TOKEN_SUFFIX}"

    @property
    def record(self) -> str:
        """The shared-memory state record."""
        return f"/{self.base}{RECORD_SUFFIX}"


def posix_names(name: str, *, short: bool = False) -> PosixNames:
    """Map a validated user name to its POSIX object names.

    With ``short=True`` (platforms whose names are limited to 31 characters) the
    readable slug is left out.
    """
    validate(name)
    if short:
        return PosixNames(f"{PREFIX}{digest(name)}")
    part = slug(name)
    return PosixNames(f"{PREFIX}{part}.{digest(name)}" if part else f"{PREFIX}{digest(name)}")


def is_record_name(entry: str) -> bool:
    """Whether a ``/dev/shm`` directory entry is an aplock state record."""
    return entry.startswith(PREFIX) and entry.endswith(RECORD_SUFFIX)


def base_of_record(entry: str) -> str:
    """The lock's base name from a ``/dev/shm`` state-record entry."""
    return entry[: -len(RECORD_SUFFIX)]
