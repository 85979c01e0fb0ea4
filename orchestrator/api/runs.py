"""HTTP endpoints of the runs API: thin functions that parse, call the store, and render models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from orchestrator import events
from orchestrator.api.auth import authenticate
from orchestrator.api.deliveries import run_deliveries
from orchestrator.api.idempotency import Claim, check_key, claim, fingerprint
from orchestrator.api.services import services
from orchestrator.api.tokens import QUERY_PARAMETER, authenticate_reader, token_cors
from orchestrator.api.waiting import prefer_wait, respond_when_terminal, run_events, wait_seconds
from orchestrator.errors import FlowNotFound, RunNotFound, ValidationFailed
from orchestrator.flows import FLOW_ID, Flow
from orchestrator.models import (
    BatchCreate,
    DeliveryReport,
    EventPage,
    Execution,
    ExecutionPage,
    ExecutionStatus,
    FlowInfo,
    FlowPage,
    Page,
    RunCreate,
)
from orchestrator.runs.listing import page as list_page
from orchestrator.runs.store import RunStore
from orchestrator.runs.stored import NewRun
from orchestrator.settings import Settings
from webhooks.api.apidoc import PAGING, Param, links_to, operation
from webhooks.api.inputs import (
    check_choices,
    check_url_field,
    page_cursor,
    page_limit,
    query_choice,
    read_model,
    render,
)
from webhooks.ids import is_valid, new_id

IDEMPOTENCY_KEY = Param("Idempotency-Key", "Repeat-safe creation: the same key and body return the original")
PREFER = Param("Prefer", "wait=N (N <= 60): answer 200 with the terminal execution if it ends within N s")


def _store(request: Request) -> RunStore:
    store = services(request).store
    return store


def _flow(request: Request) -> Flow:
    registry = services(request).registry
    flow_id = request.path_params["flow_id"]
    found = registry.get(flow_id)
    if found is None:
        known = [f.id for f in registry.all()]
        raise FlowNotFound(
            f"no flow {flow_id}; this API serves: {', '.join(known) or 'no flows (set ORCH_FLOWS)'}",
            details={"flows": known},
        )
    return found


def _run_id(request: Request) -> str:
    run_id: str = request.path_params["run_id"]
    if not is_valid(run_id, "exec"):
        raise RunNotFound(f"no execution {run_id}")
    return run_id


@operation(summary="List flows", tag="Flows", responses={200: FlowPage})
async def list_flows(request: Request) -> Response:
    """``GET /v1/flows``."""
    await authenticate(request)
    registry = services(request).registry
    return render(Page(data=[f.info() for f in registry.all()], next_cursor=None))


@operation(
    summary="Get a flow and its input/output schemas",
    tag="Flows",
    responses={200: FlowInfo},
    errors=(401, 404, 503),
)
async def get_flow(request: Request) -> Response:
    """``GET /v1/flows/{flowId}``."""
    await authenticate(request)
    return render(_flow(request).info())


async def _webhook_json(body: RunCreate, settings: Settings) -> str | None:
    if body.webhook is None:
        return None
    await check_url_field(body.webhook.url, field="webhook.url", allow_private=settings.webhook_allow_private)
    check_choices("webhook.events", body.webhook.events, events.RUN_WEBHOOK_EVENTS, what="event types")
    return body.webhook.model_dump_json(by_alias=True, exclude_none=True)


def validate_input(flow: Flow, value: Any, prefix: str) -> str:
    """The input validated by the flow's input type, as the JSON text the worker will read."""
    try:
        data = flow.input_adapter.validate_python(value)
    except ValidationError as exc:
        raise ValidationFailed.of(
            f"input does not match flow {flow.id}'s input type", exc, prefix=prefix
        ) from None
    return flow.input_adapter.dump_json(data, by_alias=True).decode()


async def _claim_ids(request: Request, *, tenant: str, route: str, body: BaseModel, count: int) -> Claim:
    """Fresh run ids, or with an Idempotency-Key the ids of the first request that used it."""
    ids = [new_id("exec") for _ in range(count)]
    header = request.headers.get("idempotency-key")
    if header is None:
        return Claim(run_ids=ids, replayed=False)
    settings = services(request).settings
    return await claim(
        services(request).redis,
        tenant=tenant,
        key=check_key(header),
        fp=fingerprint(route, body.model_dump(mode="json")),  # only paid for when a key is sent
        run_ids=ids,
        ttl=settings.idempotency_ttl_seconds,
    )


