"""Tenant isolation across every route of the app, and in what the dispatcher delivers.

Tenant A is seeded once for the module (``world``) through the real stack: endpoints with succeeded
and failed deliveries, a finished run with its own webhook, a queued run; tenant B has its own.
The route list is read from the served ``/openapi.json`` and the app's route table, so a new route
is swept without editing this file; a path parameter nobody classified fails the sweep.

Every call that names one of A's ids, made with B's key, must answer 404 ``not_found`` with the
same status, headers and body as the same call naming an id that never existed (the message may
name the id), and must change nothing in Redis. Nothing needs excluding from that comparison: the
API keeps no per-request state in Redis (no rate-limit or usage counters; the key ring caches
lookups in process memory). What does change on its own is written by background loops only:
``metrics:counters`` (workers and dispatchers flush once a second), ``arq:*`` health checks, leases
and pending starts (workers), the outbox group and its trimming (dispatchers). So the snapshot is
taken with no worker or dispatcher running and compared whole, TTLs included.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from orchestrator.flows import Registry
from orchestrator.settings import Settings
from tests.conftest import KEY_A, KEY_B, ServedApp, running_worker, wait_for
from tests.receiver import Receiver
from tests.security.redis_state import changes, snapshot
from tests.webhooks.helpers import running_dispatcher
from webhooks import WebhookVerificationError, verify
from webhooks.ids import new_id

# Path parameters naming something a tenant owns, with the prefix of their ids.
OWNED = {"run_id": "exec", "endpoint_id": "wh", "message_id": "msg"}
# Path parameters naming something every tenant shares: flows are registered per process.
SHARED = {"flow_id"}
PARAM = re.compile(r"{(\w+)(?::\w+)?}")

# Bodies for the routes that read one: valid, so that only ownership can refuse the call.
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/webhooks/{endpoint_id}"): {
        "url": "https://attacker.example/hook",
        "description": "taken over",
        "enabled": False,
    },
    ("POST", "/v1/webhooks/{endpoint_id}/recover"): {"since": "2000-01-01T00:00:00Z"},
    ("POST", "/v1/flows/{flow_id}/runs"): {"input": {"text": "x"}},
    ("POST", "/v1/flows/{flow_id}/runs/batch"): {"items": [{"input": {"text": "x"}}]},
    ("POST", "/v1/webhooks"): {"url": "https://example.com/b"},
}
# Extra ways to call a route: (headers, query) pairs; every route is also called plainly.
VARIANTS: dict[tuple[str, str], list[tuple[dict[str, str], dict[str, str]]]] = {
    ("GET", "/v1/runs/{run_id}/events"): [({"accept": "text/event-stream"}, {})],
    ("GET", "/v1/runs/{run_id}/wait"): [({}, {"timeout": "1"})],
    ("GET", "/v1/webhooks/{endpoint_id}/deliveries"): [({}, {"status": "failed"})],
    ("GET", "/v1/runs"): [({}, {"status": s}) for s in ("queued", "success")] + [({}, {"flowId": "echo"})],
}


@dataclass
class World:
    """What the module seeded: ids, secrets and the receivers' records, per tenant."""

    a: httpx.AsyncClient
    b: httpx.AsyncClient
    a_runs: list[str]  # [finished, queued]
    b_runs: list[str]  # [older than A's, newer than A's]
    a_endpoints: list[str]  # [succeeding, failing]
    b_endpoint: str
    a_messages: list[str]  # [failed, succeeded]
    b_messages: list[str]
    secrets: dict[str, str]  # endpoint id or "default-a" / "default-b" -> secret
    receivers: dict[str, Receiver]
    a_markers: set[str] = field(default_factory=set)


async def _settled(client: httpx.AsyncClient, endpoint_id: str, status: str, count: int) -> bool:
    """At least `count` deliveries, all in `status` (more would be a leak: the tests below say so)."""
    page = (await client.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"limit": 100})).json()
    return len(page["data"]) >= count and all(d["status"] == status for d in page["data"])


