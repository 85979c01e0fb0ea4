"""Process settings, read from ``ORCH_*`` environment variables in exactly one place."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from orchestrator.redis_url import parse as parse_redis_url
from webhooks.replication import Replication
from webhooks.settings import DEFAULT_PROBE_SCHEDULE, DEFAULT_SCHEDULE, DispatcherSettings

DEFAULT_RETRY_SCHEDULE = DEFAULT_SCHEDULE


class ConfigurationError(ValueError):
    """An ``ORCH_*`` variable cannot be used: one line per bad variable, never a value (it may be secret)."""

    @classmethod
    def of(cls, exc: ValidationError) -> ConfigurationError:
        """Name each bad variable with pydantic's reason, leaving out the value it was given."""
        lines = []
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            name = "ORCH_" + "_".join(str(part) for part in err["loc"][:1]).upper()
            message = str(err["msg"]).removeprefix("Value error, ")
            lines.append(message if message.startswith(name) else f"{name}: {message}")
        return cls("; ".join(lines))


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Everything a process needs; build once with :meth:`from_env` and pass it down."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # One Redis, or redis+sentinel://h1,h2,h3/service[/db] (see orchestrator.redis_url).
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_max_connections: int = Field(default=64, ge=4)
    # Acknowledged means replicated: a write is acknowledged (to a client, or the outbox entry it
    # came from) only once this many replicas hold it (Redis WAIT); 0 adds nothing to any write.
    redis_min_replicas_ack: int = Field(default=0, ge=0, le=16)
    # How long a write waits for those replicas before the client gets 503 (the write may exist).
    redis_replicas_ack_timeout_seconds: float = Field(default=1.0, gt=0, le=5)
    # "tenant:key,tenant:key"; keys made by `orchestrator keys create` live hashed in Redis.
    api_keys: tuple[tuple[str, str], ...] = ()
    flows: tuple[str, ...] = ()
    webhook_allow_private: bool = False
    webhook_timeout: float = Field(default=15.0, gt=0, le=300)
    webhook_retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    webhook_endpoint_concurrency: int = Field(default=10, ge=1)
    webhook_max_in_flight: int = Field(default=500, ge=1)
    webhook_disable_after_seconds: float = Field(default=5 * 24 * 3600, gt=0)
    # `message.attempt.failing` goes out after this many consecutive failed attempts of a message.
    webhook_failing_after: int = Field(default=4, ge=1)
    # Probes of an endpoint disabled for failing, seconds after it was disabled (the last repeats).
    webhook_probe_schedule: tuple[float, ...] = DEFAULT_PROBE_SCHEDULE
    webhook_delivered_retention_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    webhook_failed_retention_seconds: int = Field(default=14 * 24 * 3600, gt=0)
    # PEM file of CA certificates the dispatcher trusts besides the system's (receivers behind a
    # private CA); checked at start, so a wrong path fails every process at once with its name.
    webhook_ca_bundle: str | None = None

    # Worker tuning, chosen by measurement (see README "Performance").
    worker_max_jobs: int = Field(default=1000, gt=0)
    worker_poll_delay: float = Field(default=0.5, gt=0)
    # A stopping worker's running attempts get this long to finish before they are handed back
    # (inside Kubernetes' default 30 s terminationGracePeriodSeconds).
    worker_shutdown_grace_seconds: float = Field(default=25.0, ge=0)
    # Child processes for isolation='process' flows (0: one per CPU).
    worker_processes: int = Field(default=0, ge=0)
    # The event loop blocked this long is logged as a stall, naming the async flows on it.
    worker_stall_seconds: float = Field(default=1.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    lease_seconds: float = Field(default=10.0, gt=0)
    heartbeat_seconds: float = Field(default=1.0, gt=0)
    sweep_seconds: float = Field(default=2.0, gt=0)
    requeue_after_seconds: float = Field(default=30.0, gt=0)

    run_retention_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)
    sse_heartbeat_seconds: float = Field(default=15.0, gt=0)
    # A dashboard sign-in lasts this long without use (each page view renews it).
    dashboard_session_seconds: int = Field(default=12 * 3600, ge=60)
    queue_name: str = "orch:queue"
    log_level: str = "INFO"
    log_format: Literal["text", "json", "short"] = "text"

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parse_redis_url(value)  # RedisURLError: one line, never the password
        return value

    @field_validator("flows", "webhook_retry_schedule", "webhook_probe_schedule", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _tenant_keys(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs = []
        for item in _split(value):
            tenant, sep, key = item.partition(":")
            if not sep or not tenant or not key:
                raise ValueError("ORCH_API_KEYS entries must look like tenant:key")
            pairs.append((tenant, key))
        return tuple(pairs)

    @field_validator("webhook_ca_bundle")
    @classmethod
    def _readable_file(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not os.path.isfile(value) or not os.access(value, os.R_OK):
            raise ValueError(f"ORCH_WEBHOOK_CA_BUNDLE {value!r} is not a readable file")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not math.isfinite(v) or v < 0 for v in value):  # nan and inf pass a bare `v < 0`
            raise ValueError("retry delays must be finite numbers >= 0")
        return value

    @field_validator("webhook_probe_schedule")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not math.isfinite(v) or v <= 0 for v in value):
            raise ValueError("probe delays must be finite numbers > 0, at least one")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Take values only from the arguments: :meth:`from_env` is the one reader of the environment."""
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``ORCH_<FIELD>`` variables of `environ` (default: ``os.environ``).

        Raises ConfigurationError, whose message names each bad variable and never shows a value.
        """
        env = os.environ if environ is None else environ
        values = {
            name: env[f"ORCH_{name.upper()}"] for name in cls.model_fields if f"ORCH_{name.upper()}" in env
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigurationError.of(exc) from None

    @property
    def replication(self) -> Replication:
        """How many replicas must confirm a write before it is acknowledged (``WAIT``)."""
        return Replication(
            replicas=self.redis_min_replicas_ack,
            timeout_ms=max(1, round(self.redis_replicas_ack_timeout_seconds * 1000)),
        )

    @property
    def dispatcher(self) -> DispatcherSettings:
        """The webhook dispatcher's settings derived from these."""
        return DispatcherSettings(
            timeout=self.webhook_timeout,
            retry_schedule=self.webhook_retry_schedule,
            allow_private=self.webhook_allow_private,
            per_endpoint_in_flight=self.webhook_endpoint_concurrency,
            max_in_flight=self.webhook_max_in_flight,
            disable_after_seconds=self.webhook_disable_after_seconds,
            probe_schedule=self.webhook_probe_schedule,
            delivered_retention_seconds=self.webhook_delivered_retention_seconds,
            failed_retention_seconds=self.webhook_failed_retention_seconds,
            ca_bundle=self.webhook_ca_bundle,
            failing_after=self.webhook_failing_after,
            replication=self.replication,
        )

    def to_env(self) -> dict[str, str]:
        """Render these settings as ``ORCH_*`` variables, for child processes."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue  # unset: the child's default (None) too
            if name == "api_keys":
                text = ",".join(f"{t}:{k}" for t, k in value)
            elif isinstance(value, tuple):
                text = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            out[f"ORCH_{name.upper()}"] = text
        return out
