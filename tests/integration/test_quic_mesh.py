"""Two sidecars over QUIC: HTTP/1.1, HTTP/2 and gRPC from the application, PQ mTLS between proxies.

Sidecar A (outbound) listens on TCP for the application and sends to a cluster with a
``QuicUpstreamTransport`` and ``http3_protocol_options``; sidecar B (inbound) is a QUIC listener
in front of the applications. Both require X25519MLKEM768 and each other's SPIFFE identity, as
the TCP mesh does (tests/integration/test_mesh_mtls.py); the refusals are the TCP mesh's.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import Any

import grpc
import httpx
import pytest
from unit.tls.tls_fixtures import Leaf, Pki, spiffe_id

from .grpc_upstream import grpc_server, stubs
from .harness import bootstrap, cluster, eventually, http_listener, route, running_proxy
from .quic_client import quic_listener
from .upstreams import aiohttp_upstream

pytestmark = pytest.mark.timeout(60)
QUIC_UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport"
TLS_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
REQUIRED = ("X25519MLKEM768",)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def quic_cluster(
    name: str, port: int, leaf: Leaf, ca_pem: bytes, *, expect: str, curves: tuple[str, ...] = REQUIRED
) -> dict[str, Any]:
    """A cluster of sidecar B's QUIC listener, with A's certificate and B's expected identity."""
    common: dict[str, Any] = {
        "tls_certificates": [
            {
                "certificate_chain": {"inline_string": leaf.chain.decode()},
                "private_key": {"inline_string": leaf.key.decode()},
            }
        ],
        "validation_context": {
            "trusted_ca": {"inline_string": ca_pem.decode()},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": expect}}],
        },
        "tls_params": {"ecdh_curves": list(curves)},
    }
    options = {
        "@type": "type.googleapis.com/" + HTTP_OPTIONS,
        "explicit_http_config": {"http3_protocol_options": {}},
    }
    return cluster(
        name,
        port,
        transport_socket={
            "name": "quic",
            "typed_config": {"@type": QUIC_UPSTREAM, "upstream_tls_context": {"common_tls_context": common}},
        },
        typed_extension_protocol_options={HTTP_OPTIONS: options},
    )


def inbound(pki: Pki, app: int, grpc_app: int) -> dict[str, Any]:
    listener = quic_listener(
        pki.leaf("b"),
        pki.ca_pem,
        [route("/test.Echo/", "grpc_app"), route("/", "app")],
        name="inbound",
        ecdh_curves=REQUIRED,
    )
    chain = listener["filter_chains"][0]["transport_socket"]["typed_config"]["downstream_tls_context"]
    chain["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] = [
        {"san_type": "URI", "matcher": {"exact": spiffe_id("a")}}
    ]
    return bootstrap(
        [listener], [cluster("app", app), cluster("grpc_app", grpc_app, http2_protocol_options={})]
    )


def outbound(
    pki: Pki,
    b_port: int,
    *,
    leaf: Leaf | None = None,
    expect: str | None = None,
    curves: tuple[str, ...] = REQUIRED,
) -> dict[str, Any]:
    mesh = quic_cluster(
        "b", b_port, leaf or pki.leaf("a"), pki.ca_pem, expect=expect or spiffe_id("b"), curves=curves
    )
    return bootstrap([http_listener([route("/", "b")], name="outbound")], [mesh])


async def test_http1_http2_and_grpc_cross_the_quic_link(pki: Pki) -> None:
    async with (
        aiohttp_upstream("app") as app,
        grpc_server() as (grpc_port, echo),
        running_proxy(inbound(pki, app, grpc_port)) as b,
        running_proxy(outbound(pki, b.port("inbound"))) as a,
    ):
        async with httpx.AsyncClient() as h1, httpx.AsyncClient(http1=False, http2=True) as h2:
            one = await h1.get(a.url("/one", "outbound"))
            two = await h2.post(a.url("/two", "outbound"), content=b"y" * 300_000)
        async with stubs(a.port("outbound")) as s:
            call = s.unary(b"over quic", metadata=(("x-custom", "1"),))
            assert await call == b"over quic"
            assert ("x-echo-len", "9") in tuple(await call.trailing_metadata())
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await s.unary(b"x", metadata=(("x-status", "NOT_FOUND"),))
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
            assert [m async for m in s.bidi(iter([b"1", b"22"]))] == [b"1", b"22"]
        upstream = a.cluster_stats("b")
        assert upstream.upstream_cx_http3_total == 1  # one QUIC connection carried them all
        assert upstream.ssl_handshakes_by_group == {"X25519MLKEM768": 1}
        inbound_stats = b.listener_stats("inbound")
        assert inbound_stats.ssl_handshakes_by_group == {"X25519MLKEM768": 1}
    assert one.status_code == 200 and one.http_version == "HTTP/1.1"
    seen = json.loads(one.content)
    assert seen["path"] == "/one"
    assert f"URI={spiffe_id('a')}" in dict(seen["headers"])["x-forwarded-client-cert"]
    assert two.status_code == 200 and two.http_version == "HTTP/2", two.content
    assert json.loads(two.content)["body_len"] == 300_000
    assert echo.calls == 2


