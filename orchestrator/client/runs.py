"""``client.runs``: read, list, cancel, wait for (pushed, not polled) and stream executions."""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from orchestrator import events
from orchestrator.client._base import SSEParser, backoff, query
from orchestrator.client.errors import APIConnectionError, NotFoundError, TimeoutError
from orchestrator.client.pagination import AsyncPaginator
from orchestrator.models import Execution, ExecutionStatus, RunEvent, event_model, execution_model

if TYPE_CHECKING:
    from orchestrator.client._async import AsyncClient

OutT = TypeVar("OutT", bound=BaseModel)
MAX_LONG_POLL = 60.0
MAX_STREAM_FAILURES = 10


class AsyncRuns:
    """Runs resource (async)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        # None until we learn whether the server has GET /v1/runs/{id}/wait.
        self._long_poll: bool | None = None

    async def get(self, execution_id: str, *, output_type: type[BaseModel] | None = None) -> Execution[Any]:
        """The execution as it stands; `output_type` parses its output into that model."""
        answer = await self._client.request("GET", f"/v1/runs/{execution_id}")
        return execution_model(output_type).model_validate(answer.json())

    def list(
        self,
        *,
        status: ExecutionStatus | str | None = None,
        flow_id: str | None = None,
        page_size: int = 100,
        output_type: type[BaseModel] | None = None,
    ) -> AsyncPaginator[Execution[Any]]:
        """Every execution, newest first, fetched page by page as you iterate."""
        model = execution_model(output_type)
        status_text = status.value if isinstance(status, ExecutionStatus) else status

        async def fetch(cursor: str | None) -> tuple[builtins.list[Any], str | None]:
            params = query(status=status_text, flowId=flow_id, limit=page_size, cursor=cursor)
            doc = (await self._client.request("GET", "/v1/runs", params=params)).json()
            return doc["data"], doc["nextCursor"]

        return AsyncPaginator(fetch, model.model_validate)

    async def cancel(self, execution_id: str) -> Execution[Any]:
        """Cancel a queued or running execution (ConflictError if it already ended)."""
        answer = await self._client.request("POST", f"/v1/runs/{execution_id}/cancel", retryable=False)
        return Execution[Any].model_validate(answer.json())

    async def wait_for_completion(
        self,
        execution_id: str,
        *,
        interval: float = 1.0,
        timeout: float = 300.0,
        output_type: type[BaseModel] | None = None,
    ) -> Execution[Any]:
        """Return the execution once it is success, failed or cancelled.

        Uses the server's long-poll, so the answer comes the moment the execution ends; `interval`
        only paces polling against a server without long-poll. Raises
        ``orchestrator.client.TimeoutError`` after `timeout` seconds; the execution goes on and a
        new call can keep waiting.
        """
        model = execution_model(output_type)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Execution[Any] | None = None
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(execution_id, timeout, last)
            if self._long_poll is not False:
                hold = min(remaining, MAX_LONG_POLL)
                try:
                    answer = await self._client.request(
                        "GET",
                        f"/v1/runs/{execution_id}/wait",
                        params={"timeout": f"{hold:.3f}"},
                        timeout=self._client.config.timeout + hold,
                    )
                except NotFoundError:
                    # Either the run is missing (get() raises the same error) or the route is.
                    last = await self.get(execution_id, output_type=output_type)
                    self._long_poll = False
                    if last.status.terminal:
                        return last
                    continue
                self._long_poll = True
                last = model.model_validate(answer.json())
                if last.status.terminal:
                    return last
                continue
            last = await self.get(execution_id, output_type=output_type)
            if last.status.terminal:
                return last
            await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))

    async def wait_all(
        self,
        execution_ids: Sequence[str],
        *,
        interval: float = 1.0,
        timeout: float = 300.0,
        output_type: type[BaseModel] | None = None,
        concurrency: int = 50,
    ) -> builtins.list[Execution[Any]]:
        """Wait for every execution (in the given order); TimeoutError if any is still running."""
        gate = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        async def one(execution_id: str) -> Execution[Any]:
            async with gate:
                left = max(0.001, deadline - loop.time())
                return await self.wait_for_completion(
                    execution_id, interval=interval, timeout=left, output_type=output_type
                )

        return list(await asyncio.gather(*(one(i) for i in execution_ids)))

    async def deliveries(self, execution_id: str) -> dict[str, Any]:
        """Where this execution's webhooks went: per endpoint and event, the delivery or why none."""
        answer = await self._client.request("GET", f"/v1/runs/{execution_id}/deliveries")
        result: dict[str, Any] = answer.json()
        return result

    async def events(
        self, execution_id: str, *, output_type: type[BaseModel] | None = None
    ) -> builtins.list[RunEvent[Any]]:
        """The execution's transition events so far, in order."""
        answer = await self._client.request("GET", f"/v1/runs/{execution_id}/events")
        model = event_model(output_type)
        return [model.model_validate(e) for e in answer.json()["data"]]

    async def stream(
        self, execution_id: str, *, after: int = 0, output_type: type[BaseModel] | None = None
    ) -> AsyncIterator[RunEvent[Any]]:
        """Yield the execution's events live (SSE) until the terminal one, resuming after drops."""
        model = event_model(output_type)
        last = after
        failures = 0
        while True:
            parser = SSEParser()
            try:
                async for line in self._client.lines(
                    f"/v1/runs/{execution_id}/events",
                    headers={"Accept": "text/event-stream", "Last-Event-ID": str(last)},
                ):
                    event = parser.feed(line)
                    if event is None:
                        continue
                    item = model.model_validate(json.loads(event["data"]))
                    if item.sequence <= last:
                        continue
                    last = item.sequence
                    failures = 0
                    yield item
                    if item.type in events.TERMINAL_EVENTS:
                        return
            except APIConnectionError:
                failures += 1
                if failures > MAX_STREAM_FAILURES:
                    raise
            else:
                # A clean end without the terminal event: either we resumed after it already, or the
                # server went away (a restart, a proxy) and we resume after `last`.
                current = await self.get(execution_id)
                if current.status.terminal and current.sequence <= last:
                    return
            await asyncio.sleep(backoff(min(failures, 4)))
