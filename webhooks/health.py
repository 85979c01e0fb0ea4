"""Probes: endpoints disabled for failing get a signed `webhook.test` on a backoff until one answers.

An endpoint that answers 2xx is healed: re-enabled, its parked deliveries released at once, and
every message that failed since it started failing sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from redis.asyncio import Redis

from webhooks import keys
from webhooks.deliveries import DeliveryStore, test_message
from webhooks.endpoints import EndpointStore
from webhooks.errors import EndpointNotFound
from webhooks.sender import Sender
from webhooks.settings import DispatcherSettings

logger = logging.getLogger(__name__)


class Prober:
    """Sends the probes that are due and heals the endpoints that answer."""

    def __init__(
        self,
        settings: DispatcherSettings,
        redis: Redis,
        *,
        endpoints: EndpointStore,
        deliveries: DeliveryStore,
        sender: Sender,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.endpoints = endpoints
        self.deliveries = deliveries
        self.sender = sender
        self.clock = clock

    async def probe_due(self, most: int = 20) -> int:
        """Probe up to `most` endpoints whose probe is due; return how many healed."""
        now = self.clock()
        healed = 0
        for raw in await self.redis.zrangebyscore(keys.PROBES, "-inf", now, start=0, num=most):
            endpoint_id = raw.decode()
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
            await self.redis.zadd(keys.PROBES, {endpoint_id: now + int(delay * 1000)})
        return healed

    async def _heal(self, endpoint_id: str) -> None:
        failing_since = await self.endpoints.heal(endpoint_id)
        released = await self.deliveries.release(endpoint_id, now_ms=self.clock())
        replayed = await self.deliveries.recover(endpoint_id, failing_since or 0, now_ms=self.clock())
        logger.warning(
            "endpoint %s healed: %d parked and %d failed messages sent again", endpoint_id, released, replayed
        )
