"""The API's documentation: its OpenAPI 3.1 document and ``/docs``, an interactive reference.

The document comes from the route table (``webhooks.api.apidoc``) plus one typed operation per
registered flow (``POST /v1/flows/{id}/runs`` with that flow's input and output schemas), so a code
generator or a person sees exactly what each flow takes. ``/docs`` is Swagger UI from the
``openapi-ui-bundles`` package, served by this process (no CDN: it works offline), with the bearer
scheme to try calls.
"""

from __future__ import annotations

import copy
import html
import re
from collections.abc import Sequence
from typing import Any

from openapi_ui_bundles import swagger_ui
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.flows import Flow

REF = "#/components/schemas/"
# What pydantic names our generic models, and what a reader expects.
NAMES = {
    "Execution_Any_": "Execution",
    "RunEvent_Any_": "RunEvent",
    "Page_Execution_Any__": "ExecutionPage",
    "Page_RunEvent_Any__": "EventPage",
    "Page_FlowInfo_": "FlowPage",
}
ASSETS = "/docs/assets"


def _pascal(flow_id: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", flow_id) if part) or "Flow"


def _lift(schema: dict[str, Any], prefix: str, components: dict[str, Any]) -> dict[str, Any]:
    """Move a JSON Schema's ``$defs`` into the components under `prefix`, rewriting its refs."""
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", {})
    text_map = {f"#/$defs/{name}": f"{REF}{prefix}{name}" for name in defs}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (text_map.get(v, v) if k == "$ref" else rewrite(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name, body in defs.items():
        components[f"{prefix}{name}"] = rewrite(body)
    lifted: dict[str, Any] = rewrite(schema)
    return lifted


def add_flow_operations(spec: dict[str, Any], flows: Sequence[Flow]) -> dict[str, Any]:
    """Add ``POST /v1/flows/{id}/runs`` for each flow, typed by its input and output (``x-flow-id``)."""
    generic = spec["paths"]["/v1/flows/{flow_id}/runs"]["post"]
    components = spec["components"]["schemas"]
    for flow in flows:
        name = _pascal(flow.id)
        components[f"{name}Input"] = _lift(flow.input_schema(), f"{name}Input", components)
        components[f"{name}Output"] = _lift(flow.output_schema(), f"{name}Output", components) or {
            "description": "Any JSON value (the flow declares no output type)"
        }
        components[f"{name}RunCreate"] = {
            "title": f"{name}RunCreate",
            "type": "object",
            "additionalProperties": False,
            "required": ["input"],
            "properties": {
                "input": {"$ref": f"{REF}{name}Input"},
                "metadata": {"type": "object", "description": "Yours, returned with the execution"},
                "webhook": {"$ref": f"{REF}RunWebhook"},
            },
        }
        components[f"{name}Execution"] = {
            "allOf": [
                {"$ref": f"{REF}Execution"},
                {"properties": {"output": {"anyOf": [{"$ref": f"{REF}{name}Output"}, {"type": "null"}]}}},
            ]
        }
        operation = copy.deepcopy(generic)
        operation["operationId"] = f"run_{re.sub(r'[^A-Za-z0-9]+', '_', flow.id)}"
        operation["summary"] = f"Start {flow.id}" + (f": {flow.description}" if flow.description else "")
        operation["tags"] = ["Flows"]
        operation["x-flow-id"] = flow.id
        operation["parameters"] = [p for p in operation["parameters"] if p["in"] != "path"]
        body: dict[str, Any] = {"schema": {"$ref": f"{REF}{name}RunCreate"}}
        if flow.example is not None:
            body["example"] = {"input": flow.example}
        operation["requestBody"] = {"required": True, "content": {"application/json": body}}
        typed = {"schema": {"$ref": f"{REF}{name}Execution"}}
        for status in ("200", "202"):
            if status in operation["responses"]:
                operation["responses"][status]["content"] = {"application/json": typed}
        spec["paths"][f"/v1/flows/{flow.id}/runs"] = {"post": operation}
    return spec


def page(title: str) -> str:
    """The ``/docs`` page: Swagger UI over ``/openapi.json``."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}: API reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css"></head>
<body><div id="reference"></div>
<noscript><p>This reference needs JavaScript; the document itself is
<a href="/openapi.json">/openapi.json</a>.</p></noscript>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{
  url: "/openapi.json", dom_id: "#reference", deepLinking: true, tryItOutEnabled: true,
  displayRequestDuration: true, defaultModelsExpandDepth: 0, docExpansion: "list"
}});
</script></body></html>"""


def docs_routes(spec: dict[str, Any], *, title: str) -> list[BaseRoute]:
    """``/openapi.json``, ``/docs`` and the reference's assets (shipped in the package)."""
    body = page(title)

    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    async def docs(request: Request) -> Response:
        return HTMLResponse(body)

    return [
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount(ASSETS, app=StaticFiles(directory=str(swagger_ui.static_path)), name="docs-assets"),
    ]
