"""Bad input, route by route: every refusal is API.md's status and code (where API.md is silent,
the README's) in the JSON error envelope, nothing is ever a 5xx, and Redis is exactly as it was
(every key, its value and its TTL).

The state is seeded once for the module (runs, endpoints and a pending delivery for two tenants) so
that "nothing changed" covers real data; each case snapshots Redis before and after its request.
No key is excluded from the comparison: the API writes nothing when it reads (``metrics:counters``
is flushed by workers and dispatchers, and none runs here; the only writes on read paths drop
index entries of rows that expired, and nothing seeded expires within the test).

Huge headers: uvicorn's httptools parser (what ``orchestrator api`` and these tests run) bounds
neither the size nor the number of request headers, so a 1 MB header reaches the application,
which refuses it itself: 431 ``headers_too_large`` (``app.HeaderLimits``). (uvicorn's h11 parser
would answer a bare 400 past 16 KiB instead.) What uvicorn does refuse on its own (a malformed
request line or header, a URL over 64 KiB, a bad Content-Length) it answers with a plain-text
``400 "Invalid HTTP request received."`` and closes the connection, before the app sees anything:
there the JSON envelope cannot be had, and the tests assert what is guaranteed instead (a 400,
nothing changed, the next request served).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from orchestrator.flows import Registry
from orchestrator.runs import keys
from tests.conftest import KEY_A, KEY_B, ServedApp, make_settings, serve

Snapshot = dict[bytes, tuple[bytes, Any, int]]

SMALL_BODY_LIMIT = 1024
ABSENT_RUN = "exec_01M8JFKRM31KNKQKXWXQWENK52"
ABSENT_ENDPOINT = "wh_01M8JFKRM31KNKQKXWXQWENK52"
ABSENT_MESSAGE = "msg_01M8JFKRM31KNKQKXWXQWENK52"


@dataclass(frozen=True)
class World:
    """What the module seeds: tenant A's resources, and tenant B's that A must not reach."""

    run: str  # A's queued run (created with an Idempotency-Key and a run webhook)
    done: str  # A's cancelled run
    endpoint: str  # A's endpoint
    message: str  # A's webhook.test message to it (a pending delivery)
    other_run: str  # tenant B's
    other_endpoint: str
    other_message: str


@dataclass(frozen=True)
class Case:
    """One request and what API.md says it must get: `code` None is a 2xx that changes nothing."""

    method: str
    path: str  # may name {run}, {done}, {endpoint}, {message}, {other_run}, ...
    status: int
    code: str | None
    body: bytes | None = None
    headers: dict[str, str | bytes] = field(default_factory=dict)  # bytes: sent as they are (latin-1)
    bad_field: str | None = None  # for 422: a field that details.fields must name


# ----- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def db(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def api_a(api_server: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=api_server.url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=10
    ) as c:
        yield c


@pytest.fixture(scope="module")
async def world(api_server: ServedApp, api_a: httpx.AsyncClient, db: Redis) -> World:
    await db.flushdb()
    async with httpx.AsyncClient(
        base_url=api_server.url, headers={"Authorization": f"Bearer {KEY_B}"}, timeout=10
    ) as api_b:
        run = await _created(
            api_a.post(
                "/v1/flows/echo/runs",
                json={"input": {"text": "seed"}, "webhook": {"url": "http://127.0.0.1:9/run-hook"}},
                headers={"Idempotency-Key": "seed-1"},
            )
        )
        done = await _created(api_a.post("/v1/flows/echo/runs", json={"input": {"text": "done"}}))
        assert (await api_a.post(f"/v1/runs/{done}/cancel")).status_code == 200
        endpoint = await _created(api_a.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/a"}))
        message = (await api_a.post(f"/v1/webhooks/{endpoint}/test")).json()["messageId"]
        assert (await api_a.get("/v1/webhooks/default-secret")).status_code == 200
        other_run = await _created(api_b.post("/v1/flows/echo/runs", json={"input": {"text": "b"}}))
        other_endpoint = await _created(api_b.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/b"}))
        other_message = (await api_b.post(f"/v1/webhooks/{other_endpoint}/test")).json()["messageId"]
    return World(run, done, endpoint, message, other_run, other_endpoint, other_message)


@pytest.fixture(scope="module")
async def small_api(redis_url: str, registry: Registry, world: World) -> AsyncIterator[httpx.AsyncClient]:
    """The API with ORCH_MAX_BODY_BYTES=1024, on the same Redis (and so the same seeded state)."""
    settings = make_settings(redis_url, max_body_bytes=SMALL_BODY_LIMIT)
    async with (
        serve(settings, registry) as served,
        httpx.AsyncClient(base_url=served.url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=10) as c,
    ):
        yield c


async def _created(request: Awaitable[httpx.Response]) -> str:
    resp = await request
    assert resp.status_code in (201, 202), resp.text
    return str(resp.json()["id"])


# ----- helpers -------------------------------------------------------------------------------


async def snapshot(db: Redis) -> Snapshot:
    """Every key: its type, its value and its PTTL.

    The value is the key's DUMP, except for hashes and sets, whose content is taken instead
    (sorted): stored as real hash tables, they DUMP in bucket order, which Redis' incremental
    rehashing changes on a mere read (an HMGET), so the same content can DUMP differently.
    """
    names = [k async for k in db.scan_iter(count=1000)]
    async with db.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.type(name)
            pipe.pttl(name)
            pipe.dump(name)
        rows = await pipe.execute()
    kinds, ttls, dumped_values = rows[0::3], rows[1::3], rows[2::3]
    unordered = [(n, k) for n, k in zip(names, kinds, strict=True) if k in (b"hash", b"set")]
    async with db.pipeline(transaction=False) as pipe:
        for name, kind in unordered:
            if kind == b"hash":
                pipe.hgetall(name)
            else:
                pipe.smembers(name)
        contents = dict(zip([n for n, _ in unordered], await pipe.execute(), strict=True))
    out: Snapshot = {}
    for name, kind, ttl, dumped in zip(names, kinds, ttls, dumped_values, strict=True):
        content = contents.get(name)
        value = dumped if content is None else sorted(content.items() if kind == b"hash" else content)
        out[name] = (kind, value, ttl)
    return out


def assert_unchanged(before: Snapshot, after: Snapshot) -> None:
    """Same keys, same types and values, and no TTL set, cleared or pushed back."""
    assert sorted(after.keys() - before.keys()) == [], "keys were created"
    assert sorted(before.keys() - after.keys()) == [], "keys were deleted"
    changed = sorted(k for k in before if before[k][:2] != after[k][:2])
    assert changed == [], "values changed"
    # A TTL only ever counts down; one that grew, appeared or vanished was written.
    retimed = sorted(
        k for k in before if (before[k][2] < 0) != (after[k][2] < 0) or after[k][2] > before[k][2]
    )
    assert retimed == [], "expiry times changed"


def assert_envelope(resp: httpx.Response, status: int, code: str, bad_field: str | None = None) -> None:
    """API.md's error shape: ``{"error": {"code", "message", "details"}}`` as application/json."""
    assert resp.status_code < 500, resp.text
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].split(";")[0] == "application/json"
    body = resp.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if status == 422:
        fields = error["details"]["fields"]
        assert fields and all(set(f) == {"field", "message", "type"} for f in fields)
        if bad_field is not None:
            assert bad_field in [f["field"] for f in fields], fields