@pytest.fixture(scope="module")
async def world(
    api_server: ServedApp, redis_url: str, settings: Settings, registry: Registry
) -> AsyncIterator[World]:
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    names = ("a", "a_fail", "a_hook", "b", "b_hook")
    receivers = {n: await Receiver(default=500 if n == "a_fail" else 200).start() for n in names}
    a = httpx.AsyncClient(base_url=api_server.url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30)
    b = httpx.AsyncClient(base_url=api_server.url, headers={"Authorization": f"Bearer {KEY_B}"}, timeout=30)
    try:
        ea = (await a.post("/v1/webhooks", json={"url": receivers["a"].url})).json()
        ea_fail = (await a.post("/v1/webhooks", json={"url": receivers["a_fail"].url})).json()
        eb = (await b.post("/v1/webhooks", json={"url": receivers["b"].url})).json()

        async def start(client: httpx.AsyncClient, hook: str | None) -> str:
            body: dict[str, Any] = {"input": {"text": "isolation"}}
            if hook is not None:
                body["webhook"] = {"url": receivers[hook].url}
            created = await client.post("/v1/flows/echo/runs", json=body)
            assert created.status_code == 202, created.text
            return str(created.json()["id"])

        async with running_dispatcher(redis):
            async with running_worker(settings, registry):
                b_old = await start(b, "b_hook")
                a_done = await start(a, "a_hook")
                b_new = await start(b, "b_hook")
                for client, run_id in ((b, b_old), (a, a_done), (b, b_new)):
                    waited = await client.get(f"/v1/runs/{run_id}/wait", params={"timeout": 20})
                    assert waited.json()["status"] == "success"
            a_queued = await start(a, None)  # no worker any more: it stays queued
            await wait_for(lambda: _settled(a, ea["id"], "succeeded", 4), timeout=20)
            await wait_for(lambda: _settled(a, ea_fail["id"], "failed", 4), timeout=20)
            await wait_for(lambda: _settled(b, eb["id"], "succeeded", 6), timeout=20)
            await wait_for(lambda: len(receivers["a_hook"].requests) >= 3, timeout=20)
            await wait_for(lambda: len(receivers["b_hook"].requests) >= 6, timeout=20)

        async def message_ids(client: httpx.AsyncClient, endpoint_id: str) -> list[str]:
            page = await client.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"limit": 100})
            return [d["id"] for d in page.json()["data"]]

        # One message that failed (the queued run's, newest) and another that succeeded (the oldest).
        a_messages = [(await message_ids(a, ea_fail["id"]))[0], (await message_ids(a, ea["id"]))[-1]]
        assert a_messages[0] != a_messages[1]
        secrets = {
            ea["id"]: ea["secret"],
            ea_fail["id"]: ea_fail["secret"],
            eb["id"]: eb["secret"],
            "default-a": (await a.get("/v1/webhooks/default-secret")).json()["secret"],
            "default-b": (await b.get("/v1/webhooks/default-secret")).json()["secret"],
        }
        found = World(
            a=a,
            b=b,
            a_runs=[a_done, a_queued],
            b_runs=[b_old, b_new],
            a_endpoints=[ea["id"], ea_fail["id"]],
            b_endpoint=eb["id"],
            a_messages=a_messages,
            b_messages=await message_ids(b, eb["id"]),
            secrets=secrets,
            receivers=receivers,
        )
        all_a_messages = {*await message_ids(a, ea["id"]), *await message_ids(a, ea_fail["id"])}
        found.a_markers = {
            *found.a_runs,
            *found.a_endpoints,
            *all_a_messages,
            *(receivers[n].url for n in ("a", "a_fail", "a_hook")),
            secrets[ea["id"]],
            secrets[ea_fail["id"]],
            secrets["default-a"],
        }
        yield found
    finally:
        await a.aclose()
        await b.aclose()
        for receiver in receivers.values():
            await receiver.stop()
        await redis.aclose()


# --- the route table ---------------------------------------------------------------------------


