"""Client: the synchronous twin of AsyncClient, running it on a private event loop thread.

Every resource method has the same name and signature as its async twin (a test checks it);
each is one line that hands the async call to the loop and waits for its result.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar

import aiohttp
from pydantic import BaseModel

from orchestrator.client._async import AsyncClient
from orchestrator.client.pagination import AsyncPaginator
from orchestrator.models import Execution, ExecutionStatus, FlowInfo, RunEvent
from webhooks.models import AlertOut, DeliveryOut, DeliveryStatus, EndpointOut

T = TypeVar("T")


class _Loop:
    """An event loop in a daemon thread, owned by one Client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="orchestrator-client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        iterator = agen.__aiter__()

        async def step() -> tuple[bool, T | None]:
            try:
                return True, await iterator.__anext__()
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self.run(step())
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            # Leaving the loop early (break) must close the async side too, e.g. an SSE connection.
            close = getattr(iterator, "aclose", None)
            if close is not None and self.loop.is_running():
                self.run(close())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class Paginator(Generic[T]):
    """``for item in client.runs.list(...)``: pages are fetched as you iterate."""

    def __init__(self, loop: _Loop, inner: AsyncPaginator[T]) -> None:
        self._loop = loop
        self._inner = inner

    def __iter__(self) -> Iterator[T]:
        return self._loop.iterate(self._inner.__aiter__())

    def first_page(self) -> tuple[builtins.list[T], str | None]:
        """Just the first page and the cursor of the next."""
        return self._loop.run(self._inner.first_page())

    def to_list(self, limit: int | None = None) -> builtins.list[T]:
        """Collect items (at most `limit`) into a list."""
        return self._loop.run(self._inner.to_list(limit))


class Flows:
    """Flows resource."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> builtins.list[FlowInfo]:
        """Every flow the server runs."""
        return self._c._run(self._c._async.flows.list())

    def get(self, flow_id: str) -> FlowInfo:
        """One flow with its input and output JSON schemas."""
        return self._c._run(self._c._async.flows.get(flow_id))

    def run(
        self,
        flow_id: str,
        input: Any,
        *,
        metadata: dict[str, Any] | None = None,
        webhook: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        wait: float | None = None,
        output_type: type[BaseModel] | None = None,
    ) -> Execution[Any]:
        """Start an execution (see AsyncFlows.run)."""
        options: dict[str, Any] = {
            "metadata": metadata,
            "webhook": webhook,
            "idempotency_key": idempotency_key,
            "wait": wait,
            "output_type": output_type,
        }
        return self._c._run(self._c._async.flows.run(flow_id, input, **options))

    def run_batch(
        self, flow_id: str, items: builtins.list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> builtins.list[Execution[Any]]:
        """Start up to 1000 executions at once."""
        return self._c._run(self._c._async.flows.run_batch(flow_id, items, idempotency_key=idempotency_key))


class Runs:
    """Runs resource."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def get(self, execution_id: str, *, output_type: type[BaseModel] | None = None) -> Execution[Any]:
        """The execution as it stands."""
        return self._c._run(self._c._async.runs.get(execution_id, output_type=output_type))

    def list(
        self,
        *,
        status: ExecutionStatus | str | None = None,
        flow_id: str | None = None,
        page_size: int = 100,
        output_type: type[BaseModel] | None = None,
    ) -> Paginator[Execution[Any]]:
        """Every execution, newest first."""
        inner = self._c._async.runs.list(
            status=status, flow_id=flow_id, page_size=page_size, output_type=output_type
        )
        return Paginator(self._c._loop, inner)

    def cancel(self, execution_id: str) -> Execution[Any]:
        """Cancel a queued or running execution."""
        return self._c._run(self._c._async.runs.cancel(execution_id))

    def wait_for_completion(
        self,
        execution_id: str,
        *,
        interval: float = 1.0,
        timeout: float = 300.0,
        output_type: type[BaseModel] | None = None,
    ) -> Execution[Any]:
        """Return the execution once it ended (long-poll); TimeoutError after `timeout`."""
        return self._c._run(
            self._c._async.runs.wait_for_completion(
                execution_id, interval=interval, timeout=timeout, output_type=output_type
            )
        )

    def wait_all(
        self,
        execution_ids: Sequence[str],
        *,
        interval: float = 1.0,
        timeout: float = 300.0,
        output_type: type[BaseModel] | None = None,
        concurrency: int = 50,
    ) -> builtins.list[Execution[Any]]:
        """Wait for every execution, in the given order."""
        return self._c._run(
            self._c._async.runs.wait_all(
                execution_ids,
                interval=interval,
                timeout=timeout,
                output_type=output_type,
                concurrency=concurrency,
            )
        )

    def deliveries(self, execution_id: str) -> dict[str, Any]:
        """Where this execution's webhooks went, and why not."""
        return self._c._run(self._c._async.runs.deliveries(execution_id))

    def events(
        self, execution_id: str, *, output_type: type[BaseModel] | None = None
    ) -> builtins.list[RunEvent[Any]]:
        """The execution's transition events so far."""
        return self._c._run(self._c._async.runs.events(execution_id, output_type=output_type))

    def stream(
        self, execution_id: str, *, after: int = 0, output_type: type[BaseModel] | None = None
    ) -> Iterator[RunEvent[Any]]:
        """Yield events live until the terminal one, resuming after dropped connections."""
        return self._c._loop.iterate(
            self._c._async.runs.stream(execution_id, after=after, output_type=output_type)
        )


