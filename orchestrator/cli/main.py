"""The ``orchestrator`` command: parse arguments, configure logging, build Settings, start a process."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import click

from orchestrator.settings import Settings


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


@click.group()
@click.version_option(package_name="webhook-orchestrator")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run flows on arq and report every status change by signed webhooks."""
    try:
        settings = Settings.from_env()
    except Exception as exc:  # a bad ORCH_* value: say which, exit 2
        raise click.UsageError(f"bad configuration: {exc}") from None
    from orchestrator.logs import configure

    configure(level=settings.log_level, fmt=settings.log_format)
    ctx.obj = settings


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="API processes")
@click.pass_context
def api(ctx: click.Context, host: str, port: int, workers: int) -> None:
    """Serve the HTTP API (Starlette on uvicorn with httptools and uvloop)."""
    import uvicorn

    settings = _settings(ctx)
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

    uvicorn.run(create_app(settings), **options)


@main.command()
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.pass_context
def worker(ctx: click.Context, burst: bool) -> None:
    """Run an arq worker that executes runs of the flows in ORCH_FLOWS."""
    import uvloop

    from orchestrator.flows import load_registry
    from orchestrator.worker.worker import build_worker

    settings = _settings(ctx)
    registry = load_registry(settings.flows)
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


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key belongs to.")
@click.pass_context
def keys_create(ctx: click.Context, tenant: str) -> None:
    """Create an API key for TENANT; it is stored hashed and printed once."""
    from orchestrator.api.app import redis_from_settings
    from orchestrator.api.auth import create_key

    settings = _settings(ctx)

    async def run() -> str:
        redis = redis_from_settings(settings)
        try:
            return await create_key(redis, tenant)
        finally:
            await redis.aclose()

    try:
        key = asyncio.run(run())
    except Exception as exc:
        click.echo(f"error: could not store the key: {exc}", err=True)
        sys.exit(1)
    click.echo(key)


@main.command()
@click.option("--port", default=8000, show_default=True, type=int, help="API port (0: any free port).")
@click.option("--flows", default=None, help="Comma-separated flow modules (default: the examples).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the embedded Redis data (AOF) here between runs.",
)
@click.option("--demo", is_flag=True, help="Also subscribe a local receiver and run the invoice example.")
@click.pass_context
def dev(ctx: click.Context, port: int, flows: str | None, data_dir: Path | None, demo: bool) -> None:
    """Run everything on this machine: Redis (embedded unless ORCH_REDIS_URL), API, worker, dispatcher."""
    from orchestrator.dev.stack import run_dev

    code = run_dev(
        _settings(ctx), port=port, flows=flows, data_dir=data_dir, environ=dict(os.environ), demo=demo
    )
    sys.exit(code)


@main.command()
@click.pass_context
def dispatcher(ctx: click.Context) -> None:
    """Deliver webhooks: read the outbox, fan out, sign, send, retry (run any number of these)."""
    import signal

    import uvloop

    from orchestrator import events
    from orchestrator.api.app import redis_from_settings
    from webhooks.dispatcher import Dispatcher

    settings = _settings(ctx)

    async def run() -> None:
        redis = redis_from_settings(settings, max_connections=settings.redis_max_connections * 2)
        worker = Dispatcher(
            settings.dispatcher,
            redis,
            default_events=events.DEFAULT_EVENTS,
            coalesced_events=(events.PROGRESS,),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.stop()))
        try:
            await worker.run()
        finally:
            await redis.aclose()

    uvloop.run(run())


def _register_client_commands() -> None:
    from orchestrator.cli.commands import run, runs, webhooks_group

    main.add_command(run)
    main.add_command(runs)
    main.add_command(webhooks_group)


_register_client_commands()


@main.command()
@click.option("--quick", is_flag=True, help="Small sizes, one repeat: under a minute.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every key, median, plus detail).")
@click.option("--only", multiple=True, help="Run only these scenarios (repeat).")
@click.option("--repeats", type=int, default=None, help="Repeats per scenario (default 1 quick, 3 full).")
def bench(quick: bool, as_json: bool, only: tuple[str, ...], repeats: int | None) -> None:
    """Measure throughput and latency as ratios against raw arq and raw aiohttp, in one run."""
    import logging

    import uvloop

    from orchestrator.dev.bench.report import run_all, show

    logging.getLogger().setLevel(
        logging.WARNING
    )  # the bench writes runs itself; one log line each would skew it
    from orchestrator.dev.bench.scenarios import SCENARIOS

    unknown = [name for name in only if name not in SCENARIOS]
    if unknown:
        raise click.BadParameter(
            f"unknown scenario(s) {unknown}; choose from {sorted(SCENARIOS)}", param_hint="--only"
        )
    result = uvloop.run(run_all(quick=quick, only=only, repeats=repeats or (1 if quick else 3)))
    show(result, as_json=as_json)
