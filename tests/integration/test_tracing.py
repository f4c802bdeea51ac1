"""Tracing across two sidecars, exported to a real OTLP TraceService (opentelemetry-proto).

client → sidecar A (OUTBOUND listener: CLIENT spans) ══ PQ mTLS ══▶ sidecar B (INBOUND listener:
SERVER spans) → application, both with ``tracing.provider`` envoy.tracers.opentelemetry naming a
cluster that points at a grpc.aio TraceService started in the test. Covers one trace with the
client and server spans linked, the traceparent the application receives, an incoming sampled
traceparent honoured, unsampled requests exporting nothing, and a dead collector costing the
requests nothing while its drops are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from certs import make_ca, make_leaf
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from meshproxy.tracing import export, w3c

from .harness import Proxy, bootstrap, cluster, eventually, free_port, http_listener, route, running_proxy
from .test_mesh_mtls import CLIENT_ID, SERVER_ID, inbound, outbound
from .upstreams import aiohttp_upstream, body_json

OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP TraceService that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []  # (service.name, span)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                self.spans += [(service, span) for span in scope_spans.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


@contextlib.asynccontextmanager
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    server = grpc.aio.server()
    found = Collector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield found, port
    finally:
        await server.stop(None)


def traced(doc: dict[str, Any], direction: str, collector_port: int, service: str, **sampling: Any) -> None:
    """Turn on tracing in a sidecar's bootstrap (its one listener), exporting to ``collector_port``."""
    listener = doc["static_resources"]["listeners"][0]
    listener["traffic_direction"] = direction
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["tracing"] = {
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": OTEL,
                "grpc_service": {"envoy_grpc": {"cluster_name": "otel"}, "timeout": "1s"},
                "service_name": service,
                "max_cache_size": 8,
            },
        },
        **{name: {"value": value} for name, value in sampling.items()},
    }
    doc["static_resources"]["clusters"].append(cluster("otel", collector_port))


@contextlib.asynccontextmanager
async def traced_mesh(
    app: int, collector_port: int, tmp_path: pathlib.Path, **sampling: Any
) -> AsyncIterator[tuple[Proxy, Proxy]]:
    b_doc = inbound(app, make_leaf(make_ca(), SERVER_ID))
    traced(b_doc, "INBOUND", collector_port, "backend", **sampling)
    async with running_proxy(b_doc) as b:
        a_doc = outbound(b.port("inbound"), make_leaf(make_ca(), CLIENT_ID), tmp_path / "a.log")
        traced(a_doc, "OUTBOUND", collector_port, "frontend", **sampling)
        async with running_proxy(a_doc) as a:
            yield a, b


def attributes(span: trace_pb2.Span) -> dict[str, Any]:
    return {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes}


@pytest.mark.parametrize("h2", [False, True], ids=["http1", "h2c"])
async def test_one_trace_holds_the_client_and_the_server_span_linked(
    tmp_path: pathlib.Path, h2: bool
) -> None:
    async with (
        collector() as (found, port),
        aiohttp_upstream("app") as app,
        traced_mesh(app, port, tmp_path) as (a, b),
        httpx.AsyncClient(http1=not h2, http2=h2) as http,
    ):
        response = await http.get(a.url("/echo/x?q=1", "outbound"))
        assert response.status_code == 200 and response.http_version == ("HTTP/2" if h2 else "HTTP/1.1")
        sent = [p.server.store.tracing_stats("otel") for p in (a, b)]
        # The collector holds the spans a moment before each Export call returns.
        await eventually(lambda: [s.otel_spans_sent for s in sent] == [1, 1], what="two spans sent")
        assert len(found.spans) == 2
    spans = {service: span for service, span in found.spans}
    client, server = spans["frontend"], spans["backend"]
    assert client.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert server.kind == trace_pb2.Span.SPAN_KIND_SERVER
    assert client.trace_id == server.trace_id and len(client.trace_id) == 16
    assert client.parent_span_id == b"", "the client span starts the trace"
    assert server.parent_span_id == client.span_id
    assert client.start_time_unix_nano <= server.start_time_unix_nano <= server.end_time_unix_nano
    assert server.end_time_unix_nano <= client.end_time_unix_nano
    # The application sees B's span as its parent, sampled.
    seen = dict(body_json(response.content)["headers"])  # type: ignore[arg-type]
    parsed = w3c.parse(seen["traceparent"].encode())
    assert parsed == (server.trace_id.hex().encode(), server.span_id.hex().encode(), 1)
    tags = attributes(server)
    assert tags["http.method"] == "GET" and tags["http.status_code"] == 200
    assert tags["upstream_cluster"] == "app"
    assert tags["peer.spiffe_id"] == CLIENT_ID and tags["tls.group"] == "X25519MLKEM768"
    assert tags["http.url"].endswith("/echo/x?q=1")
    assert attributes(client)["upstream_cluster"] == "mesh"
    assert attributes(client)["http.protocol"] == ("HTTP/2" if h2 else "HTTP/1.1")
    assert "peer.spiffe_id" not in attributes(client), "A's downstream is the plaintext application"


