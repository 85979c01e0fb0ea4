"""HTTP routes of the webhook service (``/v1/webhooks``), mounted by an application.

The mounting app passes how to authenticate a request (to a tenant), the body size limit, which
event types exist and which filter values (flow ids) are valid; parsing is ``webhooks.api.inputs``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from webhooks import custom_headers
from webhooks.alerts import OPERATIONAL_EVENTS
from webhooks.api.apidoc import PAGING, Param, links_to, operation
from webhooks.api.inputs import (
    check_choices,
    check_url_field,
    model_of,
    page_cursor,
    page_limit,
    parse_json,
    read_body,
    read_model,
    render,
)
from webhooks.api.messages import MessageRoutes
from webhooks.catalog import EXAMPLE_AT, OWN_TYPES, CatalogSource, EventType, openapi_webhooks
from webhooks.deliveries import DeliveryStore
from webhooks.endpoints import EndpointStore
from webhooks.errors import ValidationFailed
from webhooks.models import (
    EndpointCreate,
    EndpointOut,
    EndpointPage,
    EndpointPatch,
    EventTypeOut,
    EventTypePage,
    Ordering,
    Page,
    SecretOut,
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
    "EndpointEvents": "events",
}


class WebhookAPI(MessageRoutes):
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
        catalog: CatalogSource | None = None,
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
            catalog: the mounting app's event types, narrowed to filter values (``webhooks.catalog``);
                the service's own (webhook.test, operational events) are added to them.
            replication: replicas that must hold a write before it is answered (else 503).
        """
        self.authenticate = authenticate
        self.max_body_bytes = max_body_bytes
        # The mounting app's types, and the operational events every endpoint may subscribe to.
        self.subscribable = (*event_types, *OPERATIONAL_EVENTS)
        self.filter_values = filter_values
        self.allow_private = allow_private
        self.default_events = tuple(default_events)
        self.coalesced_events = tuple(coalesced_events)
        self.failed_ttl_ms = failed_ttl_ms
        self.delivered_ttl_ms = delivered_ttl_ms
        self.catalog = catalog
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

    async def optional_body(self, request: Request, model: type[M]) -> M | None:
        """None for an absent or empty body, else the body validated as `model`."""
        raw = await read_body(request, max_bytes=self.max_body_bytes)
        return None if raw == b"" else model_of(parse_json(raw), model)

    def event_types(self, flow_ids: Sequence[str] | None = None) -> list[EventType]:
        """The catalog: the mounting app's types (narrowed to `flow_ids`), then the service's own."""
        supplied = list(self.catalog(flow_ids)) if self.catalog is not None else []
        return [*supplied, *OWN_TYPES]

    def openapi_webhooks(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The OpenAPI ``webhooks`` section and its schemas, every flow's Execution among them."""
        section, schemas = openapi_webhooks(self.event_types(sorted(self.filter_values()) or None))
        return section, schemas

    async def check_fields(
        self, *, url: str | None, events: list[str] | None, flow_ids: list[str] | None
    ) -> None:
        """Refuse unsafe URLs, unknown event types and unknown flow ids (422)."""
        if url is not None:
            await check_url_field(url, field="url", allow_private=self.allow_private)
        check_choices("events", events, self.subscribable, what="event types")
        if flow_ids:
            check_choices("flowIds", flow_ids, self.filter_values(), what="flows")

    def routes(self) -> list[Route]:
        """The ``/v1/webhooks`` routes (API.md "Webhooks")."""
        return [
            Route("/v1/event-types", self.list_event_types, methods=["GET"]),
            Route("/v1/webhooks", self.create, methods=["POST"]),
            Route("/v1/webhooks", self.list, methods=["GET"]),
            Route("/v1/webhooks/default-secret", self.default_secret, methods=["GET"]),
            Route("/v1/webhooks/default-secret/rotate", self.rotate_default_secret, methods=["POST"]),
            Route("/v1/webhooks/{endpoint_id}", self.get, methods=["GET"]),
            Route("/v1/webhooks/{endpoint_id}", self.patch, methods=["PATCH"]),
            Route("/v1/webhooks/{endpoint_id}", self.delete, methods=["DELETE"]),
            Route("/v1/webhooks/{endpoint_id}/rotate-secret", self.rotate, methods=["POST"]),
            Route("/v1/webhooks/{endpoint_id}/test", self.test, methods=["POST"]),
            Route("/v1/webhooks/{endpoint_id}/deliveries", self.deliveries, methods=["GET"]),
            Route("/v1/webhooks/{endpoint_id}/deliveries/{message_id}/retry", self.retry, methods=["POST"]),
            Route("/v1/webhooks/{endpoint_id}/recover", self.recover, methods=["POST"]),
            Route("/v1/webhooks/{endpoint_id}/events", self.events, methods=["GET"]),
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
            headers=body.headers,
            ordering=(body.ordering or Ordering.none).value,
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
        summary="Change url, events, flowIds, description, enabled, headers or ordering",
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
        stored = await endpoints.get(endpoint_id, tenant=tenant)
        body = await self.body(request, EndpointPatch)
        await self.check_fields(url=body.url, events=body.events, flow_ids=body.flow_ids)
        changes = body.model_dump(exclude_unset=True)
        if any(v is None for v in changes.values()):
            nulls = [k for k, v in changes.items() if v is None]
            raise ValidationFailed.field(nulls[0], "may not be null", "none_forbidden")
        if "headers" in changes:
            try:
                changes["headers"] = custom_headers.merge(changes["headers"], stored.headers)
            except custom_headers.BadHeader as exc:
                raise ValidationFailed.field("headers", str(exc)) from None
        if "ordering" in changes:
            changes["ordering"] = Ordering(changes["ordering"]).value
        endpoint = await endpoints.update(endpoint_id, tenant=tenant, changes=changes)
        await self.replicated(f"endpoint {endpoint_id}")
        return render(EndpointOut.of(endpoint))

    @operation(summary="Delete an endpoint", tag="Webhooks", responses={204: None}, errors=(401, 404, 503))
    async def delete(self, request: Request) -> Response:
        """``DELETE /v1/webhooks/{id}``: 204."""
        tenant = await self.authenticate(request)
        endpoints, _ = self.stores(request)
        await endpoints.delete(request.path_params["endpoint_id"], tenant=tenant, keep_ms=self.failed_ttl_ms)
        await self.replicated("the deleted endpoint")
        return Response(status_code=204)

    @operation(
        summary="Rotate the secret (every secret rotated out within 24 h signs beside it)",
        tag="Webhooks",
        responses={200: SecretOut},
        errors=(401, 404, 409, 503),
    )
    async def rotate(self, request: Request) -> Response:
        """``POST /v1/webhooks/{id}/rotate-secret``: the new secret; the old one signs for 24 h more.

        409 ``conflict`` when ``MAX_PREVIOUS_SECRETS`` rotated-out secrets still sign (webhooks.secrets).
        """
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
        summary="Rotate the tenant's default secret (every one rotated out within 24 h signs beside it)",
        tag="Webhooks",
        responses={200: SecretOut},
        errors=(401, 409, 503),
    )
    async def rotate_default_secret(self, request: Request) -> Response:
        """``POST /v1/webhooks/default-secret/rotate``: the new default secret (dispatchers use it within
        seconds); the old one signs beside it for 24 h. 409 ``conflict`` at ``MAX_PREVIOUS_SECRETS``."""
        tenant = await self.authenticate(request)
        endpoints, _ = self.stores(request)
        secret = await endpoints.rotate_default_secret(tenant)
        await self.replicated("the new default secret")
        return JSONResponse({"secret": secret})

    @operation(
        summary="The event-type catalog: every type with the JSON Schema of its body and an example",
        tag="Event types",
        responses={200: EventTypePage},
        query=[
            Param(
                "flowIds",
                "Comma-separated flow ids: execution data typed as those flows' Executions",
                {"type": "string"},
            )
        ],
        errors=(401, 422, 503),
    )
    async def list_event_types(self, request: Request) -> Response:
        """``GET /v1/event-types[?flowIds=a,b]``: every type, its schema and an example (one page)."""
        await self.authenticate(request)
        raw = request.query_params.get("flowIds") or ""
        flow_ids = [f.strip() for f in raw.split(",") if f.strip()] if raw else []
        check_choices("flowIds", flow_ids, self.filter_values(), what="flows")
        items = [
            EventTypeOut.model_validate(
                {
                    "type": e.name,
                    "description": e.description,
                    "group": e.group,
                    "flows": e.flows,
                    "schema": e.schema(),
                    "example": e.body_example(EXAMPLE_AT),
                }
            )
            for e in self.event_types(flow_ids or None)
        ]
        return render(EventTypePage(data=items, next_cursor=None))


def _check_secret(secret: str) -> None:
    try:
        key = parse_secret(secret)
    except WebhookVerificationError:
        key = b""
    if not secret.startswith("whsec_") or len(key) < MIN_SECRET_BYTES:
        raise ValidationFailed.field(
            "secret", f"must be whsec_ + base64 of at least {MIN_SECRET_BYTES} bytes"
        )
