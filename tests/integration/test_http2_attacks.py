"""HTTP/2 attacks of recent years, each sent by a raw client and survived by the proxy.

Rapid reset (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316), SETTINGS flood, PING
flood: the connection is closed with GOAWAY and the right error code, and the next client
is still served.
"""

from __future__ import annotations

from h2.errors import ErrorCodes
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, SettingsFrame

from .grpc_upstream import grpc_server, stubs
from .h2_client import RawH2
from .harness import Proxy, running_proxy
from .test_grpc_proxy import grpc_doc


async def _still_serves(proxy: Proxy) -> None:
    async with stubs(proxy.port("grpc")) as s:
        assert await s.unary(b"alive") == b"alive"


async def test_rapid_reset_gets_enhance_your_calm() -> None:
    async with grpc_server() as (port, _echo), running_proxy(grpc_doc(port)) as proxy:
        client = await RawH2.open(proxy.port("grpc"))
        for _ in range(400):  # bounded: twice the per-interval limit
            sid = client.request("/test.Echo/Slow", end=False, extra=[("content-type", "application/grpc")])
            client.h2.reset_stream(sid, ErrorCodes.CANCEL)
        await client.flush()
        await client.read_until(lambda _: client.goaway() is not None)
        goaway = client.goaway()
        assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert proxy.http_stats("grpc").http2_flood == 1
        await client.close()
        await _still_serves(proxy)


async def test_settings_flood_gets_enhance_your_calm() -> None:
    async with grpc_server() as (port, _echo), running_proxy(grpc_doc(port)) as proxy:
        client = await RawH2.open(proxy.port("grpc"))
        await client.write_raw(b"".join(SettingsFrame(0).serialize() for _ in range(500)))
        await client.read_until(lambda _: client.goaway() is not None or client.closed)
        goaway = client.goaway()
        assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        await client.close()
        await _still_serves(proxy)


async def test_ping_flood_gets_enhance_your_calm() -> None:
    async with grpc_server() as (port, _echo), running_proxy(grpc_doc(port)) as proxy:
        client = await RawH2.open(proxy.port("grpc"))
        await client.write_raw(
            b"".join(PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(500))
        )
        await client.read_until(lambda _: client.goaway() is not None or client.closed)
        goaway = client.goaway()
        assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        await client.close()
        await _still_serves(proxy)


async def test_continuation_flood_closes_the_connection() -> None:
    async with grpc_server() as (port, _echo), running_proxy(grpc_doc(port)) as proxy:
        client = await RawH2.open(proxy.port("grpc"))
        headers = HeadersFrame(1)
        headers.data = client.h2.encoder.encode(
            [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"http")]
        )
        frames = [headers.serialize()]
        for _ in range(200):  # never END_HEADERS; bounded here, refused by the proxy far earlier
            cont = ContinuationFrame(1)
            cont.data = client.h2.encoder.encode([(b"x-filler", b"a" * 1000)])
            frames.append(cont.serialize())
        try:
            await client.write_raw(b"".join(frames))
        except ConnectionError:
            pass  # the proxy may close before reading all of it
        await client.read_until(lambda _: client.goaway() is not None or client.closed)
        goaway = client.goaway()
        assert goaway is not None and goaway.error_code in (
            ErrorCodes.PROTOCOL_ERROR,
            ErrorCodes.ENHANCE_YOUR_CALM,
        )
        assert proxy.http_stats("grpc").http2_rx_messaging_error == 1
        await client.close()
        await _still_serves(proxy)


async def test_oversized_header_block_is_refused() -> None:
    async with grpc_server() as (port, _echo), running_proxy(grpc_doc(port)) as proxy:
        client = await RawH2.open(proxy.port("grpc"))
        client.request("/test.Echo/Unary", extra=[("x-big", "b" * 70_000)])
        await client.flush()
        await client.read_until(lambda _: client.goaway() is not None or client.closed)
        goaway = client.goaway()
        assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert proxy.http_stats("grpc").http2_header_overflow == 1
        await client.close()
        await _still_serves(proxy)
