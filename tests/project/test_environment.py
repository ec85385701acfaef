"""Failures the environment causes: another user's lock, /dev/shm full, missing, read-only.

The /dev/shm cases run a child in a private mount namespace (``unshare -m``) with a
small tmpfs over /dev/shm, so the host's /dev/shm is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import aplock

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
needs_unshare = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private mount namespace",
)


def open_as(uid: int, name: str, mode: int | None = None) -> str:
    """Fork, drop to *uid*, open *name*; return the outcome as text."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            os.setgid(uid)
            os.setuid(uid)
            lock = aplock.Lock(name) if mode is None else aplock.Lock(name, mode=mode)
            lock.acquire()
            lock.release()
            result = "ok"
        except aplock.LockPermissionError as exc:
            ok = isinstance(exc, PermissionError) and name in str(exc)
            result = f"LockPermissionError {ok} {exc}"
        except BaseException as exc:
            result = f"{type(exc).__name__} {exc}"
        os.write(w, result.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


@needs_root
def test_another_users_private_lock_is_a_clear_permission_error(lock_name: str) -> None:
    aplock.Lock(lock_name).close()
    out = open_as(NOBODY, lock_name)
    assert out.startswith("LockPermissionError True"), out
    assert "permission denied" in out


@needs_root
def test_mode_shares_a_lock_with_other_users(lock_name: str) -> None:
    aplock.Lock(lock_name, mode=0o666).close()
    assert open_as(NOBODY, lock_name, mode=0o666) == "ok"


@needs_root
def test_opening_someone_elses_shared_lock_needs_an_explicit_mode(lock_name: str) -> None:
    aplock.Lock(lock_name, mode=0o666).close()
    out = open_as(NOBODY, lock_name)  # default mode: refuses a lock owned by root
    assert out.startswith("LockPermissionError True"), out
    assert "belong to uid 0" in out


def in_private_shm(mount: str, body: str) -> str:
    code = "import aplock\n" + textwrap.dedent(body)
    cmd = f'{mount} && exec {sys.executable} -c "$0"'
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", cmd, code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


TRY_OPEN = """
try:
    aplock.Lock("env.test")
    print("opened")
except aplock.LockUnavailableError as exc:
    print(isinstance(exc, OSError), exc.errno, exc)
"""


@needs_unshare
@pytest.mark.parametrize("size", ["4k", "8k"])
def test_full_dev_shm(size: str) -> None:
    out = in_private_shm(f"mount -t tmpfs -o size={size} tmpfs /dev/shm", TRY_OPEN)
    assert out.startswith("True 28 lock 'env.test': "), out
    assert "/dev/shm is full" in out


@needs_unshare
def test_missing_dev_shm() -> None:
    out = in_private_shm("mount -t tmpfs tmpfs /dev", TRY_OPEN)
    assert out.startswith("True 2 lock 'env.test': "), out
    assert "/dev/shm missing" in out


@needs_unshare
def test_read_only_dev_shm() -> None:
    out = in_private_shm("mount -t tmpfs -o ro tmpfs /dev/shm", TRY_OPEN)
    assert "read-only" in out, out


def test_guard_falls_back_to_a_file_without_record_locks(
    lock_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where shared memory cannot be locked (macOS), a guard file stands in."""
    import errno
    import fcntl

    from aplock._posix import handle as _handle
    from aplock._posix import ipc as _posix

    real = fcntl.flock
    probed: list[int] = []

    def no_locks_on_shm(fd: int, cmd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith("/dev/shm/"):
            probed.append(fd)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        real(fd, cmd)

    monkeypatch.setattr(fcntl, "flock", no_locks_on_shm)
    lock = aplock.Lock(lock_name)
    handle = lock._h
    assert isinstance(handle, _handle.Handle)
    assert probed
    assert handle.guard_fd != handle.fd
    path = _posix.guard_path(handle.names.base)
    assert os.path.exists(path)
    lock.acquire()
    lock.hand_off(None)  # a guarded path
    lock.release()  # and another
    with pytest.raises(aplock.LockNotHeldError):
        lock.release()
    lock.close()
    assert aplock.unlink(lock_name)
    assert not os.path.exists(path)
