"""Fan-out: outbox entries -> one delivery per (message, matching endpoint).

Which endpoints receive a message (:func:`matches`, also the why-not report's answer), the
one-subject webhooks an entry carries, and the coalescing of frequent event types (progress).
Delivery ids are ``{message id}:{endpoint id}``, so a fan-out repeated after a crash creates
nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from redis.asyncio import Redis

from webhooks import keys
from webhooks.deliveries import DeliveryStore
from webhooks.delivery_units import Message
from webhooks.endpoints import EndpointStore
from webhooks.lanes import Lanes
from webhooks.models import DeliveryStatus, Endpoint, Ordering
from webhooks.outbox import OutboxEntry
from webhooks.settings import DispatcherSettings

ORDER_BY_RUN = Ordering.run.value

logger = logging.getLogger(__name__)

# One planned delivery: (message id, endpoint id, created ms, tenant, url or '' for the endpoint's).
Row = tuple[str, str, int, str, str]


def matches(
    endpoint: Endpoint, *, event_type: str, flow: str, at_ms: int, default_events: Iterable[str]
) -> str | None:
    """None when `endpoint` should receive this event, else why not (for the why-not view).

    An endpoint receives what happened after it was created (no flood of history on subscribe),
    of the types it lists (the default set when it lists none), of the flows it lists (any when
    none; entries about no flow, such as operational events, pass that filter). An endpoint disabled
    by hand receives nothing; one disabled automatically still gets deliveries, parked until it
    heals (see ``webhooks.health``). An entry about an endpoint (an operational event, whose subject
    is the endpoint's id) never goes to that endpoint: see :class:`FanOut`.
    """
    if endpoint.created_at.timestamp() * 1000 > at_ms:
        return "endpoint created after the event"
    wanted = endpoint.events or list(default_events)
    if event_type not in wanted:
        return "event type filtered"
    if endpoint.flow_ids and flow and flow not in endpoint.flow_ids:
        return "flow filtered"  # an entry about no flow (an operational event) is not narrowed
    if not endpoint.enabled and endpoint.disabled_reason is None:
        return "endpoint disabled"
    return None


def hook_wants(entry_type: str, hook_events: Sequence[str], default_events: Iterable[str]) -> bool:
    """Whether a one-subject webhook asked for this event type (the default set when it named none)."""
    return entry_type in (hook_events or tuple(default_events))


class FanOut:
    """Plans and records the deliveries of a batch of outbox entries."""

    def __init__(
        self,
        settings: DispatcherSettings,
        redis: Redis,
        *,
        endpoints: EndpointStore,
        deliveries: DeliveryStore,
        default_events: Sequence[str],
        coalesced_events: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.endpoints = endpoints
        self.deliveries = deliveries
        self.default_events = tuple(default_events)
        self.coalesced_events = frozenset(coalesced_events)
        self.lanes = Lanes(
            redis,
            gap_ms=int(settings.ordering_gap_seconds * 1000),
            fanned_ttl_ms=settings.failed_retention_seconds * 1000,
        )

    async def __call__(self, entries: Sequence[OutboxEntry]) -> int:
        """Record one delivery per matching endpoint of every entry; return how many were new."""
        if not entries:
            return 0
        tenants = {e.tenant for e in entries}
        endpoints = {t: await self.endpoints.for_tenant(t) for t in tenants}
        pending: list[Row] = []
        gone: list[Row] = []
        keep: dict[str, Message] = {}
        ordered = {ep.id for eps in endpoints.values() for ep in eps if ep.ordering == ORDER_BY_RUN}
        sequences = {e.id: (e.subject, e.sequence) for e in entries if e.sequence}
        for entry in entries:
            message = Message(entry.id, entry.type, entry.tenant, entry.subject, entry.body, entry.created_ms)
            for endpoint in endpoints[entry.tenant]:
                reason = matches(
                    endpoint,
                    event_type=entry.type,
                    flow=entry.flow,
                    at_ms=entry.created_ms,
                    default_events=self.default_events,
                )
                if endpoint.id == entry.subject:
                    continue  # an alert about an endpoint never goes to the endpoint it is about
                if reason is not None or not await self._passes_gate(endpoint.id, entry):
                    continue
                row = (entry.id, endpoint.id, entry.created_ms, entry.tenant, "")
                if endpoint.enabled or endpoint.disabled_reason == "failing":
                    # Due now; for an endpoint disabled for failing, the take parks it until the
                    # endpoint's actual next probe (``Health.park``): a heal racing this fan-out
                    # cannot leave it waiting a whole probe interval.
                    pending.append(row)
                else:
                    gone.append(row)
                keep[entry.id] = message
            hook = entry.hook
            if hook is not None and hook_wants(entry.type, hook.events, self.default_events):
                hook_id = keys.hook_endpoint_id(entry.subject)
                if await self._passes_gate(hook_id, entry):
                    pending.append((entry.id, hook_id, entry.created_ms, entry.tenant, hook.url))
                    keep[entry.id] = message
        await self.deliveries.save_messages(list(keep.values()))
        created = await self.deliveries.schedule(pending, ordered=ordered, sequences=sequences)
        await self.deliveries.schedule(gone, status=DeliveryStatus.failed, note="endpoint gone (410)")
        # Only now are these sequences fanned out everywhere: lanes waiting for them may move.
        lanes = {
            (ep.id, e.subject)
            for e in entries
            if e.sequence
            for ep in endpoints[e.tenant]
            if ep.id in ordered
        }
        # Marked only for tenants with an ordered endpoint: the others pay nothing for ordering.
        ordering_tenants = {t for t, eps in endpoints.items() if any(ep.id in ordered for ep in eps)}
        marks = [(e.subject, e.sequence) for e in entries if e.sequence and e.tenant in ordering_tenants]
        await self.lanes.fanned_out(marks, sorted(lanes))
        return created

    async def _passes_gate(self, endpoint_id: str, entry: OutboxEntry) -> bool:
        """Coalesced types (progress) go to an endpoint at most once per interval per subject."""
        if entry.type not in self.coalesced_events:
            return True
        ms = int(self.settings.progress_interval_seconds * 1000)
        return bool(
            await self.redis.set(keys.progress_gate(endpoint_id, entry.subject), b"1", nx=True, px=ms)
        )
