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

    async def __call__(
        self, entries: Sequence[OutboxEntry], *, ack: tuple[str, Sequence[bytes]] | None = None
    ) -> int:
        """Record one delivery per matching endpoint of every entry; return how many were new.

        With `ack` (consumer group, entry ids) the entries are acknowledged in the same step as the
        writes, or right after the ordered lanes are told (the lanes must hear first: an entry
        acknowledged but not yet marked fanned out would hold its lane up to the gap after a crash).
        Round trips: one read of every tenant's endpoints, one of the coalescing gates (progress
        only), one write; the lanes' two only for tenants with an ordered endpoint.
        """
        if not entries:
            if ack is not None and ack[1]:
                await self.deliveries.write(self.deliveries.ack_call(*ack))
            return 0
        endpoints = await self.endpoints.for_tenants({e.tenant for e in entries})
        ordered = {ep.id for eps in endpoints.values() for ep in eps if ep.ordering == ORDER_BY_RUN}
        sequences = {e.id: (e.subject, e.sequence) for e in entries if e.sequence}
        # (entry, endpoint id, hook url or '', whether the endpoint is gone for good)
        candidates: list[tuple[OutboxEntry, str, str, bool]] = []
        for entry in entries:
            for endpoint in endpoints.get(entry.tenant, []):
                reason = matches(
                    endpoint,
                    event_type=entry.type,
                    flow=entry.flow,
                    at_ms=entry.created_ms,
                    default_events=self.default_events,
                )
                if endpoint.id == entry.subject or reason is not None:
                    continue  # an alert about an endpoint never goes to the endpoint it is about
                if endpoint.enabled or endpoint.disabled_reason == "failing":
                    # Due now; for an endpoint disabled for failing, the take parks it until the
                    # endpoint's actual next probe (``Health.park``): a heal racing this fan-out
                    # cannot leave it waiting a whole probe interval.
                    candidates.append((entry, endpoint.id, "", False))
                else:
                    candidates.append((entry, endpoint.id, "", True))
            hook = entry.hook
            if hook is not None and hook_wants(entry.type, hook.events, self.default_events):
                candidates.append((entry, keys.hook_endpoint_id(entry.subject), hook.url, False))
        passed = await self._gates([(entry, ep_id) for entry, ep_id, _, _ in candidates])
        pending: list[Row] = []
        gone: list[Row] = []
        for (entry, ep_id, url, is_gone), ok in zip(candidates, passed, strict=True):
            if ok:
                (gone if is_gone else pending).append((entry.id, ep_id, entry.created_ms, entry.tenant, url))
        kept = {row[0] for row in pending} | {row[0] for row in gone}
        messages = [
            Message(e.id, e.type, e.tenant, e.subject, e.body, e.created_ms) for e in entries if e.id in kept
        ]
        # Only once these sequences are fanned out everywhere may the lanes waiting for them move.
        lanes = {
            (ep.id, e.subject)
            for e in entries
            if e.sequence
            for ep in endpoints.get(e.tenant, [])
            if ep.id in ordered
        }
        # Marked only for tenants with an ordered endpoint: the others pay nothing for ordering.
        ordering_tenants = {t for t, eps in endpoints.items() if any(ep.id in ordered for ep in eps)}
        marks = [(e.subject, e.sequence) for e in entries if e.sequence and e.tenant in ordering_tenants]
        store = self.deliveries
        calls = [
            *store.save_calls(messages),
            *store.schedule_calls(pending, ordered=ordered, sequences=sequences),
            *store.schedule_calls(gone, status=DeliveryStatus.failed, note="endpoint gone (410)"),
        ]
        acked_with_writes = ack is not None and not marks and not lanes
        if acked_with_writes and ack is not None:
            calls += store.ack_call(*ack)
        results = await store.write(calls)
        first = len(messages)
        created = sum(int(r) for r in results[first : first + len(pending)])  # new pending deliveries
        if marks or lanes:
            await self.lanes.fanned_out(marks, sorted(lanes))
        if ack is not None and not acked_with_writes:
            await store.write(store.ack_call(*ack))
        return created

    async def _gates(self, candidates: Sequence[tuple[OutboxEntry, str]]) -> list[bool]:
        """Coalesced types (progress) go to an endpoint at most once per interval per subject: one
        SET NX per such (entry, endpoint), all in one pipeline; other types always pass."""
        gated = [i for i, (entry, _) in enumerate(candidates) if entry.type in self.coalesced_events]
        passed = [True] * len(candidates)
        if not gated:
            return passed
        ms = int(self.settings.progress_interval_seconds * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in gated:
                entry, endpoint_id = candidates[i]
                pipe.set(keys.progress_gate(endpoint_id, entry.subject), b"1", nx=True, px=ms)
            for i, ok in zip(gated, await pipe.execute(), strict=True):
                passed[i] = bool(ok)
        return passed
