"""Reading a file in ``/dev/shm`` that any user may have put there, safely.

Not following links, not hanging on a FIFO that has the name, and telling "not mine to
read" (the stat, no bytes) from "not there, or no regular file" (``None``).
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def read_regular(
    path: str, read: Callable[[int, os.stat_result], bytes | None]
) -> tuple[os.stat_result, bytes | None] | None:
    """``(stat, read(fd, stat))`` of the regular file *path*; bytes ``None`` if unreadable.

    ``None`` if it is gone, a link, not a regular file, or *read* returns ``None`` (the
    file is not what the caller looks for yet).
    """
    try:
        # O_NONBLOCK: a FIFO that happens to have the name must not hang the scan.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except PermissionError:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        return (st, None) if stat.S_ISREG(st.st_mode) else None
    except OSError:
        return None  # gone since the listing, a link, or something else
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        data = read(fd, st)
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if data is None else (st, data)
