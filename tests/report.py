"""Figures the fault suites measure, printed at the end of the pytest run (and kept in a JSON file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIGURES: list[tuple[str, dict[str, Any]]] = []
# Written next to pytest's cache so a run's figures can be read after it (README "Reliability").
OUT = Path(__file__).resolve().parent.parent / ".pytest_cache" / "fault-report.json"


def report(title: str, **figures: Any) -> None:
    """Keep `figures` (numbers, short strings) under `title` for the end-of-run summary."""
    FIGURES.append((title, figures))


def lines() -> list[str]:
    """One line per reported test, and the JSON file written."""
    if not FIGURES:
        return []
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({title: figures for title, figures in FIGURES}, indent=2))
    return [f"{title}: " + ", ".join(f"{k}={v}" for k, v in figures.items()) for title, figures in FIGURES]
