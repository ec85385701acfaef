"""The one place that tells asyncio from Trio.

Everything else async in aplock is written once on AnyIO. What AnyIO does not give at
the cost or in the shape we need is here: the identity of the running event loop (a
key for per-loop state), a thread-safe "run this soon in that loop", and a background
task that outlives the caller. Trio is never imported here unless Trio is what runs.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ["current_loop", "is_asyncio", "notifier", "running_loop", "spawn"]

# Background tasks of asyncio loops: the loop keeps only weak references to its tasks.
_tasks: set[asyncio.Task[None]] = set()


def current_loop() -> object:
    """The running event loop: an asyncio loop, or the Trio token of a Trio run."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop
    trio = sys.modules.get("trio")  # never imported here: only if Trio is what runs
    if trio is not None:
        try:
            # What AnyIO's current_token().native_token is, at a tenth of the cost.
            return trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
    return anyio.lowlevel.current_token().native_token


def running_loop() -> object | None:
    """``current_loop()``, or ``None`` when this thread runs no event loop."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token()  # type: ignore[no-any-return]
        except RuntimeError:
            pass
    try:
        return anyio.lowlevel.current_token().native_token
    except RuntimeError:  # no async library runs in this thread
        return None


def is_asyncio(loop: object) -> bool:
    """Whether *loop* (from ``current_loop``) is an asyncio event loop."""
    return isinstance(loop, asyncio.AbstractEventLoop)


def notifier(loop: object) -> Callable[[Callable[[], object]], object]:
    """A thread-safe, non-blocking "run this soon in that event loop"."""
    if isinstance(loop, asyncio.AbstractEventLoop):
        return loop.call_soon_threadsafe
    return loop.run_sync_soon  # type: ignore[attr-defined,no-any-return]


def spawn(func: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run *func* in the background of the current event loop, beyond the caller's life.

    A system task under Trio; a task the loop runs to its end under asyncio. *func*
    must handle its own errors: nobody awaits it.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        import trio  # noqa: PLC0415 - only reached, so only imported, under Trio

        trio.lowlevel.spawn_system_task(func)
    else:
        task = loop.create_task(func())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