class _Ids(dict[str, str]):
    """Values for a case's path: the seeded ids by World field name, and ``{run_lower}`` & co."""

    def __missing__(self, key: str) -> str:
        if key.endswith("_lower"):
            return self[key.removesuffix("_lower")].lower()
        raise KeyError(key)


async def check(client: httpx.AsyncClient, db: Redis, world: World, case: Case) -> httpx.Response:
    """Send `case`, then assert its answer and that Redis did not change."""
    before = await snapshot(db)
    assert keys.run(world.run).encode() in before, "the seeded state is gone"
    headers = dict(case.headers)
    if case.body is not None:
        headers.setdefault("Content-Type", "application/json")
    path = case.path.format_map(_Ids(asdict(world)))
    resp = await client.request(case.method, path, content=case.body, headers=headers)
    after = await snapshot(db)
    if case.code is None:
        assert 200 <= resp.status_code < 300 and resp.status_code == case.status, resp.text
    else:
        assert_envelope(resp, case.status, case.code, case.bad_field)
    assert_unchanged(before, after)
    return resp


def params(cases: Iterable[tuple[str, Case]]) -> list[Any]:
    """pytest params with readable ids."""
    return [pytest.param(case, id=name) for name, case in cases]


def nested(depth: int) -> bytes:
    """A JSON document `depth` arrays deep."""
    return b"[" * depth + b"]" * depth


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


# ----- the matrix: bodies --------------------------------------------------------------------

BODY_ROUTES = {
    "create-run": ("POST", "/v1/flows/echo/runs"),
    "create-batch": ("POST", "/v1/flows/echo/runs/batch"),
    "create-webhook": ("POST", "/v1/webhooks"),
    "patch-webhook": ("PATCH", "/v1/webhooks/{endpoint}"),
    "recover": ("POST", "/v1/webhooks/{endpoint}/recover"),
    "send-test": ("POST", "/v1/webhooks/{endpoint}/test"),
}
# Where an empty body is no body: POST .../test without one sends a webhook.test (API.md).
EMPTY_IS_NO_BODY = {"send-test"}

# Whatever the route: not JSON (or not JSON this API can store faithfully) is 400 invalid_json,
# JSON that is not an object is 422 with the field "body".
GENERIC_BODIES: list[tuple[str, bytes, int, str, str | None]] = [
    ("malformed", b"{not json", 400, "invalid_json", None),
    ("truncated", b'{"input": ', 400, "invalid_json", None),
    ("trailing-garbage", b"{} {}", 400, "invalid_json", None),
    ("single-quotes", b"{'input': {}}", 400, "invalid_json", None),
    ("empty", b"", 400, "invalid_json", None),
    ("whitespace-only", b" \r\n\t ", 400, "invalid_json", None),
    ("nan", b'{"a": NaN}', 400, "invalid_json", None),
    ("infinity", b'{"a": -Infinity}', 400, "invalid_json", None),
    ("number-overflows-a-double", b'{"a": 1e999}', 400, "invalid_json", None),
    ("integer-of-5000-digits", b'{"a": 1' + b"0" * 5000 + b"}", 400, "invalid_json", None),
    ("lone-surrogate-value", b'{"a": "\\ud800"}', 400, "invalid_json", None),
    ("lone-surrogate-key", b'{"\\udfff": 1}', 400, "invalid_json", None),
    ("invalid-utf8", b'{"a": "\xc3\x28"}', 400, "invalid_json", None),
    ("overlong-utf8", b'{"a": "\xc0\xaf"}', 400, "invalid_json", None),
    ("latin1", '{"a": "é"}'.encode("latin-1"), 400, "invalid_json", None),
    ("utf16-with-bom", '{"a": 1}'.encode("utf-16"), 400, "invalid_json", None),
    ("utf8-bom", b'\xef\xbb\xbf{"a": 1}', 400, "invalid_json", None),
    ("depth-65", nested(65), 400, "invalid_json", None),
    ("depth-100k-arrays", nested(100_000), 400, "invalid_json", None),
    ("depth-100k-objects", b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "invalid_json", None),
    ("depth-100k-unclosed", b"[" * 100_000, 400, "invalid_json", None),
    ("depth-64-parses-but-is-an-array", nested(64), 422, "validation_error", "body"),
    ("array", b"[]", 422, "validation_error", "body"),
    ("string", b'"text"', 422, "validation_error", "body"),
    ("number", b"5", 422, "validation_error", "body"),
    ("null", b"null", 422, "validation_error", "body"),
    ("boolean", b"true", 422, "validation_error", "body"),
]

