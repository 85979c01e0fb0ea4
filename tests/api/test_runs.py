import asyncio

import httpx
import pytest
from redis.asyncio import Redis

from orchestrator.flows import Registry
from orchestrator.worker.worker import WakingWorker
from tests.conftest import KEY_A, free_port, make_settings, serve, wait_for


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


async def count_runs(redis: Redis) -> int:
    return len([k async for k in redis.scan_iter("orch:run:*") if not k.endswith(b":events")])


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200


async def test_flows_are_listed_with_schemas(client: httpx.AsyncClient) -> None:
    resp = await client.get("/v1/flows")
    assert resp.status_code == 200
    body = resp.json()
    assert body["nextCursor"] is None
    echo = next(f for f in body["data"] if f["id"] == "echo")
    assert echo["description"] == "Echo the text back." and echo["stepsTotal"] == 1
    assert echo["inputSchema"]["required"] == ["text"] and echo["timeout"] == 300
    assert (await client.get("/v1/flows/echo")).json() == echo
    resp = await client.get("/v1/flows/nope")
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"


async def test_run_goes_from_queued_to_success(client: httpx.AsyncClient, worker: WakingWorker) -> None:
    resp = await client.post(
        "/v1/flows/echo/runs", json={"input": {"text": "hi"}, "metadata": {"user": "u1"}}
    )
    assert resp.status_code == 202
    run = resp.json()
    assert run["status"] == "queued" and run["id"].startswith("exec_") and run["flowId"] == "echo"
    assert run["metadata"] == {"user": "u1"} and run["metrics"]["stepsTotal"] == 1
    assert run["createdAt"].endswith("Z") and len(run["createdAt"]) == 24

    async def done() -> dict | None:
        got = (await client.get(f"/v1/runs/{run['id']}")).json()
        return got if got["status"] == "success" else None

    final = await wait_for(done)
    assert final["output"] == {"text": "hi"} and final["duration"] >= 0 and final["sequence"] == 4


async def test_failed_run_has_a_useful_error(client: httpx.AsyncClient, worker: WakingWorker) -> None:
    run = (await client.post("/v1/flows/fail/runs", json={"input": {}})).json()

    async def done() -> dict | None:
        got = (await client.get(f"/v1/runs/{run['id']}")).json()
        return got if got["status"] == "failed" else None

    final = await wait_for(done)
    assert final["error"] == {
        "code": "encrypted_pdf",
        "message": "the PDF is encrypted",
        "details": {"page": 1},
    }


async def test_cancel_running_then_conflict(client: httpx.AsyncClient, worker: WakingWorker) -> None:
    run = (await client.post("/v1/flows/slow/runs", json={"input": {"seconds": 60}})).json()

    async def running() -> bool:
        return (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "running"

    await wait_for(running)
    resp = await client.post(f"/v1/runs/{run['id']}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    resp = await client.post(f"/v1/runs/{run['id']}/cancel")
    assert resp.status_code == 409
    err = error_of(resp)
    assert err["code"] == "conflict" and err["details"]["status"] == "cancelled"


async def test_list_filters_and_paginates(client: httpx.AsyncClient) -> None:
    ids = [
        (await client.post("/v1/flows/echo/runs", json={"input": {"text": str(i)}})).json()["id"]
        for i in range(5)
    ]
    other = (await client.post("/v1/flows/noop/runs", json={"input": {}})).json()["id"]
    await client.post(f"/v1/runs/{ids[0]}/cancel")
    page = (await client.get("/v1/runs", params={"limit": 2})).json()
    assert [r["id"] for r in page["data"]] == [other, ids[4]] and page["nextCursor"] == ids[4]
    page = (await client.get("/v1/runs", params={"limit": 2, "cursor": page["nextCursor"]})).json()
    assert [r["id"] for r in page["data"]] == [ids[3], ids[2]]
    page = (await client.get("/v1/runs", params={"flowId": "echo", "status": "queued"})).json()
    assert [r["id"] for r in page["data"]] == [ids[4], ids[3], ids[2], ids[1]] and page["nextCursor"] is None
    page = (await client.get("/v1/runs", params={"status": "cancelled"})).json()
    assert [r["id"] for r in page["data"]] == [ids[0]]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": KEY_A},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
    ],
)
@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/flows"),
        ("GET", "/v1/flows/echo"),
        ("POST", "/v1/flows/echo/runs"),
        ("GET", "/v1/runs"),
        ("GET", "/v1/runs/exec_01M8JFKRM31KNKQKXWXQWENK52"),
        ("POST", "/v1/runs/exec_01M8JFKRM31KNKQKXWXQWENK52/cancel"),
    ],
)
async def test_every_route_needs_a_key(
    api_server, redis: Redis, headers: dict, method: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=api_server.url) as anon:
        resp = await anon.request(method, path, headers=headers, json={"input": {"text": "x"}})
    assert resp.status_code == 401 and error_of(resp)["code"] == "unauthorized"
    assert await count_runs(redis) == 0


