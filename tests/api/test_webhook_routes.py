"""The webhook routes issue 14 added or extended, over real HTTP: default-secret rotation, custom
headers, the endpoint's event log, the event-type catalog and typed test messages."""

from __future__ import annotations

import json

import httpx
import pytest
import standardwebhooks.webhooks as standard
import svix.webhooks as svix_webhooks
from redis.asyncio import Redis

from tests.deadlines import wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import running_dispatcher
from webhooks import keys as wh_keys
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


# ----- custom headers ----------------------------------------------------------------------------

FORBIDDEN = [
    "webhook-id",
    "Webhook-Signature",
    "webhook-anything",
    "svix-signature",
    "Content-Type",
    "content-length",
    "Host",
    "Connection",
    "keep-alive",
    "Transfer-Encoding",
    "TE",
    "Trailer",
    "Upgrade",
    "Proxy-Authorization",
    "proxy-authenticate",
]


@pytest.mark.parametrize("name", FORBIDDEN)
async def test_headers_that_would_override_ours_are_refused(client: httpx.AsyncClient, name: str) -> None:
    for method, path in (("POST", "/v1/webhooks"), ("PATCH", "{endpoint}")):
        if path == "{endpoint}":
            made = await client.post("/v1/webhooks", json={"url": "https://example.com/h"})
            path = f"/v1/webhooks/{made.json()['id']}"
        body = {"url": "https://example.com/h", "headers": {name: "value-1"}}
        if method == "PATCH":
            body.pop("url")
        resp = await client.request(method, path, json=body)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["details"]["fields"][0]["field"] == "headers"
        assert "value-1" not in resp.text


@pytest.mark.parametrize(
    "headers",
    [
        {"X Bad": "v"},  # not a token
        {"X-A": "line\r\nX-Injected: 1"},
        {"X-A": ""},
        {"X-A": " padded"},
        {"X-A": "caf\u00e9"},
        {"X-A": "v", "x-a": "w"},  # the same name twice
        {f"X-{n}": "v" for n in range(21)},
        {"X-A": "v" * 1025},
        {"X-" + "a" * 70: "v"},
        {"X-A": 5},
        {"X-A": "********"},  # the mask is not a value
    ],
)
async def test_malformed_headers_are_refused(client: httpx.AsyncClient, redis: Redis, headers: dict) -> None:
    resp = await client.post("/v1/webhooks", json={"url": "https://example.com/h", "headers": headers})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["details"]["fields"][0]["field"].startswith("headers")
    assert (await client.get("/v1/webhooks")).json()["data"] == []


