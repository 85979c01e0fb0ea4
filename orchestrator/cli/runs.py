"""``orchestrator run`` and ``orchestrator runs get|list|wait|cancel|deliveries``: executions over the SDK."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.cli.output import (
    client_options,
    connect,
    console,
    emit,
    err_console,
    exit_for,
    read_input,
    show_execution,
    status_text,
    table,
)
from orchestrator.client import Client, Execution


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
                description=f"{data.flow_id} {data.status.value}"
                + (f" ({data.metrics.last_step})" if data.metrics.last_step else ""),
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
    base_url: str | None,
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
        elif not as_json:
            click.echo(f"follow it: orchestrator runs wait {ex.id}   (or run it with --wait)", err=True)


@click.group("runs")
def runs() -> None:
    """Read, list, wait for and cancel executions."""


@runs.command("get")
@click.argument("execution_id")
@client_options
def runs_get(execution_id: str, base_url: str | None, api_key: str | None, as_json: bool) -> None:
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
    status: str | None,
    flow_id: str | None,
    limit: int,
    base_url: str | None,
    api_key: str | None,
    as_json: bool,
) -> None:
    """List executions, newest first."""
    with connect(base_url, api_key) as client:
        items = client.runs.list(status=status, flow_id=flow_id, page_size=min(limit, 100)).to_list(limit)
        if as_json:
            emit(items)
            return
        rows = table("id", "flow", "status", "created UTC", "duration", "steps", ids=("id",))
        for ex in items:
            steps = f"{ex.metrics.steps_run}/{ex.metrics.steps_total or '?'}"
            duration = f"{ex.duration}ms" if ex.duration is not None else ""
            created = ex.created_at.strftime("%m-%d %H:%M:%S")
            rows.add_row(ex.id, ex.flow_id, status_text(ex.status.value), created, duration, steps)
        console.print(rows)


@runs.command("wait")
@click.argument("execution_id")
@click.option("--timeout", default=300.0, show_default=True, type=float)
@client_options
def runs_wait(
    execution_id: str, timeout: float, base_url: str | None, api_key: str | None, as_json: bool
) -> None:
    """Wait (long-poll) until the execution ends; exit 1 unless it succeeded, 4 on timeout."""
    with connect(base_url, api_key) as client:
        ex = client.runs.wait_for_completion(execution_id, timeout=timeout)
        emit(ex) if as_json else show_execution(ex)
        exit_for(ex)


@runs.command("cancel")
@click.argument("execution_id")
@client_options
def runs_cancel(execution_id: str, base_url: str | None, api_key: str | None, as_json: bool) -> None:
    """Cancel a queued or running execution."""
    with connect(base_url, api_key) as client:
        ex = client.runs.cancel(execution_id)
        emit(ex) if as_json else show_execution(ex)


@runs.command("deliveries")
@click.argument("execution_id")
@client_options
def runs_deliveries(execution_id: str, base_url: str | None, api_key: str | None, as_json: bool) -> None:
    """Where are this execution's webhooks? Each endpoint, each event: delivered, pending, or why not."""
    with connect(base_url, api_key) as client:
        report = client.runs.deliveries(execution_id)
        if as_json:
            emit(report)
            return
        rows = table("endpoint", "event", "state", "tries", "last result", "next / why not")
        for ep in report["data"]:
            where = ep["url"] + (" (deleted)" if ep.get("deletedAt") else "")
            for ev in ep["events"]:
                if ev["matched"]:
                    state = ev["status"] or "not recorded yet"
                    tries = str(len(ev["attempts"]))
                    last = ev["attempts"][-1] if ev["attempts"] else {}
                    result = str(last.get("statusCode") or last.get("error") or "")
                    rows.add_row(
                        where,
                        ev["eventType"],
                        state,
                        tries,
                        escape(result),
                        ev.get("nextAttemptAt") or "",
                    )
                else:
                    rows.add_row(where, ev["eventType"], "[dim]not sent[/]", "", "", ev["reason"])
        if not report["data"]:
            console.print(
                "no endpoint is subscribed to this tenant's events, and the run has no webhook of its own: "
                "try `orchestrator webhooks listen` (or `webhooks create URL`)"
            )
            return
        console.print(rows)
