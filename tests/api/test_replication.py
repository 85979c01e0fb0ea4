"""Over HTTP: with ORCH_REDIS_MIN_REPLICAS_ACK a write is answered only once replicas hold it, else 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from orchestrator.flows import Registry
from orchestrator.runs import keys
from tests.conftest import make_settings, serve, tenant_client
from tests.redis_server import RedisServer
from webhooks import keys as webhook_keys


@pytest.fixture
async def clean(replicated: tuple[RedisServer, RedisServer]) -> AsyncIterator[tuple[Redis, Redis]]:
    primary, replica = (Redis(port=s.port) for s in replicated)
    await primary.flushdb()
    yield primary, replica
    await primary.aclose()
    await replica.aclose()


def settings_for(server: RedisServer, replicas: int, timeout: float) -> Any:
    return make_settings(
        server.url, redis_min_replicas_ack=replicas, redis_replicas_ack_timeout_seconds=timeout
    )


async def test_writes_short_of_replicas_get_503_and_stand(
    replicated: tuple[RedisServer, RedisServer], registry: Registry, clean: tuple[Redis, Redis]
) -> None:
    primary, _ = clean
    async with (
        serve(settings_for(replicated[0], 2, 0.05), registry) as app,  # one replica exists: always short
        tenant_client(app.url) as http,
    ):
        resp = await http.post(
            "/v1/flows/echo/runs", json={"input": {"text": "x"}}, headers={"Idempotency-Key": "k"}
        )
        assert resp.status_code == 503
        error = resp.json()["error"]
        assert error["code"] == "unavailable" and error["details"]["replicasRequired"] == 2
        assert error["details"]["replicasAcknowledged"] <= 1
        assert "Idempotency-Key" in error["message"]
        assert await primary.zcard(keys.index("tenant-a")) == 1  # the write may exist: it does
        endpoint = await http.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        assert endpoint.status_code == 503 and endpoint.json()["error"]["code"] == "unavailable"
        secret = await http.get("/v1/webhooks/default-secret")  # made on first use: a write too
        assert secret.status_code == 503


async def test_a_create_answered_202_is_on_the_replica_and_a_retry_after_503_replays_it(
    replicated: tuple[RedisServer, RedisServer], registry: Registry, clean: tuple[Redis, Redis]
) -> None:
    primary, replica = clean
    async with serve(settings_for(replicated[0], 1, 0.5), registry) as app, tenant_client(app.url) as http:
        body = {"input": {"text": "x"}}
        created = await http.post("/v1/flows/echo/runs", json=body, headers={"Idempotency-Key": "a"})
        assert created.status_code == 202
        assert await replica.exists(keys.run(created.json()["id"]))  # no waiting: WAIT answered first
        made = await http.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        assert made.status_code == 201 and await replica.exists(webhook_keys.endpoint(made.json()["id"]))

        asleep = asyncio.get_running_loop().create_task(replica.execute_command("DEBUG", "SLEEP", "2"))
        await asyncio.sleep(0.1)  # the replica lags behind from now on
        lagging = await http.post("/v1/flows/echo/runs", json=body, headers={"Idempotency-Key": "b"})
        assert lagging.status_code == 503
        await asleep
        retried = await http.post("/v1/flows/echo/runs", json=body, headers={"Idempotency-Key": "b"})
        assert retried.status_code == 202 and retried.headers["Idempotent-Replayed"] == "true"
        assert await primary.zcard(keys.index("tenant-a")) == 2  # one run per key, nothing twice
