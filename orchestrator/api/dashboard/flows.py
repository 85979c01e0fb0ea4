"""The Flows pages: each flow's input and output schema, and a run form generated from the input schema."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from orchestrator.api.dashboard.access import Viewer, acting, viewer
from orchestrator.api.dashboard.forms import Field, fields_of, values_of
from orchestrator.api.dashboard.render import BASE, page, redirect
from orchestrator.api.runs import validate_input
from orchestrator.api.services import services
from orchestrator.errors import FlowNotFound
from orchestrator.flows import Flow
from webhooks.api.inputs import parse_json
from webhooks.errors import InvalidJSON, ValidationFailed
from webhooks.ids import new_id


def _flow(request: Request) -> Flow:
    flow_id = request.path_params["flow_id"]
    found = services(request).registry.get(flow_id)
    if found is None:
        raise FlowNotFound(f"no flow {flow_id}")
    return found


async def flows_page(request: Request) -> Response:
    """``GET /dashboard/flows``: every registered flow."""
    who = await viewer(request)
    flows = [f.info() for f in services(request).registry.all()]
    return page(request, "flows.html", who=who, flows=flows)


def _show(
    request: Request,
    who: Viewer,
    flow: Flow,
    *,
    fields: list[Field] | None,
    raw_input: str = "",
    metadata: str = "",
    problems: list[dict[str, Any]] | None = None,
    status: int = 200,
) -> Response:
    return page(
        request,
        "flow.html",
        who=who,
        status=status,
        flow=flow.info(),
        fields=fields,
        raw_input=raw_input,
        metadata=metadata,
        problems=problems or [],
    )


async def flow_page(request: Request) -> Response:
    """``GET /dashboard/flows/{id}``: schemas and the run form."""
    who = await viewer(request)
    flow = _flow(request)
    fields = fields_of(flow.info().input_schema)
    return _show(request, who, flow, fields=fields, raw_input="{}" if fields is None else "")


async def start_run(request: Request) -> Response:
    """``POST /dashboard/flows/{id}/runs``: start a run from the form, then show it."""
    who, form = await acting(request)
    flow = _flow(request)
    state = services(request)
    fields = fields_of(flow.info().input_schema)
    problems: list[dict[str, Any]] = []
    metadata_text = form.get("metadata", "").strip()
    metadata: Any = {}
    try:
        metadata = parse_json(metadata_text.encode()) if metadata_text else {}
        if not isinstance(metadata, dict):
            problems.append({"field": "metadata", "message": "must be a JSON object"})
    except InvalidJSON as exc:
        problems.append({"field": "metadata", "message": exc.message})
    raw_input = form.get("input", "")
    if fields is None:
        try:
            document: Any = parse_json(raw_input.encode())
            ok = True
        except InvalidJSON as exc:
            problems.append({"field": "input", "message": exc.message})
            document, ok = None, False
    else:
        document, ok = values_of(fields, form)
        problems.extend({"field": f.name, "message": f.error} for f in fields if f.error)
    input_json = ""
    if ok and not problems:
        try:
            input_json = validate_input(flow, document, "input")
        except ValidationFailed as exc:
            problems.extend(exc.details.get("fields") or [])
    if problems or not ok:
        return _show(
            request,
            who,
            flow,
            fields=fields,
            raw_input=raw_input,
            metadata=metadata_text,
            problems=problems,
            status=422,
        )
    run = await state.store.create(
        tenant=who.tenant,
        flow_id=flow.id,
        input_json=input_json,
        metadata=metadata,
        steps_total=flow.steps,
        webhook_json=None,
        run_id=new_id("exec"),
    )
    return redirect(f"{BASE}/runs/{run.id}")
