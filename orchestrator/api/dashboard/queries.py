"""What the Runs and Run pages read: the runs filter (from the query string), the search, one run's view.

Status and flow pick the tenant's index (``runs.listing``), a time range bounds it by id (ids
sort by creation), an id is one lookup; a metadata value has no index, so that search reads at
most ``SCAN_LIMIT`` runs per page and says where it stopped (the next page goes on from there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from redis.asyncio import Redis
from starlette.requests import Request

from orchestrator.errors import RunNotFound
from orchestrator.flows import FLOW_ID
from orchestrator.models import Execution, ExecutionStatus
from orchestrator.runs.listing import page as list_page
from orchestrator.runs.store import RunStore
from webhooks.api.inputs import page_cursor, query_choice
from webhooks.errors import ValidationFailed
from webhooks.ids import id_floor, is_valid

PAGE = 25
SCAN_LIMIT = 1000


def _time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        at = datetime.fromisoformat(raw.replace("Z", "+00:00")) if len(raw) <= 40 else None
    except ValueError:
        at = None
    if at is None or not 1970 <= at.year <= 9999:
        raise ValidationFailed.field(name, "must be a date and time, e.g. 2026-11-28T23:43 (UTC)")
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class RunFilter:
    """The Runs page's filters; every one optional."""

    status: ExecutionStatus | None = None
    flow_id: str | None = None
    run_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    meta_key: str = ""
    meta_value: str = ""
    cursor: str | None = None

    @classmethod
    def of(cls, request: Request) -> RunFilter:
        """Read the filters from the query string (422 naming a bad one)."""
        params = request.query_params
        flow_id = params.get("flow") or None
        if flow_id is not None and not FLOW_ID.fullmatch(flow_id):
            raise ValidationFailed.field("flow", "not a flow id")
        run_id = params.get("id", "").strip() or None
        if run_id is not None and len(run_id) > 100:
            raise ValidationFailed.field("id", "not a run id")
        meta_key, meta_value = params.get("key", "").strip(), params.get("value", "").strip()
        if len(meta_key) > 200 or len(meta_value) > 1000:
            raise ValidationFailed.field("value", "too long")
        return cls(
            status=query_choice(request, "status", ExecutionStatus),
            flow_id=flow_id,
            run_id=run_id,
            since=_time(request, "since"),
            until=_time(request, "until"),
            meta_key=meta_key,
            meta_value=meta_value,
            cursor=page_cursor(request, "exec"),
        )

    def query(self, **changes: Any) -> str:
        """This filter as a query string (with `changes`), for links and the live stream."""
        values = {
            "status": self.status.value if self.status else "",
            "flow": self.flow_id or "",
            "id": self.run_id or "",
            "since": self.since.strftime("%Y-%m-%dT%H:%M") if self.since else "",
            "until": self.until.strftime("%Y-%m-%dT%H:%M") if self.until else "",
            "key": self.meta_key,
            "value": self.meta_value,
            "cursor": self.cursor or "",
            **changes,
        }
        return urlencode({k: v for k, v in values.items() if v})

    @property
    def first_page(self) -> bool:
        """True when new runs belong at the top of what is shown."""
        return self.cursor is None and self.until is None

    def matches(self, run: Execution[Any]) -> bool:
        """Whether `run` passes every filter."""
        if self.status is not None and run.status != self.status:
            return False
        if self.flow_id is not None and run.flow_id != self.flow_id:
            return False
        if self.run_id is not None and run.id != self.run_id:
            return False
        if self.since is not None and run.created_at < self.since:
            return False
        if self.until is not None and run.created_at >= self.until:
            return False
        return self.meta_matches(run.metadata)

    def meta_matches(self, metadata: dict[str, Any]) -> bool:
        """Whether the metadata holds the value asked for (under the key, if one is named)."""
        if not self.meta_key and not self.meta_value:
            return True
        if self.meta_key:
            if self.meta_key not in metadata:
                return False
            candidates = [metadata[self.meta_key]]
        else:
            candidates = list(metadata.values())
        if not self.meta_value:
            return True
        return any(_text(v) == self.meta_value for v in candidates)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class RunPage:
    """What the Runs page shows: the runs, the next cursor, how many were read for a metadata search."""

    runs: list[Execution[Any]]
    next_cursor: str | None
    scanned: int = 0


