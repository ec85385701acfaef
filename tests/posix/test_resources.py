"""Opening a lock that fails part-way closes everything it opened, and says why.

Each case makes one OS call of ``aplock._posix`` fail (as on a full ``/dev/shm``) for 25
opens in a row, and counts this process's descriptors and mapped semaphores before and
after. The failing call is replaced in ``_posix``'s view of ``os``/``mmap`` only, so that
nothing else in the process sees it.
"""

from __future__ import annotations

import errno
import fcntl
import gc
import mmap
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import posix_ipc
import pytest

import aplock
from aplock._names import posix_names
from aplock._posix import ipc as _posix
from tests.conftest import SHM

ATTEMPTS = 25


class Failing(types.ModuleType):
    """A stand-in for module *real* whose function *attr* raises *error* (if *when* holds)."""

    def __init__(
        self,
        real: types.ModuleType,
        attr: str,
        error: Callable[[], OSError],
        when: Callable[..., bool] = lambda *args: True,
    ) -> None:
        super().__init__(real.__name__)
        self._real, self._attr, self._error, self._when = real, attr, error, when

    def __getattr__(self, attr: str) -> Any:
        if attr == self._attr:
            real = getattr(self._real, attr)

            def maybe_fail(*args: object, **kwargs: object) -> Any:
                if self._when(*args):
                    raise self._error()
                return real(*args, **kwargs)

            return maybe_fail
        return getattr(self._real, attr)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def mapped_semaphores() -> int:
    """Semaphores this process has open (each is a mapping of a ``sem.*`` file)."""
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if f"{SHM}/sem." in line)


def full(code: int = errno.ENOSPC) -> Callable[[], OSError]:
    return lambda: OSError(code, os.strerror(code))


def token(*args: object) -> bool:
    """Whether a ``posix_ipc.Semaphore`` call opens a lock's second semaphore."""
    return str(args[0]).endswith(".h")


def guard(*args: object) -> bool:
    """Whether an ``os.open`` call opens a record's guard descriptor."""
    return str(args[0]).startswith("/proc/self/fd/")


CASES: dict[str, tuple[types.ModuleType, str, Callable[[], OSError], Callable[..., bool]]] = {
    "posix_fallocate": (os, "posix_fallocate", full(errno.ENOSPC), lambda *a: True),
    "fstat": (os, "fstat", full(errno.EIO), lambda *a: True),
    "ftruncate": (os, "ftruncate", full(errno.ENOSPC), lambda *a: True),
    "mmap": (mmap, "mmap", full(errno.ENOMEM), lambda *a: True),
    "fchmod": (os, "fchmod", full(errno.EIO), lambda *a: True),
    "semaphore chmod": (os, "chmod", full(errno.EIO), lambda *a: True),
    "second semaphore": (posix_ipc, "Semaphore", full(errno.ENOSPC), token),
    "guard open": (os, "open", full(errno.EMFILE), guard),
    "guard probe": (fcntl, "flock", full(errno.EIO), lambda *a: True),
}


def presize_record(name: str) -> None:
    """Leave the record as a creator that has not sized it yet would: empty."""
    path = Path(SHM) / posix_names(name).record.lstrip("/")
    path.touch(mode=0o600)


@pytest.mark.parametrize("case", list(CASES))
def test_failed_opens_close_what_they_opened(
    case: str, lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, attr, error, when = CASES[case]
    if case == "posix_fallocate" and not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate on this platform")
    if case == "ftruncate":  # the sizing of platforms without posix_fallocate (macOS)
        monkeypatch.delattr(os, "posix_fallocate", raising=False)
    aplock.Lock(lock_name).close()  # warm up: imports and caches of a first open
    aplock.unlink(lock_name)
    monkeypatch.setattr(_posix, module.__name__, Failing(module, attr, error, when))
    gc.collect()
    fds, sems = open_descriptors(), mapped_semaphores()
    for _ in range(ATTEMPTS):
        if case == "ftruncate":
            presize_record(lock_name)
        with pytest.raises(aplock.LockUnavailableError) as info:
            aplock.Lock(lock_name)
        err = info.value
        assert err.name == lock_name
        assert repr(lock_name) in str(err)
        assert err.errno == error().errno
        assert info.value.__cause__ is None
        aplock.unlink(lock_name)  # each attempt creates the objects anew
    gc.collect()
    assert open_descriptors() == fds, f"{case}: descriptors leaked"
    assert mapped_semaphores() == sems, f"{case}: semaphores leaked"


def test_full_dev_shm_names_the_cause(lock_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_posix, "os", Failing(os, "posix_fallocate", full()))
    with pytest.raises(aplock.LockUnavailableError, match="/dev/shm is full") as info:
        aplock.Lock(lock_name)
    assert isinstance(info.value, OSError)
    assert info.value.errno == errno.ENOSPC


def test_opening_never_shrinks_a_record_that_another_opener_is_sizing(
    lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock's opener that finds the record unsized must not cut short the larger record
    that a semaphore's creator sizes between its look and its own sizing."""
    import posix_ipc

    from aplock._posix import ipc, record, slots

    names = posix_names(lock_name, short=ipc.SHORT_NAMES)
    shm = posix_ipc.SharedMemory(names.record, posix_ipc.O_CREX, 0o600, 0)  # created, unsized
    real_fstat = os.fstat

    def fstat_then_the_other_sizes_it(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        os.ftruncate(shm.fd, slots.SIZE)  # the semaphore's creator, right after our look
        return st

    monkeypatch.setattr(os, "fstat", fstat_then_the_other_sizes_it)
    try:
        fd, mm, _ = ipc.open_record(lock_name, names.record, 0o600, record.SIZE)
        monkeypatch.undo()
        mm.close()
        os.close(fd)
        assert os.fstat(shm.fd).st_size == slots.SIZE
    finally:
        monkeypatch.undo()
        shm.close_fd()
        shm.unlink()