async def test_tenants_never_see_each_other(client: httpx.AsyncClient, client_b: httpx.AsyncClient) -> None:
    run = (await client.post("/v1/flows/echo/runs", json={"input": {"text": "secret"}})).json()
    for resp in (
        await client_b.get(f"/v1/runs/{run['id']}"),
        await client_b.post(f"/v1/runs/{run['id']}/cancel"),
    ):
        assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"
    missing = "exec_01M8JFKRM31KNKQKXWXQWENK52"
    assert error_of(await client_b.get(f"/v1/runs/{missing}")) | {"message": ""} == error_of(
        await client_b.get(f"/v1/runs/{run['id']}")
    ) | {"message": ""}
    assert (await client_b.get("/v1/runs")).json() == {"data": [], "nextCursor": None}
    assert (await client_b.get("/v1/runs", params={"cursor": run["id"]})).json()["data"] == []
    assert (await client.get(f"/v1/runs/{run['id']}")).json()["status"] == "queued"


BAD_BODIES = [
    (b"{not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b"\xff\xfe{}", 400, "invalid_json"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
    # deep enough to pass json.loads but not pydantic's serializer (regression: was a 500)
    (b'{"input": {"text": "x"}, "metadata": {"a": ' + b"[" * 300 + b"]" * 300 + b"}}", 400, "invalid_json"),
    (b"[1, 2]", 422, "validation_error"),
    (b'"text"', 422, "validation_error"),
    (b'{"input": {"text": 5}}', 422, "validation_error"),
    (b'{"input": {}}', 422, "validation_error"),
    (b"{}", 422, "validation_error"),
    (b'{"input": {"text": "x"}, "surprise": 1}', 422, "validation_error"),
    (b'{"input": {"text": "x"}, "metadata": [1]}', 422, "validation_error"),
    (b'{"input": {"text": "x"}, "webhook": {"url": "ftp://x.example"}}', 422, "validation_error"),
    (
        b'{"input": {"text": "x"}, "webhook": {"url": "https://x.example", "events": ["nope"]}}',
        422,
        "validation_error",
    ),
]


@pytest.mark.parametrize("body,status,code", BAD_BODIES)
async def test_bad_bodies_get_clear_errors_and_change_nothing(
    client: httpx.AsyncClient, redis: Redis, body: bytes, status: int, code: str
) -> None:
    resp = await client.post(
        "/v1/flows/echo/runs", content=body, headers={"content-type": "application/json"}
    )
    assert resp.status_code == status, resp.text
    assert error_of(resp)["code"] == code
    assert await count_runs(redis) == 0


async def test_validation_error_lists_each_field(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/flows/slow/runs", json={"input": {"seconds": "long", "partial": {"a": "b"}}}
    )
    fields = {f["field"] for f in error_of(resp)["details"]["fields"]}
    assert fields == {"input.seconds", "input.partial.a"}


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "x"},
        {"status": "done"},
        {"cursor": "abc"},
        {"cursor": "exec_!!"},
    ],
)
async def test_bad_queries_are_422(client: httpx.AsyncClient, query: dict) -> None:
    resp = await client.get("/v1/runs", params=query)
    assert resp.status_code == 422 and error_of(resp)["code"] == "validation_error"
    assert error_of(resp)["details"]["fields"][0]["field"] == next(iter(query))