# The same defects where each route would have taken them: these were a 202 (NaN and 1e999 stored
# as null) or a 500 (the surrogate could not be encoded when stored, or when the error echoed it).
SMUGGLED_BODIES: dict[str, list[tuple[str, bytes]]] = {
    "create-run": [
        ("metadata-nan", b'{"input": {"text": "x"}, "metadata": {"a": NaN}}'),
        ("metadata-1e999", b'{"input": {"text": "x"}, "metadata": {"a": 1e999}}'),
        ("input-lone-surrogate", b'{"input": {"text": "\\ud800"}}'),
        ("metadata-lone-surrogate-key", b'{"input": {"text": "x"}, "metadata": {"\\udfff": 1}}'),
    ],
    "create-batch": [("input-lone-surrogate", b'{"items": [{"input": {"text": "\\ud800"}}]}')],
    "create-webhook": [("event-lone-surrogate", b'{"url": "http://127.0.0.1:9/", "events": ["\\ud800"]}')],
    "patch-webhook": [("description-lone-surrogate", b'{"description": "\\udbff"}')],
    "recover": [("since-lone-surrogate", b'{"since": "2020-01-01T00:00:00\\udc00"}')],
    "send-test": [("event-type-lone-surrogate", b'{"eventType": "\\ud800"}')],
}

LONG_URL = "http://127.0.0.1:9/" + "a" * 2100

# Per route: wrong field types, unknown fields, values the route refuses (all 422 naming the field).
FIELD_BODIES: dict[str, list[tuple[str, Any, str]]] = {
    "create-run": [
        ("missing-input", {}, "input"),
        ("unknown-field", {"input": {"text": "x"}, "surprise": 1}, "surprise"),
        ("input-is-a-string", {"input": "x"}, "input"),
        ("input-field-wrong-type", {"input": {"text": 5}}, "input.text"),
        ("input-field-missing", {"input": {}}, "input.text"),
        ("metadata-is-an-array", {"input": {"text": "x"}, "metadata": [1]}, "metadata"),
        ("metadata-is-a-string", {"input": {"text": "x"}, "metadata": "m"}, "metadata"),
        ("webhook-is-a-string", {"input": {"text": "x"}, "webhook": "http://127.0.0.1:9/"}, "webhook"),
        ("webhook-url-wrong-type", {"input": {"text": "x"}, "webhook": {"url": 5}}, "webhook.url"),
        (
            "webhook-unknown-field",
            {"input": {"text": "x"}, "webhook": {"url": "http://127.0.0.1:9/", "secret": "s"}},
            "webhook.secret",
        ),
        (
            "webhook-events-not-a-list",
            {
                "input": {"text": "x"},
                "webhook": {"url": "http://127.0.0.1:9/", "events": "execution.success"},
            },
            "webhook.events",
        ),
        (
            "webhook-unknown-event",
            {"input": {"text": "x"}, "webhook": {"url": "http://127.0.0.1:9/", "events": ["nope"]}},
            "webhook.events",
        ),
        ("webhook-url-ftp", {"input": {"text": "x"}, "webhook": {"url": "ftp://127.0.0.1/"}}, "webhook.url"),
        ("webhook-url-too-long", {"input": {"text": "x"}, "webhook": {"url": LONG_URL}}, "webhook.url"),
    ],
    "create-batch": [
        ("missing-items", {}, "items"),
        ("no-items", {"items": []}, "items"),
        ("items-is-an-object", {"items": {}}, "items"),
        ("item-is-a-number", {"items": [1]}, "items.0"),
        ("unknown-field", {"items": [{"input": {"text": "x"}}], "extra": 1}, "extra"),
        ("item-unknown-field", {"items": [{"input": {"text": "x"}, "webhook": {}}]}, "items.0.webhook"),
        (
            "one-bad-item-starts-none",
            {"items": [{"input": {"text": "x"}}, {"input": {}}]},
            "items.1.input.text",
        ),
        ("1001-items", {"items": [{"input": {"text": "x"}}] * 1001}, "items"),
    ],
    "create-webhook": [
        ("missing-url", {}, "url"),
        ("url-wrong-type", {"url": 5}, "url"),
        ("url-empty", {"url": ""}, "url"),
        ("url-ftp", {"url": "ftp://127.0.0.1/"}, "url"),
        ("url-javascript", {"url": "javascript:alert(1)"}, "url"),
        ("url-too-long", {"url": LONG_URL}, "url"),
        ("events-not-a-list", {"url": "http://127.0.0.1:9/", "events": "execution.success"}, "events"),
        ("unknown-event", {"url": "http://127.0.0.1:9/", "events": ["nope"]}, "events"),
        ("51-events", {"url": "http://127.0.0.1:9/", "events": ["execution.success"] * 51}, "events"),
        ("unknown-flow", {"url": "http://127.0.0.1:9/", "flowIds": ["nope"]}, "flowIds"),
        ("flow-id-wrong-type", {"url": "http://127.0.0.1:9/", "flowIds": [1]}, "flowIds.0"),
        ("description-too-long", {"url": "http://127.0.0.1:9/", "description": "d" * 501}, "description"),
        ("description-wrong-type", {"url": "http://127.0.0.1:9/", "description": 5}, "description"),
        ("secret-too-short", {"url": "http://127.0.0.1:9/", "secret": "whsec_c2hvcnQ="}, "secret"),
        ("secret-no-prefix", {"url": "http://127.0.0.1:9/", "secret": "a" * 64}, "secret"),
        ("unknown-field-enabled", {"url": "http://127.0.0.1:9/", "enabled": False}, "enabled"),
        ("unknown-field-id", {"url": "http://127.0.0.1:9/", "id": ABSENT_ENDPOINT}, "id"),
        ("unknown-field-tenant", {"url": "http://127.0.0.1:9/", "tenant": "tenant-b"}, "tenant"),
        ("headers-not-an-object", {"url": "http://127.0.0.1:9/", "headers": ["X-A: 1"]}, "headers"),
        ("header-webhook-id", {"url": "http://127.0.0.1:9/", "headers": {"webhook-id": "x"}}, "headers"),
        ("header-host", {"url": "http://127.0.0.1:9/", "headers": {"Host": "evil.example"}}, "headers"),
        ("header-crlf", {"url": "http://127.0.0.1:9/", "headers": {"X-A": "a\r\nX-B: b"}}, "headers"),
        ("header-value-number", {"url": "http://127.0.0.1:9/", "headers": {"X-A": 1}}, "headers.X-A"),
        ("header-the-mask", {"url": "http://127.0.0.1:9/", "headers": {"X-A": "********"}}, "headers"),
        ("ordering-unknown", {"url": "http://127.0.0.1:9/", "ordering": "endpoint"}, "ordering"),
    ],
    # Not here: what pydantic's lax mode converts on purpose ("yes", "1" or 1 for enabled: true;
    # a number for since, as unix time). Such input is understood, not refused.
    "patch-webhook": [
        ("url-null", {"url": None}, "url"),
        ("enabled-null", {"enabled": None}, "enabled"),
        ("enabled-not-a-boolean", {"enabled": "maybe"}, "enabled"),
        ("enabled-is-a-list", {"enabled": []}, "enabled"),
        ("url-ftp", {"url": "ftp://127.0.0.1/"}, "url"),
        ("unknown-event", {"events": ["nope"]}, "events"),
        ("unknown-flow", {"flowIds": ["nope"]}, "flowIds"),
        ("description-wrong-type", {"description": 5}, "description"),
        ("secret-cannot-be-set", {"secret": "whsec_" + "A" * 40}, "secret"),
        ("tenant-cannot-be-set", {"tenant": "tenant-b"}, "tenant"),
        ("id-cannot-be-set", {"id": ABSENT_ENDPOINT}, "id"),
        ("previous-secret-cannot-be-set", {"previousSecret": "whsec_" + "A" * 40}, "previousSecret"),
        ("header-transfer-encoding", {"headers": {"Transfer-Encoding": "chunked"}}, "headers"),
        ("header-mask-with-nothing-stored", {"headers": {"X-A": "********"}}, "headers"),
        ("headers-null", {"headers": None}, "headers"),
        ("ordering-null", {"ordering": None}, "ordering"),
        ("ordering-wrong-type", {"ordering": 1}, "ordering"),
    ],
    "recover": [
        ("missing-since", {}, "since"),
        ("since-not-a-date", {"since": "yesterday"}, "since"),
        ("since-without-time-zone", {"since": "2020-01-01T00:00:00"}, "since"),
        ("since-boolean", {"since": True}, "since"),
        ("since-beyond-year-9999", {"since": 1e20}, "since"),
        ("since-is-a-list", {"since": []}, "since"),
        ("unknown-field", {"since": "2020-01-01T00:00:00Z", "extra": 1}, "extra"),
    ],
    "send-test": [
        ("unknown-field", {"eventType": "webhook.test", "extra": 1}, "extra"),
        ("event-type-unknown", {"eventType": "execution.nope"}, "eventType"),
        ("event-type-wrong-type", {"eventType": 5}, "eventType"),
        ("event-type-too-long", {"eventType": "e" * 201}, "eventType"),
    ],
}

