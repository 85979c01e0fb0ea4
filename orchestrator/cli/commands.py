"""Client commands of the CLI (``run``, ``runs``, ``webhooks``): the SDK, shown with rich.

Human output by default, ``--json`` for scripts. Exit codes: 0 ok, 1 the execution failed or was
cancelled (``run --wait``, ``runs wait``), 2 bad usage, 3 API error, 4 timeout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.client import APIError, Client, Execution, TimeoutError

console = Console()
err_console = Console(stderr=True)

EXIT_FAILED, EXIT_API, EXIT_TIMEOUT = 1, 3, 4
STATUS_STYLE = {
    "queued": "cyan",
    "running": "yellow",
    "success": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--base-url``, ``--api-key`` and ``--json`` on every client command."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)
    fn = click.option("--api-key", envvar="ORCH_API_KEY", help="API key (default: $ORCH_API_KEY).")(fn)
    return click.option(
        "--base-url", envvar="ORCH_BASE_URL", default="http://127.0.0.1:8000", show_default=True
    )(fn)


@contextmanager
def connect(base_url: str, api_key: str | None) -> Iterator[Client]:
    """A client; API errors become one line on stderr and exit code 3."""
    if not api_key:
        raise click.UsageError("no API key: pass --api-key or set ORCH_API_KEY")
    try:
        with Client(base_url, api_key=api_key) as client:
            yield client
    except TimeoutError as exc:
        err_console.print(f"[yellow]timeout:[/] {exc}")
        sys.exit(EXIT_TIMEOUT)
    except APIError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_API)


def emit(value: Any) -> None:
    """Print a model (or list of models) as JSON."""
    if isinstance(value, list):
        click.echo(json.dumps([v.model_dump(mode="json", by_alias=True) for v in value], indent=2))
    elif isinstance(value, BaseModel):
        click.echo(value.model_dump_json(by_alias=True, indent=2))
    else:
        click.echo(json.dumps(value, indent=2))


def status_text(status: str) -> str:
    """A status, coloured."""
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def show_execution(ex: Execution[Any]) -> None:
    """One execution as a two-column table."""
    table = Table(show_header=False, box=None)
    table.add_row("id", ex.id)
    table.add_row("flow", ex.flow_id)
    table.add_row("status", status_text(ex.status.value))
    table.add_row("created", ex.created_at.isoformat())
    if ex.duration is not None:
        table.add_row("duration", f"{ex.duration} ms")
    m = ex.metrics
    table.add_row("steps", f"{m.steps_run}/{m.steps_total if m.steps_total is not None else '?'}")
    table.add_row("usage", f"{m.tokens_used} tokens, ${m.cost:.4f}")
    table.add_row("attempt", str(ex.attempt))
    if ex.error is not None:
        table.add_row("error", f"[red]{ex.error.code}[/]: {ex.error.message} {ex.error.details or ''}")
    if ex.output is not None:
        table.add_row("output", json.dumps(ex.output, indent=2))
    console.print(table)


def read_input(value: str) -> Any:
    """``--input`` as JSON text, or ``@path`` to a JSON file."""
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"not JSON (or not a readable @file): {exc}", param_hint="--input") from None


def exit_for(ex: Execution[Any]) -> None:
    """Exit 1 unless the execution succeeded."""
    if ex.status.value != "success":
        sys.exit(EXIT_FAILED)


def follow(client: Client, ex: Execution[Any]) -> Execution[Any]:
    """Draw a progress bar from stepsRun/stepsTotal, pushed over SSE, until the execution ends."""
    total = ex.metrics.steps_total
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"{ex.flow_id} {ex.status.value}", total=total)
        for event in client.runs.stream(ex.id):
            data = event.data
            progress.update(
                task,
                completed=data.metrics.steps_run,
                total=data.metrics.steps_total,
                description=f"{data.flow_id} {data.status.value}",
            )
    return client.runs.get(ex.id)


@click.command("run")
@click.argument("flow_id")
@click.option("--input", "input_", required=True, help="Input as JSON, or @file.json.")
@click.option("--metadata", default=None, help="Metadata as JSON.")
@click.option("--wait", is_flag=True, help="Follow the execution (progress bar) until it ends.")
@client_options
def run(
    flow_id: str,
    input_: str,
    metadata: str | None,
    wait: bool,
    base_url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Start an execution of FLOW_ID."""
    data = read_input(input_)
    meta = read_input(metadata) if metadata else None
    with connect(base_url, api_key) as client:
        ex = client.flows.run(flow_id, data, metadata=meta)
        if wait:
            ex = client.runs.wait_for_completion(ex.id, timeout=3600) if as_json else follow(client, ex)
        emit(ex) if as_json else show_execution(ex)
        if wait:
            exit_for(ex)


