"""Corpus checks for the HTTP filters and observability shapes (cors, fault, rbac, request
mirroring, local replies, the health_check filter, tracing)."""

from __future__ import annotations

from .cases_refused import HCM, _http_filter
from .corpus import refused

PENDING = "not yet implemented in this branch"
refused("cors", PENDING, _http_filter("envoy.filters.http.cors", "envoy.extensions.filters.http.cors.v3.Cors"))
refused("fault-injection", PENDING, _http_filter("envoy.filters.http.fault", "envoy.extensions.filters.http.fault.v3.HTTPFault"))
refused("fault-delay-header", PENDING, _http_filter("envoy.filters.http.fault", "envoy.extensions.filters.http.fault.v3.HTTPFault"))
refused("health-check-filter", PENDING, _http_filter("envoy.filters.http.health_check", "envoy.extensions.filters.http.health_check.v3.HealthCheck"))
refused("rbac-http", PENDING, _http_filter("envoy.filters.http.rbac", "envoy.extensions.filters.http.rbac.v3.RBAC"))
refused("rbac-network", PENDING, 'static_resources.listeners[0].filter_chains[0].filters[0]: network filter "envoy.filters.network.rbac" (type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC) is not supported; meshproxy runs envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy')
refused("local-reply", PENDING, f"{HCM}.local_reply_config: is not supported: local replies are not rewritten")
refused("opentelemetry", PENDING, f"{HCM}.tracing: is not supported: meshproxy does not trace requests")
refused("route-mirror", PENDING, *(f"{HCM}.route_config.virtual_hosts[0].routes[{i}].route.request_mirror_policies: is not supported: request mirroring is not supported" for i in (0, 1)))
refused("tcp-proxy-weighted", PENDING, f"{HCM}.max_connect_attempts: is not supported: a session connects upstream once")
