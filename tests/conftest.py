"""Shared fixtures: a private redis-server, settings, an API served by uvicorn, in-process workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
import uvicorn
from redis.asyncio import Redis

from tests.deadlines import wait_for
from tests.redis_server import RedisNotFound, RedisServer, free_port

# No module-level import of `orchestrator` here: this conftest is loaded for tests/webhooks too,
# which runs with the package blocked (tests/standalone.py); fixtures import it when they run.
if TYPE_CHECKING:
    from orchestrator.flows import Registry
    from orchestrator.settings import Settings
    from orchestrator.worker.worker import WakingWorker

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# The example flows (invoice_extraction) are served by the test API and workers too.
sys.path.insert(0, str(EXAMPLES))
KEY_A = "key-tenant-a"
KEY_B = "key-tenant-b"
T = TypeVar("T")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        server.start()
    except RedisNotFound as exc:
        pytest.exit(str(exc), 2)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and one replica (which `DEBUG SLEEP` can hold back), synced before use."""
    primary = RedisServer(extra=("--repl-diskless-sync-delay", "0"))
    primary.start()
    replica = RedisServer(
        extra=(
            *("--replicaof", "127.0.0.1", str(primary.port)),
            *("--dir", str(tmp_path_factory.mktemp("replica"))),
            *("--enable-debug-command", "local"),
        )
    )
    replica.start()
    try:
        import redis as sync_redis

        with sync_redis.Redis(port=primary.port) as client:
            # "online" on the primary's side (after the replica's first ack): only then does WAIT count it
            deadline = time.monotonic() + 30
            while client.info("replication").get("slave0", {}).get("state") != "online":
                assert time.monotonic() < deadline, "the test replica did not sync"
                time.sleep(0.02)
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    from orchestrator.settings import Settings

    values: dict[str, Any] = {
        "redis_url": redis_url,
        "api_keys": (("tenant-a", KEY_A), ("tenant-b", KEY_B)),
        "flows": ("tests.flows", "invoice_extraction"),
        "webhook_allow_private": True,
        "lease_seconds": 2.0,
        "heartbeat_seconds": 0.3,
        "sweep_seconds": 0.2,
        "requeue_after_seconds": 1.0,
        "worker_poll_delay": 0.5,
        "sse_heartbeat_seconds": 0.5,
        # in-process workers stop like a deploy, without the production grace period
        "worker_shutdown_grace_seconds": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url)


@pytest.fixture(scope="session")
def registry(settings: Settings) -> Registry:
    from orchestrator.flows import load_registry

    return load_registry(settings.flows)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


class ServedApp:
    def __init__(self, port: int, app: Any) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.app = app


@contextlib.asynccontextmanager
async def serve(settings: Settings, registry: Registry) -> AsyncIterator[ServedApp]:
    """Serve create_app(settings) with uvicorn on a free loopback port in this event loop."""
    from orchestrator.api.app import create_app

    port = free_port()
    app = create_app(settings, registry)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    await wait_for(lambda: server.started, timeout=10)
    try:
        yield ServedApp(port, app)
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def api_server(settings: Settings, registry: Registry) -> AsyncIterator[ServedApp]:
    async with serve(settings, registry) as served:
        yield served


def tenant_client(base_url: str, key: str = KEY_A, timeout: float = 30) -> httpx.AsyncClient:
    """An HTTP client calling the API at `base_url` with one tenant's key."""
    return httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


@pytest.fixture
async def client(api_server: ServedApp, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with tenant_client(api_server.url) as c:
        yield c


@pytest.fixture
async def client_b(api_server: ServedApp, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    async with tenant_client(api_server.url, KEY_B) as c:
        yield c


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, registry: Registry, **overrides: Any
) -> AsyncIterator[WakingWorker]:
    """An in-process worker running until the block ends."""
    from orchestrator.worker.worker import build_worker

    worker = build_worker(settings, registry, handle_signals=False, **overrides)
    task = asyncio.get_running_loop().create_task(worker.main())
    # Cancelling arq while it still creates its pool would abandon an unclosed Redis client.
    await wait_for(lambda: "runner" in worker.ctx or task.done(), timeout=10)
    try:
        yield worker
    finally:
        # Stop the way a deploy would: no new jobs, let running ones end, cancel only the laggards
        # (cancelling arq or redis-py mid-pipeline leaks connections).
        worker.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        jobs = [t for t in worker.tasks.values() if not t.done()]
        if jobs:
            _, late = await asyncio.wait(jobs, timeout=3)
            for job in late:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        worker.tasks.clear()
        await worker.close()


@pytest.fixture
async def worker(settings: Settings, registry: Registry, redis: Redis) -> AsyncIterator[WakingWorker]:
    async with running_worker(settings, registry) as w:
        yield w


def subprocess_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(settings.to_env())
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(EXAMPLES)])
    return env


def spawn(settings: Settings, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `python -m orchestrator ARGS` with `settings` in its environment (stderr to `log`)."""
    command = [sys.executable, "-m", "orchestrator", *args]
    if log is None:
        return subprocess.Popen(
            command,
            env=subprocess_env(settings),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with log.open("ab") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command, env=subprocess_env(settings), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what the fault suites measured (load held, faults injected, recovery times)."""
    from tests.report import lines

    found = lines()
    if found:
        terminalreporter.section("fault report")
        for line in found:
            terminalreporter.write_line(line)
