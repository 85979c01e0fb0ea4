"""Reading client input safely: bounded JSON bodies and validated query parameters."""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from orchestrator.errors import InvalidJSON, PayloadTooLarge, ValidationFailed

M = TypeVar("M", bound=BaseModel)


def field_errors(exc: ValidationError, *, prefix: str = "") -> list[dict[str, Any]]:
    """One ``{field, message, type}`` per bad field, with dotted paths (``input.vendor.name``)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        parts = [prefix] if prefix else []
        parts += [str(p) for p in err["loc"]]
        out.append({"field": ".".join(parts) or "body", "message": err["msg"], "type": err["type"]})
    return out


async def read_body(request: Request, *, max_bytes: int) -> bytes:
    """Read the body, refusing it with 413 as soon as it passes `max_bytes` (never buffering more)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise InvalidJSON("Content-Length is not a number")
        if int(declared) > max_bytes:
            raise PayloadTooLarge(
                f"body of {declared} bytes is over the {max_bytes}-byte limit", details={"limit": max_bytes}
            )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"body is over the {max_bytes}-byte limit", details={"limit": max_bytes})
        chunks.append(chunk)
    return b"".join(chunks)


MAX_DEPTH = 64


def _depth(document: Any) -> int:
    """Nesting depth of a decoded JSON document, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in value if isinstance(v, dict | list))
    return deepest


# Only a \uD800-\uDFFF escape can put a lone surrogate into a decoded string (raw UTF-8 cannot).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_constant(name: str) -> Any:
    """json.loads hook: NaN, Infinity and -Infinity are Python's extensions, not JSON."""
    raise InvalidJSON(f"the body is not valid JSON: {name} is not a JSON value")


def _finite_float(text: str) -> float:
    """json.loads hook: a number too large for a double (1e999) would silently become infinity."""
    value = float(text)
    if math.isinf(value):
        raise InvalidJSON("the body has a number out of range", details={"number": text[:40]})
    return value


def _has_lone_surrogate(document: Any) -> bool:
    """True if a string of `document` holds an unpaired surrogate (which no UTF-8 output can carry)."""
    try:
        json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def parse_json(body: bytes) -> Any:
    """Decode a UTF-8 JSON document or raise InvalidJSON (never a 500 for odd input).

    Documents nested deeper than MAX_DEPTH are refused: deeper ones cannot be serialized again
    (pydantic and json stop at a few hundred levels), and no real payload needs them. So are values
    that Python's json module lets through but that could not be stored or echoed faithfully: NaN
    and Infinity (not JSON), numbers beyond a double or past Python's integer-digit limit, and
    unpaired surrogate escapes such as ``"\\uD800"`` (not Unicode).
    """
    if not body.strip():
        raise InvalidJSON("the body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")
        document = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise InvalidJSON("the body is not valid UTF-8", details={"position": exc.start}) from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(
            f"the body is not valid JSON: {exc.msg}", details={"line": exc.lineno, "column": exc.colno}
        ) from None
    except ValueError:  # an integer past sys.get_int_max_str_digits() (4300 digits)
        raise InvalidJSON("the body has a number with too many digits") from None
    except RecursionError:
        raise InvalidJSON("the body is nested too deeply") from None
    if _depth(document) > MAX_DEPTH:
        raise InvalidJSON(
            f"the body is nested deeper than {MAX_DEPTH} levels", details={"maxDepth": MAX_DEPTH}
        )
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(document):
        raise InvalidJSON("the body has an unpaired surrogate escape (\\uD800-\\uDFFF); it is not Unicode")
    return document


async def read_json(request: Request, *, max_bytes: int) -> Any:
    """Read and decode a bounded JSON body."""
    return parse_json(await read_body(request, max_bytes=max_bytes))


async def read_model(request: Request, model: type[M], *, max_bytes: int) -> M:
    """Read, decode and validate the body as `model`."""
    document = await read_json(request, max_bytes=max_bytes)
    if not isinstance(document, dict):
        raise ValidationFailed(
            "the body must be a JSON object",
            details={"fields": [{"field": "body", "message": "expected an object", "type": "dict_type"}]},
        )
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise ValidationFailed("the body is invalid", details={"fields": field_errors(exc)}) from None
    except RecursionError:
        raise InvalidJSON("the body is nested too deeply") from None


def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high] written in ASCII digits, else 422.

    ``int()`` alone would also take ``+5``, `` 5``, ``1_0`` and other scripts' digits (Arabic-Indic 10).
    """
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else low - 1
    if not low <= value <= high:
        raise ValidationFailed(
            f"{name} must be an integer from {low} to {high}",
            details={"fields": [{"field": name, "message": f"must be {low}..{high}", "type": "range"}]},
        )
    return value


def bad_query(name: str, message: str) -> ValidationFailed:
    """A 422 naming one bad query parameter."""
    return ValidationFailed(
        f"{name}: {message}", details={"fields": [{"field": name, "message": message, "type": "value_error"}]}
    )