# The body is read as JSON in UTF-8 whatever its Content-Type says (a JSON body labelled
# text/plain is accepted); anything else is not JSON, so 400 invalid_json.
CONTENT_TYPES: list[tuple[str, str, bytes]] = [
    ("form-urlencoded", "application/x-www-form-urlencoded", b"input=x&metadata=y"),
    (
        "multipart",
        "multipart/form-data; boundary=b",
        b'--b\r\nContent-Disposition: form-data; name="i"\r\n\r\nx\r\n--b--',
    ),
    ("text-plain", "text/plain", b"hello"),
    ("xml", "application/xml", b"<input><text>x</text></input>"),
    (
        "json-labelled-utf16",
        "application/json; charset=utf-16",
        '{"input": {"text": "x"}}'.encode("utf-16-le"),
    ),
    ("no-content-type", "", b"input=x"),
]


def _body_cases() -> list[tuple[str, Case]]:
    out: list[tuple[str, Case]] = []
    for route, (method, path) in BODY_ROUTES.items():
        for name, body, status, code, bad_field in GENERIC_BODIES:
            if name == "empty" and route in EMPTY_IS_NO_BODY:
                continue  # no body is a valid call there (tests/api/test_event_types.py sends one)
            out.append((f"{route}/{name}", Case(method, path, status, code, body=body, bad_field=bad_field)))
        for name, body in SMUGGLED_BODIES[route]:
            out.append((f"{route}/{name}", Case(method, path, 400, "invalid_json", body=body)))
        for name, document, bad_field in FIELD_BODIES[route]:
            case = Case(method, path, 422, "validation_error", body=dumps(document), bad_field=bad_field)
            out.append((f"{route}/{name}", case))
        for name, content_type, body in CONTENT_TYPES:
            case = Case(method, path, 400, "invalid_json", body=body, headers={"Content-Type": content_type})
            out.append((f"{route}/content-type-{name}", case))
    return out


@pytest.mark.parametrize("case", params(_body_cases()))
async def test_bad_bodies(api_a: httpx.AsyncClient, db: Redis, world: World, case: Case) -> None:
    await check(api_a, db, world, case)


# ----- the matrix: ids in the path -----------------------------------------------------------

VALID_RUN = {"input": {"text": "x"}}

