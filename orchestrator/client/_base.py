"""No-I/O logic shared by the sync and async clients: configuration, errors, retry decisions, SSE."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.client.errors import APIStatusError, error_class

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class Config:
    """Where and how to talk to the API."""

    base_url: str
    api_key: str
    timeout: float
    max_retries: int


def make_config(
    base_url: str | None,
    api_key: str | None,
    timeout: float,
    max_retries: int,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Fill `base_url` / `api_key` from ``ORCH_BASE_URL`` / ``ORCH_API_KEY`` when not given."""
    env = os.environ if environ is None else environ
    url = base_url or env.get("ORCH_BASE_URL") or DEFAULT_BASE_URL
    key = api_key or env.get("ORCH_API_KEY")
    if not key:
        raise ValueError("an API key is required: pass api_key= or set ORCH_API_KEY")
    if timeout <= 0 or max_retries < 0:
        raise ValueError("timeout must be > 0 and max_retries >= 0")
    return Config(base_url=url.rstrip("/"), api_key=key, timeout=timeout, max_retries=max_retries)


def headers_for(config: Config, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers of every request."""
    out = {"Authorization": f"Bearer {config.api_key}", "Accept": "application/json"}
    out.update(extra or {})
    return out


def to_error(status: int, body: bytes, headers: Mapping[str, str]) -> APIStatusError:
    """Turn an error answer into the matching APIStatusError subclass."""
    code, message, details = f"http_{status}", f"HTTP {status}", {}
    try:
        doc = json.loads(body)
        err = doc["error"]
        code, message, details = str(err["code"]), str(err["message"]), dict(err.get("details") or {})
    except (ValueError, KeyError, TypeError):
        if body:
            message = body[:200].decode("utf-8", errors="replace")
    return error_class(status)(
        message, status_code=status, code=code, details=details, request_id=headers.get("x-request-id")
    )


def should_retry(*, status: int | None, retryable: bool, attempt: int, max_retries: int) -> bool:
    """Retry connection errors (status None) and 429/502/503/504, for requests safe to repeat."""
    if not retryable or attempt >= max_retries:
        return False
    return status is None or status in RETRY_STATUSES


def backoff(attempt: int, retry_after: str | None = None) -> float:
    """Seconds before retry number `attempt` + 1: Retry-After when sane, else exponential with jitter."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER)
        except ValueError:
            pass
    base: float = min(0.5 * 2**attempt, 8.0)
    return base * random.uniform(0.75, 1.25)


@dataclass
class SSEParser:
    """Incremental ``text/event-stream`` parser: feed lines, get complete events."""

    _data: list[str] = field(default_factory=list)
    _event: str = "message"
    _id: str | None = None

    def feed(self, line: str) -> dict[str, str] | None:
        """Consume one line (without its newline); return an event when a blank line ends one."""
        if line == "":
            if not self._data:
                self._event = "message"
                return None
            event = {"event": self._event, "data": "\n".join(self._data), "id": self._id or ""}
            self._data, self._event = [], "message"
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def query(**params: Any) -> dict[str, str]:
    """Query parameters without the unset ones, as strings."""
    return {k: str(v) for k, v in params.items() if v is not None}
