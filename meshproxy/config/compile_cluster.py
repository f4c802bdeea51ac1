"""Compiles envoy.config.cluster.v3.Cluster into the runtime Cluster.

Owns discovery type and lb_policy admission, the static load assignment (localities, endpoints,
weights, priorities, health) and the upstream HTTP protocol options, whether given on the cluster
or through typed_extension_protocol_options.
Must not depend on the listener or route compilers.
"""

from __future__ import annotations

from typing import Literal, get_args

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

from meshproxy.config.compile_common import (
    Ctx,
    duration,
    enum_name,
    reject_fields,
    socket_address,
    type_url,
    unpack,
    wrapped,
)
from meshproxy.config.compile_tls import transport_tls
from meshproxy.config.model import Cluster, Endpoint, HealthStatus, Locality, LocalityLbEndpoints

_DISCOVERY: dict[int, Literal["STATIC", "STRICT_DNS"]] = {
    cluster_pb2.Cluster.STATIC: "STATIC",
    cluster_pb2.Cluster.STRICT_DNS: "STRICT_DNS",
}
_STATIC_NEEDS_IP = "STATIC cluster endpoints must be IP addresses; use type STRICT_DNS for host names"
_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_MAX_PRIORITY = 128  # Envoy's bound on LocalityLbEndpoints.priority
# Upstream protocols other than HTTP/1.1 (the deprecated cluster fields and the typed options).
_UPSTREAM_H2_FIELDS = ("http2_protocol_options", "http3_protocol_options", "auto_config")
_UPSTREAM_H2_REASON = "upstream HTTP/2 and HTTP/3 are not supported yet; use http_protocol_options (HTTP/1.1)"


def compile_cluster(msg: cluster_pb2.Cluster, path: str, problems: list[str]) -> Cluster | None:
    """The runtime Cluster, or None after appending each problem to ``problems``."""
    return cluster(msg, Ctx(path, problems))


def cluster(msg: cluster_pb2.Cluster, ctx: Ctx) -> Cluster | None:
    mark = ctx.mark()
    if not msg.name:
        ctx.at("name").problem("is required")
    discovery = _DISCOVERY.get(msg.type)
    if msg.HasField("cluster_type"):
        ctx.at("cluster_type").problem(
            "custom cluster types are not supported; use type STATIC or STRICT_DNS"
        )
    elif discovery is None:
        ctx.at("type").problem(f"{enum_name(msg, 'type')} is not supported; use STATIC or STRICT_DNS")
    if msg.lb_policy != cluster_pb2.Cluster.ROUND_ROBIN or msg.HasField("load_balancing_policy"):
        field = "load_balancing_policy" if msg.HasField("load_balancing_policy") else "lb_policy"
        ctx.at(field).problem(
            "only ROUND_ROBIN is supported for now; the upstream-policy issue brings the others"
        )
    reject_fields(msg, ("transport_socket_matches",), ctx, "is not supported; give one transport_socket")
    tls = tls_files = None
    if msg.HasField("transport_socket"):
        tls, tls_files = transport_tls(msg.transport_socket, ctx.at("transport_socket"), server_side=False)
    connect_timeout = duration(msg, "connect_timeout", ctx, 5.0)
    if connect_timeout <= 0:
        ctx.at("connect_timeout").problem("must be greater than 0")
    dns_refresh_rate = duration(msg, "dns_refresh_rate", ctx, 5.0)
    if dns_refresh_rate < 0.001:
        ctx.at("dns_refresh_rate").problem("must be at least 1ms")
    # Only a STATIC cluster needs IP literals; STRICT_DNS resolves names (and an unsupported
    # type has been reported already).
    require_ip = _STATIC_NEEDS_IP if discovery == "STATIC" else None
    localities = tuple(
        _locality_endpoints(e, c, require_ip)
        for e, c in ctx.at("load_assignment").each("endpoints", msg.load_assignment.endpoints)
    )
    idle_timeout, max_requests = _http_protocol_options(msg, ctx)
    max_idle = _max_connections(msg)
    if discovery is None or not ctx.clean_since(mark):
        return None
    return Cluster(
        name=msg.name,
        discovery=discovery,
        localities=localities,
        connect_timeout=connect_timeout,
        dns_refresh_rate=dns_refresh_rate,
        idle_timeout=idle_timeout,
        max_requests_per_connection=max_requests,
        max_idle_connections=max_idle,
        tls=tls,
        tls_files=tls_files,
        buffer_limit=wrapped(msg, "per_connection_buffer_limit_bytes", 1024 * 1024),
    )


