"""AsyncClient: the SDK over one pooled aiohttp session, with retries and typed errors."""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from orchestrator.client._base import Config, backoff, headers_for, make_config, should_retry, to_error
from orchestrator.client.errors import APIConnectionError, APITimeoutError


@dataclass
class Answer:
    """A successful HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return jsonlib.loads(self.body) if self.body else None


class AsyncClient:
    """The webhook-orchestrator API: ``client.flows``, ``client.runs``, ``client.webhooks``."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 2,
        http_client: aiohttp.ClientSession | None = None,
    ) -> None:
        from orchestrator.client.flows import AsyncFlows
        from orchestrator.client.runs import AsyncRuns
        from orchestrator.client.webhooks import AsyncWebhooks

        self.config: Config = make_config(base_url, api_key, timeout, max_retries)
        self._session = http_client
        self._owns_session = http_client is None
        self.flows = AsyncFlows(self)
        self.runs = AsyncRuns(self)
        self.webhooks = AsyncWebhooks(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool (if this client made it)."""
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
            self._owns_session = True
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        retryable: bool = True,
        timeout: float | None = None,
    ) -> Answer:
        """Send one API call, retrying what is safe to retry; raise typed errors."""
        url = self.config.base_url + path
        attempt = 0
        while True:
            status: int | None = None
            retry_after: str | None = None
            try:
                async with self._get_session().request(
                    method,
                    url,
                    params=params,
                    json=json,
                    headers=headers_for(self.config, headers),
                    timeout=aiohttp.ClientTimeout(total=timeout or self.config.timeout),
                ) as resp:
                    body = await resp.read()
                    status = resp.status
                    answer_headers = {k.lower(): v for k, v in resp.headers.items()}
                    if status < 400:
                        return Answer(status, answer_headers, body)
                    retry_after = answer_headers.get("retry-after")
                    error: Exception = to_error(status, body, answer_headers)
            except TimeoutError:
                error = APITimeoutError(
                    f"{method} {path}: no answer within {timeout or self.config.timeout:g} s"
                )
            except aiohttp.ClientError as exc:
                error = APIConnectionError(f"{method} {path}: {exc}")
            if not should_retry(
                status=status, retryable=retryable, attempt=attempt, max_retries=self.config.max_retries
            ):
                raise error
            await asyncio.sleep(backoff(attempt, retry_after))
            attempt += 1

    async def lines(
        self, path: str, *, headers: dict[str, str], params: dict[str, str] | None = None
    ) -> AsyncIterator[str]:
        """Stream a response's lines (for SSE); raises typed errors for an error answer."""
        try:
            async with self._get_session().get(
                self.config.base_url + path,
                params=params,
                headers=headers_for(self.config, headers),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.timeout),
            ) as resp:
                if resp.status >= 400:
                    raise to_error(
                        resp.status, await resp.read(), {k.lower(): v for k, v in resp.headers.items()}
                    )
                async for raw in resp.content:
                    yield raw.decode("utf-8").rstrip("\r\n")
        except aiohttp.ClientError as exc:
            raise APIConnectionError(f"GET {path}: {exc}") from exc
