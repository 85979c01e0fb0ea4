import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from orchestrator.errors import InvalidTransition, RunNotFound, StaleAttempt
from orchestrator.models import Execution, ExecutionStatus, Metrics
from orchestrator.runs import keys
from orchestrator.runs.jobs import job_id, job_key
from orchestrator.runs.listing import page as list_page
from orchestrator.runs.store import RunStore
from orchestrator.settings import Settings
from orchestrator.worker.reaper import lost_attempt_plan
from webhooks import compression
from webhooks.outbox import OUTBOX_STREAM

S = ExecutionStatus


def make_store(redis: Redis, settings: Settings) -> RunStore:
    return RunStore(
        redis,
        queue_name=settings.queue_name,
        retention_seconds=settings.run_retention_seconds,
        lease_seconds=settings.lease_seconds,
        requeue_after_seconds=settings.requeue_after_seconds,
    )


async def reap(store: RunStore, run_id: str, *, max_attempts: int) -> Execution[Any] | None:
    """What the reaper does to a run whose lease expired."""
    return await store.take_over(
        run_id,
        lambda stored, now: lost_attempt_plan(
            stored, now=now, max_attempts=max_attempts, requeue_ms=store.requeue_ms
        ),
    )


@pytest.fixture
def store(redis: Redis, settings: Settings) -> RunStore:
    return make_store(redis, settings)


async def outbox(redis: Redis) -> list[dict[str, str]]:
    entries = await redis.xrange(OUTBOX_STREAM)
    return [{k.decode(): compression.text(v) for k, v in fields.items()} for _, fields in entries]


async def create(store: RunStore, tenant: str = "a", flow: str = "echo") -> str:
    run = await store.create(tenant=tenant, flow_id=flow, input_json='{"text":"hi"}')
    return run.id


async def test_create_writes_queued_event_index_and_job(
    store: RunStore, redis: Redis, settings: Settings
) -> None:
    run = await store.create(
        tenant="a", flow_id="echo", input_json='{"text":"hi"}', metadata={"k": 1}, steps_total=3
    )
    assert run.status is S.queued and run.sequence == 1 and run.attempt == 1
    assert run.metrics.steps_total == 3
    got = await store.get(run.id, tenant="a")
    assert got == run
    [event] = await outbox(redis)
    assert event["id"].startswith("msg_") and event["type"] == "execution.queued"
    assert event["tenant"] == "a" and event["subject"] == run.id and event["flow"] == "echo"
    body = json.loads(event["body"])
    assert set(body) == {"type", "timestamp", "data"}
    assert body["data"]["status"] == "queued" and body["data"]["sequence"] == 1
    assert await redis.zscore(settings.queue_name, job_id(run.id, 1)) is not None
    assert await redis.exists(job_key(job_id(run.id, 1)))
    assert await redis.zscore(keys.PENDING, run.id) is not None
    assert await redis.zrange(keys.index("a"), 0, -1) == [run.id.encode()]
    assert await redis.zrange(keys.index("a", status=S.queued), 0, -1) == [run.id.encode()]


async def test_other_tenant_sees_not_found(store: RunStore) -> None:
    rid = await create(store, tenant="a")
    with pytest.raises(RunNotFound):
        await store.get(rid, tenant="b")
    with pytest.raises(RunNotFound):
        await store.get_json(rid, tenant="b")
    with pytest.raises(RunNotFound):
        await store.cancel(rid, tenant="b")
    assert (await store.get(rid, tenant="a")).status is S.queued


async def test_full_lifecycle_emits_one_event_per_transition_in_order(store: RunStore, redis: Redis) -> None:
    rid = await create(store)
    stored = await store.start(rid, 1)
    assert stored.run.status is S.running and stored.input_json == '{"text":"hi"}'
    assert await redis.zscore(keys.LEASES, rid) is not None
    assert await redis.zscore(keys.PENDING, rid) is None
    await store.progress(rid, 1, Metrics(steps_run=1))
    done = await store.finish(rid, 1, S.success, output={"text": "hi"}, metrics=Metrics(steps_run=1))
    assert done is not None and done.status is S.success and done.sequence == 4
    types = [e["type"] for e in await outbox(redis)]
    assert types == ["execution.queued", "execution.running", "execution.progress", "execution.success"]
    seqs = [json.loads(e["body"])["data"]["sequence"] for e in await outbox(redis)]
    assert seqs == [1, 2, 3, 4]
    log = [json.loads(compression.expand(x)) for x in await redis.lrange(keys.run_events(rid), 0, -1)]
    assert [e["sequence"] for e in log] == [1, 2, 3, 4]
    assert [e["id"] for e in log] == [e["id"] for e in await outbox(redis)]
    assert await redis.zscore(keys.LEASES, rid) is None
    assert await redis.pttl(keys.run(rid)) > 0 and await redis.pttl(keys.run_events(rid)) > 0
    assert await redis.zrange(keys.index("a", status=S.success), 0, -1) == [rid.encode()]
    assert await redis.zrange(keys.index("a", status=S.running), 0, -1) == []


async def test_terminal_is_final(store: RunStore, redis: Redis) -> None:
    rid = await create(store)
    await store.start(rid, 1)
    await store.finish(rid, 1, S.failed)
    with pytest.raises(InvalidTransition):
        await store.finish(rid, 1, S.success)
    with pytest.raises(InvalidTransition) as info:
        await store.cancel(rid, tenant="a")
    assert info.value.details["status"] == "failed"
    with pytest.raises(StaleAttempt):
        await store.start(rid, 1)
    assert [e["type"] for e in await outbox(redis)][-1] == "execution.failed"
    assert len(await outbox(redis)) == 3


