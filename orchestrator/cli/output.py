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
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.client import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    Client,
    Execution,
    TimeoutError,
)
from orchestrator.dev.state import running

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


DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--base-url``, ``--api-key`` and ``--json`` on every client command."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)
    fn = click.option(
        "--api-key",
        envvar="ORCH_API_KEY",
        help="API key (default: $ORCH_API_KEY, else a running `orchestrator dev`).",
    )(fn)
    return click.option(
        "--base-url",
        envvar="ORCH_BASE_URL",
        default=None,
        help=f"API URL (default: $ORCH_BASE_URL, else a running `orchestrator dev`, else {DEFAULT_BASE_URL})",
    )(fn)


def resolve(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """The API to talk to: the options, else the dev stack running from this folder, else the default."""
    if base_url is None or api_key is None:
        stack = running()
        if stack is not None:
            if base_url is None and api_key is None:
                err_console.print(f"[dim]using the dev stack at {stack.base_url} (.data/dev/stack.json)[/]")
            base_url = base_url or stack.base_url
            api_key = api_key or stack.api_key
    if not api_key:
        raise click.UsageError(
            "no API key: pass --api-key, set ORCH_API_KEY, or start `orchestrator dev` here"
        )
    return base_url or DEFAULT_BASE_URL, api_key


def explain(exc: APIError, base_url: str) -> str:
    """What went wrong, in full: every bad field of a 422, and what to try for a refused connection."""
    if isinstance(exc, APIConnectionError) and not isinstance(exc, APITimeoutError):
        return f"cannot reach the API at {base_url} ({exc}); is it running? `orchestrator dev` starts one"
    lines = [str(exc)]
    if isinstance(exc, APIStatusError):
        for bad in exc.details.get("fields") or []:
            if isinstance(bad, dict):
                lines.append(f"  {bad.get('field')}: {bad.get('message')}")
        rest = {k: v for k, v in exc.details.items() if k != "fields"}
        if rest:
            lines.append("  " + json.dumps(rest))
    return "\n".join(lines)


@contextmanager
def connect(base_url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client; API errors become a clear message on stderr and exit code 3 (4 for a timeout)."""
    url, key = resolve(base_url, api_key)
    try:
        with Client(url, api_key=key) as client:
            yield client
    except TimeoutError as exc:
        err_console.print(f"[yellow]timeout:[/] {exc}")
        sys.exit(EXIT_TIMEOUT)
    except APIError as exc:
        err_console.print(f"[red]error:[/] {explain(exc, url)}", highlight=False, markup=True)
        sys.exit(EXIT_API)


def table(*columns: str, ids: tuple[str, ...] = (), short: tuple[str, ...] = ()) -> Table:
    """A table whose `ids` columns are never cut or wrapped (ids are copied from here), whose `short`
    columns (a status, a count, a time) keep their words whole; the rest fold."""
    out = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in columns:
        if name in ids:
            out.add_column(name, no_wrap=True, min_width=31)
        elif name in short:
            out.add_column(name, no_wrap=True)
        else:
            out.add_column(name, overflow="fold")
    return out


def wide() -> bool:
    """Whether the terminal has room for a second id column (about 130 columns)."""
    return console.width >= 130


def clip(text: str, most: int = 48) -> str:
    """`text` cut to `most` characters with an ellipsis (a long error in a table cell)."""
    return text if len(text) <= most else text[: most - 1] + "…"


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
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("id", ex.id)
    table.add_row("flow", ex.flow_id)
    table.add_row("status", status_text(ex.status.value))
    table.add_row("created", ex.created_at.isoformat())
    if ex.duration is not None:
        table.add_row("duration", f"{ex.duration} ms")
    m = ex.metrics
    steps = f"{m.steps_run}/{m.steps_total if m.steps_total is not None else '?'}"
    table.add_row("steps", steps + (f" (last: {m.last_step})" if m.last_step else ""))
    table.add_row("usage", f"{m.tokens_used} tokens, ${m.cost:.4f}")
    table.add_row("attempt", str(ex.attempt))
    if ex.error is not None:
        details = f" {json.dumps(ex.error.details)}" if ex.error.details else ""
        table.add_row("error", f"[red]{ex.error.code}[/]: {escape(ex.error.message)}{escape(details)}")
    if ex.output is not None:
        table.add_row("output", escape(json.dumps(ex.output, indent=2)))
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
