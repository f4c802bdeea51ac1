"""Corpus files meshproxy refuses, each with the exact problems it reports (paths included).

What each refusal is about: extension points meshproxy does not run (Lua, Wasm,
ext_authz), protocols it does not decode (Redis, MySQL), tracers other than OpenTelemetry,
and transports it does not open (Unix-socket clusters and admin, non-ADS gRPC config sources).
"""

from __future__ import annotations

from .corpus import refused

FILTER0 = "static_resources.listeners[0].filter_chains[0].filters[0]"
HCM = f"{FILTER0}.typed_config"
ONLY_FILTERS = (
    "is not supported; meshproxy runs those of docs/configuration.md#http-filters (mark a filter is_optional "
    "to have it skipped)"
)
ONLY_TERMINALS = (
    "is not supported; meshproxy runs envoy.filters.network.http_connection_manager or "
    "envoy.filters.network.tcp_proxy"
)
PIPE = "pipe addresses are not supported; give a socket_address with address and port_value"
SDS = (
    "secrets over SDS (sds_config) arrive with the xDS issue; name a static_resources.secrets entry, "
    "or give the certificate inline or by filename"
)
NOT_ADS = (
    "must be {ads: {}} (listeners and clusters over the ADS stream) or "
    "{path_config_source: {path: …}} (from a file)"
)


def _http_filter(name: str, message: str) -> str:
    return f'{HCM}.http_filters[0]: http filter "{name}" (type.googleapis.com/{message}) {ONLY_FILTERS}'


refused(
    "ext-authz-grpc",
    "no external authorization filter; RBAC covers identities, paths and methods",
    _http_filter("envoy.filters.http.ext_authz", "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"),
)
refused(
    "lua",
    "no Lua runtime: scripts cannot run",
    _http_filter("envoy.filters.http.lua", "envoy.extensions.filters.http.lua.v3.Lua"),
)
refused(
    "wasm",
    "no WebAssembly runtime: plugins cannot run",
    _http_filter("envoy.filters.http.wasm", "envoy.extensions.filters.http.wasm.v3.Wasm"),
)
refused(
    "redis",
    "no Redis protocol proxy (tcp_proxy carries Redis as opaque TCP)",
    f'{FILTER0}: network filter "envoy.filters.network.redis_proxy" '
    f"(type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy) {ONLY_TERMINALS}",
)
refused(
    "mysql",
    "no MySQL protocol filter; its message type is not even known (tcp_proxy alone carries MySQL)",
    f'{HCM}.@type: "type.googleapis.com/envoy.extensions.filters.network.mysql_proxy.v3.MySQLProxy" '
    "names no message of the Envoy, xDS or UDPA APIs meshproxy knows",
    f'{FILTER0}: network filter "envoy.filters.network.mysql_proxy" without a typed_config {ONLY_TERMINALS}',
)
refused(
    "zipkin",
    "the Zipkin tracer is not implemented (OpenTelemetry is the tracer meshproxy runs)",
    f"{HCM}.tracing.provider.typed_config: type.googleapis.com/envoy.config.trace.v3.ZipkinConfig is not "
    "supported; meshproxy traces with envoy.tracers.opentelemetry "
    "(envoy.config.trace.v3.OpenTelemetryConfig)",
)
refused(
    "edge-best-practices",
    "a per-route idle_timeout, and the shrink_heap overload action (CPython cannot return freed memory)",
    f"{HCM}.route_config.virtual_hosts[0].routes[0].route.idle_timeout: is not supported: a per-route idle "
    "timeout is not supported; use the connection manager's",
    "overload_manager.actions[0].name: shrink_heap is not supported: CPython keeps freed memory in its own "
    "arenas and cannot return it on demand; use stop_accepting_requests or reduce_timeouts",
)
refused(
    "istio-sidecar-uds",
    "clusters on Unix sockets (the agent's XDS socket); the TLS form to istiod is accepted",
    f"static_resources.clusters[2].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address: {PIPE}",
    'dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: "xds-grpc" is not a static '
    "cluster (static clusters: agent, prometheus_stats)",
)
refused(
    "contour",
    "the admin interface and a cluster on Unix sockets, SDS from files for the xDS cluster's "
    "certificates, LDS/CDS each on its own gRPC source rather than ADS; the ADS form with "
    "certificate files is accepted (contour-ads-tls)",
    f"admin.address: {PIPE}",
    "static_resources.clusters[0].transport_socket.typed_config.common_tls_context."
    f"tls_certificate_sds_secret_configs[0].sds_config: {SDS}",
    "static_resources.clusters[0].transport_socket.typed_config.common_tls_context."
    f"validation_context_sds_secret_config.sds_config: {SDS}",
    f"static_resources.clusters[1].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address: {PIPE}",
    f"dynamic_resources.lds_config.api_config_source: {NOT_ADS}",
    f"dynamic_resources.cds_config.api_config_source: {NOT_ADS}",
    "dynamic_resources.ads_config: is required: api_type GRPC or DELTA_GRPC with one envoy_grpc service",
)
refused(
    "header-substitution",
    "header values with %COMMAND% substitutions (sending the command text instead would change what "
    "the upstream and the client see)",
    *(
        f"{HCM}.route_config.virtual_hosts[0].routes[0].{field}.header.value: '{value}' asks for a "
        "substitution (%…%), which is not supported; write a literal % as %%"
        for field, value in (
            ("request_headers_to_add[0]", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
            ("response_headers_to_add[0]", "%UPSTREAM_REMOTE_ADDRESS%"),
            ("response_headers_to_add[1]", "%START_TIME(%s)%"),
        )
    ),
)
