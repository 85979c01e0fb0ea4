"""The process commands: ``api``, ``worker``, ``dispatcher``, and ``keys create``.

Each builds what its process needs from the Settings made once by the group (``cli.main``) and
imports only that: the dispatcher never loads Starlette, the API never loads the dispatcher.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from orchestrator.settings import Settings

if TYPE_CHECKING:
    from orchestrator.flows import Registry


def settings_of(ctx: click.Context) -> Settings:
    """The Settings the group built from the environment."""
    settings: Settings = ctx.obj
    return settings


def registry_of(settings: Settings) -> Registry:
    """The flows of ``ORCH_FLOWS``; a module that cannot be imported is one line and exit code 1."""
    from orchestrator.flows import FlowModuleError, load_registry

    try:
        return load_registry(settings.flows)
    except FlowModuleError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="API processes")
@click.pass_context
def api(ctx: click.Context, host: str, port: int, workers: int) -> None:
    """Serve the HTTP API (Starlette on uvicorn with httptools and uvloop)."""
    import uvicorn

    settings = settings_of(ctx)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 5,
    }
    if workers > 1:
        uvicorn.run("orchestrator.api.app:app_from_env", factory=True, workers=workers, **options)
        return
    from orchestrator.api.app import create_app

    uvicorn.run(create_app(settings, registry_of(settings)), **options)


@click.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.pass_context
def worker(ctx: click.Context, burst: bool) -> None:
    """Run an arq worker that executes runs of the flows in ORCH_FLOWS."""
    import uvloop

    from orchestrator.worker.worker import build_worker

    settings = settings_of(ctx)
    registry = registry_of(settings)
    if not registry.all():
        click.echo("warning: no flows registered (set ORCH_FLOWS)", err=True)

    async def run() -> None:
        w = build_worker(settings, registry, burst=burst)
        try:
            await w.main()
        finally:
            await w.close()

    if burst:
        uvloop.run(run())
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    build_worker(settings, registry).run()


@click.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key belongs to.")
@click.option(
    "--redis-url",
    default=None,
    help="The Redis to store it in (default: $ORCH_REDIS_URL, else a running `orchestrator dev`'s).",
)
@click.pass_context
def keys_create(ctx: click.Context, tenant: str, redis_url: str | None) -> None:
    """Create an API key for TENANT; it is stored hashed and printed once."""
    from orchestrator.api.auth import create_key
    from orchestrator.connections import redis_from_settings
    from orchestrator.dev.state import running
    from orchestrator.redis_url import RedisURLError, mask, parse

    settings = settings_of(ctx)
    if redis_url is None and "ORCH_REDIS_URL" not in os.environ:
        stack = running()
        if stack is not None:
            redis_url = stack.redis_url
            click.echo(f"using the dev stack's Redis at {mask(redis_url)} (.data/dev/stack.json)", err=True)
    if redis_url is not None:
        try:
            parse(redis_url)
        except RedisURLError as exc:
            click.echo(f"error: {str(exc).replace('ORCH_REDIS_URL', '--redis-url', 1)}", err=True)
            sys.exit(2)
        settings = settings.model_copy(update={"redis_url": redis_url})

    async def run() -> str:
        redis = redis_from_settings(settings)  # one Redis or a Sentinel service, like every process
        try:
            key = await create_key(redis, tenant)
            # Printed once and never again: with ORCH_REDIS_MIN_REPLICAS_ACK it must outlive a failover.
            await settings.replication.fence(redis, what="the new key")
            return key
        finally:
            await redis.aclose()

    try:
        key = asyncio.run(run())
    except Exception as exc:
        click.echo(f"error: could not store the key: {exc}", err=True)
        sys.exit(1)
    click.echo(key)


@click.command()
@click.pass_context
def dispatcher(ctx: click.Context) -> None:
    """Deliver webhooks: read the outbox, fan out, sign, send, retry (run any number of these)."""
    import signal

    import uvloop

    from orchestrator import events
    from orchestrator.connections import redis_from_settings
    from webhooks import Dispatcher

    settings = settings_of(ctx)

    async def run() -> None:
        redis = redis_from_settings(settings, max_connections=settings.redis_max_connections * 2)
        worker = Dispatcher(
            settings.dispatcher,
            redis,
            default_events=events.DEFAULT_EVENTS,
            coalesced_events=events.COALESCED_EVENTS,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.stop()))
        try:
            await worker.run()
        finally:
            await redis.aclose()

    uvloop.run(run())