# Each is an id that must answer 404 not_found, exactly like a missing one.
ODD_RUN_IDS = {
    "word": "nope",
    "prefix-only": "exec_",
    "absent": ABSENT_RUN,
    "lowercase-of-real": "{run_lower}",
    "real-plus-a-char": "{run}0",
    "too-long": "exec_" + "0" * 8000,
    "non-ascii": "exec_01M8JFKRM31KNKQKXWXQWENKé",
    "nul": "%00",
    "real-then-nul": "{run}%00",
    "traversal": "..%2f..%2fwebhooks",
    "dot-dot": "%2e%2e",
    "endpoint-id": "{endpoint}",
    "message-id": "{message}",
    "other-tenants-run": "{other_run}",
}
RUN_ROUTES = {
    "get-run": ("GET", "/v1/runs/{id}", {}),
    "wait": ("GET", "/v1/runs/{id}/wait?timeout=0", {}),
    "events": ("GET", "/v1/runs/{id}/events", {}),
    "events-sse": ("GET", "/v1/runs/{id}/events", {"Accept": "text/event-stream"}),
    "run-deliveries": ("GET", "/v1/runs/{id}/deliveries", {}),
    "cancel": ("POST", "/v1/runs/{id}/cancel", {}),
    "create-token": ("POST", "/v1/runs/{id}/tokens", {}),
}

ODD_ENDPOINT_IDS = {
    "word": "nope",
    "prefix-only": "wh_",
    "absent": ABSENT_ENDPOINT,
    "lowercase-of-real": "{endpoint_lower}",
    "real-plus-a-char": "{endpoint}0",
    "too-long": "wh_" + "0" * 8000,
    "non-ascii": "wh_01M8JFKRM31KNKQKXWXQWENKé",
    "nul": "%00",
    "real-then-nul": "{endpoint}%00",
    "traversal": "..%2f..%2fruns",
    "run-id": "{run}",
    "message-id": "{message}",
    "other-tenants-endpoint": "{other_endpoint}",
    "default-secret": "default-secret",
}
ENDPOINT_ROUTES = {
    "get-webhook": ("GET", "/v1/webhooks/{id}", None),
    "patch-webhook": ("PATCH", "/v1/webhooks/{id}", dumps({"description": "changed"})),
    "delete-webhook": ("DELETE", "/v1/webhooks/{id}", None),
    "rotate-secret": ("POST", "/v1/webhooks/{id}/rotate-secret", None),
    "test-message": ("POST", "/v1/webhooks/{id}/test", None),
    "deliveries": ("GET", "/v1/webhooks/{id}/deliveries", None),
    "retry": ("POST", "/v1/webhooks/{id}/deliveries/{message}/retry", None),
    "recover": ("POST", "/v1/webhooks/{id}/recover", dumps({"since": "2020-01-01T00:00:00Z"})),
    "endpoint-events": ("GET", "/v1/webhooks/{id}/events", None),
}

ODD_MESSAGE_IDS = {
    "word": "nope",
    "prefix-only": "msg_",
    "absent": ABSENT_MESSAGE,
    "lowercase-of-real": "{message_lower}",
    "too-long": "msg_" + "0" * 8000,
    "non-ascii": "msg_01M8JFKRM31KNKQKXWXQWENKé",
    "nul": "%00",
    "run-id": "{run}",
    "endpoint-id": "{endpoint}",
    "other-tenants-message": "{other_message}",
}


def _id_cases() -> list[tuple[str, Case]]:
    out: list[tuple[str, Case]] = []
    for route, (method, template, headers) in RUN_ROUTES.items():
        for name, odd in ODD_RUN_IDS.items():
            case = Case(method, template.replace("{id}", odd), 404, "not_found", headers=headers)
            out.append((f"{route}/id-{name}", case))
    for route, (method, template, body) in ENDPOINT_ROUTES.items():
        for name, odd in ODD_ENDPOINT_IDS.items():
            if route == "get-webhook" and odd == "default-secret":
                continue  # GET /v1/webhooks/default-secret is a route of its own
            case = Case(method, template.replace("{id}", odd), 404, "not_found", body=body)
            out.append((f"{route}/id-{name}", case))
    for name, odd in ODD_MESSAGE_IDS.items():
        path = f"/v1/webhooks/{{endpoint}}/deliveries/{odd}/retry"
        out.append((f"retry/message-id-{name}", Case("POST", path, 404, "not_found")))
    out += [
        (
            "create-run/unknown-flow",
            Case("POST", "/v1/flows/nope/runs", 404, "not_found", body=dumps(VALID_RUN)),
        ),
        ("create-run/flow-nul", Case("POST", "/v1/flows/%00/runs", 404, "not_found", body=dumps(VALID_RUN))),
        (
            "create-run/flow-traversal",
            Case("POST", "/v1/flows/..%2fwebhooks/runs", 404, "not_found", body=dumps(VALID_RUN)),
        ),
        (
            "create-run/flow-non-ascii",
            Case("POST", "/v1/flows/échō/runs", 404, "not_found", body=dumps(VALID_RUN)),
        ),
        (
            "create-batch/unknown-flow",
            Case("POST", "/v1/flows/nope/runs/batch", 404, "not_found", body=dumps({"items": [VALID_RUN]})),
        ),
        # A terminal run cannot be cancelled: 409 with its status, and it stays as it was.
        ("cancel/already-cancelled", Case("POST", "/v1/runs/{done}/cancel", 409, "conflict")),
    ]
    return out


@pytest.mark.parametrize("case", params(_id_cases()))
async def test_odd_ids(api_a: httpx.AsyncClient, db: Redis, world: World, case: Case) -> None:
    resp = await check(api_a, db, world, case)
    if case.status == 409:
        assert resp.json()["error"]["details"]["status"] == "cancelled"


# ----- the matrix: query parameters ----------------------------------------------------------

