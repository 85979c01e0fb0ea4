"""The webhook routes issue 14 added or extended, over real HTTP: default-secret rotation, custom
headers, the endpoint's event log, the event-type catalog and typed test messages."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from webhooks.secrets import MAX_PREVIOUS_SECRETS


async def test_the_default_secret_rotates_with_a_24_hour_overlap_and_a_cap(
    client: httpx.AsyncClient, client_b: httpx.AsyncClient, redis: Redis
) -> None:
    first = (await client.get("/v1/webhooks/default-secret")).json()["secret"]
    other = (await client_b.get("/v1/webhooks/default-secret")).json()["secret"]
    rotated = await client.post("/v1/webhooks/default-secret/rotate")
    assert rotated.status_code == 200 and set(rotated.json()) == {"secret"}
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != first
    assert (await client.get("/v1/webhooks/default-secret")).json()["secret"] == new
    assert (await client_b.get("/v1/webhooks/default-secret")).json()["secret"] == other  # per tenant
    for _ in range(MAX_PREVIOUS_SECRETS - 1):
        assert (await client.post("/v1/webhooks/default-secret/rotate")).status_code == 200
    current = (await client.get("/v1/webhooks/default-secret")).json()["secret"]
    refused = await client.post("/v1/webhooks/default-secret/rotate")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "conflict" and error["details"]["maxPreviousSecrets"] == MAX_PREVIOUS_SECRETS
    assert "retryAt" in error["details"] and current not in refused.text
    assert (await client.get("/v1/webhooks/default-secret")).json()["secret"] == current


async def test_endpoint_rotation_is_refused_at_the_cap_with_409(client: httpx.AsyncClient) -> None:
    ep = (await client.post("/v1/webhooks", json={"url": "https://example.com/hook"})).json()
    for _ in range(MAX_PREVIOUS_SECRETS):
        assert (await client.post(f"/v1/webhooks/{ep['id']}/rotate-secret")).status_code == 200
    refused = await client.post(f"/v1/webhooks/{ep['id']}/rotate-secret")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "conflict"