async def find_runs(
    redis: Redis, store: RunStore, *, tenant: str, flt: RunFilter, limit: int = PAGE
) -> RunPage:
    """The tenant's runs passing `flt`, newest first, a page at a time."""
    if flt.run_id is not None:
        try:
            run = await store.get(flt.run_id, tenant=tenant) if is_valid(flt.run_id, "exec") else None
        except RunNotFound:
            run = None
        return RunPage(runs=[run] if run is not None and flt.matches(run) else [], next_cursor=None)
    cursor = flt.cursor
    if flt.until is not None:
        until = id_floor("exec", int(flt.until.timestamp() * 1000))
        cursor = until if cursor is None else min(cursor, until)
    since = id_floor("exec", int(flt.since.timestamp() * 1000)) if flt.since is not None else None
    if not flt.meta_key and not flt.meta_value:
        runs, next_cursor = await list_page(
            redis,
            tenant=tenant,
            limit=limit,
            cursor=cursor,
            status=flt.status,
            flow_id=flt.flow_id,
            since=since,
        )
        return RunPage(runs=runs, next_cursor=next_cursor)
    found: list[Execution[Any]] = []
    scanned = 0
    while len(found) < limit and scanned < SCAN_LIMIT:
        batch, cursor = await list_page(
            redis,
            tenant=tenant,
            limit=100,
            cursor=cursor,
            status=flt.status,
            flow_id=flt.flow_id,
            since=since,
        )
        for i, run in enumerate(batch):
            scanned += 1
            if flt.meta_matches(run.metadata):
                found.append(run)
                if len(found) == limit:
                    more = i < len(batch) - 1 or cursor is not None
                    return RunPage(runs=found, next_cursor=run.id if more else None, scanned=scanned)
        if cursor is None:
            break
    return RunPage(runs=found, next_cursor=cursor, scanned=scanned)


@dataclass
class TimelineEntry:
    """One event of a run's log as the timeline shows it."""

    type: str
    sequence: int
    at: datetime
    since_previous_ms: int | None
    since_start_ms: int
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``queued``, ``running``, ``progress``, ``success``..."""
        return self.type.removeprefix("execution.")


def timeline(entries: list[bytes]) -> list[TimelineEntry]:
    """The run's events with the time since the previous one and since the first."""
    out: list[TimelineEntry] = []
    for raw in entries:
        doc = json.loads(raw)
        at = datetime.fromisoformat(str(doc["timestamp"]).replace("Z", "+00:00"))
        first = out[0].at if out else at
        previous = out[-1].at if out else None
        out.append(
            TimelineEntry(
                type=str(doc["type"]),
                sequence=int(doc["sequence"]),
                at=at,
                since_previous_ms=int((at - previous).total_seconds() * 1000) if previous else None,
                since_start_ms=int((at - first).total_seconds() * 1000),
                data=doc.get("data") or {},
            )
        )
    return out


@dataclass
class RunView:
    """Everything the Run page shows of one run."""

    run: Execution[Any]
    input: Any
    partial: Any
    events: list[TimelineEntry]
    hook_url: str | None


async def run_view(store: RunStore, run_id: str, *, tenant: str) -> RunView:
    """One run of the tenant with its input and its timeline (RunNotFound if missing or foreign)."""
    entries, _ = await store.events(run_id, tenant=tenant)
    stored = await store.load(run_id)
    if stored is None or stored.tenant != tenant:
        raise RunNotFound(f"no execution {run_id}")
    hook = stored.hook
    return RunView(
        run=stored.run,
        input=json.loads(stored.input_json) if stored.input_json else None,
        partial=stored.partial,
        events=timeline(entries),
        hook_url=hook.url if hook is not None else None,
    )
