"""Transitions with ORCH_REDIS_MIN_REPLICAS_ACK: strict for the API, logged for a worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from orchestrator.models import ExecutionStatus
from orchestrator.runs import keys
from orchestrator.runs.store import RunStore
from orchestrator.runs.stored import NewRun
from tests.redis_server import RedisServer
from webhooks.errors import NotReplicated
from webhooks.replication import Replication

S = ExecutionStatus
ONE = Replication(replicas=1, timeout_ms=3000)
QUICK = Replication(replicas=1, timeout_ms=150)
TWO = Replication(replicas=2, timeout_ms=50)  # one replica exists: always short


def store_on(redis: Redis, replication: Replication, *, strict: bool = True) -> RunStore:
    return RunStore(
        redis,
        queue_name="test:queue",
        retention_seconds=3600,
        lease_seconds=5,
        requeue_after_seconds=30,
        replication=replication,
        strict=strict,
    )


@pytest.fixture
async def clients(replicated: tuple[RedisServer, RedisServer]) -> AsyncIterator[tuple[Redis, Redis, Redis]]:
    """Two clients of the primary (two connection pools) and one of the replica."""
    primary, replica = replicated
    a, b, r = Redis(port=primary.port), Redis(port=primary.port), Redis(port=replica.port)
    await a.flushdb()
    await ONE.fence(a, what="flush")
    yield a, b, r
    for client in (a, b, r):
        await client.aclose()


async def test_a_confirmed_create_is_on_the_replica(clients: tuple[Redis, Redis, Redis]) -> None:
    a, _, replica = clients
    made = await store_on(a, ONE).create_many(
        tenant="t", flow_id="echo", items=[NewRun(input_json="{}") for _ in range(3)]
    )
    assert all(created for _, created in made)
    for run, _ in made:  # answered after WAIT: the replica holds every one, no waiting needed
        assert await replica.hget(keys.run(run.id), "status") == b"queued"


async def test_a_shortfall_raises_after_the_write(clients: tuple[Redis, Redis, Redis]) -> None:
    a, _, _ = clients
    with pytest.raises(NotReplicated) as short:
        await store_on(a, TWO).create(tenant="t", flow_id="echo", input_json="{}", run_id="exec_short")
    assert short.value.status_code == 503 and short.value.details["replicasRequired"] == 2
    assert await a.hget(keys.run("exec_short"), "status") == b"queued"  # "the write may still exist"


async def test_a_replay_on_another_connection_waits_for_the_original(
    clients: tuple[Redis, Redis, Redis],
) -> None:
    # A retried create (same Idempotency-Key, so the same run id) finds the run there and writes
    # nothing: it must still not be answered before the replica holds the original. Redis 7.0's
    # WAIT happens to cover every earlier write of the primary; later versions count a connection's
    # own writes only, which is why the store fences a replay (webhooks.replication).
    a, b, replica = clients
    asleep = asyncio.get_running_loop().create_task(replica.execute_command("DEBUG", "SLEEP", "1"))
    await asyncio.sleep(0.1)  # the replica lags from now on
    with pytest.raises(NotReplicated):
        await store_on(a, QUICK).create(tenant="t", flow_id="echo", input_json="{}", run_id="exec_lag")
    with pytest.raises(NotReplicated):
        await store_on(b, QUICK).create(tenant="t", flow_id="echo", input_json="{}", run_id="exec_lag")
    await asleep
    run = await store_on(b, ONE).create(tenant="t", flow_id="echo", input_json="{}", run_id="exec_lag")
    assert run.id == "exec_lag" and await replica.exists(keys.run("exec_lag"))


async def test_a_cancel_short_of_replicas_is_refused_but_stands(clients: tuple[Redis, Redis, Redis]) -> None:
    a, _, _ = clients
    run = await store_on(a, ONE).create(tenant="t", flow_id="echo", input_json="{}")
    with pytest.raises(NotReplicated):
        await store_on(a, TWO).cancel(run.id, tenant="t")
    assert (await store_on(a, ONE).get(run.id, tenant="t")).status is S.cancelled


async def test_a_worker_logs_a_shortfall_and_goes_on(
    clients: tuple[Redis, Redis, Redis], caplog: pytest.LogCaptureFixture
) -> None:
    a, _, _ = clients
    run = await store_on(a, ONE).create(tenant="t", flow_id="echo", input_json="{}")
    worker = store_on(a, TWO, strict=False)
    with caplog.at_level(logging.WARNING, logger="webhooks.replication"):
        started = await worker.start(run.id, 1)
        done = await worker.finish(run.id, 1, S.success, output={"ok": True}, known=started)
    assert done is not None and done.status is S.success
    shortfalls = [r.getMessage() for r in caplog.records if "not confirmed by 2" in r.getMessage()]
    assert len(shortfalls) == 2 and all(run.id in m for m in shortfalls)


async def test_every_write_path_reloads_scripts_a_new_primary_lacks(
    clients: tuple[Redis, Redis, Redis],
) -> None:
    # a promoted replica starts with an empty script cache (Redis 7 replicates scripts' effects only):
    # redis-py's pipelines check SCRIPT EXISTS first, its single calls retry on NOSCRIPT, and the
    # WAIT path (webhooks.replication) reloads on NOSCRIPT itself
    a, _, _ = clients
    plain, waiting = store_on(a, Replication()), store_on(a, ONE)
    await a.script_flush()
    made = await plain.create_many(
        tenant="t", flow_id="echo", items=[NewRun(input_json="{}") for _ in range(2)]
    )
    await a.script_flush()
    started = await plain.start(made[0][0].id, 1)
    assert started.run.status is S.running
    await a.script_flush()
    assert (await waiting.cancel(made[1][0].id, tenant="t")).status is S.cancelled
    await a.script_flush()
    assert (await waiting.create_many(tenant="t", flow_id="echo", items=[NewRun(input_json="{}")]))[0][1]
