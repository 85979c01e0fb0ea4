"""The benchmark scenarios by name; each returns named figures (the keys of ``orchestrator bench --json``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from orchestrator.dev.bench.costs import scenario_modes, scenario_storage
from orchestrator.dev.bench.cpu import scenario_cpu
from orchestrator.dev.bench.latency import scenario_get, scenario_isolation, scenario_latency
from orchestrator.dev.bench.measure import Figures, summarize
from orchestrator.dev.bench.ordering import scenario_ordering
from orchestrator.dev.bench.primary import scenario_redis, scenario_replication
from orchestrator.dev.bench.throughput import scenario_deliveries, scenario_e2e

__all__ = ["SCENARIOS", "Figures", "summarize"]

SCENARIOS: dict[str, Callable[[bool], Awaitable[Figures]]] = {
    "e2e": scenario_e2e,
    "deliveries": scenario_deliveries,
    "latency": scenario_latency,
    "get": scenario_get,
    "isolation": scenario_isolation,
    "storage": scenario_storage,
    "modes": scenario_modes,
    "cpu": scenario_cpu,
    "ordering": scenario_ordering,
    "redis": scenario_redis,
    "replication": scenario_replication,
}
