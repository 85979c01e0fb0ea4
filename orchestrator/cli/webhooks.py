"""``orchestrator webhooks create|list|deliveries|retry|recover|listen``: endpoints over the SDK."""

from __future__ import annotations

import sys
from datetime import datetime

import click

from orchestrator.cli.output import (
    EXIT_API,
    client_options,
    clip,
    connect,
    console,
    emit,
    err_console,
    explain,
    resolve,
    table,
    wide,
)
from orchestrator.client import APIError


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
    base_url: str | None,
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
def webhooks_list(base_url: str | None, api_key: str | None, as_json: bool) -> None:
    """List endpoints."""
    with connect(base_url, api_key) as client:
        items = client.webhooks.list().to_list()
        if as_json:
            emit(items)
            return
        rows = table("id", "url", "events", "flows", "enabled", ids=("id",))
        for ep in items:
            enabled = "yes" if ep.enabled else f"no ({ep.disabled_reason or 'by hand'})"
            rows.add_row(
                ep.id, ep.url, ", ".join(ep.events) or "(status changes)", ", ".join(ep.flow_ids), enabled
            )
        console.print(rows)


@webhooks_group.command("delete")
@click.argument("endpoint_id")
@client_options
def webhooks_delete(endpoint_id: str, base_url: str | None, api_key: str | None, as_json: bool) -> None:
    """Delete an endpoint (what was delivered to it stays in the runs' delivery reports)."""
    with connect(base_url, api_key) as client:
        client.webhooks.delete(endpoint_id)
        if as_json:
            emit({"id": endpoint_id, "deleted": True})
            return
        err_console.print(f"deleted {endpoint_id}")


@webhooks_group.command("deliveries")
@click.argument("endpoint_id")
@click.option("--status", type=click.Choice(["pending", "succeeded", "failed"]))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@client_options
def webhooks_deliveries(
    endpoint_id: str, status: str | None, limit: int, base_url: str | None, api_key: str | None, as_json: bool
) -> None:
    """Messages sent to an endpoint, with every attempt."""
    with connect(base_url, api_key) as client:
        items = client.webhooks.deliveries(endpoint_id, status=status, page_size=min(limit, 100)).to_list(
            limit
        )
        if as_json:
            emit(items)
            return
        # The run's id only where it fits beside the message's: ids are never cut (--json has all).
        with_run = wide()
        columns = ["message", "event", *(["run"] if with_run else []), "status", "tries", "last result"]
        rows = table(*columns, "next", ids=("message", "run"), short=("event", "status", "tries", "next"))
        for d in items:
            last = d.attempts[-1] if d.attempts else None
            result = "" if last is None else clip(str(last.status_code or last.error or ""))
            nxt = d.next_attempt_at.strftime("%H:%M:%S") if d.next_attempt_at else ""
            run = [d.run_id or ""] if with_run else []
            rows.add_row(
                d.id,
                d.event_type.removeprefix("execution."),
                *run,
                d.status.value,
                str(len(d.attempts)),
                result,
                nxt,
            )
        console.print(rows)


@webhooks_group.command("retry")
@click.argument("endpoint_id")
@click.argument("message_id")
@client_options
def webhooks_retry(
    endpoint_id: str, message_id: str, base_url: str | None, api_key: str | None, as_json: bool
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
    endpoint_id: str, since: datetime, base_url: str | None, api_key: str | None, as_json: bool
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
@click.option(
    "--insecure",
    is_flag=True,
    help="Do not verify the --forward target's TLS certificate (a self-signed dev server); warns.",
)
@click.option("--base-url", envvar="ORCH_BASE_URL", default=None, help="API URL (as the other commands).")
@click.option("--api-key", envvar="ORCH_API_KEY", help="API key (default: $ORCH_API_KEY).")
def webhooks_listen(
    forward: str | None,
    events: tuple[str, ...],
    max_events: int | None,
    insecure: bool,
    base_url: str | None,
    api_key: str | None,
) -> None:
    """Receive this tenant's events on this machine, print them, forward them (like `stripe listen`)."""
    import asyncio

    from orchestrator.cli.listen import listen

    url, key = resolve(base_url, api_key)
    try:
        asyncio.run(
            listen(
                base_url=url,
                api_key=key,
                forward=forward,
                events=list(events) or None,
                max_events=max_events,
                insecure=insecure,
            )
        )
    except APIError as exc:
        err_console.print(f"[red]error:[/] {explain(exc, url)}")
        sys.exit(EXIT_API)