async def discover_routes(client: httpx.AsyncClient, api_server: ServedApp) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves: its route table, and all that /openapi.json lists."""
    table = {(m, r.path) for r in api_server.app.routes for m in (getattr(r, "methods", None) or ())}
    spec = (await client.get("/openapi.json")).json()
    documented = {
        (m.upper(), path)
        for path, ops in spec["paths"].items()
        for m, op in ops.items()
        if "x-flow-id" not in op  # a flow's own typed operation, served by /v1/flows/{flow_id}/runs
    }
    assert documented <= table, f"documented but not served: {sorted(documented - table)}"
    assert len(table) >= 30  # a sanity floor: the sweep must not pass by finding nothing
    return sorted(table | documented)


def params_of(template: str) -> list[str]:
    """The path parameters of a route template."""
    return PARAM.findall(template)


def fill(template: str, values: dict[str, str]) -> str:
    """The path with each parameter replaced by its value."""
    return PARAM.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class Call:
    """One request as B: which route, with which ids, headers and query."""

    method: str
    template: str
    ids: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...] = ()
    query: tuple[tuple[str, str], ...] = ()

    async def send(self, client: httpx.AsyncClient, ids: dict[str, str] | None = None) -> httpx.Response:
        """Send the call, with `ids` in place of its own if given."""
        body = BODIES.get((self.method, self.template))
        return await client.request(
            self.method,
            fill(self.template, ids if ids is not None else dict(self.ids)),
            headers=dict(self.headers),
            params=dict(self.query),
            json=body,
        )


def foreign_calls(routes: list[tuple[str, str]], world: World) -> list[Call]:
    """Every route naming an owned id, called with A's ids (B's own endpoint beside A's message)."""
    choices = {
        "run_id": [(r, True) for r in world.a_runs],
        "endpoint_id": [(e, True) for e in world.a_endpoints],
        "message_id": [(m, True) for m in world.a_messages],
        "flow_id": [("echo", False)],
    }
    calls: list[Call] = []
    for method, template in routes:
        names = params_of(template)
        unknown = [n for n in names if n not in OWNED and n not in SHARED]
        assert not unknown, f"{method} {template}: classify {unknown} in OWNED or SHARED"
        if not any(n in OWNED for n in names):
            continue
        options = {n: list(choices[n]) for n in names}
        if "message_id" in names:  # B's own endpoint naming A's message
            options["endpoint_id"].append((world.b_endpoint, False))
        base = (method if method != "HEAD" else "GET", template)
        variants = [({}, {}), *VARIANTS.get(base, [])]
        for combo in itertools.product(*(options[n] for n in names)):
            if not any(is_a for _, is_a in combo):
                continue
            ids = tuple((n, value) for n, (value, _) in zip(names, combo, strict=True))
            for headers, query in variants:
                calls.append(Call(method, template, ids, tuple(headers.items()), tuple(query.items())))
    return calls


def missing_twin(call: Call, world: World) -> dict[str, str]:
    """The call's ids with each of A's replaced by a well-formed id that never existed."""
    a_ids = {*world.a_runs, *world.a_endpoints, *world.a_messages}
    return {n: new_id(OWNED[n]) if v in a_ids else v for n, v in call.ids}


