"""This process's handles, one per lock name, and what becomes of them at ``fork()``."""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from aplock.errors import LockClosedError

from .handle import Handle


class ClosedHandle:
    """Stands in for the handle of a closed lock: any use raises ``LockClosedError``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        raise LockClosedError(
            self.name, "this object was closed; create a new aplock.Lock(name) to use it again"
        )


#: One handle per name per process: it stays registered, and open, for as long as
#: anything uses it (lock objects, or a thread still waiting on it).
_registry: weakref.WeakValueDictionary[str, Handle] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


def acquire_handle(name: str, mode: int) -> Handle:
    """This process's handle for *name*, opened on first use."""
    with _registry_lock:
        handle = _registry.get(name)
        if handle is None:
            handle = Handle(name, mode)
            _registry[name] = handle
        return handle


def forget_handle(name: str) -> None:
    """Let the next ``acquire_handle(name)`` open the OS objects anew (after an unlink).

    Objects that use the old handle keep it, as other processes keep theirs.
    """
    with _registry_lock:
        _registry.pop(name, None)


def open_handles() -> list[Handle]:
    """The handles open in this process."""
    with _registry_lock:
        return list(_registry.values())


# The hooks look the registry lock up when they run: a child replaces it with a new one,
# and the one it inherited (taken by ``_before_fork``) is never released.
def _before_fork() -> None:
    _registry_lock.acquire()


def _after_fork_in_parent() -> None:
    _registry_lock.release()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for handle in _registry.values():
        handle.reset_after_fork()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
