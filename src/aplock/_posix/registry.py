"""This process's handles, one per name and kind, and what becomes of them at ``fork()``."""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from aplock.errors import LockClosedError

from .fastpath import open_handle

if TYPE_CHECKING:
    from collections.abc import Callable

    from .handle import Handle


class ClosedHandle:
    """Stands in for the handle of a closed object: any use raises ``LockClosedError``."""

    __slots__ = ("name", "opener")

    def __init__(self, name: str, opener: str = "aplock.Lock") -> None:
        self.name = name
        #: The class to name in the error, e.g. ``"aplock.BoundedSemaphore"``.
        self.opener = opener

    def __getattr__(self, attr: str) -> Any:
        raise LockClosedError(
            self.name, f"this object was closed; create a new {self.opener}(name) to use it again"
        )


class _Resettable(Protocol):
    def reset_after_fork(self) -> None: ...


H = TypeVar("H", bound=_Resettable)

#: Every registry, for the fork hooks.
_registries: list[Registry[Any]] = []


class Registry(Generic[H]):
    """One handle per name in this process: it stays registered, and open, for as long
    as anything uses it (objects, or a thread still waiting on it)."""

    __slots__ = ("_handles", "_lock")

    def __init__(self) -> None:
        self._handles: weakref.WeakValueDictionary[str, H] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()
        _registries.append(self)

    def get(self, name: str, opener: Callable[[], H], current: Callable[[H], bool]) -> H:
        """The handle for *name*; *opener* makes one if there is none, or if the one
        there is no longer *current* (its OS objects were unlinked since)."""
        with self._lock:
            handle = self._handles.get(name)
            if handle is None or not current(handle):
                handle = opener()
                self._handles[name] = handle
            return handle

    def forget(self, name: str) -> None:
        """Let the next ``get(name)`` open the OS objects anew (after an unlink).

        Objects that use the old handle keep it, as other processes keep theirs.
        """
        with self._lock:
            self._handles.pop(name, None)

    def handles(self) -> list[H]:
        """The handles open in this process."""
        with self._lock:
            return list(self._handles.values())


#: The locks' handles.
LOCKS: Registry[Handle] = Registry()


def _always(handle: object) -> bool:
    return True


def acquire_handle(name: str, mode: int) -> Handle:
    """This process's handle for lock *name*, opened on first use."""
    return LOCKS.get(name, lambda: open_handle(name, mode), _always)


def forget_handle(name: str) -> None:
    """Let the next ``acquire_handle(name)`` open the lock's OS objects anew."""
    LOCKS.forget(name)


def open_handles() -> list[Handle]:
    """The lock handles open in this process."""
    return LOCKS.handles()


# The hooks look each registry's lock up when they run: a child replaces it with a new
# one, and the one it inherited (taken by ``_before_fork``) is never released.
def _before_fork() -> None:
    for registry in _registries:
        registry._lock.acquire()


def _after_fork_in_parent() -> None:
    for registry in reversed(_registries):
        registry._lock.release()


def _after_fork_in_child() -> None:
    for registry in _registries:
        registry._lock = threading.Lock()
        for handle in registry._handles.values():
            handle.reset_after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