def normalised(resp: httpx.Response, ids: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """Status, headers (but the date) and body, with the ids named in it replaced by their names."""
    text = resp.text
    for name, value in ids.items():
        text = text.replace(value, f"<{name}>")
    headers = {k: v for k, v in resp.headers.items() if k != "date"}
    return resp.status_code, headers, text


# --- the sweep ---------------------------------------------------------------------------------


async def test_every_route_naming_an_id_is_swept(world: World, api_server: ServedApp) -> None:
    routes = await discover_routes(world.b, api_server)
    calls = foreign_calls(routes, world)
    swept = {(c.method, c.template) for c in calls}
    owned = {(m, t) for m, t in routes if any(p in OWNED for p in params_of(t))}
    assert swept == owned
    # What the seed and the table must at least hold for the sweep to mean anything.
    assert ("POST", "/v1/webhooks/{endpoint_id}/deliveries/{message_id}/retry") in swept
    assert ("GET", "/v1/runs/{run_id}/events") in swept and ("HEAD", "/v1/runs/{run_id}") in swept
    assert len(calls) >= 50


async def test_foreign_ids_answer_exactly_like_missing_ones_and_change_nothing(
    world: World, api_server: ServedApp, redis_url: str
) -> None:
    routes = await discover_routes(world.b, api_server)
    redis = Redis.from_url(redis_url)
    try:
        before = await snapshot(redis)
        for call in foreign_calls(routes, world):
            foreign = await call.send(world.b)
            twin_ids = missing_twin(call, world)
            missing = await call.send(world.b, twin_ids)
            where = f"{call.method} {fill(call.template, dict(call.ids))} {call.headers} {call.query}"
            assert foreign.status_code == 404, (where, foreign.text)
            if call.method != "HEAD":
                error = foreign.json()["error"]
                assert error["code"] == "not_found" and set(error) == {"code", "message", "details"}, where
                assert not leaked(world, foreign.text, allow=dict(call.ids).values()), where
            assert normalised(foreign, dict(call.ids)) == normalised(missing, twin_ids), where
        after = await snapshot(redis)
    finally:
        await redis.aclose()
    assert changes(before, after) == []
    # A still sees its own things as they were (the sweep included cancel, delete and rotate).
    assert (await world.a.get(f"/v1/runs/{world.a_runs[1]}")).json()["status"] == "queued"
    for endpoint_id in world.a_endpoints:
        assert (await world.a.get(f"/v1/webhooks/{endpoint_id}")).json()["enabled"] is True


# --- what B can list ---------------------------------------------------------------------------


def leaked(world: World, text: str, *, allow: Collection[str] = ()) -> set[str]:
    """Which of A's ids, URLs and secrets appear in `text`."""
    return {marker for marker in world.a_markers if marker in text and marker not in allow}


async def test_nothing_b_can_read_names_anything_of_a(world: World, api_server: ServedApp) -> None:
    routes = await discover_routes(world.b, api_server)
    own = {"run_id": world.b_runs, "endpoint_id": [world.b_endpoint], "flow_id": ["echo", "slow"]}
    read = 0
    for method, template in routes:
        if method != "GET" or "message_id" in params_of(template):
            continue
        names = params_of(template)
        for combo in itertools.product(*(own[n] for n in names)):
            path = fill(template, dict(zip(names, combo, strict=True)))
            for headers, query in [({}, {}), *VARIANTS.get((method, template), [])]:
                resp = await world.b.get(path, headers=headers, params=query)
                assert resp.status_code in (200, 202), (path, resp.text)
                # /metrics needs no key and labels backlogs with endpoint ids (README "Operations"):
                # an operator's view, to be kept off the public network; ids only, nothing else of A's.
                allow = set(world.a_endpoints) if path == "/metrics" else set()
                assert not leaked(world, resp.text, allow=allow), (path, query, headers)
                read += 1
    assert read >= 25


# The event log of a finished echo run (progress is logged, though not delivered by default).
RUN_EVENTS = ["execution.queued", "execution.running", "execution.progress", "execution.success"]


async def test_lists_as_b_hold_only_b_items(world: World) -> None:
    b = world.b
    runs = (await b.get("/v1/runs", params={"limit": 100})).json()
    assert [r["id"] for r in runs["data"]] == world.b_runs[::-1] and runs["nextCursor"] is None
    assert (await b.get("/v1/runs", params={"status": "queued"})).json()["data"] == []
    webhooks = (await b.get("/v1/webhooks")).json()["data"]
    assert [e["id"] for e in webhooks] == [world.b_endpoint]
    deliveries = (await b.get(f"/v1/webhooks/{world.b_endpoint}/deliveries", params={"limit": 100})).json()
    assert {d["runId"] for d in deliveries["data"]} == set(world.b_runs)
    for run_id in world.b_runs:
        events = (await b.get(f"/v1/runs/{run_id}/events")).json()["data"]
        assert {e["data"]["id"] for e in events} == {run_id}
        assert [e["type"] for e in events] == RUN_EVENTS
        async with b.stream("GET", f"/v1/runs/{run_id}/events", headers={"accept": "text/event-stream"}) as s:
            stream = (await s.aread()).decode()
        assert re.findall(r"^event: (.+)$", stream, re.MULTILINE) == RUN_EVENTS
        assert stream.count(f'"id":"{run_id}"') == len(RUN_EVENTS)
        assert not leaked(world, stream)
        report = (await b.get(f"/v1/runs/{run_id}/deliveries")).json()
        assert {t["endpointId"] for t in report["data"]} == {world.b_endpoint, f"hook_{run_id}"}
    assert (await b.get("/v1/webhooks/default-secret")).json()["secret"] == world.secrets["default-b"]
    assert world.secrets["default-b"] != world.secrets["default-a"]


async def test_cursors_made_from_a_items_leak_nothing(world: World) -> None:
    b = world.b

    async def ids(path: str, params: dict[str, Any]) -> tuple[list[str], str | None]:
        resp = await b.get(path, params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        return [item["id"] for item in page["data"]], page["nextCursor"]

    lists = [
        ("/v1/runs", {}, world.a_runs),
        ("/v1/runs", {"status": "success"}, world.a_runs),
        ("/v1/runs", {"flowId": "echo"}, world.a_runs),
        ("/v1/webhooks", {}, world.a_endpoints),
        (f"/v1/webhooks/{world.b_endpoint}/deliveries", {}, world.a_messages),
        (f"/v1/webhooks/{world.b_endpoint}/deliveries", {"status": "succeeded"}, world.a_messages),
    ]
    b_ids = {*world.b_runs, world.b_endpoint, *world.b_messages}
    checked = 0
    for path, params, cursors in lists:
        everything, _ = await ids(path, {**params, "limit": 100})
        assert everything and set(everything) <= b_ids, (path, params)
        for cursor, limit in itertools.product(cursors, (1, 100)):
            got, next_cursor = await ids(path, {**params, "cursor": cursor, "limit": limit})
            # The answer depends on where the cursor sorts among B's own ids, and on nothing else.
            older = [i for i in everything if i < cursor]
            assert got == older[:limit], (path, params, cursor)
            assert next_cursor == (got[-1] if len(older) > limit else None)
            checked += bool(older)
    assert checked >= 6  # A's ids fall between B's, so some pages are not empty


# --- deliveries --------------------------------------------------------------------------------


def signed_only_with(recorded: Receiver, secret: str, others: list[str]) -> set[tuple[str, str]]:
    """(event type, run id) of each request, checking each carries one signature, by `secret` alone."""
    seen: set[tuple[str, str]] = set()
    for request in recorded.requests:
        assert len(request.headers["webhook-signature"].split()) == 1
        event = verify(request.body, request.headers, secret)
        for other in others:
            with pytest.raises(WebhookVerificationError):
                verify(request.body, request.headers, other)
        seen.add((event.type, event.data["id"]))
    return seen


async def test_deliveries_never_cross_tenants(world: World) -> None:
    r, s = world.receivers, world.secrets
    every = list(s.values())
    statuses = ("execution.queued", "execution.running", "execution.success")
    a_done, a_queued = world.a_runs
    a_events = {(t, a_done) for t in statuses} | {("execution.queued", a_queued)}
    b_events = {(t, run_id) for t in statuses for run_id in world.b_runs}
    ea, ea_fail = world.a_endpoints

    def others(secret: str) -> list[str]:
        return [x for x in every if x != secret]

    assert signed_only_with(r["a"], s[ea], others(s[ea])) == a_events
    assert signed_only_with(r["a_fail"], s[ea_fail], others(s[ea_fail])) == a_events
    assert signed_only_with(r["a_hook"], s["default-a"], others(s["default-a"])) == {
        (t, a_done) for t in statuses
    }
    b_endpoint_secret = s[world.b_endpoint]
    assert signed_only_with(r["b"], b_endpoint_secret, others(b_endpoint_secret)) == b_events
    assert signed_only_with(r["b_hook"], s["default-b"], others(s["default-b"])) == b_events
    assert len(r["a_fail"].requests) == 4 * 5  # every A message failed for good at its one endpoint


async def test_idempotency_keys_are_per_tenant(world: World) -> None:
    body = {"input": {"text": "same body"}}
    headers = {"Idempotency-Key": "shared-key-1"}
    first = await world.a.post("/v1/flows/echo/runs", json=body, headers=headers)
    other = await world.b.post("/v1/flows/echo/runs", json=body, headers=headers)
    assert first.status_code == other.status_code == 202
    assert other.json()["id"] != first.json()["id"] and "idempotent-replayed" not in other.headers
    again = await world.a.post("/v1/flows/echo/runs", json=body, headers=headers)
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert (await world.b.get(f"/v1/runs/{first.json()['id']}")).status_code == 404
