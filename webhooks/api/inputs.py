"""Request inputs shared by both route sets: bounded JSON bodies, query parameters, JSON answers.

Every failure is a 4xx from API.md (``invalid_json``, ``payload_too_large``, ``validation_error``),
never a 500, whatever the client sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from webhooks.errors import InvalidJSON, PayloadTooLarge, ValidationFailed
from webhooks.ids import is_valid
from webhooks.ssrf import UnsafeURL, check_url

M = TypeVar("M", bound=BaseModel)
E = TypeVar("E", bound=Enum)
MAX_PAGE = 100
DEFAULT_PAGE = 20


def render(model: BaseModel, status_code: int = 200, *, headers: dict[str, str] | None = None) -> Response:
    """A model as camelCase JSON."""
    body = model.model_dump_json(by_alias=True)
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


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
    return validate_document(await read_json(request, max_bytes=max_bytes), model)


def validate_document(document: Any, model: type[M]) -> M:
    """Validate a decoded body as `model`: 422 naming each bad field (``body`` if not an object)."""
    if not isinstance(document, dict):
        raise ValidationFailed.field("body", "expected a JSON object", "dict_type")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise ValidationFailed.of("the body is invalid", exc) from None
    except RecursionError:
        raise InvalidJSON("the body is nested too deeply") from None


def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high] written in ASCII digits, else 422.

    ``int()`` alone would also take ``+5``, `` 5``, ``1_0`` and other scripts' digits (Arabic-Indic 10);
    the length check comes first, as ``int()`` refuses more than 4300 digits.
    """
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else low - 1
    if not low <= value <= high:
        raise ValidationFailed.field(name, f"must be an integer from {low} to {high}", "range")
    return value


def page_limit(request: Request) -> int:
    """The ``limit`` of a list call: 1 to 100, default 20 (API.md "Lists")."""
    return query_int(request, "limit", default=DEFAULT_PAGE, low=1, high=MAX_PAGE)


def page_cursor(request: Request, prefix: str) -> str | None:
    """The ``cursor`` of a list call: an id with `prefix` that a previous page returned, or None."""
    raw = request.query_params.get("cursor") or None
    if raw is not None and not is_valid(raw, prefix):
        raise ValidationFailed.field("cursor", "not a cursor returned by this API")
    return raw


def query_choice(request: Request, name: str, choices: type[E]) -> E | None:
    """An enum-valued query parameter (its value text), None when absent, else 422 listing the choices."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return choices(raw)
    except ValueError:
        allowed = ", ".join(str(c.value) for c in choices)
        raise ValidationFailed.field(name, f"must be one of {allowed}", "enum") from None


async def check_url_field(url: str, *, field: str, allow_private: bool) -> None:
    """Refuse (422 on `field`) a URL that is not http(s) or, unless allowed, names a private host.

    The rules are ``webhooks.ssrf.check_url``'s (API.md "Delivery"); the dispatcher checks again at
    each attempt, so a name that resolves elsewhere later is still refused.
    """
    try:
        await check_url(url, allow_private=allow_private)
    except UnsafeURL as exc:
        raise ValidationFailed.field(field, exc.reason, "url") from None


def check_choices(field: str, values: Iterable[str] | None, allowed: Collection[str], *, what: str) -> None:
    """Refuse (422 on `field`) any of `values` outside `allowed`, naming each (`what`: "event types")."""
    unknown = [v for v in values or () if v not in allowed]
    if unknown:
        raise ValidationFailed.field(field, f"unknown {what}: {', '.join(unknown)}", "enum")
