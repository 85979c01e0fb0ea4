"""Batched scripts (issue 15): many calls of one script body in one round trip, each with its slice."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from webhooks.batching import Batch, many, pack

# One call: append ARGV[1] to the list KEYS[1] and return its length and the call's arguments.
APPEND = many(
    "local now = 7\n",
    """
redis.call('RPUSH', KEYS[1], ARGV[1])
if ARGV[1] == 'boom' then redis.call('INCR', KEYS[1]) end  -- WRONGTYPE: the script aborts
return {redis.call('LLEN', KEYS[1]), #KEYS, #ARGV, now}
""",
)


async def _evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_each_call_sees_only_its_own_keys_and_arguments(redis: Redis) -> None:
    script = redis.register_script(APPEND)
    keys, args = pack([(["b:1"], ["x", "extra"]), (["b:2"], ["y"]), (["b:1"], ["z"])])
    assert await script(keys=keys, args=args) == [[1, 1, 2, 7], [1, 1, 1, 7], [2, 1, 1, 7]]
    assert await redis.lrange("b:1", 0, -1) == [b"x", b"z"]


async def test_calls_made_in_one_tick_share_one_round_trip(redis: Redis) -> None:
    batch = Batch(redis, APPEND)
    await batch(["warm"], ["w"])  # loads the script (EVALSHA, NOSCRIPT, EVAL) once
    before = await _evalsha_calls(redis)
    results = await asyncio.gather(*(batch([f"t:{i % 3}"], [str(i)]) for i in range(30)))
    assert await _evalsha_calls(redis) - before == 1
    assert [r[0] for r in results[:3]] == [1, 1, 1] and [r[0] for r in results[-3:]] == [10, 10, 10]


async def test_an_error_fails_every_call_of_its_round_trip_and_the_next_one_works(redis: Redis) -> None:
    batch = Batch(redis, APPEND)
    outcomes = await asyncio.gather(batch(["e:1"], ["ok"]), batch(["e:2"], ["boom"]), return_exceptions=True)
    assert all(isinstance(o, ResponseError) for o in outcomes)
    assert await batch(["e:3"], ["fine"]) == [1, 1, 1, 7]


async def test_a_batch_larger_than_its_cap_goes_in_several_round_trips(redis: Redis) -> None:
    batch = Batch(redis, APPEND, max_calls=4)
    await batch(["warm"], ["w"])
    before = await _evalsha_calls(redis)
    await asyncio.gather(*(batch(["cap"], [str(i)]) for i in range(10)))
    assert await _evalsha_calls(redis) - before == 3
    assert await redis.llen("cap") == 10


async def test_no_calls_is_an_empty_result(redis: Redis) -> None:
    script = redis.register_script(APPEND)
    keys, args = pack([])
    assert await script(keys=keys, args=args) == []
