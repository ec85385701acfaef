"""The compiled fast path of the lock: ``FastHandle``, a ``Handle`` whose hot steps are C.

``_fast`` (built from ``_fast.c`` where a compiler exists) does, as one C call each,
what ``Handle.try_take``, the slice of ``Handle.take``, the unguarded part of
``Handle.release`` and ``Handle.locked`` do: the same steps on the same semaphores and
record, in the same order, so that processes on either path share a lock. It opens the
semaphores once more by name and maps the record once more from its descriptor. Every
other step (the guard, intents, recovery, hand-off) is the Python code of ``Handle``.

The path is chosen when a handle is opened: compiled if ``_fast`` imports and the
environment variable ``APLOCK_PURE`` is unset, empty or ``0``; pure Python otherwise.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING

from . import ipc as _posix
from .handle import Handle

if TYPE_CHECKING:
    from ._fast import FastLock

try:
    from . import _fast
except ImportError:  # not built (no compiler at install time), or not this platform
    _fast = None  # type: ignore[assignment]

#: The environment variable that selects the pure-Python path.
PURE_ENV = "APLOCK_PURE"


def built() -> bool:
    """Whether the compiled extension is importable."""
    return _fast is not None


def refused() -> bool:
    """Whether ``APLOCK_PURE`` asks for the pure-Python path."""
    return os.environ.get(PURE_ENV, "") not in ("", "0")


def active() -> bool:
    """Whether handles opened now use the compiled path."""
    return _fast is not None and not refused()


def describe() -> str:
    """Which path handles opened now use, for ``aplock --version``."""
    if active():
        return "compiled fast path"
    if _fast is None:
        return "pure Python: the compiled fast path is not built"
    return f"pure Python: {PURE_ENV} is set"


class FastHandle(Handle):
    """A ``Handle`` whose try-take, take slice, own release and held check are C calls.

    ``fast`` is the C object; ``aplock.Lock`` uses it directly on its hot path.
    """

    __slots__ = ("fast",)

    def __init__(self, name: str, mode: int) -> None:
        super().__init__(name, mode)
        assert _fast is not None
        try:
            self.fast: FastLock = _fast.FastLock(
                self.names.semaphore,
                self.names.token,
                self.fd,
                weakref.WeakMethod(self.release_guarded),
            )
        except OSError as exc:
            raise _posix._os_error(name, exc, "opening its semaphores") from None
        self.fast.identify(self.me_words)

    def _remember_identity(self) -> None:
        super()._remember_identity()
        fast: FastLock | None = getattr(self, "fast", None)  # unset while __init__ runs
        if fast is not None:
            fast.identify(self.me_words)

    def try_take(self) -> int | None:
        """``Handle.try_take`` as one C step: ``fast[0]``.

        A subscript, not a call: no signal handler runs inside it or right after it, so
        the generation reaches the caller (see ``_fast.c``, ``FastLock_subscript``).
        """
        return self.fast[0]

    def take(self, seconds: float) -> int | None:
        """``Handle.take``, with the slice (wait ``L``, write ``R``, post ``H``) one C call.

        Signals are not deferred, unlike ``Handle.take`` (whose posix_ipc wait would
        swallow a handler's exception): a signal interrupts the C wait, which then
        returns ``None`` holding nothing, and its handler runs at the waiter's next
        step, before the next slice. One that comes once ``L`` is taken finds no step
        between the subscript and ``acquire()``'s return where a handler runs, so it
        runs after ``acquire()`` returned ``True``, as after any acquisition.
        """
        if not _posix.HAS_TIMEDWAIT:
            return self._poll(seconds)
        return self.fast[seconds]  # a subscript: see try_take

    def release(self) -> None:
        """``Handle.release``: the own acquisition in C, any other through the guard."""
        self.fast.release()

    def locked(self) -> bool:
        """Whether some thread or process holds the lock now."""
        return self.fast.locked()


def open_handle(name: str, mode: int) -> Handle:
    """A new handle on lock *name*, on the path that ``active()`` says."""
    return FastHandle(name, mode) if active() else Handle(name, mode)
