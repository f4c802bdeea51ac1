"""HTTP/1.1 connection timeouts (issue 12 findings 5 and 12): slowloris heads, a request that
never completes its head, the maximum connection duration, and a stream-idle 408 closing.

Each is kept by the listener's sweep (about once a second), so the waits below are bounded
polls (``eventually``, ``read_until_close`` with a limit), never a sleep standing for an event.
"""

from __future__ import annotations

import asyncio
import time

from . import wire
from .harness import eventually, proxy_to
from .test_bad_input import open_raw, parse_responses, read_until_close
from .upstreams import aiohttp_upstream, counting_upstream

HOST = "Host: test"


async def _slowloris(port: int, limit: float, pace: float = 0.1) -> tuple[bytes, str, float]:
    """Send a head one byte per ``pace`` seconds (a slowloris); stop when the proxy answers or
    after ``limit`` seconds; returns what came back, how it ended, and the seconds it took."""
    loop = asyncio.get_running_loop()
    sock = await open_raw(port)
    start = time.monotonic()
    head = b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 10_000
    try:
        for byte in head:
            if time.monotonic() - start > limit:
                break
            try:
                await loop.sock_sendall(sock, bytes([byte]))
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), pace)
            except TimeoutError:
                continue
            except ConnectionError:
                return b"", "reset", time.monotonic() - start
            rest, ending = await read_until_close(sock, quiet=2.0)
            return data + rest, ending if data else "eof", time.monotonic() - start
        return b"", "quiet", time.monotonic() - start
    finally:
        sock.close()


async def test_slowloris_head_gets_408_and_close() -> None:
    async with counting_upstream() as (up, heads), proxy_to(up, request_headers_timeout="0.5s") as proxy:
        data, ending, took = await _slowloris(proxy.port(), limit=5.0)
        assert data.startswith(b"HTTP/1.1 408 "), (data[:200], ending, took)
        [resp] = await parse_responses(data)
        assert resp.get("connection") == "close"
        assert ending == "eof"
        assert heads == []
        assert proxy.http_stats().downstream_rq_header_timeout == 1
        print(f"slowloris answered 408 after {took:.2f}s (request_headers_timeout 0.5 s)")
        [after] = await wire.exchange(proxy.port(), wire.request("GET", "/after"))
        assert after.status == 200


async def test_request_timeout_covers_an_incomplete_head() -> None:
    async with counting_upstream() as (up, heads), proxy_to(up, request_timeout="0.5s") as proxy:
        data, ending, _ = await _slowloris(proxy.port(), limit=5.0)
        assert data.startswith(b"HTTP/1.1 408 "), (data[:200], ending)
        assert ending == "eof" and heads == []
        assert proxy.http_stats().downstream_rq_timeout == 1


async def test_head_timeout_does_not_touch_a_complete_request_or_an_idle_connection() -> None:
    """After its head, a request is the exchange's; between requests the connection is only
    subject to idle_timeout (request_headers_timeout runs from a request's first byte)."""
    async with aiohttp_upstream() as up, proxy_to(up, request_headers_timeout="0.3s") as proxy:
        stats = proxy.http_stats()
        async with wire.connect(proxy.port()) as (reader, writer):
            writer.write(wire.request("GET", "/delay/1"))  # a response slower than the limit
            assert (await asyncio.wait_for(wire.read_response(reader), 5)).status == 200
            # An idle keep-alive connection longer than the limit, then another request on it.
            # Time itself is the input here: idle across at least one sweep past the limit.
            await asyncio.sleep(1.5)  # waiting for nothing to happen: time is the only signal
            writer.write(wire.request("GET", "/echo"))
            assert (await asyncio.wait_for(wire.read_response(reader), 5)).status == 200
        assert stats.downstream_rq_header_timeout == 0


async def test_max_connection_duration_closes_after_the_next_response() -> None:
    options = {"common_http_protocol_options": {"max_connection_duration": "0.5s"}}
    async with counting_upstream() as (up, _), proxy_to(up, **options) as proxy:
        stats = proxy.http_stats()
        async with wire.connect(proxy.port()) as (reader, writer):
            writer.write(wire.request("GET", "/first"))
            first = await asyncio.wait_for(wire.read_response(reader), 5)
            assert first.status == 200 and first.get("connection") is None
            # Not idle for good: a request in progress once the duration passes.
            writer.write(b"GET /second HTTP/1.1\r\nHost: test\r\n")
            await eventually(lambda: stats.downstream_cx_max_duration_reached == 1, what="duration reached")
            writer.write(b"\r\n")
            second = await asyncio.wait_for(wire.read_response(reader), 5)
            assert second.status == 200
            assert second.get("connection") == "close"
            assert await asyncio.wait_for(wire.read_eof(reader), 5) == b""


async def test_max_connection_duration_closes_an_idle_connection() -> None:
    options = {"common_http_protocol_options": {"max_connection_duration": "0.3s"}}
    async with counting_upstream() as (up, _), proxy_to(up, **options) as proxy:
        async with wire.connect(proxy.port()) as (reader, writer):
            writer.write(wire.request("GET", "/first"))
            assert (await asyncio.wait_for(wire.read_response(reader), 5)).status == 200
            assert await asyncio.wait_for(wire.read_eof(reader), 5) == b""
        assert proxy.http_stats().downstream_cx_max_duration_reached == 1


async def test_stream_idle_408_closes_the_connection() -> None:
    """A request whose body stalls gets 408 from stream_idle_timeout, and the connection
    closes: bytes the client sends later are never parsed as a new request."""
    async with (
        aiohttp_upstream() as up,
        proxy_to(up, stream_idle_timeout="0.3s") as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        writer.write(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc")
        resp = await asyncio.wait_for(wire.read_response(reader), 5)
        assert resp.status == 408
        assert resp.get("connection") == "close"
        assert await asyncio.wait_for(wire.read_eof(reader), 5) == b""
