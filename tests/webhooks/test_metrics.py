"""``webhooks.metrics.endpoint_health``: per endpoint, the backlog, outcomes since a time, the next probe."""

from __future__ import annotations

from redis.asyncio import Redis

from tests.conftest import wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import endpoint, publish, running_dispatcher
from webhooks.deliveries import DeliveryStore
from webhooks.endpoints import EndpointStore
from webhooks.ids import decode_ms
from webhooks.metrics import endpoint_health


async def test_endpoint_health_counts_outcomes_backlog_and_probes(redis: Redis) -> None:
    good, bad = await Receiver(default=200).start(), await Receiver(default=500).start()
    try:
        good_id, _ = await endpoint(redis, good.url)
        bad_id, _ = await endpoint(redis, bad.url)
        first = await publish(redis)
        await publish(redis, subject="exec_2")
        async with running_dispatcher(redis):

            async def ended() -> bool:
                rows = await endpoint_health(redis, [good_id, bad_id], now_ms=10**13, since_ms=0)
                return rows[0].succeeded == 2 and rows[1].failed == 2

            await wait_for(ended, timeout=20)
        good_row, bad_row = await endpoint_health(redis, [good_id, bad_id], now_ms=10**13, since_ms=0)
        assert (good_row.success_rate, bad_row.success_rate) == (1.0, 0.0)
        assert good_row.backlog == bad_row.backlog == 0 and bad_row.next_probe_ms is None
        # Counting from after the messages were made: none of them.
        (later,) = await endpoint_health(redis, [good_id], now_ms=10**13, since_ms=decode_ms(first) + 60_000)
        assert (later.succeeded, later.failed, later.success_rate) == (0, 0, None)
        # A pending message (no dispatcher runs now) is backlog, aged from its creation.
        store = DeliveryStore(redis, failed_ttl_ms=60_000, delivered_ttl_ms=60_000)
        made = 1_900_000_000_000
        await store.send_test(await EndpointStore(redis).get(good_id), now_ms=made)
        endpoints = EndpointStore(redis)
        await endpoints.disable(await endpoints.get(bad_id), reason="test", probe_in_ms=60_000, now_ms=made)
        rows = await endpoint_health(redis, [good_id, bad_id], now_ms=made + 5_000, since_ms=0)
        assert [r.endpoint_id for r in rows] == [good_id, bad_id]
        assert (rows[0].backlog, rows[0].pending, rows[0].oldest_pending_seconds) == (1, 1, 5.0)
        assert rows[1].backlog == 0 and rows[1].next_probe_ms is not None
    finally:
        await good.stop()
        await bad.stop()
