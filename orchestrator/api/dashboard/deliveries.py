"""An endpoint's deliveries: the attempt log a page at a time, retry one message, recover since a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from orchestrator.api.dashboard.access import acting, viewer
from orchestrator.api.dashboard.render import BASE, SECURITY_HEADERS, fragment, page, redirect
from orchestrator.api.services import services
from webhooks.api.inputs import page_cursor, query_choice
from webhooks.errors import DeliveryNotFound, ValidationFailed
from webhooks.ids import is_valid
from webhooks.models import DeliveryStatus

PAGE = 25


async def deliveries_page(request: Request) -> Response:
    """``GET /dashboard/endpoints/{id}/deliveries?status=&cursor=``: messages with every attempt."""
    who = await viewer(request)
    state = services(request)
    endpoints, deliveries = state.webhooks.stores()
    endpoint = await endpoints.get(request.path_params["endpoint_id"], tenant=who.tenant)
    status = query_choice(request, "status", DeliveryStatus)
    cursor = page_cursor(request, "msg")
    items, next_cursor = await deliveries.page(endpoint.id, status=status, limit=PAGE, cursor=cursor)
    since = datetime.fromtimestamp(state.clock.now_ms() / 1000, UTC) - timedelta(days=1)
    query = f"status={status.value}&" if status else ""
    return page(
        request,
        "deliveries.html",
        who=who,
        endpoint=endpoint,
        items=items,
        shown=status.value if status else "",
        statuses=[s.value for s in DeliveryStatus],
        next_url=f"{BASE}/endpoints/{endpoint.id}/deliveries?{query}cursor={next_cursor}"
        if next_cursor
        else None,
        since_default=since.strftime("%Y-%m-%dT%H:%M"),
        done=request.query_params.get("done", ""),
        count=request.query_params.get("count", "")[:9],
    )


async def retry(request: Request) -> Response:
    """``POST .../deliveries/{messageId}/retry``: send it again now (same webhook-id).

    For htmx, the message's row comes back (now pending); otherwise the page again.
    """
    who, _ = await acting(request)
    state = services(request)
    endpoints, deliveries = state.webhooks.stores()
    endpoint = await endpoints.get(request.path_params["endpoint_id"], tenant=who.tenant)
    message_id: str = request.path_params["message_id"]
    if not is_valid(message_id, "msg") or not await deliveries.requeue(message_id, endpoint.id):
        raise DeliveryNotFound(f"no message {message_id} for endpoint {endpoint.id}")
    await state.webhooks.replicated(f"message {message_id}")
    if "hx-request" in request.headers:
        items, _ = await deliveries.page(endpoint.id, status=None, limit=1, cursor=_after(message_id))
        item = next((i for i in items if i.id == message_id), None)
        if item is not None:
            html = fragment("_delivery_row.html", item=item, endpoint=endpoint, csrf=who.csrf, base=BASE)
            return HTMLResponse(html, headers=SECURITY_HEADERS)
    return redirect(f"{BASE}/endpoints/{endpoint.id}/deliveries?done=retried")


def _after(message_id: str) -> str:
    """A cursor just above `message_id` (below every later id), so a page of one starts with it."""
    return message_id + "0"


async def recover(request: Request) -> Response:
    """``POST /dashboard/endpoints/{id}/recover`` (``since``, UTC): send every failed message since again."""
    who, form = await acting(request)
    state = services(request)
    endpoints, deliveries = state.webhooks.stores()
    endpoint = await endpoints.get(request.path_params["endpoint_id"], tenant=who.tenant)
    raw = form.get("since", "").strip()
    try:
        since = datetime.fromisoformat(raw) if 0 < len(raw) <= 40 else None
    except ValueError:
        since = None
    if since is None or not 1970 <= since.year <= 9999:
        raise ValidationFailed.field("since", "must be a date and time, e.g. 2026-11-28T23:43 (UTC)")
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    count = await deliveries.recover(endpoint.id, int(since.timestamp() * 1000))
    await state.webhooks.replicated(f"{count} recovered messages")
    return redirect(f"{BASE}/endpoints/{endpoint.id}/deliveries?done=recovered&count={count}")