BAD_LIMITS = {
    "zero": "0",
    "negative": "-1",
    "101": "101",
    "huge": "99999999999999999999",
    "5000-digits": "1" + "0" * 4999,
    "arabic-indic-digits": "%D9%A1%D9%A0",
    "fullwidth-digits": "%EF%BC%95",
    "float": "1.5",
    "exponent": "1e1",
    "plus-sign": "%2B5",
    "leading-space": "%205",
    "underscore": "1_0",
    "hex": "0x10",
    "word": "ten",
    "nul": "%00",
    "invalid-utf8": "%FF",
}
BAD_RUN_CURSORS = {
    "word": "abc",
    "endpoint-id": "{endpoint}",
    "message-id": "{message}",
    "lowercase-run-id": "{run_lower}",
    "run-id-plus-a-char": "{run}0",
    "letter-not-in-alphabet": "exec_" + "I" * 26,
    "arabic-indic-digits": "%D9%A1%D9%A0",
    "nul": "%00",
    "huge": "exec_" + "0" * 5000,
}
BAD_TIMEOUTS = {
    "negative": "-1",
    "over-60": "61",
    "just-over-60": "60.5",
    "nan": "nan",
    "inf": "inf",
    "minus-inf": "-inf",
    "exponent-over-60": "1e2",
    "underscore": "1_0",
    "arabic-indic-digit": "%D9%A1",
    "leading-space": "%201",
    "hex": "0x1",
    "huge": "9" * 400,
    "word": "soon",
}
BAD_AFTER = {
    "word": "abc",
    "negative": "-1",
    "float": "1.5",
    "superscript-two": "%C2%B2",
    "arabic-indic-digit": "%D9%A1",
    "13-digits": "1" * 13,
}


def _query_cases() -> list[tuple[str, Case]]:
    def bad(name: str, path: str, bad_field: str) -> tuple[str, Case]:
        return name, Case("GET", path, 422, "validation_error", bad_field=bad_field)

    def fine(name: str, path: str) -> tuple[str, Case]:
        return name, Case("GET", path, 200, None)

    out: list[tuple[str, Case]] = []
    pages = {
        "list-runs": "/v1/runs",
        "list-webhooks": "/v1/webhooks",
        "deliveries": "/v1/webhooks/{endpoint}/deliveries",
        "endpoint-events": "/v1/webhooks/{endpoint}/events",
    }
    for route, path in pages.items():
        for name, value in BAD_LIMITS.items():
            out.append(bad(f"{route}/limit-{name}", f"{path}?limit={value}", "limit"))
        out.append(fine(f"{route}/limit-empty-means-default", f"{path}?limit="))
        out.append(fine(f"{route}/unknown-parameter-ignored", f"{path}?surprise=1"))
    for name, value in BAD_RUN_CURSORS.items():
        out.append(bad(f"list-runs/cursor-{name}", f"/v1/runs?cursor={value}", "cursor"))
    for name, value in {"run-id": "{run}", "word": "abc", "exec-prefix": "exec_" + "0" * 26}.items():
        out.append(bad(f"list-webhooks/cursor-{name}", f"/v1/webhooks?cursor={value}", "cursor"))
        out.append(
            bad(
                f"endpoint-events/cursor-{name}", f"/v1/webhooks/{{endpoint}}/events?cursor={value}", "cursor"
            )
        )
        out.append(
            bad(f"deliveries/cursor-{name}", f"/v1/webhooks/{{endpoint}}/deliveries?cursor={value}", "cursor")
        )
    for name, value in {
        "word": "done",
        "uppercase": "QUEUED",
        "trailing-space": "queued%20",
        "two": "queued,running",
        "nul": "%00",
    }.items():
        out.append(bad(f"list-runs/status-{name}", f"/v1/runs?status={value}", "status"))
    out.append(fine("list-runs/status-empty-means-any", "/v1/runs?status="))
    for name, value in {
        "unknown": "nope",
        "one-unknown": "echo,nope",
        "nul": "%00",
        "other-case": "ECHO",
    }.items():
        out.append(bad(f"event-types/flow-ids-{name}", f"/v1/event-types?flowIds={value}", "flowIds"))
    out.append(fine("event-types/flow-ids-known", "/v1/event-types?flowIds=echo"))
    out.append(fine("event-types/flow-ids-empty-means-all", "/v1/event-types?flowIds="))
    for name, value in {
        "uppercase": "PENDING",
        "word": "delivered",
        "two": "pending,failed",
        "nul": "%00",
    }.items():
        out.append(
            bad(f"deliveries/status-{name}", f"/v1/webhooks/{{endpoint}}/deliveries?status={value}", "status")
        )
    flow_ids = {
        # "echo:s:cancelled" would read the tenant's echo+cancelled index (a Redis key injection)
        "key-injection": "echo:s:cancelled",
        "nul": "%00",
        "traversal": "..%2fx",
        "newline": "echo%0A",
        "non-ascii": "%C3%A9cho",
        "too-long": "a" * 200,
    }
    for name, value in flow_ids.items():
        out.append(bad(f"list-runs/flowId-{name}", f"/v1/runs?flowId={value}", "flowId"))
    out.append(fine("list-runs/flowId-unknown-but-well-formed", "/v1/runs?flowId=retired-flow"))
    for name, value in BAD_TIMEOUTS.items():
        out.append(bad(f"wait/timeout-{name}", f"/v1/runs/{{run}}/wait?timeout={value}", "timeout"))
    out.append(("wait/timeout-zero", Case("GET", "/v1/runs/{run}/wait?timeout=0", 202, None)))
    for name, value in BAD_AFTER.items():
        out.append(bad(f"events/after-{name}", f"/v1/runs/{{run}}/events?after={value}", "after"))
        sse = Case(
            "GET",
            f"/v1/runs/{{run}}/events?after={value}",
            422,
            "validation_error",
            headers={"Accept": "text/event-stream"},
            bad_field="after",
        )
        out.append((f"events-sse/after-{name}", sse))
    last_event_ids: dict[str, str | bytes] = {
        "word": "abc",
        "negative": "-1",
        "superscript-two": "²".encode("latin-1"),
        "13-digits": "1" * 13,
    }
    for name, value in last_event_ids.items():
        header = Case(
            "GET",
            "/v1/runs/{run}/events",
            422,
            "validation_error",
            headers={"Accept": "text/event-stream", "Last-Event-ID": value},
            bad_field="Last-Event-ID",
        )
        out.append((f"events-sse/last-event-id-{name}", header))
    return out


