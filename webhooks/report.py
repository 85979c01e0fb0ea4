"""Where did a subject's messages go, and if not, why not: per endpoint and message.

The producer passes what it knows (the subject's messages in order, and its own one-subject
webhook if any); this module answers from the same matching the fan-out uses
(``webhooks.fanout.matches``) and the delivery rows. It backs ``GET /v1/runs/{id}/deliveries``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field

from webhooks import keys
from webhooks.deliveries import DeliveryStore
from webhooks.endpoints import EndpointStore
from webhooks.fanout import hook_wants, matches
from webhooks.models import Attempt, Timestamp, WireModel, from_ms
from webhooks.outbox import Hook


@dataclass(frozen=True)
class SentMessage:
    """One message the producer published about the subject (from its own event log)."""

    id: str
    type: str
    sequence: int
    flow: str
    created_ms: int


class ReportEvent(WireModel):
    """One message as one endpoint saw it: its delivery, or why there is none."""

    message_id: str
    event_type: str
    sequence: int
    matched: bool
    reason: str | None = None
    status: str | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    next_attempt_at: str | None = None


class ReportEndpoint(WireModel):
    """One endpoint of the tenant (or the subject's own webhook) and the subject's messages for it."""

    endpoint_id: str
    url: str
    enabled: bool
    disabled_reason: str | None = None
    run_webhook: bool = False
    # Set for an endpoint deleted since: what went to it before stays readable (issue 18).
    deleted_at: Timestamp | None = None
    events: list[ReportEvent]


class DeliveryReport(WireModel):
    """Every endpoint, every message: ``GET /v1/runs/{id}/deliveries``."""

    run_id: str
    data: list[ReportEndpoint]


NOT_FANNED_OUT = "not fanned out yet (no dispatcher running?)"
COALESCED = "coalesced: another progress event went out within the interval"


async def delivery_report(
    endpoints: EndpointStore,
    deliveries: DeliveryStore,
    *,
    tenant: str,
    subject: str,
    messages: Sequence[SentMessage],
    hook: Hook | None,
    default_events: Sequence[str],
    coalesced_events: Sequence[str] = (),
) -> DeliveryReport:
    """For each endpoint of `tenant` (and the subject's `hook`), each message: its delivery or why not."""
    targets: list[ReportEndpoint] = []
    checks: list[tuple[int, int, str | None]] = []  # (target index, message index, reason)
    for endpoint in await endpoints.for_tenant(tenant):
        targets.append(
            ReportEndpoint(
                endpoint_id=endpoint.id,
                url=endpoint.url,
                enabled=endpoint.enabled,
                disabled_reason=endpoint.disabled_reason,
                events=[],
            )
        )
        for i, m in enumerate(messages):
            reason = matches(
                endpoint, event_type=m.type, flow=m.flow, at_ms=m.created_ms, default_events=default_events
            )
            checks.append((len(targets) - 1, i, reason))
    if hook is not None:
        targets.append(
            ReportEndpoint(
                endpoint_id=keys.hook_endpoint_id(subject),
                url=hook.url,
                enabled=True,
                disabled_reason=None,
                run_webhook=True,
                events=[],
            )
        )
        for i, m in enumerate(messages):
            wanted = hook_wants(m.type, hook.events, default_events)
            checks.append((len(targets) - 1, i, None if wanted else "event type filtered"))
    pairs = [(messages[i].id, targets[t].endpoint_id) for t, i, reason in checks if reason is None]
    # Endpoints deleted since: listed when a delivery of these messages to them is still kept.
    # Only those deleted after the first message was made can hold a delivery of it: the rest
    # (every `webhooks listen` session of the past weeks) are not looked up.
    gone = await endpoints.deleted(tenant, since_ms=min(m.created_ms for m in messages)) if messages else []
    pairs += [(m.id, endpoint_id) for endpoint_id, _, _ in gone for m in messages]
    rows = await deliveries.rows(pairs)
    for endpoint_id, url, deleted_ms in gone:
        found = [
            (i, rows[(m.id, endpoint_id)]) for i, m in enumerate(messages) if (m.id, endpoint_id) in rows
        ]
        if not found:
            continue
        targets.append(
            ReportEndpoint(
                endpoint_id=endpoint_id,
                url=url,
                enabled=False,
                disabled_reason="deleted",
                deleted_at=from_ms(deleted_ms),
                events=[],
            )
        )
        checks += [(len(targets) - 1, i, None) for i, _ in found]
    for t, i, reason in checks:
        m, target = messages[i], targets[t]
        item = ReportEvent(
            message_id=m.id, event_type=m.type, sequence=m.sequence, matched=reason is None, reason=reason
        )
        if reason is None:
            row = rows.get((m.id, target.endpoint_id))
            if row is None:
                item.reason = COALESCED if m.type in coalesced_events else NOT_FANNED_OUT
                item.status, item.attempts, item.next_attempt_at = None, [], None
            else:
                item.status = row.status
                item.attempts = row.attempts
                item.next_attempt_at = row.next_attempt_at
        target.events.append(item)
    return DeliveryReport(run_id=subject, data=targets)
