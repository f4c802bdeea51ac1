"""gRPC through one meshproxy: grpcio client → h2c listener (codec AUTO) → HTTP/2 cluster → grpc.aio.

Covers unary, the three streaming kinds (bidi with 10,000 messages), status codes with their
trailing metadata, deadlines, cancellation, local replies mapped to gRPC status, grpc-timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest

from .grpc_upstream import Echo, Stubs, grpc_server, stubs
from .h2_client import RawH2
from .harness import Proxy, bootstrap, cluster, http_listener, route, running_proxy

H2 = {"http2_protocol_options": {}}


def grpc_doc(port: int, **route_action: Any) -> dict[str, Any]:
    return bootstrap(
        [http_listener([route("/", "grpc", **route_action)], name="grpc")], [cluster("grpc", port, **H2)]
    )


@contextlib.asynccontextmanager
async def through_proxy(**route_action: Any) -> AsyncIterator[tuple[Stubs, Echo, Proxy]]:
    async with grpc_server() as (port, echo), running_proxy(grpc_doc(port, **route_action)) as proxy:
        channel = stubs(proxy.port("grpc"))
        async with channel as s:
            yield s, echo, proxy


async def test_unary_round_trip_with_trailing_metadata() -> None:
    async with through_proxy() as (s, _echo, proxy):
        call = s.unary(b"hello", metadata=(("x-custom", "1"),))
        assert await call == b"hello"
        assert await call.code() == grpc.StatusCode.OK
        assert ("x-echo-len", "5") in tuple(await call.trailing_metadata())
        stats = proxy.http_stats("grpc")
        assert stats.downstream_cx_http2_total == 1
        assert proxy.cluster_stats("grpc").upstream_cx_http2_total == 1


def _codes() -> Iterator[str]:
    yield from ("NOT_FOUND", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE")


@pytest.mark.parametrize("code", list(_codes()))
async def test_status_codes_and_trailers_are_preserved(code: str) -> None:
    async with through_proxy() as (s, _echo, _proxy):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.unary(b"x", metadata=(("x-status", code),))
        assert info.value.code() == grpc.StatusCode[code]
        assert info.value.details() == "failed on purpose: " + code
        assert ("x-detail", "trailing-" + code) in tuple(info.value.trailing_metadata())


async def test_server_streaming() -> None:
    async with through_proxy() as (s, _echo, _proxy):
        replies = [m async for m in s.server_stream(b"500")]
        assert replies == [b"%d" % i for i in range(500)]


async def test_client_streaming() -> None:
    async def messages() -> AsyncIterator[bytes]:
        for _ in range(300):
            yield b"x" * 1000

    async with through_proxy() as (s, _echo, _proxy):
        assert await s.client_stream(messages()) == b"300/300000"


async def test_bidi_streaming_ten_thousand_messages() -> None:
    n = 10_000
    async with through_proxy() as (s, _echo, _proxy):
        call = s.bidi()
        received = 0
        for i in range(n):
            await call.write(b"m%d" % i)
            if i % 100 == 99:  # keep both directions busy without a bound-less backlog
                for _ in range(100):
                    assert await call.read() == b"m%d" % received
                    received += 1
        await call.done_writing()
        while received < n:
            assert await call.read() == b"m%d" % received
            received += 1
        assert await call.code() == grpc.StatusCode.OK


async def test_many_concurrent_calls_share_one_upstream_connection() -> None:
    async with through_proxy() as (s, echo, proxy):
        replies = await asyncio.gather(*(s.unary(b"%d" % i) for i in range(50)))
        assert replies == [b"%d" % i for i in range(50)]
        assert echo.calls == 50
        assert proxy.cluster_stats("grpc").upstream_cx_http2_total == 1


async def test_deadline_exceeded_cancels_the_upstream_call() -> None:
    async with through_proxy() as (s, echo, _proxy):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.slow(b"x", timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(echo.cancelled.wait(), 5)
        # The proxy still serves the next call on the same connections.
        assert await s.unary(b"after") == b"after"


async def test_client_cancellation_reaches_the_server() -> None:
    async with through_proxy() as (s, echo, proxy):
        call = s.slow(b"x")
        # The call must reach the server before it is cancelled (the proxy admits it, and counts
        # it active, a moment before its upstream stream opens).
        await asyncio.wait_for(echo.slow_started.wait(), 5)
        call.cancel()
        await asyncio.wait_for(echo.cancelled.wait(), 5)
        assert proxy.http_stats("grpc").http2_rx_reset >= 1


async def test_unknown_method_is_unimplemented_from_the_server() -> None:
    async with through_proxy() as (s, _echo, _proxy):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.missing(b"x")
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_no_route_is_a_local_unimplemented_reply() -> None:
    async with grpc_server() as (port, _echo):
        doc = bootstrap(
            [http_listener([route("/other.Service/", "grpc")], name="grpc")], [cluster("grpc", port, **H2)]
        )
        async with running_proxy(doc) as proxy, stubs(proxy.port("grpc")) as s:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.unary(b"x")
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert proxy.http_stats("grpc").no_route == 1


async def test_unreachable_upstream_is_unavailable() -> None:
    from .harness import free_port

    doc = grpc_doc(free_port())
    async with running_proxy(doc) as proxy, stubs(proxy.port("grpc")) as s:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await s.unary(b"x")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "upstream connect error" in (info.value.details() or "")


async def test_grpc_timeout_is_honoured_by_the_proxy() -> None:
    # A raw client sends grpc-timeout and never gives up by itself. The route caps the header at
    # 200 ms (grpc_timeout_header_max) while the server's own deadline is 10 s, so the
    # DEADLINE_EXCEEDED below can only come from the proxy's timer.
    async with through_proxy(max_stream_duration={"grpc_timeout_header_max": "0.2s"}) as (_s, echo, proxy):
        client = await RawH2.open(proxy.port("grpc"))
        extra = [("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", "10S")]
        sid = client.request("/test.Echo/Slow", end=False, extra=extra)
        client.h2.send_data(sid, b"\x00\x00\x00\x00\x01x", end_stream=True)
        await client.flush()
        await client.read_until(lambda _: client.ended(sid))
        headers = client.headers_of(sid)
        assert headers[b"grpc-status"] == b"4"
        assert headers[b"grpc-message"] == b"upstream request timeout"
        await asyncio.wait_for(echo.cancelled.wait(), 5)
        assert proxy.http_stats("grpc").downstream_rq_timeout == 1
        await client.close()
