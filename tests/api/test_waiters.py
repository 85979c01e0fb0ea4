"""The taps of ``api.waiters``: every transition for a reader of all runs, bounded, honest about misses."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from redis.asyncio import Redis

from orchestrator.api.waiters import Tap, Waiter, Waiters
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


async def test_a_request_cancelled_while_its_subscription_is_unconfirmed_stops_at_once(redis: Redis) -> None:
    # Review of issue 15: the confirmation wait swallowed CancelledError, so a request whose client
    # left went on to its full timeout. A pubsub nobody reads never confirms anything.
    waiters = Waiters(redis)
    waiters._pubsub = redis.pubsub()
    entered = asyncio.Event()

    async def request() -> None:
        async with waiters.watch("exec_cancelled"):
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.get_running_loop().create_task(request())
    await asyncio.sleep(0.1)
    started = time.monotonic()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled() and not entered.is_set() and time.monotonic() - started < 1.0
    assert len(waiters) == 0
    await waiters._pubsub.aclose()


async def test_a_confirmation_that_comes_late_wakes_its_waiters_to_read_again(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.api import waiters as module

    monkeypatch.setattr(module, "CONFIRM_SECONDS", 0.05)
    waiters = Waiters(redis)
    waiters._pubsub = redis.pubsub()  # never read: the confirmation times out
    async with waiters.watch("exec_late") as waiter:
        assert not waiter.event.is_set()  # the request read after the timeout
        waiters._on_message({"type": "subscribe", "channel": keys.run_channel("exec_late").encode()})
        assert waiter.event.is_set() and waiter.status is None  # unknown: read again
    await waiters._pubsub.aclose()


async def test_a_waiter_back_during_the_linger_sweep_keeps_its_channel(redis: Redis) -> None:
    # Review of issue 15: a waiter arriving while the sweep awaited an unsubscribe made the sweep
    # raise KeyError, which the listener took for a lost connection (a resubscribe, every waiter woken).
    waiters = Waiters(redis)
    pubsub = redis.pubsub()
    waiters._pubsub = pubsub
    for run_id in ("exec_a", "exec_b"):
        waiters._active.add(keys.run_channel(run_id))
        waiters._idle_since[run_id] = time.monotonic() - 60
    real = pubsub.unsubscribe
    back: list[Waiter] = []

    async def unsubscribe(*channels: str) -> None:
        if not back:  # the other run is waited on again in the middle of the sweep
            context = waiters.watch("exec_b" if channels[0].endswith("exec_a:notices") else "exec_a")
            back.append(await context.__aenter__())
        await real(*channels)

    pubsub.unsubscribe = unsubscribe  # type: ignore[method-assign]
    await waiters._linger(pubsub)
    assert len(back) == 1 and keys.run_channel(back[0].run_id) in waiters._active
    await pubsub.aclose()
