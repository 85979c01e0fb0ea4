"""A webhook receiver: a Starlette app that verifies deliveries and drops duplicates and stale states.

    python examples/webhook_receiver.py --demo     # register itself, run the invoice flow, show deliveries
    WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py --port 8001   # just receive

With ``--demo`` it subscribes its own URL through the API (ORCH_BASE_URL / ORCH_API_KEY), starts
an invoice extraction, prints each delivery as it arrives, and exits (removing its endpoint)
after the execution's terminal event.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from webhooks import MemoryStore, Receiver, WebhookVerificationError

TERMINAL = {"execution.success", "execution.failed", "execution.cancelled"}
INPUT = json.loads(Path(__file__).with_name("invoice.json").read_text())


def create_app(secret: str, done: asyncio.Event | None = None) -> Starlette:
    receiver = Receiver(secret, store=MemoryStore())

    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            result = await receiver.receive(body, request.headers)
        except WebhookVerificationError as exc:
            print(f"refused: {exc}", flush=True)
            return JSONResponse({"error": "invalid signature"}, status_code=400)
        event = result.event
        status = "accepted" if result.accepted else f"dropped ({result.reason})"
        data = event.data if isinstance(event.data, dict) else {}
        print(
            f"{event.type:<22} webhook-id={event.id} verified {status} "
            f"steps={data.get('metrics', {}).get('stepsRun')}",
            flush=True,
        )
        if result.accepted and event.type in TERMINAL and done is not None:
            print("output:", json.dumps(data.get("output")), flush=True)
            done.set()
        return JSONResponse({"ok": True})  # answer 2xx fast; do slow work elsewhere

    return Starlette(routes=[Route("/webhooks", webhook, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def demo(port: int, seconds: float) -> None:
    from orchestrator.client import AsyncClient

    done = asyncio.Event()
    async with AsyncClient() as client:
        endpoint = await client.webhooks.create(
            f"http://127.0.0.1:{port}/webhooks", description="demo receiver"
        )
        assert endpoint.secret is not None
        server = uvicorn.Server(
            uvicorn.Config(create_app(endpoint.secret, done), port=port, log_level="warning")
        )
        serving = asyncio.ensure_future(server.serve())
        try:
            execution = await client.flows.run("invoice-extraction", INPUT)
            print(f"started {execution.id}; deliveries as they arrive:", flush=True)
            await asyncio.wait_for(done.wait(), seconds)
            await asyncio.sleep(
                0.5
            )  # deliveries are not ordered: let late, older states arrive (and be dropped)
        finally:
            server.should_exit = True
            await serving
            with contextlib.suppress(Exception):
                await client.webhooks.delete(endpoint.id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    port = args.port or free_port()
    if args.demo:
        asyncio.run(demo(port, args.timeout))
        return
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        parser.error("set WEBHOOK_SECRET (the endpoint's whsec_... secret) or use --demo")
    uvicorn.run(create_app(secret), port=port)


if __name__ == "__main__":
    main()
