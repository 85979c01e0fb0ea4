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
from redis.exceptions import RedisError, ResponseError

from webhooks.attempts import Attempts
from webhooks.clock import RedisClock
from webhooks.consumers import Membership
from webhooks.deliveries import DeliveryStore
from webhooks.delivery_units import Delivery
from webhooks.endpoints import EndpointStore, endpoint_of
from webhooks.fanout import FanOut
from webhooks.health import Health
from webhooks.ids import new_id
from webhooks.metrics import MetricsBuffer
from webhooks.models import DeliveryStatus, Endpoint
from webhooks.outbox import OUTBOX_STREAM, MalformedEntry, OutboxEntry
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
            lane_gap_ms=int(settings.ordering_gap_seconds * 1000),
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
        self.attempts = Attempts(
            settings,
            redis,
            endpoints=self.endpoints,
            deliveries=self.deliveries,
            sender=self.sender,
            health=self.health,
            metrics=self.metrics,
            clock=self.clock,
        )
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._in_flight: dict[str, int] = defaultdict(int)
        self._total = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._maintenance_runs = 0
        self._recheck_own = True  # entries this consumer name read before a restart, if any

    @property
    def sent(self) -> int:
        """How many requests this dispatcher has sent."""
        return self.attempts.sent

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
            started = time.monotonic()
            reply = await self.redis.xreadgroup(
                self.settings.group,
                self.consumer,
                {OUTBOX_STREAM: "0" if own else ">"},
                count=self.settings.outbox_batch,
                block=None if own else 1000,
            )
            waited = time.monotonic() - started
            entries = [e for _stream, batch in reply or [] for e in batch if e[1]]
            if entries:
                await self.fan_out(entries)
            elif own:
                self._recheck_own = False
            if (
                entries
                and len(entries) < self.settings.outbox_batch
                and waited < self.settings.linger_seconds
            ):
                # The entries were waiting already (a flow, not one event): let the next batch grow.
                await asyncio.sleep(self.settings.linger_seconds)
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
        created = await self.fanout(parsed, ack=(self.settings.group, [e[0] for e in entries]))
        if created:
            self._wake.set()
        return created

    # ----- due deliveries -> attempts ----------------------------------------------------------

    async def _deliver_once(self) -> None:
        per_endpoint = self.settings.per_endpoint_in_flight
        if self._total >= self.settings.linger_in_flight and max(self._in_flight.values()) < per_endpoint:
            # Busy: attempts end one by one, and claiming for each alone costs a round trip each.
            # Not when an endpoint is at its limit: its freed slots would wait idle meanwhile.
            await asyncio.sleep(self.settings.linger_seconds)
        # Cleared before looking, not before sleeping: a wake-up that arrives while we look must
        # cut the next sleep short, or a fresh delivery waits for the idle poll.
        self._wake.clear()
        claim = await self.deliveries.claim(
            free=self.settings.max_in_flight - self._total,
            per_endpoint=per_endpoint,
            # a saturated endpoint's backlog waits in Redis while the others go on
            busy={ep: per_endpoint - n for ep, n in self._in_flight.items()},
            claim_ms=int(self.settings.claim_seconds * 1000),
        )
        for _endpoint_id, stored, taken in claim.batches:
            # Read with the claim: the URL and secrets of every attempt (None if it was deleted, or
            # for a one-subject hook, whose deliveries carry their URL).
            endpoint = endpoint_of(stored)
            for dlv in taken:
                self._start(dlv, endpoint)
        if claim.batches:
            return
        due_in = claim.next_due_in_ms
        wait = 1.0 if due_in is None else min(1.0, due_in / 1000)
        if due_in == 0:
            wait = self.settings.idle_poll_seconds  # due work exists but every such endpoint is saturated
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), wait)

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
            await self.attempts.run(dlv, endpoint)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The claim deadline makes the delivery due again; nothing is lost.
            logger.exception("delivery %s could not be processed; it will be retried", dlv.id)

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