class Webhooks:
    """Webhook endpoints resource."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(
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
        """Subscribe `url`; the result carries its secret (shown only now)."""
        return self._c._run(
            self._c._async.webhooks.create(
                url,
                events=events,
                flow_ids=flow_ids,
                description=description,
                secret=secret,
                headers=headers,
                ordering=ordering,
            )
        )

    def list(self, *, page_size: int = 100) -> Paginator[EndpointOut]:
        """Every endpoint (no secrets)."""
        return Paginator(self._c._loop, self._c._async.webhooks.list(page_size=page_size))

    def get(self, endpoint_id: str) -> EndpointOut:
        """One endpoint."""
        return self._c._run(self._c._async.webhooks.get(endpoint_id))

    def update(
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
        """Change the given fields only."""
        return self._c._run(
            self._c._async.webhooks.update(
                endpoint_id,
                url=url,
                events=events,
                flow_ids=flow_ids,
                description=description,
                enabled=enabled,
                headers=headers,
                ordering=ordering,
            )
        )

    def delete(self, endpoint_id: str) -> None:
        """Remove the endpoint."""
        self._c._run(self._c._async.webhooks.delete(endpoint_id))

    def rotate_secret(self, endpoint_id: str) -> str:
        """A new secret; the old one signs beside it for 24 h."""
        return self._c._run(self._c._async.webhooks.rotate_secret(endpoint_id))

    def test(self, endpoint_id: str, *, event_type: str | None = None) -> str:
        """Send a ``webhook.test`` message (or `event_type`'s example); return its id."""
        return self._c._run(self._c._async.webhooks.test(endpoint_id, event_type=event_type))

    def events(self, endpoint_id: str, *, page_size: int = 100) -> Paginator[AlertOut]:
        """The endpoint's operational events, newest first."""
        inner = self._c._async.webhooks.events(endpoint_id, page_size=page_size)
        return Paginator(self._c._loop, inner)

    def deliveries(
        self, endpoint_id: str, *, status: DeliveryStatus | str | None = None, page_size: int = 100
    ) -> Paginator[DeliveryOut]:
        """Messages sent to the endpoint with every attempt."""
        inner = self._c._async.webhooks.deliveries(endpoint_id, status=status, page_size=page_size)
        return Paginator(self._c._loop, inner)

    def retry(self, endpoint_id: str, message_id: str) -> None:
        """Send one message again now (same webhook-id)."""
        self._c._run(self._c._async.webhooks.retry(endpoint_id, message_id))

    def recover(self, endpoint_id: str, since: datetime) -> int:
        """Send again every message that failed since `since`."""
        return self._c._run(self._c._async.webhooks.recover(endpoint_id, since))

    def default_secret(self) -> str:
        """The tenant's default secret."""
        return self._c._run(self._c._async.webhooks.default_secret())

    def rotate_default_secret(self) -> str:
        """A new default secret; every one rotated out within 24 h keeps signing beside it."""
        return self._c._run(self._c._async.webhooks.rotate_default_secret())


class Client:
    """The webhook-orchestrator API, synchronously: ``client.flows``, ``client.runs``, ``client.webhooks``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 2,
        http_client: aiohttp.ClientSession | None = None,
    ) -> None:
        self._async = AsyncClient(
            base_url, api_key, timeout=timeout, max_retries=max_retries, http_client=http_client
        )
        self.config = self._async.config
        self._loop = _Loop()
        self.flows = Flows(self)
        self.runs = Runs(self)
        self.webhooks = Webhooks(self)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and stop the client's loop thread."""
        if self._loop.loop.is_running():
            self._run(self._async.close())
            self._loop.close()
