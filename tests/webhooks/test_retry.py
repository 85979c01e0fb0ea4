"""The retry decision after an attempt, and the Retry-After header's two forms."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from webhooks.retry import Decision, Outcome, classify, parse_retry_after

SCHEDULE = (5.0, 60.0, 600.0)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_a_2xx_is_delivered_whatever_the_attempt(status: int) -> None:
    assert classify(status, attempt=1, schedule=SCHEDULE) == Outcome(Decision.delivered)
    assert classify(status, attempt=99, schedule=SCHEDULE) == Outcome(Decision.delivered)


@pytest.mark.parametrize("attempt", [1, len(SCHEDULE) + 1])
def test_410_disables_even_past_the_schedule(attempt: int) -> None:
    assert classify(410, attempt=attempt, schedule=SCHEDULE, retry_after=1.0) == Outcome(Decision.disable)


@pytest.mark.parametrize("status", [None, 300, 302, 404, 429, 500, 503])
def test_an_attempt_past_the_schedule_is_exhausted(status: int | None) -> None:
    last = len(SCHEDULE) + 1
    assert classify(status, attempt=last, schedule=SCHEDULE, retry_after=1.0) == Outcome(Decision.exhausted)
    # the attempt before it still retries, after the schedule's last delay
    assert classify(status, attempt=last - 1, schedule=SCHEDULE, jitter=0) == Outcome(Decision.retry, 600.0)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_exactly_then_capped(status: int) -> None:
    got = classify(status, attempt=1, schedule=SCHEDULE, retry_after=42.0, jitter=0.5)
    assert got == Outcome(Decision.retry, 42.0)  # no jitter on what the receiver asked for
    capped = classify(status, attempt=1, schedule=SCHEDULE, retry_after=10_000.0, retry_after_cap=3600.0)
    assert capped == Outcome(Decision.retry, 3600.0)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("hint", [0.0, 1.0, 59.9])
def test_retry_after_never_shortens_the_schedule(status: int, hint: float) -> None:
    # Regression (issue 14): `Retry-After: 0` (or a date in the past, parsed as 0) replaced the
    # schedule's delay, so a receiver answering 429 burned every retry within milliseconds.
    got = classify(status, attempt=2, schedule=SCHEDULE, retry_after=hint, jitter=0)
    assert got == Outcome(Decision.retry, 60.0)
    jittered = classify(
        status, attempt=2, schedule=SCHEDULE, retry_after=hint, jitter=0.2, rng=random.Random(1)
    )
    assert jittered.delay is not None and jittered.delay >= 48.0


def test_the_cap_bounds_only_the_lengthening() -> None:
    # A cap below the schedule's delay leaves the schedule's delay: the cap limits what the hint adds.
    got = classify(429, attempt=3, schedule=SCHEDULE, retry_after=10_000.0, retry_after_cap=30.0, jitter=0)
    assert got == Outcome(Decision.retry, 600.0)


def test_retry_after_counts_only_on_429_and_503() -> None:
    assert classify(500, attempt=2, schedule=SCHEDULE, retry_after=42.0, jitter=0) == Outcome(
        Decision.retry, 60.0
    )
    assert classify(429, attempt=2, schedule=SCHEDULE, jitter=0) == Outcome(Decision.retry, 60.0)


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_without_jitter_the_delay_is_the_schedules(attempt: int) -> None:
    got = classify(500, attempt=attempt, schedule=SCHEDULE, jitter=0)
    assert got == Outcome(Decision.retry, SCHEDULE[attempt - 1])


def test_jitter_spreads_the_delay_within_its_bounds() -> None:
    def delays(seed: int) -> list[float]:
        rng = random.Random(seed)
        out = [classify(500, attempt=2, schedule=SCHEDULE, jitter=0.2, rng=rng).delay for _ in range(500)]
        return [d for d in out if d is not None]

    got = delays(7)
    assert len(got) == 500 and all(48.0 <= d <= 72.0 for d in got)
    assert min(got) < 50.0 and max(got) > 70.0  # it does spread, over the whole band
    assert delays(7) == got and delays(8) != got  # the injected generator is the only source


def test_a_connection_error_is_retried() -> None:
    assert classify(None, attempt=1, schedule=SCHEDULE, jitter=0) == Outcome(Decision.retry, 5.0)


NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("120", 120.0), (" 7 ", 7.0)])
def test_retry_after_in_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=NOW) == 90.0
    earlier = format_datetime(NOW - timedelta(hours=1), usegmt=True)
    assert parse_retry_after(earlier, now=NOW) == 0.0


@pytest.mark.parametrize("value", ["soon", "1.5", "-5", "Thu, 99 Foo 2026", ""])
def test_retry_after_that_cannot_be_read_is_none(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_no_retry_after_is_none() -> None:
    assert parse_retry_after(None) is None
