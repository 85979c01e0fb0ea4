"""What to do after an attempt: a pure function of its outcome, the schedule and the attempt number."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum


class Decision(StrEnum):
    """The fate of a delivery after one attempt."""

    delivered = "delivered"
    retry = "retry"
    exhausted = "exhausted"
    disable = "disable"


@dataclass(frozen=True)
class Outcome:
    """A decision and, for a retry, the delay in seconds."""

    decision: Decision
    delay: float | None = None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify(
    status: int | None,
    *,
    attempt: int,
    schedule: tuple[float, ...],
    retry_after: float | None = None,
    retry_after_cap: float = 3600.0,
    jitter: float = 0.2,
    rng: random.Random | None = None,
) -> Outcome:
    """Decide after attempt number `attempt` (1-based) ended with `status` (None: no response).

    A retry waits the schedule's delay for this attempt (± `jitter`); on 429 and 503 a
    ``Retry-After`` of `retry_after` seconds lengthens that wait, capped at `retry_after_cap`, and
    never shortens it (API.md "Delivery"; issue 14).
    """
    if status is not None and 200 <= status < 300:
        return Outcome(Decision.delivered)
    if status == 410:
        return Outcome(Decision.disable)
    if attempt > len(schedule):
        return Outcome(Decision.exhausted)
    base = schedule[attempt - 1]
    spread = (rng or random).uniform(-jitter, jitter)
    delay = max(0.0, base * (1 + spread))
    if status in (429, 503) and retry_after is not None:
        # The receiver's hint may only lengthen the wait (up to the cap), never shorten it: a
        # `Retry-After: 0` or a date in the past must not burn the whole schedule in milliseconds.
        delay = max(delay, min(retry_after, retry_after_cap))
    return Outcome(Decision.retry, delay)
