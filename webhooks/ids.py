"""Time-ordered, prefixed identifiers (ULID layout: 48-bit milliseconds + 80 random bits)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MAX_RANDOM = (1 << 80) - 1  # Crockford base32: sorts like the number it encodes


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


_last = [0, 0]  # (ms, random part) of the newest id this process made


def new_id(prefix: str, *, now_ms: int | None = None) -> str:
    """Return `prefix_` + a 26-character id that sorts by creation time.

    Within one process ids are strictly increasing, even within a millisecond (the random part
    is incremented), so a list ordered by id is ordered by creation.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    if ms <= _last[0] and _last[1] < _MAX_RANDOM:
        ms, rand = _last[0], _last[1] + 1
    else:
        rand = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
    _last[0], _last[1] = ms, rand
    return f"{prefix}_{_encode(ms, 10)}{_encode(rand, 16)}"


def id_floor(prefix: str, now_ms: int) -> str:
    """Return the smallest id of `prefix` created at `now_ms`; every older id sorts below it."""
    return f"{prefix}_{_encode(now_ms, 10)}{'0' * 16}"


def is_valid(value: str, prefix: str) -> bool:
    """Tell whether `value` looks like an id made by :func:`new_id` with this prefix."""
    head = prefix + "_"
    if not value.startswith(head) or len(value) != len(head) + 26:
        return False
    return all(c in _ALPHABET for c in value[len(head) :])


def decode_ms(value: str) -> int:
    """The creation time (unix ms) encoded in an id made by :func:`new_id`."""
    head = value.rsplit("_", 1)[-1][:10]
    ms = 0
    for c in head:
        ms = ms * 32 + _ALPHABET.index(c)
    return ms
