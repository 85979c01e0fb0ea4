"""Endpoint health: the failure streak, disabling, parking, probing and healing.

An endpoint that answers 410 Gone is disabled for good. One that fails without a single success for
``disable_after_seconds`` is disabled *for failing*: its deliveries are parked (no attempt spent)
and a signed ``webhook.test`` probe goes out on ``probe_schedule``; the first 2xx heals it:
re-enabled, its parked deliveries released at once, and every message that failed since it started
failing sent again.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from webhooks import keys
from webhooks.deliveries import Delivery, DeliveryStore, test_message
from webhooks.endpoints import EndpointStore
from webhooks.errors import EndpointNotFound
from webhooks.models import Endpoint, format_timestamp, from_ms
from webhooks.retry import Decision
from webhooks.sender import Sender
from webhooks.settings import DispatcherSettings

logger = logging.getLogger(__name__)

FAILING = "failing"
GONE = "gone"


class Health:
    """Keeps endpoints' health state and heals the ones that come back."""

    def __init__(
        self,
        settings: DispatcherSettings,
        redis: Redis,
        *,
        endpoints: EndpointStore,
        deliveries: DeliveryStore,
        sender: Sender,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.endpoints = endpoints
        self.deliveries = deliveries
        self.sender = sender

    async def park(self, dlv: Delivery, endpoint: Endpoint) -> None:
        """Hold a delivery of an endpoint disabled for failing until its next probe (no attempt spent)."""
        await self.deliveries.postpone(dlv, min_ms=1000)

    async def after_attempt(self, endpoint: Endpoint, decision: Decision) -> None:
        """Update the endpoint's health after one attempt that ended with `decision`."""
        if decision is Decision.delivered:
            if endpoint.failing_since is not None:
                await self.endpoints.mark_success(endpoint.id)
            return
        if decision is Decision.disable:
            logger.warning("endpoint %s answered 410 Gone: disabled", endpoint.id)
            await self.endpoints.disable(endpoint.id, reason=GONE, probe_in_ms=None)
            return
        failing = await self.endpoints.mark_failure(endpoint.id)
        if failing is None:
            return
        since, now = failing
        if now - since >= self.settings.disable_after_seconds * 1000:
            logger.warning(
                "endpoint %s failing since %s: disabled", endpoint.id, format_timestamp(from_ms(since))
            )
            first_probe = int(self.settings.probe_schedule[0] * 1000)
            await self.endpoints.disable(endpoint.id, reason=FAILING, probe_in_ms=first_probe)

    async def probe_due(self, most: int = 20) -> int:
        """Probe up to `most` endpoints whose probe is due; return how many healed."""
        due, now = await self.endpoints.probes_due(limit=most)
        healed = 0
        for endpoint_id in due:
            try:
                endpoint = await self.endpoints.get(endpoint_id)
            except EndpointNotFound:
                await self.redis.zrem(keys.PROBES, endpoint_id)
                continue
            message = test_message(endpoint, now_ms=now, note="probe: is this endpoint back?")
            result = await self.sender.send(
                endpoint.url, message_id=message.id, body=message.body, secrets=endpoint.signing_secrets(now)
            )
            if result.status is not None and 200 <= result.status < 300:
                await self._heal(endpoint_id)
                healed += 1
                continue
            tries = await self.endpoints.count_probe(endpoint_id)
            delay = self.settings.probe_schedule[min(tries, len(self.settings.probe_schedule) - 1)]
            await self.endpoints.probe_in(endpoint_id, int(delay * 1000))
        return healed

    async def _heal(self, endpoint_id: str) -> None:
        failing_since = await self.endpoints.heal(endpoint_id)
        released = await self.deliveries.release(endpoint_id)
        replayed = await self.deliveries.recover(endpoint_id, failing_since or 0)
        logger.warning(
            "endpoint %s healed: %d parked and %d failed messages sent again", endpoint_id, released, replayed
        )
