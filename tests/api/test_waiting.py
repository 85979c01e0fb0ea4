"""Waiting without polling: /wait, Prefer: wait, the event log, SSE, batch, idempotency, expiry."""

import asyncio
import json
import time

import aiohttp
import httpx
import pytest
from redis.asyncio import Redis

from orchestrator.api.waiting import prefer_wait
from orchestrator.flows import Registry
from orchestrator.runs import keys
from orchestrator.runs.retention import trim_indexes
from orchestrator.worker.worker import WakingWorker
from tests.conftest import KEY_A, ServedApp, make_settings, running_worker, serve, tenant_client, wait_for
from tests.runs.test_store import make_store


def waiters(api_server: ServedApp) -> int:
    return len(api_server.app.state.services.waiters)


async def create(client: httpx.AsyncClient, flow: str = "slow", data: dict | None = None, **kw) -> dict:
    resp = await client.post(f"/v1/flows/{flow}/runs", json={"input": data if data is not None else {}}, **kw)
    assert resp.status_code in (200, 202), resp.text
    return resp.json()


async def test_wait_is_released_by_the_transition(client: httpx.AsyncClient, api_server: ServedApp) -> None:
    run = await create(client, data={"seconds": 60})
    waiting = asyncio.ensure_future(client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 60}))
    await wait_for(lambda: waiters(api_server) == 1)
    await client.post(f"/v1/runs/{run['id']}/cancel")
    # A wake-up, not the 60 s timeout, must end the wait: the deadline here is far shorter.
    resp = await asyncio.wait_for(waiting, 10)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert waiters(api_server) == 0


async def test_wait_times_out_with_the_current_state(
    client: httpx.AsyncClient, api_server: ServedApp
) -> None:
    run = await create(client, data={"seconds": 60})
    resp = await client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": "0.2"})
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    assert waiters(api_server) == 0


async def test_wait_on_a_terminal_run_answers_at_once(client: httpx.AsyncClient) -> None:
    run = await create(client, data={"seconds": 60})
    await client.post(f"/v1/runs/{run['id']}/cancel")
    resp = await asyncio.wait_for(client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 60}), 10)
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"


async def test_wait_sees_a_run_through_running_to_success(
    client: httpx.AsyncClient, worker: WakingWorker
) -> None:
    run = await create(client, flow="echo", data={"text": "w"})
    resp = await asyncio.wait_for(client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 60}), 20)
    assert resp.status_code == 200 and resp.json()["status"] == "success"


@pytest.mark.parametrize("timeout", ["-1", "61", "x", "nan"])
async def test_wait_timeout_is_validated(client: httpx.AsyncClient, timeout: str) -> None:
    run = await create(client, data={"seconds": 60})
    resp = await client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": timeout})
    assert resp.status_code == 422 and resp.json()["error"]["details"]["fields"][0]["field"] == "timeout"


async def test_wait_on_foreign_or_missing_run_is_404(
    client: httpx.AsyncClient, client_b: httpx.AsyncClient
) -> None:
    run = await create(client, data={"seconds": 60})
    assert (await client_b.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 1})).status_code == 404
    assert (await client.get("/v1/runs/exec_01M8JFKRM31KNKQKXWXQWENK52/wait")).status_code == 404


async def client_count(redis: Redis) -> int:
    return len(await redis.client_list())


async def test_a_thousand_waiters_share_one_subscription(
    api_server: ServedApp, redis: Redis, client: httpx.AsyncClient
) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        api_server.url, connector=connector, headers={"Authorization": f"Bearer {KEY_A}"}
    ) as many:

        async def one(run_id: str) -> tuple[int, dict]:
            async with many.get(f"/v1/runs/{run_id}/wait", params={"timeout": "60"}) as resp:
                return resp.status, await resp.json()

        async def park(run_id: str) -> list[asyncio.Future]:
            tasks = [asyncio.ensure_future(one(run_id)) for _ in range(1000)]
            await wait_for(lambda: waiters(api_server) == 1000, timeout=60)
            return tasks

        warm = await create(client, data={"seconds": 60})
        tasks = await park(warm["id"])
        await client.post(f"/v1/runs/{warm['id']}/cancel")
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        baseline = await client_count(redis)

        run = await create(client, data={"seconds": 60})
        tasks = await park(run["id"])
        parked = await client_count(redis)
        await client.post(f"/v1/runs/{run['id']}/cancel")
        results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert all(status == 200 and body["status"] == "cancelled" for status, body in results)
    assert parked <= baseline  # 1,000 parked waiters cost no Redis connection
    assert parked <= api_server.app.state.services.settings.redis_max_connections + 5
    assert waiters(api_server) == 0


