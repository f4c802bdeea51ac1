"""Real upstream services for integration tests, on loopback port 0.

Owns the applications the proxy is tested against: an aiohttp service (an independent HTTP
stack) with echo, streaming, upload, status, delay and WebSocket endpoints, and a raw-socket
server for upstreams that misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import WSMsgType, web


def make_app(name: str) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "server": name,
                "method": request.method,
                "path": request.path_qs,
                "headers": [[k.lower(), v] for k, v in request.headers.items()],
                "body_len": len(body),
            },
            headers={"x-served-by": name},
        )

    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        total = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            total += len(chunk)
        return web.json_response({"bytes": total, "sha256": digest.hexdigest()})

    async def stream_bytes(request: web.Request) -> web.StreamResponse:
        total = int(request.match_info["n"])
        chunked = "chunked" in request.query
        resp = web.StreamResponse(headers={"x-served-by": name})
        if not chunked:
            resp.content_length = total
        await resp.prepare(request)
        block = b"x" * 65536
        sent = 0
        while sent < total:
            piece = block[: min(len(block), total - sent)]
            await resp.write(piece)
            sent += len(piece)
        await resp.write_eof()
        return resp

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status\n", headers={"x-served-by": name})

    async def delay(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["secs"]))
        return web.Response(text="late\n", headers={"x-served-by": name})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(f"{name}:{msg.data}")
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/echo{tail:.*}", echo)
    app.router.add_post("/upload", upload)
    app.router.add_get("/bytes/{n}", stream_bytes)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/delay/{secs}", delay)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@contextlib.asynccontextmanager
async def aiohttp_upstream(name: str = "up") -> AsyncIterator[int]:
    runner = web.AppRunner(make_app(name), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_upstream(handler: Handler) -> AsyncIterator[int]:
    """A server whose every connection runs ``handler``: for upstreams that break the rules."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def body_json(data: bytes) -> dict[str, object]:
    return json.loads(data)  # type: ignore[no-any-return]
