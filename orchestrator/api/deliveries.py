"""``GET /v1/runs/{id}/deliveries``: where did this run's webhooks go, and if not, why not.

The run's own event log says which messages it published; ``webhooks.report`` answers the rest.
"""

from __future__ import annotations

import json
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from orchestrator.api.services import Services, services
from webhooks.models import to_ms
from webhooks.outbox import Hook
from webhooks.report import DeliveryReport, SentMessage


async def delivery_report(state: Services, run_id: str, *, tenant: str) -> DeliveryReport:
    """Per endpoint, per event of the run: its delivery, or why there is none (404: not the tenant's)."""
    entries, _ = await state.store.events(run_id, tenant=tenant)
    stored = await state.store.load(run_id)
    log = [json.loads(e) for e in entries]
    messages = [
        SentMessage(
            id=ev["id"],
            type=ev["type"],
            sequence=ev["sequence"],
            flow=ev["data"]["flowId"],
            created_ms=to_ms(datetime.fromisoformat(ev["timestamp"])),
        )
        for ev in log
    ]
    hook = Hook.from_json(stored.webhook_json) if stored is not None and stored.webhook_json else None
    return await state.webhooks.report(tenant=tenant, subject=run_id, messages=messages, hook=hook)


async def run_deliveries(request: Request, run_id: str, *, tenant: str) -> Response:
    """The report as JSON (a missing or foreign run is 404)."""
    report = await delivery_report(services(request), run_id, tenant=tenant)
    # Only the fields each entry has: an event no endpoint matched carries no delivery fields.
    return Response(report.model_dump_json(by_alias=True, exclude_unset=True), media_type="application/json")
