"""Corpus checks for the HTTP filters and observability shapes: cors, fault (percentage and
header-controlled), rbac (HTTP and network), local replies, the health_check filter, request
mirroring and OpenTelemetry tracing.

Each check starts the proxy on its rewritten file and asserts over real sockets what the file
asks for: who answers (the proxy or the upstream), with which status and headers.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib

from integration.harness import eventually
from integration.test_tracing import collector
from integration.upstreams import counting_upstream

from .cases_http import echoed_headers, served_by
from .corpus import Env, accepted
from .tls import request

ORIGIN = "http://app.example.com"
PREFLIGHT = [("origin", ORIGIN), ("access-control-request-method", "GET")]


@accepted(
    "cors",
    "preflights on the open route are answered by the proxy with the allowed origin and methods, "
    "an actual response carries access-control-allow-origin; the restricted route answers only its "
    "origins; on the disabled route the preflight goes to the upstream",
    backend_service="svc1",
)
async def cors(env: Env) -> None:
    async with env.proxy():
        open_ = await request(env.port(), "/cors/open", method="OPTIONS", headers=PREFLIGHT)
        actual = await request(env.port(), "/cors/open", headers=[("origin", ORIGIN)])
        other = await request(env.port(), "/cors/restricted", method="OPTIONS", headers=PREFLIGHT)
        allowed = await request(
            env.port(),
            "/cors/restricted",
            headers=[("origin", "https://www.envoyproxy.io")],
        )
        disabled = await request(env.port(), "/cors/disabled", method="OPTIONS", headers=PREFLIGHT)
    assert open_.status == 200 and open_.get("access-control-allow-origin") == ORIGIN
    assert (open_.get("access-control-allow-methods"), open_.get("access-control-max-age")) == ("GET", "600")
    assert actual.get("access-control-allow-origin") == ORIGIN and json.loads(actual.body)["server"] == "svc1"
    assert other.get("access-control-allow-origin") is None
    assert allowed.get("access-control-allow-origin") == "https://www.envoyproxy.io"
    assert json.loads(disabled.body)["method"] == "OPTIONS"  # the upstream answered it


@accepted(
    "fault-injection",
    "requests with x-inject-fault are aborted 503 by the proxy; the others reach the upstream",
    backend="svc1",
)
async def fault_injection(env: Env) -> None:
    async with env.proxy():
        faulted = await request(env.port(), "/", headers=[("x-inject-fault", "1")])
        passed = await served_by(env.port())
    assert faulted.status == 503 and b"fault filter abort" in faulted.body
    assert passed == "svc1"


@accepted(
    "fault-delay-header",
    "x-envoy-fault-abort-request aborts with the status it names; x-envoy-fault-delay-request "
    "delays the request by its milliseconds before it reaches the upstream",
    backend="svc1",
)
async def fault_delay_header(env: Env) -> None:
    async with env.proxy():
        aborted = await request(env.port(), "/", headers=[("x-envoy-fault-abort-request", "418")])
        started = time.monotonic()
        delayed = await served_by(env.port(), headers=[("x-envoy-fault-delay-request", "300")])
        waited = time.monotonic() - started
    assert aborted.status == 418
    assert delayed == "svc1" and waited >= 0.3


@accepted(
    "health-check-filter",
    "/healthz is answered 200 by the proxy itself (pass_through_mode false); other paths reach the upstream",
    backend="svc1",
)
async def health_check_filter(env: Env) -> None:
    async with env.proxy():
        health = await request(env.port(), "/healthz")
        passed = await served_by(env.port(), "/other")
    assert health.status == 200 and b"svc1" not in health.body
    assert passed == "svc1"


@accepted(
    "rbac-http",
    "GET from loopback is allowed (readers), POST is denied 403 unless it is to /admin with x-role: admin",
    backend="svc1",
)
async def rbac_http(env: Env) -> None:
    async with env.proxy():
        read = await served_by(env.port())
        denied = await request(env.port(), "/", method="POST")
        admin = await request(env.port(), "/admin/users", method="POST", headers=[("x-role", "admin")])
    assert read == "svc1"
    assert (denied.status, denied.body) == (403, b"RBAC: access denied")
    assert admin.status == 200


@accepted(
    "rbac-network",
    "a connection from a denied source address is closed before any byte reaches the upstream; "
    "one from another loopback address is relayed",
    tcp_service="svc1",
)
async def rbac_network(env: Env) -> None:
    async with env.proxy():
        denied = await _raw_get(env.port("tcp_rbac"), "127.0.0.1")
        relayed = await _raw_get(env.port("tcp_rbac"), "127.0.0.2")
    assert denied == b""
    assert relayed.startswith(b"HTTP/1.1 200")


async def _raw_get(port: int, source: str) -> bytes:
    """What a connection from ``source`` gets back for one GET (until the proxy or server closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            return await reader.read()
    except ConnectionError:
        return b""
    finally:
        writer.close()


@accepted(
    "local-reply",
    "a local 503 (no healthy upstream) is rewritten by the mapper to 502 with its header and the "
    "JSON body format",
    unreachable="dead",
)
async def local_reply(env: Env) -> None:
    async with env.proxy():
        resp = await request(env.port(), "/")
    assert resp.status == 502
    assert resp.get("x-local-reply") == "mapped"
    body = json.loads(resp.body)
    assert body["status"] == 502 and body["flags"] == "UF"


@accepted(
    "opentelemetry",
    "each request is a span exported over OTLP/gRPC to the collector cluster (a real TraceService), "
    "under the file's service_name; the upstream receives the span's W3C traceparent",
    service_1="svc1",
    otel_collector="otel",
)
async def opentelemetry(env: Env) -> None:
    async with collector() as (found, env.ports["otel"]):
        async with env.proxy():
            resp = await request(env.port(), "/trace/1")
        assert resp.status == 200
        traceparent = echoed_headers(resp.body)["traceparent"]
        ((service, span),) = found.spans
    assert service == "front-envoy"
    assert traceparent.split("-")[1] == span.trace_id.hex()


@accepted(
    "route-mirror",
    "each primary request is answered by its service while a copy (host with -shadow) reaches the "
    "mirror cluster, fixed on one route and taken from x-mirror-cluster on the other",
    service1="svc1",
    service2="svc2",
    service1_mirror="mirror",
    service2_mirror="mirror",
)
async def route_mirror(env: Env) -> None:
    async with counting_upstream() as (env.ports["mirror"], heads), env.proxy():
        one = await served_by(env.port(), "/service/1")
        two = await served_by(env.port(), "/service/2", headers=[("x-mirror-cluster", "service2-mirror")])
        await eventually(lambda: len(heads) == 2, what="both copies reached the mirror")
    assert (one, two) == ("svc1", "svc2")
    lines = sorted(head.split(b"\r\n")[0] for head in heads)
    assert lines == [b"GET /service/1 HTTP/1.1", b"GET /service/2 HTTP/1.1"]
    assert all(b"example.com-shadow" in head.lower() for head in heads)


@accepted(
    "gzip",
    "a JSON response is gzip-compressed for a client that accepts it (vary added), plain otherwise",
    backend="svc1",
)
async def gzip_compressor(env: Env) -> None:
    async with env.proxy():
        packed = await request(env.port(), "/", headers=[("accept-encoding", "gzip")])
        plain = await request(env.port(), "/")
    assert packed.status == 200 and packed.get("content-encoding") == "gzip"
    assert packed.get("vary") == "accept-encoding"
    assert json.loads(zlib.decompress(packed.body, 16 + zlib.MAX_WBITS))["server"] == "svc1"
    assert plain.get("content-encoding") is None and json.loads(plain.body)["server"] == "svc1"
