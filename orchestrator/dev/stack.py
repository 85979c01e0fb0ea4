"""``orchestrator dev``: embedded Redis, API, worker and dispatcher in one command, stopped together."""

from __future__ import annotations

import secrets
import signal
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import click

from orchestrator.dev.children import Children, child_env
from orchestrator.dev.embedded import EmbeddedRedis, RedisNotFound, free_port
from orchestrator.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEFAULT_FLOWS = "invoice_extraction"


def _wait_ready(url: str, children: Children, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if children.exited():
            return False
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def run_dev(
    settings: Settings,
    *,
    port: int,
    flows: str | None,
    data_dir: Path | None,
    environ: Mapping[str, str],
    demo: bool = False,
) -> int:
    """Start the stack, print how to use it, and supervise it until Ctrl-C; return the exit code."""
    redis: EmbeddedRedis | None = None
    updates: dict[str, object] = {"webhook_allow_private": True}
    if "ORCH_REDIS_URL" not in environ:
        redis = EmbeddedRedis(data_dir=data_dir)
        try:
            redis.start()
        except (RedisNotFound, RuntimeError) as exc:
            click.echo(f"error: {exc}", err=True)
            return 1
        updates["redis_url"] = redis.url
    if not settings.api_keys:
        updates["api_keys"] = (("dev", "sk_dev_" + secrets.token_urlsafe(16)),)
    if flows is not None:
        updates["flows"] = tuple(f.strip() for f in flows.split(",") if f.strip())
    elif not settings.flows:
        updates["flows"] = (DEFAULT_FLOWS,)
    settings = settings.model_copy(update=updates)
    port = port or free_port()
    env = child_env(environ, settings.to_env(), pythonpath=[str(EXAMPLES)] if EXAMPLES.is_dir() else [])
    children = Children()
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        children.orchestrator("api", "api", "--host", "127.0.0.1", "--port", str(port), env=env)
        children.orchestrator("worker", "worker", env=env)
        children.orchestrator("dispatcher", "dispatcher", env=env)
        url = f"http://127.0.0.1:{port}"
        if not _wait_ready(url, children):
            click.echo(f"error: the stack did not start ({children.exited() or 'timeout'})", err=True)
            return 1
        tenant, key = settings.api_keys[0]
        click.echo(
            f"\n  webhook-orchestrator dev\n  API      {url}\n  Redis    {settings.redis_url}"
            f"{' (embedded)' if redis else ''}\n  tenant   {tenant}\n  API key  {key}\n"
            f"  flows    {', '.join(settings.flows)}\n"
            f"  dashboard {url}/dashboard  (sign in with the API key above)\n\n  try:\n"
            f"  curl -s -X POST {url}/v1/flows/invoice-extraction/runs -H 'Authorization: Bearer {key}' "
            f'-H \'content-type: application/json\' -d "{{\\"input\\": $(cat examples/invoice.json)}}"\n'
            "\n  Ctrl-C stops everything.\n"
        )
        if demo:
            demo_env = {**env, "ORCH_BASE_URL": url, "ORCH_API_KEY": key}
            click.echo("  demo: a local receiver subscribes, an invoice is extracted, deliveries arrive:\n")
            children.start(
                "demo", [sys.executable, str(EXAMPLES / "webhook_receiver.py"), "--demo"], env=demo_env
            )
        while not stopping:
            dead = {
                name: code for name, code in children.exited().items() if not (name == "demo" and code == 0)
            }
            if dead:
                click.echo(f"error: a process ended unexpectedly: {dead}; stopping", err=True)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        children.stop()
        if redis is not None:
            redis.stop()
