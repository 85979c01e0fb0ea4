"""Run the scenarios, repeat them, and print medians with their spread (text or JSON)."""

from __future__ import annotations

import inspect
import json
import platform
import time
from typing import Any

import click

from orchestrator.dev.bench.scenarios import SCENARIOS, Figures, summarize

TARGETS: dict[str, tuple[str, float]] = {
    "e2e_vs_arq": (">=", 0.6),
    "e2e_webhook_vs_arq": (">=", 0.4),
    "deliveries_vs_aiohttp": (">=", 0.7),
    "notify_p50_ms": ("<=", 5.0),
    "notify_p99_ms": ("<=", 25.0),
    "wait_p50_ms": ("<=", 2.0),
    "create_to_running_p50_ms": ("<=", 3.0),
    "get_vs_trivial": (">=", 0.7),
    "isolation_p99_ratio": ("<=", 2.0),
    "redis_bytes_per_run": ("<=", 1536.0),
    "redis_bytes_per_run_with_webhooks": ("<=", 3000.0),
    "cpu_ms_per_run": ("<=", 3.0),
    "cpu_ms_per_delivery": ("<=", 0.4),
    "cpu_per_run_4_workers_vs_1": ("<=", 1.15),
    "cpu_per_run_3_dispatchers_vs_1": ("<=", 1.15),
    "get_latency_ratio_100k_vs_10k": ("<=", 1.5),
    "ordered_vs_unordered": (">=", 0.8),
}


def meets(key: str, value: float) -> bool | None:
    """Whether `value` meets the README's target for `key` (None: no target)."""
    if key not in TARGETS:
        return None
    op, bound = TARGETS[key]
    return value >= bound if op == ">=" else value <= bound


async def run_all(
    *, quick: bool, only: tuple[str, ...], repeats: int, shape: dict[str, int] | None = None
) -> dict[str, Any]:
    """Every selected scenario `repeats` times; a summary per figure.

    `shape` (``workers``, ``dispatchers``) goes to the scenarios that take it (``cpu``).
    """
    names = only or tuple(SCENARIOS)
    started = time.perf_counter()
    figures: dict[str, dict[str, float]] = {}
    for name in names:
        samples: list[Figures] = []
        scenario = SCENARIOS[name]
        accepted = inspect.signature(scenario).parameters
        options = {k: v for k, v in (shape or {}).items() if k in accepted}
        for _ in range(repeats):
            samples.append(await scenario(quick, **options))
        figures.update(summarize(samples))
    return {
        "quick": quick,
        "repeats": repeats,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "figures": figures,
    }


def show(result: dict[str, Any], *, as_json: bool) -> None:
    """Print the results: JSON (`{key: median, ..., "detail": ...}`) or a table."""
    figures: dict[str, dict[str, float]] = result["figures"]
    if as_json:
        flat: dict[str, Any] = {key: round(v["median"], 4) for key, v in figures.items()}
        flat["detail"] = result
        click.echo(json.dumps(flat, indent=2))
        return
    click.echo(f"{'figure':<36} {'median':>12} {'spread (min..max)':>26}  target")
    for key, v in figures.items():
        ok = meets(key, v["median"])
        target = "" if ok is None else f"{TARGETS[key][0]} {TARGETS[key][1]:g} {'ok' if ok else 'MISSED'}"
        click.echo(f"{key:<36} {v['median']:>12.3f} {v['min']:>12.3f}..{v['max']:<12.3f}  {target}")
    click.echo(f"\n{result['seconds']} s, repeats={result['repeats']}, quick={result['quick']}")
