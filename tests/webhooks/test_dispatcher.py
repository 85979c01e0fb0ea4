"""The dispatcher against real aiohttp receivers on loopback, with scripted answers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path

import standardwebhooks.webhooks as standard
import svix.webhooks as svix_webhooks
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from orchestrator.dev.embedded import EmbeddedRedis
from tests.conftest import wait_for
from tests.receiver import Receiver, hang
from tests.webhooks.conftest import FAST, running_dispatcher
from webhooks import keys, verify
from webhooks.consumers import Membership
from webhooks.deliveries import DeliveryStore, Message
from webhooks.dispatcher import Dispatcher
from webhooks.endpoints import EndpointStore
from webhooks.ids import id_floor, new_id
from webhooks.models import Attempt, DeliveryStatus, from_ms
from webhooks.outbox import OUTBOX_STREAM


async def publish(
    redis: Redis,
    *,
    tenant: str = "a",
    type_: str = "execution.success",
    subject: str = "exec_1",
    flow: str = "echo",
    hook: dict | None = None,
) -> str:
    """Append one message to the outbox, as the orchestrator's transition script does."""
    msg_id = new_id("msg")
    body = json.dumps({"type": type_, "timestamp": "2026-11-29T00:00:00.000Z", "data": {"id": subject}})
    fields = {"id": msg_id, "type": type_, "tenant": tenant, "subject": subject, "flow": flow, "body": body}
    if hook is not None:
        fields["hook"] = json.dumps(hook)
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
    assert await deliveries_of(redis).requeue(msg_id, ep_id, now_ms=int(time.time() * 1000))
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
    assert await store.recover(ep_id, since, now_ms=int(time.time() * 1000)) == 3

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


async def test_outbox_is_trimmed_and_nothing_stays_pending(redis: Redis, receiver: Receiver) -> None:
    await endpoint(redis, receiver.url)
    async with running_dispatcher(redis):
        for i in range(20):
            await publish(redis, subject=f"exec_{i}")
        await wait_for(lambda: len(receiver.requests) == 20)

        async def trimmed() -> bool:
            return await redis.xlen(OUTBOX_STREAM) == 0

        await wait_for(trimmed, timeout=10)
    pending = await redis.xpending(OUTBOX_STREAM, "dispatchers")
    assert pending["pending"] == 0


async def test_an_entry_left_unacknowledged_by_a_dead_dispatcher_is_reclaimed(
    redis: Redis, receiver: Receiver
) -> None:
    # A dispatcher that read the entry and died before fanning it out.
    msg_id = await read_but_never_acked(redis, receiver.url, "dead-one")
    async with running_dispatcher(redis):
        await wait_for(lambda: receiver.ids() == [msg_id], timeout=15)


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


async def test_writes_racing_a_delete_do_not_resurrect_the_endpoint(redis: Redis) -> None:
    # Regression: a failure recorded after a delete recreated a partial hash that made GET answer 500.
    store = EndpointStore(redis)
    ep_id, _ = await endpoint(redis, "http://127.0.0.1:9/x")
    await store.delete(ep_id, tenant="a")
    assert await store.mark_failure(ep_id, 1) is None
    await store.disable(ep_id, reason="failing", probe_at_ms=1)
    await store.mark_success(ep_id)
    assert await redis.exists(keys.endpoint(ep_id)) == 0
    assert await redis.zscore(keys.PROBES, ep_id) is None
    created = await deliveries_of(redis).schedule([(new_id("msg"), ep_id, 1, "a", "")], due_ms=1)
    assert created == 0 and await redis.zcard(keys.due(ep_id)) == 0


async def test_disabling_by_hand_stops_automatic_healing(redis: Redis, receiver: Receiver) -> None:
    # Regression: PATCH enabled=false on an automatically disabled endpoint was undone by the prober.
    store = EndpointStore(redis)
    ep_id, _ = await endpoint(redis, receiver.url)
    await store.disable(ep_id, reason="failing", probe_at_ms=0)
    await store.update(ep_id, tenant="a", changes={"enabled": False})
    async with running_dispatcher(redis):
        await asyncio.sleep(2.5)  # a maintenance round (every 2 s) would have probed and healed it
    ep = await store.get(ep_id)
    assert not ep.enabled and ep.disabled_reason is None and receiver.requests == []


