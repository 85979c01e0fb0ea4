"""Dispatcher: outbox -> fan-out -> per-endpoint due queues -> sender -> record / reschedule.

Any number of dispatchers share the work: the outbox is read through one consumer group (entries
a dead dispatcher left unacknowledged are reclaimed), and deliveries are claimed from Redis with a
deadline, so a delivery taken by a dispatcher that dies is simply due again later. Nothing waits
in process memory but the attempts in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from webhooks.clock import RedisClock
from webhooks.consumers import Membership
from webhooks.deliveries import Delivery, DeliveryStore
from webhooks.endpoints import EndpointStore
from webhooks.errors import EndpointNotFound
from webhooks.fanout import FanOut
from webhooks.health import FAILING, Health
from webhooks.ids import new_id
from webhooks.metrics import MetricsBuffer
from webhooks.models import Attempt, DeliveryStatus, Endpoint, from_ms
from webhooks.outbox import OUTBOX_STREAM, MalformedEntry, OutboxEntry
from webhooks.retry import Decision, classify
from webhooks.sender import Sender
from webhooks.settings import DispatcherSettings

logger = logging.getLogger(__name__)

S = DeliveryStatus


class Dispatcher:
    """One dispatcher process's loops; ``run()`` until ``stop()``."""

    def __init__(
        self,
        settings: DispatcherSettings,
        redis: Redis,
        *,
        default_events: Sequence[str],
        coalesced_events: Sequence[str] = (),
        consumer: str | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{new_id('c')[-6:]}"
        # Labels (an attempt's `at`) use Redis's time as measured here; deadlines are the scripts'.
        self.redis_clock = RedisClock()
        self.clock = clock or self.redis_clock.now_ms
        self.endpoints = EndpointStore(redis)
        self.deliveries = DeliveryStore(
            redis,
            failed_ttl_ms=settings.failed_retention_seconds * 1000,
            delivered_ttl_ms=settings.delivered_retention_seconds * 1000,
        )
        self.sender = Sender(settings)
        self.membership = Membership(
            redis,
            group=settings.group,
            consumer=self.consumer,
            liveness_seconds=settings.liveness_seconds,
            reclaim_idle_seconds=settings.reclaim_idle_seconds,
        )
        self.metrics = MetricsBuffer(redis)
        self.fanout = FanOut(
            settings,
            redis,
            endpoints=self.endpoints,
            deliveries=self.deliveries,
            default_events=default_events,
            coalesced_events=coalesced_events,
        )
        self.health = Health(
            settings,
            redis,
            endpoints=self.endpoints,
            deliveries=self.deliveries,
            sender=self.sender,
        )
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._in_flight: dict[str, int] = defaultdict(int)
        self._total = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._maintenance_runs = 0
        self._default_secrets: dict[str, str] = {}
        self._recheck_own = True  # entries this consumer name read before a restart, if any
        self.sent = 0

    # ----- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the outbox, delivery and maintenance loops until stopped."""
        await self._ensure_group()
        with contextlib.suppress(RedisError, OSError):
            await self.redis_clock.sync(self.redis)
        await self.membership.beat()  # before the first read makes this consumer a member
        beat = self.settings.liveness_seconds / 3
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._forever("outbox", self._outbox_once)),
            loop.create_task(self._forever("deliveries", self._deliver_once)),
            loop.create_task(self._every(2.0, "maintenance", self._maintain)),
            # The beacon has a loop of its own, doing nothing else and never backing off for longer
            # than its period, so neither slow work nor a run of errors lets it lapse while we live.
            loop.create_task(self._every(beat, "beacon", self.membership.beat, max_delay=beat)),
            loop.create_task(self._every(beat, "takeover", self._take_over)),
            loop.create_task(self.metrics.run(self._stop)),
            loop.create_task(self.redis_clock.run(self.redis, self._stop)),
        ]
        logger.info("dispatcher %s running", self.consumer)
        try:
            await asyncio.gather(*self._loops)
        except asyncio.CancelledError:
            pass
        finally:
            await self._shutdown()

    async def stop(self) -> None:
        """Stop the loops at their next step and let attempts in flight finish (they are recorded)."""
        self._stopping = True
        self._stop.set()
        self._wake.set()
        # Steps that run pipelines are never cut short (a half-run redis-py pipeline leaks its
        # connection); the outbox loop may be, as it blocks in a single XREADGROUP.
        if not self._loops:
            return
        outbox, others = self._loops[0], self._loops[1:]
        outbox.cancel()
        _, late = await asyncio.wait(others, timeout=3.0)
        for task in late:
            task.cancel()

    async def _shutdown(self) -> None:
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=self.settings.shutdown_grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.sender.close()
        try:
            await self.membership.leave()
        except Exception as exc:  # Redis gone: the beacon expires by itself
            logger.warning("could not leave the consumer group cleanly (%s)", exc)

    async def _ensure_group(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self.redis.xgroup_create(OUTBOX_STREAM, self.settings.group, id="0", mkstream=True)

    async def _forever(
        self, what: str, step: Callable[[], Awaitable[object]], max_delay: float = 5.0
    ) -> None:
        delay = min(0.1, max_delay)
        while not self._stopping:
            try:
                await step()
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if "NOGROUP" in str(exc):
                    await self._ensure_group()
                logger.warning("%s loop failed (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_delay)

    async def _every(
        self, seconds: float, what: str, step: Callable[[], Awaitable[object]], max_delay: float = 5.0
    ) -> None:
        async def once() -> None:
            await step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)

        await self._forever(what, once, max_delay)

    # ----- outbox -> deliveries ----------------------------------------------------------------

    async def _outbox_once(self) -> None:
        # After a failure (e.g. Redis restarted between our read and our ack), first take back our
        # own unacknowledged entries ("0"), rather than leave them for the idle reclaim (30 s).
        own = self._recheck_own
        try:
            reply = await self.redis.xreadgroup(
                self.settings.group,
                self.consumer,
                {OUTBOX_STREAM: "0" if own else ">"},
                count=self.settings.outbox_batch,
                block=None if own else 1000,
            )
            entries = [e for _stream, batch in reply or [] for e in batch if e[1]]
            if entries:
                await self.fan_out(entries)
            elif own:
                self._recheck_own = False
        except Exception:
            self._recheck_own = True
            raise

    async def fan_out(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> int:
        """Record the deliveries of raw outbox entries (see ``webhooks.fanout``), then acknowledge them.

        An entry that cannot be read is logged and acknowledged: retrying it could never succeed.
        """
        if not entries:
            return 0
        parsed: list[OutboxEntry] = []
        for entry_id, fields in entries:
            try:
                parsed.append(OutboxEntry.parse(entry_id, fields))
            except MalformedEntry as exc:
                logger.error("outbox entry %s skipped: %s", entry_id.decode(), exc)
        # Acknowledged means replicated (when asked): no webhook for a transition a replica may lack;
        # unconfirmed entries stay pending and are tried again.
        await self.settings.replication.fence(self.redis, what=f"{len(entries)} outbox entries")
        created = await self.fanout(parsed)
        await self.redis.xack(OUTBOX_STREAM, self.settings.group, *[e[0] for e in entries])
        if created:
            self._wake.set()
        return created

    # ----- due deliveries -> attempts ----------------------------------------------------------

    async def _deliver_once(self) -> None:
        # Cleared before looking, not before sleeping: a wake-up that arrives while we look must
        # cut the next sleep short, or a fresh delivery waits for the idle poll.
        self._wake.clear()
        started = 0
        for endpoint_id in await self.deliveries.due_endpoints():
            free_global = self.settings.max_in_flight - self._total
            if free_global <= 0:
                break
            free = self.settings.per_endpoint_in_flight - self._in_flight.get(endpoint_id, 0)
            if free <= 0:
                continue  # this endpoint is saturated: its backlog waits in Redis, others go on
            taken, _ = await self.deliveries.take(
                endpoint_id, n=min(free, free_global), claim_ms=int(self.settings.claim_seconds * 1000)
            )
            # One read of the endpoint for the whole batch (the URL and secrets of every attempt).
            endpoint = await self._endpoint_or_none(endpoint_id) if taken and not taken[0].url else None
            for dlv in taken:
                self._start(dlv, endpoint)
                started += 1
        if started:
            return
        due_in = await self.deliveries.next_due_in_ms()
        wait = 1.0 if due_in is None else min(1.0, due_in / 1000)
        if due_in == 0:
            wait = self.settings.idle_poll_seconds  # due work exists but every such endpoint is saturated
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

    async def _endpoint_or_none(self, endpoint_id: str) -> Endpoint | None:
        try:
            return await self.endpoints.get(endpoint_id)
        except EndpointNotFound:
            return None

    def _start(self, dlv: Delivery, endpoint: Endpoint | None) -> None:
        self._in_flight[dlv.endpoint_id] += 1
        self._total += 1
        task = asyncio.get_running_loop().create_task(self._attempt(dlv, endpoint))
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._in_flight[dlv.endpoint_id] -= 1
            if self._in_flight[dlv.endpoint_id] <= 0:
                del self._in_flight[dlv.endpoint_id]
            self._total -= 1
            self._wake.set()

        task.add_done_callback(done)

    async def _attempt(self, dlv: Delivery, endpoint: Endpoint | None) -> None:
        try:
            await self._attempt_unguarded(dlv, endpoint)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The claim deadline makes the delivery due again; nothing is lost.
            logger.exception("delivery %s could not be processed; it will be retried", dlv.id)

    async def _attempt_unguarded(self, dlv: Delivery, endpoint: Endpoint | None) -> None:
        message = dlv.message
        if message is None:
            await self._note(dlv, "message expired")
            return
        if dlv.url:
            url = dlv.url
            secret = self._default_secrets.get(dlv.tenant)
            if secret is None:  # a tenant's default secret never changes: read it once
                secret = self._default_secrets[dlv.tenant] = await self.endpoints.default_secret(dlv.tenant)
            secrets = [secret]
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
        result = await self.sender.send(url, message_id=message.id, body=message.body, secrets=secrets)
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
        if outcome.decision is Decision.delivered:
            await self._record(dlv, result.attempt, S.succeeded)
        elif outcome.decision is Decision.retry:
            assert outcome.delay is not None
            await self._record(dlv, result.attempt, S.pending, delay_ms=int(outcome.delay * 1000))
        else:
            await self._record(dlv, result.attempt, S.failed)
        if endpoint is not None:
            await self.health.after_attempt(endpoint, outcome.decision)

    async def _record(
        self, dlv: Delivery, attempt: Attempt, status: DeliveryStatus, delay_ms: int | None = None
    ) -> None:
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
                await self.deliveries.record(dlv, attempt, status=status, delay_ms=delay_ms, fenced=fenced)
                return
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

    # ----- maintenance -------------------------------------------------------------------------

    async def _maintain(self) -> None:
        async for entries in self.membership.stalled():
            await self.fan_out(entries)
        await self.membership.trim()
        if await self.health.probe_due():
            self._wake.set()  # released and replayed deliveries are due now
        self._maintenance_runs += 1
        if self._maintenance_runs % 300 == 1:  # about every ten minutes
            retained_from = self.clock() - self.settings.failed_retention_seconds * 1000
            await self.deliveries.trim_listings(older_than_ms=retained_from)

    async def _take_over(self) -> None:
        """Fan out what dispatchers whose beacon is gone left unacknowledged."""
        async for entries in self.membership.orphans():
            await self.fan_out(entries)
