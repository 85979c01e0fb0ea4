"""Operational events: signed like any message, sent to the tenant's subscribers (never to the endpoint
they are about), and kept in the endpoint's event log."""

from __future__ import annotations

import asyncio

import standardwebhooks.webhooks as standard
import svix.webhooks as svix_webhooks
from redis.asyncio import Redis

from tests.deadlines import wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import FAST, claim, deliveries_of, endpoint, publish, running_dispatcher
from webhooks import keys
from webhooks.alerts import OPERATIONAL_EVENTS, event_page
from webhooks.delivery_units import Message
from webhooks.endpoints import EndpointStore
from webhooks.ids import new_id
from webhooks.models import Attempt, DeliveryStatus, from_ms

ALL = [*OPERATIONAL_EVENTS, "execution.success"]


async def log_types(redis: Redis, endpoint_id: str) -> list[str]:
    """The endpoint's event log, oldest first."""
    items, _ = await event_page(redis, endpoint_id, limit=100, cursor=None)
    return [i["type"] for i in reversed(items)]


def about(receiver: Receiver, endpoint_id: str) -> list[str]:
    """The operational event types `receiver` got about `endpoint_id`, in arrival order."""
    return [
        r.json["type"]
        for r in receiver.requests
        if r.json["type"] in OPERATIONAL_EVENTS and r.json["data"]["endpointId"] == endpoint_id
    ]


async def test_failing_exhausted_and_recovered_reach_subscribers_and_the_log(redis: Redis) -> None:
    settings = FAST.__class__(**{**FAST.__dict__, "failing_after": 2, "retry_schedule": (0.05, 0.05, 0.05)})
    failing = await Receiver(default=500).start()
    watcher = await Receiver().start()
    try:
        # The failing endpoint subscribes to operational events too: none about itself may reach it.
        ep_id, _ = await endpoint(redis, failing.url, events=ALL)
        watch_id, watch_secret = await endpoint(redis, watcher.url, events=list(OPERATIONAL_EVENTS))
        async with running_dispatcher(redis, settings):
            msg_id = await publish(redis, subject="exec_7")
            await wait_for(
                lambda: about(watcher, ep_id) == ["message.attempt.failing", "message.attempt.exhausted"]
            )
            failing.default = 200
            assert await deliveries_of(redis).requeue(msg_id, ep_id)
            await wait_for(lambda: "message.attempt.recovered" in about(watcher, ep_id))
        assert about(failing, ep_id) == [] and about(watcher, watch_id) == []
        assert len(failing.requests) == 5 and failing.types() == ["execution.success"] * 5
        for r in watcher.requests:
            standard.Webhook(watch_secret).verify(r.body, r.headers)
            svix_webhooks.Webhook(watch_secret).verify(r.body, r.headers)
        exhausted = next(r.json for r in watcher.requests if r.json["type"] == "message.attempt.exhausted")
        data = exhausted["data"]
        assert data["messageId"] == msg_id and data["eventType"] == "execution.success"
        assert data["runId"] == "exec_7" and data["attempts"] == 4
        assert data["lastAttempt"]["statusCode"] == 500 and "responseBody" not in data["lastAttempt"]
        assert await log_types(redis, ep_id) == [
            "message.attempt.failing",
            "message.attempt.exhausted",
            "message.attempt.recovered",
        ]
        # What went out and what the log keeps are one event: same id, same body.
        items, _ = await event_page(redis, ep_id, limit=10, cursor=None)
        sent = {r.id: r.json for r in watcher.requests}
        for item in items:
            assert sent[item["id"]] == {k: item[k] for k in ("type", "timestamp", "data")}
    finally:
        await failing.stop()
        await watcher.stop()


async def test_disabled_then_healed_is_told_with_the_streak_start(redis: Redis) -> None:
    settings = FAST.__class__(**{**FAST.__dict__, "disable_after_seconds": 0.0, "retry_schedule": (0.05,)})
    failing = await Receiver(default=500).start()
    watcher = await Receiver().start()
    try:
        ep_id, _ = await endpoint(redis, failing.url)
        await endpoint(redis, watcher.url, events=["endpoint.disabled", "endpoint.enabled"])
        async with running_dispatcher(redis, settings):
            await publish(redis)
            await wait_for(lambda: about(watcher, ep_id) == ["endpoint.disabled"])
            failing.default = 200
            await wait_for(
                lambda: about(watcher, ep_id) == ["endpoint.disabled", "endpoint.enabled"], timeout=15
            )
        disabled, enabled = (r.json["data"] for r in watcher.requests)
        assert disabled["reason"] == "failing" and disabled["failingSince"] is not None
        assert enabled["reason"] == "healed" and enabled["failingSince"] == disabled["failingSince"]
        assert await log_types(redis, ep_id) == ["endpoint.disabled", "endpoint.enabled"]
    finally:
        await failing.stop()
        await watcher.stop()


