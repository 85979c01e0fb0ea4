"""HTTP routes of the webhook service (``/v1/webhooks``), mounted by an application.

The mounting app passes how to authenticate a request (to a tenant), the body size limit, which
event types exist and which filter values (flow ids) are valid; parsing is ``webhooks.api.inputs``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webhooks.api.apidoc import PAGING, Param, links_to, operation
from webhooks.api.inputs import (
    check_choices,
    check_url_field,
    page_cursor,
    page_limit,
    query_choice,
    read_model,
    render,
)
from webhooks.deliveries import DeliveryStore
from webhooks.endpoints import EndpointStore
from webhooks.errors import DeliveryNotFound, ValidationFailed
from webhooks.ids import is_valid
from webhooks.models import (
    CountOut,
    DeliveryPage,
    DeliveryStatus,
    EndpointCreate,
    EndpointOut,
    EndpointPage,
    EndpointPatch,
    MessageRef,
    Page,
    RecoverBody,
    SecretOut,
    now_ms,
)
from webhooks.outbox import Hook
from webhooks.replication import Replication
from webhooks.report import DeliveryReport, SentMessage, delivery_report
from webhooks.signing import WebhookVerificationError, parse_secret

M = TypeVar("M", bound=BaseModel)
MIN_SECRET_BYTES = 24


# The calls that take an endpoint id from a response naming an endpoint.
ENDPOINT_TARGETS = {
    "GetEndpoint": "get",
    "ChangeEndpoint": "patch",
    "DeleteEndpoint": "delete",
    "RotateSecret": "rotate",
    "SendTest": "test",
    "EndpointDeliveries": "deliveries",
    "RecoverEndpoint": "recover",
}


class WebhookAPI:
    """The ``/v1/webhooks`` routes as one mounting application configures them, and their stores."""

    def __init__(
        self,
        *,
        authenticate: Callable[[Request], Awaitable[str]],
        max_body_bytes: int,
        event_types: Collection[str],
        filter_values: Callable[[], Collection[str]],
        allow_private: bool,
        default_events: Sequence[str],
        coalesced_events: Sequence[str] = (),
        failed_ttl_ms: int,
        delivered_ttl_ms: int,
        replication: Replication | None = None,
    ) -> None:
        """Configure the routes.

        Args:
            authenticate: resolves a request to its tenant (raises a 401 error otherwise).
            max_body_bytes: bodies beyond this are refused with 413 while still streaming.
            event_types: the types an endpoint may subscribe to.
            filter_values: the values ``flowIds`` may name (read at each call).
            allow_private: let endpoints name loopback or private hosts (development only).
            default_events: what an endpoint that names no events receives.
            coalesced_events: types the fan-out sends at most once per interval (the report says so).
            failed_ttl_ms, delivered_ttl_ms: how long delivery rows are kept, by outcome.
            replication: replicas that must hold a write before it is answered (else 503).
        """
        self.authenticate = authenticate
        self.max_body_bytes = max_body_bytes
        self.event_types = event_types
        self.filter_values = filter_values
        self.allow_private = allow_private
        self.default_events = tuple(default_events)
        self.coalesced_events = tuple(coalesced_events)
        self.failed_ttl_ms = failed_ttl_ms
        self.delivered_ttl_ms = delivered_ttl_ms
        self.replication = replication or Replication()
        self._stores: tuple[EndpointStore, DeliveryStore] | None = None
        self._redis: Redis | None = None

    def open(self, redis: Redis) -> None:
        """Bind the stores to the app's Redis client (from its lifespan, before any request)."""
        self._redis = redis
        self._stores = (
            EndpointStore(redis),
            DeliveryStore(redis, failed_ttl_ms=self.failed_ttl_ms, delivered_ttl_ms=self.delivered_ttl_ms),
        )

    def stores(self, request: Request | None = None) -> tuple[EndpointStore, DeliveryStore]:
        """The endpoint and delivery stores (``open`` must have been called)."""
        if self._stores is None:
            raise RuntimeError("WebhookAPI.open(redis) was not called")
        return self._stores

    async def report(
        self, *, tenant: str, subject: str, messages: Sequence[SentMessage], hook: Hook | None
    ) -> DeliveryReport:
        """Where a subject's messages went, per endpoint (see ``webhooks.report``)."""
        endpoints, deliveries = self.stores()
        return await delivery_report(
            endpoints,
            deliveries,
            tenant=tenant,
            subject=subject,
            messages=messages,
            hook=hook,
            default_events=self.default_events,
            coalesced_events=self.coalesced_events,
        )

    async def replicated(self, what: str) -> None:
        """Return once the writes made so far are on the required replicas (503 if not in time)."""
        if self.replication.enabled and self._redis is not None:
            await self.replication.fence(self._redis, what=what)

    async def body(self, request: Request, model: type[M]) -> M:
        """Read and validate the body as `model` (422 lists each bad field)."""
        return await read_model(request, model, max_bytes=self.max_body_bytes)

    async def check_fields(
        self, *, url: str | None, events: list[str] | None, flow_ids: list[str] | None
    ) -> None:
        """Refuse unsafe URLs, unknown event types and unknown flow ids (422)."""
        if url is not None:
            await check_url_field(url, field="url", allow_private=self.allow_private)
        check_choices("events", events, self.event_types, what="event types")
        if flow_ids:
            check_choices("flowIds", flow_ids, self.filter_values(), what="flows")

    def routes(self) -> list[Route]:
        """The ``/v1/webhooks`` routes (API.md "Webhooks")."""
        return [
            Route("/v1/webhooks", self.create, methods=["POST"]),
            Route("/v1/webhooks", self.list, methods=["GET"]),
            Route("/v1/webhooks/default-secret", self.default_secret, methods=["GET"]),
            Route("/v1/webhooks/{endpoint_id}", self.get, methods=["GET"]),
            Route("/v1/webhooks/{endpoint_id}", self.patch, methods=["PATCH"]),
            Route("/v1/webhooks/{endpoint_id}", self.delete, methods=["DELETE"]),
            Route("/v1/webhooks/{endpoint_id}/rotate-secret", self.rotate, methods=["POST"]),
            Route("/v1/webhooks/{endpoint_id}/test", self.test, methods=["POST"]),
            Route("/v1/webhooks/{endpoint_id}/deliveries", self.deliveries, methods=["GET"]),
            Route("/v1/webhooks/{endpoint_id}/deliveries/{message_id}/retry", self.retry, methods=["POST"]),
            Route("/v1/webhooks/{endpoint_id}/recover", self.recover, methods=["POST"]),
        ]

    # ----- handlers ----------------------------------------------------------------------------

    @operation(
        summary="Create an endpoint (its secret is shown only here and on rotation)",
        tag="Webhooks",
        body=EndpointCreate,
        responses={201: EndpointOut},
        links={201: links_to(ENDPOINT_TARGETS, "endpoint_id", "$response.body#/id")},
        errors=(400, 401, 413, 422, 503),
    )
    async def create(self, request: Request) -> Response:
        """``POST /v1/webhooks``: 201 with the secret (shown only here and on rotation)."""
        tenant = await self.authenticate(request)
        body = await self.body(request, EndpointCreate)
        await self.check_fields(url=body.url, events=body.events, flow_ids=body.flow_ids)
        if body.secret is not None:
            _check_secret(body.secret)
        endpoints, _ = self.stores(request)
        endpoint = await endpoints.create(
            tenant=tenant,
            url=body.url,
            events=body.events or [],
            flow_ids=body.flow_ids or [],
            description=body.description,
            secret=body.secret,
        )
        await self.replicated(f"endpoint {endpoint.id}")
        return render(EndpointOut.of(endpoint, with_secret=True), 201)

    @operation(
        summary="List endpoints (no secrets)",
        tag="Webhooks",
        responses={200: EndpointPage},
        query=PAGING,
        errors=(401, 422, 503),
    )
    async def list(self, request: Request) -> Response:
        """``GET /v1/webhooks``: newest first, no secrets."""
        tenant = await self.authenticate(request)
        limit = page_limit(request)
        cursor = page_cursor(request, "wh")
        endpoints, _ = self.stores(request)
        items, next_cursor = await endpoints.page(tenant, limit=limit, cursor=cursor)
        return render(Page(data=[EndpointOut.of(e) for e in items], next_cursor=next_cursor))

    @operation(
        summary="Get an endpoint", tag="Webhooks", responses={200: EndpointOut}, errors=(401, 404, 503)
    )
    async def get(self, request: Request) -> Response:
        """``GET /v1/webhooks/{id}`` (no secret)."""
        tenant = await self.authenticate(request)
        endpoints, _ = self.stores(request)
        endpoint = await endpoints.get(request.path_params["endpoint_id"], tenant=tenant)
        return render(EndpointOut.of(endpoint))

    @operation(
        summary="Change url, events, flowIds, description or enabled",
        tag="Webhooks",
        body=EndpointPatch,
        responses={200: EndpointOut},
        errors=(400, 401, 404, 413, 422, 503),
    )
    async def patch(self, request: Request) -> Response:
        """``PATCH /v1/webhooks/{id}``: change url, events, flowIds, description, enabled."""
        tenant = await self.authenticate(request)
        endpoints, _ = self.stores(request)
        endpoint_id = request.path_params["endpoint_id"]
        await endpoints.get(endpoint_id, tenant=tenant)
        body = await self.body(request, EndpointPatch)
        await self.check_fields(url=body.url, events=body.events, flow_ids=body.flow_ids)
        changes = body.model_dump(exclude_unset=True)
        if any(v is None for v in changes.values()):
            nulls = [k for k, v in changes.items() if v is None]
            raise ValidationFailed.field(nulls[0], "may not be null", "none_forbidden")
        endpoint = await endpoints.update(endpoint_id, tenant=tenant, changes=changes)
        await self.replicated(f"endpoint {endpoint_id}")
        return render(EndpointOut.of(endpoint))

    @operation(summary="Delete an endpoint", tag="Webhooks", responses={204: None}, errors=(401, 404, 503))
    async def delete(self, request: Request) -> Response:
        """``DELETE /v1/webhooks/{id}``: 204."""
        tenant = await self.authenticate(request)
        endpoints, _ = self.stores(request)
        await endpoints.delete(request.path_params["endpoint_id"], tenant=tenant)
        await self.replicated("the deleted endpoint")
        return Response(status_code=204)

    @operation(
        summary="Rotate the secret (the old one signs beside it for 24 h)",
        tag="Webhooks",
        responses={200: SecretOut},
        errors=(401, 404, 503),
    )
    async def rotate(self, request: Request) -> Response:
        """``POST /v1/webhooks/{id}/rotate-secret``: the new secret; the old one signs for 24 h more."""
        tenant = await self.authenticate(request)
        endpoints, _ = self.stores(request)
        secret = await endpoints.rotate_secret(request.path_params["endpoint_id"], tenant=tenant)
        await self.replicated("the new secret")
        return JSONResponse({"secret": secret})

    @operation(
        summary="The tenant's default secret (signs one-run webhooks)",
        tag="Webhooks",
        responses={200: SecretOut},
    )
    async def default_secret(self, request: Request) -> Response:
        """``GET /v1/webhooks/default-secret``: signs the one-run webhooks given at run creation."""
        tenant = await self.authenticate(request)
        endpoints, _ = self.stores(request)
        secret = await endpoints.default_secret(tenant)
        await self.replicated("the default secret")  # made on first use: it must outlive a failover
        return JSONResponse({"secret": secret})

    @operation(
        summary="Send a webhook.test message",
        tag="Webhooks",
        responses={202: MessageRef},
        links={
            202: {
                "RetryTestMessage": {
                    "operationId": "retry",
                    "parameters": {
                        "endpoint_id": "$request.path.endpoint_id",
                        "message_id": "$response.body#/messageId",
                    },
                }
            }
        },
        errors=(401, 404, 503),
    )
    async def test(self, request: Request) -> Response:
        """``POST /v1/webhooks/{id}/test``: 202 with the id of the ``webhook.test`` message."""
        tenant = await self.authenticate(request)
        endpoints, deliveries = self.stores(request)
        endpoint = await endpoints.get(request.path_params["endpoint_id"], tenant=tenant)
        message_id = await deliveries.send_test(endpoint, now_ms=now_ms())
        await self.replicated(f"message {message_id}")
        return JSONResponse({"messageId": message_id}, status_code=202)

    @operation(
        summary="Messages sent to the endpoint, each with every attempt",
        tag="Webhooks",
        responses={200: DeliveryPage},
        query=[
            Param(
                "status",
                "pending, succeeded or failed",
                {"type": "string", "enum": ["pending", "succeeded", "failed"]},
            ),
            *PAGING,
        ],
        errors=(401, 404, 422, 503),
    )
    async def deliveries(self, request: Request) -> Response:
        """``GET /v1/webhooks/{id}/deliveries?status=``: messages with every attempt, newest first."""
        tenant = await self.authenticate(request)
        endpoints, deliveries = self.stores(request)
        endpoint = await endpoints.get(request.path_params["endpoint_id"], tenant=tenant)
        status = query_choice(request, "status", DeliveryStatus)
        items, next_cursor = await deliveries.page(
            endpoint.id, status=status, limit=page_limit(request), cursor=page_cursor(request, "msg")
        )
        return render(Page(data=items, next_cursor=next_cursor))

    @operation(
        summary="Send one message again now (same webhook-id)",
        tag="Webhooks",
        responses={202: MessageRef},
        errors=(401, 404, 503),
    )
    async def retry(self, request: Request) -> Response:
        """``POST /v1/webhooks/{id}/deliveries/{messageId}/retry``: 202, sent again now (same webhook-id)."""
        tenant = await self.authenticate(request)
        endpoints, deliveries = self.stores(request)
        endpoint = await endpoints.get(request.path_params["endpoint_id"], tenant=tenant)
        message_id = request.path_params["message_id"]
        if not is_valid(message_id, "msg") or not await deliveries.requeue(message_id, endpoint.id):
            raise DeliveryNotFound(f"no message {message_id} for endpoint {endpoint.id}")
        await self.replicated(f"message {message_id}")
        return JSONResponse({"messageId": message_id, "status": "pending"}, status_code=202)

    @operation(
        summary="Send again every message that failed since a time",
        tag="Webhooks",
        body=RecoverBody,
        responses={202: CountOut},
        errors=(400, 401, 404, 413, 422, 503),
    )
    async def recover(self, request: Request) -> Response:
        """``POST /v1/webhooks/{id}/recover {since}``: 202 with how many failed messages go again."""
        tenant = await self.authenticate(request)
        endpoints, deliveries = self.stores(request)
        endpoint = await endpoints.get(request.path_params["endpoint_id"], tenant=tenant)
        body = await self.body(request, RecoverBody)
        since = body.since
        if since.tzinfo is None:
            raise ValidationFailed.field("since", "must include a time zone (e.g. Z)", "datetime")
        count = await deliveries.recover(endpoint.id, int(since.timestamp() * 1000))
        await self.replicated(f"{count} recovered messages")
        return JSONResponse({"count": count}, status_code=202)


def _check_secret(secret: str) -> None:
    try:
        key = parse_secret(secret)
    except WebhookVerificationError:
        key = b""
    if not secret.startswith("whsec_") or len(key) < MIN_SECRET_BYTES:
        raise ValidationFailed.field(
            "secret", f"must be whsec_ + base64 of at least {MIN_SECRET_BYTES} bytes"
        )