# The calls that take a run id from a response naming a run.
RUN_TARGETS = {
    "GetRun": "get_run",
    "WaitRun": "wait_run",
    "RunEvents": "list_events",
    "RunDeliveries": "run_deliveries_route",
    "CancelRun": "cancel_run",
    "CreateRunToken": "create_token",
}


RUN_LINKS = links_to(RUN_TARGETS, "run_id", "$response.body#/id")


@operation(
    summary="Start an execution",
    tag="Executions",
    body=RunCreate,
    responses={202: Execution[Any], 200: Execution[Any]},
    headers=[IDEMPOTENCY_KEY, PREFER],
    errors=(400, 401, 404, 409, 413, 422, 503),
    links={202: RUN_LINKS, 200: RUN_LINKS},
)
async def create_run(request: Request) -> Response:
    """``POST /v1/flows/{flowId}/runs``: validate, store and enqueue; optionally wait (Prefer: wait=N)."""
    tenant = await authenticate(request)
    flow = _flow(request)
    settings = services(request).settings
    body = await read_model(request, RunCreate, max_bytes=settings.max_body_bytes)
    input_json = validate_input(flow, body.input, "input")
    webhook_json = await _webhook_json(body, settings)
    wait = prefer_wait(request)
    got = await _claim_ids(request, tenant=tenant, route=f"runs:{flow.id}", body=body, count=1)
    run = await _store(request).create(
        tenant=tenant,
        flow_id=flow.id,
        input_json=input_json,
        metadata=body.metadata,
        steps_total=flow.steps,
        webhook_json=webhook_json,
        run_id=got.run_ids[0],
    )
    await got.complete(services(request).redis)
    headers = {"Idempotent-Replayed": "true"} if got.replayed else {}
    if wait is not None:
        headers["Preference-Applied"] = f"wait={wait:g}"
        return await respond_when_terminal(request, run.id, tenant=tenant, seconds=wait, headers=headers)
    return render(run, 202, headers=headers)


@operation(
    summary="Start up to 1000 executions (all validated first)",
    tag="Executions",
    body=BatchCreate,
    responses={202: ExecutionPage},
    headers=[IDEMPOTENCY_KEY],
    errors=(400, 401, 404, 409, 413, 422, 503),
    links={202: links_to(RUN_TARGETS, "run_id", "$response.body#/data/0/id")},
)
async def create_batch(request: Request) -> Response:
    """``POST /v1/flows/{flowId}/runs/batch``: validate every item first, then create all, in order."""
    tenant = await authenticate(request)
    flow = _flow(request)
    settings = services(request).settings
    body = await read_model(request, BatchCreate, max_bytes=settings.max_body_bytes)
    inputs: list[str] = []
    bad: list[dict[str, Any]] = []
    for i, item in enumerate(body.items):
        try:
            inputs.append(validate_input(flow, item.input, f"items.{i}.input"))
        except ValidationFailed as exc:
            bad.extend(exc.details["fields"])
    if bad:
        indexes = sorted({int(f["field"].split(".")[1]) for f in bad})
        raise ValidationFailed(
            f"{len(indexes)} of {len(body.items)} items are invalid; nothing was started",
            details={"indexes": indexes, "fields": bad},
        )
    got = await _claim_ids(
        request,
        tenant=tenant,
        route=f"batch:{flow.id}",
        body=body,
        count=len(inputs),
    )
    items = [
        NewRun(input_json=inp, metadata=item.metadata, run_id=rid)
        for inp, item, rid in zip(inputs, body.items, got.run_ids, strict=True)
    ]
    created = await _store(request).create_many(
        tenant=tenant, flow_id=flow.id, items=items, steps_total=flow.steps
    )
    await got.complete(services(request).redis)
    page: Page[Any] = Page(data=[run for run, _ in created], next_cursor=None)
    headers = {"Idempotent-Replayed": "true"} if got.replayed else {}
    return render(page, 202, headers=headers)


TOKEN_QUERY = Param(QUERY_PARAMETER, "A run token (rt_...) instead of a key, where no header can be sent")


@operation(
    summary="Get an execution (with an API key or a run token)",
    tag="Executions",
    responses={200: Execution[Any]},
    query=[TOKEN_QUERY],
    errors=(401, 404, 503),
)
async def get_run(request: Request) -> Response:
    """``GET /v1/runs/{id}``: the stored JSON, passed through unparsed (an API key or a run token)."""
    tenant = await authenticate_reader(request, request.path_params["run_id"])
    run_id = _run_id(request)
    body = await _store(request).get_json(run_id, tenant=tenant)
    return Response(body, media_type="application/json", headers=token_cors(request))


