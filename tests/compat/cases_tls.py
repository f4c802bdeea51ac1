"""Corpus checks for TLS and gRPC shapes: termination, origination, SNI and ALPN filter-chain
choice, passthrough, mutual TLS between two proxies, gRPC over h2c and over TLS.

The clients are Python's ``ssl`` (an independent TLS stack) and grpcio; ``tls`` is an echo
upstream serving TLS with the certificate of ``service.example.com``.
"""

from __future__ import annotations

import json
import ssl

import aiohttp
import grpc
from integration.grpc_upstream import SERVICE, grpc_server
from integration.harness import free_port

from .cases_http import echoed_headers, served_by
from .corpus import Env, accepted
from .tls import client_context, make_ca, request


@accepted(
    "front-proxy",
    "path prefixes reach their service on the plain listener and on the TLS one",
    service_1="svc1",
    service_2="svc2",
)
async def front_proxy(env: Env) -> None:
    tls = client_context()
    async with env.proxy():
        plain = [await served_by(env.port(0), f"/service/{n}") for n in (1, 2)]
        secure = [await served_by(env.port(1), f"/service/{n}", tls=tls) for n in (1, 2)]
        unrouted = await request(env.port(0), "/other")
    assert plain == secure == ["svc1", "svc2"]
    assert unrouted.status == 404


@accepted("tls-termination", "HTTPS in (ALPN http/1.1), plain HTTP to the service", service_http="svc1")
async def tls_termination(env: Env) -> None:
    async with env.proxy():
        assert await served_by(env.port(), tls=client_context(["http/1.1"])) == "svc1"


@accepted(
    "tls-origination",
    "plain HTTP in, TLS to the service, whose certificate is checked against the CA",
    service_https="tls",
)
async def tls_origination(env: Env) -> None:
    async with env.proxy() as proxy:
        assert await served_by(env.port()) == "tls"
        assert proxy.cluster_stats("service-https").upstream_cx_total >= 1


@accepted(
    "tls-sni",
    "each server name gets its own chain and certificate; the third name is passed through "
    "to a TLS service untouched",
    service_http0="svc1",
    service_http1="svc2",
    service_https="tls",
)
async def tls_sni(env: Env) -> None:
    tls = client_context()
    async with env.proxy():
        one = await served_by(env.port(), tls=tls, sni="domain1.example.com")
        two = await served_by(env.port(), tls=tls, sni="domain2.example.com")
        three = await served_by(env.port(), tls=tls, sni="domain3.example.com")
    assert (one, two, three) == ("svc1", "svc2", "tls")


@accepted(
    "tls-inspector-alpn",
    "TLS is passed through to the service chosen by the client's ALPN; plain TCP to a third",
    service_https1="tls",
    service_https0="tls-h1",
    service_http="svc1",
)
async def tls_inspector_alpn(env: Env) -> None:
    async with env.proxy() as proxy:
        # The TLS upstreams offer no ALPN: the chain chosen shows in the cluster's stats.
        assert await served_by(env.port(), tls=client_context(["h2"])) == "tls"
        assert await served_by(env.port(), tls=client_context(["http/1.1"])) == "tls-h1"
        assert await served_by(env.port()) == "svc1"
        assert proxy.cluster_stats("service-https-h2").upstream_cx_total == 1
        assert proxy.cluster_stats("service-https-http1").upstream_cx_total == 1


@accepted(
    "double-proxy-mtls",
    "the frontend carries TCP over mutual TLS to the backend listener (each side checks the "
    "other's DNS SAN), which relays it to the database",
    postgres="svc1",
    proxy_backend__example__com="backend-listener",
)
async def double_proxy_mtls(env: Env) -> None:
    env.ports["backend-listener"] = free_port()
    env.choose_listener_port("backend", env.ports["backend-listener"])
    async with env.proxy() as proxy:
        assert await served_by(env.port("frontend")) == "svc1"
        assert proxy.listener_stats("backend").downstream_cx_total == 1
        # Without the frontend's client certificate, the backend refuses the connection.
        refused = await _refused(env.port("backend"))
    assert refused


async def _refused(port: int, alpn: list[str] | None = None) -> bool:
    """Whether a TLS client without a certificate is turned away."""
    try:
        resp = await request(port, tls=client_context(alpn))
    except (ssl.SSLError, ConnectionError, EOFError, OSError):
        return True
    return resp.status >= 500


async def _grpc_echo(
    target: str, credentials: grpc.ChannelCredentials | None = None, **options: str
) -> bytes:
    opts = list(options.items())
    channel = (
        grpc.aio.secure_channel(target, credentials, options=opts)
        if credentials is not None
        else grpc.aio.insecure_channel(target, options=opts)
    )
    async with channel:
        unary = channel.unary_unary(f"/{SERVICE}/Unary")
        reply: bytes = await unary(b"ping", timeout=5)
    return reply


