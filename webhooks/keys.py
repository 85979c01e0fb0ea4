"""Every Redis key of the webhook service, in one place."""

from __future__ import annotations

from webhooks.models import DeliveryStatus

PREFIX = "wh"
# endpoint id -> earliest due time (ms) of its deliveries: the endpoints with work to do.
DUE_ENDPOINTS = f"{PREFIX}:due"
# Every endpoint id (for maintenance) and the auto-disabled ones with their next probe time.
ENDPOINTS = f"{PREFIX}:endpoints"
PROBES = f"{PREFIX}:probes"
# Healed endpoints whose replay of failed messages is owed (score: when due), until it is done.
REPLAYS = f"{PREFIX}:replays"


def endpoint(endpoint_id: str) -> str:
    """Hash of one endpoint; every field holds a JSON value."""
    return f"{PREFIX}:ep:{endpoint_id}"


def tenant_endpoints(tenant: str) -> str:
    """Sorted set (scores 0, time-ordered ids) of a tenant's endpoints."""
    return f"{PREFIX}:t:{tenant}:eps"


def deleted_endpoints(tenant: str) -> str:
    """Sorted set of a tenant's deleted endpoints by deletion time (ms), kept as long as their
    delivery rows may be: the delivery history of a run stays readable after its endpoint went."""
    return f"{PREFIX}:t:{tenant}:eps:deleted"


def deleted_endpoint_urls(tenant: str) -> str:
    """Hash of a tenant's deleted endpoints: id -> the URL it had."""
    return f"{PREFIX}:t:{tenant}:eps:deleted:urls"


def default_secret(tenant: str) -> str:
    """The tenant's default secret, which signs one-run webhooks."""
    return f"{PREFIX}:t:{tenant}:default-secret"


def default_secret_retired(tenant: str) -> str:
    """JSON list of the tenant's retired default secrets, each ``{secret, until}`` (webhooks.secrets)."""
    return f"{PREFIX}:t:{tenant}:default-secret:retired"


def message(message_id: str) -> str:
    """Hash of one message: type, tenant, subject, body, created (ms)."""
    return f"{PREFIX}:msg:{message_id}"


def delivery_id(message_id: str, endpoint_id: str) -> str:
    """One message to one endpoint: a fan-out repeated after a crash finds the same id."""
    return f"{message_id}:{endpoint_id}"


def delivery(dlv_id: str) -> str:
    """Hash of one delivery: msg, ep, status, attempts, base, next, created, tenant, url."""
    return f"{PREFIX}:dlv:{dlv_id}"


def delivery_log(dlv_id: str) -> str:
    """List of the delivery's attempts (JSON), oldest first."""
    return f"{PREFIX}:dlv:{dlv_id}:log"


def due(endpoint_id: str) -> str:
    """Sorted set of one endpoint's pending deliveries by due time (ms)."""
    return f"{PREFIX}:ep:{endpoint_id}:due"


def listing(endpoint_id: str, status: DeliveryStatus | None = None) -> str:
    """Sorted set (scores 0, members message ids) of an endpoint's deliveries, optionally by status."""
    key = f"{PREFIX}:ep:{endpoint_id}:dl"
    return key if status is None else f"{key}:{status.value}"


def failed_at(endpoint_id: str) -> str:
    """Sorted set of the endpoint's failed messages by when they failed (Redis ms): what a heal replays."""
    return f"{PREFIX}:ep:{endpoint_id}:failed-at"


def endpoint_events(endpoint_id: str) -> str:
    """Sorted set (scores 0, members "{msg id} {JSON}") of the operational events about the endpoint."""
    return f"{PREFIX}:ep:{endpoint_id}:events"


def lane(endpoint_id: str, subject: str) -> str:
    """Sorted set of an ordered endpoint's pending deliveries of one subject, by sequence."""
    return f"{PREFIX}:ep:{endpoint_id}:lane:{subject}"


def lane_active(endpoint_id: str, subject: str) -> str:
    """The lane's active delivery: "g|h <held until ms> <delivery id>" (webhooks.lanes)."""
    return f"{PREFIX}:ep:{endpoint_id}:lane:{subject}:on"


def lanes(endpoint_id: str) -> str:
    """Set of the subjects an ordered endpoint has a non-empty lane for."""
    return f"{PREFIX}:ep:{endpoint_id}:lanes"


def fanned(subject: str) -> str:
    """Hash of a subject's fan-out progress: ``w`` (every sequence up to it fanned out), ``s<n>`` above."""
    return f"{PREFIX}:fan:{subject}"


def progress_gate(endpoint_id: str, subject: str) -> str:
    """Set for the progress interval after a progress event to this endpoint for this subject."""
    return f"{PREFIX}:prog:{endpoint_id}:{subject}"


def hook_endpoint_id(subject: str) -> str:
    """The pseudo endpoint of a one-subject webhook (a run's own `webhook: {url}`)."""
    return f"hook_{subject}"


def dispatcher_alive(consumer: str) -> str:
    """Set, with a short expiry, by a dispatcher as long as it lives: its liveness beacon."""
    return f"{PREFIX}:dispatcher:{consumer}"
