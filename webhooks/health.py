"""Endpoint health: the failure streak, disabling, parking, probing, healing and the replay it owes.

An endpoint that answers 410 Gone is disabled for good. One that fails without a single success for
``disable_after_seconds`` is disabled *for failing*: its deliveries are parked (no attempt spent)
and a signed ``webhook.test`` probe goes out on ``probe_schedule``; the first 2xx (of a probe, or of
an attempt that was in flight when it was disabled) heals it: re-enabled, its parked deliveries
released at once, and every message that *failed* since it started failing sent again, whenever
that message was created (issue 14: the first casualties of a streak were created before its first
failure was noted, and a replay by creation time missed them). The streak's start and each failure
are written with Redis's clock in the script that records the attempt (``scripts.RECORD``); the
disable and the heal are scripts too, each appending its alert (``webhooks.alerts``).
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from webhooks import keys
from webhooks.compression import text
from webhooks.deliveries import DeliveryStore
from webhooks.delivery_units import Delivery, Recorded, test_message
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

    @property
    def _claim_ms(self) -> int:
        return int(self.settings.claim_seconds * 1000)

    async def park(self, dlv: Delivery, endpoint: Endpoint) -> None:
        """Hold a delivery of an endpoint disabled for failing until its next probe (no attempt spent)."""
        await self.deliveries.postpone(dlv, min_ms=1000)

    async def after_attempt(self, endpoint: Endpoint, decision: Decision, recorded: Recorded) -> None:
        """Act on what recording one attempt (ending with `decision`) found about the endpoint."""
        if decision is Decision.disable:
            logger.warning("endpoint %s answered 410 Gone: disabled", endpoint.id)
            await self.endpoints.disable(endpoint, reason=GONE, probe_in_ms=None, now_ms=recorded.now_ms)
            return
        if recorded.heal:  # a success while disabled for failing: it is back
            await self.heal(endpoint, now_ms=recorded.now_ms)
            return
        since = recorded.failing_since
        if since is None or recorded.now_ms - since < self.settings.disable_after_seconds * 1000:
            return
        disabled = await self.endpoints.disable_failing(
            endpoint,
            failing_since=since,
            now_ms=recorded.now_ms,
            after_ms=int(self.settings.disable_after_seconds * 1000),
            first_probe_ms=int(self.settings.probe_schedule[0] * 1000),
        )
        if disabled:
            logger.warning(
                "endpoint %s failing since %s: disabled", endpoint.id, format_timestamp(from_ms(since))
            )

    async def probe_due(self, most: int = 20) -> int:
        """Probe up to `most` endpoints whose probe is due, then owed replays; return how many healed."""
        due, now = await self.endpoints.probes_due(limit=most, claim_ms=self._claim_ms)
        healed = 0
        for endpoint_id in due:
            try:
                endpoint = await self.endpoints.get(endpoint_id)
            except EndpointNotFound:
                await self.redis.zrem(keys.PROBES, endpoint_id)
                continue
            message = test_message(endpoint, now_ms=now, note="probe: is this endpoint back?")
            result = await self.sender.send(
                endpoint.url,
                message_id=message.id,
                body=text(message.body),
                secrets=endpoint.signing_secrets(now),
                headers=endpoint.headers,
            )
            if result.status is not None and 200 <= result.status < 300:
                healed += await self.heal(endpoint, now_ms=now)
                continue
            tries = await self.endpoints.count_probe(endpoint_id)
            delay = self.settings.probe_schedule[min(tries, len(self.settings.probe_schedule) - 1)]
            await self.endpoints.probe_in(endpoint_id, int(delay * 1000))
        await self.replay_due(most)
        return healed

    async def heal(self, endpoint: Endpoint, *, now_ms: int) -> bool:
        """Heal `endpoint` (if still disabled for failing) and replay what it owes; True if healed."""
        if not await self.endpoints.heal(endpoint, now_ms=now_ms):
            return False
        await self.replay_due()
        return True

    async def replay_due(self, most: int = 20) -> int:
        """Release the parked deliveries of healed endpoints and send again every message that failed
        since they started failing; return how many messages went again."""
        total = 0
        for endpoint_id, since in await self.endpoints.replays_due(limit=most, claim_ms=self._claim_ms):
            if since is None:  # deleted since it healed
                await self.endpoints.replay_done(endpoint_id)
                continue
            released = await self.deliveries.release(endpoint_id)
            replayed = await self.deliveries.replay_failed(endpoint_id, since)
            await self.endpoints.replay_done(endpoint_id)
            total += released + replayed
            logger.warning(
                "endpoint %s healed: %d parked and %d failed messages sent again",
                endpoint_id,
                released,
                replayed,
            )
        return total
