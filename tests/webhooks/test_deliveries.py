"""The delivery store: fenced records, listing trims, message retention, notes, writes racing a delete."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from redis.asyncio import Redis

from tests.deadlines import wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import claim, deliveries_of, endpoint, publish, running_dispatcher
from webhooks import keys
from webhooks.deliveries import DeliveryStore
from webhooks.delivery_units import Message
from webhooks.endpoints import EndpointStore
from webhooks.ids import id_floor, new_id
from webhooks.models import Attempt, DeliveryStatus, from_ms


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
    await store.schedule([(message.id, ep_id, now, "a", "")])
    [dlv] = await claim(store, claim_ms=30_000)
    attempt = Attempt(at=from_ms(now), duration_ms=5, status_code=503)
    row = keys.delivery(dlv.id)
    for _ in range(2):  # the second is the retry of a write that had in fact gone through
        await store.record(dlv, attempt, status=DeliveryStatus.pending, delay_ms=0, fenced=True)
    assert await redis.hget(row, "attempts") == b"1"
    assert await redis.llen(keys.delivery_log(dlv.id)) == 1
    # due again (at once), taken by another dispatcher: a late write of ours changes nothing
    [theirs] = await claim(store, claim_ms=60_000)
    await store.record(dlv, attempt, status=DeliveryStatus.failed, delay_ms=None, fenced=True)
    assert await redis.hget(row, "status") == b"pending" and await redis.hget(row, "attempts") == b"1"
    await store.record(theirs, attempt, status=DeliveryStatus.succeeded, delay_ms=None, fenced=True)
    assert await redis.hget(row, "status") == b"succeeded"


async def test_listings_are_trimmed_past_the_retention_window(redis: Redis) -> None:
    ep_id, _ = await endpoint(redis, "https://example.com/hook")
    now = int(time.time() * 1000)
    old, new = id_floor("msg", now - 10_000), new_id("msg")
    for status in (None, DeliveryStatus.failed):
        await redis.zadd(keys.listing(ep_id, status), {old: 0, new: 0})
    await redis.zadd(keys.failed_at(ep_id), {old: now - 10_000, new: now})  # by when they failed
    removed = await deliveries_of(redis).trim_listings(older_than_ms=now - 5_000)
    assert removed == 3
    for status in (None, DeliveryStatus.failed):
        assert await redis.zrange(keys.listing(ep_id, status), 0, -1) == [new.encode()]
    assert await redis.zrange(keys.failed_at(ep_id), 0, -1) == [new.encode()]


async def test_a_failed_delivery_keeps_its_message_body_as_long_as_itself(redis: Redis) -> None:
    # Regression: the body expired (14 days from creation) before the failed row (14 days from failure).
    store = DeliveryStore(redis, failed_ttl_ms=60_000, delivered_ttl_ms=60_000)
    ep_id, _ = await endpoint(redis, "http://127.0.0.1:9/x")
    from webhooks.delivery_units import Message

    msg = Message(new_id("msg"), "execution.success", "a", "exec_1", "{}", 1)
    await store.save_messages([msg])
    await redis.pexpire(keys.message(msg.id), 1000)
    await store.schedule([(msg.id, ep_id, 1, "a", "")])
    [dlv] = await claim(store, claim_ms=10)
    from webhooks.models import Attempt

    await store.record(
        dlv,
        Attempt(at=datetime.now(UTC), duration_ms=1, status_code=500),
        status=DeliveryStatus.failed,
        delay_ms=None,
    )
    assert await redis.pttl(keys.message(msg.id)) > 50_000


async def test_a_note_for_an_unsendable_delivery_is_not_an_attempt(redis: Redis, receiver: Receiver) -> None:
    ep_id, _ = await endpoint(redis, receiver.url)
    store = deliveries_of(redis)
    msg_id = await publish(redis)
    from webhooks.delivery_units import Message

    await store.save_messages([Message(msg_id, "execution.success", "a", "exec_1", "{}", 1)])
    await store.schedule([(msg_id, ep_id, 1, "a", "")])
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


async def test_writes_racing_a_delete_do_not_resurrect_the_endpoint(redis: Redis) -> None:
    # Regression: a failure recorded after a delete recreated a partial hash that made GET answer 500.
    store = EndpointStore(redis)
    ep_id, _ = await endpoint(redis, "http://127.0.0.1:9/x")
    snapshot = await store.get(ep_id)
    await store.delete(ep_id, tenant="a")
    await store.disable(snapshot, reason="gone", probe_in_ms=1, now_ms=1)
    assert not await store.disable_failing(snapshot, failing_since=0, now_ms=1, after_ms=0, first_probe_ms=1)
    assert not await store.heal(snapshot, now_ms=1)
    assert await redis.exists(keys.endpoint(ep_id), keys.endpoint_events(ep_id), keys.REPLAYS) == 0
    assert await redis.zscore(keys.PROBES, ep_id) is None
    created = await deliveries_of(redis).schedule([(new_id("msg"), ep_id, 1, "a", "")])
    assert created == 0 and await redis.zcard(keys.due(ep_id)) == 0


async def test_one_claim_takes_from_every_due_endpoint_within_its_free_slots(redis: Redis) -> None:
    # Issue 15: the dispatcher's one round trip per loop. Each endpoint gives at most its free slots,
    # the claim at most its total; rows come with their message and endpoint; a row whose endpoint
    # was deleted leaves the queue; what is left says when it is due.
    store = deliveries_of(redis)
    quiet_id, busy_id, gone_id = [(await endpoint(redis, f"http://127.0.0.1:9/{n}"))[0] for n in "abc"]
    messages = [Message(new_id("msg"), "execution.success", "a", f"exec_{i}", "{}", 1) for i in range(4)]
    await store.save_messages(messages)
    await store.schedule(
        [(m.id, ep, 1, "a", "") for m in messages for ep in (quiet_id, busy_id, gone_id)]
        + [(messages[0].id, "hook_exec_0", 1, "a", "http://127.0.0.1:9/hook")]
    )
    taken = await store.claim(free=4, per_endpoint=3, busy={busy_id: 1, gone_id: 0}, claim_ms=60_000)
    by_endpoint = {ep: (stored, batch) for ep, stored, batch in taken.batches}
    assert sum(len(batch) for _, batch in by_endpoint.values()) == 4  # the total binds
    assert gone_id not in by_endpoint and len(by_endpoint.get(busy_id, ({}, []))[1]) <= 1
    assert len(by_endpoint.get(quiet_id, ({}, []))[1]) <= 3
    for ep, (stored, batch) in by_endpoint.items():
        assert all(d.endpoint_id == ep and d.message is not None and d.claimed_until for d in batch)
        assert (stored[b"id"] == f'"{ep}"'.encode()) if not ep.startswith("hook_") else stored == {}
    assert taken.next_due_in_ms == 0  # more are due now
    deleted = keys.delivery_id(messages[0].id, gone_id)
    await redis.delete(keys.delivery(deleted))
    rest = await store.claim(free=100, per_endpoint=100, busy={}, claim_ms=60_000)
    ids = {d.id for _, _, batch in rest.batches for d in batch}
    assert len(ids) == 3 * 4 + 1 - 4 - 1 and deleted not in ids  # all but those claimed and the deleted
    assert await redis.zscore(keys.due(gone_id), deleted) is None
    nothing = await store.claim(free=100, per_endpoint=100, busy={}, claim_ms=60_000)
    assert nothing.batches == [] and 50_000 < (nothing.next_due_in_ms or 0) <= 60_000


async def test_a_parsed_endpoint_is_reused_only_for_the_same_stored_bytes(redis: Redis) -> None:
    # Issue 15: endpoints are parsed once per stored version, not once per claim; a change is seen
    # by the very next read.
    store = EndpointStore(redis)
    ep_id, _ = await endpoint(redis, "http://127.0.0.1:9/old")
    first, again = await store.get(ep_id), await store.get(ep_id)
    assert first is again
    await store.update(ep_id, tenant="a", changes={"url": "http://127.0.0.1:9/new", "enabled": False})
    changed = await store.get(ep_id)
    assert changed is not first and changed.url == "http://127.0.0.1:9/new" and not changed.enabled
    assert (await store.for_tenant("a"))[0] is changed