@operation(
    summary="List executions, newest first",
    tag="Executions",
    responses={200: ExecutionPage},
    query=[
        Param("status", "Only this status", {"type": "string", "enum": [s.value for s in ExecutionStatus]}),
        Param("flowId", "Only this flow"),
        *PAGING,
    ],
    errors=(401, 422, 503),
)
async def list_runs(request: Request) -> Response:
    """``GET /v1/runs?status=&flowId=&limit=&cursor=``: newest first."""
    tenant = await authenticate(request)
    limit = page_limit(request)
    status = query_choice(request, "status", ExecutionStatus)
    flow_id = request.query_params.get("flowId") or None
    if flow_id is not None and not FLOW_ID.fullmatch(flow_id):
        # Not merely unknown (a retired flow's runs stay listable): it could never name a flow,
        # and it is part of a Redis key, where "echo:s:cancelled" would read another index.
        raise ValidationFailed.field("flowId", "not a flow id")
    cursor = page_cursor(request, "exec")
    runs, next_cursor = await list_page(
        services(request).redis, tenant=tenant, limit=limit, cursor=cursor, status=status, flow_id=flow_id
    )
    page: Page[Any] = Page(data=runs, next_cursor=next_cursor)
    return render(page)


@operation(
    summary="Wait until the execution ends (long-poll): 200 terminal, 202 still going after timeout",
    tag="Waiting",
    responses={200: Execution[Any], 202: Execution[Any]},
    query=[
        Param(
            "timeout", "Seconds to wait (0-60, default 30)", {"type": "number", "minimum": 0, "maximum": 60}
        )
    ],
    errors=(401, 404, 422, 503),
)
async def wait_run(request: Request) -> Response:
    """``GET /v1/runs/{id}/wait?timeout=S``: the run once terminal (200), else after S s (202)."""
    tenant = await authenticate(request)
    run_id = _run_id(request)
    seconds = wait_seconds(request)
    return await respond_when_terminal(request, run_id, tenant=tenant, seconds=seconds)


@operation(
    summary="The execution's events in order; with Accept: text/event-stream a live SSE stream",
    tag="Waiting",
    responses={200: EventPage},
    query=[
        Param("after", "Resume after this sequence (like Last-Event-ID)", {"type": "integer", "minimum": 0}),
        TOKEN_QUERY,
    ],
    headers=[Param("Last-Event-ID", "SSE: resume after this sequence")],
    errors=(401, 404, 422, 503),
)
async def list_events(request: Request) -> Response:
    """``GET /v1/runs/{id}/events``: the ordered event log, or an SSE stream of it (key or run token)."""
    tenant = await authenticate_reader(request, request.path_params["run_id"])
    run_id = _run_id(request)
    response = await run_events(request, run_id, tenant=tenant)
    response.headers.update(token_cors(request))
    return response


@operation(
    summary="Where this execution's webhooks went: per endpoint and event, the delivery or why not",
    tag="Webhooks",
    responses={200: DeliveryReport},
    errors=(401, 404, 503),
)
async def run_deliveries_route(request: Request) -> Response:
    """``GET /v1/runs/{id}/deliveries``: each endpoint, each event: its delivery, or why there is none."""
    tenant = await authenticate(request)
    return await run_deliveries(request, _run_id(request), tenant=tenant)


@operation(
    summary="Cancel a queued or running execution (409 if it already ended)",
    tag="Executions",
    responses={200: Execution[Any]},
    errors=(401, 404, 409, 503),
)
async def cancel_run(request: Request) -> Response:
    """``POST /v1/runs/{id}/cancel``: queued or running -> cancelled; terminal -> 409."""
    tenant = await authenticate(request)
    run = await _store(request).cancel(_run_id(request), tenant=tenant)
    return render(run)


ROUTES = [
    Route("/v1/flows", list_flows, methods=["GET"]),
    Route("/v1/flows/{flow_id}", get_flow, methods=["GET"]),
    Route("/v1/flows/{flow_id}/runs", create_run, methods=["POST"]),
    Route("/v1/flows/{flow_id}/runs/batch", create_batch, methods=["POST"]),
    Route("/v1/runs", list_runs, methods=["GET"]),
    Route("/v1/runs/{run_id}", get_run, methods=["GET"]),
    Route("/v1/runs/{run_id}/wait", wait_run, methods=["GET"]),
    Route("/v1/runs/{run_id}/events", list_events, methods=["GET"]),
    Route("/v1/runs/{run_id}/deliveries", run_deliveries_route, methods=["GET"]),
    Route("/v1/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
]
