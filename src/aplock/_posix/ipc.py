"""The only module that talks to ``posix_ipc``: every platform quirk lives here.

- Objects are created race-free (``O_CREAT|O_EXCL`` first, then open) with exactly the
  requested mode (the umask is undone with ``chmod``).
- Errors become aplock errors that name the lock; no ``posix_ipc`` exception escapes.
- Blocking waits are bounded slices. posix_ipc turns ``EINTR`` into ``SignalError`` and
  swallows any exception a Python signal handler raised; so on the main thread signals
  are deferred during a slice (``defer_signals``) and run right after it, where a
  handler's own exception propagates normally. Where ``sem_timedwait`` is missing
  (macOS), ``HAS_TIMEDWAIT`` is false and waits poll ``sem_trywait`` every ``POLL``
  seconds instead.
- The guard is a ``flock`` on an open file description of the state record that each
  handle opens for itself: the kernel drops it when its holder dies, so it can never
  wedge, and, unlike a POSIX record lock, closing some other descriptor of the same file
  in the same process does not drop it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import mmap
import os
import signal
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Any

import posix_ipc

from aplock.errors import LockError, LockPermissionError, LockUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from aplock._names import PosixNames


try:
    # The C functions themselves: ``signal`` wraps them to turn masks into sets of
    # ``Signals`` enums, which costs tens of microseconds per blocking wait.
    from _signal import pthread_sigmask as _sigmask  # type: ignore[import-not-found]
    from _signal import sigpending as _sigpending
except ImportError:  # pragma: no cover - not CPython
    _sigmask = signal.pthread_sigmask
    _sigpending = signal.sigpending

#: Default permission bits of a lock's OS objects: only this user may open them.
DEFAULT_MODE = 0o600

BusyError = posix_ipc.BusyError
SignalError = posix_ipc.SignalError
Semaphore = posix_ipc.Semaphore

#: Whether semaphore names are limited to 31 characters (macOS and other BSDs).
SHORT_NAMES = not sys.platform.startswith("linux")
HAS_TIMEDWAIT = posix_ipc.SEMAPHORE_TIMEOUT_SUPPORTED and sys.platform != "darwin"
HAS_VALUE = posix_ipc.SEMAPHORE_VALUE_SUPPORTED
SHM_DIR = "/dev/shm"
#: Whether a descriptor can be reopened through ``/proc`` (Linux).
HAS_PROC_FD = os.path.isdir("/proc/self/fd")
#: Poll interval where ``sem_timedwait`` is missing.
POLL = 0.002

_FAULTS = {
    getattr(signal, n)
    for n in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS")
    if hasattr(signal, n)
}
_BLOCKABLE = signal.valid_signals() - _FAULTS - {signal.SIGKILL, signal.SIGSTOP}


def _os_error(name: str, exc: BaseException, what: str) -> LockError:
    """Translate an OS or posix_ipc failure while doing *what* into an aplock error."""
    if isinstance(exc, posix_ipc.PermissionsError | PermissionError):
        return LockPermissionError(
            name,
            f"permission denied while {what}: its OS objects belong to another user or were "
            "created with a narrower mode. Use a different name, or have the owner create it "
            "with mode=0o660/0o666 for deliberate sharing.",
            errno.EACCES,
        )
    code = getattr(exc, "errno", None)
    if isinstance(exc, posix_ipc.ExistentialError):
        code = errno.ENOENT
    if code in (errno.ENOSPC, errno.ENOMEM):
        hint = f"{SHM_DIR} is full: free space there (or enlarge it) and retry"
    elif code in (errno.ENOENT, errno.ENOSYS, errno.ENOTDIR):
        hint = (
            f"POSIX shared memory is not available ({SHM_DIR} missing?): mount a tmpfs on "
            f"{SHM_DIR}, or in a container run with a shared-memory mount"
        )
    elif code == errno.EROFS:
        hint = f"{SHM_DIR} is mounted read-only: mount it read-write"
    elif code in (errno.EMFILE, errno.ENFILE):
        hint = "too many open files: close unused locks or raise the file-descriptor limit"
    else:
        hint = "the operating system refused; check the message below and retry"
    return LockUnavailableError(name, f"{what} failed: {hint} ({exc})", code)


def _chmod_semaphore(posix_name: str, mode: int) -> None:
    path = f"{SHM_DIR}/sem.{posix_name[1:]}"
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, mode)


def open_semaphore(name: str, posix_name: str, mode: int, initial: int) -> posix_ipc.Semaphore:
    """Create the semaphore with *initial* value and *mode*, or open it if it exists."""
    try:
        try:
            sem = posix_ipc.Semaphore(posix_name, posix_ipc.O_CREX, mode, initial)
        except posix_ipc.ExistentialError:
            return posix_ipc.Semaphore(posix_name, 0)
    except (posix_ipc.Error, OSError, ValueError) as exc:
        raise _os_error(name, exc, "opening its semaphore") from None
    if SHORT_NAMES:
        return sem
    try:
        try:
            _chmod_semaphore(posix_name, mode)
        except BaseException:
            sem.close()
            raise
    except OSError as exc:
        raise _os_error(name, exc, "setting its semaphore's mode") from None
    return sem


def open_record(name: str, posix_name: str, mode: int, size: int) -> tuple[int, mmap.mmap, int]:
    """Create or open the shared-memory record; return ``(fd, map, owner uid)``.

    Whatever fails after the record is open closes its descriptor before the error
    propagates (the record itself stays: others may have opened it meanwhile).
    """
    created = True
    try:
        try:
            shm = posix_ipc.SharedMemory(posix_name, posix_ipc.O_CREX, mode, size)
        except posix_ipc.ExistentialError:
            created = False
            shm = posix_ipc.SharedMemory(posix_name, 0)
    except (posix_ipc.Error, OSError, ValueError) as exc:
        raise _os_error(name, exc, "opening its state record") from None
    fd = shm.fd
    try:
        try:
            if created:
                os.fchmod(fd, mode)
            st = os.fstat(fd)
            # Size it only by growing: the creator may not have sized it yet, or an opener
            # of another kind (a semaphore's record is larger than a lock's) may be sizing
            # it right now, and a truncate to our smaller size would cut its record short.
            if hasattr(os, "posix_fallocate"):
                # Grows the file, never shrinks it, and reserves the pages: on a full
                # tmpfs a write through the map would SIGBUS.
                os.posix_fallocate(fd, 0, size)
            elif st.st_size < size:
                os.ftruncate(fd, size)  # no fallocate (macOS): a narrow window remains
            return fd, mmap.mmap(fd, size), st.st_uid
        except BaseException:
            os.close(fd)
            raise
    except (OSError, ValueError) as exc:
        raise _os_error(name, exc, "opening its state record") from None


def close(
    name: str,
    sems: tuple[posix_ipc.Semaphore, ...],
    fds: tuple[int, ...],
    mm: mmap.mmap,
    views: tuple[memoryview[Any], ...],
) -> None:
    """Close this process's handles (the objects themselves stay)."""
    try:
        for view in views:
            view.release()
        mm.close()
        for fd in fds:
            os.close(fd)
        for sem in sems:
            sem.close()
    except (posix_ipc.Error, OSError) as exc:
        raise _os_error(name, exc, "closing it") from None


