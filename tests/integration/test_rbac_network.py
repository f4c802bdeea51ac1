"""envoy.filters.network.rbac over real mutual TLS: the connection's identity, group and
signature scheme decide whether a tcp_proxy session starts.

A TLS listener (ecdh_curves X25519MLKEM768 and X25519: both kinds of caller complete the
handshake) proxies to an echo upstream behind a network RBAC filter. Callers are real TLS
clients (meshproxy's engine) offering the hybrid group, or X25519 only, with ECDSA or ML-DSA-65
certificates. An allowed caller gets its bytes echoed; a denied one is closed before the
upstream sees a connection; shadow rules count without closing anything.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from certs import make_ca, make_leaf

from meshproxy.identity.certs import Algorithm
from meshproxy.tls import TlsConfig, TlsContext
from meshproxy.tls.policy import OFF, REQUIRED
from meshproxy.tls.transport import connect_tls

from . import wire
from .harness import Proxy, bootstrap, cluster, eventually, http_listener, running_proxy, tcp_listener
from .upstreams import raw_upstream

DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
NETWORK_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
TLS_PRINCIPAL = "type.googleapis.com/meshproxy.rbac.v1.TlsPrincipal"
CLIENT_ID = "spiffe://mesh.local/ns/default/sa/frontend"
SERVER_ID = "spiffe://mesh.local/ns/default/sa/backend"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def downstream_tls(leaf: Any, curves: list[str]) -> dict[str, Any]:
    """A DownstreamTlsContext requiring a client certificate from ``leaf``'s CA."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM,
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_params": {"ecdh_curves": curves},
                "tls_certificates": [
                    {
                        "certificate_chain": {"inline_bytes": b64(leaf.cert_pem)},
                        "private_key": {"inline_bytes": b64(leaf.key_pem)},
                    }
                ],
                "validation_context": {"trusted_ca": {"inline_bytes": b64(leaf.ca.cert_pem)}},
            },
        },
    }


def tls_principal(groups: list[str] = [], schemes: list[str] = []) -> dict[str, Any]:  # noqa: B006 - read only
    config = {"@type": TLS_PRINCIPAL, "groups": groups, "signature_algorithms": schemes}
    return {"custom": {"name": "meshproxy.rbac.tls_principal", "typed_config": config}}


def only(principal: dict[str, Any], action: str = "ALLOW") -> dict[str, Any]:
    return {"action": action, "policies": {"p": {"permissions": [{"any": True}], "principals": [principal]}}}


@contextlib.asynccontextmanager
async def gated(rbac: dict[str, Any]) -> AsyncIterator[tuple[Proxy, list[bytes]]]:
    """A TLS tcp_proxy listener "tcp" behind ``rbac`` (stat prefix "tcp"), to an echo upstream
    that records the first bytes of each session it is given."""
    sessions: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            data = await reader.read(1 << 16)
            sessions.append(data)
            writer.write(data)
            await writer.drain()
        writer.close()

    listener = tcp_listener("echo")
    chain = listener["filter_chains"][0]
    chain["filters"].insert(
        0,
        {
            "name": "envoy.filters.network.rbac",
            "typed_config": {"@type": NETWORK_RBAC, "stat_prefix": "tcp", **rbac},
        },
    )
    chain["transport_socket"] = downstream_tls(make_leaf(make_ca(), SERVER_ID), ["X25519MLKEM768", "X25519"])
    async with (
        raw_upstream(echo) as port,
        running_proxy(bootstrap([listener], [cluster("echo", port)])) as proxy,
    ):
        yield proxy, sessions


class Session(asyncio.Protocol):
    """A client session: what it received, and whether it ended (``changed`` on either)."""

    def __init__(self) -> None:
        self.received = b""
        self.closed = False
        self.changed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.received += data
        self.changed.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.changed.set()

    async def echoed_or_closed(self, sent: bytes) -> None:
        while self.received != sent and not self.closed:
            self.changed.clear()
            await self.changed.wait()


def caller(*, hybrid: bool, alg: Algorithm = Algorithm.ECDSA_P256) -> TlsConfig:
    leaf = make_leaf(make_ca(), CLIENT_ID, alg=alg)
    return TlsConfig(
        server_side=False,
        certificate_chain=leaf.cert_pem,
        private_key=leaf.key_pem,
        trusted_ca=leaf.ca.cert_pem,
        pq_policy=REQUIRED if hybrid else replace(OFF, groups=("X25519",)),
    )


