"""What the API process holds for its routes, typed: built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from starlette.requests import Request

from orchestrator.api.auth import KeyRing
from orchestrator.api.waiters import Waiters
from orchestrator.flows import Registry
from orchestrator.runs.store import RunStore
from orchestrator.settings import Settings
from webhooks.api.routes import WebhookAPI


@dataclass
class Services:
    """The API process's resources (``app.state.services``)."""

    settings: Settings
    registry: Registry
    redis: Redis
    store: RunStore
    keyring: KeyRing
    waiters: Waiters
    webhooks: WebhookAPI


def services(request: Request) -> Services:
    """The resources of the app serving `request`."""
    found: Services = request.app.state.services
    return found