def _max_connections(msg: cluster_pb2.Cluster) -> int:
    """The DEFAULT-priority ``circuit_breakers`` ``max_connections`` (Envoy's default: 1024).

    Today it bounds the idle connections pooled per endpoint; the upstream-policy issue
    enforces it (and the other thresholds) as admission limits.
    """
    for threshold in msg.circuit_breakers.thresholds:
        if threshold.priority == 0 and threshold.HasField("max_connections"):
            return max(1, threshold.max_connections.value)
    return 1024


def _locality_endpoints(msg: ec.LocalityLbEndpoints, ctx: Ctx, require_ip: str | None) -> LocalityLbEndpoints:
    lb_config = msg.WhichOneof("lb_config")
    if lb_config:
        ctx.at(lb_config).problem("is not supported; list the endpoints in lb_endpoints")
    weight = wrapped(msg, "load_balancing_weight", 0)
    if msg.HasField("load_balancing_weight") and weight < 1:
        ctx.at("load_balancing_weight").problem("must be at least 1")
    if msg.priority > _MAX_PRIORITY:
        ctx.at("priority").problem(f"{msg.priority} is out of range; use 0..{_MAX_PRIORITY}")
    endpoints = [_lb_endpoint(e, c, require_ip) for e, c in ctx.each("lb_endpoints", msg.lb_endpoints)]
    locality = msg.locality
    return LocalityLbEndpoints(
        Locality(locality.region, locality.zone, locality.sub_zone),
        tuple(e for e in endpoints if e),
        weight,
        msg.priority,
    )


def _lb_endpoint(msg: ec.LbEndpoint, ctx: Ctx, require_ip: str | None) -> Endpoint | None:
    if msg.WhichOneof("host_identifier") != "endpoint":
        ctx.problem("needs an endpoint with an address (endpoint_name is not supported)")
        return None
    weight = wrapped(msg, "load_balancing_weight", 1)
    if weight < 1:
        ctx.at("load_balancing_weight").problem("must be at least 1")
    address = socket_address(msg.endpoint.address, ctx.at("endpoint").at("address"), require_ip=require_ip)
    health = enum_name(msg, "health_status")
    if health not in get_args(HealthStatus):
        ctx.at("health_status").problem(f"{health} is not a HealthStatus")
        return None
    return None if address is None else Endpoint(address, weight, health)  # type: ignore[arg-type]


def _http_protocol_options(msg: cluster_pb2.Cluster, ctx: Ctx) -> tuple[float, int]:
    """(idle_timeout, max_requests_per_connection) from common_http_protocol_options, found on
    the cluster (deprecated) or in the typed HttpProtocolOptions extension (both is an error)."""
    reject_fields(msg, _UPSTREAM_H2_FIELDS, ctx, _UPSTREAM_H2_REASON)
    common: protocol_pb2.HttpProtocolOptions = msg.common_http_protocol_options
    common_ctx = ctx.at("common_http_protocol_options")
    if _HTTP_OPTIONS_KEY in msg.typed_extension_protocol_options:
        octx = ctx.at("typed_extension_protocol_options", _HTTP_OPTIONS_KEY)
        packed = msg.typed_extension_protocol_options[_HTTP_OPTIONS_KEY]
        if packed.type_url != type_url(hpo.HttpProtocolOptions):
            octx.problem(f'"{packed.type_url}" is not an {_HTTP_OPTIONS_KEY}')
            return 3600.0, 0
        options = unpack(packed, hpo.HttpProtocolOptions)
        reject_fields(options, _UPSTREAM_H2_FIELDS, octx, _UPSTREAM_H2_REASON)
        reject_fields(
            options.explicit_http_config,
            _UPSTREAM_H2_FIELDS,
            octx.at("explicit_http_config"),
            _UPSTREAM_H2_REASON,
        )
        if msg.HasField("common_http_protocol_options"):
            common_ctx.problem(
                "cannot be set both here and in typed_extension_protocol_options; "
                f"keep the one in {_HTTP_OPTIONS_KEY}"
            )
        common, common_ctx = options.common_http_protocol_options, octx.at("common_http_protocol_options")
    idle_timeout = duration(common, "idle_timeout", common_ctx, 3600.0)
    max_requests = wrapped(
        common, "max_requests_per_connection", wrapped(msg, "max_requests_per_connection", 0)
    )
    return idle_timeout, max_requests
