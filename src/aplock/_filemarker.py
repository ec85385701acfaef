"""``FileMarker``: the default run-once marker of ``Once``, a file beside the lock.

Exported as ``aplock.startup.FileMarker``.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
import time

from ._names import digest, posix_names, slug, validate
from .errors import LockError, LockPermissionError, LockUnavailableError

__all__ = ["DEFAULT_MARKER_MODE", "MARKER_INFIX", "FileMarker", "validate_key"]

#: Default permission bits of a ``FileMarker`` file: only this user may write or trust it.
DEFAULT_MARKER_MODE = 0o600
#: What separates the lock's base name from the key in a marker's file name.
MARKER_INFIX = ".once."
_KEY_SLUG_MAX = 32


def _default_directory() -> str:
    if sys.platform.startswith("linux") and os.path.isdir("/dev/shm"):
        return "/dev/shm"
    return tempfile.gettempdir()


def validate_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"a run-once key must be a str, not {type(key).__name__}: {key!r}")
    if not key:
        raise ValueError(
            "a run-once key must not be empty: use what identifies the work's version, "
            "such as the app version or the migration head"
        )
    return key


class FileMarker:
    """A completion marker kept as one small file per ``(name, key)``.

    By default the files live in ``/dev/shm`` on Linux, beside the lock's own objects,
    so they are shared by exactly the processes that share the lock (this host, or the
    containers that share its ``/dev/shm``) and vanish at reboot, like the lock. Elsewhere
    they live in the per-user temporary directory. Each marker is named
    ``aplock.<lock>.once.<key>`` (readable parts followed by digests) and holds a line
    of JSON saying who completed the work and when.

    Args:
        directory: where to keep the files; pass a directory on a volume to share
            markers between hosts or keep them across reboots (then the lock must span
            the same processes).
        mode: permission bits of new marker files. With the default ``0o600`` a marker
            owned by another user (even when running as root) is not trusted: it raises
            ``LockPermissionError`` rather than skip the work. Widen it together with the
            lock's ``mode`` for deliberate multi-user setups.
    """

    __slots__ = ("_directory", "_mode")

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, mode: int = DEFAULT_MARKER_MODE
    ) -> None:
        self._directory = os.fspath(directory) if directory is not None else _default_directory()
        self._mode = mode

    @property
    def directory(self) -> str:
        """The directory that holds the marker files."""
        return self._directory

    def path(self, name: str, key: str) -> str:
        """The path of the marker file for lock *name* and *key*."""
        prefix = self._prefix(validate(name))
        key = validate_key(key)
        part = slug(key, _KEY_SLUG_MAX)
        tail = f"{part}.{digest(key)}" if part else digest(key)
        return os.path.join(self._directory, f"{prefix}{tail}")

    def _prefix(self, name: str) -> str:
        return f"{posix_names(name).base}{MARKER_INFIX}"

    def is_done(self, name: str, key: str) -> bool:
        """Whether the marker for *name* and *key* exists.

        Raises:
            LockPermissionError: the file exists but belongs to another user (with the
                default mode) or is not a regular file.
        """
        path = self.path(name, key)
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _marker_error(name, exc, f"checking its run-once marker {path}") from None
        if not stat.S_ISREG(st.st_mode):
            raise LockPermissionError(
                name,
                f"its run-once marker {path} is not a regular file; remove it and retry",
                errno.EPERM,
            )
        if st.st_uid != os.geteuid() and self._mode == DEFAULT_MARKER_MODE:
            raise LockPermissionError(
                name,
                f"its run-once marker {path} belongs to uid {st.st_uid}, not to this user; "
                "use another name, or pass FileMarker(mode=...) with the mode the lock is "
                "shared with",
                errno.EPERM,
            )
        return True

    def mark_done(self, name: str, key: str) -> None:
        """Create the marker for *name* and *key* (replacing an existing one)."""
        path = self.path(name, key)
        record = {"name": name, "key": key, "pid": os.getpid(), "done_at": time.time()}
        import json  # noqa: PLC0415 - here: a few ms that import aplock need not pay

        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, self._mode)
            try:
                os.fchmod(fd, self._mode)  # undo the umask, as for the lock's objects
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _marker_error(name, exc, f"writing its run-once marker {path}") from None

    def clear(self, name: str, key: str | None = None) -> int:
        """Remove the marker for *key*, or every marker of *name*; return how many."""
        if key is not None:
            paths = [self.path(name, key)]
        else:
            prefix = self._prefix(validate(name))
            try:
                entries = os.listdir(self._directory)
            except FileNotFoundError:
                return 0
            paths = [os.path.join(self._directory, e) for e in entries if e.startswith(prefix)]
        removed = 0
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _marker_error(name, exc, f"removing its run-once marker {path}") from None
            removed += 1
        return removed

    def __repr__(self) -> str:
        return f"FileMarker({self._directory!r}, mode={self._mode:#o})"


def _marker_error(name: str, exc: OSError, what: str) -> LockError:
    if isinstance(exc, PermissionError) or exc.errno in (errno.EPERM, errno.ELOOP):
        return LockPermissionError(
            name,
            f"permission denied while {what}: it belongs to another user or is a link. "
            "Use another name, or share the lock and marker deliberately with a wider mode.",
            exc.errno,
        )
    return LockUnavailableError(name, f"{what} failed: {exc.strerror or exc}", exc.errno)
