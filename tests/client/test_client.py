"""The SDK against the live API (uvicorn on loopback) and an in-process worker."""

from __future__ import annotations

import asyncio
import builtins
import inspect
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from pydantic import BaseModel
from redis.asyncio import Redis

from orchestrator.client import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    TimeoutError,
    ValidationError,
    _sync,
)
from orchestrator.client.flows import AsyncFlows
from orchestrator.client.runs import AsyncRuns
from orchestrator.client.webhooks import AsyncWebhooks
from orchestrator.worker.worker import WakingWorker
from tests.conftest import KEY_A, ROOT, ServedApp, free_port


class Text(BaseModel):
    text: str


@pytest.fixture
async def sdk(api_server: ServedApp, redis: Redis) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(api_server.url, api_key=KEY_A) as client:
        yield client


@pytest.mark.parametrize(
    "sync_cls,async_cls",
    [(_sync.Flows, AsyncFlows), (_sync.Runs, AsyncRuns), (_sync.Webhooks, AsyncWebhooks)],
)
def test_sync_and_async_resources_have_the_same_methods_and_parameters(
    sync_cls: type, async_cls: type
) -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        return {
            n: inspect.signature(f) for n, f in vars(cls).items() if callable(f) and not n.startswith("_")
        }

    sync_methods, async_methods = public(sync_cls), public(async_cls)
    assert sync_methods.keys() == async_methods.keys()
    for name, sig in sync_methods.items():
        other = async_methods[name]
        assert [(p.name, p.kind, p.default) for p in sig.parameters.values()] == [
            (p.name, p.kind, p.default) for p in other.parameters.values()
        ], name


def test_the_sdk_imports_without_server_packages() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'arq', 'redis', 'uvicorn'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from orchestrator.client import Client, AsyncClient\n"
        "import webhooks\n"
        "from webhooks import verify\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


async def test_flows_and_a_typed_run(sdk: AsyncClient, worker: WakingWorker) -> None:
    flows = {f.id for f in await sdk.flows.list()}
    assert {"echo", "slow"} <= flows
    assert (await sdk.flows.get("echo")).steps_total == 1
    ex = await sdk.flows.run("echo", {"text": "typed"}, metadata={"k": "v"})
    assert ex.status == "queued" and ex.metadata == {"k": "v"}
    done = await sdk.runs.wait_for_completion(ex.id, timeout=20, output_type=Text)
    assert done.status == "success" and isinstance(done.output, Text) and done.output.text == "typed"
    got = await sdk.runs.get(ex.id, output_type=Text)
    assert isinstance(got.output, Text)
    assert (await sdk.flows.run("echo", Text(text="model in"), wait=20)).status == "success"


async def test_typed_errors(sdk: AsyncClient, api_server: ServedApp) -> None:
    with pytest.raises(NotFoundError) as nf:
        await sdk.runs.get("exec_01M8JFKRM31KNKQKXWXQWENK52")
    assert nf.value.status_code == 404 and nf.value.code == "not_found"
    with pytest.raises(ValidationError) as bad:
        await sdk.flows.run("echo", {"text": 1})
    assert bad.value.details["fields"][0]["field"] == "input.text"
    ex = await sdk.flows.run("slow", {"seconds": 60})
    await sdk.runs.cancel(ex.id)
    with pytest.raises(ConflictError) as conflict:
        await sdk.runs.cancel(ex.id)
    assert conflict.value.details["status"] == "cancelled"
    async with AsyncClient(api_server.url, api_key="wrong") as other:
        with pytest.raises(AuthenticationError):
            await other.flows.list()


async def test_wait_times_out_with_a_builtin_timeout_error_and_can_go_on(
    sdk: AsyncClient, worker: WakingWorker
) -> None:
    ex = await sdk.flows.run("slow", {"seconds": 1.0})
    with pytest.raises(TimeoutError) as info:
        await sdk.runs.wait_for_completion(ex.id, timeout=0.3)
    assert isinstance(info.value, builtins.TimeoutError) and info.value.execution_id == ex.id
    done = await sdk.runs.wait_for_completion(ex.id, timeout=20)
    assert done.status == "success"


async def test_list_iterates_across_pages(sdk: AsyncClient) -> None:
    ids = [(await sdk.flows.run("echo", {"text": str(i)})).id for i in range(7)]
    seen = [ex.id async for ex in sdk.runs.list(page_size=3)]
    assert seen == list(reversed(ids))
    queued = await sdk.runs.list(status="queued", flow_id="echo", page_size=2).to_list(limit=4)
    assert [e.id for e in queued] == list(reversed(ids))[:4]


async def test_batch_and_wait_all(sdk: AsyncClient, worker: WakingWorker) -> None:
    runs = await sdk.flows.run_batch("echo", [{"input": {"text": str(i)}} for i in range(20)])
    done = await sdk.runs.wait_all([r.id for r in runs], timeout=30, output_type=Text)
    assert [d.output.text for d in done] == [str(i) for i in range(20)]  # type: ignore[union-attr]


async def test_events_and_stream(sdk: AsyncClient, worker: WakingWorker) -> None:
    ex = await sdk.flows.run("echo", {"text": "s"})
    streamed = [e async for e in sdk.runs.stream(ex.id)]
    assert [e.type for e in streamed][-1] == "execution.success"
    assert [e.sequence for e in streamed] == list(range(1, len(streamed) + 1))
    listed = await sdk.runs.events(ex.id)
    assert [e.id for e in listed] == [e.id for e in streamed]
    resumed = [e async for e in sdk.runs.stream(ex.id, after=2)]
    assert [e.sequence for e in resumed] == list(range(3, len(streamed) + 1))
    assert [e async for e in sdk.runs.stream(ex.id, after=len(streamed))] == []