async def test_an_incoming_traceparent_is_honoured_and_unsampled_requests_export_nothing(
    tmp_path: pathlib.Path,
) -> None:
    trace_id, parent = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    async with (
        collector() as (found, port),
        aiohttp_upstream("app") as app,
        traced_mesh(app, port, tmp_path, random_sampling=0) as (a, _),
        httpx.AsyncClient() as http,
    ):
        unsampled = await http.get(a.url("/echo/no", "outbound"))
        assert unsampled.status_code == 200
        seen = dict(body_json(unsampled.content)["headers"])  # type: ignore[arg-type]
        decided = w3c.parse(seen["traceparent"].encode())
        assert decided is not None and decided[2] == 0, "the decision travels: not sampled"
        incoming = {"traceparent": w3c.encode(trace_id, parent, True).decode(), "tracestate": "v=1"}
        sampled = await http.get(a.url("/echo/yes", "outbound"), headers=incoming)
        assert sampled.status_code == 200
        await eventually(lambda: len(found.spans) >= 2, what="the sampled request's spans")
        # Both spans of the unsampled request would have been queued before these two.
        assert len(found.spans) == 2
    spans = {service: span for service, span in found.spans}
    client, server = spans["frontend"], spans["backend"]
    assert int.from_bytes(client.trace_id, "big") == trace_id
    assert int.from_bytes(client.parent_span_id, "big") == parent
    assert client.trace_state == "v=1" and server.trace_state == "v=1"
    assert server.parent_span_id == client.span_id


async def test_a_dead_collector_costs_requests_nothing_and_drops_are_counted(tmp_path: pathlib.Path) -> None:
    dead = free_port()
    async with aiohttp_upstream("app") as app, traced_mesh(app, dead, tmp_path) as (a, _):
        async with httpx.AsyncClient() as http:
            responses = await asyncio.gather(*(http.get(a.url(f"/echo/{i}", "outbound")) for i in range(20)))
        assert [r.status_code for r in responses] == [200] * 20
        stats = a.server.store.tracing_stats("otel")
        await eventually(lambda: stats.otel_spans_dropped == 20, what="every span dropped")
        assert stats.otel_export_failures >= 1 and stats.otel_spans_sent == 0


async def test_spans_still_queued_when_the_proxy_stops_are_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "BATCH_WINDOW", 60.0)  # the exporter's task would wait a minute
    async with collector() as (found, port), aiohttp_upstream("app") as app:
        doc = bootstrap([http_listener([route("/", "app")])], [cluster("app", app)])
        traced(doc, "OUTBOUND", port, "edge")
        async with running_proxy(doc) as proxy, httpx.AsyncClient() as http:
            assert (await http.get(proxy.url("/x"))).status_code == 200
            stats = proxy.server.store.tracing_stats("otel")
        assert [service for service, _ in found.spans] == ["edge"]
        assert stats.otel_spans_sent == 1
