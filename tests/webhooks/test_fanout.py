"""Fan-out: which endpoints get a message (filters, tenants, run hooks), coalescing, malformed entries."""

from __future__ import annotations

import asyncio
import time

import svix.webhooks as svix_webhooks
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tests.deadlines import wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import DEFAULT_EVENTS, FAST, endpoint, publish, running_dispatcher
from webhooks import keys
from webhooks.dispatcher import Dispatcher
from webhooks.endpoints import EndpointStore
from webhooks.ids import new_id
from webhooks.outbox import OUTBOX_STREAM


async def test_filters_by_event_type_flow_and_tenant(redis: Redis, dispatcher: Dispatcher) -> None:
    everything = await Receiver().start()
    only_failed = await Receiver().start()
    only_noop = await Receiver().start()
    progress = await Receiver().start()
    other_tenant = await Receiver().start()
    try:
        await endpoint(redis, everything.url)
        await endpoint(redis, only_failed.url, events=["execution.failed"])
        await endpoint(redis, only_noop.url, flow_ids=["noop"])
        await endpoint(redis, progress.url, events=["execution.progress"])
        other_id, _ = await endpoint(redis, other_tenant.url, tenant="b")
        await publish(redis, type_="execution.queued")
        await publish(redis, type_="execution.progress")
        await publish(redis, type_="execution.failed", flow="noop")
        await publish(redis, type_="execution.success")
        expected = {
            "everything": (everything, {"execution.queued", "execution.failed", "execution.success"}),
            "only_failed": (only_failed, {"execution.failed"}),
            "only_noop": (only_noop, {"execution.failed"}),
            "progress": (progress, {"execution.progress"}),
        }
        for receiver, types in expected.values():
            await wait_for(lambda r=receiver, t=types: set(r.types()) == t)

        async def all_fanned_out() -> bool:  # every outbox entry acknowledged: all deliveries exist
            pending = await redis.xpending(OUTBOX_STREAM, "dispatchers")
            groups = await redis.xinfo_groups(OUTBOX_STREAM)
            return pending["pending"] == 0 and groups[0]["entries-read"] == 4

        await wait_for(all_fanned_out)
        await wait_for(lambda: not dispatcher._in_flight)  # nothing more on the wire
        for receiver, types in expected.values():
            assert sorted(receiver.types()) == sorted(types)  # each exactly once
        assert other_tenant.requests == [] and await redis.zcard(keys.listing(other_id)) == 0
    finally:
        for r in (everything, only_failed, only_noop, progress, other_tenant):
            await r.stop()


async def test_progress_is_coalesced_per_run_but_status_never(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    await endpoint(redis, receiver.url, events=["execution.progress", "execution.success"])
    for _ in range(10):
        await publish(redis, type_="execution.progress", subject="exec_p")
    await publish(redis, type_="execution.progress", subject="exec_q")
    last = await publish(redis, type_="execution.success", subject="exec_p")
    await wait_for(lambda: last in receiver.ids())
    subjects = [(r.json["type"], r.json["data"]["id"]) for r in receiver.requests]
    assert subjects.count(("execution.progress", "exec_p")) == 1
    assert ("execution.progress", "exec_q") in subjects and ("execution.success", "exec_p") in subjects


async def test_a_run_webhook_is_signed_with_the_default_secret(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    secret = await EndpointStore(redis).default_secret("a")
    await publish(redis, type_="execution.queued", hook={"url": receiver.url})
    await publish(redis, type_="execution.progress", hook={"url": receiver.url})
    await publish(
        redis, type_="execution.success", hook={"url": receiver.url, "events": ["execution.success"]}
    )
    await publish(
        redis, type_="execution.failed", hook={"url": receiver.url, "events": ["execution.success"]}
    )
    await wait_for(lambda: len(receiver.requests) == 2)
    await asyncio.sleep(0.2)
    assert sorted(receiver.types()) == ["execution.queued", "execution.success"]  # no order promised
    for r in receiver.requests:
        svix_webhooks.Webhook(secret).verify(r.body, r.headers)


async def test_an_endpoint_created_after_an_event_does_not_get_it(redis: Redis, receiver: Receiver) -> None:
    old = new_id("msg")
    await redis.xadd(
        OUTBOX_STREAM,
        {"id": old, "type": "execution.success", "tenant": "a", "subject": "s", "flow": "f", "body": "{}"},
        id=f"{int(time.time() * 1000) - 60_000}-0",
    )
    await endpoint(redis, receiver.url)
    newer = await publish(redis)
    async with running_dispatcher(redis):  # it reads both entries only now, after the endpoint exists
        await wait_for(lambda: newer in receiver.ids())
    assert old not in receiver.ids()


async def test_a_malformed_entry_is_acknowledged_and_skipped(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    await endpoint(redis, receiver.url)
    # no subject, no body: what a broken producer might append
    await redis.xadd(OUTBOX_STREAM, {"id": new_id("msg"), "type": "execution.success", "tenant": "a"})
    good = await publish(redis)
    await wait_for(lambda: receiver.ids() == [good])

    async def all_acknowledged() -> bool:
        pending = await redis.xpending(OUTBOX_STREAM, "dispatchers")
        [group] = await redis.xinfo_groups(OUTBOX_STREAM)
        return pending["pending"] == 0 and group["entries-read"] == 2

    await wait_for(all_acknowledged)
    assert receiver.ids() == [good]


async def test_an_entry_is_acknowledged_only_with_the_deliveries_it_made(redis: Redis) -> None:
    # Issue 15: a fan-out's writes and its acknowledgement are one step. When a write fails, the
    # entry stays pending (it is fanned out again later), and nothing is made twice.
    good_id, _ = await endpoint(redis, "http://127.0.0.1:9/good")
    other_id, _ = await endpoint(redis, "http://127.0.0.1:9/other")
    await publish(redis, type_="execution.success")
    await redis.set(keys.listing(good_id), "not a sorted set")  # its delivery cannot be written
    dispatcher = Dispatcher(FAST, redis, default_events=DEFAULT_EVENTS)
    await redis.xgroup_create(OUTBOX_STREAM, FAST.group, id="0", mkstream=True)
    reply = await redis.xreadgroup(FAST.group, "c1", {OUTBOX_STREAM: ">"}, count=10)
    entries = reply[0][1]
    try:
        await dispatcher.fan_out(entries)
    except ResponseError:
        pass
    else:
        raise AssertionError("the failing write was not reported")
    assert (await redis.xpending(OUTBOX_STREAM, FAST.group))["pending"] == 1
    assert not await redis.exists(keys.delivery(keys.delivery_id(entries[0][1][b"id"].decode(), good_id)))
    await redis.delete(keys.listing(good_id))
    assert await dispatcher.fan_out(entries) >= 1  # what the failure left out
    assert (await redis.xpending(OUTBOX_STREAM, FAST.group))["pending"] == 0
    assert await dispatcher.fan_out(entries) == 0  # a repeat (a reclaimed entry) makes nothing twice
    for ep_id in (good_id, other_id):
        assert await redis.zcard(keys.listing(ep_id)) == 1
