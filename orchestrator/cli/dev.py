"""Developer commands: ``dev`` (the whole stack on this machine) and ``bench`` (measured ratios)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from orchestrator.cli.serve import settings_of


@click.command()
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
        settings_of(ctx), port=port, flows=flows, data_dir=data_dir, environ=dict(os.environ), demo=demo
    )
    sys.exit(code)


@click.command()
@click.option("--quick", is_flag=True, help="Small sizes, one repeat: under a minute.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every key, median, plus detail).")
@click.option("--only", multiple=True, help="Run only these scenarios (repeat).")
@click.option("--repeats", type=int, default=None, help="Repeats per scenario (default 1 quick, 3 full).")
@click.option(
    "--workers", type=click.IntRange(1, 64), default=None, help="Workers for the 'cpu' scenario's shape."
)
@click.option(
    "--dispatchers",
    type=click.IntRange(1, 64),
    default=None,
    help="Dispatchers for the 'cpu' scenario's shape (its CPU per run against one of each).",
)
def bench(
    quick: bool,
    as_json: bool,
    only: tuple[str, ...],
    repeats: int | None,
    workers: int | None,
    dispatchers: int | None,
) -> None:
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
    shape = {k: v for k, v in (("workers", workers), ("dispatchers", dispatchers)) if v}
    result = uvloop.run(run_all(quick=quick, only=only, repeats=repeats or (1 if quick else 3), shape=shape))
    show(result, as_json=as_json)
