"""WebSocket (``Connection: upgrade``) relayed as a tunnel through the proxy.

Covers the upgrade handshake with an independent client (aiohttp), text and binary echo
(including frames larger than one socket read), a clean close handshake, and that both
connections of the tunnel are released afterwards (neither pooled nor left open), and that
the route timeout does not cut a tunnel that outlives it; an upgrade the upstream declines.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from . import wire
from .harness import bootstrap, cluster, eventually, http_listener, proxy_to, route, running_proxy
from .upstreams import aiohttp_upstream, raw_responder, raw_upstream


async def test_websocket_echo_and_close() -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: spans many reads in both directions
    async with aiohttp_upstream("ws-up") as up, proxy_to(up) as proxy:
        async with aiohttp.ClientSession() as session, session.ws_connect(proxy.url("/ws")) as ws:
            await ws.send_str("hello")
            assert await ws.receive_str(timeout=5) == "ws-up:hello"
            await ws.send_bytes(b"\x00\x01\xfe\xff")
            assert await ws.receive_bytes(timeout=5) == b"\x00\x01\xfe\xff"
            await ws.send_bytes(big)
            assert await ws.receive_bytes(timeout=5) == big
            for i in range(20):
                await ws.send_str(f"m{i}")
            assert [await ws.receive_str(timeout=5) for _ in range(20)] == [f"ws-up:m{i}" for i in range(20)]
            await ws.close()
            assert ws.closed
            assert ws.close_code == aiohttp.WSCloseCode.OK
        cluster = proxy.cluster_stats()
        await eventually(
            lambda: proxy.listener_stats().downstream_cx_active == 0 and cluster.upstream_cx_active == 0,
            what="both tunnel connections closed",
        )
        assert proxy.http_stats().downstream_rq_xx[1] == 1  # the 101 is accounted once


async def test_websocket_beside_plain_requests() -> None:
    async with aiohttp_upstream() as up, proxy_to(up) as proxy, aiohttp.ClientSession() as session:
        async with session.get(proxy.url("/echo/before")) as resp:
            assert resp.status == 200
        async with session.ws_connect(proxy.url("/ws")) as ws:
            await ws.send_str("x")
            assert await ws.receive_str(timeout=5) == "up:x"
        async with session.get(proxy.url("/echo/after")) as resp:
            assert (await resp.json())["path"] == "/echo/after"


async def test_websocket_outlives_the_route_timeout() -> None:
    # The route timeout bounds a request/response exchange; an upgraded connection is a
    # tunnel (Envoy: "timeouts ... are not supported for WebSocket routes"), so a 15 s
    # default must not cut every WebSocket at 15 s. Here the route timeout is 0.3 s and the
    # tunnel is used for about 1 s: the elapsed time is what is under test, not a sync.
    routes = [route("/", "backend", timeout="0.3s")]
    async with (
        aiohttp_upstream() as up,
        running_proxy(bootstrap([http_listener(routes)], [cluster("backend", up)])) as proxy,
    ):
        ticks = 0
        async with aiohttp.ClientSession() as session, session.ws_connect(proxy.url("/ws")) as ws:
            # A cut tunnel shows as a failed send or a CLOSED message where text was expected.
            with contextlib.suppress(aiohttp.ClientError, TypeError):
                for i in range(10):
                    await ws.send_str(f"tick{i}")
                    assert await ws.receive_str(timeout=5) == f"up:tick{i}"
                    ticks += 1
                    await asyncio.sleep(0.1)
        assert ticks == 10, f"the tunnel was cut after {ticks} ticks (about {ticks / 10:.1f} s)"
        assert proxy.http_stats().downstream_rq_timeout == 0


def _declines_upgrade(_: bytes, __: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nno thank"


async def test_upgrade_declined_by_upstream_is_an_ordinary_response() -> None:
    upgrade = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
    async with (
        raw_upstream(raw_responder(_declines_upgrade)) as up,
        proxy_to(up) as proxy,
        wire.connect(proxy.port()) as (reader, writer),
    ):
        writer.write(
            wire.request("GET", "/ws", [*upgrade, ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")])
        )
        resp = await wire.read_response(reader)
        # The connection cannot go back to HTTP after an upgrade request: it closes.
        assert await wire.read_eof(reader) == b""
    assert (resp.status, resp.body, resp.get("connection")) == (200, b"no thank", "close")