async def test_webhook_resource_round_trip(sdk: AsyncClient) -> None:
    ep = await sdk.webhooks.create("https://example.com/hook", events=["execution.success"], description="d")
    assert ep.secret and ep.secret.startswith("whsec_")
    assert [e.id async for e in sdk.webhooks.list()] == [ep.id]
    assert (await sdk.webhooks.get(ep.id)).secret is None
    assert (await sdk.webhooks.update(ep.id, enabled=False)).enabled is False
    assert (await sdk.webhooks.rotate_secret(ep.id)) != ep.secret
    message_id = await sdk.webhooks.test(ep.id)
    assert [d.id async for d in sdk.webhooks.deliveries(ep.id)] == [message_id]
    typed = await sdk.webhooks.test(ep.id, event_type="execution.success")
    assert typed != message_id
    assert [e.type async for e in sdk.webhooks.events(ep.id)] == ["endpoint.disabled"]  # the update above
    ordered = await sdk.webhooks.update(ep.id, headers={"X-Token": "t1"}, ordering="run")
    assert ordered.headers == {"X-Token": "********"} and ordered.ordering == "run"
    await sdk.webhooks.retry(ep.id, message_id)
    from datetime import UTC, datetime

    assert await sdk.webhooks.recover(ep.id, datetime(2020, 1, 1, tzinfo=UTC)) == 0
    default = await sdk.webhooks.default_secret()
    assert default.startswith("whsec_")
    rotated = await sdk.webhooks.rotate_default_secret()
    assert rotated != default and await sdk.webhooks.default_secret() == rotated
    await sdk.webhooks.delete(ep.id)
    with pytest.raises(NotFoundError):
        await sdk.webhooks.get(ep.id)


async def test_the_sync_client_does_the_same(
    api_server: ServedApp, worker: WakingWorker, redis: Redis
) -> None:
    def work() -> tuple[str, str, int]:
        with Client(api_server.url, api_key=KEY_A) as client:
            ex = client.flows.run("echo", {"text": "sync"})
            done = client.runs.wait_for_completion(ex.id, timeout=20, output_type=Text)
            events = [e.type for e in client.runs.stream(ex.id)]
            listed = list(client.runs.list(page_size=1))
            assert isinstance(done.output, Text)
            return done.output.text, events[-1], len(listed)

    text, last, count = await asyncio.to_thread(work)
    assert (text, last, count) == ("sync", "execution.success", 1)


async def test_env_configuration(
    api_server: ServedApp, monkeypatch: pytest.MonkeyPatch, redis: Redis
) -> None:
    monkeypatch.setenv("ORCH_BASE_URL", api_server.url)
    monkeypatch.setenv("ORCH_API_KEY", KEY_A)
    async with AsyncClient() as client:
        assert await client.flows.get("echo")
    monkeypatch.delenv("ORCH_API_KEY")
    with pytest.raises(ValueError):
        AsyncClient()


class FlakyServer:
    """A stand-in server: scripted statuses, and no /wait route (an older server)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.script: list[int] = []
        self.polls = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((request.method, request.path))
        if self.script:
            return web.json_response(
                {"error": {"code": "unavailable", "message": "x", "details": {}}},
                status=self.script.pop(0),
                headers={"Retry-After": "0"},
            )
        if request.path.endswith("/wait"):
            return web.json_response(
                {"error": {"code": "not_found", "message": "no route", "details": {}}}, status=404
            )
        if request.path.startswith("/v1/runs/"):
            self.polls += 1
            status = "success" if self.polls >= 3 else "running"
            return web.json_response(
                {
                    "id": "exec_x",
                    "flowId": "f",
                    "status": status,
                    "createdAt": "2026-11-29T00:00:00.000Z",
                    "traceId": "t",
                }
            )
        return web.json_response(
            {
                "id": "exec_x",
                "flowId": "f",
                "status": "queued",
                "createdAt": "2026-11-29T00:00:00.000Z",
                "traceId": "t",
            },
            status=202,
        )

    async def start(self) -> FlakyServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        return self


@pytest.fixture
async def flaky() -> AsyncIterator[FlakyServer]:
    server = await FlakyServer().start()
    yield server
    assert server.runner is not None
    await server.runner.cleanup()


async def test_reads_and_keyed_creates_are_retried_but_cancel_is_not(flaky: FlakyServer) -> None:
    async with AsyncClient(flaky.url, api_key="k", max_retries=2) as client:
        flaky.script = [503, 502]
        assert (await client.runs.get("exec_x")).id == "exec_x"
        assert len(flaky.calls) == 3
        flaky.calls.clear()
        flaky.script = [503]
        assert (await client.flows.run("f", {})).status == "queued"  # carries an Idempotency-Key
        assert len(flaky.calls) == 2
        flaky.calls.clear()
        flaky.script = [503]
        with pytest.raises(ServiceUnavailableError):
            await client.runs.cancel("exec_x")
        assert len(flaky.calls) == 1
        flaky.script = [503, 503, 503]
        with pytest.raises(ServiceUnavailableError):
            await client.runs.get("exec_x")


async def test_falls_back_to_interval_polling_without_long_poll(flaky: FlakyServer) -> None:
    async with AsyncClient(flaky.url, api_key="k") as client:
        done = await client.runs.wait_for_completion("exec_x", interval=0.01, timeout=10)
    assert done.status == "success" and flaky.polls == 3
    assert sum(1 for _, path in flaky.calls if path.endswith("/wait")) == 1  # learned once


async def test_connection_errors_are_typed_after_retries() -> None:
    async with AsyncClient(f"http://127.0.0.1:{free_port()}", api_key="k", max_retries=1) as client:
        with pytest.raises(APIConnectionError):
            await client.runs.get("exec_x")