@pytest.mark.parametrize(
    "path", ["/v1/runs/nope", "/v1/runs/exec_01M8JFKRM31KNKQKXWXQWENK52", "/v1/runs/%00", "/v1/nothing-here"]
)
async def test_unknown_ids_and_routes_are_404(client: httpx.AsyncClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status_code == 404 and error_of(resp)["code"] == "not_found"


async def test_wrong_method_is_405_in_the_envelope(client: httpx.AsyncClient) -> None:
    resp = await client.delete("/v1/runs")
    assert resp.status_code == 405 and error_of(resp)["code"] == "method_not_allowed"


async def test_oversized_body_is_refused_while_streaming(
    redis_url: str, registry: Registry, redis: Redis
) -> None:
    settings = make_settings(redis_url, max_body_bytes=1000)
    async with (
        serve(settings, registry) as served,
        httpx.AsyncClient(base_url=served.url, headers={"Authorization": f"Bearer {KEY_A}"}) as c,
    ):
        resp = await c.post("/v1/flows/echo/runs", json={"input": {"text": "x" * 2000}})
        assert resp.status_code == 413 and error_of(resp)["code"] == "payload_too_large"
        # A chunked body with no length: send 2 KB of a body that never ends. The answer must
        # come while the client is still "sending", so the server cannot be buffering it all.
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        chunk = b'{"input": {"text": "' + b"x" * 2000
        writer.write(
            b"POST /v1/flows/echo/runs HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {KEY_A}\r\n".encode()
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(chunk):x}\r\n".encode()
            + chunk
            + b"\r\n"
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert head.startswith(b"HTTP/1.1 413")
        writer.close()
    assert await count_runs(redis) == 0


async def test_redis_down_answers_503(registry: Registry) -> None:
    settings = make_settings(f"redis://127.0.0.1:{free_port()}/0")
    async with (
        serve(settings, registry) as served,
        httpx.AsyncClient(base_url=served.url, headers={"Authorization": f"Bearer {KEY_A}"}) as c,
    ):
        for method, path in [
            ("GET", "/v1/runs/exec_01M8JFKRM31KNKQKXWXQWENK52"),
            ("GET", "/v1/runs"),
            ("POST", "/v1/flows/echo/runs"),
            ("GET", "/readyz"),
        ]:
            resp = await c.request(method, path, json={"input": {"text": "x"}})
            assert resp.status_code == 503, (path, resp.text)
            assert error_of(resp)["code"] == "unavailable"


async def test_a_stopped_api_closes_its_redis_connections(
    redis_url: str, registry: Registry, redis: Redis
) -> None:
    # Regression: the lifespan closed its Redis client but not the client's pool, so every
    # connection the API had opened stayed open (and leaked a socket) after it stopped.
    async def connections() -> int:
        return len(await redis.client_list())

    before = await connections()
    async with (
        serve(make_settings(redis_url), registry) as served,
        httpx.AsyncClient(base_url=served.url, headers={"Authorization": f"Bearer {KEY_A}"}) as c,
    ):
        for _ in range(3):
            assert (await c.post("/v1/flows/echo/runs", json={"input": {"text": "x"}})).status_code == 202
        assert await connections() > before

    async def back_to_before() -> bool:
        return await connections() == before

    await wait_for(back_to_before, timeout=5)


async def test_keys_made_by_the_cli_work_and_are_stored_hashed(api_server, redis: Redis) -> None:
    from orchestrator.api.auth import create_key

    key = await create_key(redis, "tenant-c")
    stored = await redis.hgetall("orch:apikeys")
    assert key.encode() not in b"".join(list(stored) + list(stored.values()))
    async with httpx.AsyncClient(base_url=api_server.url, headers={"Authorization": f"Bearer {key}"}) as c:
        run = (await c.post("/v1/flows/echo/runs", json={"input": {"text": "c"}})).json()
        assert (await c.get(f"/v1/runs/{run['id']}")).json()["id"] == run["id"]
    async with httpx.AsyncClient(base_url=api_server.url, headers={"Authorization": f"Bearer {KEY_A}"}) as a:
        assert (await a.get(f"/v1/runs/{run['id']}")).status_code == 404


async def test_metrics_expose_state_and_what_processes_recorded(
    client: httpx.AsyncClient, worker, redis: Redis, api_server
) -> None:
    run = (await client.post("/v1/flows/echo/runs", json={"input": {"text": "m"}})).json()
    await client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 20})
    (await client.post("/v1/flows/slow/runs", json={"input": {"seconds": 60}})).json()
    await client.post("/v1/webhooks", json={"url": "https://example.com/m"})

    async def flushed() -> bool:  # workers flush their counters once a second
        return bool(await redis.hgetall("metrics:counters"))

    await wait_for(flushed)
    async with httpx.AsyncClient(base_url=api_server.url) as anon:
        text = (await anon.get("/metrics")).text
    assert 'orch_executions{flow="echo",status="success"} 1.0' in text
    assert "orch_queue_depth" in text and "orch_running" in text and "wh_endpoint_backlog{endpoint=" in text
    assert 'orch_runs_finished_total{flow="echo",status="success"} 1.0' in text
    assert 'orch_transition_seconds_bucket{le="+Inf",to="success"} 1.0' in text
    assert "orch_queue_wait_seconds_count" in text


async def test_flows_typed_with_plain_json_types_are_served(redis_url: str, redis: Redis) -> None:
    # issue 18: `@flow("x", input=dict, output=dict)` registered, then GET /v1/flows answered 500
    # for every flow and creating a run was 500 too
    from orchestrator.flows import Registry, define
    from tests.conftest import make_settings, serve, tenant_client

    def passthrough(ctx: object, data: dict) -> dict:  # type: ignore[type-arg]
        return data

    registry = Registry([define("plain-json", passthrough, input=dict, output=dict)])
    async with serve(make_settings(redis_url), registry) as served, tenant_client(served.url) as http:
        listed = await http.get("/v1/flows")
        assert listed.status_code == 200
        assert listed.json()["data"][0]["inputSchema"] == {"additionalProperties": True, "type": "object"}
        created = await http.post("/v1/flows/plain-json/runs", json={"input": {"a": [1, 2]}})
        assert created.status_code == 202
        bad = await http.post("/v1/flows/plain-json/runs", json={"input": [1]})
        assert bad.status_code == 422 and bad.json()["error"]["details"]["fields"][0]["field"] == "input"
