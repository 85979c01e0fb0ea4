"""Webhook models: endpoints, deliveries and attempts as stored in Redis and shown by the API."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator
from pydantic.alias_generators import to_camel

from webhooks import custom_headers


def format_timestamp(value: datetime) -> str:
    """Render `value` as RFC 3339 UTC with milliseconds, e.g. ``2026-11-28T23:43:01.123Z``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def from_ms(ms: int) -> datetime:
    """A UTC datetime from unix milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(at: datetime) -> int:
    """Unix milliseconds of `at`."""
    return int(at.timestamp() * 1000)


def now_ms() -> int:
    """This host's clock in unix milliseconds (labels and local timers; see DESIGN.md "One clock")."""
    return int(time.time() * 1000)


async def redis_now(redis: Any) -> datetime:
    """Redis's ``TIME`` as a UTC datetime: for a time stored to be compared by other processes."""
    seconds, micros = await redis.time()
    return datetime.fromtimestamp(seconds + micros // 1000 / 1000, UTC)


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class DeliveryStatus(StrEnum):
    """Where one message stands for one endpoint."""

    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class RetiredSecret(BaseModel):
    """A secret replaced by a rotation, signing beside the current one until ``until`` (unix ms)."""

    secret: str
    until: int


def live_secrets(current: str, retired: list[RetiredSecret], now_ms: int) -> list[str]:
    """The secrets that sign at `now_ms` (Redis's ms): the current one first, then each still live."""
    return [current, *(r.secret for r in retired if r.until > now_ms)]


class Endpoint(WireModel):
    """A subscription: a URL, its secrets and its filters (stored form, secrets included)."""

    id: str
    tenant: str
    url: str
    events: list[str]
    flow_ids: list[str] = Field(default_factory=list)
    description: str = ""
    enabled: bool = True
    created_at: Timestamp
    updated_at: Timestamp | None = None
    secret: str
    # Sent with every delivery (webhooks.custom_headers); never shown unmasked.
    headers: dict[str, str] = Field(default_factory=dict)
    # "run": each subject's messages go in sequence order, one at a time per subject (webhooks.lanes).
    ordering: str = "none"
    # Secrets rotated out, newest first, each signing until its time (webhooks.secrets).
    previous_secrets: list[RetiredSecret] = Field(default_factory=list)
    # Endpoints stored before `previous_secrets` kept one: read until their next rotation moves it.
    previous_secret: str | None = None
    previous_secret_until: int | None = None
    # Health: when deliveries started failing without a success since, and why it is disabled.
    failing_since: int | None = None
    disabled_reason: str | None = None
    disabled_at: int | None = None

    def signing_secrets(self, now_ms: int) -> list[str]:
        """The secrets that sign a delivery at `now_ms` (Redis's ms): the current one, then every
        secret rotated out whose 24 h overlap still runs."""
        retired = list(self.previous_secrets)
        if self.previous_secret and self.previous_secret_until:
            retired.append(RetiredSecret(secret=self.previous_secret, until=self.previous_secret_until))
        return live_secrets(self.secret, retired, now_ms)


class EndpointOut(WireModel):
    """An endpoint as the API shows it; `secret` only on create and rotation."""

    id: str
    url: str
    events: list[str]
    flow_ids: list[str]
    description: str
    enabled: bool
    created_at: Timestamp
    updated_at: Timestamp | None = None
    disabled_reason: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    ordering: str = "none"
    secret: str | None = None

    @classmethod
    def of(cls, endpoint: Endpoint, *, with_secret: bool = False) -> EndpointOut:
        """The public view of `endpoint`."""
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            events=endpoint.events,
            flow_ids=endpoint.flow_ids,
            description=endpoint.description,
            enabled=endpoint.enabled,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
            disabled_reason=endpoint.disabled_reason,
            headers=custom_headers.masked(endpoint.headers),
            ordering=endpoint.ordering,
            secret=endpoint.secret if with_secret else None,
        )


class Ordering(StrEnum):
    """How an endpoint orders its messages: ``run`` sends each subject's (run's) in sequence order,
    one at a time; ``none`` (the default) sends everything as soon as it is due."""

    none = "none"
    run = "run"


class EndpointCreate(WireModel):
    """Body of ``POST /v1/webhooks``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048)
    events: list[str] | None = Field(default=None, max_length=50)
    flow_ids: list[str] | None = Field(default=None, max_length=100)
    description: str = Field(default="", max_length=500)
    secret: str | None = Field(default=None, max_length=200)
    headers: dict[str, str] | None = None
    ordering: Ordering | None = None

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and custom_headers.MASK in value.values():
            raise ValueError(f"{custom_headers.MASK} is the mask of a stored value, not a value")
        return None if value is None else custom_headers.check(value)


class EndpointPatch(WireModel):
    """Body of ``PATCH /v1/webhooks/{id}``: only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    events: list[str] | None = Field(default=None, max_length=50)
    flow_ids: list[str] | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None
    headers: dict[str, str] | None = None
    ordering: Ordering | None = None

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else custom_headers.check(value)


class SendTestBody(WireModel):
    """Body of ``POST /v1/webhooks/{id}/test`` (optional): which event type's example to send."""

    model_config = ConfigDict(extra="forbid")

    event_type: str | None = Field(default=None, max_length=200)


class EventTypeOut(WireModel):
    """One entry of ``GET /v1/event-types``: a type, what it means, its body's JSON Schema, an example."""

    type: str
    description: str
    group: str
    flows: list[str] = Field(default_factory=list)
    json_schema: dict[str, Any] = Field(alias="schema")
    example: dict[str, Any]


class EventTypePage(WireModel):
    """``GET /v1/event-types``: every type (one page)."""

    data: list[EventTypeOut]
    next_cursor: str | None = None


class RecoverBody(WireModel):
    """Body of ``POST /v1/webhooks/{id}/recover``."""

    model_config = ConfigDict(extra="forbid")

    since: datetime


class Attempt(WireModel):
    """One HTTP try of one delivery."""

    at: Timestamp
    status_code: int | None = None
    duration_ms: int
    error: str | None = None
    response_body: str | None = None


class DeliveryOut(WireModel):
    """A message as seen by one endpoint: its state and every attempt."""

    id: str
    event_type: str
    run_id: str | None = None
    status: DeliveryStatus
    created_at: Timestamp
    next_attempt_at: Timestamp | None = None
    attempts: list[Attempt] = Field(default_factory=list)


class Page(WireModel):
    """One newest-first page of any list."""

    data: list[Any]
    next_cursor: str | None = None


class EndpointPage(WireModel):
    """A page of endpoints."""

    data: list[EndpointOut]
    next_cursor: str | None = None


class DeliveryPage(WireModel):
    """A page of deliveries."""

    data: list[DeliveryOut]
    next_cursor: str | None = None


class AlertOut(WireModel):
    """One operational event of an endpoint's event log (``webhooks.alerts``): as it was sent."""

    id: str
    type: str
    timestamp: str
    data: dict[str, Any]


class AlertPage(WireModel):
    """A page of an endpoint's event log."""

    data: list[AlertOut]
    next_cursor: str | None = None


class SecretOut(WireModel):
    """A signing secret (shown on creation and rotation only)."""

    secret: str


class MessageRef(WireModel):
    """A message that was queued."""

    message_id: str
    status: str | None = None


class CountOut(WireModel):
    """How many messages were queued again."""

    count: int
