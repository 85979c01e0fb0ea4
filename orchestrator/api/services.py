"""What the API process holds for its routes, typed: built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from starlette.requests import Request

from orchestrator.api.auth import KeyRing
from orchestrator.api.waiters import Waiters
from orchestrator.flows import Registry
from orchestrator.runs.store import RunStore
from orchestrator.settings import Settings
from webhooks import RedisClock
from webhooks.api.routes import WebhookAPI

if TYPE_CHECKING:
    from orchestrator.api.dashboard.sessions import Sessions
    from orchestrator.api.tokens import RunTokens


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
    clock: RedisClock
    tokens: RunTokens
    sessions: Sessions


def services(request: Request) -> Services:
    """The resources of the app serving `request`."""
    found: Services = request.app.state.services
    return found
