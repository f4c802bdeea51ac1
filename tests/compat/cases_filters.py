"""Corpus checks for the HTTP filters and observability shapes (cors, fault, rbac, request
mirroring, local replies, the health_check filter, tracing)."""

from __future__ import annotations

from integration.test_tracing import collector

from .cases_http import echoed_headers
from .cases_refused import HCM, _http_filter
from .corpus import Env, accepted, refused
from .tls import request

PENDING = "not yet implemented in this branch"
refused(
    "cors", PENDING, _http_filter("envoy.filters.http.cors", "envoy.extensions.filters.http.cors.v3.Cors")
)
refused(
    "fault-injection",
    PENDING,
    _http_filter("envoy.filters.http.fault", "envoy.extensions.filters.http.fault.v3.HTTPFault"),
)
refused(
    "fault-delay-header",
    PENDING,
    _http_filter("envoy.filters.http.fault", "envoy.extensions.filters.http.fault.v3.HTTPFault"),
)
refused(
    "health-check-filter",
    PENDING,
    _http_filter(
        "envoy.filters.http.health_check", "envoy.extensions.filters.http.health_check.v3.HealthCheck"
    ),
)
refused(
    "rbac-http",
    PENDING,
    _http_filter("envoy.filters.http.rbac", "envoy.extensions.filters.http.rbac.v3.RBAC"),
)
refused(
    "rbac-network",
    PENDING,
    'static_resources.listeners[0].filter_chains[0].filters[0]: network filter "envoy.filters.network.rbac" (type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC) is not supported; meshproxy runs envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy',
)
refused(
    "local-reply", PENDING, f"{HCM}.local_reply_config: is not supported: local replies are not rewritten"
)
refused(
    "route-mirror",
    PENDING,
    *(
        f"{HCM}.route_config.virtual_hosts[0].routes[{i}].route.request_mirror_policies: is not supported: request mirroring is not supported"
        for i in (0, 1)
    ),
)
refused(
    "tcp-proxy-weighted",
    PENDING,
    f"{HCM}.max_connect_attempts: is not supported: a session connects upstream once",
)


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
