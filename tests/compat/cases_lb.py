"""Corpus checks for load-balancing and connection shapes: outlier ejection, ring hash and maglev
affinity, least request, the connection_limit filter, ORIGINAL_DST by header, protocol detection
with http_inspector.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

from integration import wire
from integration.harness import eventually
from integration.upstreams import tcp_echo_upstream

from .cases_http import echoed_headers, served_by
from .corpus import Env, accepted
from .tls import request

APPS = {"app_1": "svc1", "app_2": "svc2", "app_3": "svc3"}


@accepted(
    "outlier-detection",
    "after two consecutive failures the refusing endpoint is ejected; every later request reaches "
    "the healthy one",
    app_1="dead",
    app_2="svc1",
)
async def outlier_detection(env: Env) -> None:
    async with env.proxy() as proxy:
        stats = proxy.cluster_stats("app")
        for _ in range(6):  # round robin: the dead endpoint fails every other request
            if stats.outlier_detection_ejections_active:
                break
            await request(env.port("ingress"))
        await eventually(lambda: stats.outlier_detection_ejections_active == 1, what="the ejection")
        served = [await served_by(env.port("ingress")) for _ in range(6)]
    assert served == ["svc1"] * 6


@accepted(
    "ring-hash-sticky",
    "each user (x-user-id) always reaches the same backend; the users spread over the backends",
    **APPS,
)
async def ring_hash_sticky(env: Env) -> None:
    async with env.proxy():
        served = {
            user: {await served_by(env.port("ingress"), headers=[("x-user-id", user)]) for _ in range(3)}
            for user in (f"user-{n}" for n in range(12))
        }
    assert all(len(backends) == 1 for backends in served.values()), served
    assert len(set().union(*served.values())) > 1


@accepted("maglev-source-ip", "every request from one client address reaches the same backend", **APPS)
async def maglev_source_ip(env: Env) -> None:
    async with env.proxy():
        served = {await served_by(env.port("ingress")) for _ in range(8)}
    assert len(served) == 1


@accepted(
    "least-request",
    "with two choices among weighted endpoints both are used, the heavier one more often",
    **APPS,
)
async def least_request(env: Env) -> None:
    async with env.proxy():
        served = collections.Counter([await served_by(env.port("ingress")) for _ in range(40)])
    assert set(served) == {"svc1", "svc2"} and served["svc2"] > served["svc1"]


@accepted(
    "connection-limit",
    "a second concurrent connection is closed without reaching the upstream while the first is served",
    app="svc1",
)
async def connection_limit(env: Env) -> None:
    async with env.proxy() as proxy, wire.connect(env.port("limited")) as (reader, writer):
        writer.write(wire.request("GET", "/first"))
        first = await wire.read_response(reader)
        async with wire.connect(env.port("limited")) as (second, _):
            async with asyncio.timeout(wire.TIMEOUT):
                refused = await second.read()
        writer.write(wire.request("GET", "/again"))
        again = await wire.read_response(reader)
        limited = proxy.server.store.connection_limit_stats("limited").limited_connections
    assert first.status == again.status == 200
    assert refused == b""
    assert limited == 1


@accepted(
    "original-dst-header",
    "each request reaches the address its x-envoy-original-dst-host header names",
)
async def original_dst_header(env: Env) -> None:
    async with env.proxy():
        served = [
            await served_by(
                env.port("egress"), headers=[("x-envoy-original-dst-host", f"127.0.0.1:{env.ports[name]}")]
            )
            for name in ("svc1", "svc2", "svc1")
        ]
        missing = await request(env.port("egress"))
    assert served == ["svc1", "svc2", "svc1"]
    assert missing.status == 503


@accepted(
    "http-inspector",
    "an HTTP request on the port takes the HTTP chain (its route's header reaches the app); "
    "opaque bytes take the tcp_proxy chain to the other service",
    http_app="svc1",
    tcp_app="tcp-echo",
)
async def http_inspector(env: Env) -> None:
    async with contextlib.AsyncExitStack() as stack:
        env.ports["tcp-echo"] = await stack.enter_async_context(tcp_echo_upstream(greeting=b"echo:"))
        await stack.enter_async_context(env.proxy())
        http = await request(env.port("detect"), "/")
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port("detect"))
        writer.write(b"\x16\x00binary hello")
        writer.write_eof()
        async with asyncio.timeout(wire.TIMEOUT):
            opaque = await reader.read()
        writer.close()
    assert echoed_headers(http.body)["x-detected"] == "http"
    assert opaque == b"echo:\x16\x00binary hello"


@accepted(
    "istio-registry-only",
    "a connection to a destination no chain registers takes the default chain to BlackHoleCluster "
    "and is closed with nothing relayed (the registered range needs interception to be reached)",
)
async def istio_registry_only(env: Env) -> None:
    async with env.proxy() as proxy, wire.connect(env.port("virtualOutbound")) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n")
        async with asyncio.timeout(wire.TIMEOUT):
            got = await reader.read()
        blackholed = proxy.server.store.tcp_stats("BlackHoleCluster").downstream_cx_no_route
    assert got == b""
    assert blackholed == 1
