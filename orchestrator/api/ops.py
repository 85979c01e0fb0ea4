"""Operator routes: ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus text, read at scrape time).

Gauges (runs by flow and status, queue depth, running count, pending starts) are counted from the
run keys; the delivery gauges (outbox, per-endpoint backlog and oldest pending age) come from
``webhooks.metrics``; counters and histograms are what every worker and dispatcher flushed to Redis.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestrator.api.services import services
from orchestrator.errors import Unavailable
from orchestrator.models import ExecutionStatus, Health
from orchestrator.runs import keys
from orchestrator.runs.listing import tenant_flows
from webhooks.api.apidoc import operation
from webhooks.metrics import Counter, Histogram, delivery_gauges, read_flushed
from webhooks.models import now_ms

HELP = {
    "orch_transition_seconds": "Latency of the transition write, by target status",
    "orch_queue_wait_seconds": "Time from creation to the start of the first attempt",
    "orch_runs_finished_total": "Executions ended by a worker, by flow and status",
    "orch_reaped_total": "Attempts whose worker was lost, by outcome",
    "wh_attempt_seconds": "Duration of webhook delivery attempts",
    "wh_attempts_total": "Webhook delivery attempts by outcome",
}


@operation(
    summary="Liveness: the process answers", tag="Health", responses={200: Health}, errors=(), auth=False
)
async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return JSONResponse({"status": "ok"})


@operation(
    summary="Readiness: Redis answers", tag="Health", responses={200: Health}, errors=(503,), auth=False
)
async def readyz(request: Request) -> Response:
    """Readiness: Redis answers."""
    try:
        await services(request).redis.ping()
    except Exception as exc:
        raise Unavailable("Redis is not reachable") from exc
    return JSONResponse({"status": "ready"})


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def recorded(counters: Iterable[Counter], histograms: Iterable[Histogram]) -> list[Metric]:
    """Prometheus families of the flushed counters and histograms."""
    by_name: dict[str, CounterMetricFamily] = {}
    for c in counters:
        family = by_name.get(c.name)
        if family is None:
            family = by_name[c.name] = CounterMetricFamily(
                c.name.removesuffix("_total"), HELP.get(c.name, c.name), labels=sorted(c.labels)
            )
        family.add_metric([c.labels[k] for k in sorted(c.labels)], c.value)
    families: list[Metric] = list(by_name.values())
    hist: dict[str, HistogramMetricFamily] = {}
    for h in histograms:
        names = sorted(h.labels)
        family_h = hist.get(h.name)
        if family_h is None:
            family_h = hist[h.name] = HistogramMetricFamily(h.name, HELP.get(h.name, h.name), labels=names)
        family_h.add_metric([h.labels[k] for k in names], h.buckets, h.sum)
    families.extend(hist.values())
    return families


async def gauges(redis: Redis, *, queue_name: str) -> list[Metric]:
    """Current state, counted from the working keys (O(tenants x flows + endpoints))."""
    runs = GaugeMetricFamily(
        "orch_executions", "Executions within retention, by flow and status", labels=["flow", "status"]
    )
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for tenant, flows in (await tenant_flows(redis)).items():
        pairs = [(f, s) for f in flows for s in ExecutionStatus]
        async with redis.pipeline(transaction=False) as pipe:
            for flow_id, status in pairs:
                pipe.zcard(keys.index(tenant, flow_id=flow_id, status=status))
            for (flow_id, status), n in zip(pairs, await pipe.execute(), strict=True):
                counts[(flow_id, status.value)] += int(n)
    for (flow_id, status_value), n in sorted(counts.items()):
        runs.add_metric([flow_id, status_value], n)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(queue_name)
        pipe.zcard(keys.LEASES)
        pipe.zcard(keys.PENDING)
        depth, running, pending = await pipe.execute()
    delivery = await delivery_gauges(redis, now_ms=now_ms())
    families: list[Metric] = [runs]
    for name, doc, value in (
        ("orch_queue_depth", "Jobs waiting in the arq queue", depth),
        ("orch_running", "Attempts holding a lease (running now)", running),
        ("orch_pending_starts", "Attempts enqueued but not started yet", pending),
        ("wh_outbox_length", "Outbox entries not yet trimmed", delivery.outbox_length),
    ):
        families.append(GaugeMetricFamily(name, doc, value=float(value)))
    backlog = GaugeMetricFamily("wh_endpoint_backlog", "Pending deliveries per endpoint", labels=["endpoint"])
    oldest = GaugeMetricFamily(
        "wh_endpoint_oldest_pending_seconds",
        "Age of the oldest pending delivery per endpoint",
        labels=["endpoint"],
    )
    for gauge in delivery.endpoints:
        backlog.add_metric([gauge.endpoint_id], gauge.backlog)
        oldest.add_metric([gauge.endpoint_id], gauge.oldest_pending_seconds)
    families += [backlog, oldest]
    return families


def render(families: Iterable[Metric]) -> bytes:
    """Prometheus text exposition of `families`."""
    registry = CollectorRegistry()
    registry.register(_Fixed(list(families)))
    return bytes(generate_latest(registry))


@operation(
    summary="Prometheus metrics",
    tag="Operations",
    responses={200: "text"},
    media={200: "text/plain"},
    errors=(),
    auth=False,
)
async def metrics(request: Request) -> Response:
    """``GET /metrics``."""
    state = services(request)
    families = await gauges(state.redis, queue_name=state.settings.queue_name)
    families += recorded(*await read_flushed(state.redis))
    return Response(render(families), media_type="text/plain; version=0.0.4; charset=utf-8")


OPS_ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
