"""Endpoint health: 410 disables, failing endpoints are disabled, probed and healed, by-hand disables stay."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from tests.deadlines import wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import FAST, deliveries_of, endpoint, publish, running_dispatcher
from webhooks.dispatcher import Dispatcher
from webhooks.endpoints import EndpointStore
from webhooks.models import DeliveryStatus


async def test_410_disables_the_endpoint(redis: Redis, dispatcher: Dispatcher, receiver: Receiver) -> None:
    receiver.script = [410]
    ep_id, _ = await endpoint(redis, receiver.url)
    await publish(redis)

    async def disabled() -> bool:
        ep = await EndpointStore(redis).get(ep_id)
        return not ep.enabled and ep.disabled_reason == "gone"

    await wait_for(disabled)
    await publish(redis, subject="exec_2")
    await asyncio.sleep(0.3)  # give a wrong implementation the chance to send to a disabled endpoint
    assert len(receiver.requests) == 1


async def test_disabled_after_failing_then_healed_by_a_probe_and_replayed(
    redis: Redis, receiver: Receiver
) -> None:
    settings = FAST.__class__(**{**FAST.__dict__, "disable_after_seconds": 0.0, "retry_schedule": (0.05,)})
    receiver.default = 500
    ep_id, _ = await endpoint(redis, receiver.url)
    async with running_dispatcher(redis, settings):
        first = await publish(redis, subject="exec_1")

        async def disabled() -> bool:
            ep = await EndpointStore(redis).get(ep_id)
            return ep.disabled_reason == "failing"

        await wait_for(disabled)
        during = await publish(redis, subject="exec_2")  # recorded as failed while disabled
        receiver.default = 200

        async def healed() -> bool:
            return (await EndpointStore(redis).get(ep_id)).enabled

        await wait_for(healed, timeout=15)
        await wait_for(lambda: {first, during} <= set(receiver.ids()), timeout=15)
    assert "webhook.test" in receiver.types()  # the probe


async def test_endpoint_disabled_by_hand_gets_nothing(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    ep_id, _ = await endpoint(redis, receiver.url)
    await EndpointStore(redis).update(ep_id, tenant="a", changes={"enabled": False})
    await publish(redis)
    await asyncio.sleep(0.3)
    assert receiver.requests == []


async def test_a_heal_sends_the_backlog_that_waited_while_disabled(redis: Redis, receiver: Receiver) -> None:
    # Regression: deliveries that came due while the endpoint was disabled were failed for good and
    # the heal replayed only messages created after the disable.
    settings = FAST.__class__(**{**FAST.__dict__, "disable_after_seconds": 0.0, "probe_schedule": (1.0,)})
    receiver.script = [500]
    ep_id, _ = await endpoint(redis, receiver.url)
    async with running_dispatcher(redis, settings):
        first = await publish(redis)
        await wait_for(lambda: receiver.ids() == [first])
        await wait_for(lambda: receiver.ids().count(first) == 2, timeout=15)  # after the heal
    store = deliveries_of(redis)
    page, _ = await store.page(ep_id, status=None, limit=5, cursor=None)
    assert page[0].status is DeliveryStatus.succeeded
    assert [a.status_code for a in page[0].attempts] == [500, 200]  # parking cost no attempt


async def test_disabling_by_hand_stops_automatic_healing(redis: Redis, receiver: Receiver) -> None:
    # Regression: PATCH enabled=false on an automatically disabled endpoint was undone by the prober.
    store = EndpointStore(redis)
    ep_id, _ = await endpoint(redis, receiver.url)
    await store.disable(ep_id, reason="failing", probe_in_ms=0)
    await store.update(ep_id, tenant="a", changes={"enabled": False})
    async with running_dispatcher(redis):
        await asyncio.sleep(2.5)  # a maintenance round (every 2 s) would have probed and healed it
    ep = await store.get(ep_id)
    assert not ep.enabled and ep.disabled_reason is None and receiver.requests == []
