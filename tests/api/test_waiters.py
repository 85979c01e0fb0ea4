"""The taps of ``api.waiters``: every transition for a reader of all runs, bounded, honest about misses."""

from __future__ import annotations

from redis.asyncio import Redis

from orchestrator.api.waiters import Tap, Waiters
from orchestrator.models import ExecutionStatus as S
from orchestrator.runs import keys
from orchestrator.runs.notices import Notice
from tests.deadlines import wait_for


async def test_a_tap_hands_over_each_run_once_in_order() -> None:
    tap = Tap()
    for run_id in ("a", "b", "a", "c"):
        tap.add(run_id)
    assert await tap.take(1) == (["a", "b", "c"], False)
    assert await tap.take(0.01) is None  # nothing since


async def test_a_tap_that_overflows_or_missed_notices_says_so() -> None:
    tap = Tap(limit=2)
    for run_id in ("a", "b", "c"):
        tap.add(run_id)
    assert await tap.take(1) == ([], True)
    tap.add("d")
    assert await tap.take(1) == (["d"], False)
    tap.add("e")
    tap.add(None)  # a resubscribe: what was published meanwhile is unknown
    assert await tap.take(1) == ([], True)


async def test_taps_hear_every_run_through_one_pattern_dropped_when_none_is_open(redis: Redis) -> None:
    # The dashboard's live list hears every run; waiters hear only theirs (issue 15's targeted
    # notices): the pattern subscription exists only while a tap is open.
    waiters = Waiters(redis)
    await waiters.start()
    try:
        await wait_for(waiters.subscribed.is_set)
        async with waiters.tap() as first, waiters.tap() as second:
            assert waiters.tapping and int(await redis.pubsub_numpat()) == 1
            await redis.publish(keys.run_channel("exec_1"), Notice("exec_1", S.running, 2, 1).format())
            assert await first.take(5) == (["exec_1"], False)
            assert await second.take(5) == (["exec_1"], False)
            async with waiters.watch("exec_2") as waiter:  # a run both watched and tapped: one each
                await redis.publish(keys.run_channel("exec_2"), Notice("exec_2", S.success, 3, 1).format())
                assert await waiter.wait(5) and waiter.status == "success"
                assert await first.take(5) == (["exec_2"], False)
        await redis.publish(keys.run_channel("exec_3"), Notice("exec_3", S.success, 3, 1).format())
        assert await first.take(0.2) is None  # closed taps hear nothing more
        await wait_for(lambda: _no_pattern(redis), timeout=15)  # after LINGER_SECONDS
        assert not waiters.tapping
    finally:
        await waiters.stop()


async def _no_pattern(redis: Redis) -> bool:
    return int(await redis.pubsub_numpat()) == 0
