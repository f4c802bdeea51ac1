"""WebSocket (``Connection: upgrade``) relayed as a tunnel through the proxy.

Covers the upgrade handshake with an independent client (aiohttp), text and binary echo
(including frames larger than one socket read), a clean close handshake, and that both
connections of the tunnel are released afterwards (neither pooled nor left open).
"""

from __future__ import annotations

import aiohttp

from .harness import eventually, proxy_to
from .upstreams import aiohttp_upstream


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
