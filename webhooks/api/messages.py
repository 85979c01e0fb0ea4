"""The ``/v1/webhooks/{id}/...`` routes about messages: test sends, deliveries, retries, recovery and
the endpoint's event log. :class:`webhooks.api.routes.WebhookAPI` mounts them with the endpoint routes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webhooks.alerts import event_page
from webhooks.api.apidoc import PAGING, Param, operation
from webhooks.api.inputs import page_cursor, page_limit, query_choice, render
from webhooks.catalog import EventType
from webhooks.deliveries import DeliveryStore
from webhooks.endpoints import EndpointStore
from webhooks.errors import DeliveryNotFound, ValidationFailed
from webhooks.ids import is_valid
from webhooks.models import (
    AlertOut,
    AlertPage,
    CountOut,
    DeliveryPage,
    DeliveryStatus,
    MessageRef,
    Page,
    RecoverBody,
    SendTestBody,
    now_ms,
)

M = TypeVar("M", bound=BaseModel)


class MessageRoutes(ABC):
    """Handlers of the message routes; the mounting class provides authentication, stores and bodies."""

    authenticate: Callable[[Request], Awaitable[str]]

    @abstractmethod
    def stores(self, request: Request | None = None) -> tuple[EndpointStore, DeliveryStore]:
        """The endpoint and delivery stores."""

    @abstractmethod
    async def body(self, request: Request, model: type[M]) -> M:
        """Read and validate the body as `model` (422 lists each bad field)."""

    @abstractmethod
    async def optional_body(self, request: Request, model: type[M]) -> M | None:
        """None for an empty body, else :meth:`body`'s model."""

    @abstractmethod
    async def replicated(self, what: str) -> None:
        """Return once the writes made so far are on the required replicas (503 if not in time)."""

    @abstractmethod
    def event_types(self, flow_ids: Sequence[str] | None = None) -> list[EventType]:
        """Every event type of the catalog, narrowed to `flow_ids` where the mounting app supplies that."""

    @operation(
        summary="Send a test message: webhook.test, or the example of any event type of the catalog",
        tag="Webhooks",
        body=SendTestBody,
        body_required=False,
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
        errors=(400, 401, 404, 413, 422, 503),
    )
    async def test(self, request: Request) -> Response:
        """``POST /v1/webhooks/{id}/test [{eventType}]``: 202 with the id of the message sent.

        No body (or no ``eventType``): a ``webhook.test`` message. With ``eventType``, that type's
        catalog example (``GET /v1/event-types``), narrowed to the endpoint's ``flowIds``; an unknown
        type is a 422 on ``eventType``. It goes to this endpoint alone, whatever its filters.
        """
        tenant = await self.authenticate(request)
        endpoints, deliveries = self.stores(request)
        endpoint = await endpoints.get(request.path_params["endpoint_id"], tenant=tenant)
        options = await self.optional_body(request, SendTestBody)
        event = None
        if options is not None and options.event_type is not None:
            found = {e.name: e for e in self.event_types(endpoint.flow_ids or None)}
            event = found.get(options.event_type)
            if event is None:
                raise ValidationFailed.field(
                    "eventType", f"unknown event type: {options.event_type[:100]}", "enum"
                )
        message_id = await deliveries.send_test(endpoint, now_ms=now_ms(), event=event)
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

    @operation(
        summary="Operational events about the endpoint (disabled, enabled, failing, exhausted, recovered)",
        tag="Webhooks",
        responses={200: AlertPage},
        query=PAGING,
        errors=(401, 404, 422, 503),
    )
    async def events(self, request: Request) -> Response:
        """``GET /v1/webhooks/{id}/events``: the endpoint's event log, newest first (``webhooks.alerts``)."""
        tenant = await self.authenticate(request)
        endpoints, _ = self.stores(request)
        endpoint = await endpoints.get(request.path_params["endpoint_id"], tenant=tenant)
        items, next_cursor = await event_page(
            endpoints.redis, endpoint.id, limit=page_limit(request), cursor=page_cursor(request, "msg")
        )
        return render(AlertPage(data=[AlertOut.model_validate(i) for i in items], next_cursor=next_cursor))