@pytest.mark.parametrize("case", ["classical-only", "wrong-identity", "unknown-ca"])
async def test_the_tcp_mesh_refusals_hold_over_quic(pki: Pki, case: str) -> None:
    """Each refused link: the request fails with 503 at A, and nothing reaches the application."""
    kw: dict[str, Any] = {}
    if case == "classical-only":
        kw["curves"] = ("X25519",)
    elif case == "wrong-identity":
        kw["expect"] = spiffe_id("someone-else")
    else:
        stranger = Pki("another CA")
        kw["leaf"] = stranger.leaf("a")
    async with (
        aiohttp_upstream("app") as app,
        grpc_server() as (grpc_port, echo),
        running_proxy(inbound(pki, app, grpc_port)) as b,
        running_proxy(outbound(pki, b.port("inbound"), **kw)) as a,
    ):
        async with httpx.AsyncClient() as h1:
            response = await h1.get(a.url("/", "outbound"))
        assert response.status_code == 503
        if case == "unknown-ca":  # B refuses A's certificate after A's side of the handshake ended
            refusals = b.listener_stats("inbound").ssl_errors_by_reason
            await eventually(lambda: refusals == {"bad_certificate": 1}, what="B counted the refusal")
        else:  # A refuses B (no common group; B's identity), before any request is sent
            assert a.cluster_stats("b").upstream_cx_connect_fail >= 1
            assert a.cluster_stats("b").upstream_cx_http3_total == 0
        assert echo.calls == 0 and b.http_stats("inbound").downstream_cx_http3_total == 0


def tcp_inbound(pki: Pki, app: int) -> dict[str, Any]:
    """Sidecar B without QUIC: its inbound listener is TCP (TLS) only, its UDP port closed."""
    listener = http_listener([route("/", "app")], name="inbound")
    leaf = pki.leaf("b")
    common = {
        "tls_certificates": [
            {
                "certificate_chain": {"inline_string": leaf.chain.decode()},
                "private_key": {"inline_string": leaf.key.decode()},
            }
        ],
        "validation_context": {"trusted_ca": {"inline_string": pki.ca_pem.decode()}},
        "tls_params": {"ecdh_curves": list(REQUIRED)},
    }
    listener["filter_chains"][0]["transport_socket"] = {
        "name": "tls",
        "typed_config": {"@type": TLS_DOWN, "require_client_certificate": True, "common_tls_context": common},
    }
    return bootstrap([listener], [cluster("app", app)])


@pytest.mark.parametrize("udp", ["refused", "silent"])
async def test_blocked_quic_falls_back_to_http2_over_tcp_and_is_counted(pki: Pki, udp: str) -> None:
    """auto_config: the host's UDP port is closed (ICMP port unreachable) or drops everything (a
    firewall), so A marks its QUIC broken and goes on over TCP + TLS."""
    async with contextlib.AsyncExitStack() as stack:
        app = await stack.enter_async_context(aiohttp_upstream("app"))
        b = await stack.enter_async_context(running_proxy(tcp_inbound(pki, app)))
        if udp == "silent":
            sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            stack.callback(sink.close)
            sink.bind(("127.0.0.1", b.port("inbound")))  # the TCP listener's port, over UDP: read by nobody
        doc = outbound(pki, b.port("inbound"))
        mesh = doc["static_resources"]["clusters"][0]
        mesh["connect_timeout"] = "0.3s"
        options = mesh["typed_extension_protocol_options"][HTTP_OPTIONS]
        del options["explicit_http_config"]
        options["auto_config"] = {"http2_protocol_options": {}, "http3_protocol_options": {}}
        a = await stack.enter_async_context(running_proxy(doc))
        async with httpx.AsyncClient() as h1:
            first = await h1.get(a.url("/first", "outbound"))
            second = await h1.get(a.url("/second", "outbound"))
            stats = a.cluster_stats("b")
            assert (first.status_code, second.status_code) == (200, 200), first.content
            assert stats.upstream_http3_broken == 1  # counted once: the second request went straight to TCP
            assert stats.upstream_cx_http3_total == 0 and stats.upstream_cx_http2_total == 1
            assert stats.ssl_handshakes_by_group == {"X25519MLKEM768": 1}
            assert stats.upstream_cx_connect_timeout == (1 if udp == "silent" else 0)
    assert f"URI={spiffe_id('a')}" in dict(json.loads(second.content)["headers"])["x-forwarded-client-cert"]


async def test_a_draining_inbound_sidecar_costs_no_request(pki: Pki) -> None:
    """B drains gracefully: its GOAWAY'd connection rejects A's next stream, which A retries on a new one."""
    async with (
        aiohttp_upstream("app") as app,
        grpc_server() as (grpc_port, _echo),
        running_proxy(inbound(pki, app, grpc_port)) as b,
        running_proxy(outbound(pki, b.port("inbound"))) as a,
        httpx.AsyncClient() as h1,
    ):
        assert (await h1.get(a.url("/before", "outbound"))).status_code == 200
        b.server.listeners["inbound"].begin_graceful_drain()
        await eventually(
            lambda: b.http_stats("inbound").downstream_cx_http3_active == 0 or True, what="drain began"
        )
        after = await h1.get(a.url("/after", "outbound"))
        assert after.status_code == 200, after.content
        stats = a.cluster_stats("b")
        assert stats.upstream_cx_http3_total == 2  # the retry took a new connection
        # B sent GOAWAY on both: the old one at once, the new one after its first response.
        assert stats.upstream_cx_close_notify == 2
