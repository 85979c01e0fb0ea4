"""``GET /v1/runs/{id}/deliveries``: where did this run's webhooks go, and if not, why not."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orchestrator import events
from orchestrator.runs.store import RunStore
from webhooks import keys as wh_keys
from webhooks.deliveries import DeliveryStore
from webhooks.endpoints import EndpointStore, matches


def _ms(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)


async def build_report(
    store: RunStore, endpoints: EndpointStore, deliveries: DeliveryStore, run_id: str, *, tenant: str
) -> dict[str, Any]:
    """For each endpoint of the tenant (and the run's own webhook), each event: its delivery or why not."""
    stored = await store.load(run_id)
    entries, _ = await store.events(run_id, tenant=tenant)
    log = [json.loads(e) for e in entries]
    targets: list[dict[str, Any]] = []
    checks: list[tuple[int, int, str | None]] = []  # (target index, event index, reason)
    for endpoint in await endpoints.for_tenant(tenant):
        targets.append(
            {
                "endpointId": endpoint.id,
                "url": endpoint.url,
                "enabled": endpoint.enabled,
                "disabledReason": endpoint.disabled_reason,
            }
        )
        for i, ev in enumerate(log):
            reason = matches(
                endpoint,
                event_type=ev["type"],
                flow=ev["data"]["flowId"],
                at_ms=_ms(ev["timestamp"]),
                default_events=events.DEFAULT_EVENTS,
            )
            checks.append((len(targets) - 1, i, reason))
    hook = json.loads(stored.webhook_json) if stored is not None and stored.webhook_json else None
    if hook is not None:
        targets.append(
            {
                "endpointId": wh_keys.hook_endpoint_id(run_id),
                "url": hook["url"],
                "enabled": True,
                "disabledReason": None,
                "runWebhook": True,
            }
        )
        wanted = hook.get("events") or list(events.DEFAULT_EVENTS)
        for i, ev in enumerate(log):
            checks.append((len(targets) - 1, i, None if ev["type"] in wanted else "event type filtered"))
    pairs = [(log[i]["id"], targets[t]["endpointId"]) for t, i, reason in checks if reason is None]
    rows = await deliveries.rows(pairs)
    for target in targets:
        target["events"] = []
    for t, i, reason in checks:
        ev, target = log[i], targets[t]
        item: dict[str, Any] = {
            "messageId": ev["id"],
            "eventType": ev["type"],
            "sequence": ev["sequence"],
            "matched": reason is None,
            "reason": reason,
        }
        if reason is None:
            row = rows.get((ev["id"], target["endpointId"]))
            if row is None:
                item["reason"] = (
                    "coalesced: another progress event went out within the interval"
                    if ev["type"] == events.PROGRESS
                    else "not fanned out yet (no dispatcher running?)"
                )
                item.update(status=None, attempts=[], nextAttemptAt=None)
            else:
                item.update(row)
        target["events"].append(item)
    return {"runId": run_id, "data": targets}


async def run_deliveries(request: Request, run_id: str, *, tenant: str) -> Response:
    """The report as JSON."""
    report = await build_report(
        request.app.state.store,
        request.app.state.webhook_endpoints,
        request.app.state.webhook_deliveries,
        run_id,
        tenant=tenant,
    )
    return JSONResponse(report)
