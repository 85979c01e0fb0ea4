"""A TCP relay that delays one direction: a replication link whose replica runs `delay` seconds behind.

Replicas connect to the relay as if it were the primary. What the primary sends reaches them
`delay` seconds later (in order); what they send back (acks) goes through at once. When the
primary dies, whatever is still on its way is dropped, as on a host that died with it: this is
the window asynchronous replication leaves open.
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.redis_server import free_port


class DelayRelay:
    """Listen on a free loopback port; relay every connection to `target` (set before start)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.port = free_port()
        self.target = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, target: int) -> None:
        """Relay to 127.0.0.1:`target`."""
        self.target = target
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, upstream_writer}
        loop = asyncio.get_running_loop()
        alive = True

        def deliver(chunk: bytes) -> None:
            if alive and not client_writer.is_closing():
                client_writer.write(chunk)

        async def down() -> None:  # primary -> replica, late
            nonlocal alive
            try:
                while chunk := await upstream_reader.read(65536):
                    loop.call_later(self.delay, deliver, chunk)
            except OSError:
                pass
            finally:
                alive = False  # the primary is gone: what was still on its way is lost with it
                client_writer.close()

        async def up() -> None:  # replica -> primary, at once
            try:
                while chunk := await client_reader.read(65536):
                    upstream_writer.write(chunk)
            except OSError:
                pass
            finally:
                upstream_writer.close()

        await asyncio.gather(down(), up())
        for writer in (client_writer, upstream_writer):
            writer.close()
            self._writers.discard(writer)

    async def stop(self) -> None:
        """Stop listening and close every relayed connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
