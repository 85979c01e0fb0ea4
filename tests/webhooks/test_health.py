"""Endpoint health: 410 disables, failing endpoints are disabled, probed and healed, by-hand disables stay."""

from __future__ import annotations

import asyncio
import socket

from redis.asyncio import Redis

from tests.deadlines import wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import FAST, deliveries_of, endpoint, publish, running_dispatcher
from webhooks import verify
from webhooks.dispatcher import Dispatcher
from webhooks.endpoints import EndpointStore
from webhooks.models import DeliveryStatus

TYPES = ("execution.queued", "execution.running", "execution.success")


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
    await store.disable(await store.get(ep_id), reason="failing", probe_in_ms=0, now_ms=0)
    await store.update(ep_id, tenant="a", changes={"enabled": False})
    async with running_dispatcher(redis):
        await asyncio.sleep(2.5)  # a maintenance round (every 2 s) would have probed and healed it
    ep = await store.get(ep_id)
    assert not ep.enabled and ep.disabled_reason is None and receiver.requests == []


async def test_healing_replays_the_messages_that_failed_before_the_streak_was_noted(redis: Redis) -> None:
    # Regression (issue 14, case 6): retry schedule 0.3, 0.6; disabled after 2 s; probes every 0.5 s;
    # an endpoint refusing connections; five runs of three messages, 0.6 s apart; once disabled, a
    # receiver starts on that port. The heal replayed from `failing_since` (the first failure's time)
    # by message id, so the first run's messages, created before that failure and exhausted before
    # the disable, stayed failed (2 tries in 3 on the real stack; every time here, where the first
    # run's three messages are published together, before their first attempt).
    settings = FAST.__class__(
        **{
            **FAST.__dict__,
            "retry_schedule": (0.3, 0.6),
            "disable_after_seconds": 2.0,
            "probe_schedule": (0.5,),
        }
    )
    held = socket.socket()  # bound, not listening: connections are refused, and the port stays ours
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    ep_id, secret = await endpoint(redis, f"http://127.0.0.1:{port}/hook")
    store, deliveries = EndpointStore(redis), deliveries_of(redis)
    receiver = Receiver()
    try:
        async with running_dispatcher(redis, settings):
            first_run = [await publish(redis, subject="exec_0", type_=t) for t in TYPES]
            sent = list(first_run)

            async def first_run_exhausted() -> bool:
                page, _ = await deliveries.page(ep_id, status=DeliveryStatus.failed, limit=10, cursor=None)
                return set(first_run) <= {d.id for d in page}

            await wait_for(first_run_exhausted, timeout=10)
            assert (await store.get(ep_id)).enabled  # exhausted before the disable, as in the report
            for n in range(1, 5):
                await asyncio.sleep(0.6)  # the report's spacing of the runs
                sent += [await publish(redis, subject=f"exec_{n}", type_=t) for t in TYPES]

            async def disabled() -> bool:
                return (await store.get(ep_id)).disabled_reason == "failing"

            await wait_for(disabled, timeout=10)
            held.close()
            await receiver.start(port=port)
            await wait_for(lambda: set(sent) <= set(receiver.ids()), timeout=20)

            async def all_succeeded() -> bool:
                page, _ = await deliveries.page(
                    ep_id, status=DeliveryStatus.succeeded, limit=100, cursor=None
                )
                return {d.id for d in page} >= set(sent)

            await wait_for(all_succeeded, timeout=10)
        assert (await store.get(ep_id)).enabled
        for r in receiver.requests:
            verify(r.body, r.headers, secret)
    finally:
        held.close()
        await receiver.stop()
