"""Shared by the webhooks tests: fast dispatcher settings, a running dispatcher, outbox and endpoint writers.

Plain strings stand for the orchestrator's event types: these tests run without the orchestrator
package (tests/test_layout.py checks that the strings match the orchestrator's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from webhooks.deliveries import DeliveryStore
from webhooks.delivery_units import Delivery
from webhooks.dispatcher import Dispatcher
from webhooks.endpoints import EndpointStore
from webhooks.ids import new_id
from webhooks.outbox import OUTBOX_STREAM
from webhooks.settings import DispatcherSettings

# What an endpoint without an `events` filter receives: every status change of a run (not progress).
DEFAULT_EVENTS = (
    "execution.queued",
    "execution.running",
    "execution.success",
    "execution.failed",
    "execution.cancelled",
)
PROGRESS = "execution.progress"

FAST = DispatcherSettings(
    timeout=2.0,
    retry_schedule=(0.05, 0.05, 0.05, 0.05),
    jitter=0.0,
    allow_private=True,
    reclaim_idle_seconds=1.0,
    probe_schedule=(0.1,),
    shutdown_grace_seconds=0.2,
)


@contextlib.asynccontextmanager
async def running_dispatcher(redis: Redis, settings: DispatcherSettings = FAST) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(settings, redis, default_events=DEFAULT_EVENTS, coalesced_events=(PROGRESS,))
    task = asyncio.get_running_loop().create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        await dispatcher.stop()
        await task


async def publish(
    redis: Redis,
    *,
    tenant: str = "a",
    type_: str = "execution.success",
    subject: str = "exec_1",
    flow: str = "echo",
    hook: dict | None = None,
    sequence: int = 0,
) -> str:
    """Append one message to the outbox, as the orchestrator's transition script does."""
    msg_id = new_id("msg")
    data = {"id": subject, "sequence": sequence} if sequence else {"id": subject}
    body = json.dumps({"type": type_, "timestamp": "2026-11-29T00:00:00.000Z", "data": data})
    fields = {"id": msg_id, "type": type_, "tenant": tenant, "subject": subject, "flow": flow, "body": body}
    if hook is not None:
        fields["hook"] = json.dumps(hook)
    if sequence:
        fields["seq"] = str(sequence)
    await redis.xadd(OUTBOX_STREAM, fields)
    return msg_id


async def endpoint(redis: Redis, url: str, **kw) -> tuple[str, str]:
    ep = await EndpointStore(redis).create(
        tenant=kw.pop("tenant", "a"),
        url=url,
        events=kw.pop("events", []),
        flow_ids=kw.pop("flow_ids", []),
        **kw,
    )
    return ep.id, ep.secret


async def read_but_never_acked(redis: Redis, url: str, consumer: str) -> str:
    """An endpoint at `url` and one message that the consumer `consumer` read and never acknowledged."""
    await endpoint(redis, url)
    await redis.xgroup_create(OUTBOX_STREAM, "dispatchers", id="0", mkstream=True)
    msg_id = await publish(redis)
    await redis.xreadgroup("dispatchers", consumer, {OUTBOX_STREAM: ">"}, count=10)
    return msg_id


def deliveries_of(redis: Redis) -> DeliveryStore:
    return DeliveryStore(redis, failed_ttl_ms=10**9, delivered_ttl_ms=10**9)


async def claim(store: DeliveryStore, n: int = 1, *, claim_ms: int) -> list[Delivery]:
    """Claim up to `n` due deliveries as a dispatcher does (the tests' endpoints are alone in Redis)."""
    taken = await store.claim(free=n, per_endpoint=n, busy={}, claim_ms=claim_ms)
    return [dlv for _, _, batch in taken.batches for dlv in batch]