async def test_a_client_that_disconnects_frees_its_waiter(
    api_server: ServedApp, client: httpx.AsyncClient
) -> None:
    run = await create(client, data={"seconds": 60})
    _reader, writer = await asyncio.open_connection("127.0.0.1", api_server.port)
    writer.write(
        f"GET /v1/runs/{run['id']}/wait?timeout=60 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {KEY_A}\r\n\r\n".encode()
    )
    await writer.drain()
    await wait_for(lambda: waiters(api_server) == 1)
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: waiters(api_server) == 0, timeout=10)


async def test_prefer_wait_returns_the_terminal_run(client: httpx.AsyncClient, worker: WakingWorker) -> None:
    resp = await client.post(
        "/v1/flows/echo/runs", json={"input": {"text": "p"}}, headers={"Prefer": "wait=30"}
    )
    assert resp.status_code == 200 and resp.json()["status"] == "success"
    assert resp.headers["preference-applied"] == "wait=30"


async def test_prefer_wait_gives_202_when_not_done(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/v1/flows/slow/runs", json={"input": {}}, headers={"Prefer": "respond-async, wait=0.2"}
    )
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    assert resp.headers["preference-applied"] == "wait=0.2"


@pytest.mark.parametrize(
    "header,expected",
    [
        ("wait=5", 5.0),
        ("wait=99999", 60.0),
        ("respond-async; wait=2", 2.0),
        ("handling=lenient", None),
        ("wait=soon", None),
        ("WAIT = 3", 3.0),
    ],
)
def test_prefer_header_parsing(header: str, expected: float | None) -> None:
    from starlette.requests import Request

    request = Request({"type": "http", "headers": [(b"prefer", header.encode())]})
    assert prefer_wait(request) == expected


async def test_event_log_lists_every_transition_in_order(
    client: httpx.AsyncClient, worker: WakingWorker
) -> None:
    run = await create(client, flow="echo", data={"text": "e"})
    await client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 30})
    body = (await client.get(f"/v1/runs/{run['id']}/events")).json()
    types = [e["type"] for e in body["data"]]
    assert types == ["execution.queued", "execution.running", "execution.progress", "execution.success"]
    assert [e["sequence"] for e in body["data"]] == [1, 2, 3, 4]
    first = body["data"][0]
    assert set(first) == {"id", "type", "timestamp", "sequence", "data"} and first["id"].startswith("msg_")
    assert first["data"]["status"] == "queued"


