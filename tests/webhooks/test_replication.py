"""Acknowledged means replicated: WAIT after a write, on the write's own connection or behind a fence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tests.redis_server import RedisServer
from tests.webhooks.helpers import FAST, endpoint, publish
from webhooks import keys
from webhooks.dispatcher import Dispatcher
from webhooks.errors import NotReplicated
from webhooks.outbox import OUTBOX_STREAM
from webhooks.replication import Replication

ONE = Replication(replicas=1, timeout_ms=2000)
TWO = Replication(replicas=2, timeout_ms=50)  # the test setup has one replica: always short
SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]"


@pytest.fixture
async def primary(replicated: tuple[RedisServer, RedisServer]) -> AsyncIterator[Redis]:
    client = Redis(port=replicated[0].port)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def replica(replicated: tuple[RedisServer, RedisServer]) -> AsyncIterator[Redis]:
    client = Redis(port=replicated[1].port)
    yield client
    await client.aclose()


async def calls(redis: Redis, *commands: str) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands}


async def test_at_zero_replicas_no_command_is_added(primary: Redis) -> None:
    # the default must cost nothing: not a WAIT, not a fence, not a round trip
    script = primary.register_script(SCRIPT)
    await script(keys=["k"], args=["v"])  # loaded (a first call may meet NOSCRIPT)
    before = await calls(primary, "wait", "publish", "evalsha")
    await Replication().fence(primary, what="x")
    assert await calls(primary, "wait", "publish", "evalsha") == before
    await script(keys=["k"], args=["v"])
    after = await calls(primary, "wait", "publish", "evalsha")
    assert after == {**before, "evalsha": before["evalsha"] + 1}


async def test_a_script_and_its_wait_share_one_round_trip(primary: Redis, replica: Redis) -> None:
    script = primary.register_script(SCRIPT)
    before = await calls(primary, "wait", "publish")
    result, acked = await ONE.script(primary, script, ["k"], ["v1"], what="x")
    assert (result, acked) == (b"v1", 1)
    after = await calls(primary, "wait", "publish")
    assert after == {"wait": before["wait"] + 1, "publish": before["publish"]}
    assert await replica.get("k") == b"v1"  # WAIT answered: the replica holds it


async def test_a_new_primary_without_the_script_loads_it(primary: Redis) -> None:
    # after a failover the promoted replica's script cache is empty (Redis 7 replicates effects)
    script = primary.register_script(SCRIPT)
    await primary.script_flush()
    result, acked = await ONE.script(primary, script, ["k"], ["v2"], what="x")
    assert (result, acked) == (b"v2", 1)


async def test_a_shortfall_is_returned_with_the_counts(primary: Redis) -> None:
    script = primary.register_script(SCRIPT)
    result, short = await TWO.script(primary, script, ["k"], ["v3"], what="run exec_1")
    assert result == b"v3" and await primary.get("k") == b"v3"  # the write stands on the primary
    assert isinstance(short, NotReplicated) and short.status_code == 503 and short.code == "unavailable"
    assert short.details["replicasRequired"] == 2 and short.details["replicasAcknowledged"] <= 1


async def test_a_script_error_is_raised_not_waited_on(primary: Redis) -> None:
    script = primary.register_script("return redis.error_reply('BROKEN on purpose')")
    with pytest.raises(ResponseError, match="BROKEN"):
        await ONE.script(primary, script, [], [], what="x")


async def test_a_fence_covers_writes_made_on_other_connections(primary: Redis, replica: Redis) -> None:
    other = Redis(port=primary.connection_pool.connection_kwargs["port"])
    try:
        await other.set("written-elsewhere", "1")
        await ONE.fence(primary, what="x")
        assert await replica.get("written-elsewhere") == b"1"
    finally:
        await other.aclose()


async def test_a_fence_waits_for_a_replica_that_is_behind(primary: Redis, replica: Redis) -> None:
    asleep = asyncio.get_running_loop().create_task(replica.execute_command("DEBUG", "SLEEP", "0.6"))
    await asyncio.sleep(0.1)  # the replica is asleep now (a lagging replica)
    await primary.set("late", "1")
    with pytest.raises(NotReplicated):
        await Replication(replicas=1, timeout_ms=100).fence(primary, what="x")
    await ONE.fence(primary, what="x")  # once it wakes, it catches up and acknowledges
    await asleep


async def test_a_fence_on_a_demoted_node_is_an_outage_not_an_error(replica: Redis) -> None:
    # "WAIT cannot be used with replica instances": a client still talking to a demoted primary
    with pytest.raises(NotReplicated, match="no longer the primary"):
        await ONE.fence(replica, what="x")


async def test_the_dispatcher_fans_out_and_acknowledges_only_what_replicas_hold(primary: Redis) -> None:
    await endpoint(primary, "http://127.0.0.1:9/hook")
    await publish(primary)
    await primary.xgroup_create(OUTBOX_STREAM, FAST.group, id="0")
    short = Dispatcher(replace(FAST, replication=TWO), primary, default_events=["execution.success"])
    entries = (await primary.xreadgroup(FAST.group, short.consumer, {OUTBOX_STREAM: ">"}))[0][1]
    with pytest.raises(NotReplicated):
        await short.fan_out(entries)
    # no webhook for a transition a replica may lack: nothing scheduled, the entry kept to be retried
    assert await primary.zcard(keys.DUE_ENDPOINTS) == 0
    assert (await primary.xpending(OUTBOX_STREAM, FAST.group))["pending"] == 1
    confirmed = Dispatcher(replace(FAST, replication=ONE), primary, default_events=["execution.success"])
    assert await confirmed.fan_out(entries) == 1
    assert (await primary.xpending(OUTBOX_STREAM, FAST.group))["pending"] == 0
