"""DispatcherSettings: delivery timeout, retry schedule, concurrency bounds and retention."""

from __future__ import annotations

from dataclasses import dataclass, field

from webhooks.replication import Replication

DEFAULT_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
# Probes of an automatically disabled endpoint, in seconds after it was disabled (then the last repeats).
DEFAULT_PROBE_SCHEDULE = (300.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0)


@dataclass(frozen=True)
class DispatcherSettings:
    """How the dispatcher delivers; built by the mounting application from its own settings."""

    timeout: float = 15.0
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2
    # Retry-After on 429/503 is honoured up to this many seconds.
    retry_after_cap: float = 3600.0
    allow_private: bool = False
    per_endpoint_in_flight: int = 10
    max_in_flight: int = 500
    # An endpoint failing without a single success for this long is disabled (then probed to heal).
    disable_after_seconds: float = 5 * 24 * 3600
    probe_schedule: tuple[float, ...] = DEFAULT_PROBE_SCHEDULE
    delivered_retention_seconds: int = 7 * 24 * 3600
    failed_retention_seconds: int = 14 * 24 * 3600
    # An entry another dispatcher read but never acknowledged is taken over after this long...
    reclaim_idle_seconds: float = 30.0
    # ...or as soon as that dispatcher has not refreshed its liveness beacon for this long.
    liveness_seconds: float = 5.0
    progress_interval_seconds: float = 0.5
    # A PEM file of CA certificates trusted besides the system's (a private CA); None: the system's only.
    ca_bundle: str | None = None
    user_agent: str = "webhook-orchestrator/0.1 (+standard-webhooks)"
    response_body_bytes: int = 1024
    outbox_batch: int = 200
    group: str = "dispatchers"
    idle_poll_seconds: float = field(default=0.05)
    # Under load, wait this long before the next outbox read or claim, so each round trip carries
    # more (issue 15). Only when the last outbox read found entries already waiting, or when this
    # many attempts are in flight and no endpoint is at its limit: a quiet dispatcher never waits.
    linger_seconds: float = 0.002
    linger_in_flight: int = 4
    # An ordered lane's next message waits this long at most for an earlier one of its subject to be
    # fanned out (normally milliseconds; the reclaim of a crashed dispatcher's entries takes 5-30 s).
    ordering_gap_seconds: float = 60.0
    # `message.attempt.failing` goes out when this many consecutive attempts of a message failed.
    failing_after: int = 4
    # A dispatcher re-reads a tenant's default secret (one-run webhooks) at most this often: a
    # rotation is used everywhere within about this long (the old secret still signs for 24 h).
    default_secret_refresh_seconds: float = 2.0
    # On stop, attempts in flight get this long to finish; the rest are cancelled and, being
    # claimed with a deadline, are simply due again for whichever dispatcher runs next.
    shutdown_grace_seconds: float = 5.0
    # An outbox entry is acknowledged only once its deliveries are on this many replicas (WAIT).
    replication: Replication = field(default_factory=Replication)

    @property
    def max_attempts(self) -> int:
        """First try plus one retry per schedule entry."""
        return 1 + len(self.retry_schedule)

    @property
    def claim_seconds(self) -> float:
        """How long a taken delivery stays hidden from other dispatchers (then it is due again)."""
        return self.timeout + 15.0
