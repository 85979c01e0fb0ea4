"""The dispatcher against real aiohttp receivers on loopback, with scripted answers."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from pathlib import Path

import pytest
import standardwebhooks.webhooks as standard
import svix.webhooks as svix_webhooks
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.deadlines import wait_for
from tests.receiver import RawReceiver, Receiver, hang
from tests.redis_server import RedisServer
from tests.webhooks.helpers import FAST, deliveries_of, endpoint, publish, running_dispatcher
from webhooks import keys, verify
from webhooks.dispatcher import Dispatcher
from webhooks.endpoints import EndpointStore
from webhooks.models import DeliveryStatus


async def test_delivers_signed_and_accepted_by_the_official_verifiers(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    _, secret = await endpoint(redis, receiver.url)
    msg_id = await publish(redis)
    await wait_for(lambda: len(receiver.requests) == 1)
    got = receiver.requests[0]
    assert got.id == msg_id and got.headers["content-type"] == "application/json"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    event = verify(got.body, got.headers, secret)
    assert event.type == "execution.success" and event.data == {"id": "exec_1"}
    standard.Webhook(secret).verify(got.body, got.headers)
    svix_webhooks.Webhook(secret).verify(got.body, got.headers)


async def test_failing_receiver_gets_every_message_with_one_webhook_id(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    receiver.script = [500, (429, {"Retry-After": "0"}), 503, 200]
    ep_id, secret = await endpoint(redis, receiver.url)
    msg_id = await publish(redis)
    await wait_for(lambda: len(receiver.requests) == 4)
    assert set(receiver.ids()) == {msg_id}
    for r in receiver.requests:
        verify(r.body, r.headers, secret)

    async def settled() -> bool:
        page, _ = await deliveries_of(redis).page(ep_id, status=None, limit=10, cursor=None)
        return page[0].status is DeliveryStatus.succeeded

    await wait_for(settled)
    [view], _ = await deliveries_of(redis).page(ep_id, status=None, limit=10, cursor=None)
    assert [a.status_code for a in view.attempts] == [500, 429, 503, 200]
    assert view.attempts[0].error == "HTTP 500" and view.attempts[0].response_body == "answer 500"
    assert view.next_attempt_at is None and view.event_type == "execution.success"


async def test_retry_after_is_honoured_within_its_cap(redis: Redis, receiver: Receiver) -> None:
    receiver.script = [(429, {"Retry-After": "1"})]
    await endpoint(redis, receiver.url)
    async with running_dispatcher(redis):
        await publish(redis)
        await wait_for(lambda: len(receiver.requests) == 2, timeout=10)
    gap = receiver.requests[1].at - receiver.requests[0].at
    assert gap >= 0.9  # the schedule alone would have retried after 0.05 s


@pytest.mark.parametrize("hint", ["0", "Thu, 01 Jan 2015 00:00:00 GMT"])
async def test_a_retry_after_of_now_does_not_burn_the_schedule(
    redis: Redis, receiver: Receiver, hint: str
) -> None:
    # Regression (issue 14): a receiver always answering 429 with `Retry-After: 0` (or an HTTP date
    # in the past) got every retry within ~16 ms and the message ended failed.
    receiver.default = (429, {"Retry-After": hint})
    settings = FAST.__class__(**{**FAST.__dict__, "retry_schedule": (0.3, 0.3)})
    await endpoint(redis, receiver.url)
    async with running_dispatcher(redis, settings):
        await publish(redis)
        await wait_for(lambda: len(receiver.requests) == 3, timeout=10)
    gaps = [b.at - a.at for a, b in itertools.pairwise(receiver.requests)]
    assert all(gap >= 0.29 for gap in gaps), gaps  # the schedule's 0.3 s (no jitter), not the hint's 0


async def test_exhausted_then_retried_by_hand_with_the_same_webhook_id(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    receiver.default = 500
    ep_id, _ = await endpoint(redis, receiver.url)
    msg_id = await publish(redis)
    await wait_for(lambda: len(receiver.requests) == FAST.max_attempts)

    async def failed() -> bool:
        page, _ = await deliveries_of(redis).page(ep_id, status=DeliveryStatus.failed, limit=10, cursor=None)
        return len(page) == 1

    await wait_for(failed)
    receiver.default = 200
    assert await deliveries_of(redis).requeue(msg_id, ep_id)
    await wait_for(lambda: len(receiver.requests) == FAST.max_attempts + 1)
    assert set(receiver.ids()) == {msg_id}

    async def succeeded() -> bool:
        page, _ = await deliveries_of(redis).page(
            ep_id, status=DeliveryStatus.succeeded, limit=10, cursor=None
        )
        return len(page) == 1

    await wait_for(succeeded)


async def test_recover_sends_failed_messages_since_a_time(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    receiver.default = 500
    ep_id, _ = await endpoint(redis, receiver.url)
    since = int(time.time() * 1000)
    ids = [await publish(redis, subject=f"exec_{i}") for i in range(3)]
    store = deliveries_of(redis)

    async def all_failed() -> bool:
        page, _ = await store.page(ep_id, status=DeliveryStatus.failed, limit=10, cursor=None)
        return len(page) == 3

    await wait_for(all_failed, timeout=20)
    receiver.default = 200
    assert await store.recover(ep_id, since) == 3

    async def all_ok() -> bool:
        page, _ = await store.page(ep_id, status=DeliveryStatus.succeeded, limit=10, cursor=None)
        return len(page) == 3

    await wait_for(all_ok)
    assert {r.id for r in receiver.requests if True} == set(ids)


async def test_a_hang_past_the_timeout_is_a_failed_attempt(redis: Redis, receiver: Receiver) -> None:
    receiver.script = [hang]
    settings = FAST.__class__(**{**FAST.__dict__, "timeout": 0.5})
    ep_id, _ = await endpoint(redis, receiver.url)
    async with running_dispatcher(redis, settings):
        await publish(redis)
        await wait_for(lambda: len(receiver.requests) == 2, timeout=10)

        async def done() -> bool:
            page, _ = await deliveries_of(redis).page(
                ep_id, status=DeliveryStatus.succeeded, limit=1, cursor=None
            )
            return bool(page)

        await wait_for(done)
    [view], _ = await deliveries_of(redis).page(ep_id, status=None, limit=1, cursor=None)
    assert view.attempts[0].status_code is None and "timed out" in (view.attempts[0].error or "")


async def test_redirects_are_not_followed(redis: Redis, dispatcher: Dispatcher, receiver: Receiver) -> None:
    target = await Receiver().start()
    try:
        receiver.script = [(302, {"Location": target.url})]
        ep_id, _ = await endpoint(redis, receiver.url)
        await publish(redis)
        await wait_for(lambda: len(receiver.requests) == 2)
        [view], _ = await deliveries_of(redis).page(ep_id, status=None, limit=1, cursor=None)
        assert view.attempts[0].status_code == 302 and "not followed" in (view.attempts[0].error or "")
        assert target.requests == []
    finally:
        await target.stop()


async def test_rotation_signs_with_both_secrets(
    redis: Redis, dispatcher: Dispatcher, receiver: Receiver
) -> None:
    ep_id, old = await endpoint(redis, receiver.url)
    new = await EndpointStore(redis).rotate_secret(ep_id, tenant="a")
    await publish(redis)
    await wait_for(lambda: len(receiver.requests) == 1)
    got = receiver.requests[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    verify(got.body, got.headers, old)
    verify(got.body, got.headers, new)
    standard.Webhook(new).verify(got.body, got.headers)


async def test_a_black_hole_endpoint_does_not_delay_a_healthy_one(redis: Redis, receiver: Receiver) -> None:
    black_hole = await Receiver(default=hang).start()
    settings = FAST.__class__(**{**FAST.__dict__, "timeout": 30.0, "per_endpoint_in_flight": 5})
    try:
        hole_id, _ = await endpoint(redis, black_hole.url)
        await endpoint(redis, receiver.url)
        async with running_dispatcher(redis, settings):
            ids = [await publish(redis, subject=f"exec_{i}") for i in range(50)]
            # Every healthy delivery lands long before even one black-hole attempt could time out.
            await wait_for(lambda: set(ids) <= set(receiver.ids()), timeout=15)
            assert len(black_hole.requests) == 5  # the in-flight cap; the rest waits in Redis
            backlog = await redis.zcard(keys.due(hole_id))
    finally:
        await black_hole.stop()
    assert backlog == 50


async def test_two_dispatchers_share_the_work(redis: Redis, receiver: Receiver) -> None:
    receiver.default = web_ok_slowly
    await endpoint(redis, receiver.url)
    async with running_dispatcher(redis) as one, running_dispatcher(redis) as two:
        ids = [await publish(redis, subject=f"exec_{i}") for i in range(200)]
        await wait_for(lambda: set(ids) <= set(receiver.ids()), timeout=30)
        assert one.sent > 0 and two.sent > 0
    assert len(receiver.requests) == len(set(receiver.ids()))  # nobody delivered twice


async def web_ok_slowly(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(0.01)
    return web.Response(status=200)


async def test_dispatchers_keep_no_state_for_endpoints_they_are_done_with(
    redis: Redis, receiver: Receiver
) -> None:
    # Regression: looking at a busy endpoint left an in-flight counter behind for every endpoint seen.
    async with running_dispatcher(redis) as one, running_dispatcher(redis) as two:
        ids = [await publish(redis, subject=f"exec_{i}", hook={"url": receiver.url}) for i in range(50)]
        await wait_for(lambda: set(ids) <= set(receiver.ids()), timeout=20)
        await wait_for(lambda: not one._in_flight and not two._in_flight, timeout=5)


async def test_an_attempt_made_while_redis_goes_away_is_recorded_once_it_is_back(tmp_path: Path) -> None:
    # Regression: a dispatcher that could not write down an attempt (Redis gone just then) dropped
    # it; the delivery stayed claimed for timeout + 15 s and was then sent again, a duplicate of an
    # attempt the receiver had accepted. Now the record is retried while the claim lasts.
    server = RedisServer(data_dir=tmp_path / "aof", appendfsync="always")
    server.start()
    restarted: list[asyncio.Task[None]] = []

    async def crash_redis_then_accept(request: web.Request) -> web.StreamResponse:
        if not restarted:
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGKILL)
            server.proc.wait()

            async def back_soon() -> None:
                await asyncio.sleep(1.0)  # the outage the record has to ride out
                server.stop()
                await asyncio.to_thread(server.start)

            restarted.append(asyncio.create_task(back_soon()))
        return web.Response(status=200)

    receiver = await Receiver(default=crash_redis_then_accept).start()
    redis = Redis.from_url(server.url)
    try:
        ep_id, _ = await endpoint(redis, receiver.url)
        msg_id = await publish(redis)
        async with running_dispatcher(redis):

            async def recorded() -> bool:
                try:
                    status = await redis.hget(keys.delivery(keys.delivery_id(msg_id, ep_id)), "status")
                except (ConnectionError, OSError, RedisError):
                    return False
                return status == b"succeeded"

            await wait_for(recorded, timeout=15, interval=0.1)
        assert receiver.ids() == [msg_id]  # sent once, recorded once
    finally:
        await asyncio.gather(*restarted)
        await receiver.stop()
        await redis.aclose()
        server.stop()


async def test_the_dispatcher_sends_the_registered_url_unchanged(
    redis: Redis, dispatcher: Dispatcher
) -> None:
    raw = await RawReceiver().start()
    try:
        target = "/hook%2Fx?token=abc%2Fdef%28x%29&sig=a%3d%3D"
        _, secret = await endpoint(redis, raw.url + target)
        await publish(redis)
        await wait_for(lambda: len(raw.requests) == 1)
        [got] = raw.requests
        assert got.target == target.encode()
        standard.Webhook(secret).verify(got.body, got.headers)
        svix_webhooks.Webhook(secret).verify(got.body, got.headers)
    finally:
        await raw.stop()