@pytest.mark.parametrize("case", params(_query_cases()))
async def test_bad_queries(api_a: httpx.AsyncClient, db: Redis, world: World, case: Case) -> None:
    await check(api_a, db, world, case)


# ----- the matrix: headers -------------------------------------------------------------------

KB = 1024
RUN_BODY = dumps(VALID_RUN)


def _header_cases() -> list[tuple[str, Case]]:
    create = ("POST", "/v1/flows/echo/runs")

    def create_with(
        headers: dict[str, str | bytes], status: int, code: str, bad_field: str | None = None
    ) -> Case:
        return Case(*create, status, code, body=RUN_BODY, headers=headers, bad_field=bad_field)

    def too_large(headers: dict[str, str | bytes]) -> Case:
        return create_with(headers, 431, "headers_too_large")

    def bad_key(key: str | bytes) -> Case:
        return create_with({"Idempotency-Key": key}, 422, "validation_error", "Idempotency-Key")

    def bad_auth(value: str | bytes) -> Case:
        return create_with({"Authorization": value}, 401, "unauthorized")

    def read(path: str, headers: dict[str, str | bytes], status: int, code: str | None) -> Case:
        return Case("GET", path, status, code, headers=headers)

    padding = {"X-Padding": "p" * 100 * KB}
    batch = Case(
        "POST",
        "/v1/flows/echo/runs/batch",
        422,
        "validation_error",
        body=dumps({"items": [VALID_RUN]}),
        headers={"Idempotency-Key": "k" * 256},
        bad_field="Idempotency-Key",
    )
    webhook = Case(
        "POST",
        "/v1/webhooks",
        431,
        "headers_too_large",
        body=dumps({"url": "http://127.0.0.1:9/"}),
        headers=padding,
    )
    return [
        # Over 32 KiB or 100 headers: 431 before any route runs. Without app.HeaderLimits each of
        # these reached the routes, and the create ones started a run.
        ("read/padding-header-100KB", read("/v1/runs/{run}", padding, 431, "headers_too_large")),
        (
            "read/padding-header-1MB",
            read("/v1/runs", {"X-Padding": "p" * 1024 * KB}, 431, "headers_too_large"),
        ),
        ("create-run/padding-header-100KB", too_large(padding)),
        ("create-run/101-headers", too_large({f"X-Header-{i}": "v" for i in range(101)})),
        ("create-run/prefer-100KB", too_large({"Prefer": "wait=0, " + "x" * 100 * KB})),
        ("create-run/idempotency-key-100KB", too_large({"Idempotency-Key": "k" * 100 * KB})),
        ("create-run/authorization-100KB", too_large({"Authorization": "Bearer " + "k" * 100 * KB})),
        ("create-webhook/padding-header-100KB", webhook),
        # Under the limits, each header is judged by its own rule.
        ("create-run/authorization-10KB", bad_auth("Bearer " + "k" * 10 * KB)),
        ("create-run/authorization-latin1", bad_auth("Bearer clé".encode("latin-1"))),
        ("create-run/authorization-no-scheme", bad_auth(KEY_A)),
        ("create-run/idempotency-key-256", bad_key("k" * 256)),
        ("create-run/idempotency-key-10KB", bad_key("k" * 10 * KB)),
        ("create-run/idempotency-key-empty", bad_key("")),
        ("create-run/idempotency-key-inner-space", bad_key("a b")),
        ("create-run/idempotency-key-tab", bad_key("a\tb")),
        ("create-run/idempotency-key-latin1", bad_key("clé".encode("latin-1"))),
        ("create-batch/idempotency-key-256", batch),
        # The seeded run's key with another body. The code is the README's idempotency_conflict,
        # a subtype of API.md's 409 conflict.
        (
            "create-run/idempotency-key-reused",
            create_with({"Idempotency-Key": "seed-1"}, 409, "idempotency_conflict"),
        ),
        # A bad Prefer is ignored (RFC 7240), never an error of its own: the body decides.
        (
            "create-run/prefer-not-a-number-bad-body",
            Case(
                *create,
                422,
                "validation_error",
                body=b"{}",
                headers={"Prefer": "wait=abc"},
                bad_field="input",
            ),
        ),
        (
            "create-run/prefer-10KB-bad-body",
            Case(
                *create,
                422,
                "validation_error",
                body=b"{}",
                headers={"Prefer": "wait=1," * 1400},
                bad_field="input",
            ),
        ),
        # Well under the limit: served as usual.
        ("read/padding-header-16KB", read("/v1/runs/{run}", {"X-Padding": "p" * 16 * KB}, 200, None)),
    ]


@pytest.mark.parametrize("case", params(_header_cases()))
async def test_bad_headers(api_a: httpx.AsyncClient, db: Redis, world: World, case: Case) -> None:
    await check(api_a, db, world, case)


BAD_PREFER = ["wait=abc", "wait=-1", "wait=", "wait", "wait=1e3", "wait=0x10", "respond-async", "w" * 8 * KB]


@pytest.mark.parametrize("prefer", [pytest.param(v, id=v[:16]) for v in BAD_PREFER])
async def test_a_bad_prefer_is_ignored_and_the_run_starts(
    api_a: httpx.AsyncClient, db: Redis, world: World, prefer: str
) -> None:
    index = keys.index("tenant-a")
    before = await db.zcard(index)
    resp = await api_a.post("/v1/flows/echo/runs", content=RUN_BODY, headers={"Prefer": prefer})
    assert resp.status_code == 202, resp.text
    assert "preference-applied" not in resp.headers and resp.json()["status"] == "queued"
    assert await db.zcard(index) == before + 1


