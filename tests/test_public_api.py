"""The public surface: ``__all__`` matches what is exported, and everything is documented."""

from __future__ import annotations

import inspect

import aplock


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in dir(aplock) if not n.startswith("_")} - {
        "aio",
        "errors",
        "sync",
        "startup",
        "postgres",
    }
    assert set(aplock.__all__) - {"__version__"} == public
    assert sorted(aplock.__all__) == aplock.__all__


def test_every_public_name_has_a_docstring() -> None:
    for name in aplock.__all__:
        obj = getattr(aplock, name)
        if name == "__version__":
            continue
        assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (callable(member) or isinstance(member, property)):
                    assert inspect.getdoc(member), f"{name}.{attr}"


def test_version() -> None:
    assert aplock.__version__.count(".") == 2
