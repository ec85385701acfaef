"""Every error names the lock, says what to do, subclasses the right builtin, pickles."""

from __future__ import annotations

import errno
import pickle

import pytest

import aplock
from aplock import startup
from aplock.errors import (
    AbandonedLockWarning,
    LockClosedError,
    LockError,
    LockLostError,
    LockNotHeldError,
    LockPermissionError,
    LockUnavailableError,
    OnceTimeoutError,
)

ERRORS: list[tuple[LockError, type[BaseException]]] = [
    (LockNotHeldError("jobs", "release() called but nobody holds it"), ValueError),
    (LockClosedError("jobs", "this object was closed"), RuntimeError),
    (LockPermissionError("jobs", "permission denied", errno.EACCES), PermissionError),
    (LockUnavailableError("jobs", "/dev/shm is full", errno.ENOSPC), OSError),
    (LockLostError("jobs", "the session ended"), LockError),
    (OnceTimeoutError("jobs", "v1", 2.5), TimeoutError),
]


@pytest.mark.parametrize(("error", "builtin"), ERRORS)
def test_error_names_the_lock_and_subclasses_the_builtin(
    error: LockError, builtin: type[BaseException]
) -> None:
    assert isinstance(error, LockError)
    assert isinstance(error, builtin)
    assert str(error).startswith("lock 'jobs': ")
    assert error.name == "jobs"
    assert "jobs" in repr(error)


@pytest.mark.parametrize(("error", "builtin"), ERRORS)
def test_error_pickles(error: LockError, builtin: type[BaseException]) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.name == error.name
    assert getattr(copy, "errno", None) == getattr(error, "errno", None)


def test_os_errors_keep_errno() -> None:
    assert LockUnavailableError("x", "full", errno.ENOSPC).errno == errno.ENOSPC


def test_abandoned_warning_carries_pid_and_pickles() -> None:
    w = AbandonedLockWarning("jobs", 4242, 7)
    assert isinstance(w, aplock.LockWarning)
    assert isinstance(w, UserWarning)
    assert "4242" in str(w)
    assert "'jobs'" in str(w)
    copy = pickle.loads(pickle.dumps(w))
    assert (copy.name, copy.pid, copy.generation) == ("jobs", 4242, 7)
    assert str(copy) == str(w)


def test_release_unlocked_message(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    with pytest.raises(LockNotHeldError) as info:
        lock.release()
    assert lock_name in str(info.value)
    assert "nobody holds it" in str(info.value)


def test_use_after_close_message(lock_name: str) -> None:
    lock = aplock.Lock(lock_name)
    lock.close()
    for use in (lock.acquire, lock.release, lock.locked, lock.info):
        with pytest.raises(LockClosedError, match=f"{lock_name}.*closed.*create a new"):
            use()
    assert "closed" in repr(lock)


def test_lock_lost_messages_say_what_happened_and_what_to_do() -> None:
    pytest.importorskip("psycopg")
    from aplock._pg import translate

    changed = translate.lost("jobs", translate.SESSION_CHANGED)
    broke = translate.lost_connection("jobs", OSError("server closed the connection"))
    for error in (changed, broke, translate.lost("jobs", translate.NOT_IN_SESSION)):
        assert isinstance(error, LockLostError)
        assert str(error).startswith("lock 'jobs': ")
        assert "another process may have taken it" in str(error)
        assert "acquire it again" in str(error)
        assert str(pickle.loads(pickle.dumps(error))) == str(error)
    assert "PgBouncer in transaction mode" in str(changed)
    assert "server closed the connection" in str(broke)


def test_once_timeout_message_and_attributes() -> None:
    error = OnceTimeoutError("jobs", "v1", 2.5)
    assert (error.name, error.key, error.timeout) == ("jobs", "v1", 2.5)
    assert "gave up after 2.5 s" in str(error)
    assert "'v1'" in str(error)
    assert "python -m aplock show 'jobs'" in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.key, copy.timeout) == ("v1", 2.5)


def test_every_public_error_is_exported() -> None:
    for name in aplock.errors.__all__:
        assert getattr(aplock, name) is getattr(aplock.errors, name), name
    assert startup.OnceTimeoutError is OnceTimeoutError
    postgres = pytest.importorskip("aplock.postgres")
    assert postgres.LockLostError is LockLostError
