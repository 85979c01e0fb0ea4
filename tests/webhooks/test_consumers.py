"""The outbox group's members: reclaim, take-over on a lapsed beacon, member removal, trimming."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from redis.asyncio import Redis

from tests.deadlines import wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import FAST, endpoint, publish, read_but_never_acked, running_dispatcher
from webhooks import keys
from webhooks.consumers import Membership
from webhooks.dispatcher import Dispatcher
from webhooks.outbox import OUTBOX_STREAM


async def test_an_entry_left_unacknowledged_by_a_dead_dispatcher_is_reclaimed(
    redis: Redis, receiver: Receiver
) -> None:
    # A dispatcher that read the entry and died before fanning it out.
    msg_id = await read_but_never_acked(redis, receiver.url, "dead-one")
    async with running_dispatcher(redis):
        await wait_for(lambda: receiver.ids() == [msg_id], timeout=15)


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
