"""The public surface: ``__all__`` matches what is exported, and everything is documented.

Every public module's ``__all__`` is walked: each name exists, has a docstring (as the
reference page renders it: attribute docstrings count, read statically with griffe,
which mkdocstrings uses), and has exactly one home, the module that defines it or, for
what a private module defines, the one public module that presents it. Other modules
list it only where that is deliberate: ``aplock`` re-exports its core, and a few names
are also where users meet them (``REEXPORTED``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections import defaultdict
from pathlib import Path

import griffe

import aplock

ROOT = Path(__file__).resolve().parents[2]

PUBLIC_MODULES = (
    "aplock",
    "aplock.sync",
    "aplock.semaphore",
    "aplock.aio",
    "aplock.startup",
    "aplock.postgres",
    "aplock.leader",
    "aplock.errors",
)

#: Names a module lists although their home is another: the module where users meet them.
REEXPORTED = {
    "aplock.startup": {"OnceTimeoutError"},
    "aplock.postgres": {"LockLostError"},
}


@functools.cache
def static_package() -> griffe.Module:
    """aplock as griffe reads it from the source (what the reference page shows)."""
    package = griffe.load("aplock", search_paths=[str(ROOT / "src")], resolve_aliases=True)
    assert isinstance(package, griffe.Module)
    return package


def static(module: str, name: str) -> griffe.Object:
    """The object *module*.*name* is, wherever it is defined."""
    package = static_package()
    found = package[name] if module == "aplock" else package[f"{module[7:]}.{name}"]
    return found.final_target if isinstance(found, griffe.Alias) else found


def exported() -> dict[str, set[str]]:
    """Each exported name (but ``__version__``) and the public modules that list it."""
    listed: dict[str, set[str]] = defaultdict(set)
    for module in PUBLIC_MODULES:
        for name in importlib.import_module(module).__all__:
            if name != "__version__":
                listed[name].add(module)
    return listed


def by_module() -> dict[str, list[str]]:
    """Each public module and the exported names it lists."""
    modules: dict[str, list[str]] = defaultdict(list)
    for name, listing in exported().items():
        for module in listing:
            modules[module].append(name)
    return modules


def test_all_lists_exactly_the_public_names() -> None:
    public = {n for n in dir(aplock) if not n.startswith("_")} - {
        "aio",
        "errors",
        "sync",
        "semaphore",
        "startup",
        "postgres",
        "leader",
    }
    assert set(aplock.__all__) - {"__version__"} == public
    assert sorted(aplock.__all__) == aplock.__all__


def test_every_exported_name_exists_and_has_a_docstring() -> None:
    for module_name, names in sorted(by_module().items()):
        module = importlib.import_module(module_name)
        for name in names:
            where = f"{module_name}.{name}"
            obj = getattr(module, name)  # AttributeError: listed but missing
            docstring = static(module_name, name).docstring
            assert docstring is not None, f"{where} has no docstring"
            assert docstring.value.strip(), f"{where} has an empty docstring"
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    if callable(member) or isinstance(member, property):
                        assert inspect.getdoc(member), f"{where}.{attr} has no docstring"


def home_of(name: str, listing: set[str]) -> str:
    """The module a name belongs to: where it is defined, if that is public; otherwise
    the one public module (besides ``aplock``) that lists it without re-exporting it."""
    defined = static(min(listing), name).parent
    assert defined is not None
    if defined.path in PUBLIC_MODULES:
        return defined.path
    homes = {m for m in listing - {"aplock"} if name not in REEXPORTED.get(m, set())}
    assert len(homes) == 1, f"{name} (defined in {defined.path}) is presented by {homes}"
    return homes.pop()


def test_every_exported_name_has_one_home() -> None:
    for name, listing in sorted(exported().items()):
        home = home_of(name, listing)
        assert home != "aplock", f"aplock/__init__.py defines {name}: it only re-exports"
        assert home in listing, f"{name} is not in the __all__ of its home, {home}"
        deliberate = {m for m, names in REEXPORTED.items() if name in names}
        assert listing - {home, "aplock"} == deliberate, f"{name}: listed by {listing}"
        obj = getattr(importlib.import_module(home), name)
        for module in listing:
            assert getattr(importlib.import_module(module), name) is obj, f"{module}.{name}"


def test_reexports_are_listed_where_they_are_meant_to_be() -> None:
    listing = exported()
    for module, names in REEXPORTED.items():
        for name in names:
            assert module in listing[name], f"{module} no longer exports {name}"
            assert "aplock" in listing[name], f"aplock does not export {name}"


def test_version() -> None:
    assert aplock.__version__.count(".") == 2
