"""HTML forms: reading a bounded urlencoded body, and a flow's run form generated from its input schema.

A schema property becomes a text, number, checkbox or select input; anything else (objects,
arrays, unions) a JSON text area. The values come back typed by the same description, and the
flow's own input type validates them, as it does for the API.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request

from webhooks.api.inputs import parse_json, read_body
from webhooks.errors import InvalidJSON, ValidationFailed

MAX_FORM_BYTES = 1024 * 1024
MAX_FIELDS = 500
Form = ImmutableMultiDict


async def read_form(request: Request, *, max_bytes: int = MAX_FORM_BYTES) -> Form[str, str]:
    """The body as ``application/x-www-form-urlencoded`` fields (``get``: the last of a name; ``getlist``)."""
    raw = await read_body(request, max_bytes=max_bytes)
    if not raw:
        return Form()
    kind = request.headers.get("content-type", "application/x-www-form-urlencoded").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise ValidationFailed.field("body", "send the form as application/x-www-form-urlencoded")
    try:
        items = parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise ValidationFailed.field("body", "not a urlencoded form") from None
    return Form(items)


@dataclass
class Field:
    """One input of a generated form."""

    name: str
    label: str
    kind: str  # text | number | integer | checkbox | select | json
    required: bool
    description: str = ""
    choices: tuple[str, ...] = ()
    value: str = ""
    checked: bool = False
    error: str = ""


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        found = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"))
        if isinstance(found, dict):
            return {**found, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _kind(schema: dict[str, Any]) -> str:
    if "enum" in schema and all(isinstance(v, str) for v in schema["enum"]):
        return "select"
    return {"string": "text", "number": "number", "integer": "integer", "boolean": "checkbox"}.get(
        str(schema.get("type")), "json"
    )


def fields_of(schema: dict[str, Any]) -> list[Field] | None:
    """The inputs for an object schema with properties; None when the input is not such an object."""
    root = _resolve(schema, schema)
    properties = root.get("properties")
    if root.get("type") != "object" or not isinstance(properties, dict):
        return None
    required = set(root.get("required") or ())
    out = []
    for name, raw in properties.items():
        prop = _resolve(raw, schema) if isinstance(raw, dict) else {}
        kind = _kind(prop)
        default = prop.get("default")
        field = Field(
            name=name,
            label=str(prop.get("title") or name),
            kind=kind,
            required=name in required,
            description=str(prop.get("description") or ""),
            choices=tuple(prop.get("enum") or ()),
        )
        if kind == "checkbox":
            field.checked = bool(default)
        elif default is not None:
            field.value = json.dumps(default, indent=2) if kind == "json" else str(default)
        out.append(field)
    return out


def _number(text: str, kind: str) -> int | float:
    value = float(text) if len(text) <= 40 else math.nan
    if not math.isfinite(value):
        raise ValueError(text)
    if kind == "integer":
        if not value.is_integer():
            raise ValueError(text)
        return int(value)
    return value


def values_of(fields: list[Field], form: Mapping[str, str]) -> tuple[dict[str, Any], bool]:
    """The input document from a submitted form, and whether every field could be read.

    Each field keeps what was typed (to show the form again) and, where it could not be read, why.
    """
    document: dict[str, Any] = {}
    ok = True
    for field in fields:
        text = form.get(field.name, "")
        field.value, field.checked, field.error = text, field.name in form, ""
        if field.kind == "checkbox":
            document[field.name] = field.name in form
            continue
        if text.strip() == "" and field.kind != "text":
            continue  # left empty: the input type's default applies, or it reports the field missing
        try:
            if field.kind in ("number", "integer"):
                document[field.name] = _number(text.strip(), field.kind)
            elif field.kind == "json":
                document[field.name] = parse_json(text.encode())
            elif text != "" or field.required:
                document[field.name] = text
        except (ValueError, InvalidJSON) as exc:
            field.error = "not a whole number" if field.kind == "integer" else "not a number"
            if isinstance(exc, InvalidJSON):
                field.error = exc.message
            ok = False
    return document, ok
