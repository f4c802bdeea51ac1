"""A real grpc.aio service for the HTTP/2 tests: generic handlers, bytes in and out (no protos).

Owns the ``test.Echo`` service: ``Unary`` (echo; metadata "x-status" makes it fail with that
code and trailing metadata), ``Slow`` (sleeps until cancelled, recording the cancellation),
``ServerStream`` (n replies), ``ClientStream`` (counts), ``Bidi`` (echoes each message), and
a client channel helper whose stubs use the same bytes (de)serializers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

SERVICE = "test.Echo"


class Echo:
    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.slow_started = asyncio.Event()  # a Slow call reached the server
        self.calls = 0

    async def unary(self, request: bytes, context: aio.ServicerContext) -> bytes:
        self.calls += 1
        metadata = dict(context.invocation_metadata() or ())
        code = metadata.get("x-status")
        if code:
            context.set_trailing_metadata((("x-detail", "trailing-" + code),))
            await context.abort(grpc.StatusCode[code], "failed on purpose: " + code)
        context.set_trailing_metadata((("x-echo-len", str(len(request))),))
        return request

    async def slow(self, request: bytes, context: aio.ServicerContext) -> bytes:
        self.slow_started.set()
        try:
            await asyncio.Event().wait()  # hangs until the call is cancelled
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return request

    async def server_stream(self, request: bytes, context: aio.ServicerContext) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield b"%d" % i

    async def client_stream(self, requests: AsyncIterator[bytes], context: aio.ServicerContext) -> bytes:
        total = count = 0
        async for message in requests:
            count += 1
            total += len(message)
        return b"%d/%d" % (count, total)

    async def bidi(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message

    def handler(self) -> grpc.GenericRpcHandler:
        same: dict[str, Any] = {"request_deserializer": None, "response_serializer": None}
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary, **same),
                "Slow": grpc.unary_unary_rpc_method_handler(self.slow, **same),
                "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream, **same),
                "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream, **same),
                "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi, **same),
            },
        )


@contextlib.asynccontextmanager
async def grpc_server() -> AsyncIterator[tuple[int, Echo]]:
    echo = Echo()
    server = aio.server()
    server.add_generic_rpc_handlers((echo.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, echo
    finally:
        await server.stop(grace=None)


class Stubs:
    def __init__(self, channel: aio.Channel) -> None:
        self.unary = channel.unary_unary(f"/{SERVICE}/Unary")
        self.slow = channel.unary_unary(f"/{SERVICE}/Slow")
        self.missing = channel.unary_unary(f"/{SERVICE}/Missing")
        self.server_stream = channel.unary_stream(f"/{SERVICE}/ServerStream")
        self.client_stream = channel.stream_unary(f"/{SERVICE}/ClientStream")
        self.bidi = channel.stream_stream(f"/{SERVICE}/Bidi")


@contextlib.asynccontextmanager
async def stubs(port: int) -> AsyncIterator[Stubs]:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Stubs(channel)
