"""``import aplock`` stays light: sync code never imports asyncio or AnyIO.

Each check runs in a fresh interpreter (this one has asyncio loaded by the test plugins).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import aplock
from aplock.startup import FileMarker

ASYNC_MODULES = ("asyncio", "anyio", "sniffio", "trio")


def run_python(code: str, *args: str) -> dict[str, object]:
    """Run *code* in a fresh interpreter; return the JSON it printed last."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


LOADED = f"sorted(m for m in {ASYNC_MODULES!r} if m in sys.modules)"


def test_sync_use_imports_no_async_library(lock_name: str) -> None:
    out = run_python(
        f"""
        import json, sys
        import aplock

        after_import = {LOADED}
        with aplock.Lock(sys.argv[1]) as lock:
            assert lock.locked()
        assert aplock.Once(sys.argv[1], key="v1").run(lambda: None)
        after_use = {LOADED}

        import anyio

        async def main():
            async with aplock.AsyncLock(sys.argv[1]) as alock:
                assert alock.locked()
            return await aplock.AsyncOnce(sys.argv[1], key="v2").run(lambda: None)

        ran = anyio.run(main)
        print(json.dumps({{"import": after_import, "use": after_use, "async_ran": ran}}))
        """,
        lock_name,
    )
    FileMarker().clear(lock_name)
    assert out == {"import": [], "use": [], "async_ran": True}


def test_async_names_load_on_first_access() -> None:
    out = run_python(
        f"""
        import json, sys
        import aplock

        listed = sorted(set(aplock.__all__) - set(dir(aplock)))
        before = {LOADED}
        cls = aplock.AsyncLock
        from aplock import AsyncOnce, AsyncLockStatistics
        import aplock.aio, aplock.startup
        same = [
            cls is aplock.aio.AsyncLock,
            AsyncLockStatistics is aplock.aio.AsyncLockStatistics,
            AsyncOnce is aplock.startup.AsyncOnce,
        ]
        namespace = {{}}
        exec("from aplock import *", namespace)
        star = sorted(set(aplock.__all__) - set(namespace))
        try:
            aplock.NoSuchThing
        except AttributeError as exc:
            missing = str(exc)
        print(json.dumps({{
            "unlisted": listed, "before": before, "same": same, "star": star,
            "missing": missing, "asyncio": "asyncio" in sys.modules,
        }}))
        """
    )
    assert out == {
        "unlisted": [],
        "before": [],
        "same": [True, True, True],
        "star": [],
        "missing": "module 'aplock' has no attribute 'NoSuchThing'",
        "asyncio": True,
    }


def test_the_sync_modules_import_no_async_library() -> None:
    out = run_python(
        f"""
        import json, sys
        import aplock.sync, aplock.startup, aplock.errors, aplock._cli.inspect

        print(json.dumps({LOADED}))
        """
    )
    assert out == []  # type: ignore[comparison-overlap]


def test_all_is_unchanged() -> None:
    assert set(aplock.__all__) >= {"AsyncLock", "AsyncLockStatistics", "AsyncOnce", "Once"}
    assert set(aplock.__all__) <= set(dir(aplock))