def unlink(name: str, names: PosixNames) -> bool:
    """Remove the lock's OS objects (and any guard file); return whether any existed."""
    sem, token, record = names.semaphore, names.token, names.record
    found = False
    with contextlib.suppress(FileNotFoundError):
        os.unlink(guard_path(names.base))
    steps: tuple[tuple[Callable[[str], None], str], ...] = (
        (posix_ipc.unlink_semaphore, sem),
        (posix_ipc.unlink_semaphore, token),
        (posix_ipc.unlink_shared_memory, record),
    )
    for fn, posix_name in steps:
        try:
            fn(posix_name)
            found = True
        except posix_ipc.ExistentialError:
            pass
        except (posix_ipc.Error, OSError) as exc:
            raise _os_error(name, exc, "unlinking it") from None
    return found


def peek_values(lock_name: str, token_name: str) -> tuple[int, int] | None:
    """Values of an existing lock's two semaphores, without creating them (inspection)."""
    if not HAS_VALUE:
        return None
    try:
        sems = [posix_ipc.Semaphore(lock_name, 0), posix_ipc.Semaphore(token_name, 0)]
    except (posix_ipc.Error, OSError, ValueError):
        return None
    try:
        return sems[0].value, sems[1].value
    finally:
        for sem in sems:
            sem.close()


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def handled_signal_pending(kept_blocked: set[int]) -> bool:
    """Whether a signal with a Python handler waits to be delivered once we unblock.

    Signals the application itself keeps blocked (*kept_blocked*) stay pending after
    the slice too, so they do not count.
    """
    return any(callable(signal.getsignal(s)) for s in _sigpending() if s not in kept_blocked)


