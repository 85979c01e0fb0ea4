"""Compressed bodies: raw deflate with a preset dictionary named in the stored bytes (issue 15).

A message body is stored once per message (shared by its deliveries) and a run's snapshot once per
event: at ~500 bytes of JSON each they were most of Redis's memory per run. Deflate (RFC 1951) with
a preset dictionary of the producer's usual JSON (its field names, event types) makes them about a
quarter of that, for ~7 µs to compress and ~1.5 µs to expand.

Packed form: ``NUL``, the codec's name (ASCII), ``NUL``, the deflate stream. JSON text never starts
with NUL (RFC 8259: whitespace or a value), so stored bytes say themselves whether they are packed:
anything else is plain text, which :func:`text` returns as it is (bodies stored before, bodies of
producers that do not compress). A codec's dictionary is part of the stored format: once bytes
were packed with it, it must never change (a new dictionary is a new name).
"""

from __future__ import annotations

import zlib

MARK = b"\x00"
# Below this many bytes a body is stored as it is: the header and the deflate stream cost more.
MIN_BYTES = 96
# 4 KiB window, small memory: most of the cost of packing a short body is setting up the stream.
_WBITS, _MEM_LEVEL = -12, 4

_DICTIONARIES: dict[bytes, bytes] = {}


class UnknownCodec(ValueError):
    """Bytes packed with a codec this process has not registered."""


def register(name: str, dictionary: bytes) -> None:
    """Make codec `name` (ASCII, no NUL) with its preset `dictionary` known to this process.

    Registering a name again with another dictionary raises ValueError: stored bytes depend on it.
    """
    key = name.encode("ascii")
    if not key or MARK in key:
        raise ValueError(f"bad codec name {name!r}")
    if _DICTIONARIES.setdefault(key, dictionary) != dictionary:
        raise ValueError(f"codec {name!r} is registered with another dictionary")


def pack(body: str | bytes, codec: str) -> str | bytes:
    """`body` packed with `codec` (registered), or as it is when short (see MIN_BYTES)."""
    raw = body.encode() if isinstance(body, str) else body
    if len(raw) < MIN_BYTES:
        return body
    name = codec.encode("ascii")
    stream = zlib.compressobj(
        6, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, _DICTIONARIES[name]
    )
    return MARK + name + MARK + stream.compress(raw) + stream.flush()


def packed(stored: str | bytes) -> bool:
    """Whether `stored` is in the packed form."""
    return isinstance(stored, bytes) and stored[:1] == MARK


def expand(stored: str | bytes) -> bytes:
    """The body's bytes, whether `stored` is packed or plain; UnknownCodec for a codec not registered."""
    if isinstance(stored, str):
        return stored.encode()
    if stored[:1] != MARK:
        return stored
    name, _, stream = stored[1:].partition(MARK)
    dictionary = _DICTIONARIES.get(name)
    if dictionary is None:
        raise UnknownCodec(f"body packed with codec {name.decode(errors='replace')!r}, not registered here")
    inflate = zlib.decompressobj(-15, dictionary)
    return inflate.decompress(stream) + inflate.flush()


def text(stored: str | bytes) -> str:
    """The body as text (UTF-8), whether `stored` is packed or plain."""
    return stored if isinstance(stored, str) else expand(stored).decode()
