"""``orchestrator dev``: embedded Redis, API, worker, dispatcher and a receiver, in one command.

Before starting anything it imports the flows (a broken module is one line with its file and
line) and checks the port (a busy one is one line, at once). Its data folder (default
``./.data/dev``) keeps Redis's data and the dev API key, so the key and the runs survive a restart.
Each child's output is prefixed with its name; the children run in their own process group, so
Ctrl-C reaches only this process, which stops them in order (receiver, API, worker, dispatcher,
then Redis) and nothing complains about a lost connection on the way out.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import click

from orchestrator.dev.children import Children, child_env
from orchestrator.dev.embedded import EmbeddedRedis, RedisNotFound, free_port
from orchestrator.dev.state import TENANT, DevStack, dev_key, forget, running
from orchestrator.flows import FlowModuleError, load_registry
from orchestrator.redis_url import mask
from orchestrator.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEFAULT_FLOWS = ("invoice_extraction",)
# A receiver that fails in development should recover in seconds, not in five minutes.
DEV_RETRIES = {
    "webhook_retry_schedule": (1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
    "webhook_probe_schedule": (2.0, 5.0, 10.0, 30.0),
    "webhook_disable_after_seconds": 120.0,
}
RECEIVER_READY = "Ready. Endpoint"  # printed by `webhooks listen` once its endpoint exists
ORDER = ("receiver", "api", "worker", "dispatcher")  # the order children are stopped in


class DevError(Exception):
    """Why the stack cannot start, in one line."""


def port_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port`."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_flows(modules: tuple[str, ...]) -> dict[str, Any]:
    """Import every flows module here first (a broken one is one line, before anything starts).

    Returns the ids of the flows they register, each with its example input (None if it has none).
    """
    if EXAMPLES.is_dir() and str(EXAMPLES) not in sys.path:
        sys.path.append(str(EXAMPLES))
    try:
        return {f.id: f.example for f in load_registry(modules).all()}
    except FlowModuleError as exc:
        raise DevError(str(exc)) from None


def try_line(flows: dict[str, Any]) -> str:
    """The `orchestrator run` line the banner suggests: with an input that works from here."""
    if not flows:
        return "orchestrator flows list"
    flow = "invoice-extraction" if "invoice-extraction" in flows else next(iter(flows))
    if flow == "invoice-extraction" and Path("examples/invoice.json").is_file():
        return f"orchestrator run {flow} --input @examples/invoice.json --wait"
    if flows[flow] is not None:
        return f"orchestrator run {flow} --input {shlex.quote(json.dumps(flows[flow]))} --wait"
    return f"orchestrator flows show {flow}     # its input, and a run line to start from"


def cli_hint() -> str:
    """How to get the `orchestrator` command in another terminal, wherever this one runs."""
    if shutil.which("orchestrator"):
        return "(the `orchestrator` CLI is on your PATH)"
    activate = Path(sys.prefix) / "bin" / "activate"
    if activate.is_file():
        return f"source {shlex.quote(str(activate))}"
    return "alias orchestrator='python -m orchestrator'"


def _pipe(name: str, stream: IO[bytes], ready: tuple[str, threading.Event] | None) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip()
        if line:
            click.echo(f"[{name}] {line}")
            if ready is not None and line.startswith(ready[0]):
                ready[1].set()


class DevChildren(Children):
    """Children whose output is shown prefixed with their name, in a process group of their own."""

    def __init__(self) -> None:
        super().__init__()
        self.ready: dict[str, threading.Event] = {}
        self.ready_line: dict[str, str] = {}

    def start(self, name: str, args: Sequence[str], *, env: Mapping[str, str], quiet: bool = False) -> None:
        """Start `args` as child `name`, echoing its output as ``[name] line``.

        If `ready_line` names a prefix for `name`, ``ready[name]`` is set once the child prints it.
        """
        proc = subprocess.Popen(
            list(args),
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches only `orchestrator dev`
            cwd=os.getcwd(),
        )
        self.procs[name] = proc
        assert proc.stdout is not None
        marker = self.ready_line.get(name)
        ready = (marker, self.ready.setdefault(name, threading.Event())) if marker else None
        threading.Thread(target=_pipe, args=(name, proc.stdout, ready), daemon=True).start()

    def wait_line(self, name: str, timeout: float) -> bool:
        """Wait until child `name` printed its ready line; False if it exited or `timeout` s passed."""
        deadline = time.monotonic() + timeout
        event = self.ready[name]
        while not event.wait(0.1):
            if self.exited() or time.monotonic() > deadline:
                return False
        return True

    def stop_in_order(self, timeout: float = 10.0) -> None:
        """Stop the children one role at a time, in ORDER (each gets `timeout`, then SIGKILL)."""
        for name in [*ORDER, *(n for n in self.procs if n not in ORDER)]:
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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


def banner(
    url: str, settings: Settings, key: str, data_dir: Path, embedded: bool, flows: dict[str, Any]
) -> str:
    """What `orchestrator dev` prints once the stack answers."""
    redis = mask(settings.redis_url) + (f" (embedded; data in {data_dir})" if embedded else "")
    flow_ids = list(flows)
    return f"""
  webhook-orchestrator dev is up
    API         {url}        reference: {url}/docs
    Dashboard   {url}/dashboard  (sign in with the API key below)
    Redis       {redis}
    Flows       {", ".join(flow_ids) or "none"}  (from {", ".join(settings.flows)})
    API key     {key}  (tenant {TENANT}; the same on every start with this data folder)
    Receiver    every delivery below marked [receiver] was verified by `orchestrator webhooks listen`

  In another terminal:
    {cli_hint()}
    export ORCH_BASE_URL={url} ORCH_API_KEY={key}
    orchestrator flows list
    {try_line(flows)}
    curl -s {url}/v1/runs -H 'Authorization: Bearer {key}'

  Ctrl-C stops everything.
