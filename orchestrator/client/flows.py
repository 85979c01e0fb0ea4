"""``client.flows``: list and inspect flows, start executions one by one or in a batch."""

from __future__ import annotations

import builtins
import uuid
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel

from orchestrator.models import Execution, FlowInfo, execution_model

if TYPE_CHECKING:
    from orchestrator.client._async import AsyncClient

OutT = TypeVar("OutT", bound=BaseModel)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return value


class AsyncFlows:
    """Flows resource (async)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[FlowInfo]:
        """Every flow the server runs."""
        answer = await self._client.request("GET", "/v1/flows")
        return [FlowInfo.model_validate(f) for f in answer.json()["data"]]

    async def get(self, flow_id: str) -> FlowInfo:
        """One flow with its input and output JSON schemas."""
        answer = await self._client.request("GET", f"/v1/flows/{flow_id}")
        return FlowInfo.model_validate(answer.json())

    @overload
    async def run(
        self,
        flow_id: str,
        input: Any,
        *,
        metadata: dict[str, Any] | None = ...,
        webhook: dict[str, Any] | None = ...,
        idempotency_key: str | None = ...,
        wait: float | None = ...,
        output_type: None = ...,
    ) -> Execution[Any]: ...

    @overload
    async def run(
        self,
        flow_id: str,
        input: Any,
        *,
        metadata: dict[str, Any] | None = ...,
        webhook: dict[str, Any] | None = ...,
        idempotency_key: str | None = ...,
        wait: float | None = ...,
        output_type: type[OutT],
    ) -> Execution[OutT]: ...

    async def run(
        self,
        flow_id: str,
        input: Any,
        *,
        metadata: dict[str, Any] | None = None,
        webhook: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
        output_type: type[OutT] | None = None,
    ) -> Execution[Any]:
        """Start an execution; with `wait` the server holds the answer until it ends (≤ 60 s).

        An idempotency key is always sent (a new one unless given), so a retried create can
        never start two executions.
        """
        body: dict[str, Any] = {"input": _jsonable(input)}
        if metadata is not None:
            body["metadata"] = metadata
        if webhook is not None:
            body["webhook"] = webhook
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        timeout = None
        if wait is not None:
            headers["Prefer"] = f"wait={wait:g}"
            timeout = self._client.config.timeout + wait
        answer = await self._client.request(
            "POST", f"/v1/flows/{flow_id}/runs", json=body, headers=headers, retryable=True, timeout=timeout
        )
        return execution_model(output_type).model_validate(answer.json())

    async def run_batch(
        self, flow_id: str, items: builtins.list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> builtins.list[Execution[Any]]:
        """Start up to 1000 executions at once: ``items`` are ``{"input": ..., "metadata"?: ...}``."""
        body = {"items": [{**item, "input": _jsonable(item.get("input"))} for item in items]}
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        answer = await self._client.request(
            "POST", f"/v1/flows/{flow_id}/runs/batch", json=body, headers=headers
        )
        return [Execution[Any].model_validate(r) for r in answer.json()["data"]]
