"""WebSocket (``Connection: upgrade``) relayed as a tunnel through the proxy.

Covers the upgrade handshake with an independent client (aiohttp), text and binary echo
(including frames larger than one socket read), a clean close handshake, and that both
connections of the tunnel are released afterwards (neither pooled nor left open), and that
the route timeout does not cut a tunnel that outlives it; an upgrade the upstream declines.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiohttp

from . import wire
from .harness import bootstrap, cluster, eventually, http_listener, proxy_to, route, running_proxy
from .test_bad_input import open_raw, read_until_close
from .upstreams import Handler, aiohttp_upstream, raw_responder, raw_upstream


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


# ------------------------------------------------------------------ issue 12, finding 4

SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def _echo_tunnel(farewell: bytes = b"") -> Handler:
    """Upgrade requests get a 101 and an echo until the FIN, then ``farewell`` and a close;
    other requests get ``200 ok``."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head = await reader.readuntil(b"\r\n\r\n")
            if b"upgrade: websocket" not in head.lower():
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                await writer.drain()
                return writer.close()
            writer.write(SWITCHING)
            while data := await reader.read(1 << 16):  # bounded by the client's FIN
                writer.write(data)
            writer.write(farewell)
            await writer.drain()
        writer.close()

    return handler


async def _open_tunnel(port: int) -> socket.socket:
    sock = await open_raw(port)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        assert data, head
        head += data
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


async def test_a_half_close_is_relayed_both_ways_through_the_tunnel() -> None:
    async with raw_upstream(_echo_tunnel(farewell=b"farewell")) as up, proxy_to(up) as proxy:
        sock = await _open_tunnel(proxy.port())
        try:
            await asyncio.get_running_loop().sock_sendall(sock, b"ping")
            sock.shutdown(socket.SHUT_WR)
            received, how = await read_until_close(sock, quiet=5)
        finally:
            sock.close()
        assert (received, how) == (b"pingfarewell", "eof")
        await eventually(lambda: proxy.cluster_stats().upstream_cx_active == 0, what="upstream closed")


async def test_tunnels_whose_clients_left_are_reaped_and_free_the_breaker() -> None:
    # One client may hold three quarters of max_requests (the fair share, breaker.FairShare): its
    # tunnels take all of that, so its next request is refused until they are reaped.
    limit = 200
    tunnels = limit - limit // 4
    breakers = {"circuit_breakers": {"thresholds": [{"max_requests": limit}]}}
    async with raw_upstream(_echo_tunnel()) as up, proxy_to(up, cluster_extra=breakers) as proxy:
        socks = [await _open_tunnel(proxy.port()) for _ in range(tunnels)]
        stats, listener = proxy.cluster_stats(), proxy.listener_stats()
        assert stats.upstream_rq_active == tunnels
        [refused] = await wire.exchange(proxy.port(), wire.request("GET", "/while-held"))
        assert refused.status == 503 and refused.get("x-envoy-overloaded") == "true"
        for sock in socks:
            sock.close()
        await eventually(
            lambda: (
                (stats.upstream_rq_active, stats.upstream_cx_active, listener.downstream_cx_active)
                == (0, 0, 0)
            ),
            timeout=10,
            what="every abandoned tunnel reaped",
        )
        [after] = await wire.exchange(proxy.port(), wire.request("GET", "/after"))
        assert (after.status, after.body) == (200, b"ok")


async def test_silent_tunnels_end_after_the_stream_idle_timeout() -> None:
    tunnels = 20
    async with (
        raw_upstream(_echo_tunnel()) as up,
        proxy_to(up, stream_idle_timeout="1s") as proxy,
    ):
        socks = [await _open_tunnel(proxy.port()) for _ in range(tunnels)]
        try:
            ends = await asyncio.gather(*(read_until_close(s, quiet=8) for s in socks))
        finally:
            for sock in socks:
                sock.close()
        assert {how for _, how in ends} <= {"eof", "reset"}
        http = proxy.http_stats()
        assert http.downstream_rq_idle_timeout == tunnels
        await eventually(lambda: proxy.cluster_stats().upstream_rq_active == 0, what="breaker released")
