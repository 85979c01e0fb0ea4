"""OpenAPI 3.1 from the route table: each endpoint function carries a description of itself.

``@operation(...)`` records the summary, body model, query and header parameters and response
models on the function; ``build_spec(routes)`` walks Starlette's route table and pydantic's
schemas to produce the document (the mounting app serves it, and a page that renders it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute, Route

from webhooks.api.inputs import MAX_PAGE

F = TypeVar("F", bound=Callable[..., Any])
REF = "#/components/schemas/{model}"

SUCCESS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted: the work goes on after this answer",
    204: "No Content",
}
ERROR_TEXT = {
    400: "The body is not JSON (`invalid_json`)",
    401: "No API key, or an unknown one (`unauthorized`)",
    404: "No such resource for this tenant (`not_found`)",
    409: "The resource's state forbids this (`conflict`)",
    413: "The body is over the limit (`payload_too_large`)",
    422: "Invalid input; `details.fields` lists each bad field (`validation_error`)",
    429: "Too many requests (`rate_limited`)",
    503: "Redis is unavailable; retry (`unavailable`)",
}


@dataclass(frozen=True)
class Param:
    """A query or header parameter."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


# The query parameters of every list call (webhooks.api.inputs.page_limit / page_cursor).
PAGING = (
    Param("limit", "Page size (1-100, default 20)", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
    Param("cursor", "nextCursor of the previous page"),
)


@dataclass(frozen=True)
class Operation:
    """What the docs say about one endpoint function."""

    summary: str
    tag: str
    body: type[BaseModel] | None = None
    # False: the body may be left out (the model's defaults apply).
    body_required: bool = True
    responses: dict[int, type[BaseModel] | dict[str, Any] | str | None] = field(default_factory=dict)
    query: Sequence[Param] = ()
    headers: Sequence[Param] = ()
    errors: Sequence[int] = (401, 503)
    auth: bool = True
    media: dict[int, str] = field(default_factory=dict)
    # OpenAPI links per response status: name -> {operationId, parameters}; they tell clients
    # (and schemathesis' stateful phase) which later calls take ids from this response.
    links: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # What a success answer means, by status, where the status alone does not say it.
    described: dict[int, str] = field(default_factory=dict)


def links_to(targets: Mapping[str, str], parameter: str, expression: str) -> dict[str, dict[str, Any]]:
    """OpenAPI links named by `targets` (link name -> operationId), each passing `parameter` the
    value of the runtime `expression` (e.g. ``$response.body#/id``)."""
    return {name: {"operationId": op, "parameters": {parameter: expression}} for name, op in targets.items()}


def operation(**kwargs: Any) -> Callable[[F], F]:
    """Attach an Operation to an endpoint function."""

    def attach(fn: F) -> F:
        fn.__openapi__ = Operation(**kwargs)  # type: ignore[attr-defined]
        return fn

    return attach


def _models(routes: Sequence[BaseRoute], error_model: type[BaseModel]) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {error_model.__name__: error_model}
    for route in routes:
        op = getattr(getattr(route, "endpoint", None), "__openapi__", None)
        if op is None:
            continue
        for model in [op.body, *op.responses.values()]:
            if isinstance(model, type) and issubclass(model, BaseModel):
                found[model.__name__] = model
    return list(found.values())


def _content(
    model: type[BaseModel] | dict[str, Any] | str | None,
    media: str,
    refs: dict[type[BaseModel], dict[str, Any]],
) -> dict[str, Any]:
    if model is None:
        return {}
    if isinstance(model, str):
        return {media: {"schema": {"type": "string"}}}
    schema = model if isinstance(model, dict) else refs[model]
    return {media: {"schema": schema}}


def build_spec(
    routes: Sequence[BaseRoute],
    *,
    title: str,
    version: str,
    description: str,
    error_model: type[BaseModel],
    path_params: Mapping[str, dict[str, Any]] | None = None,
    names: Mapping[str, str] | None = None,
    webhooks: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every described route.

    `path_params` gives the schema of path parameters known only at runtime (e.g. the ids of the
    registered flows); the others are plain strings. `names` renames schema components (pydantic
    names generic models ``Page_Execution_Any__``; a reader wants ``ExecutionPage``). `webhooks` is
    the top-level ``webhooks`` section and the component schemas it references
    (``webhooks.catalog.openapi_webhooks``).
    """
    known = dict(path_params or {})
    models = _models(routes, error_model)
    # One schema per model: what the API sends (serialization); request bodies validate the same
    # shapes, and pydantic names generic models (Page[Execution[Any]]) for us.
    mapping, schemas = models_json_schema(
        [(m, "serialization") for m in models], ref_template=REF, by_alias=True
    )
    refs = {model: mapping[(model, "serialization")] for model in models}
    components = schemas.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        op: Operation | None = getattr(route.endpoint, "__openapi__", None)
        if op is None:
            continue
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": known.get(name, {"type": "string"})}
            for name in route.param_convertors
        ]
        parameters += [
            {
                "name": p.name,
                "in": "query",
                "required": p.required,
                "description": p.description,
                "schema": p.schema,
            }
            for p in op.query
        ]
        parameters += [
            {
                "name": p.name,
                "in": "header",
                "required": p.required,
                "description": p.description,
                "schema": p.schema,
            }
            for p in op.headers
        ]
        responses: dict[str, Any] = {}
        for status, model in op.responses.items():
            media = op.media.get(status, "application/json")
            entry: dict[str, Any] = {
                "description": op.described.get(status)
                or (SUCCESS_TEXT.get(status, "OK") if status < 300 else ERROR_TEXT.get(status, ""))
            }
            content = _content(model, media, refs)
            if content:
                entry["content"] = content
            if status in op.links:
                entry["links"] = op.links[status]
            responses[str(status)] = entry
        for status in op.errors:
            responses.setdefault(
                str(status),
                {
                    "description": ERROR_TEXT[status],
                    "content": _content(error_model, "application/json", refs),
                },
            )
        spec: dict[str, Any] = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": f"{route.name}",
            "parameters": parameters,
            "responses": responses,
        }
        if op.body is not None:
            spec["requestBody"] = {
                "required": op.body_required,
                "content": _content(op.body, "application/json", refs),
            }
        if not op.auth:
            spec["security"] = []
        for method in sorted((route.methods or set()) - {"HEAD"}):
            # Starlette's "{name}" placeholders are OpenAPI's already.
            paths.setdefault(route.path, {})[method.lower()] = spec
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Every call but health and metrics: `Authorization: Bearer <api key>`",
                }
            },
        },
        "security": [{"bearer": []}],
    }
    if webhooks is not None:
        section, schemas = webhooks
        document["webhooks"] = section
        components.update(schemas)
    return rename_schemas(document, names or {})


def rename_schemas(document: dict[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """`document` with schema components renamed (keys and every ``$ref`` to them)."""
    if not names:
        return document
    text = json.dumps(document)
    for old, new in names.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    renamed: dict[str, Any] = json.loads(text)
    schemas = renamed["components"]["schemas"]
    renamed["components"]["schemas"] = {names.get(k, k): v for k, v in schemas.items()}
    return renamed
