"""API models shared by the server and the SDK: executions, flows, pages and error bodies.

Every model speaks camelCase JSON (API.md) and accepts snake_case names in Python.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from webhooks.models import Timestamp
from webhooks.models import WireModel as ApiModel  # camelCase on the wire, Python names accepted too

OutputT = TypeVar("OutputT")
ItemT = TypeVar("ItemT")


class ExecutionStatus(StrEnum):
    """Where an execution stands; the values are the wire and Redis text."""

    queued = "queued"
    running = "running"
    success = "success"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the status can never change again."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({ExecutionStatus.success, ExecutionStatus.failed, ExecutionStatus.cancelled})


class Metrics(ApiModel):
    """Usage a flow reports through its RunContext."""

    tokens_used: int = 0
    cost: float = 0.0
    steps_run: int = 0
    steps_total: int | None = None
    # The name the flow gave its last finished step (``ctx.step("ocr")``), if any.
    last_step: str | None = None


class ExecutionError(ApiModel):
    """Why an execution failed: a stable code, a human message and structured details."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class Execution(ApiModel, Generic[OutputT]):
    """One run of a flow, exactly as API.md describes it; generic in its output type."""

    id: str
    flow_id: str
    status: ExecutionStatus
    created_at: Timestamp
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    duration: int | None = None
    output: OutputT | None = None
    metrics: Metrics = Field(default_factory=Metrics)
    trace_id: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    error: ExecutionError | None = None
    attempt: int = 1
    sequence: int = 0


class RunEvent(ApiModel, Generic[OutputT]):
    """One entry of a run's event log (and one SSE event): a snapshot after a transition."""

    id: str
    type: str
    timestamp: Timestamp
    sequence: int
    data: Execution[OutputT]


def execution_model(output_type: type[BaseModel] | None) -> type[Execution[Any]]:
    """``Execution[output_type]`` (output parsed into that model), or ``Execution[Any]``."""
    return Execution[output_type] if output_type is not None else Execution[Any]  # type: ignore[valid-type]


def event_model(output_type: type[BaseModel] | None) -> type[RunEvent[Any]]:
    """``RunEvent[output_type]``, or ``RunEvent[Any]``."""
    return RunEvent[output_type] if output_type is not None else RunEvent[Any]  # type: ignore[valid-type]


class RunWebhook(ApiModel):
    """A one-run webhook given at creation, signed with the tenant's default secret."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    events: list[str] | None = None


class RunCreate(ApiModel):
    """Body of ``POST /v1/flows/{flowId}/runs``."""

    model_config = ConfigDict(extra="forbid")

    input: Any
    metadata: dict[str, Any] = Field(default_factory=dict)
    webhook: RunWebhook | None = None


class BatchItem(ApiModel):
    """One item of a batch create."""

    model_config = ConfigDict(extra="forbid")

    input: Any
    metadata: dict[str, Any] = Field(default_factory=dict)


class BatchCreate(ApiModel):
    """Body of ``POST /v1/flows/{flowId}/runs/batch``: 1 to 1000 items."""

    model_config = ConfigDict(extra="forbid")

    items: list[BatchItem] = Field(min_length=1, max_length=1000)


class RunTokenCreate(ApiModel):
    """Body of ``POST /v1/runs/{id}/tokens`` (optional): how long the token lives."""

    model_config = ConfigDict(extra="forbid")

    ttl_seconds: int = Field(default=900, ge=1, le=86400)


class RunToken(ApiModel):
    """A per-run read token: it reads one run, its events and its SSE stream until `expiresAt`."""

    token: str
    run_id: str
    expires_at: Timestamp


class FlowInfo(ApiModel):
    """A registered flow as ``GET /v1/flows`` shows it."""

    id: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    steps_total: int | None
    timeout: float


class Page(ApiModel, Generic[ItemT]):
    """One page of a newest-first list."""

    data: list[ItemT]
    next_cursor: str | None = None


class ErrorDetail(ApiModel):
    """The inner object of an error body."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(ApiModel):
    """``{"error": {"code", "message", "details"}}``: every 4xx and 5xx answer."""

    error: ErrorDetail


class Health(ApiModel):
    """``/healthz`` and ``/readyz``."""

    status: str


class ReportEvent(ApiModel):
    """One event of a run as one endpoint saw it."""

    message_id: str
    event_type: str
    sequence: int
    matched: bool
    reason: str | None = None
    status: str | None = None
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    next_attempt_at: str | None = None


class ReportEndpoint(ApiModel):
    """One endpoint of the tenant (or the run's own webhook) and the run's events for it."""

    endpoint_id: str
    url: str
    enabled: bool
    disabled_reason: str | None = None
    run_webhook: bool = False
    events: list[ReportEvent]


class DeliveryReport(ApiModel):
    """``GET /v1/runs/{id}/deliveries``."""

    run_id: str
    data: list[ReportEndpoint]


FlowPage = Page[FlowInfo]
ExecutionPage = Page[Execution[Any]]
EventPage = Page[RunEvent[Any]]
