"""From run creation to signed deliveries reaching a receiver, through real processes and HTTP."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import standardwebhooks.webhooks as standard
import svix.webhooks as svix_webhooks
from aiohttp import web
from redis.asyncio import Redis

from orchestrator.flows import Registry
from orchestrator.settings import Settings
from orchestrator.worker.worker import WakingWorker
from tests.conftest import make_settings, spawn, wait_for
from tests.receiver import Receiver
from tests.webhooks.helpers import running_dispatcher
from webhooks import verify
from webhooks.outbox import OUTBOX_STREAM


async def test_a_registered_webhook_receives_every_transition(
    client: httpx.AsyncClient, worker: WakingWorker, redis: Redis
) -> None:
    receiver = await Receiver(script=[500, 500, 500]).start()  # the first three attempts fail
    try:
        created = await client.post("/v1/webhooks", json={"url": receiver.url, "description": "mine"})
        assert created.status_code == 201
        secret = created.json()["secret"]
        assert secret.startswith("whsec_")
        async with running_dispatcher(redis):
            run = (await client.post("/v1/flows/echo/runs", json={"input": {"text": "hook"}})).json()

            endpoint_id = created.json()["id"]

            async def delivered() -> bool:
                view = (await client.get(f"/v1/webhooks/{endpoint_id}/deliveries")).json()["data"]
                return len(view) == 3 and all(d["status"] == "succeeded" for d in view)

            await wait_for(delivered, timeout=20)
        by_type: dict[str, set[str]] = {}
        for r in receiver.requests:
            standard.Webhook(secret).verify(r.body, r.headers)
            svix_webhooks.Webhook(secret).verify(r.body, r.headers)
            event = verify(r.body, r.headers, secret)
            assert event.data["id"] == run["id"]
            by_type.setdefault(event.type, set()).add(r.id)
        assert "execution.progress" not in by_type  # not in the default set
        assert all(len(ids) == 1 for ids in by_type.values())  # one webhook-id per message
        seqs = {r.json["type"]: r.json["data"]["sequence"] for r in receiver.requests}
        assert seqs["execution.queued"] < seqs["execution.running"] < seqs["execution.success"]
        # The deliveries view explains each attempt.
        view = (await client.get(f"/v1/webhooks/{endpoint_id}/deliveries")).json()["data"]
        assert {d["eventType"] for d in view} == {
            "execution.queued",
            "execution.running",
            "execution.success",
        }
        attempts = [a for d in view for a in d["attempts"]]
        assert sorted(a["statusCode"] for a in attempts) == [200, 200, 200, 500, 500, 500]
        assert all(d["status"] == "succeeded" and d["runId"] == run["id"] for d in view)
        counters = await redis.hgetall("metrics:counters")  # flushed by the dispatcher when it stopped
        assert int(counters[b"wh_attempts_total|outcome=delivered"]) == 3
        assert int(counters[b"wh_attempts_total|outcome=retry"]) == 3
    finally:
        await receiver.stop()


async def test_a_run_webhook_given_at_creation(
    client: httpx.AsyncClient, worker: WakingWorker, redis: Redis
) -> None:
    receiver = await Receiver().start()
    try:
        secret = (await client.get("/v1/webhooks/default-secret")).json()["secret"]
        assert (await client.get("/v1/webhooks/default-secret")).json()["secret"] == secret
        async with running_dispatcher(redis):
            body = {"input": {"text": "x"}, "webhook": {"url": receiver.url, "events": ["execution.success"]}}
            run = (await client.post("/v1/flows/echo/runs", json=body)).json()
            await wait_for(lambda: receiver.types() == ["execution.success"], timeout=20)
        event = verify(receiver.requests[0].body, receiver.requests[0].headers, secret)
        assert event.data["id"] == run["id"] and event.data["status"] == "success"
    finally:
        await receiver.stop()


async def slow_ok(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(0.05)
    return web.Response(status=200)


async def test_dispatcher_killed_mid_delivery_loses_nothing(
    redis_url: str, redis: Redis, registry: Registry, client: httpx.AsyncClient
) -> None:
    receivers = [await Receiver(default=slow_ok).start() for _ in range(3)]
    settings: Settings = make_settings(redis_url)
    try:
        for r in receivers:
            assert (await client.post("/v1/webhooks", json={"url": r.url})).status_code == 201
        ids = [(await client.post("/v1/flows/slow/runs", json={"input": {}})).json()["id"] for _ in range(60)]
        for rid in ids:
            await client.post(f"/v1/runs/{rid}/cancel")
        expected = await redis.xlen(OUTBOX_STREAM)
        assert expected == 120  # queued + cancelled for each run
        for _ in range(3):
            proc = spawn(settings, "dispatcher")
            await wait_for(lambda: sum(len(r.requests) for r in receivers) > 0, timeout=20)
            await asyncio.sleep(0.2)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc = spawn(settings, "dispatcher")
        try:

            def everything() -> bool:
                return all(len(set(r.ids())) == expected for r in receivers)

            await wait_for(everything, timeout=60)
        finally:
            proc.terminate()
            proc.wait()
    finally:
        for r in receivers:
            await r.stop()
    for r in receivers:
        duplicates = len(r.requests) - len(set(r.ids()))
        assert duplicates <= 3 * settings.webhook_endpoint_concurrency  # only what was in flight


async def test_webhook_api_validates_and_scopes(
    client: httpx.AsyncClient, client_b: httpx.AsyncClient, redis: Redis
) -> None:
    bad = [
        {"url": "ftp://example.com/x"},
        {"url": "http://user:pw@example.com/"},
        {"url": "https://example.com", "events": ["nope"]},
        {"url": "https://example.com", "flowIds": ["not-a-flow"]},
        {"url": "https://example.com", "secret": "whsec_c2hvcnQ="},
        {"url": "https://example.com", "surprise": True},
        {"url": "x" * 3000},
        {},
    ]
    for body in bad:
        resp = await client.post("/v1/webhooks", json=body)
        assert resp.status_code == 422, body
        assert resp.json()["error"]["code"] == "validation_error"
    assert (await client.post("/v1/webhooks", content=b"{nope")).status_code == 400
    for limit in ("²", "0", "101", "x"):  # regression: "²" passed isdigit() and crashed int()
        assert (await client.get("/v1/webhooks", params={"limit": limit})).status_code == 422
    ok = await client.post(
        "/v1/webhooks",
        json={"url": "https://example.com/a", "events": ["execution.failed"], "flowIds": ["echo"]},
    )
    assert ok.status_code == 201
    ep = ok.json()
    assert set(ep) >= {"id", "url", "events", "flowIds", "description", "enabled", "createdAt", "secret"}
    listed = (await client.get("/v1/webhooks")).json()
    assert [e["id"] for e in listed["data"]] == [ep["id"]] and listed["data"][0]["secret"] is None
    assert ep["secret"] not in (await client.get(f"/v1/webhooks/{ep['id']}")).text
    for method, path in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/rotate-secret"),
        ("POST", "/test"),
        ("GET", "/deliveries"),
        ("POST", "/recover"),
    ]:
        resp = await client_b.request(
            method, f"/v1/webhooks/{ep['id']}{path}", json={"since": "2026-01-01T00:00:00Z"}
        )
        assert resp.status_code == 404, (method, path)
    assert (await client_b.get("/v1/webhooks")).json()["data"] == []
    patched = await client.patch(f"/v1/webhooks/{ep['id']}", json={"enabled": False, "description": "off"})
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    assert (await client.patch(f"/v1/webhooks/{ep['id']}", json={"url": None})).status_code == 422
    rotated = (await client.post(f"/v1/webhooks/{ep['id']}/rotate-secret")).json()["secret"]
    assert rotated != ep["secret"] and rotated.startswith("whsec_")
    assert (
        await client.post(f"/v1/webhooks/{ep['id']}/recover", json={"since": "yesterday"})
    ).status_code == 422
    assert (await client.delete(f"/v1/webhooks/{ep['id']}")).status_code == 204
    assert (await client.get(f"/v1/webhooks/{ep['id']}")).status_code == 404


async def test_test_message_retry_and_recover_through_the_api(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    receiver = await Receiver(default=500).start()
    try:
        ep = (await client.post("/v1/webhooks", json={"url": receiver.url})).json()
        async with running_dispatcher(redis):
            sent = await client.post(f"/v1/webhooks/{ep['id']}/test")
            assert sent.status_code == 202
            message_id = sent.json()["messageId"]

            async def failed() -> bool:
                page = (
                    await client.get(f"/v1/webhooks/{ep['id']}/deliveries", params={"status": "failed"})
                ).json()
                return [d["id"] for d in page["data"]] == [message_id]

            await wait_for(failed, timeout=20)
            receiver.default = 200
            again = await client.post(f"/v1/webhooks/{ep['id']}/deliveries/{message_id}/retry")
            assert again.status_code == 202
            await wait_for(
                lambda: (
                    receiver.requests[-1:]
                    and receiver.requests[-1].headers.get("x-never") is None
                    and len(receiver.requests) == 6
                ),
                timeout=20,
            )
            assert set(receiver.ids()) == {message_id} and receiver.types()[0] == "webhook.test"
            missing = await client.post(
                f"/v1/webhooks/{ep['id']}/deliveries/msg_01M8JFKRM31KNKQKXWXQWENK52/retry"
            )
            assert missing.status_code == 404
            recovered = await client.post(
                f"/v1/webhooks/{ep['id']}/recover", json={"since": "2020-01-01T00:00:00Z"}
            )
            assert recovered.status_code == 202 and recovered.json() == {"count": 0}
    finally:
        await receiver.stop()


async def test_a_runs_delivery_history_stays_readable_after_its_endpoint_is_deleted(
    client: httpx.AsyncClient, worker: WakingWorker, redis: Redis
) -> None:
    # Issue 18: `webhooks listen` deletes its endpoint when it stops, and the run's report was empty.
    receiver = await Receiver().start()
    try:
        created = (await client.post("/v1/webhooks", json={"url": receiver.url})).json()
        async with running_dispatcher(redis):
            run = (await client.post("/v1/flows/echo/runs", json={"input": {"text": "x"}})).json()
            await wait_for(lambda: len(receiver.requests) == 3, timeout=20)

            async def recorded() -> bool:
                view = (await client.get(f"/v1/webhooks/{created['id']}/deliveries")).json()["data"]
                return len(view) == 3 and all(d["status"] == "succeeded" for d in view)

            await wait_for(recorded, timeout=20)
        assert (await client.delete(f"/v1/webhooks/{created['id']}")).status_code == 204
        report = (await client.get(f"/v1/runs/{run['id']}/deliveries")).json()
        [gone] = report["data"]
        assert gone["endpointId"] == created["id"] and gone["url"] == receiver.url and gone["deletedAt"]
        assert [e["status"] for e in gone["events"]] == ["succeeded"] * 3
        assert all(e["attempts"][0]["statusCode"] == 200 for e in gone["events"])
        # a run made after the deletion shows nothing of it, and the deleted endpoint is not listed
        later = (await client.post("/v1/flows/echo/runs", json={"input": {"text": "y"}})).json()
        assert (await client.get(f"/v1/runs/{later['id']}/deliveries")).json()["data"] == []
        assert (await client.get("/v1/webhooks")).json()["data"] == []
    finally:
        await receiver.stop()