# ----- the matrix: bodies over ORCH_MAX_BODY_BYTES -------------------------------------------

OVERSIZED = {
    "create-run": dumps({"input": {"text": "x" * 2 * SMALL_BODY_LIMIT}}),
    "create-batch": dumps({"items": [{"input": {"text": "x" * 2 * SMALL_BODY_LIMIT}}]}),
    "create-webhook": dumps({"url": "http://127.0.0.1:9/", "description": "x" * 2 * SMALL_BODY_LIMIT}),
    "patch-webhook": dumps({"description": "x" * 2 * SMALL_BODY_LIMIT}),
    "recover": dumps({"since": "2020-01-01T00:00:00Z", "pad": "x" * 2 * SMALL_BODY_LIMIT}),
    "send-test": dumps({"eventType": "webhook.test", "pad": "x" * 2 * SMALL_BODY_LIMIT}),
}


def _oversized_cases() -> list[tuple[str, Case]]:
    out: list[tuple[str, Case]] = []
    for route, (method, path) in BODY_ROUTES.items():
        body = OVERSIZED[route]
        out.append(
            (f"{route}/valid-json-over-limit", Case(method, path, 413, "payload_too_large", body=body))
        )
        # Not even read: the size is refused before the (malformed, deep) content is looked at.
        out.append(
            (
                f"{route}/deep-json-over-limit",
                Case(method, path, 413, "payload_too_large", body=nested(100_000)),
            )
        )
        out.append(
            (
                f"{route}/garbage-over-limit",
                Case(method, path, 413, "payload_too_large", body=b"\xff" * 4 * SMALL_BODY_LIMIT),
            )
        )
    return out


@pytest.mark.parametrize("case", params(_oversized_cases()))
async def test_oversized_bodies(small_api: httpx.AsyncClient, db: Redis, world: World, case: Case) -> None:
    resp = await check(small_api, db, world, case)
    assert resp.json()["error"]["details"]["limit"] == SMALL_BODY_LIMIT


# ----- what uvicorn refuses before the app --------------------------------------------------


def raw_request(line: bytes, headers: bytes = b"", body: bytes = b"") -> bytes:
    """HTTP/1.1 bytes: the request `line`, Host, tenant A's key, the `headers` lines, the `body`."""
    return (
        line + b"\r\nHost: t\r\nAuthorization: Bearer " + KEY_A.encode() + b"\r\n" + headers + b"\r\n" + body
    )


GET_RUNS = b"GET /v1/runs HTTP/1.1"
POST_RUN = b"POST /v1/flows/echo/runs HTTP/1.1"
CHUNKED_RUN = f"{len(RUN_BODY):x}\r\n".encode() + RUN_BODY + b"\r\n0\r\n\r\n"
RAW_REQUESTS = {
    "url-over-64KiB": raw_request(b"GET /v1/runs/" + b"a" * 70 * KB + b" HTTP/1.1"),
    "nul-in-header-value": raw_request(GET_RUNS, b"X-A: a\x00b\r\n"),
    "cr-in-header-value": raw_request(GET_RUNS, b"X-A: a\rb\r\n"),
    "space-in-header-name": raw_request(GET_RUNS, b"X A: b\r\n"),
    "raw-non-ascii-path": raw_request(b"GET /v1/runs/exec_\xc3\xa9 HTTP/1.1"),
    "bad-method-token": raw_request(b"G@T /v1/runs HTTP/1.1"),
    "unknown-http-version": raw_request(b"GET /v1/runs HTTP/9.9"),
    "content-length-not-a-number": raw_request(POST_RUN, b"Content-Length: abc\r\n", RUN_BODY),
    "content-length-negative": raw_request(POST_RUN, b"Content-Length: -1\r\n", RUN_BODY),
    "two-content-lengths": raw_request(POST_RUN, b"Content-Length: 24\r\nContent-Length: 2\r\n", RUN_BODY),
    "content-length-and-chunked": raw_request(
        POST_RUN, b"Content-Length: 24\r\nTransfer-Encoding: chunked\r\n", CHUNKED_RUN
    ),
}


@pytest.mark.parametrize("raw", [pytest.param(v, id=k) for k, v in RAW_REQUESTS.items()])
async def test_malformed_http_is_refused_by_the_server(
    api_server: ServedApp, api_a: httpx.AsyncClient, db: Redis, world: World, raw: bytes
) -> None:
    before = await snapshot(db)
    reader, writer = await asyncio.open_connection("127.0.0.1", api_server.port)
    try:
        writer.write(raw)
        await writer.drain()
        # uvicorn answers and closes the connection: read to the end.
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 400 "), answer[:200]
    # uvicorn's own answer, not our envelope: the app never saw the request.
    assert b"content-type: text/plain" in head and b"connection: close" in head
    # The server is unharmed: the next request is served.
    assert (await api_a.get(f"/v1/runs/{world.run}")).status_code == 200
    assert_unchanged(before, await snapshot(db))


async def test_the_event_log_honours_a_valid_after(api_a: httpx.AsyncClient, db: Redis, world: World) -> None:
    # `after` was validated for the SSE stream only; the JSON log ignored it, bad or good.
    before = await snapshot(db)
    path = f"/v1/runs/{world.run}/events"
    everything = (await api_a.get(path)).json()["data"]
    assert [e["sequence"] for e in everything] == [1]
    assert (await api_a.get(path, params={"after": "0"})).json()["data"] == everything
    assert (await api_a.get(path, params={"after": "1"})).json() == {"data": [], "nextCursor": None}
    assert_unchanged(before, await snapshot(db))