def defer_signals() -> set[int] | None:
    """On the main thread, block the signals we defer and return the previous mask.

    Returns ``None`` on other threads (Python signal handlers never run there). Pass the
    mask to ``restore_signals`` once the deferred section is over.
    """
    if not _on_main_thread():
        return None
    old: set[int] = _sigmask(signal.SIG_BLOCK, ())  # the current mask, unchanged
    try:
        _sigmask(signal.SIG_BLOCK, _BLOCKABLE)
    except BaseException:  # a handler ran and raised on the way: leave nothing blocked
        _sigmask(signal.SIG_SETMASK, old)
        raise
    return old


#: Put back the mask ``defer_signals`` returned: deferred handlers run now. A C call,
#: not a Python function: a handler pending on entry (one that another thread took)
#: would otherwise run, and raise, before the mask is back.
restore_signals: Callable[[set[int]], object] = functools.partial(_sigmask, signal.SIG_SETMASK)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """On the main thread, hold back signals for the block; their handlers run after it."""
    old = defer_signals()
    try:
        yield
    finally:
        if old is not None:
            restore_signals(old)


_NO_FLOCK = {errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOLCK}
_BUSY = {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}


def guard_path(base: str) -> str:
    """Where a lock's guard file lives on platforms whose shared memory cannot be locked."""
    return os.path.join(tempfile.gettempdir(), f"aplock-{os.geteuid()}", f"{base}.guard")


def open_guard(name: str, record_fd: int, base: str, mode: int) -> int:
    """A descriptor of the guard's own, with an open file description nothing else shares.

    On Linux it is the state record, opened once more through ``/proc/self/fd`` (the
    record's own description is shared with the ``mmap``'s copy of its descriptor, which
    a forked child would keep). Where shared memory cannot be locked (``flock`` fails
    with ``ENOTSUP``/``EINVAL``), or there is no ``/proc`` to reopen a descriptor by
    after a fork (see ``reopen_guard``), a file beside the other users' guard files takes
    its place. Both are released by the kernel when their holder dies.
    """
    if not HAS_PROC_FD:
        return _open_guard_file(name, base, mode)
    try:
        fd = os.open(f"/proc/self/fd/{record_fd}", os.O_RDWR)
    except OSError as exc:
        raise _os_error(name, exc, "opening its guard") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as exc:
        if exc.errno in _BUSY:
            return fd  # supported: someone holds the guard right now
        os.close(fd)
        if exc.errno not in _NO_FLOCK:
            raise _os_error(name, exc, "probing its guard") from None
        return _open_guard_file(name, base, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_guard_file(name: str, base: str, mode: int) -> int:
    path = guard_path(base)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, mode)
    except OSError as exc:
        raise _os_error(name, exc, f"opening its guard file {path}") from None


