"""What the client commands share: connection options, the one error-to-exit-code rule, rendering.

Human output (rich tables) by default, ``--json`` for scripts. Exit codes: 0 ok, 1 the execution
failed or was cancelled (``run --wait``, ``runs wait``), 2 bad usage, 3 API error, 4 timeout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel
from rich.console import Console
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
