"""Real upstream services for integration tests, on loopback port 0.

Owns the applications the proxy is tested against: an aiohttp service (an independent HTTP
stack) with echo, streaming, upload, status, delay and WebSocket endpoints (also runnable on
a thread of its own, for synchronous tests), and a raw-socket server for upstreams that
misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from aiohttp import WSMsgType, web


def make_app(name: str) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return web.json_response(
            {
                "server": name,
                "peer_port": peer[1] if peer else None,  # which pooled connection carried it
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
        return web.Response(
            status=int(request.match_info["code"]), text="status\n", headers={"x-served-by": name}
        )

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
async def aiohttp_upstream(name: str = "up", tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """The app on loopback port 0 (over TLS with ``tls``, a server context); yields the port."""
    runner = web.AppRunner(make_app(name), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def threaded_upstream(name: str = "up", tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """``aiohttp_upstream`` on its own loop in a thread, for synchronous tests (and for
    module-scoped fixtures shared by tests on different loops)."""
    loop = asyncio.new_event_loop()
    ready: concurrent.futures.Future[int] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with aiohttp_upstream(name, tls) as port:
                ready.set_result(port)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ready.result(timeout=10)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=70)
        loop.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_upstream(handler: Handler) -> AsyncIterator[int]:
    """A server whose every connection runs ``handler``: for upstreams that break the rules."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """For raw upstreams: one request's head and its content-length body (no chunked support)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def raw_responder(respond: Callable[[bytes, bytes], bytes], *, close: bool = False) -> Handler:
    """A raw upstream: ``respond(head, body)`` gives the exact bytes of each answer; the
    connection is kept alive, or closed after each answer when ``close``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            for _ in range(1 if close else 10_000):
                head, body = await read_request(reader)
                writer.write(respond(head, body))
                await writer.drain()
        writer.close()

    return handler


def body_json(data: bytes) -> dict[str, object]:
    return json.loads(data)  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def counting_upstream() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A keep-alive HTTP/1.1 upstream answering ``200 ok``; yields its port and the request
    heads that reached it, in arrival order (what the application would have seen)."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ValueError):
            for _ in range(10_000):
                try:
                    head, _body = await read_request(reader)
                except asyncio.LimitOverrunError:
                    heads.append(b"<a head over the reader limit>")
                    break
                heads.append(head)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
                await writer.drain()
        writer.close()

    async with raw_upstream(serve) as port:
        yield port, heads


@contextlib.asynccontextmanager
async def tcp_echo_upstream(greeting: bytes = b"", farewell: bytes = b"") -> AsyncIterator[int]:
    """An opaque-TCP upstream: sends ``greeting``, echoes every byte until the client's EOF, then
    sends ``farewell`` and closes (so a half-closed client still has something to receive)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(greeting)
            while data := await reader.read(1 << 16):  # bounded by the client's EOF
                writer.write(data)
                await writer.drain()
            writer.write(farewell)
            await writer.drain()
        writer.close()

    async with raw_upstream(serve) as port:
        yield port
