"""The taps of ``api.waiters``: every transition for a reader of all runs, bounded, honest about misses."""

from __future__ import annotations

from redis.asyncio import Redis

from orchestrator.api.waiters import Tap, Waiters


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


async def test_waiters_tell_their_taps_of_every_transition_and_forget_closed_ones(redis: Redis) -> None:
    waiters = Waiters(redis)
    with waiters.tap() as first, waiters.tap() as second:
        waiters.notify("exec_1", "running", 2)
        assert await first.take(1) == (["exec_1"], False)
        assert await second.take(1) == (["exec_1"], False)
    waiters.notify("exec_2", "success", 3)
    assert await first.take(0.01) is None
