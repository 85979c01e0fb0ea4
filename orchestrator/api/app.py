"""The Starlette application: lifespan (Redis, typed services), the route table, the one error handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator import __version__, catalog, events
from orchestrator.api.auth import KeyRing, authenticate
from orchestrator.api.dashboard import BASE as DASHBOARD
from orchestrator.api.dashboard import dashboard_routes, error_page, wants_html
from orchestrator.api.dashboard.sessions import Sessions
from orchestrator.api.docs import NAMES, add_flow_operations, docs_routes
from orchestrator.api.ops import OPS_ROUTES
from orchestrator.api.runs import ROUTES
from orchestrator.api.services import Services
from orchestrator.api.tokens import TOKEN_ROUTES, RunTokens
from orchestrator.api.waiters import Waiters
from orchestrator.connections import redis_from_settings
from orchestrator.errors import HeadersTooLarge
from orchestrator.flows import Registry, load_registry
from orchestrator.models import ErrorBody, ErrorDetail
from orchestrator.runs.store import RunStore
from orchestrator.settings import Settings
from webhooks import RedisClock
from webhooks.api.apidoc import build_spec
from webhooks.api.routes import WebhookAPI
from webhooks.errors import HTTPError

logger = logging.getLogger(__name__)

DESCRIPTION = """Run typed flows asynchronously; learn about every status change by a signed, retried webhook
(Standard Webhooks), with polling, long-poll and server-sent events as the fallback.

Authenticate every call with `Authorization: Bearer <api key>`. Each flow has its own typed create
operation under **Flows**; errors are `{"error": {"code", "message", "details"}}`."""

_HTTP_CODES = {
    400: "invalid_json",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    429: "rate_limited",
}


def error_response(
    status: int, code: str, message: str, details: dict[str, object] | None = None
) -> Response:
    """Render the API.md error envelope."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details or {}))
    return Response(body.model_dump_json(), status_code=status, media_type="application/json")


async def _on_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPError):
        status, code, message, details = exc.status_code, exc.code, exc.message, exc.details
    elif isinstance(exc, HTTPException):
        status, code, message, details = (
            exc.status_code,
            _HTTP_CODES.get(exc.status_code, "error"),
            str(exc.detail),
            {},
        )
    elif isinstance(exc, RedisConnectionError | RedisTimeoutError):
        logger.warning("redis unavailable: %s", exc)
        status, code, message, details = (
            503,
            "unavailable",
            "the data store is unavailable; retry shortly",
            {},
        )
    else:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        status, code, message, details = 500, "internal", "internal error", {}
    # A browser on the dashboard gets a page (or the login form); everyone else the JSON envelope.
    if request.url.path.startswith(DASHBOARD) and wants_html(request):
        return error_page(request, status=status, code=code, message=message)
    return error_response(status, code, message, details)


# What one request's headers may come to. uvicorn's httptools parser (the one `orchestrator api`
# runs) limits neither the size nor the number of headers, so without this a route would act on,
# say, a 1 MB Authorization or Prefer header. The values follow nginx (4 x 8 KiB) and gunicorn (100).
MAX_HEADER_BYTES = 32 * 1024
MAX_HEADER_COUNT = 100


class HeaderLimits:
    """ASGI middleware: answer 431 to a request with too many or too large headers, before routing.

    The header block is already in memory when the app sees it: what bounds that memory is a proxy
    in front (or uvicorn's h11 parser); this bounds what the application reads, hashes and stores.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an oversized header block; pass everything else through."""
        if scope["type"] == "http":
            headers = scope["headers"]
            size = sum(len(name) + len(value) for name, value in headers)
            if len(headers) > MAX_HEADER_COUNT or size > MAX_HEADER_BYTES:
                exc = HeadersTooLarge(
                    f"send at most {MAX_HEADER_COUNT} headers of at most {MAX_HEADER_BYTES} bytes in all",
                    details={"maxCount": MAX_HEADER_COUNT, "maxBytes": MAX_HEADER_BYTES},
                )
                response = error_response(exc.status_code, exc.code, exc.message, exc.details)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings, registry: Registry | None = None) -> Starlette:
    """Build the API for `settings`; flows come from `registry` or the modules in ``ORCH_FLOWS``."""
    flows = registry if registry is not None else load_registry(settings.flows)

    webhook_api = WebhookAPI(
        authenticate=authenticate,
        max_body_bytes=settings.max_body_bytes,
        event_types=events.ALL_EVENTS,
        filter_values=lambda: {f.id for f in flows.all()},
        allow_private=settings.webhook_allow_private,
        default_events=events.DEFAULT_EVENTS,
        coalesced_events=events.COALESCED_EVENTS,
        failed_ttl_ms=settings.webhook_failed_retention_seconds * 1000,
        delivered_ttl_ms=settings.webhook_delivered_retention_seconds * 1000,
        catalog=catalog.source(flows),
        replication=settings.replication,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = redis_from_settings(settings)
        webhook_api.open(redis)
        waiters = Waiters(redis)
        clock = RedisClock()
        stop = asyncio.Event()
        with contextlib.suppress(RedisError, OSError):  # Redis down at start: labels use the host clock
            await clock.sync(redis)
        syncing = asyncio.get_running_loop().create_task(clock.run(redis, stop))
        app.state.services = Services(
            settings=settings,
            registry=flows,
            redis=redis,
            store=RunStore(
                redis,
                queue_name=settings.queue_name,
                retention_seconds=settings.run_retention_seconds,
                lease_seconds=settings.lease_seconds,
                requeue_after_seconds=settings.requeue_after_seconds,
                clock=clock.now,
                replication=settings.replication,
            ),
            keyring=KeyRing(settings.api_keys, redis),
            waiters=waiters,
            webhooks=webhook_api,
            clock=clock,
            tokens=RunTokens(redis, now_ms=clock.now_ms),
            sessions=Sessions(redis, ttl_seconds=settings.dashboard_session_seconds),
        )
        await waiters.start()
        try:
            yield
        finally:
            stop.set()
            await syncing
            await waiters.stop()
            await redis.aclose()

    routes = [*OPS_ROUTES, *ROUTES, *TOKEN_ROUTES, *webhook_api.routes()]
    flow_ids = sorted(f.id for f in flows.all())
    spec = build_spec(
        routes,
        title="webhook-orchestrator",
        version=__version__,
        description=DESCRIPTION,
        error_model=ErrorBody,
        # Flow ids as an enum (an empty enum would allow nothing, so none without flows).
        path_params={"flow_id": {"type": "string", "enum": flow_ids}} if flow_ids else None,
        names=NAMES,
        # Every event a receiver can get, typed per flow, so generators build typed receivers.
        webhooks=webhook_api.openapi_webhooks(),
    )
    add_flow_operations(spec, flows.all())

    app = Starlette(
        routes=[*routes, *docs_routes(spec, title="webhook-orchestrator"), *dashboard_routes()],
        lifespan=lifespan,
        middleware=[Middleware(HeaderLimits)],
        exception_handlers={
            Exception: _on_error,
            HTTPException: _on_error,
            HTTPError: _on_error,
            RedisConnectionError: _on_error,
            RedisTimeoutError: _on_error,
        },
    )
    return app


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` when the API runs several worker processes."""
    return create_app(Settings.from_env())
