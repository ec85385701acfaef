"""What ``kinds`` declares of each class is what the class has."""

from __future__ import annotations

import inspect

from tests.contract import kinds
from tests.contract.kinds import Kind

KINDS = kinds.LOCKS


def test_capabilities_match_the_classes(kind: Kind) -> None:
    cls = kind.cls
    assert kind.id == cls.__name__
    has = {
        "acquisition": kind.acquisition,
        "info": kind.info,
        "hand_off": kind.hand_off,
        "acquire_nowait": kind.acquire_nowait,
        "get_value": kind.counting,
        "locked": kind.locked is not None,
        "aclose": kind.close == "aclose",
        "close": True,
        "closed": True,
    }
    assert {attr: hasattr(cls, attr) for attr in has} == has
    assert inspect.iscoroutinefunction(cls.acquire) == kind.is_async
    assert inspect.iscoroutinefunction(getattr(cls, "__aenter__", None)) == kind.is_async