def parse_sse(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        fields: dict = {}
        for line in block.splitlines():
            if line.startswith(":"):
                fields.setdefault("comments", []).append(line)
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            events.append(fields)
    return events


async def read_stream(client: httpx.AsyncClient, run_id: str, last: int | None = None) -> str:
    headers = {"Accept": "text/event-stream"}
    if last is not None:
        headers["Last-Event-ID"] = str(last)
    chunks = []
    async with client.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        async for chunk in resp.aiter_text():
            chunks.append(chunk)
    return "".join(chunks)


async def test_sse_streams_live_and_closes_after_the_terminal_event(
    client: httpx.AsyncClient, api_server: ServedApp
) -> None:
    run = await create(client, data={"seconds": 60})
    reading = asyncio.ensure_future(read_stream(client, run["id"]))
    await wait_for(lambda: waiters(api_server) == 1)
    await asyncio.sleep(1.2)  # let heartbeats (every 0.5 s in tests) flow while nothing happens
    await client.post(f"/v1/runs/{run['id']}/cancel")
    text = await asyncio.wait_for(reading, 10)
    events = parse_sse(text)
    assert [(e["id"], e["event"]) for e in events] == [
        ("1", "execution.queued"),
        ("2", "execution.cancelled"),
    ]
    assert json.loads(events[1]["data"])["data"]["status"] == "cancelled"
    assert ": heartbeat" in text
    assert waiters(api_server) == 0


async def test_sse_resumes_after_each_possible_last_event_id(
    client: httpx.AsyncClient, worker: WakingWorker
) -> None:
    run = await create(client, flow="echo", data={"text": "r"})
    await client.get(f"/v1/runs/{run['id']}/wait", params={"timeout": 30})
    total = len((await client.get(f"/v1/runs/{run['id']}/events")).json()["data"])
    assert total == 4
    for last in range(total + 1):
        events = parse_sse(await asyncio.wait_for(read_stream(client, run["id"], last), 10))
        assert [int(e["id"]) for e in events] == list(range(last + 1, total + 1))


async def test_sse_resume_mid_run_has_no_gap_and_no_duplicate(
    client: httpx.AsyncClient, api_server: ServedApp
) -> None:
    run = await create(client, data={"seconds": 60})
    first = parse_sse(
        await asyncio.wait_for(asyncio.shield(read_stream_until(client, run["id"], count=1)), 10)
    )
    assert [e["id"] for e in first] == ["1"]
    reading = asyncio.ensure_future(read_stream(client, run["id"], last=1))
    await wait_for(lambda: waiters(api_server) == 1)
    await client.post(f"/v1/runs/{run['id']}/cancel")
    events = parse_sse(await asyncio.wait_for(reading, 10))
    assert [e["id"] for e in events] == ["2"]


async def read_stream_until(client: httpx.AsyncClient, run_id: str, count: int) -> str:
    """Read an SSE stream until `count` events arrived, then drop the connection."""
    text = ""
    async with client.stream(
        "GET", f"/v1/runs/{run_id}/events", headers={"Accept": "text/event-stream"}
    ) as resp:
        async for chunk in resp.aiter_text():
            text += chunk
            if len(parse_sse(text)) >= count:
                break
    return text


@pytest.mark.parametrize("value", ["abc", "-1", "²", "1" * 13])
async def test_sse_with_a_bad_last_event_id_is_422(client: httpx.AsyncClient, value: str) -> None:
    run = await create(client, data={"seconds": 60})
    resp = await client.get(
        f"/v1/runs/{run['id']}/events", headers={"Accept": "text/event-stream"}, params={"after": value}
    )
    assert resp.status_code == 422


async def test_batch_creates_every_item_in_order(client: httpx.AsyncClient, redis: Redis) -> None:
    items = [{"input": {"text": str(i)}, "metadata": {"i": i}} for i in range(250)]
    resp = await client.post("/v1/flows/echo/runs/batch", json={"items": items})
    assert resp.status_code == 202
    runs = resp.json()["data"]
    assert [r["metadata"]["i"] for r in runs] == list(range(250))
    assert all(r["status"] == "queued" for r in runs)
    assert [r["id"] for r in runs] == sorted(r["id"] for r in runs)
    listed = (await client.get("/v1/runs", params={"limit": 3})).json()["data"]
    assert [r["id"] for r in listed] == [r["id"] for r in reversed(runs[-3:])]


async def test_batch_validates_everything_before_starting_anything(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    items = [{"input": {"text": "ok"}}, {"input": {}}, {"input": {"text": "ok"}}, {"input": {"text": 3}}]
    resp = await client.post("/v1/flows/echo/runs/batch", json={"items": items})
    assert resp.status_code == 422
    details = resp.json()["error"]["details"]
    assert details["indexes"] == [1, 3]
    assert {f["field"] for f in details["fields"]} == {"items.1.input.text", "items.3.input.text"}
    assert await redis.zcard(keys.index("tenant-a")) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"items": []},
        {"items": [{"input": {"text": "x"}}] * 1001},
        {"items": "x"},
        {},
        {"items": [{"input": {"text": "x"}, "extra": 1}]},
    ],
)
async def test_batch_limits(client: httpx.AsyncClient, redis: Redis, body: dict) -> None:
    resp = await client.post("/v1/flows/echo/runs/batch", json=body)
    assert resp.status_code == 422
    assert await redis.zcard(keys.index("tenant-a")) == 0


