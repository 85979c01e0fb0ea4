"""Per-run read tokens (``POST /v1/runs/{id}/tokens``): what they read, what they refuse, how they end."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from redis.asyncio import Redis

from orchestrator.runs import keys
from tests.conftest import ServedApp, wait_for


async def _run(client: httpx.AsyncClient) -> str:
    created = await client.post("/v1/flows/echo/runs", json={"input": {"text": "token"}})
    return str(created.json()["id"])


def _reader(api_server: ServedApp, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api_server.url, headers={"Authorization": f"Bearer {token}"})


async def test_a_token_reads_its_run_and_events_for_15_minutes_by_default(
    client: httpx.AsyncClient, api_server: ServedApp
) -> None:
    run_id = await _run(client)
    made = await client.post(f"/v1/runs/{run_id}/tokens")
    assert made.status_code == 201, made.text
    body = made.json()
    assert set(body) == {"token", "runId", "expiresAt"} and body["runId"] == run_id
    now = (await client.get(f"/v1/runs/{run_id}")).json()["createdAt"]
    lifetime = datetime.fromisoformat(body["expiresAt"]) - datetime.fromisoformat(now)
    assert 14 * 60 < lifetime.total_seconds() <= 15 * 60 + 5
    async with _reader(api_server, body["token"]) as reader:
        got = await reader.get(f"/v1/runs/{run_id}")
        assert got.status_code == 200 and got.json()["id"] == run_id
        assert got.headers["access-control-allow-origin"] == "*"
        events = await reader.get(f"/v1/runs/{run_id}/events")
        assert [e["type"] for e in events.json()["data"]] == ["execution.queued"]
    # The query form, for EventSource; the SSE stream answers too.
    query = {"access_token": body["token"]}
    async with httpx.AsyncClient(base_url=api_server.url, timeout=5) as anon:
        assert (await anon.get(f"/v1/runs/{run_id}", params=query)).status_code == 200
        async with anon.stream(
            "GET", f"/v1/runs/{run_id}/events", params=query, headers={"accept": "text/event-stream"}
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["access-control-allow-origin"] == "*"
            async for line in stream.aiter_lines():
                if line.startswith("event:"):
                    assert line == "event: execution.queued"
                    break
    # A key's answers carry no CORS header: only token reads are for any origin.
    assert "access-control-allow-origin" not in (await client.get(f"/v1/runs/{run_id}")).headers


async def test_a_token_reads_nothing_else(client: httpx.AsyncClient, api_server: ServedApp) -> None:
    run_id, other = await _run(client), await _run(client)
    token = (await client.post(f"/v1/runs/{run_id}/tokens", json={})).json()["token"]
    async with _reader(api_server, token) as reader:
        assert (await reader.get(f"/v1/runs/{other}")).status_code == 404
        assert (await reader.get(f"/v1/runs/{other}/events")).json()["error"]["code"] == "not_found"
        for method, path in (
            ("GET", "/v1/runs"),
            ("GET", f"/v1/runs/{run_id}/wait?timeout=0"),
            ("GET", f"/v1/runs/{run_id}/deliveries"),
            ("POST", f"/v1/runs/{run_id}/cancel"),
            ("POST", f"/v1/runs/{run_id}/tokens"),
            ("GET", "/v1/webhooks"),
            ("GET", "/v1/webhooks/default-secret"),
        ):
            answer = await reader.request(method, path)
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized", path
    assert (await client.get(f"/v1/runs/{run_id}")).json()["status"] == "queued"


async def test_another_tenants_run_gets_no_token(
    client: httpx.AsyncClient, client_b: httpx.AsyncClient, redis: Redis
) -> None:
    run_id = await _run(client)
    refused = await client_b.post(f"/v1/runs/{run_id}/tokens")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert await redis.exists(keys.RUN_TOKEN_SECRET) == 0  # nothing was made on the way to the 404


async def test_a_token_made_for_one_tenant_fails_if_the_run_is_anothers(
    client: httpx.AsyncClient, api_server: ServedApp, redis: Redis
) -> None:
    # The tenant is bound by the signature: were the run's owner to differ, the token would not verify.
    run_id = await _run(client)
    token = (await client.post(f"/v1/runs/{run_id}/tokens")).json()["token"]
    await redis.hset(keys.run(run_id), "tenant", "tenant-b")
    async with _reader(api_server, token) as reader:
        assert (await reader.get(f"/v1/runs/{run_id}")).status_code == 401


async def test_an_expired_or_altered_token_is_refused(
    client: httpx.AsyncClient, api_server: ServedApp
) -> None:
    run_id = await _run(client)
    short = (await client.post(f"/v1/runs/{run_id}/tokens", json={"ttlSeconds": 1})).json()["token"]
    good = (await client.post(f"/v1/runs/{run_id}/tokens")).json()["token"]
    head, expiry, signature = good.split(".")
    swapped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    later = f"{head}.{int(expiry) + 3_600_000}.{signature}"  # a longer life is not signed
    async with httpx.AsyncClient(base_url=api_server.url) as anon:
        for bad in (swapped, later, "rt_nonsense", good + "x"):
            answer = await anon.get(f"/v1/runs/{run_id}", headers={"Authorization": f"Bearer {bad}"})
            assert answer.status_code == 401, bad
        bad_query = await anon.get(f"/v1/runs/{run_id}", params={"access_token": "sk_not_a_token"})
        assert bad_query.status_code == 401

        async def expired() -> bool:
            answer = await anon.get(f"/v1/runs/{run_id}", params={"access_token": short})
            return answer.status_code == 401 and "expired" in answer.json()["error"]["message"]

        await wait_for(expired, timeout=5, interval=0.1)
        assert (await anon.get(f"/v1/runs/{run_id}", params={"access_token": good})).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b'{"ttlSeconds": 0}', 422, "ttlSeconds"),
        (b'{"ttlSeconds": 86401}', 422, "ttlSeconds"),
        (b'{"ttlSeconds": "soon"}', 422, "ttlSeconds"),
        (b'{"ttl": 60}', 422, "ttl"),
        (b"[]", 422, "body"),
        (b"{not json", 400, None),
        (b" ", 400, None),
    ],
)
async def test_bad_bodies_are_refused_and_make_nothing(
    client: httpx.AsyncClient, redis: Redis, body: bytes, status: int, field: str | None
) -> None:
    run_id = await _run(client)
    answer = await client.post(f"/v1/runs/{run_id}/tokens", content=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    if field is not None:
        assert field in [f["field"] for f in error["details"]["fields"]]
    assert await redis.exists(keys.RUN_TOKEN_SECRET) == 0