"""


def _demo(url: str, key: str) -> None:
    """Run the invoice example once and say what to try next (its deliveries print as [receiver])."""
    from orchestrator.client import Client

    example = json.loads((EXAMPLES / "invoice.json").read_text())
    with Client(url, api_key=key) as client:
        ex = client.flows.run("invoice-extraction", example)
        click.echo(f"[demo] started {ex.id}; watch its webhooks arrive below")
        done = client.runs.wait_for_completion(ex.id, timeout=120)
        click.echo(
            f"[demo] {done.id} {done.status.value} in {done.duration} ms; output {json.dumps(done.output)}"
        )
    click.echo(
        "\n  next steps:\n"
        f"    orchestrator runs get {ex.id}\n"
        f"    orchestrator runs deliveries {ex.id}     # where each webhook went\n"
        "    orchestrator webhooks create https://your.app/hooks   # your own endpoint (secret shown once)\n"
        f"    open {url}/docs\n"
    )


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
    folder = data_dir or Path(".data") / "dev"
    modules = tuple(f.strip() for f in flows.split(",") if f.strip()) if flows is not None else settings.flows
    modules = modules or DEFAULT_FLOWS
    try:
        found = check_flows(modules)
        other = running(folder)
        if other is not None:
            raise DevError(
                f"a dev stack already runs from {folder} (pid {other.pid}, API at {other.base_url}); "
                "stop it, or pass another --data-dir"
            )
        if port and not port_free(port):
            raise DevError(
                f"port {port} is in use (another `orchestrator dev`?); pass --port 0 for any free port"
            )
    except DevError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    port = port or free_port()
    redis: EmbeddedRedis | None = None
    updates: dict[str, object] = {"webhook_allow_private": True, "flows": modules, "log_format": "short"}
    updates.update({k: v for k, v in DEV_RETRIES.items() if f"ORCH_{k.upper()}" not in environ})
    if "ORCH_REDIS_URL" not in environ:
        redis = EmbeddedRedis(data_dir=folder)
        try:
            redis.start()
        except (RedisNotFound, RuntimeError) as exc:
            click.echo(f"error: {exc}", err=True)
            return 1
        updates["redis_url"] = redis.url
    key = settings.api_keys[0][1] if settings.api_keys else dev_key(folder)
    if not settings.api_keys:
        updates["api_keys"] = ((TENANT, key),)
    settings = settings.model_copy(update=updates)
    url = f"http://127.0.0.1:{port}"
    env = child_env(
        environ, settings.to_env(), pythonpath=[os.getcwd(), *([str(EXAMPLES)] if EXAMPLES.is_dir() else [])]
    )
    children = DevChildren()
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
        if not _wait_ready(url, children):
            click.echo(
                f"error: the stack did not start ({children.exited() or 'no answer in 30 s'})", err=True
            )
            return 1
        client_env = {**env, "ORCH_BASE_URL": url, "ORCH_API_KEY": key}
        # Runs created before the receiver's endpoint exists would not be sent to it: the stack is
        # announced (banner, stack.json for the CLI, the demo) only once the receiver is ready.
        children.ready_line["receiver"] = RECEIVER_READY
        children.orchestrator("receiver", "webhooks", "listen", env=client_env)
        if not children.wait_line("receiver", 30.0):
            click.echo(
                f"error: the receiver did not start ({children.exited() or 'not ready in 30 s'})", err=True
            )
            return 1
        DevStack(base_url=url, redis_url=settings.redis_url, api_key=key, pid=os.getpid()).save(folder)
        click.echo(banner(url, settings, key, folder, redis is not None, found))
        if demo:
            try:
                _demo(url, key)
            except Exception as exc:  # the stack stays up; say what failed
                click.echo(f"[demo] could not run: {exc}", err=True)
        while not stopping:
            dead = children.exited()
            if dead:
                click.echo(f"error: a process ended unexpectedly: {dead}; stopping", err=True)
                return 1
            time.sleep(0.2)
        click.echo("stopping...")
        return 0
    finally:
        forget(folder)
        children.stop_in_order()
        if redis is not None:
            redis.stop()
        if stopping:
            click.echo(f"stopped; your runs and the dev key are kept in {folder}")