def reopen_guard(name: str, fd: int, base: str) -> None:
    """Give the guard descriptor *fd* an open file description of its own (after fork).

    A forked child shares its parent's descriptions, and with them any ``flock`` the
    parent holds or takes later: the guard would not keep the two apart, and a guard
    held by a parent that dies would stay held while the child lives. Reopening the same
    file onto the same descriptor number fixes both.
    """
    path = f"/proc/self/fd/{fd}" if HAS_PROC_FD else guard_path(base)
    try:
        new = os.open(path, os.O_RDWR)
        try:
            os.dup2(new, fd, inheritable=False)
        finally:
            os.close(new)
    except OSError as exc:
        raise _os_error(name, exc, "reopening its guard after fork()") from None


class Guard:
    """A short critical section shared by every thread and process using one lock.

    A thread lock serializes the threads that share this guard's descriptor; a
    ``flock`` on the descriptor's open file description serializes everyone else
    (other processes, and other handles of this process) and is released by the kernel
    if its holder dies. Signals are deferred on the main thread while it is held.
    """

    __slots__ = ("_fd", "_name", "_thread_lock")

    def __init__(self, name: str, fd: int) -> None:
        self._name = name
        self._fd = fd
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def held(self, *, block: bool = True) -> Iterator[bool]:
        """Hold the guard for a ``with`` block; with ``block=False``, only if it is free.

        Yields whether it is held (always ``True`` when blocking).
        """
        with signals_deferred():
            if not self._thread_lock.acquire(block):
                yield False
                return
            # Held from before the flock() call: a handler's exception right after it
            # returns (a signal that another thread took runs its handler here, on the
            # main thread, deferred or not) must not leave the guard locked for good.
            # Unlocking a guard this process does not hold does nothing.
            locked = True
            try:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX if block else fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    locked = False
                    if not block and exc.errno in _BUSY:
                        yield False
                        return
                    raise _os_error(self._name, exc, "taking its guard") from None
                yield True
            finally:
                try:
                    if locked:
                        fcntl.flock(self._fd, fcntl.LOCK_UN)
                finally:
                    self._thread_lock.release()


class FailedGuard:
    """Stands in for a guard that could not be reopened after fork: raises on use."""

    __slots__ = ("_error",)

    def __init__(self, error: LockError) -> None:
        self._error = error

    @contextlib.contextmanager
    def held(self, *, block: bool = True) -> Iterator[bool]:
        """Raise the error that left this process without a guard of its own."""
        raise self._error
        yield False  # pragma: no cover - makes this a generator


def open_guarded_record(
    name: str, names: PosixNames, mode: int, size: int, undo: contextlib.ExitStack
) -> tuple[int, mmap.mmap, int, Guard]:
    """Open the record of *name* and its guard: ``(fd, map, guard fd, guard)``.

    What is opened is registered with *undo*, so that a later failure closes it. A record
    of another user is refused unless the caller widened *mode* (or runs as root).
    """
    fd, mm, owner = open_record(name, names.record, mode, size)
    undo.callback(os.close, fd)
    undo.callback(mm.close)
    if owner != os.geteuid() and mode == DEFAULT_MODE and os.geteuid() != 0:
        raise LockPermissionError(
            name,
            f"its OS objects belong to uid {owner}, not to this user; use another "
            "name, or pass the mode the owner shared it with (e.g. mode=0o666)",
        )
    guard_fd = open_guard(name, fd, names.base, mode)
    undo.callback(os.close, guard_fd)
    return fd, mm, guard_fd, Guard(name, guard_fd)


def record_entries() -> list[str]:
    """Names of the aplock state records in ``/dev/shm`` (Linux; empty elsewhere)."""
    try:
        return sorted(os.listdir(SHM_DIR))
    except FileNotFoundError:
        return []
