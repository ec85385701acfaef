"""The POSIX lock as one ``Lock`` object sees it: the ``Core`` of ``aplock._core``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aplock._core import Takeover, warn_abandoned

from .handle import Handle
from .handover import hand_over_lock
from .registry import ClosedHandle, acquire_handle

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from aplock._deadline import Deadline


class LockCore:
    """One object's use of the process's handle on a lock, with its recovery setting.

    ``h`` is the handle (a ``ClosedHandle`` once closed), read afresh by every call, so
    that a ``close()`` from another thread ends a wait within a slice.
    """

    __slots__ = ("_mode", "_name", "h", "recovery_interval")

    def __init__(self, name: str, mode: int, recovery_interval: float | None) -> None:
        self._name = name
        self._mode = mode
        self.recovery_interval = recovery_interval
        self.h: Handle | ClosedHandle = acquire_handle(name, mode)

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._name

    @property
    def mode(self) -> int:
        """The permission bits the lock was opened with."""
        return self._mode

    @property
    def gate_key(self) -> Hashable:
        """The kind, the name and the recovery setting: what a waiting thread shares."""
        return ("lock", self._name, self.recovery_interval)

    def try_acquire(self) -> bool:
        """Take the lock if it is free."""
        return self.h.try_take() is not None

    def wait(
        self, deadline: Deadline, cancelled: Callable[[], bool] | None
    ) -> tuple[bool, Takeover | None]:
        """Wait in slices until taken, expired or *cancelled*; say if a dead holder's was.

        Between slices it settles what a dead process left half done and, every
        ``recovery_interval``, takes over the lock of a holder proven dead.
        """
        interval = self.recovery_interval
        check_at = time.monotonic() + interval if interval is not None else None
        while True:
            h = self.h  # each slice: a close() from another thread ends the wait
            if h.take(deadline.slice()) is not None:
                return True, None
            if cancelled is not None and cancelled():
                return False, None
            h.settle()  # a section whose writer died, an acquisition that nobody owns
            now = time.monotonic()
            if check_at is not None and now >= check_at:
                check_at = now + interval  # type: ignore[operator]
                takeover = h.recover()
                if takeover is not None:
                    return True, takeover if takeover.dead_pid else None
            if deadline.expired(now=now):
                return False, None

    def release(self) -> None:
        """Release the lock (any thread or process may)."""
        self.h.release()

    def hand_over(self) -> bool:
        """Turn this process's acquisition into a new one of this process, ``L`` kept."""
        h = self.h
        return isinstance(h, Handle) and hand_over_lock(h)

    def warn_abandoned(self, takeover: Takeover) -> None:
        """Warn of *takeover* at the user's frame; release if the warning raises."""
        warn_abandoned(self._name, takeover, self.release)

    def repair(self, observe: float) -> bool:
        """Free the lock if it stays taken by nobody for *observe* seconds."""
        return self.h.repair_stuck(observe)

    def for_waiter(self) -> LockCore:
        """A core of its own on the same handle, for a thread that waits for others."""
        return LockCore(self._name, self._mode, self.recovery_interval)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return isinstance(self.h, ClosedHandle)

    def close(self) -> None:
        """Stop using the handle; later calls raise ``LockClosedError``."""
        if isinstance(self.h, Handle):
            self.h = ClosedHandle(self._name)