@click.group("runs")
def runs() -> None:
    """Read, list, wait for and cancel executions."""


@runs.command("get")
@click.argument("execution_id")
@client_options
def runs_get(execution_id: str, base_url: str, api_key: str | None, as_json: bool) -> None:
    """Show one execution."""
    with connect(base_url, api_key) as client:
        ex = client.runs.get(execution_id)
        emit(ex) if as_json else show_execution(ex)


@runs.command("list")
@click.option("--status", type=click.Choice(["queued", "running", "success", "failed", "cancelled"]))
@click.option("--flow", "flow_id", default=None)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@client_options
def runs_list(
    status: str | None, flow_id: str | None, limit: int, base_url: str, api_key: str | None, as_json: bool
) -> None:
    """List executions, newest first."""
    with connect(base_url, api_key) as client:
        items = client.runs.list(status=status, flow_id=flow_id, page_size=min(limit, 100)).to_list(limit)
        if as_json:
            emit(items)
            return
        table = Table("id", "flow", "status", "created", "duration", "steps")
        for ex in items:
            steps = f"{ex.metrics.steps_run}/{ex.metrics.steps_total or '?'}"
            duration = f"{ex.duration} ms" if ex.duration is not None else ""
            table.add_row(
                ex.id, ex.flow_id, status_text(ex.status.value), ex.created_at.isoformat(), duration, steps
            )
        console.print(table)


@runs.command("wait")
@click.argument("execution_id")
@click.option("--timeout", default=300.0, show_default=True, type=float)
@client_options
def runs_wait(execution_id: str, timeout: float, base_url: str, api_key: str | None, as_json: bool) -> None:
    """Wait (long-poll) until the execution ends; exit 1 unless it succeeded, 4 on timeout."""
    with connect(base_url, api_key) as client:
        ex = client.runs.wait_for_completion(execution_id, timeout=timeout)
        emit(ex) if as_json else show_execution(ex)
        exit_for(ex)


@runs.command("cancel")
@click.argument("execution_id")
@client_options
def runs_cancel(execution_id: str, base_url: str, api_key: str | None, as_json: bool) -> None:
    """Cancel a queued or running execution."""
    with connect(base_url, api_key) as client:
        ex = client.runs.cancel(execution_id)
        emit(ex) if as_json else show_execution(ex)


@runs.command("deliveries")
@click.argument("execution_id")
@client_options
def runs_deliveries(execution_id: str, base_url: str, api_key: str | None, as_json: bool) -> None:
    """Where are this execution's webhooks? Each endpoint, each event: delivered, pending, or why not."""
    with connect(base_url, api_key) as client:
        report = client.runs.deliveries(execution_id)
        if as_json:
            emit(report)
            return
        table = Table("endpoint", "event", "state", "attempts", "next / why not")
        for ep in report["data"]:
            for ev in ep["events"]:
                if ev["matched"]:
                    state = ev["status"] or "not recorded yet"
                    tries = ", ".join(str(a.get("statusCode") or a.get("error")) for a in ev["attempts"])
                    table.add_row(ep["url"], ev["eventType"], state, tries, ev.get("nextAttemptAt") or "")
                else:
                    table.add_row(ep["url"], ev["eventType"], "[dim]not sent[/]", "", ev["reason"])
        console.print(table)


@click.group("webhooks")
def webhooks_group() -> None:
    """Manage webhook endpoints and their deliveries."""


@webhooks_group.command("create")
@click.argument("url")
@click.option("--event", "events", multiple=True, help="Event type (repeat); default: every status change.")
@click.option("--flow", "flow_ids", multiple=True, help="Only these flows (repeat).")
@click.option("--description", default=None)
@client_options
def webhooks_create(
    url: str,
    events: tuple[str, ...],
    flow_ids: tuple[str, ...],
    description: str | None,
    base_url: str,
    api_key: str | None,
    as_json: bool,
) -> None:
    """Subscribe URL; prints the signing secret (shown only now)."""
    with connect(base_url, api_key) as client:
        ep = client.webhooks.create(
            url, events=list(events) or None, flow_ids=list(flow_ids) or None, description=description
        )
        if as_json:
            emit(ep)
        else:
            console.print(f"endpoint [bold]{ep.id}[/] -> {ep.url}\nsecret   {ep.secret}  (shown only now)")


