"""Headers the proxy itself owns on the way through.

Covers hop-by-hop removal (RFC 9110 §7.6.1) in both directions, including the headers a
``Connection`` header names; ``x-forwarded-for`` (kept and appended) and
``x-forwarded-proto``; ``x-request-id`` (generated as a UUID4 when absent, kept when present);
and W3C trace context passed through unchanged.
"""

from __future__ import annotations

import json
import re

import httpx

from . import wire
from .harness import proxy_to
from .upstreams import aiohttp_upstream, raw_responder, raw_upstream

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "transfer-encoding"}
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _seen(resp: wire.Response) -> dict[str, list[str]]:
    """The headers the echo upstream received, by name."""
    seen: dict[str, list[str]] = {}
    for name, value in json.loads(resp.body)["headers"]:
        seen.setdefault(name, []).append(value)
    return seen


async def _echo(port: int, headers: list[tuple[str, str]], body: bytes = b"") -> dict[str, list[str]]:
    (resp,) = await wire.exchange(port, wire.request("POST" if body else "GET", "/echo", headers, body))
    assert resp.status == 200
    return _seen(resp)


async def test_request_hop_by_hop_headers_are_removed() -> None:
    headers = [
        ("Connection", "keep-alive, X-Hop-One"),
        ("Connection", "X-Hop-Two"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "websocket"),  # no "upgrade" token in Connection: not an upgrade request
        ("X-Hop-One", "1"),
        ("X-Hop-Two", "2"),
        ("X-End-To-End", "kept"),
    ]
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        seen = await _echo(proxy.port(), headers, b"body")
    leaked = (HOP_BY_HOP | {"x-hop-one", "x-hop-two"}) & seen.keys()
    assert not leaked, f"hop-by-hop headers reached the upstream: {sorted(leaked)}"
    assert seen["x-end-to-end"] == ["kept"]
    assert seen["content-length"] == ["4"]


async def test_chunked_request_is_reframed_not_leaked() -> None:
    # The client's Transfer-Encoding is framing for one hop; the proxy states its own.
    raw = wire.request(
        "POST", "/echo", [("Transfer-Encoding", "chunked"), ("Connection", "X-Gone"), ("X-Gone", "1")]
    )
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        (resp,) = await wire.exchange(proxy.port(), raw + b"4\r\nbody\r\n0\r\n\r\n")
    body = json.loads(resp.body)
    assert body["body_len"] == 4
    assert "x-gone" not in {name for name, _ in body["headers"]}


async def test_response_hop_by_hop_headers_are_removed() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Length: 2\r\n"
        b"Connection: keep-alive, X-Upstream-Secret\r\n"
        b"Keep-Alive: timeout=30\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: h2c\r\n"
        b"X-Upstream-Secret: s3cret\r\n"
        b"X-Public: visible\r\n"
        b"\r\n"
    )
    async with raw_upstream(raw_responder(lambda *_: head + b"ok")) as up, proxy_to(up) as proxy:
        (resp,) = await wire.exchange(proxy.port(), wire.request("GET", "/"))
    assert (resp.status, resp.body) == (200, b"ok")
    assert resp.get("x-public") == "visible"
    assert resp.get("connection") is None
    leaked = ({"keep-alive", "proxy-connection", "trailer", "upgrade"} & resp.names()) - {"connection"}
    assert not leaked, f"hop-by-hop response headers reached the client: {sorted(leaked)}"


async def test_response_headers_named_by_connection_are_removed() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
        b"Connection: X-Upstream-Secret\r\nX-Upstream-Secret: s3cret\r\n\r\n"
    )
    async with raw_upstream(raw_responder(lambda *_: head + b"ok")) as up, proxy_to(up) as proxy:
        (resp,) = await wire.exchange(proxy.port(), wire.request("GET", "/"))
    assert resp.status == 200
    assert resp.get("x-upstream-secret") is None, "a header the upstream's Connection named was relayed"


async def test_x_forwarded_for_is_appended_and_proto_set() -> None:
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        fresh = await _echo(proxy.port(), [])
        chained = await _echo(proxy.port(), [("X-Forwarded-For", "203.0.113.7, 198.51.100.2")])
        two_lines = await _echo(
            proxy.port(), [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "10.1.1.1")]
        )
        trusted_proto = await _echo(proxy.port(), [("X-Forwarded-Proto", "https")])
    assert fresh["x-forwarded-for"] == ["127.0.0.1"]
    assert fresh["x-forwarded-proto"] == ["http"]
    assert chained["x-forwarded-for"] == ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
    assert two_lines["x-forwarded-for"] == ["203.0.113.7, 10.1.1.1, 127.0.0.1"]
    # Not the edge (use_remote_address false, Envoy's default): the downstream's scheme is trusted.
    assert trusted_proto["x-forwarded-proto"] == ["https"]


async def test_edge_proxy_states_the_scheme_itself() -> None:
    async with aiohttp_upstream() as up, proxy_to(up, use_remote_address=True) as proxy:
        seen = await _echo(proxy.port(), [("X-Forwarded-Proto", "https")])
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]


async def test_request_id_generated_when_absent_and_kept_when_present() -> None:
    async with aiohttp_upstream() as up, proxy_to(up) as proxy:
        generated = [(await _echo(proxy.port(), []))["x-request-id"] for _ in range(20)]
        kept = await _echo(proxy.port(), [("X-Request-Id", "client-chosen-id")])
    assert all(len(ids) == 1 and UUID4.match(ids[0]) for ids in generated), generated
    assert len({ids[0] for ids in generated}) == 20, "request ids repeat"
    assert kept["x-request-id"] == ["client-chosen-id"]


async def test_request_id_generation_can_be_turned_off() -> None:
    async with aiohttp_upstream() as up, proxy_to(up, generate_request_id=False) as proxy:
        seen = await _echo(proxy.port(), [])
    assert "x-request-id" not in seen


async def test_w3c_trace_context_passes_through_unchanged() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    async with aiohttp_upstream() as up, proxy_to(up) as proxy, httpx.AsyncClient() as client:
        resp = await client.get(
            proxy.url("/echo"), headers={"traceparent": traceparent, "tracestate": tracestate}
        )
    seen = dict(resp.json()["headers"])
    assert seen["traceparent"] == traceparent
    assert seen["tracestate"] == tracestate
