"""``GET /metrics``: Prometheus text, read from Redis at scrape time.

Gauges (runs by flow and status, queue depth, running count, outbox, per-endpoint backlog and
oldest pending age) are counted from the same keys the system works with; counters and
histograms (transition latency, queue wait, reaped attempts, attempts by outcome and latency)
are what every worker and dispatcher flushed to Redis (``webhooks.metrics``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from orchestrator.models import ExecutionStatus
from orchestrator.runs import keys
from webhooks import keys as wh_keys
from webhooks.api.apidoc import operation
from webhooks.ids import decode_ms
from webhooks.metrics import LATENCY_BUCKETS, METRICS_KEY
from webhooks.models import DeliveryStatus
from webhooks.outbox import OUTBOX_STREAM

HELP = {
    "orch_transition_seconds": "Latency of the transition write, by target status",
    "orch_queue_wait_seconds": "Time from creation to the start of the first attempt",
    "orch_runs_finished_total": "Executions ended by a worker, by flow and status",
    "orch_reaped_total": "Attempts whose worker was lost, by outcome",
    "wh_attempt_seconds": "Duration of webhook delivery attempts",
    "wh_attempts_total": "Webhook delivery attempts by outcome",
}


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def _split(field: str) -> tuple[str, dict[str, str], str | None]:
    name, _, rest = field.partition("|")
    labels_part, _, suffix = rest.partition("|")
    labels = dict(p.split("=", 1) for p in labels_part.split(",") if p)
    return name, labels, suffix or None


def recorded(raw: dict[bytes, bytes]) -> list[Metric]:
    """Counters and histograms from the flushed hash."""
    counters: dict[str, CounterMetricFamily] = {}
    hist: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, float]] = defaultdict(dict)
    for key, value in raw.items():
        name, labels, suffix = _split(key.decode())
        if suffix is None:
            family = counters.get(name)
            if family is None:
                family = counters[name] = CounterMetricFamily(
                    name.removesuffix("_total"), HELP.get(name, name), labels=sorted(labels)
                )
            family.add_metric([labels[k] for k in sorted(labels)], float(value))
        else:
            hist[(name, tuple(sorted(labels.items())))][suffix] = float(value)
    families: list[Metric] = list(counters.values())
    by_name: dict[str, HistogramMetricFamily] = {}
    for (name, label_items), parts in hist.items():
        label_names = [k for k, _ in label_items]
        histogram = by_name.get(name)
        if histogram is None:
            histogram = by_name[name] = HistogramMetricFamily(name, HELP.get(name, name), labels=label_names)
        running = 0.0
        buckets = []
        for le in [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]:
            running += parts.get(le, 0.0)
            buckets.append((le, running))
        histogram.add_metric([v for _, v in label_items], buckets, parts.get("sum", 0.0))
    families.extend(by_name.values())
    return families


async def gauges(redis: Redis, *, queue_name: str) -> list[Metric]:
    """Current state, counted from the working keys (O(tenants x flows + endpoints))."""
    runs = GaugeMetricFamily(
        "orch_executions", "Executions within retention, by flow and status", labels=["flow", "status"]
    )
    counts: dict[tuple[str, str], int] = defaultdict(int)
    tenants = [t.decode() for t in await redis.smembers(keys.TENANTS)]
    for tenant in tenants:
        flows = sorted(f.decode() for f in await redis.smembers(keys.tenant_flows(tenant)))
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
        pipe.xlen(OUTBOX_STREAM)
        pipe.smembers(wh_keys.ENDPOINTS)
        depth, running, pending, outbox, endpoint_ids = await pipe.execute()
    families: list[Metric] = [runs]
    for name, doc, value in (
        ("orch_queue_depth", "Jobs waiting in the arq queue", depth),
        ("orch_running", "Attempts holding a lease (running now)", running),
        ("orch_pending_starts", "Attempts enqueued but not started yet", pending),
        ("wh_outbox_length", "Outbox entries not yet trimmed", outbox),
    ):
        families.append(GaugeMetricFamily(name, doc, value=float(value)))
    backlog = GaugeMetricFamily("wh_endpoint_backlog", "Pending deliveries per endpoint", labels=["endpoint"])
    oldest = GaugeMetricFamily(
        "wh_endpoint_oldest_pending_seconds",
        "Age of the oldest pending delivery per endpoint",
        labels=["endpoint"],
    )
    ids = sorted(e.decode() for e in endpoint_ids)
    async with redis.pipeline(transaction=False) as pipe:
        for endpoint_id in ids:
            pipe.zcard(wh_keys.due(endpoint_id))
            pipe.zrange(wh_keys.listing(endpoint_id, DeliveryStatus.pending), 0, 0)
        rows = await pipe.execute()
    now_ms = int(time.time() * 1000)
    for i, endpoint_id in enumerate(ids):
        backlog.add_metric([endpoint_id], rows[2 * i])
        first = rows[2 * i + 1]
        age = max(0.0, (now_ms - decode_ms(first[0].decode())) / 1000) if first else 0.0
        oldest.add_metric([endpoint_id], age)
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
    redis: Redis = request.app.state.redis
    settings: Any = request.app.state.settings
    families = await gauges(redis, queue_name=settings.queue_name)
    families += recorded(await redis.hgetall(METRICS_KEY))
    return Response(render(families), media_type="text/plain; version=0.0.4; charset=utf-8")
