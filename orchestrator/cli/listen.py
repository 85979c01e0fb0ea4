"""``orchestrator webhooks listen``: like ``stripe listen``, for a local dev server.

Registers a temporary endpoint pointing at a listener on this machine, prints every event as it
arrives (verified), forwards it unchanged (same body and signature headers) to ``--forward``, and
answers the dispatcher with the forward's status, so a failing local app sees real retries. The
endpoint is removed on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import aiohttp
import click
from aiohttp import web

from orchestrator.client import AsyncClient
from webhooks import WebhookVerificationError, verify

FORWARDED = ("content-type", "webhook-id", "webhook-timestamp", "webhook-signature")


INSECURE_WARNING = (
    "WARNING: --insecure: the forward's TLS certificate is not verified (anyone on the path can read"
    " and change what is forwarded); for a local development server only"
)


async def listen(
    *,
    base_url: str,
    api_key: str,
    forward: str | None,
    events: list[str] | None,
    max_events: int | None,
    insecure: bool = False,
) -> int:
    """Run the listener until Ctrl-C (or `max_events`); return how many events arrived.

    `insecure` skips the verification of the forward target's TLS certificate (a self-signed
    development server); it changes nothing else, the API connection included.
    """
    seen = 0
    done = asyncio.Event()
    secret = ""
    if insecure and forward:
        click.echo(INSECURE_WARNING, err=True)
    connector = aiohttp.TCPConnector(ssl=False) if insecure else None
    async with (
        AsyncClient(base_url, api_key=api_key) as client,
        aiohttp.ClientSession(connector=connector) as http,
    ):

        async def handle(request: web.Request) -> web.Response:
            nonlocal seen
            body = await request.read()
            try:
                event = verify(body, request.headers, secret)
                verified = "verified"
            except WebhookVerificationError as exc:
                click.echo(f"  unverified delivery refused: {exc}", err=True)
                return web.Response(status=400, text="signature does not verify")
            data = event.data if isinstance(event.data, dict) else {}
            line = f"{event.type:<22} {event.id}  {data.get('id', '')} {data.get('status', '')} [{verified}]"
            status = 200
            if forward:
                headers = {k: request.headers[k] for k in FORWARDED if k in request.headers}
                try:
                    async with http.post(
                        forward, data=body, headers=headers, timeout=aiohttp.ClientTimeout(10)
                    ) as r:
                        status = r.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status = 502
                    line += f"  -> forward failed: {exc}"
                else:
                    line += f"  -> {forward} {status}"
            click.echo(line)
            seen += 1
            if max_events is not None and seen >= max_events:
                done.set()
            return web.Response(status=status)

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        endpoint = await client.webhooks.create(
            f"http://127.0.0.1:{port}/", events=events, description="orchestrator webhooks listen"
        )
        secret = endpoint.secret or ""
        click.echo(f"Ready. Endpoint {endpoint.id} receives on port {port}; secret {secret}")
        if forward:
            click.echo(f"Forwarding to {forward} (same body and signature headers)")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        try:
            await done.wait()
        finally:
            with contextlib.suppress(Exception):
                await client.webhooks.delete(endpoint.id)
            await runner.cleanup()
            click.echo(f"Endpoint {endpoint.id} removed.")
    return seen
