"""Per-endpoint custom headers (``headers: {name: value}``, e.g. a gateway token): the rules they obey.

They go with every delivery to their endpoint, beside ours, and may never stand in for what makes a
delivery a delivery: the Standard Webhooks headers (``webhook-*``, and ``svix-*``, which verifiers
read as the same), the body's framing (``content-type``, ``content-length``, ``content-encoding``),
``host``, or the hop-by-hop headers of RFC 9110 section 7.6.1 (and ``proxy-connection``,
``expect``). Values are shown masked in every read and list (``MASK``), scrubbed from what an
attempt keeps, and never logged. A PATCH replaces the whole map; a value sent as ``MASK`` keeps
the stored value of that header, so a read can be sent back as it came.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_HEADERS = 20
MAX_NAME = 64
MAX_VALUE = 1024
MASK = "********"
RESERVED_PREFIXES = ("webhook-", "svix-")
RESERVED = frozenset(
    {
        "content-type",
        "content-length",
        "content-encoding",
        "host",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
# RFC 9110 token characters; values: visible ASCII with inner spaces or tabs (no CR, LF or NUL).
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?")


class BadHeader(ValueError):
    """A custom header that breaks a rule; the message names it."""


def check(headers: Mapping[str, str]) -> dict[str, str]:
    """Return `headers` if every name and value obeys the rules, else raise BadHeader naming the first."""
    if len(headers) > MAX_HEADERS:
        raise BadHeader(f"at most {MAX_HEADERS} headers")
    seen: set[str] = set()
    for name, value in headers.items():
        lower = name.lower()
        if not _NAME.fullmatch(name) or len(name) > MAX_NAME:
            raise BadHeader(f"{name[:80]!r} is not a header name (RFC 9110 token, 1-{MAX_NAME} characters)")
        if lower in RESERVED or lower.startswith(RESERVED_PREFIXES):
            raise BadHeader(f"{name} is set by the delivery itself and cannot be overridden")
        if lower in seen:
            raise BadHeader(f"{name} is given twice (header names are case-insensitive)")
        seen.add(lower)
        if not isinstance(value, str) or not _VALUE.fullmatch(value) or len(value) > MAX_VALUE:
            raise BadHeader(
                f"the value of {name} must be 1-{MAX_VALUE} visible ASCII characters (inner spaces allowed)"
            )
    return dict(headers)


def masked(headers: Mapping[str, str]) -> dict[str, str]:
    """The names with their values masked: what reads and lists show."""
    return dict.fromkeys(headers, MASK)


def merge(new: Mapping[str, str], stored: Mapping[str, str]) -> dict[str, str]:
    """A PATCH's map, where a value given as MASK keeps the stored value of that name."""
    by_name = {k.lower(): v for k, v in stored.items()}
    out: dict[str, str] = {}
    for name, value in new.items():
        if value == MASK:
            if name.lower() not in by_name:
                raise BadHeader(f"{name} has no stored value to keep ({MASK} keeps one)")
            value = by_name[name.lower()]
        out[name] = value
    return out
