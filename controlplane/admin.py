"""The controlplane's admin HTTP endpoint (``--admin-address``): ``/metrics`` and ``/ready``.

Owns a deliberately tiny HTTP/1.1 responder on asyncio streams: one GET per connection, answered
and closed. ``/metrics`` is the Prometheus exposition of the ledger's registry (connected
streams, pushes, ACKs, NACKs, nodes NACKing); ``/ready`` answers 200 once a config is serving,
503 before. Anything else is 404. Requests are bounded (8 KiB head, 10 s to send it).

Must not depend on: grpc, the config sources (it is handed a registry and a readiness check).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MAX_HEAD = 8192
HEAD_TIMEOUT = 10.0


class AdminServer:
    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
        self._registry = registry
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listens; returns the bound port (``port`` 0 picks a free one)."""
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, ctype, body = self._answer(method, path)
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/ready":
            if self._ready():
                return "200 OK", "text/plain", b"ready\n"
            return "503 Service Unavailable", "text/plain", b"no config serving yet\n"
        return "404 Not Found", "text/plain", b"/metrics or /ready\n"
