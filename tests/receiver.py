"""A real HTTP receiver on loopback that records deliveries and answers from a script."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Answer = int | tuple[int, dict[str, str]] | Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each request with the next item of `script` (then `default`)."""

    script: list[Answer] = field(default_factory=list)
    default: Answer = 200
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded({k.lower(): v for k, v in request.headers.items()}, body, time.monotonic())
        )
        answer = self.script.pop(0) if self.script else self.default
        if callable(answer):
            return await answer(request)
        if isinstance(answer, tuple):
            status, headers = answer
            return web.Response(status=status, headers=headers, text="scripted")
        return web.Response(status=answer, text=f"answer {answer}")

    async def start(self, port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> Receiver:
        """Listen on loopback (`port`, or a free one); a stopped receiver can start again on its port.

        With `ssl_context` it serves HTTPS (its url then names ``localhost``, the certificate's name).
        """
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"https://localhost:{port}/hook" if ssl_context else f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def ids(self) -> list[str]:
        return [r.id for r in self.requests]

    def types(self) -> list[str]:
        return [r.json["type"] for r in self.requests]


async def hang(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3600)
    return web.Response(status=200)


@dataclass
class RawRequest:
    """One request exactly as it came over the socket: its request target, headers and body."""

    target: bytes
    headers: dict[str, str]
    body: bytes


@dataclass
class RawReceiver:
    """A bare asyncio HTTP/1.1 server that records the raw request target (no framework parsing it)."""

    requests: list[RawRequest] = field(default_factory=list)
    url: str = ""
    status: int = 200
    _server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *header_lines = head.decode("latin-1").split("\r\n")
            _method, target, _version = line.split(" ")
            headers = {}
            for h in header_lines:
                if h:
                    name, _, value = h.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(RawRequest(target.encode("latin-1"), headers, body))
            writer.write(
                f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
        finally:
            writer.close()

    async def start(self) -> RawReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
