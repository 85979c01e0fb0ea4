"""``orchestrator flows list|show``: the flows the API serves, with their input and output schemas."""

from __future__ import annotations

import json

import click
from rich.markup import escape

from orchestrator.cli.output import client_options, connect, console, emit, table


@click.group("flows")
def flows() -> None:
    """List the flows the API serves, and show what one takes and returns."""


@flows.command("list")
@client_options
def flows_list(base_url: str | None, api_key: str | None, as_json: bool) -> None:
    """Every flow: id, description, steps and timeout."""
    with connect(base_url, api_key) as client:
        items = client.flows.list()
        if as_json:
            emit(items)
            return
        rows = table("id", "description", "steps", "timeout")
        for f in items:
            steps = "" if f.steps_total is None else str(f.steps_total)
            rows.add_row(f.id, escape(f.description), steps, f"{f.timeout:g} s")
        console.print(rows)
        if items:
            click.echo(f"details: orchestrator flows show {items[0].id}", err=True)


@flows.command("show")
@click.argument("flow_id")
@client_options
def flows_show(flow_id: str, base_url: str | None, api_key: str | None, as_json: bool) -> None:
    """One flow's input and output JSON Schemas (and an example input, if it has one)."""
    with connect(base_url, api_key) as client:
        found = client.flows.get(flow_id)
        if as_json:
            emit(found)
            return
        console.print(f"[bold]{found.id}[/] {escape(found.description)}")
        steps = found.steps_total if found.steps_total is not None else "?"
        console.print(f"steps {steps}, timeout {found.timeout:g} s")
        examples = found.input_schema.get("examples") or []
        schema = {k: v for k, v in found.input_schema.items() if k != "examples"}
        console.print("\n[bold]input[/]", escape(json.dumps(schema, indent=2)))
        console.print(
            "\n[bold]output[/]", escape(json.dumps(found.output_schema or "any JSON value", indent=2))
        )
        if examples:
            # plain echo: a console would wrap the command, and it is meant to be pasted
            click.echo(f"\ntry  orchestrator run {found.id} --input '{json.dumps(examples[0])}' --wait")
