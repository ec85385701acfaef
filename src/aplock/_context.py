"""``with`` and ``async with`` for every primitive, written once."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Self


class WithAcquire:
    """``with obj:`` acquires (waiting as long as it takes) and releases."""

    __slots__ = ()

    if TYPE_CHECKING:

        def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...
        def release(self) -> None: ...

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class AsyncWithAcquire:
    """``async with obj:`` acquires (waiting as long as it takes) and releases."""

    __slots__ = ()

    if TYPE_CHECKING:

        async def acquire(self, block: bool = True, timeout: float | None = None) -> bool: ...
        def release(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