async def test_header_values_are_masked_everywhere_and_a_patch_can_send_the_mask_back(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    token = "tok-" + "9" * 30
    made = await client.post(
        "/v1/webhooks",
        json={"url": "https://example.com/h", "headers": {"X-Gateway-Token": token, "X-Env": "prod"}},
    )
    assert made.status_code == 201
    ep = made.json()
    assert ep["headers"] == {"X-Gateway-Token": "********", "X-Env": "********"}
    for resp in (await client.get(f"/v1/webhooks/{ep['id']}"), await client.get("/v1/webhooks")):
        assert token not in resp.text and "prod" not in resp.text and "X-Gateway-Token" in resp.text
    # Sent back as read: the masked value keeps the stored one; a new value replaces; absent names go.
    patched = await client.patch(
        f"/v1/webhooks/{ep['id']}", json={"headers": {"X-Gateway-Token": "********", "X-New": "n1"}}
    )
    assert patched.status_code == 200 and patched.json()["headers"] == {
        "X-Gateway-Token": "********",
        "X-New": "********",
    }
    stored = json.loads(await redis.hget(wh_keys.endpoint(ep["id"]), "headers"))
    assert stored == {"X-Gateway-Token": token, "X-New": "n1"}
    unknown = await client.patch(f"/v1/webhooks/{ep['id']}", json={"headers": {"X-Other": "********"}})
    assert unknown.status_code == 422
    cleared = await client.patch(f"/v1/webhooks/{ep['id']}", json={"headers": {}})
    assert cleared.json()["headers"] == {}


async def test_custom_headers_reach_a_real_receiver_beside_valid_signatures(
    client: httpx.AsyncClient, redis: Redis, worker
) -> None:
    receiver = await Receiver().start()
    try:
        made = await client.post(
            "/v1/webhooks",
            json={
                "url": receiver.url,
                "events": ["execution.success"],
                "headers": {"Authorization": "Bearer gw-1"},
            },
        )
        secret = made.json()["secret"]
        async with running_dispatcher(redis):
            await client.post("/v1/flows/echo/runs", json={"input": {"text": "h"}})
            await wait_for(lambda: len(receiver.requests) == 1, timeout=20)
        [got] = receiver.requests
        assert got.headers["authorization"] == "Bearer gw-1"
        standard.Webhook(secret).verify(got.body, got.headers)
        svix_webhooks.Webhook(secret).verify(got.body, got.headers)
    finally:
        await receiver.stop()


# ----- the endpoint's event log ------------------------------------------------------------------


async def test_the_event_log_route_pages_the_endpoints_operational_events(
    client: httpx.AsyncClient, client_b: httpx.AsyncClient
) -> None:
    ep = (await client.post("/v1/webhooks", json={"url": "https://example.com/h"})).json()
    assert (await client.get(f"/v1/webhooks/{ep['id']}/events")).json() == {"data": [], "nextCursor": None}
    await client.patch(f"/v1/webhooks/{ep['id']}", json={"enabled": False})
    await client.patch(f"/v1/webhooks/{ep['id']}", json={"enabled": True})
    page = (await client.get(f"/v1/webhooks/{ep['id']}/events", params={"limit": 1})).json()
    [newest] = page["data"]
    assert newest["type"] == "endpoint.enabled" and newest["data"]["reason"] == "manual"
    assert newest["data"]["endpointId"] == ep["id"] and newest["id"].startswith("msg_")
    rest = (await client.get(f"/v1/webhooks/{ep['id']}/events", params={"cursor": page["nextCursor"]})).json()
    assert [e["type"] for e in rest["data"]] == ["endpoint.disabled"] and rest["nextCursor"] is None
    assert (await client_b.get(f"/v1/webhooks/{ep['id']}/events")).status_code == 404


# ----- ordering ----------------------------------------------------------------------------------


async def test_an_ordered_endpoint_gets_each_runs_transitions_in_sequence_order(
    client: httpx.AsyncClient, redis: Redis, worker
) -> None:
    import asyncio
    import random

    from aiohttp import web

    rng = random.Random(7)

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(rng.uniform(0, 0.1))
        return web.Response(status=500 if rng.random() < 0.2 else 200)

    receiver = await Receiver(default=slow).start()
    try:
        made = await client.post("/v1/webhooks", json={"url": receiver.url, "ordering": "run"})
        assert made.status_code == 201 and made.json()["ordering"] == "run"
        assert (await client.get(f"/v1/webhooks/{made.json()['id']}")).json()["ordering"] == "run"
        bad = await client.post("/v1/webhooks", json={"url": receiver.url, "ordering": "endpoint"})
        assert bad.status_code == 422 and bad.json()["error"]["details"]["fields"][0]["field"] == "ordering"
        async with running_dispatcher(redis):
            runs = [
                (await client.post("/v1/flows/echo/runs", json={"input": {"text": str(n)}})).json()["id"]
                for n in range(20)
            ]

            def delivered() -> bool:
                ok = {(r.json["data"]["id"], r.json["type"]) for r in receiver.requests}
                return all((run, "execution.success") in ok for run in runs)

            await wait_for(delivered, timeout=60, interval=0.1)
        by_run: dict[str, list[int]] = {}
        for r in receiver.requests:
            by_run.setdefault(r.json["data"]["id"], []).append(r.json["data"]["sequence"])
        for run in runs:
            assert by_run[run] == sorted(by_run[run]), by_run[run]
        patched = await client.patch(f"/v1/webhooks/{made.json()['id']}", json={"ordering": "none"})
        assert patched.json()["ordering"] == "none"
    finally:
        await receiver.stop()
