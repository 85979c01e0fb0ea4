"""The Endpoints pages: health, create, edit, enable or disable, delete, rotate the secret, send a test.

Every change goes through the same checks as ``/v1/webhooks`` (the model's limits, the SSRF guard,
known event types and flows: ``WebhookAPI.check_fields``); a refusal shows the form again with
each bad field named.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from orchestrator import events
from orchestrator.api.dashboard.access import Viewer, acting, viewer
from orchestrator.api.dashboard.forms import Form
from orchestrator.api.dashboard.render import BASE, page, redirect
from orchestrator.api.dashboard.stats import endpoint_rows
from orchestrator.api.services import Services, services
from webhooks.errors import ValidationFailed, field_errors
from webhooks.models import Endpoint, EndpointCreate, EndpointPatch, now_ms


def _endpoint_id(request: Request) -> str:
    endpoint_id: str = request.path_params["endpoint_id"]
    return endpoint_id


async def _endpoint(state: Services, request: Request, who: Viewer) -> Endpoint:
    endpoints, _ = state.webhooks.stores()
    return await endpoints.get(_endpoint_id(request), tenant=who.tenant)


def _choices(state: Services) -> dict[str, Any]:
    return {"event_types": list(events.ALL_EVENTS), "flow_ids": sorted(f.id for f in state.registry.all())}


def _form_values(form: Form[str, str]) -> dict[str, Any]:
    """url, description, events and flowIds (repeated checkboxes) as the API's body would carry them."""
    return {
        "url": form.get("url", "").strip(),
        "description": form.get("description", ""),
        "events": form.getlist("events") or None,
        "flow_ids": form.getlist("flowIds") or None,
    }


def _problems(exc: ValidationFailed | ValidationError) -> list[dict[str, Any]]:
    if isinstance(exc, ValidationError):
        return field_errors(exc)
    fields: list[dict[str, Any]] = exc.details.get("fields") or [{"field": "", "message": exc.message}]
    return fields


async def endpoints_page(request: Request) -> Response:
    """``GET /dashboard/endpoints``: every endpoint with its health, and the form to add one."""
    who = await viewer(request)
    return await _list(request, who, values={}, problems=[], status=200)


async def _list(
    request: Request, who: Viewer, *, values: dict[str, Any], problems: list[dict[str, Any]], status: int
) -> Response:
    state = services(request)
    endpoints, _ = state.webhooks.stores()
    rows = await endpoint_rows(
        state.redis, await endpoints.for_tenant(who.tenant), now_ms=state.clock.now_ms()
    )
    return page(
        request,
        "endpoints.html",
        who=who,
        status=status,
        rows=rows,
        values=values,
        problems=problems,
        **_choices(state),
    )


async def create(request: Request) -> Response:
    """``POST /dashboard/endpoints``: add an endpoint; its secret is shown once."""
    who, form = await acting(request)
    state = services(request)
    values = _form_values(form)
    try:
        body = EndpointCreate.model_validate(values)
        await state.webhooks.check_fields(url=body.url, events=body.events, flow_ids=body.flow_ids)
    except (ValidationError, ValidationFailed) as exc:
        return await _list(request, who, values=values, problems=_problems(exc), status=422)
    endpoints, _ = state.webhooks.stores()
    endpoint = await endpoints.create(
        tenant=who.tenant,
        url=body.url,
        events=body.events or [],
        flow_ids=body.flow_ids or [],
        description=body.description,
    )
    await state.webhooks.replicated(f"endpoint {endpoint.id}")  # as the API: acknowledged = replicated
    return page(
        request, "secret.html", who=who, status=201, endpoint=endpoint, secret=endpoint.secret, created=True
    )


async def endpoint_page(request: Request) -> Response:
    """``GET /dashboard/endpoints/{id}``: health, settings form, actions."""
    who = await viewer(request)
    state = services(request)
    endpoint = await _endpoint(state, request, who)
    return await _show(request, who, endpoint, problems=[], status=200)