async def test_by_hand_and_gone_are_told_once_each(redis: Redis, receiver: Receiver) -> None:
    store = EndpointStore(redis)
    gone = await Receiver(default=410).start()
    try:
        ep_id, _ = await endpoint(redis, gone.url)
        other_id, _ = await endpoint(redis, "http://127.0.0.1:9/")
        await endpoint(redis, receiver.url, events=["endpoint.disabled", "endpoint.enabled"])
        await store.update(other_id, tenant="a", changes={"enabled": False})
        await store.update(other_id, tenant="a", changes={"enabled": False})  # no change: no event
        await store.update(other_id, tenant="a", changes={"enabled": True})
        async with running_dispatcher(redis):
            await publish(redis)
            await wait_for(lambda: len(receiver.requests) == 3)
            await asyncio.sleep(0.2)  # room for a wrong implementation to send more
        reasons = {
            (r.json["type"], r.json["data"]["endpointId"], r.json["data"]["reason"])
            for r in receiver.requests
        }
        assert reasons == {
            ("endpoint.disabled", other_id, "manual"),
            ("endpoint.enabled", other_id, "manual"),
            ("endpoint.disabled", ep_id, "gone"),
        }
        assert len(receiver.requests) == 3
    finally:
        await gone.stop()


async def test_the_event_log_pages_newest_first_and_is_capped(redis: Redis) -> None:
    store = EndpointStore(redis)
    ep_id, _ = await endpoint(redis, "http://127.0.0.1:9/")
    for n in range(5):
        await store.update(ep_id, tenant="a", changes={"enabled": n % 2 == 1})
    first, cursor = await event_page(redis, ep_id, limit=2, cursor=None)
    second, cursor2 = await event_page(redis, ep_id, limit=2, cursor=cursor)
    third, cursor3 = await event_page(redis, ep_id, limit=2, cursor=cursor2)
    ids = [i["id"] for i in first + second + third]
    assert len(ids) == 5 and ids == sorted(ids, reverse=True) and cursor3 is None
    assert [i["type"] for i in first] == ["endpoint.disabled", "endpoint.enabled"]
    await store.delete(ep_id, tenant="a")
    assert await redis.exists(keys.endpoint_events(ep_id)) == 0


async def test_an_attempt_taken_before_a_heal_that_fails_after_it_is_replayed_not_failed(
    redis: Redis,
) -> None:
    # Issue 14: "whatever its timing against ... the probe". An attempt in flight across the heal
    # belongs to the streak the heal ended: its failure starts no new streak and does not end it failed.
    store, deliveries = EndpointStore(redis), deliveries_of(redis)
    ep_id, _ = await endpoint(redis, "http://127.0.0.1:9/")
    msg_id = new_id("msg")
    await deliveries.save_messages([Message(msg_id, "execution.success", "a", "exec_1", "{}", 0)])
    await deliveries.schedule([(msg_id, ep_id, 0, "a", "")])
    [dlv] = await claim(deliveries, claim_ms=10_000)
    await store.disable(await store.get(ep_id), reason="failing", probe_in_ms=60_000, now_ms=0)
    assert await store.heal(await store.get(ep_id), now_ms=0)
    attempt = Attempt(at=from_ms(0), status_code=500, duration_ms=1, error="HTTP 500")
    recorded = await deliveries.record(
        dlv, attempt, status=DeliveryStatus.failed, delay_ms=None, health="fail"
    )
    assert recorded.done and recorded.failing_since is None
    row = await redis.hgetall(keys.delivery(dlv.id))
    assert row[b"status"] == b"pending" and await redis.zscore(keys.due(ep_id), dlv.id) is not None
    assert (await store.get(ep_id)).failing_since is None
