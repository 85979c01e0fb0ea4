"""Encoding what a flow hands back: JSON in UTF-8, or an error naming the path of the bad value.

A flow's output, partial output, FlowError details and usage figures are stored in Redis and sent
in webhooks as JSON text (RFC 8259, UTF-8). Python values that cannot become that text are refused
here, before anything touches Redis, with the dotted path of the first bad value
(``output.pages.2.name: a string holding a lone surrogate``), so the attempt ends ``failed``
once with a clear code instead of crashing the worker on every retry.

Accepted: None, bool, int (at most 4300 digits, Python's own limit for int -> str), finite float,
str (valid Unicode, no lone surrogates), list and tuple, dict with str keys, and pydantic models
(dumped in JSON mode first). Anything else (bytes, sets, NaN, infinity, cycles, other objects) is
refused.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel

MAX_INT_DIGITS = 4300
MAX_DEPTH = 64


class InvalidValue(ValueError):
    """A value that cannot be stored as JSON; `path` names where it sits, `reason` what is wrong."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


_INT_LIMIT = 10**MAX_INT_DIGITS  # compared, never printed: str() itself refuses longer ints


def check(value: Any, path: str) -> Any:
    """Return `value` as plain JSON data (models dumped, tuples as lists); InvalidValue if it cannot be.

    Depth is bounded (MAX_DEPTH), and a container met again on its own path is a cycle.
    """
    return _check(value, path, 0, set())


def _check(value: Any, path: str, depth: int, seen: set[int]) -> Any:
    if depth > MAX_DEPTH:
        raise InvalidValue(path, f"nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise InvalidValue(path, f"an integer of more than {MAX_INT_DIGITS} digits")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue(path, f"{value!r} is not a JSON number")
        return float(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidValue(path, f"a string holding a lone surrogate at index {exc.start}") from None
        return value
    if isinstance(value, BaseModel):
        try:
            dumped = value.model_dump(mode="json", by_alias=True)
        except Exception as exc:  # a model field pydantic cannot serialize
            raise InvalidValue(path, f"{type(value).__name__} cannot be serialized: {exc}") from None
        return _check(dumped, path, depth, seen)
    if isinstance(value, list | tuple | dict):
        marker = id(value)
        if marker in seen:
            raise InvalidValue(path, "a reference cycle (the value contains itself)")
        seen.add(marker)
        try:
            if isinstance(value, dict):
                out: dict[str, Any] = {}
                for key, item in value.items():
                    if not isinstance(key, str):
                        kind = type(key).__name__
                        raise InvalidValue(
                            f"{path}.{shown(key)}", f"a key of type {kind} (JSON keys are strings)"
                        )
                    out[_check(key, f"{path}.<key>", depth + 1, seen)] = _check(
                        item, f"{path}.{key}", depth + 1, seen
                    )
                return out
            return [_check(item, f"{path}.{i}", depth + 1, seen) for i, item in enumerate(value)]
        finally:
            seen.discard(marker)
    raise InvalidValue(path, f"{type(value).__name__} is not a JSON type")


def to_text(data: Any) -> str:
    """Compact JSON text of data that :func:`check` returned."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any, path: str) -> str:
    """`value` as compact JSON text (UTF-8 safe), or InvalidValue naming the bad part."""
    return to_text(check(value, path))


def safe_text(text: str, *, limit: int = 2000) -> str:
    """Text that is always storable: lone surrogates escaped, cut to `limit` characters.

    For what we derive from a flow's exceptions (``str(exc)``), which the flow did not choose to hand
    us and so should not fail the attempt a second time.
    """
    cut = text if len(text) <= limit else text[: limit - 1] + "…"
    return cut.encode("utf-8", errors="backslashreplace").decode("utf-8")


def shown(value: Any, *, limit: int = 80) -> str:
    """A short, storable repr of any value that cannot itself fail.

    ``repr`` can raise (an int of more than 4300 digits; an object whose ``__repr__`` raises), and
    an error message about a bad value must never become a second error.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        return safe_text(repr(value), limit=limit)
    except Exception:
        return f"a {type(value).__name__}"


def describe(exc: BaseException) -> str:
    """An exception's message as storable text (its type name if it has none, or if ``str`` fails)."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    return safe_text(text) or type(exc).__name__
