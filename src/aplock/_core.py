"""The internal interface between the public façades and a backend's primitive.

A façade (``Lock``, ``AsyncLock``, ``Once``, the CLI) never calls another façade's
private methods: it asks the object for its *core* (``core_of``) and uses only what
``Core`` declares. A core is one primitive of one backend, seen by one object: it can
try, wait in slices with cancellation, release, warn about a dead holder's acquisition
that it took over, and repair a primitive that a death left taken by nobody. The async
gate (``aplock._gate``) drives any core, so that a new primitive gets its async façade
by writing a core.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import AbandonedLockWarning

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from ._deadline import Deadline

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@dataclass(frozen=True, slots=True)
class Takeover:
    """An acquisition that took over the acquisition of a holder that died.

    Attributes:
        generation: the new acquisition's generation.
        dead_pid: the pid of the dead holder (0 when nobody is known to have died).
        dead_generation: the generation of the dead holder's acquisition.
    """

    generation: int
    dead_pid: int
    dead_generation: int


class Core(Protocol):
    """One primitive of one backend, as one object uses it (see the module docstring)."""

    @property
    def name(self) -> str:
        """The primitive's name."""

    @property
    def gate_key(self) -> Hashable:
        """What identifies the primitive and its waiting behaviour within a process."""

    def try_acquire(self) -> bool:
        """Take the primitive if that needs no waiting."""

    def wait(
        self, deadline: Deadline, cancelled: Callable[[], bool] | None
    ) -> tuple[bool, Takeover | None]:
        """Wait in slices until taken, expired or *cancelled*; say if a dead holder's was.

        Returns ``(acquired, takeover)``. It does not warn: the caller calls
        ``warn_abandoned`` from the thread (and frame) that the user should see.
        """

    def release(self) -> None:
        """Give back one acquisition."""

    def hand_over(self) -> bool:
        """End this process's acquisition and begin a new one of this process at once.

        The primitive is never free in between, so no other thread or process can get
        it; the new acquisition has the next generation. Returns ``False`` (and does
        nothing) when this process holds nothing to hand over: the caller releases.
        """

    def warn_abandoned(self, takeover: Takeover) -> None:
        """Issue the ``AbandonedLockWarning`` of *takeover*; release if that raises."""

    def repair(self, observe: float) -> bool:
        """Free the primitive if a death left it taken by nobody for *observe* seconds."""

    def for_waiter(self) -> Core:
        """A core of its own on the same primitive, for a thread that waits for others.

        Closing the object this core belongs to then cannot end their waits.
        """


class HasCore(Protocol):
    """A façade object: it has a core."""

    @property
    def _core(self) -> Core: ...


def core_of(obj: HasCore) -> Core:
    """The core behind façade object *obj*: the one way to reach it from outside."""
    return obj._core


def warn_abandoned(name: str, takeover: Takeover, release: Callable[[], None]) -> None:
    """Warn that *name* was taken over from a dead holder; *release* it if that raises.

    The warning points at the first frame outside aplock: the user's ``acquire()``,
    ``with lock:``, ``async with`` or ``Once(...).run()``.
    """
    stacklevel = 1
    frame = sys._getframe(0)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        stacklevel += 1
    try:
        warnings.warn(
            AbandonedLockWarning(name, takeover.dead_pid, takeover.dead_generation),
            stacklevel=stacklevel,
        )
    except BaseException:
        release()  # warnings turned into errors: the caller does not hold it
        raise