@accepted(
    "grpc-h2c",
    "a unary gRPC call over plaintext HTTP/2 reaches the gRPC service and its reply returns",
    grpc_server="grpc",
)
async def grpc_h2c(env: Env) -> None:
    async with grpc_server() as (port, echo):
        env.ports["grpc"] = port
        async with env.proxy():
            assert await _grpc_echo(f"127.0.0.1:{env.port('grpc_ingress')}") == b"ping"
    assert echo.calls == 1


@accepted(
    "grpc-tls",
    "a unary gRPC call over TLS (ALPN h2, grpcio's TLS) reaches the gRPC service",
    grpc_server="grpc",
)
async def grpc_tls(env: Env) -> None:
    creds = grpc.ssl_channel_credentials(root_certificates=make_ca().cert_pem)
    async with grpc_server() as (port, echo):
        env.ports["grpc"] = port
        async with env.proxy():
            target = f"127.0.0.1:{env.port('grpc_tls')}"
            reply = await _grpc_echo(target, creds, **{"grpc.ssl_target_name_override": "grpc.example.com"})
    assert reply == b"ping"
    assert echo.calls == 1


@accepted(
    "istio-mesh-hop",
    "a plain request to the outbound listener crosses mutual TLS with Istio's ALPN (the server's SPIFFE "
    "URI SAN checked against the ROOTCA secret merged into the combined validation context) to the "
    "inbound listener's TLS chain and reaches the app with the caller's SPIFFE ID in XFCC; plaintext "
    "to the inbound listener takes its plaintext chain; TLS without a client certificate is refused",
    reviews__default__svc__cluster__local="inbound",
    **{"127__0__0__1:9080": "svc1"},
)
async def istio_mesh_hop(env: Env) -> None:
    env.ports["inbound"] = free_port()
    env.choose_listener_port("virtualInbound", env.ports["inbound"])
    async with env.proxy() as proxy:
        meshed = await request(env.port("0.0.0.0_8080"), "/reviews/1", host="reviews")
        plain = await request(env.port("virtualInbound"), "/reviews/2")
        refused = await _refused(env.port("virtualInbound"), ["istio-http/1.1"])
        chains = proxy.cluster_stats("outbound|8080||reviews.default.svc.cluster.local").upstream_cx_total
    assert meshed.status == 200 and json.loads(meshed.body)["server"] == "svc1"
    xfcc = echoed_headers(meshed.body)["x-forwarded-client-cert"]
    assert "URI=spiffe://cluster.local/ns/default/sa/productpage" in xfcc
    assert plain.status == 200 and "x-forwarded-client-cert" not in echoed_headers(plain.body)
    assert refused and chains == 1


@accepted(
    "tls-static-secrets",
    "a client whose SPIFFE ID is under the allowed prefix is served over mutual TLS with the "
    "certificates the static secrets hold; a client without a certificate is refused",
    app="svc1",
)
async def tls_static_secrets(env: Env) -> None:
    async with env.proxy():
        served = await served_by(env.port("mtls"), tls=client_context(cert="frontend"))
        refused = await _refused(env.port("mtls"))
    assert served == "svc1" and refused


@accepted(
    "websocket-wss",
    "a WebSocket over TLS is upgraded and relayed to the WebSocket service over TLS again; frames echo",
    service_wss="tls",
)
async def websocket_wss(env: Env) -> None:
    async with env.proxy(), aiohttp.ClientSession() as session:
        url = f"https://127.0.0.1:{env.port()}/ws"
        async with session.ws_connect(url, ssl=client_context(["http/1.1"])) as ws:
            await ws.send_str("hello")
            msg = await ws.receive(timeout=5)
    assert msg.data == "tls:hello"


@accepted(
    "tls-reencrypt",
    "HTTPS in, TLS again to the service (unverified, as the example); the service answers",
    service_https="tls",
)
async def tls_reencrypt(env: Env) -> None:
    async with env.proxy():
        assert await served_by(env.port(), tls=client_context()) == "tls"


@accepted(
    "tls-passthrough",
    "the client's TLS session is relayed untouched: it ends at the service, whose certificate the "
    "client verifies",
    service_https="tls",
)
async def tls_passthrough(env: Env) -> None:
    tls = client_context()
    tls.check_hostname = True  # the service's own name: only the service holds that certificate
    async with env.proxy():
        assert await served_by(env.port(), tls=tls, sni="service.example.com") == "tls"
