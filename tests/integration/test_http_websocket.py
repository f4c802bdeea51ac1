"""WebSocket (``Connection: upgrade``) relayed as a tunnel through the proxy.

Covers the upgrade handshake with an independent client (aiohttp), text and binary echo
(including frames larger than one socket read), a clean close handshake, and that both
connections of the tunnel are released afterwards (neither pooled nor left open), and that
the route timeout does not cut a tunnel that outlives it; an upgrade the upstream declines.
Upgrades follow Envoy's ``upgrade_configs`` (HCM and per route, hcm/upgrade.py): the tunnel
tests enable ``websocket`` on the HCM; a type not enabled is refused 403 and the connection
closed, on HTTP/1.1; HTTP/2 extended CONNECT is not offered, and refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import aiohttp
import pytest
from h2 import events as ev
from h2.settings import SettingCodes

from . import wire
from .h2_client import RawH2
from .harness import bootstrap, cluster, eventually, http_listener, proxy_to, route, running_proxy
from .test_bad_input import open_raw, read_until_close
from .upstreams import Handler, aiohttp_upstream, raw_responder, raw_upstream

# Envoy's HCM upgrade_configs enabling WebSocket (without it an upgrade is refused 403).
WEBSOCKET = {"upgrade_configs": [{"upgrade_type": "websocket"}]}


async def test_websocket_echo_and_close() -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: spans many reads in both directions
    async with aiohttp_upstream("ws-up") as up, proxy_to(up, **WEBSOCKET) as proxy:
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
    async with (
        aiohttp_upstream() as up,
        proxy_to(up, **WEBSOCKET) as proxy,
        aiohttp.ClientSession() as session,
    ):
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
        running_proxy(bootstrap([http_listener(routes, **WEBSOCKET)], [cluster("backend", up)])) as proxy,
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
        proxy_to(up, **WEBSOCKET) as proxy,
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
    async with raw_upstream(_echo_tunnel(farewell=b"farewell")) as up, proxy_to(up, **WEBSOCKET) as proxy:
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
    async with raw_upstream(_echo_tunnel()) as up, proxy_to(up, cluster_extra=breakers, **WEBSOCKET) as proxy:
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
        proxy_to(up, stream_idle_timeout="1s", **WEBSOCKET) as proxy,
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


# ------------------------------------------------------------------ upgrade_configs


async def test_an_upgrade_not_enabled_is_refused_403_and_the_connection_closed() -> None:
    """Without ``upgrade_configs`` no upgrade is enabled (Envoy): 403 with an empty body,
    ``downstream_rq_ws_on_non_ws_route``, nothing upstream, and the connection closed, so
    bytes after the head (here a second request) are never parsed as HTTP."""
    async with raw_upstream(_echo_tunnel()) as up, proxy_to(up) as proxy:
        sock = await open_raw(proxy.port())
        try:
            await asyncio.get_running_loop().sock_sendall(
                sock, UPGRADE + b"GET /hidden HTTP/1.1\r\nHost: a\r\n\r\n"
            )
            received, how = await read_until_close(sock, quiet=5)
        finally:
            sock.close()
        assert how == "eof"
        assert received.startswith(b"HTTP/1.1 403 "), received
        assert received.count(b"HTTP/1.1") == 1 and received.endswith(b"\r\n\r\n"), received
        assert b"content-length: 0" in received.lower()
        assert proxy.http_stats().downstream_rq_ws_on_non_ws_route == 1
        assert proxy.cluster_stats().upstream_rq_total == 0


def _ws_route(prefix: str, upgrades: list[dict[str, Any]] | None) -> dict[str, Any]:
    return route(prefix, "backend", **({"upgrade_configs": upgrades} if upgrades is not None else {}))


@pytest.mark.parametrize(
    ("hcm_upgrades", "route_upgrades", "kind", "status"),
    [
        pytest.param([{"upgrade_type": "WebSocket"}], None, "websocket", 101, id="hcm-enables-any-case"),
        pytest.param([{"upgrade_type": "websocket"}], None, "WEBSOCKET", 101, id="request-type-any-case"),
        pytest.param([{"upgrade_type": "websocket"}], None, "foo", 403, id="other-type"),
        pytest.param(
            [{"upgrade_type": "websocket"}],
            [{"upgrade_type": "websocket", "enabled": False}],
            "websocket",
            403,
            id="route-disables",
        ),
        pytest.param(
            [{"upgrade_type": "websocket", "enabled": False}],
            [{"upgrade_type": "websocket"}],
            "websocket",
            101,
            id="route-enables-hcm-disabled",
        ),
        pytest.param(
            [{"upgrade_type": "websocket", "enabled": False}], None, "websocket", 403, id="hcm-disabled"
        ),
        # Envoy's createUpgradeFilterChain: a route enables a type the HCM does not list
        # (Envoy's websocket example, envoy-ws-route.yaml, relies on it).
        pytest.param(None, [{"upgrade_type": "websocket"}], "websocket", 101, id="route-alone-enables"),
    ],
)
async def test_upgrade_configs_follow_envoy(
    hcm_upgrades: list[dict[str, Any]] | None,
    route_upgrades: list[dict[str, Any]] | None,
    kind: str,
    status: int,
) -> None:
    """Envoy's table (HCM enabled x route enabled), the type compared case-insensitively;
    ``/plain`` (no route-level entry) shows the HCM's own setting beside the route's."""
    hcm = {"upgrade_configs": hcm_upgrades} if hcm_upgrades is not None else {}
    routes = [_ws_route("/ws", route_upgrades), route("/")]
    request = UPGRADE.replace(b"Upgrade: websocket", f"Upgrade: {kind}".encode())
    async with (
        raw_upstream(_echo_tunnel()) as up,
        running_proxy(bootstrap([http_listener(routes, **hcm)], [cluster("backend", up)])) as proxy,
    ):
        sock = await open_raw(proxy.port())
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_sendall(sock, request)
            head = b""
            while b"\r\n\r\n" not in head:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
                assert data, head
                head += data
        finally:
            sock.close()
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
        refused = proxy.http_stats().downstream_rq_ws_on_non_ws_route
        assert refused == (status == 403)
        assert proxy.cluster_stats().upstream_rq_total == (status != 403)


async def test_http2_does_not_offer_extended_connect_and_refuses_it() -> None:
    """RFC 8441: the proxy's SETTINGS do not enable CONNECT with ``:protocol``; a client that
    sends one anyway is refused (never forwarded), whatever ``upgrade_configs`` says."""
    async with raw_upstream(_echo_tunnel()) as up, proxy_to(up, **WEBSOCKET) as proxy:
        client = await RawH2.open(proxy.port())
        try:
            await client.read_until(
                lambda events: any(isinstance(e, ev.RemoteSettingsChanged) for e in events)
            )
            settings = next(e for e in client.events if isinstance(e, ev.RemoteSettingsChanged))
            enable_connect = settings.changed_settings.get(SettingCodes.ENABLE_CONNECT_PROTOCOL)
            assert enable_connect is None or enable_connect.new_value == 0
            client.h2.config.validate_outbound_headers = False  # h2 would not send it either
            sid = client.h2.get_next_available_stream_id()
            headers = [
                (b":method", b"CONNECT"),
                (b":protocol", b"websocket"),
                (b":scheme", b"http"),
                (b":authority", b"a"),
                (b":path", b"/ws"),
                (b"sec-websocket-version", b"13"),
            ]
            client.h2.send_headers(sid, headers, end_stream=False)
            await client.flush()
            await client.read_until(lambda events: client.ended(sid) or client.goaway() is not None)
        finally:
            await client.close()
        status = client.headers_of(sid).get(b":status")
        assert status is None or status.startswith(b"4"), client.events  # a reset, or a 4xx
        assert proxy.cluster_stats().upstream_rq_total == 0