async def test_a_failed_delivery_keeps_its_message_body_as_long_as_itself(redis: Redis) -> None:
    # Regression: the body expired (14 days from creation) before the failed row (14 days from failure).
    store = DeliveryStore(redis, failed_ttl_ms=60_000, delivered_ttl_ms=60_000)
    ep_id, _ = await endpoint(redis, "http://127.0.0.1:9/x")
    from webhooks.deliveries import Message

    msg = Message(new_id("msg"), "execution.success", "a", "exec_1", "{}", 1)
    await store.save_messages([msg])
    await redis.pexpire(keys.message(msg.id), 1000)
    await store.schedule([(msg.id, ep_id, 1, "a", "")], due_ms=0)
    [dlv] = await store.take(ep_id, now_ms=10, n=1, claim_until_ms=20)
    from webhooks.models import Attempt

    await store.record(
        dlv,
        Attempt(at=datetime.now(UTC), duration_ms=1, status_code=500),
        status=DeliveryStatus.failed,
        next_ms=None,
    )
    assert await redis.pttl(keys.message(msg.id)) > 50_000


async def test_dispatchers_keep_no_state_for_endpoints_they_are_done_with(
    redis: Redis, receiver: Receiver
) -> None:
    # Regression: looking at a busy endpoint left an in-flight counter behind for every endpoint seen.
    async with running_dispatcher(redis) as one, running_dispatcher(redis) as two:
        ids = [await publish(redis, subject=f"exec_{i}", hook={"url": receiver.url}) for i in range(50)]
        await wait_for(lambda: set(ids) <= set(receiver.ids()), timeout=20)
        await wait_for(lambda: not one._in_flight and not two._in_flight, timeout=5)


async def test_a_note_for_an_unsendable_delivery_is_not_an_attempt(redis: Redis, receiver: Receiver) -> None:
    ep_id, _ = await endpoint(redis, receiver.url)
    store = deliveries_of(redis)
    msg_id = await publish(redis)
    from webhooks.deliveries import Message

    await store.save_messages([Message(msg_id, "execution.success", "a", "exec_1", "{}", 1)])
    await store.schedule([(msg_id, ep_id, 1, "a", "")], due_ms=0)
    await EndpointStore(redis).update(ep_id, tenant="a", changes={"enabled": False})
    async with running_dispatcher(redis):

        async def failed() -> bool:
            page, _ = await store.page(ep_id, status=DeliveryStatus.failed, limit=1, cursor=None)
            return bool(page)

        await wait_for(failed)
    [view], _ = await store.page(ep_id, status=None, limit=1, cursor=None)
    assert view.attempts[0].error == "endpoint disabled (by hand)" and view.attempts[0].status_code is None
    assert await redis.hget(keys.delivery(keys.delivery_id(msg_id, ep_id)), "attempts") == b"0"
    assert receiver.requests == []


async def test_a_restarted_dispatcher_takes_back_its_own_unacknowledged_entries(
    redis: Redis, receiver: Receiver
) -> None:
    # Regression: entries this consumer read before Redis (or the process) went away were left for
    # the idle reclaim (30 s) instead of being processed at once.
    msg_id = await read_but_never_acked(redis, receiver.url, "me")
    settings = FAST.__class__(**{**FAST.__dict__, "reclaim_idle_seconds": 3600.0})
    dispatcher = Dispatcher(settings, redis, default_events=("execution.success",), consumer="me")
    task = asyncio.get_running_loop().create_task(dispatcher.run())
    try:
        await wait_for(lambda: receiver.ids() == [msg_id], timeout=10)
    finally:
        await dispatcher.stop()
        await task


async def test_a_dead_dispatchers_entries_are_taken_over_once_its_beacon_lapses(
    redis: Redis, receiver: Receiver
) -> None:
    # Entries a crashed dispatcher held used to wait for the idle reclaim (30 s); now any member
    # that sees the dead one's liveness beacon gone claims them at once, then drops the dead member.
    msg_id = await read_but_never_acked(redis, receiver.url, "dead-one")
    settings = FAST.__class__(**{**FAST.__dict__, "reclaim_idle_seconds": 3600.0, "liveness_seconds": 0.6})
    async with running_dispatcher(redis, settings) as dispatcher:
        await wait_for(lambda: receiver.ids() == [msg_id], timeout=10)

        async def members() -> set[str]:
            return {m["name"].decode() for m in await redis.xinfo_consumers(OUTBOX_STREAM, "dispatchers")}

        await wait_for(lambda: _without(members(), "dead-one"), timeout=10)
        assert dispatcher.consumer in await members()
    # a clean stop leaves the group too, beacon and all
    assert await members() == set()
    assert await redis.exists(keys.dispatcher_alive(dispatcher.consumer)) == 0


async def _without(members: Awaitable[set[str]], name: str) -> bool:
    return name not in await members


