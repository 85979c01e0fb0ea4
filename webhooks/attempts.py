"""One attempt of one delivery: choose the secrets, send, decide, record, update the endpoint's health.

The dispatcher's delivery loop takes due deliveries and hands each to :meth:`Attempts.run`; the
retry decision is ``webhooks.retry``'s pure function, the write is one script (``RECORD``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from webhooks.alerts import MESSAGE_EXHAUSTED, MESSAGE_FAILING, MESSAGE_RECOVERED, Alert, alert, message_data
from webhooks.compression import text
from webhooks.deliveries import DeliveryStore
from webhooks.delivery_units import Delivery, Recorded
from webhooks.endpoints import EndpointStore
from webhooks.health import FAILING, Health
from webhooks.metrics import MetricsBuffer
from webhooks.models import Attempt, DeliveryStatus, Endpoint, RetiredSecret, from_ms, live_secrets
from webhooks.retry import Decision, classify
from webhooks.secrets import default_secrets
from webhooks.sender import Sender
from webhooks.settings import DispatcherSettings

logger = logging.getLogger(__name__)

S = DeliveryStatus


class Attempts:
    """Runs attempts for one dispatcher process (its stores, sender, health keeper and metrics)."""

    def __init__(
        self,
        settings: DispatcherSettings,
        redis: Redis,
        *,
        endpoints: EndpointStore,
        deliveries: DeliveryStore,
        sender: Sender,
        health: Health,
        metrics: MetricsBuffer,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.endpoints = endpoints
        self.deliveries = deliveries
        self.sender = sender
        self.health = health
        self.metrics = metrics
        self.clock = clock
        # tenant -> (current, retired, when read on this host's monotonic clock): re-read every
        # `default_secret_refresh_seconds`, so a rotation reaches every dispatcher within seconds.
        self._default_secrets: dict[str, tuple[str, list[RetiredSecret], float]] = {}
        self.sent = 0

    async def run(self, dlv: Delivery, endpoint: Endpoint | None) -> None:
        """Make one attempt of `dlv` (taken with `endpoint`, None if deleted) and record its outcome."""
        message = dlv.message
        if message is None:
            await self._note(dlv, "message expired")
            return
        if dlv.url:
            url = dlv.url
            secrets = await self._default_signing_secrets(dlv)
        else:
            if endpoint is None:  # deleted
                await self.deliveries.drop(dlv)
                return
            if not endpoint.enabled:
                if endpoint.disabled_reason == FAILING:
                    await self.health.park(dlv, endpoint)
                else:
                    await self._note(dlv, f"endpoint disabled ({endpoint.disabled_reason or 'by hand'})")
                return
            url = endpoint.url
            secrets = endpoint.signing_secrets(dlv.taken_ms)  # Redis's time: the rotation window's
        result = await self.sender.send(
            url,
            message_id=message.id,
            body=text(message.body),
            secrets=secrets,
            headers=endpoint.headers if endpoint is not None and not dlv.url else None,
        )
        self.sent += 1
        outcome = classify(
            result.status,
            attempt=dlv.attempt_number,
            schedule=self.settings.retry_schedule,
            retry_after=result.retry_after,
            retry_after_cap=self.settings.retry_after_cap,
            jitter=self.settings.jitter,
        )
        logger.info(
            "delivery %s attempt %d -> %s in %dms (%s)",
            dlv.id,
            dlv.attempts + 1,
            result.status or result.attempt.error,
            result.attempt.duration_ms,
            outcome.decision.value,
        )
        self.metrics.observe("wh_attempt_seconds", result.attempt.duration_ms / 1000)
        self.metrics.inc("wh_attempts_total", {"outcome": outcome.decision.value})
        delivered = outcome.decision is Decision.delivered
        alerts = self._alerts(dlv, endpoint, result.attempt, outcome.decision) if not dlv.url else []
        if delivered:
            status, delay_ms = S.succeeded, None
        elif outcome.decision is Decision.retry:
            assert outcome.delay is not None
            status, delay_ms = S.pending, int(outcome.delay * 1000)
        else:
            status, delay_ms = S.failed, None
        recorded = await self._record(
            dlv, result.attempt, status, delay_ms, health="ok" if delivered else "fail", alerts=alerts
        )
        if endpoint is not None and not dlv.url and recorded.done:
            await self.health.after_attempt(endpoint, outcome.decision, recorded)

    def _alerts(
        self, dlv: Delivery, endpoint: Endpoint | None, attempt: Attempt, decision: Decision
    ) -> list[tuple[str, Alert]]:
        """The alerts this attempt may raise (``webhooks.alerts``), each with when RECORD appends it."""
        if endpoint is None or dlv.message is None:
            return []

        def one(event_type: str) -> Alert:
            assert endpoint is not None and dlv.message is not None
            data = message_data(
                endpoint_id=endpoint.id,
                message_id=dlv.message_id,
                event_type=dlv.message.type,
                subject=dlv.message.subject,
                attempts=dlv.attempts + 1,
                last=attempt,
            )
            return alert(
                event_type, tenant=endpoint.tenant, endpoint_id=endpoint.id, data=data, at_ms=self.clock()
            )

        if decision is Decision.delivered:
            return [("a", one(MESSAGE_RECOVERED))] if dlv.alerted else []
        out: list[tuple[str, Alert]] = []
        if dlv.attempt_number == self.settings.failing_after:
            out.append(("a", one(MESSAGE_FAILING)))
        if decision is not Decision.retry:
            out.append(("x", one(MESSAGE_EXHAUSTED)))  # only if the delivery does end failed
        return out

    async def _default_signing_secrets(self, dlv: Delivery) -> list[str]:
        """The tenant default secret and those it replaced within 24 h (cached for a few seconds)."""
        cached = self._default_secrets.get(dlv.tenant)
        if cached is None or time.monotonic() - cached[2] > self.settings.default_secret_refresh_seconds:
            current, retired = await default_secrets(self.redis, dlv.tenant)
            cached = self._default_secrets[dlv.tenant] = (current, retired, time.monotonic())
        return live_secrets(cached[0], cached[1], dlv.taken_ms)  # Redis's time: the overlap's clock

    async def _record(
        self,
        dlv: Delivery,
        attempt: Attempt,
        status: DeliveryStatus,
        delay_ms: int | None = None,
        *,
        health: str = "",
        alerts: list[tuple[str, Alert]] | None = None,
    ) -> Recorded:
        """Write down an attempt that happened, riding out a Redis outage while our claim lasts.

        Giving up at once would leave the delivery claimed until the claim expires (timeout +
        15 s) and then send it again, a duplicate of an attempt the receiver may have accepted.
        Retries are fenced by the claim: an error can come after the write went through, and a
        claim that passed to another dispatcher is not ours to write over.
        """
        until = dlv.taken_mono + self.settings.claim_seconds  # the claim, measured on this host alone
        delay = 0.1
        fenced = False
        while True:
            try:
                return await self.deliveries.record(
                    dlv,
                    attempt,
                    status=status,
                    delay_ms=delay_ms,
                    fenced=fenced,
                    health=health,
                    alerts=alerts or (),
                )
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if time.monotonic() + delay >= until:
                    raise
                logger.warning("recording delivery %s failed (%s); retrying in %.1fs", dlv.id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                fenced = True

    async def _note(self, dlv: Delivery, why: str) -> None:
        """Fail a delivery that could not be sent at all; logged, but not counted as an attempt."""
        note = Attempt(at=from_ms(self.clock()), duration_ms=0, error=why)
        await self.deliveries.record(dlv, note, status=S.failed, delay_ms=None, sent=False)