@webhooks_group.command("list")
@client_options
def webhooks_list(base_url: str, api_key: str | None, as_json: bool) -> None:
    """List endpoints."""
    with connect(base_url, api_key) as client:
        items = client.webhooks.list().to_list()
        if as_json:
            emit(items)
            return
        table = Table("id", "url", "events", "flows", "enabled")
        for ep in items:
            enabled = "yes" if ep.enabled else f"no ({ep.disabled_reason or 'by hand'})"
            table.add_row(
                ep.id, ep.url, ", ".join(ep.events) or "(status changes)", ", ".join(ep.flow_ids), enabled
            )
        console.print(table)


@webhooks_group.command("deliveries")
@click.argument("endpoint_id")
@click.option("--status", type=click.Choice(["pending", "succeeded", "failed"]))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@client_options
def webhooks_deliveries(
    endpoint_id: str, status: str | None, limit: int, base_url: str, api_key: str | None, as_json: bool
) -> None:
    """Messages sent to an endpoint, with every attempt."""
    with connect(base_url, api_key) as client:
        items = client.webhooks.deliveries(endpoint_id, status=status, page_size=min(limit, 100)).to_list(
            limit
        )
        if as_json:
            emit(items)
            return
        table = Table("message", "event", "run", "status", "attempts", "next attempt")
        for d in items:
            tries = ", ".join(str(a.status_code or a.error) for a in d.attempts)
            nxt = d.next_attempt_at.isoformat() if d.next_attempt_at else ""
            table.add_row(d.id, d.event_type, d.run_id or "", d.status.value, tries, nxt)
        console.print(table)


@webhooks_group.command("retry")
@click.argument("endpoint_id")
@click.argument("message_id")
@client_options
def webhooks_retry(
    endpoint_id: str, message_id: str, base_url: str, api_key: str | None, as_json: bool
) -> None:
    """Send one message again now (same webhook-id)."""
    with connect(base_url, api_key) as client:
        client.webhooks.retry(endpoint_id, message_id)
        emit({"messageId": message_id, "status": "pending"}) if as_json else console.print("queued again")


@webhooks_group.command("recover")
@click.argument("endpoint_id")
@click.option("--since", required=True, type=click.DateTime(), help="e.g. 2026-11-28T00:00:00 (UTC)")
@client_options
def webhooks_recover(
    endpoint_id: str, since: datetime, base_url: str, api_key: str | None, as_json: bool
) -> None:
    """Send again every message that failed since a time."""
    from datetime import UTC

    with connect(base_url, api_key) as client:
        count = client.webhooks.recover(endpoint_id, since.replace(tzinfo=since.tzinfo or UTC))
        emit({"count": count}) if as_json else console.print(f"{count} messages queued again")


@webhooks_group.command("listen")
@click.option("--forward", default=None, help="Forward each event (signed as sent) to this URL.")
@click.option(
    "--event", "events", multiple=True, help="Event types to receive (repeat); default: status changes."
)
@click.option("--max-events", type=int, default=None, help="Exit after this many events.")
@click.option("--base-url", envvar="ORCH_BASE_URL", default="http://127.0.0.1:8000", show_default=True)
@click.option("--api-key", envvar="ORCH_API_KEY", help="API key (default: $ORCH_API_KEY).")
def webhooks_listen(
    forward: str | None, events: tuple[str, ...], max_events: int | None, base_url: str, api_key: str | None
) -> None:
    """Receive this tenant's events on this machine, print them, forward them (like `stripe listen`)."""
    import asyncio

    from orchestrator.cli.listen import listen

    if not api_key:
        raise click.UsageError("no API key: pass --api-key or set ORCH_API_KEY")
    try:
        asyncio.run(
            listen(
                base_url=base_url,
                api_key=api_key,
                forward=forward,
                events=list(events) or None,
                max_events=max_events,
            )
        )
    except APIError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(EXIT_API)
