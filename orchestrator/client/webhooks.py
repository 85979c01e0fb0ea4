"""``client.webhooks``: endpoints, their deliveries, retries, recovery and secrets."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import TYPE_CHECKING, Any

from orchestrator.client._base import query
from orchestrator.client.pagination import AsyncPaginator
from webhooks.models import AlertOut, DeliveryOut, DeliveryStatus, EndpointOut

if TYPE_CHECKING:
    from orchestrator.client._async import AsyncClient


class AsyncWebhooks:
    """Webhook endpoints resource (async)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        url: str,
        *,
        events: builtins.list[str] | None = None,
        flow_ids: builtins.list[str] | None = None,
        description: str | None = None,
        secret: str | None = None,
        headers: dict[str, str] | None = None,
        ordering: str | None = None,
    ) -> EndpointOut:
        """Subscribe `url`; the returned endpoint carries its secret (shown only now).

        `headers` go with every delivery (shown masked); `ordering="run"` delivers each run's
        messages in sequence order (docs/webhooks.md).
        """
        body: dict[str, Any] = {"url": url}
        for name, value in (
            ("events", events),
            ("flowIds", flow_ids),
            ("description", description),
            ("secret", secret),
            ("headers", headers),
            ("ordering", ordering),
        ):
            if value is not None:
                body[name] = value
        answer = await self._client.request("POST", "/v1/webhooks", json=body, retryable=False)
        return EndpointOut.model_validate(answer.json())

    def list(self, *, page_size: int = 100) -> AsyncPaginator[EndpointOut]:
        """Every endpoint, newest first (no secrets)."""

        async def fetch(cursor: str | None) -> tuple[builtins.list[Any], str | None]:
            doc = (
                await self._client.request(
                    "GET", "/v1/webhooks", params=query(limit=page_size, cursor=cursor)
                )
            ).json()
            return doc["data"], doc["nextCursor"]

        return AsyncPaginator(fetch, EndpointOut.model_validate)

    async def get(self, endpoint_id: str) -> EndpointOut:
        """One endpoint (no secret)."""
        return EndpointOut.model_validate(
            (await self._client.request("GET", f"/v1/webhooks/{endpoint_id}")).json()
        )

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: builtins.list[str] | None = None,
        flow_ids: builtins.list[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
        headers: dict[str, str] | None = None,
        ordering: str | None = None,
    ) -> EndpointOut:
        """Change the given fields only (`headers` replaces the map; a masked value keeps its own)."""
        changes = {
            k: v
            for k, v in (
                ("url", url),
                ("events", events),
                ("flowIds", flow_ids),
                ("description", description),
                ("enabled", enabled),
                ("headers", headers),
                ("ordering", ordering),
            )
            if v is not None
        }
        answer = await self._client.request("PATCH", f"/v1/webhooks/{endpoint_id}", json=changes)
        return EndpointOut.model_validate(answer.json())

    async def delete(self, endpoint_id: str) -> None:
        """Remove the endpoint."""
        await self._client.request("DELETE", f"/v1/webhooks/{endpoint_id}")

    async def rotate_secret(self, endpoint_id: str) -> str:
        """A new secret; the old one keeps signing beside it for 24 h."""
        answer = await self._client.request(
            "POST", f"/v1/webhooks/{endpoint_id}/rotate-secret", retryable=False
        )
        return str(answer.json()["secret"])

    async def test(self, endpoint_id: str, *, event_type: str | None = None) -> str:
        """Send a ``webhook.test`` message (or `event_type`'s catalog example); return its id (the
        ``webhook-id`` it arrives with)."""
        body = {"eventType": event_type} if event_type is not None else None
        answer = await self._client.request(
            "POST", f"/v1/webhooks/{endpoint_id}/test", json=body, retryable=False
        )
        return str(answer.json()["messageId"])

    def events(self, endpoint_id: str, *, page_size: int = 100) -> AsyncPaginator[AlertOut]:
        """The endpoint's operational events (disabled, enabled, failing...), newest first."""

        async def fetch(cursor: str | None) -> tuple[builtins.list[Any], str | None]:
            params = query(limit=page_size, cursor=cursor)
            doc = (
                await self._client.request("GET", f"/v1/webhooks/{endpoint_id}/events", params=params)
            ).json()
            return doc["data"], doc["nextCursor"]

        return AsyncPaginator(fetch, AlertOut.model_validate)

    def deliveries(
        self, endpoint_id: str, *, status: DeliveryStatus | str | None = None, page_size: int = 100
    ) -> AsyncPaginator[DeliveryOut]:
        """Messages sent to the endpoint with every attempt, newest first."""
        status_text = status.value if isinstance(status, DeliveryStatus) else status

        async def fetch(cursor: str | None) -> tuple[builtins.list[Any], str | None]:
            params = query(status=status_text, limit=page_size, cursor=cursor)
            doc = (
                await self._client.request("GET", f"/v1/webhooks/{endpoint_id}/deliveries", params=params)
            ).json()
            return doc["data"], doc["nextCursor"]

        return AsyncPaginator(fetch, DeliveryOut.model_validate)

    async def retry(self, endpoint_id: str, message_id: str) -> None:
        """Send one message again now, with the same ``webhook-id``."""
        await self._client.request("POST", f"/v1/webhooks/{endpoint_id}/deliveries/{message_id}/retry")

    async def recover(self, endpoint_id: str, since: datetime) -> int:
        """Send again every message that failed since `since`; return how many."""
        answer = await self._client.request(
            "POST", f"/v1/webhooks/{endpoint_id}/recover", json={"since": since.isoformat()}
        )
        return int(answer.json()["count"])

    async def default_secret(self) -> str:
        """The tenant's default secret, which signs one-run webhooks given at run creation."""
        return str((await self._client.request("GET", "/v1/webhooks/default-secret")).json()["secret"])

    async def rotate_default_secret(self) -> str:
        """A new default secret; every one rotated out within 24 h keeps signing beside it."""
        answer = await self._client.request("POST", "/v1/webhooks/default-secret/rotate", retryable=False)
        return str(answer.json()["secret"])
