"""envoy.filters.http.rbac on real sockets: both codecs, mutual TLS with post-quantum principals,
shadow rules, per-route configuration.

Over mutual TLS, real TLS clients (meshproxy's engine) that offer X25519MLKEM768 or X25519 only,
with ECDSA P-256 or ML-DSA-65 certificates, call a listener whose HTTP RBAC asks for the hybrid
group, or for an ML-DSA identity on /admin: the one the policy admits gets the upstream's 200,
the other Envoy's 403 ``RBAC: access denied`` and the upstream never sees it. In plaintext, on
HTTP/1.1 and HTTP/2: method, path and header permissions, shadow rules that count and refuse
nothing, ``RBACPerRoute`` replacing the rules on one route and switching them off on another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from certs import make_ca, make_leaf

from meshproxy.identity.certs import Algorithm
from meshproxy.tls import TlsConfig, TlsContext
from meshproxy.tls.transport import connect_tls

from .harness import Proxy, bootstrap, cluster, http_listener, route, running_proxy
from .test_rbac_network import SERVER_ID, Session, caller, downstream_tls, tls_principal
from .upstreams import counting_upstream

HTTP_RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
CODECS = ("HTTP/1.1", "HTTP/2")
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def rbac_filter(**config: Any) -> dict[str, Any]:
    return {"name": "envoy.filters.http.rbac", "typed_config": {"@type": HTTP_RBAC, **config}}


def policy(permission: dict[str, Any], principal: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"permissions": [permission], "principals": [principal or {"any": True}]}


@contextlib.asynccontextmanager
async def proxied(
    rbac: dict[str, Any], routes: list[dict[str, Any]] | None = None, tls: bool = False
) -> AsyncIterator[tuple[Proxy, list[bytes]]]:
    """Listener "http" with ``rbac`` before the router, every route to a counting upstream."""
    async with counting_upstream() as (port, heads):
        listener = http_listener(routes or [route()], http_filters=[rbac, ROUTER])
        if tls:
            listener["filter_chains"][0]["transport_socket"] = downstream_tls(
                make_leaf(make_ca(), SERVER_ID), ["X25519MLKEM768", "X25519"]
            )
        async with running_proxy(bootstrap([listener], [cluster("backend", port)])) as proxy:
            yield proxy, heads


def client(codec: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=codec == "HTTP/1.1", http2=codec == "HTTP/2")


async def tls_get(proxy: Proxy, client_tls: TlsConfig, path: str) -> tuple[str, bytes]:
    """(negotiated group, the response's status line and body) of one HTTP/1.1 GET over mTLS."""
    loop = asyncio.get_running_loop()
    transport, session = await connect_tls(loop, "127.0.0.1", proxy.port(), TlsContext(client_tls), Session)
    group = transport.get_extra_info("tls").group
    transport.write(f"GET {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n".encode())
    try:
        async with asyncio.timeout(5):
            while not session.closed:
                session.changed.clear()
                await session.changed.wait()
    finally:
        transport.close()
    head, _, body = session.received.partition(b"\r\n\r\n")
    return group, head.split(b"\r\n", 1)[0] + b" " + body


def rbac_stats(proxy: Proxy, prefix: str = "http.http.rbac") -> Any:
    return proxy.server.store.rbac_stats(prefix)


async def test_only_hybrid_callers_pass_the_http_filter() -> None:
    rules = {
        "action": "ALLOW",
        "policies": {"hybrid": policy({"any": True}, tls_principal(["X25519MLKEM768"]))},
    }
    async with proxied(rbac_filter(rules=rules), tls=True) as (proxy, heads):
        hybrid = await tls_get(proxy, caller(hybrid=True), "/status/200")
        classical = await tls_get(proxy, caller(hybrid=False), "/status/200")
        assert hybrid[0] == "X25519MLKEM768" and hybrid[1].startswith(b"HTTP/1.1 200")
        assert classical == ("X25519", b"HTTP/1.1 403 Forbidden RBAC: access denied")
        assert len(heads) == 1  # the classical request never reached the upstream
        stats = rbac_stats(proxy)
        assert (stats.allowed, stats.denied) == (1, 1)


async def test_only_ml_dsa_identities_may_call_admin() -> None:
    """docs/authorization.md's example: a DENY of /admin to anyone not on ML-DSA."""
    ml_dsa = tls_principal(schemes=["mldsa44", "mldsa65", "mldsa87"])
    rules = {
        "action": "DENY",
        "policies": {"admin": policy({"url_path": {"path": {"prefix": "/admin"}}}, {"not_id": ml_dsa})},
    }
    async with proxied(rbac_filter(rules=rules), tls=True) as (proxy, heads):
        ecdsa, mldsa = caller(hybrid=True), caller(hybrid=True, alg=Algorithm.ML_DSA_65)
        assert (await tls_get(proxy, ecdsa, "/admin/x"))[1] == b"HTTP/1.1 403 Forbidden RBAC: access denied"
        assert (await tls_get(proxy, ecdsa, "/status/200"))[1].startswith(b"HTTP/1.1 200")
        assert (await tls_get(proxy, mldsa, "/admin/x"))[1].startswith(b"HTTP/1.1 200")
        assert [h.split(b" ")[1] for h in heads] == [b"/status/200", b"/admin/x"]


@pytest.mark.parametrize("codec", CODECS)
async def test_request_permissions_on_both_codecs(codec: str) -> None:
    """GET on /api with x-team: blue is allowed; anything else is refused with 403."""
    permission = {
        "and_rules": {
            "rules": [
                {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                {"url_path": {"path": {"prefix": "/api/"}}},
                {"header": {"name": "x-team", "string_match": {"exact": "blue"}}},
            ]
        }
    }
    rules = {"action": "ALLOW", "policies": {"api": policy(permission)}}
    async with proxied(rbac_filter(rules=rules)) as (proxy, heads), client(codec) as c:
        url = proxy.url("/api/items?page=2")
        assert (await c.get(url, headers={"x-team": "blue"})).status_code == 200
        refused = await c.get(url, headers={"x-team": "red"})
        assert (refused.status_code, refused.text) == (403, "RBAC: access denied")
        assert (await c.post(url, headers={"x-team": "blue"})).status_code == 403
        assert (await c.get(proxy.url("/other"), headers={"x-team": "blue"})).status_code == 403
        assert len(heads) == 1
        assert (rbac_stats(proxy).allowed, rbac_stats(proxy).denied) == (1, 3)


@pytest.mark.parametrize("codec", CODECS)
async def test_shadow_rules_count_and_refuse_nothing(codec: str) -> None:
    shadow = {
        "action": "DENY",
        "policies": {"no-admin": policy({"url_path": {"path": {"prefix": "/admin"}}})},
    }
    config = rbac_filter(shadow_rules=shadow, shadow_rules_stat_prefix="dry_")
    async with proxied(config) as (proxy, heads), client(codec) as c:
        assert (await c.get(proxy.url("/admin/x"))).status_code == 200
        assert (await c.get(proxy.url("/status/200"))).status_code == 200
        assert len(heads) == 2
        shadow_stats = rbac_stats(proxy, "http.http.rbac.dry_")
        assert (shadow_stats.shadow_allowed, shadow_stats.shadow_denied) == (1, 1)


async def test_per_route_rules_replace_or_switch_off_the_filter() -> None:
    """The filter denies everything; /open switches it off, /team allows only x-team: blue."""
    deny_all = {"action": "DENY", "policies": {"all": policy({"any": True})}}
    team = {
        "action": "ALLOW",
        "policies": {"blue": policy({"header": {"name": "x-team", "string_match": {"exact": "blue"}}})},
    }
    routes = [
        route("/open") | {"typed_per_filter_config": {"envoy.filters.http.rbac": {"@type": PER_ROUTE}}},
        route("/team")
        | {
            "typed_per_filter_config": {
                "envoy.filters.http.rbac": {"@type": PER_ROUTE, "rbac": {"rules": team}}
            }
        },
        route("/"),
    ]
    async with proxied(rbac_filter(rules=deny_all), routes) as (proxy, heads), httpx.AsyncClient() as c:
        assert (await c.get(proxy.url("/open/x"))).status_code == 200
        assert (await c.get(proxy.url("/team/x"), headers={"x-team": "blue"})).status_code == 200
        assert (await c.get(proxy.url("/team/x"), headers={"x-team": "red"})).status_code == 403
        assert (await c.get(proxy.url("/status/200"))).status_code == 403
        assert len(heads) == 2
        stats = rbac_stats(proxy)  # the route's rules count as the filter's
        assert (stats.allowed, stats.denied) == (1, 2)


async def test_remote_ip_follows_the_trusted_x_forwarded_for() -> None:
    """Without use_remote_address the client is x-forwarded-for's last address (Envoy's rule)."""
    rules = {
        "action": "ALLOW",
        "policies": {
            "lan": policy({"any": True}, {"remote_ip": {"address_prefix": "192.0.2.0", "prefix_len": 24}})
        },
    }
    async with proxied(rbac_filter(rules=rules)) as (proxy, _), httpx.AsyncClient() as c:
        url = proxy.url("/status/200")
        assert (await c.get(url, headers={"x-forwarded-for": "203.0.113.1, 192.0.2.7"})).status_code == 200
        assert (await c.get(url, headers={"x-forwarded-for": "192.0.2.7, 203.0.113.1"})).status_code == 403
        assert (await c.get(url)).status_code == 403  # the peer, 127.0.0.1