async def _show(
    request: Request, who: Viewer, endpoint: Endpoint, *, problems: list[dict[str, Any]], status: int
) -> Response:
    state = services(request)
    (row,) = await endpoint_rows(state.redis, [endpoint], now_ms=state.clock.now_ms())
    _, deliveries = state.webhooks.stores()
    recent, _ = await deliveries.page(endpoint.id, status=None, limit=5, cursor=None)
    attempts = sorted(
        ((a, item) for item in recent for a in item.attempts), key=lambda p: p[0].at, reverse=True
    )
    done = request.query_params.get("done", "")
    return page(
        request,
        "endpoint.html",
        who=who,
        status=status,
        row=row,
        endpoint=endpoint,
        last_attempts=attempts[:5],
        problems=problems,
        done=done if done in NOTICES else "",
        notices=NOTICES,
        message_id=request.query_params.get("message", "")[:40],
        **_choices(state),
    )


NOTICES = {
    "saved": "Saved.",
    "enabled": "Enabled: deliveries resume.",
    "disabled": "Disabled: nothing is sent to it until it is enabled again.",
    "test": "A webhook.test message was queued.",
}


async def change(request: Request) -> Response:
    """``POST /dashboard/endpoints/{id}``: save url, description, events and flows."""
    who, form = await acting(request)
    state = services(request)
    endpoint = await _endpoint(state, request, who)
    values = _form_values(form)
    values["events"] = values["events"] or []
    values["flow_ids"] = values["flow_ids"] or []
    try:
        body = EndpointPatch.model_validate(values)
        await state.webhooks.check_fields(url=body.url, events=body.events, flow_ids=body.flow_ids)
    except (ValidationError, ValidationFailed) as exc:
        shown = endpoint.model_copy(update={k: v for k, v in values.items() if v is not None})
        return await _show(request, who, shown, problems=_problems(exc), status=422)
    endpoints, _ = state.webhooks.stores()
    await endpoints.update(endpoint.id, tenant=who.tenant, changes=body.model_dump(exclude_unset=True))
    await state.webhooks.replicated(f"endpoint {endpoint.id}")
    return redirect(f"{BASE}/endpoints/{endpoint.id}?done=saved")


async def set_enabled(request: Request) -> Response:
    """``POST /dashboard/endpoints/{id}/enabled`` (``enabled=true|false``): enable or disable it."""
    who, form = await acting(request)
    state = services(request)
    endpoint = await _endpoint(state, request, who)
    enabled = form.get("enabled") == "true"
    endpoints, _ = state.webhooks.stores()
    await endpoints.update(endpoint.id, tenant=who.tenant, changes={"enabled": enabled})
    await state.webhooks.replicated(f"endpoint {endpoint.id}")
    return redirect(f"{BASE}/endpoints/{endpoint.id}?done={'enabled' if enabled else 'disabled'}")


async def delete(request: Request) -> Response:
    """``POST /dashboard/endpoints/{id}/delete``: remove it and its pending deliveries."""
    who, _ = await acting(request)
    state = services(request)
    endpoint = await _endpoint(state, request, who)
    endpoints, _ = state.webhooks.stores()
    await endpoints.delete(endpoint.id, tenant=who.tenant, keep_ms=state.webhooks.failed_ttl_ms)
    await state.webhooks.replicated("the deleted endpoint")
    return redirect(f"{BASE}/endpoints")


async def rotate(request: Request) -> Response:
    """``POST /dashboard/endpoints/{id}/rotate``: a new secret, shown once (the old one signs for 24 h)."""
    who, _ = await acting(request)
    state = services(request)
    endpoint = await _endpoint(state, request, who)
    endpoints, _ = state.webhooks.stores()
    secret = await endpoints.rotate_secret(endpoint.id, tenant=who.tenant)
    await state.webhooks.replicated("the new secret")
    return page(request, "secret.html", who=who, endpoint=endpoint, secret=secret, created=False)


async def send_test(request: Request) -> Response:
    """``POST /dashboard/endpoints/{id}/test``: queue a ``webhook.test`` message to it."""
    who, _ = await acting(request)
    state = services(request)
    endpoint = await _endpoint(state, request, who)
    _, deliveries = state.webhooks.stores()
    message_id = await deliveries.send_test(endpoint, now_ms=now_ms())
    await state.webhooks.replicated(f"message {message_id}")
    return redirect(f"{BASE}/endpoints/{endpoint.id}?done=test&message={message_id}")
