"""Name validation and the mapping to POSIX names: pure, no semaphore created."""

from __future__ import annotations

import pytest

from aplock import _names


@pytest.mark.parametrize(
    "name",
    ["orders.migrate", "my app/cache warmup", "x" * 300, "ünïcödé ✓ 名前", "/", "a\x00b", "\ud800"],
)
def test_any_nonempty_str_maps_to_valid_posix_names(name: str) -> None:
    for short in (False, True):
        names = _names.posix_names(name, short=short)
        for posix in (names.semaphore, names.token, names.record):
            assert posix.startswith("/aplock.")
            assert "/" not in posix[1:]
            assert posix.isascii()
            assert len(posix) <= (_names.SHORT_NAME_MAX if short else 251 - 4)


def test_different_names_never_share_objects() -> None:
    names = ["Lock", "lock", "LOCK", "lock ", "lock/", "lock_", "lock-", "x" * 300, "x" * 301]
    bases = {_names.posix_names(n).base for n in names}
    shorts = {_names.posix_names(n, short=True).base for n in names}
    assert len(bases) == len(names)
    assert len(shorts) == len(names)


def test_mapping_is_stable_and_readable() -> None:
    names = _names.posix_names("orders.migrate")
    assert names.base == _names.posix_names("orders.migrate").base
    assert names.base.startswith("aplock.orders_migrate.")
    assert names.record == f"/{names.base}.s"
    assert names.token == f"/{names.base}.h"
    assert _names.is_record_name(names.record[1:])
    assert _names.base_of_record(names.record[1:]) == names.base


def test_empty_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        _names.validate("")


@pytest.mark.parametrize("bad", [None, b"bytes", 42, ["x"]])
def test_non_str_name_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="must be a str"):
        _names.validate(bad)


def test_a_name_longer_than_the_limit_is_a_value_error() -> None:
    _names.validate("x" * _names.MAX_LENGTH)
    with pytest.raises(ValueError, match=r"at most 1024 characters, not 1025"):
        _names.validate("x" * (_names.MAX_LENGTH + 1))


def test_the_record_stores_the_longest_name_whole() -> None:
    from aplock._posix import record as _state

    name = "\U0001f512" * _names.MAX_LENGTH  # four UTF-8 bytes each
    raw = _state.encode_name(name)
    assert len(raw) == _state.NAME_MAX_BYTES
    buf = bytearray(_state.SIZE)
    buf[_state.NAME_OFFSET : _state.NAME_OFFSET + len(raw)] = raw
    _state.NAME_LEN.pack_into(buf, _state.NAME_LEN_OFFSET, len(raw))
    assert _state.read_name(bytes(buf)) == name