async def test_idempotent_create_replays_the_original(client: httpx.AsyncClient, redis: Redis) -> None:
    headers = {"Idempotency-Key": "order-1"}
    first = await client.post("/v1/flows/echo/runs", json={"input": {"text": "a"}}, headers=headers)
    again = await client.post("/v1/flows/echo/runs", json={"input": {"text": "a"}}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await redis.zcard(keys.index("tenant-a")) == 1
    other = await client.post("/v1/flows/echo/runs", json={"input": {"text": "b"}}, headers=headers)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"
    # keys are per tenant
    assert await redis.zcard(keys.index("tenant-a")) == 1


async def test_idempotency_key_is_per_tenant(client: httpx.AsyncClient, client_b: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "shared"}
    a = await client.post("/v1/flows/echo/runs", json={"input": {"text": "a"}}, headers=headers)
    b = await client_b.post("/v1/flows/echo/runs", json={"input": {"text": "a"}}, headers=headers)
    assert a.json()["id"] != b.json()["id"] and "idempotent-replayed" not in b.headers


async def test_twenty_racing_creates_with_one_key_make_one_execution(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    for attempt in range(5):
        headers = {"Idempotency-Key": f"race-{attempt}"}
        results = await asyncio.gather(
            *[
                client.post("/v1/flows/echo/runs", json={"input": {"text": "r"}}, headers=headers)
                for _ in range(20)
            ]
        )
        assert {r.status_code for r in results} == {202}
        assert len({r.json()["id"] for r in results}) == 1
    assert await redis.zcard(keys.index("tenant-a")) == 5
    assert await redis.xlen("wh:outbox") == 5  # one queued event each, nothing duplicated


async def test_idempotent_batch_replays_and_completes_a_half_done_batch(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    body = {"items": [{"input": {"text": str(i)}} for i in range(5)]}
    headers = {"Idempotency-Key": "batch-1"}
    first = (await client.post("/v1/flows/echo/runs/batch", json=body, headers=headers)).json()["data"]
    # As if the first request had died after creating only some: remove two of its runs, and the
    # mark that says it created everything it claimed.
    for run in first[3:]:
        await redis.delete(keys.run(run["id"]))
    claim_key = keys.idempotency("tenant-a", "batch-1")
    claim = json.loads(await redis.get(claim_key))
    assert claim.pop("done") is True
    await redis.set(claim_key, json.dumps(claim), keepttl=True)
    again = await client.post("/v1/flows/echo/runs/batch", json=body, headers=headers)
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert [r["id"] for r in again.json()["data"]] == [r["id"] for r in first]
    for run in first:
        assert (await client.get(f"/v1/runs/{run['id']}")).status_code == 200


@pytest.mark.parametrize("route", ["runs", "runs/batch"])
async def test_a_key_whose_executions_expired_is_a_new_request_not_a_replay(
    redis_url: str, redis: Redis, registry: Registry, route: str
) -> None:
    # Issue 13, case 5: retention shorter than the key's lifetime used to answer a "replay" that
    # was queued again and ran the flow a second time.
    settings = make_settings(redis_url, run_retention_seconds=1)
    body = {"input": {"text": "a"}} if route == "runs" else {"items": [{"input": {"text": "a"}}]}
    headers = {"Idempotency-Key": f"K1-{route}"}
    async with (
        serve(settings, registry) as served,
        tenant_client(served.url) as http,
        running_worker(settings, registry),
    ):
        first = await http.post(f"/v1/flows/echo/{route}", json=body, headers=headers)
        first_id = (first.json() if route == "runs" else first.json()["data"][0])["id"]
        await wait_for(lambda: _terminal(http, first_id), timeout=10)
        # still within retention: a replay, the same execution
        again = await http.post(f"/v1/flows/echo/{route}", json=body, headers=headers)
        assert again.headers.get("idempotent-replayed") == "true"

        async def expired() -> bool:
            return (await http.get(f"/v1/runs/{first_id}")).status_code == 404

        await wait_for(expired, timeout=10)
        later = await http.post(f"/v1/flows/echo/{route}", json=body, headers=headers)
        assert later.status_code == 202 and "idempotent-replayed" not in later.headers
        later_id = (later.json() if route == "runs" else later.json()["data"][0])["id"]
        assert later_id != first_id
        await wait_for(lambda: _terminal(http, later_id), timeout=10)
        # and from now on the key replays the new execution
        last = await http.post(f"/v1/flows/echo/{route}", json=body, headers=headers)
        assert last.headers.get("idempotent-replayed") == "true"
        assert (last.json() if route == "runs" else last.json()["data"][0])["id"] == later_id


async def _terminal(http: httpx.AsyncClient, run_id: str) -> bool:
    return (await http.get(f"/v1/runs/{run_id}")).json().get("status") == "success"


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "é"])
async def test_bad_idempotency_keys_are_422(client: httpx.AsyncClient, redis: Redis, key: str) -> None:
    resp = await client.post(
        "/v1/flows/echo/runs", json={"input": {"text": "a"}}, headers={"Idempotency-Key": key.encode("utf-8")}
    )
    assert resp.status_code == 422
    assert await redis.zcard(keys.index("tenant-a")) == 0


async def test_terminal_runs_expire_with_their_log_and_index_entries(redis_url: str, redis: Redis) -> None:
    settings = make_settings(redis_url, run_retention_seconds=1)
    store = make_store(redis, settings)
    run = await store.create(tenant="a", flow_id="echo", input_json="{}")
    kept = await store.create(tenant="a", flow_id="echo", input_json="{}")
    await store.cancel(run.id, tenant="a")
    assert await redis.pttl(keys.run(run.id)) > 0 and await redis.pttl(keys.run_events(run.id)) > 0
    assert await redis.pttl(keys.run(kept.id)) == -1  # not terminal: no expiry

    async def gone() -> bool:
        return await redis.exists(keys.run(run.id), keys.run_events(run.id)) == 0

    await wait_for(gone, timeout=10)
    later = int(time.time() * 1000) + (2 + 24 * 3600) * 1000
    removed = await trim_indexes(redis, retention_seconds=1, now_ms=later)
    assert removed is not None and removed >= 4  # all, flow, status, flow+status entries of both runs
    assert await redis.zcard(keys.index("a")) == 0
    assert await trim_indexes(redis, retention_seconds=1, now_ms=later) is None  # once a minute


async def test_a_resubscribe_makes_waiters_re_read(redis: Redis, settings) -> None:
    # Regression: after a lost subscription, a waiter that had last heard "running" kept sleeping
    # through a terminal transition published while nobody listened, until its own timeout.
    from orchestrator.api.waiters import Waiters
    from orchestrator.api.waiting import wait_terminal
    from tests.runs.test_store import make_store

    store = make_store(redis, settings)
    waiters = Waiters(redis)  # not listening: we play the subscription by hand
    run = await store.create(tenant="a", flow_id="slow", input_json="{}")
    waiting = asyncio.ensure_future(wait_terminal(store, waiters, run.id, tenant="a", seconds=30))
    await wait_for(lambda: len(waiters) == 1)
    waiters.notify(run.id, "running", 2)
    await asyncio.sleep(0.05)
    await store.cancel(run.id, tenant="a")  # published while "disconnected"
    waiters._wake_all()  # what the listener does after resubscribing
    _, status = await asyncio.wait_for(waiting, 5)
    assert status.value == "cancelled"