async def call(proxy: Proxy, client: TlsConfig) -> tuple[str, bytes]:
    """(the group negotiated, what came back) for one session sending b"ping"."""
    loop = asyncio.get_running_loop()
    transport, session = await connect_tls(loop, "127.0.0.1", proxy.port("tcp"), TlsContext(client), Session)
    group = transport.get_extra_info("tls").group
    transport.write(b"ping")
    try:
        await asyncio.wait_for(session.echoed_or_closed(b"ping"), 5)
    finally:
        transport.close()
    return group, session.received


def rbac_stats(proxy: Proxy, prefix: str = "tcp.rbac") -> Any:
    return proxy.server.store.rbac_stats(prefix)


async def test_only_hybrid_callers_get_a_session() -> None:
    async with gated({"rules": only(tls_principal(["X25519MLKEM768"]))}) as (proxy, sessions):
        assert await call(proxy, caller(hybrid=True)) == ("X25519MLKEM768", b"ping")
        assert await call(proxy, caller(hybrid=False)) == ("X25519", b"")  # handshake done, then closed
        assert sessions == [b"ping"]  # the classical caller never reached the upstream
        stats = rbac_stats(proxy)
        assert (stats.allowed, stats.denied) == (1, 1)
        await eventually(lambda: proxy.listener_stats("tcp").downstream_pre_cx_active == 0, what="slots back")


async def test_only_ml_dsa_identities_get_a_session() -> None:
    rules = only(tls_principal(schemes=["mldsa44", "mldsa65", "mldsa87"]))
    async with gated({"rules": rules}) as (proxy, sessions):
        assert (await call(proxy, caller(hybrid=True, alg=Algorithm.ML_DSA_65)))[1] == b"ping"
        assert (await call(proxy, caller(hybrid=True)))[1] == b""  # ECDSA P-256: denied
        assert len(sessions) == 1


async def test_identity_and_deny_rules() -> None:
    """A DENY policy on the caller's SPIFFE ID closes its connection; another ID passes."""
    deny = only({"authenticated": {"principal_name": {"exact": CLIENT_ID}}}, "DENY")
    async with gated({"rules": deny}) as (proxy, sessions):
        assert (await call(proxy, caller(hybrid=True)))[1] == b""
        assert sessions == []
        assert rbac_stats(proxy).denied == 1


async def test_shadow_rules_count_and_close_nothing() -> None:
    rbac = {"shadow_rules": only(tls_principal(["X25519MLKEM768"])), "shadow_rules_stat_prefix": "pq_"}
    async with gated(rbac) as (proxy, sessions):
        assert (await call(proxy, caller(hybrid=True)))[1] == b"ping"
        assert (await call(proxy, caller(hybrid=False)))[1] == b"ping"  # would be denied: only counted
        assert len(sessions) == 2
        shadow = rbac_stats(proxy, "tcp.rbac.pq_")
        assert (shadow.shadow_allowed, shadow.shadow_denied) == (1, 1)
        assert "tcp.rbac" not in proxy.server.store.rbac  # no enforced rules, no enforced counters


async def test_network_rbac_before_the_http_connection_manager() -> None:
    """On a plaintext HCM chain (with http_inspector, whose inspected bytes are replayed):
    a peer the rules allow is served, one they deny is closed without a response."""
    direct = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]
    for prefix, served in (("127.0.0.0", True), ("10.0.0.0", False)):
        listener = http_listener(direct)
        listener["listener_filters"] = [{"name": "envoy.filters.listener.http_inspector"}]
        peers = {"direct_remote_ip": {"address_prefix": prefix, "prefix_len": 8}}
        config = {"@type": NETWORK_RBAC, "stat_prefix": "h", "rules": only(peers)}
        listener["filter_chains"][0]["filters"].insert(
            0, {"name": "envoy.filters.network.rbac", "typed_config": config}
        )
        async with (
            running_proxy(bootstrap([listener], [])) as proxy,
            wire.connect(proxy.port()) as (reader, writer),
        ):
            writer.write(wire.request())
            if served:
                assert (await wire.read_response(reader)).status == 200
            else:
                assert await wire.read_eof(reader) == b""
            stats = rbac_stats(proxy, "h.rbac")
            assert (stats.allowed, stats.denied) == ((1, 0) if served else (0, 1))
