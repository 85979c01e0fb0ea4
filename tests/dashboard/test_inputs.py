"""Bad input to the dashboard's routes: every refusal is a 4xx (the JSON envelope for API clients, a
page for browsers), never a 5xx, and a refused action changes nothing in Redis.
"""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from orchestrator.api.dashboard.forms import fields_of, values_of
from tests.conftest import ServedApp
from tests.security.redis_state import changes, snapshot

ABSENT = "exec_01M8JFKRM31KNKQKXWXQWENK52"


@pytest.fixture
async def ids(client: httpx.AsyncClient) -> dict[str, str]:
    run = (await client.post("/v1/flows/echo/runs", json={"input": {"text": "x"}})).json()["id"]
    endpoint = (await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/a"})).json()["id"]
    return {"run": run, "endpoint": endpoint}


GETS = [
    ("/dashboard/runs/nope", 404),
    (f"/dashboard/runs/{ABSENT}", 404),
    ("/dashboard/runs/%00", 404),
    ("/dashboard/runs/exec_" + "0" * 5000, 404),
    (f"/dashboard/runs/{ABSENT}/live", 404),
    ("/dashboard/endpoints/nope", 404),
    ("/dashboard/endpoints/nope/deliveries", 404),
    ("/dashboard/flows/nope", 404),
    ("/dashboard/runs?status=bogus", 422),
    ("/dashboard/runs?flow=a:b", 422),
    ("/dashboard/runs?since=yesterday", 422),
    ("/dashboard/runs?until=99999-01-01T00:00", 422),
    ("/dashboard/runs?cursor=nope", 422),
    ("/dashboard/runs?value=" + "v" * 2000, 422),
    ("/dashboard/runs/live?status=bogus", 422),
    ("/dashboard/endpoints/{endpoint}/deliveries?status=bogus", 422),
    ("/dashboard/endpoints/{endpoint}/deliveries?cursor=exec_x", 422),
]


@pytest.mark.parametrize(("path", "status"), GETS)
async def test_bad_reads_are_4xx_in_the_envelope(
    client: httpx.AsyncClient, ids: dict[str, str], path: str, status: int
) -> None:
    answer = await client.get(path.format(**ids))
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] in ("not_found", "validation_error")


POSTS: list[tuple[str, bytes, str, int]] = [
    ("/dashboard/runs/{run}/cancel", b"\xff\xfe", "application/x-www-form-urlencoded", 422),
    ("/dashboard/runs/{run}/cancel", b"a=1", "multipart/form-data; boundary=x", 422),
    ("/dashboard/runs/{run}/tokens", b"ttl=7", "application/x-www-form-urlencoded", 422),
    ("/dashboard/runs/{run}/tokens", b"ttl=" + b"9" * 50, "application/x-www-form-urlencoded", 422),
    ("/dashboard/endpoints/{endpoint}/recover", b"since=soon", "application/x-www-form-urlencoded", 422),
    ("/dashboard/endpoints/{endpoint}/recover", b"since=", "application/x-www-form-urlencoded", 422),
    ("/dashboard/endpoints/{endpoint}/deliveries/nope/retry", b"", "application/x-www-form-urlencoded", 404),
    ("/dashboard/endpoints/{endpoint}/test", b"a&b", "application/x-www-form-urlencoded", 422),
    ("/dashboard/endpoints", b"url=ftp%3A%2F%2Fx", "application/x-www-form-urlencoded", 422),
    (
        "/dashboard/endpoints",
        b"url=http%3A%2F%2F127.0.0.1%3A9%2F&events=nope",
        "application/x-www-form-urlencoded",
        422,
    ),
    ("/dashboard/endpoints/{endpoint}", b"url=", "application/x-www-form-urlencoded", 422),
    ("/dashboard/flows/echo/runs", b"text=x&metadata=%5B1%5D", "application/x-www-form-urlencoded", 422),
    ("/dashboard/flows/echo/runs", b"metadata=%7Bnot", "application/x-www-form-urlencoded", 422),
    ("/dashboard/flows/nope/runs", b"text=x", "application/x-www-form-urlencoded", 404),
    ("/dashboard/flows/slow/runs", b"seconds=NaN", "application/x-www-form-urlencoded", 422),
    ("/dashboard/flows/slow/runs", b"seconds=1e999", "application/x-www-form-urlencoded", 422),
    (
        "/dashboard/flows/slow/runs",
        b"partial=%7B%22a%22%3A+%22b%22%7D",
        "application/x-www-form-urlencoded",
        422,
    ),
    (
        "/dashboard/runs/{run}/cancel",
        b"a=" + b"x" * (1024 * 1024 + 1),
        "application/x-www-form-urlencoded",
        413,
    ),
]


@pytest.mark.parametrize(("path", "body", "content_type", "status"), POSTS)
async def test_bad_actions_are_4xx_and_change_nothing(
    client: httpx.AsyncClient,
    redis: Redis,
    ids: dict[str, str],
    path: str,
    body: bytes,
    content_type: str,
    status: int,
) -> None:
    before = await snapshot(redis)
    answer = await client.post(path.format(**ids), content=body, headers={"content-type": content_type})
    assert answer.status_code == status, answer.text[:300]
    if "text/html" not in answer.headers["content-type"]:
        assert answer.json()["error"]["code"] in ("not_found", "validation_error", "payload_too_large")
    assert changes(before, await snapshot(redis)) == []


async def test_a_browser_gets_the_form_again_with_each_problem(
    api_server: ServedApp, ids: dict[str, str]
) -> None:
    async with httpx.AsyncClient(
        base_url=api_server.url, headers={"Authorization": "Bearer key-tenant-a", "accept": "text/html"}
    ) as browser_like:
        answer = await browser_like.post("/dashboard/flows/slow/runs", data={"seconds": "soon"})
        assert (
            answer.status_code == 422
            and "not a number" in answer.text
            and "Nothing was started" in answer.text
        )
        missing = await browser_like.get("/dashboard/runs/nope")
        assert missing.status_code == 404 and "<h1>Not found</h1>" in missing.text


def test_the_run_form_reads_each_kind_of_field() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer", "default": 2},
            "ratio": {"type": "number"},
            "on": {"type": "boolean", "default": True},
            "mode": {"enum": ["a", "b"]},
            "doc": {"$ref": "#/$defs/Doc"},
        },
        "required": ["name", "doc"],
        "$defs": {"Doc": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
    fields = fields_of(schema)
    assert fields is not None
    assert [(f.name, f.kind, f.required) for f in fields] == [
        ("name", "text", True),
        ("count", "integer", False),
        ("ratio", "number", False),
        ("on", "checkbox", False),
        ("mode", "select", False),
        ("doc", "json", True),
    ]
    assert fields[1].value == "2" and fields[3].checked
    document, ok = values_of(
        fields, {"name": "n", "count": "3", "ratio": "0.5", "mode": "b", "doc": '{"x": 1}'}
    )
    assert ok and document == {
        "name": "n",
        "count": 3,
        "ratio": 0.5,
        "on": False,
        "mode": "b",
        "doc": {"x": 1},
    }
    document, ok = values_of(fields, {"name": "n", "count": "1.5", "doc": "{"})
    assert not ok and fields[1].error == "not a whole number" and fields[5].error
    assert fields_of({"type": "array"}) is None
