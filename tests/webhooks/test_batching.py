"""Batched scripts (issue 15): many calls of script bodies in one round trip, each with its slice."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from webhooks.batching import Batch, ManyScript

# 'append': push ARGV[1] on the list KEYS[1] (WRONGTYPE on a string key: the script aborts) and
# return its length, the call's key and argument counts and the prelude's `now`; 'count': LLEN.
LISTS_PRELUDE = "local now = 7\n"
LISTS_BODIES = {
    "append": """
if ARGV[1] == 'boom' then redis.call('INCR', KEYS[1]) end
redis.call('RPUSH', KEYS[1], ARGV[1])
return {redis.call('LLEN', KEYS[1]), #KEYS, #ARGV, now}
""",
    "count": "return redis.call('LLEN', KEYS[1])",
}
LISTS = ManyScript(LISTS_PRELUDE, LISTS_BODIES)
ISOLATED = ManyScript(LISTS_PRELUDE, LISTS_BODIES, isolated=True)


async def _evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_calls_run_in_order_each_on_its_own_keys_and_arguments(redis: Redis) -> None:
    script = redis.register_script(LISTS.source)
    keys, args = LISTS.pack(
        [
            ("append", ["b:1"], ["x", "extra"]),
            ("count", ["b:1"], []),
            ("append", ["b:2"], ["y"]),
            ("append", ["b:1"], ["z"]),
            ("count", ["b:1"], []),
        ]
    )
    assert await script(keys=keys, args=args) == [[1, 1, 2, 7], 1, [1, 1, 1, 7], [2, 1, 1, 7], 2]
    assert await redis.lrange("b:1", 0, -1) == [b"x", b"z"]
    assert await script(keys=[], args=[0]) == []
    with pytest.raises(ValueError):
        LISTS.pack([("nope", [], [])])


async def test_a_failing_call_stops_the_calls_after_it(redis: Redis) -> None:
    # The fan-out relies on it: its acknowledgement comes last and never follows a failed write.
    await redis.set("s", "string")
    script = redis.register_script(LISTS.source)
    keys, args = LISTS.pack(
        [("append", ["f:1"], ["a"]), ("append", ["s"], ["boom"]), ("append", ["f:2"], ["b"])]
    )
    with pytest.raises(ResponseError):
        await script(keys=keys, args=args)
    assert await redis.llen("f:1") == 1 and await redis.llen("f:2") == 0


async def test_calls_made_in_one_tick_share_one_round_trip(redis: Redis) -> None:
    batch = Batch(redis, LISTS, "append")
    await batch(["warm"], ["w"])  # loads the script once
    before = await _evalsha_calls(redis)
    results = await asyncio.gather(*(batch([f"t:{i % 3}"], [str(i)]) for i in range(30)))
    assert await _evalsha_calls(redis) - before == 1
    assert [r[0] for r in results[:3]] == [1, 1, 1] and [r[0] for r in results[-3:]] == [10, 10, 10]


async def test_an_isolated_batch_fails_only_the_failing_call(redis: Redis) -> None:
    # Review of issue 15: one corrupt row failed every record of its round trip; the records made
    # before it stood, their callers saw an error, and those after it never ran (sent again later).
    await redis.set("s", "string")
    batch = Batch(redis, ISOLATED, "append")
    outcomes = await asyncio.gather(
        batch(["e:1"], ["ok"]), batch(["s"], ["boom"]), batch(["e:2"], ["after"]), return_exceptions=True
    )
    assert outcomes[0] == [1, 1, 1, 7] and outcomes[2] == [1, 1, 1, 7]
    assert isinstance(outcomes[1], ResponseError)  # INCR of a string: that call's own error
    assert await batch(["e:3"], ["fine"]) == [1, 1, 1, 7]


async def test_without_isolation_an_error_fails_every_call_of_its_round_trip(redis: Redis) -> None:
    await redis.set("s", "string")
    batch = Batch(redis, LISTS, "append")
    outcomes = await asyncio.gather(batch(["n:1"], ["ok"]), batch(["s"], ["boom"]), return_exceptions=True)
    assert all(isinstance(o, ResponseError) for o in outcomes)


async def test_a_batch_larger_than_its_cap_goes_in_several_round_trips(redis: Redis) -> None:
    batch = Batch(redis, LISTS, "append", max_calls=4)
    await batch(["warm"], ["w"])
    before = await _evalsha_calls(redis)
    await asyncio.gather(*(batch(["cap"], [str(i)]) for i in range(10)))
    assert await _evalsha_calls(redis) - before == 3
    assert await redis.llen("cap") == 10
