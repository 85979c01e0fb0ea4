"""Ordered delivery per subject (``ordering: "run"``): each run's messages in sequence order, other runs
in parallel, whatever the receiver's delays and failures and however the fan-outs interleave."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict

from aiohttp import web
from redis.asyncio import Redis

from tests.deadlines import wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import (
    DEFAULT_EVENTS,
    FAST,
    claim,
    deliveries_of,
    endpoint,
    publish,
    running_dispatcher,
)
from webhooks import keys
from webhooks.endpoints import EndpointStore
from webhooks.fanout import FanOut
from webhooks.ids import new_id
from webhooks.models import DeliveryStatus as S
from webhooks.outbox import OutboxEntry

TYPES = ("execution.queued", "execution.running", "execution.success")


def sequences_by_run(receiver: Receiver) -> dict[str, list[int]]:
    """Each run's data.sequence of every request received, in arrival order (retries included)."""
    out: dict[str, list[int]] = defaultdict(list)
    for r in receiver.requests:
        out[r.json["data"]["id"]].append(r.json["data"]["sequence"])
    return out


async def test_200_runs_in_flight_arrive_each_in_order_despite_delays_and_500s(redis: Redis) -> None:
    rng = random.Random(14)
    in_flight, peak = 0, 0

    async def flaky(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(rng.uniform(0, 0.2))
            return web.Response(status=500 if rng.random() < 0.2 else 200)
        finally:
            in_flight -= 1

    receiver = await Receiver(default=flaky).start()
    settings = FAST.__class__(
        **{**FAST.__dict__, "retry_schedule": (0.05, 0.1, 0.1, 0.1, 0.1, 0.1), "per_endpoint_in_flight": 50}
    )
    try:
        ep_id, _ = await endpoint(redis, receiver.url, ordering="run")
        runs = [f"exec_{n}" for n in range(200)]
        async with running_dispatcher(redis, settings), running_dispatcher(redis, settings):
            # Every run's messages interleaved with the others', as concurrent runs commit them.
            for seq, type_ in enumerate(TYPES, start=1):
                for run in runs:
                    await publish(redis, subject=run, type_=type_, sequence=seq)

            async def settled() -> bool:
                ended = [await redis.zcard(keys.listing(ep_id, s)) for s in (S.succeeded, S.failed)]
                return sum(ended) == len(runs) * len(TYPES)

            await wait_for(settled, timeout=90, interval=0.2)
        by_run = sequences_by_run(receiver)
        assert set(by_run) == set(runs)
        for run, seqs in by_run.items():
            assert seqs == sorted(seqs), (run, seqs)  # never a later message before an earlier one ended
            assert set(seqs) == {1, 2, 3}, (run, seqs)
        assert any(len(s) > 3 for s in by_run.values())  # 500s were retried within the order
        assert peak >= 10  # runs went on in parallel: no head-of-line blocking across runs
    finally:
        await receiver.stop()


async def test_a_failing_run_holds_back_only_its_own_messages(redis: Redis) -> None:
    async def fail_run_a(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        return web.Response(status=500 if body["data"]["id"] == "exec_A" else 200)

    receiver = await Receiver(default=fail_run_a).start()
    settings = FAST.__class__(**{**FAST.__dict__, "retry_schedule": (0.4, 0.4)})
    try:
        await endpoint(redis, receiver.url, ordering="run")
        async with running_dispatcher(redis, settings):
            for seq in (1, 2):
                await publish(redis, subject="exec_A", sequence=seq)
                await publish(redis, subject="exec_B", sequence=seq)
            await wait_for(lambda: sequences_by_run(receiver).get("exec_B") == [1, 2])
            assert sequences_by_run(receiver)["exec_A"] == [1]  # B went on while A's first retried
            # A's second message waits until the first has finally failed (three attempts), then goes.
            await wait_for(lambda: sequences_by_run(receiver)["exec_A"] == [1, 1, 1, 2], timeout=10)
    finally:
        await receiver.stop()


async def test_a_message_fanned_out_before_an_earlier_one_waits_for_it(
    redis: Redis, receiver: Receiver
) -> None:
    # Two dispatchers fan out batches in parallel (or one reclaims a dead one's batch later): a run's
    # second and third messages can reach the endpoint before its first.
    ep_id, _ = await endpoint(redis, receiver.url, ordering="run")
    deliveries = deliveries_of(redis)
    fanout = FanOut(
        FAST, redis, endpoints=EndpointStore(redis), deliveries=deliveries, default_events=DEFAULT_EVENTS
    )

    def entry(seq: int) -> OutboxEntry:
        data = {"id": "exec_1", "sequence": seq}
        body = json.dumps(
            {"type": "execution.running", "timestamp": "2026-11-29T00:00:00.000Z", "data": data}
        )
        return OutboxEntry(
            new_id("msg"), "execution.running", "a", "exec_1", "echo", body, sequence=seq, created_ms=2**42
        )

    first, second, third = entry(1), entry(2), entry(3)
    await fanout([third])
    await fanout([second])
    assert await redis.zcard(keys.lane(ep_id, "exec_1")) == 2
    # Neither may go now: each waits (up to the gap, 60 s) for the first to be fanned out.
    assert await claim(deliveries, 10, claim_ms=1) == []  # nothing is due now
    await fanout([first])
    async with running_dispatcher(redis):
        await wait_for(lambda: len(receiver.requests) == 3)
    assert sequences_by_run(receiver)["exec_1"] == [1, 2, 3]
    assert await redis.exists(keys.lane(ep_id, "exec_1"), keys.lane_active(ep_id, "exec_1")) == 0


async def test_a_head_whose_predecessor_never_comes_goes_after_the_gap(
    redis: Redis, receiver: Receiver
) -> None:
    settings = FAST.__class__(**{**FAST.__dict__, "ordering_gap_seconds": 0.5})
    await endpoint(redis, receiver.url, ordering="run")
    async with running_dispatcher(redis, settings):
        await publish(redis, subject="exec_1", sequence=2)  # the first was lost (a Redis failover)
        await publish(redis, subject="exec_1", sequence=3)
        await wait_for(lambda: len(receiver.requests) == 2, timeout=10)
    assert sequences_by_run(receiver)["exec_1"] == [2, 3]


async def test_unordered_endpoints_and_messages_without_sequence_are_not_held(
    redis: Redis, receiver: Receiver
) -> None:
    await endpoint(redis, receiver.url)  # no ordering
    ordered = await Receiver().start()
    try:
        await endpoint(redis, ordered.url, ordering="run")
        async with running_dispatcher(redis):
            await publish(redis, subject="exec_1", sequence=3)  # 1 and 2 never come
            await publish(redis, subject="exec_1")  # no sequence: never ordered
            await wait_for(lambda: len(receiver.requests) == 2 and len(ordered.requests) == 1)
        assert ordered.requests[0].json["data"] == {"id": "exec_1"}
    finally:
        await ordered.stop()


async def test_turning_ordering_off_releases_what_waited(redis: Redis, receiver: Receiver) -> None:
    store = EndpointStore(redis)
    ep_id, _ = await endpoint(redis, receiver.url, ordering="run")
    async with running_dispatcher(redis):
        await publish(redis, subject="exec_1", sequence=2)  # waits for 1 (gap: 60 s)
        await publish(redis, subject="exec_1", sequence=3)
        await wait_for(lambda: redis.zcard(keys.lane(ep_id, "exec_1")))
        await asyncio.sleep(0.3)
        assert receiver.requests == []
        await store.update(ep_id, tenant="a", changes={"ordering": "none"})
        await wait_for(lambda: len(receiver.requests) == 2)
    assert await redis.exists(keys.lanes(ep_id), keys.lane(ep_id, "exec_1")) == 0


async def test_tenants_without_an_ordered_endpoint_keep_no_ordering_state(
    redis: Redis, dispatcher, receiver: Receiver
) -> None:
    await endpoint(redis, receiver.url)  # tenant "a": unordered only
    ordered = await Receiver().start()
    try:
        await endpoint(redis, ordered.url, tenant="b", ordering="run")
        await publish(redis, subject="exec_a", sequence=1)
        await publish(redis, subject="exec_b", tenant="b", sequence=1)
        await wait_for(lambda: len(receiver.requests) == 1 and len(ordered.requests) == 1)
        assert await redis.exists(keys.fanned("exec_a")) == 0
        assert await redis.hget(keys.fanned("exec_b"), "w") == b"1"
    finally:
        await ordered.stop()