async def test_stale_attempt_is_refused(store: RunStore, redis: Redis) -> None:
    rid = await create(store)
    await store.start(rid, 1)
    await redis.zadd(keys.LEASES, {rid: 0})  # expire the lease
    retried = await reap(store, rid, max_attempts=3)
    assert retried is not None and retried.attempt == 2 and retried.status is S.running
    with pytest.raises(StaleAttempt):
        await store.finish(rid, 1, S.success)
    with pytest.raises(StaleAttempt):
        await store.progress(rid, 1, Metrics(steps_run=5))
    assert await store.save_partial(rid, 1, "{}") is False
    assert await store.leases.heartbeat([(rid, 1)]) == [rid]
    stored = await store.start(rid, 2)
    assert stored.run.attempt == 2
    with pytest.raises(StaleAttempt):
        await store.start(rid, 2)  # the lease is taken already
    assert (await store.finish(rid, 2, S.success)).status is S.success


async def test_reap_skips_a_renewed_lease(store: RunStore, redis: Redis) -> None:
    rid = await create(store)
    await store.start(rid, 1)
    assert await reap(store, rid, max_attempts=3) is None  # lease still valid
    assert (await store.get(rid, tenant="a")).attempt == 1


async def test_reap_after_last_attempt_fails_with_worker_lost(store: RunStore, redis: Redis) -> None:
    rid = await create(store)
    await store.start(rid, 1)
    await store.save_partial(rid, 1, '{"pages": 2}')
    await redis.zadd(keys.LEASES, {rid: 0})
    done = await reap(store, rid, max_attempts=1)
    assert done is not None and done.status is S.failed
    assert done.error is not None and done.error.code == "worker_lost"
    assert done.output == {"pages": 2}


async def test_cancel_keeps_partial_output_and_removes_queued_job(
    store: RunStore, redis: Redis, settings: Settings
) -> None:
    rid = await create(store)
    done = await store.cancel(rid, tenant="a")
    assert done.status is S.cancelled and done.duration is None
    assert await redis.zscore(settings.queue_name, job_id(rid, 1)) is None
    with pytest.raises(StaleAttempt):
        await store.start(rid, 1)
    rid2 = await create(store)
    await store.start(rid2, 1)
    await store.save_partial(rid2, 1, '{"pages": 3}')
    cancelled = await store.cancel(rid2, tenant="a")
    assert cancelled.output == {"pages": 3} and cancelled.duration is not None


async def test_cancel_racing_success_has_exactly_one_winner(store: RunStore, redis: Redis) -> None:
    outcomes = {"cancelled": 0, "success": 0}
    for _ in range(100):
        rid = await create(store)
        await store.start(rid, 1)

        async def cancel(rid: str = rid) -> str:
            try:
                await store.cancel(rid, tenant="a")
                return "cancelled"
            except InvalidTransition:
                return "lost"

        async def succeed(rid: str = rid) -> str:
            try:
                await store.finish(rid, 1, S.success, output={})
                return "success"
            except InvalidTransition:
                return "lost"

        results = await asyncio.gather(cancel(), succeed())
        assert sorted(results) in (["cancelled", "lost"], ["lost", "success"])
        winner = results[0] if results[0] != "lost" else results[1]
        outcomes[winner] += 1
        final = await store.get(rid, tenant="a")
        assert final.status.value == winner
        events = [e for e in await outbox(redis) if e["subject"] == rid]
        assert [e["type"] for e in events] == ["execution.queued", "execution.running", f"execution.{winner}"]
    assert outcomes["cancelled"] + outcomes["success"] == 100


async def test_pagination_is_newest_first_and_stable_under_inserts(store: RunStore) -> None:
    ids = [await create(store) for _ in range(25)]
    seen: list[str] = []
    cursor = None
    inserted = []
    while True:
        page, cursor = await list_page(store.redis, tenant="a", limit=10, cursor=cursor)
        seen += [r.id for r in page]
        inserted.append(await create(store))  # a concurrent insert lands before the cursor
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    first, _ = await list_page(store.redis, tenant="a", limit=100)
    assert [r.id for r in first][: len(inserted)] == list(reversed(inserted))


async def test_pagination_filters_by_status_and_flow(store: RunStore) -> None:
    a = await create(store, flow="echo")
    b = await create(store, flow="noop")
    c = await create(store, flow="echo")
    await store.cancel(c, tenant="a")
    page, _ = await list_page(store.redis, tenant="a", limit=10, status=S.queued)
    assert [r.id for r in page] == [b, a]
    page, _ = await list_page(store.redis, tenant="a", limit=10, flow_id="echo")
    assert [r.id for r in page] == [c, a]
    page, _ = await list_page(store.redis, tenant="a", limit=10, flow_id="echo", status=S.cancelled)
    assert [r.id for r in page] == [c]
    page, _ = await list_page(store.redis, tenant="b", limit=10)
    assert page == []


async def test_expired_runs_leave_the_index(store: RunStore, redis: Redis) -> None:
    a = await create(store)
    b = await create(store)
    await redis.delete(keys.run(a))
    page, cursor = await list_page(store.redis, tenant="a", limit=1)
    assert [r.id for r in page] == [b] and cursor is None
    assert await redis.zscore(keys.index("a"), a) is None