async def test_a_live_dispatchers_entries_are_left_to_it(redis: Redis, receiver: Receiver) -> None:
    await read_but_never_acked(redis, receiver.url, "busy")
    await redis.set(keys.dispatcher_alive("busy"), b"1", px=60_000)  # slow, but alive
    settings = FAST.__class__(**{**FAST.__dict__, "reclaim_idle_seconds": 3600.0, "liveness_seconds": 0.6})
    async with running_dispatcher(redis, settings) as dispatcher:
        beacon = keys.dispatcher_alive(dispatcher.consumer)
        seen: list[int] = []

        async def beaten_three_times() -> bool:
            # each liveness pass refreshes our beacon (its TTL goes back up) after checking the others
            ttl = await redis.pttl(beacon)
            if not seen or ttl > seen[-1]:
                seen.append(ttl)
            else:
                seen[-1] = ttl
            return len(seen) > 3

        await wait_for(beaten_three_times, timeout=10)
    assert receiver.requests == []
    pending = await redis.xpending_range(OUTBOX_STREAM, "dispatchers", "-", "+", 10)
    assert [p["consumer"] for p in pending] == [b"busy"]


async def test_an_attempt_made_while_redis_goes_away_is_recorded_once_it_is_back(tmp_path: Path) -> None:
    # Regression: a dispatcher that could not write down an attempt (Redis gone just then) dropped
    # it; the delivery stayed claimed for timeout + 15 s and was then sent again, a duplicate of an
    # attempt the receiver had accepted. Now the record is retried while the claim lasts.
    server = EmbeddedRedis(data_dir=tmp_path / "aof", appendfsync="always")
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


async def test_listings_are_trimmed_past_the_retention_window(redis: Redis) -> None:
    ep_id, _ = await endpoint(redis, "https://example.com/hook")
    now = int(time.time() * 1000)
    old, new = id_floor("msg", now - 10_000), new_id("msg")
    for status in (None, DeliveryStatus.failed):
        await redis.zadd(keys.listing(ep_id, status), {old: 0, new: 0})
    removed = await deliveries_of(redis).trim_listings(older_than_ms=now - 5_000)
    assert removed == 2
    for status in (None, DeliveryStatus.failed):
        assert await redis.zrange(keys.listing(ep_id, status), 0, -1) == [new.encode()]


async def test_a_fenced_record_writes_once_and_only_while_the_claim_is_ours(redis: Redis) -> None:
    # Regression: a record retried after a Redis error that came after the write had gone
    # through counted the attempt twice (and could write over another dispatcher's newer claim).
    store = deliveries_of(redis)
    ep_id, _ = await endpoint(redis, "https://example.com/hook")
    now = int(time.time() * 1000)
    message = Message(
        id=new_id("msg"), type="execution.success", tenant="a", subject="exec_1", body="{}", created_ms=now
    )
    await store.save_messages([message])
    await store.schedule([(message.id, ep_id, now, "a", "")], due_ms=now)
    [dlv] = await store.take(ep_id, now_ms=now, n=1, claim_until_ms=now + 30_000)
    attempt = Attempt(at=from_ms(now), duration_ms=5, status_code=503)
    row = keys.delivery(dlv.id)
    for _ in range(2):  # the second is the retry of a write that had in fact gone through
        await store.record(dlv, attempt, status=DeliveryStatus.pending, next_ms=now + 1000, fenced=True)
    assert await redis.hget(row, "attempts") == b"1"
    assert await redis.llen(keys.delivery_log(dlv.id)) == 1
    # due again, taken by another dispatcher: a late write of ours changes nothing
    [theirs] = await store.take(ep_id, now_ms=now + 1000, n=1, claim_until_ms=now + 60_000)
    await store.record(dlv, attempt, status=DeliveryStatus.failed, next_ms=None, fenced=True)
    assert await redis.hget(row, "status") == b"pending" and await redis.hget(row, "attempts") == b"1"
    await store.record(theirs, attempt, status=DeliveryStatus.succeeded, next_ms=None, fenced=True)
    assert await redis.hget(row, "status") == b"succeeded"


async def test_a_member_is_removed_only_if_it_is_gone_and_holds_nothing(redis: Redis) -> None:
    # Regression: the removal was decided on an earlier snapshot; a live dispatcher that read
    # entries in between lost them from the pending list for good when it was removed.
    await redis.xgroup_create(OUTBOX_STREAM, "dispatchers", id="0", mkstream=True)
    await publish(redis)
    await redis.xreadgroup("dispatchers", "holder", {OUTBOX_STREAM: ">"}, count=10)
    for name in ("idle", "beaming"):  # members that hold nothing
        await redis.xgroup_createconsumer(OUTBOX_STREAM, "dispatchers", name)
    await redis.set(keys.dispatcher_alive("beaming"), b"1", px=60_000)
    membership = Membership(
        redis, group="dispatchers", consumer="me", liveness_seconds=1, reclaim_idle_seconds=30
    )
    assert not await membership.drop("holder")  # no beacon, but it holds an entry
    assert not await membership.drop("beaming")  # holds nothing, but alive
    assert await membership.drop("idle")
    members = {m["name"]: m["pending"] for m in await redis.xinfo_consumers(OUTBOX_STREAM, "dispatchers")}
    assert members == {b"holder": 1, b"beaming": 0}
