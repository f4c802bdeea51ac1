"""Compiles envoy.config.cluster.v3.Cluster into the runtime Cluster, and an EDS
ClusterLoadAssignment into localities.

Owns discovery type admission (STATIC, STRICT_DNS, EDS with an ADS or self config source), the
load assignment (localities, endpoints, weights, priorities, health, overprovisioning) and the
upstream HTTP protocol options, whether given on the cluster or through
typed_extension_protocol_options. Load balancing is ``compile_lb``'s; breakers, outlier detection
and health checks are ``compile_upstream_policy``'s.
Must not depend on the listener or route compilers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from ipaddress import ip_address
from typing import Literal, get_args

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2 as ec
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

from meshproxy.config.compile_common import (
    Ctx,
    duration,
    enum_name,
    finish,
    port_in_range,
    reject_fields,
    socket_address,
    type_url,
    unpack,
    wrapped,
)
from meshproxy.config.compile_http2 import upstream_protocol
from meshproxy.config.compile_lb import lb_config
from meshproxy.config.compile_quic import QUIC_UPSTREAM, quic_cluster, quic_transport
from meshproxy.config.compile_tls import transport_tls
from meshproxy.config.compile_upstream_policy import health_check, outlier_detection, thresholds
from meshproxy.config.fidelity import refuse_unsupported
from meshproxy.config.model import (
    Cluster,
    Endpoint,
    HealthStatus,
    Locality,
    LocalityLbEndpoints,
    OriginalDstConfig,
    SocketAddress,
    TcpKeepalive,
)
from meshproxy.config.policy import DEFAULT_LB

_DISCOVERY: dict[int, Literal["STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST"]] = {
    cluster_pb2.Cluster.STATIC: "STATIC",
    cluster_pb2.Cluster.STRICT_DNS: "STRICT_DNS",
    cluster_pb2.Cluster.LOGICAL_DNS: "LOGICAL_DNS",
    cluster_pb2.Cluster.EDS: "EDS",
    cluster_pb2.Cluster.ORIGINAL_DST: "ORIGINAL_DST",
}
_DNS_FAMILIES: dict[int, Literal["AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL"]] = {
    cluster_pb2.Cluster.AUTO: "AUTO",
    cluster_pb2.Cluster.V4_ONLY: "V4_ONLY",
    cluster_pb2.Cluster.V6_ONLY: "V6_ONLY",
    cluster_pb2.Cluster.V4_PREFERRED: "V4_PREFERRED",
    cluster_pb2.Cluster.ALL: "ALL",
}
_DISCOVERY_NAMES = "STATIC, STRICT_DNS, LOGICAL_DNS, EDS or ORIGINAL_DST"
_ONLY_CLUSTER_PROVIDED = "is not valid for a cluster of type ORIGINAL_DST; only CLUSTER_PROVIDED is allowed"
_BIND_FIELDS = ("freebind", "socket_options", "extra_source_addresses", "additional_source_addresses")
_STATIC_NEEDS_IP = "STATIC cluster endpoints must be IP addresses; use type STRICT_DNS for host names"
_EDS_NEEDS_IP = "EDS endpoints must be IP addresses"
_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_MAX_PRIORITY = 128  # Envoy's bound on LocalityLbEndpoints.priority
_OVERPROVISIONING = 140  # Envoy's default overprovisioning_factor (percent)
# Upstream protocols other than HTTP/1.1 (the deprecated cluster fields and the typed options).
# Upstream protocols meshproxy does not speak (HTTP/2 is compiled by ``compile_http2``).
_UPSTREAM_H2_FIELDS = ("http3_protocol_options", "auto_config")
_UPSTREAM_H2_REASON = (
    "upstream HTTP/3 needs a QuicUpstreamTransport, and ALPN auto_config is not supported; "
    "use HTTP/1.1, HTTP/2 or HTTP/3 options"
)


def compile_cluster(msg: cluster_pb2.Cluster, path: str, problems: list[str]) -> Cluster | None:
    """The runtime Cluster, or None after appending each problem to ``problems``. Usable alone
    for a CDS resource: an EDS cluster comes back with no localities and its ``eds_service_name``."""
    return cluster(msg, Ctx(path, problems))


def compile_load_assignment(
    msg: endpoint_pb2.ClusterLoadAssignment, path: str, problems: list[str]
) -> tuple[tuple[LocalityLbEndpoints, ...], int]:
    """An EDS resource's localities and overprovisioning factor (percent). Each problem is
    appended to ``problems``; the result is meaningful only when none was."""
    return finish(compile_load_assignment_steps(msg, path, problems))


def compile_load_assignment_steps(
    msg: endpoint_pb2.ClusterLoadAssignment, path: str, problems: list[str]
) -> Generator[None, None, tuple[tuple[LocalityLbEndpoints, ...], int]]:
    """``compile_load_assignment`` one endpoint per step: the generator yields after each
    endpoint (10-30 us each) and returns the result, so the xDS client can let its event loop
    run inside a cluster of thousands of endpoints."""
    return load_assignment_steps(msg, Ctx(path, problems), _EDS_NEEDS_IP)


def cluster(msg: cluster_pb2.Cluster, ctx: Ctx) -> Cluster | None:
    mark = ctx.mark()
    refuse_unsupported(msg, ctx)
    if not msg.name:
        ctx.at("name").problem("is required")
    discovery = _DISCOVERY.get(msg.type)
    if msg.HasField("cluster_type"):
        ctx.at("cluster_type").problem(f"custom cluster types are not supported; use type {_DISCOVERY_NAMES}")
        discovery = None
    elif discovery is None:
        ctx.at("type").problem(f"{enum_name(msg, 'type')} is not supported; use {_DISCOVERY_NAMES}")
    original_dst = None
    if discovery == "ORIGINAL_DST":
        lb, original_dst = DEFAULT_LB, _original_dst(msg, ctx)
    else:
        lb = lb_config(msg, ctx)
        if msg.HasField("original_dst_lb_config"):
            ctx.at("original_dst_lb_config").problem("is only for a cluster of type ORIGINAL_DST")
    source_address = _bind(msg, ctx) if msg.HasField("upstream_bind_config") else None
    keepalive = _tcp_keepalive(msg, ctx)
    reject_fields(msg, ("transport_socket_matches",), ctx, "is not supported; give one transport_socket")
    tls = tls_files = None
    quic = msg.transport_socket.typed_config.type_url == QUIC_UPSTREAM
    if quic:
        tls, tls_files = quic_transport(msg.transport_socket, ctx.at("transport_socket"))
    elif msg.HasField("transport_socket"):
        tls, tls_files = transport_tls(msg.transport_socket, ctx.at("transport_socket"), server_side=False)
    connect_timeout = duration(msg, "connect_timeout", ctx, 5.0)
    if connect_timeout <= 0:
        ctx.at("connect_timeout").problem("must be greater than 0")
    dns_refresh_rate = duration(msg, "dns_refresh_rate", ctx, 5.0)
    if dns_refresh_rate < 0.001:
        ctx.at("dns_refresh_rate").problem("must be at least 1ms")
    localities: tuple[LocalityLbEndpoints, ...] = ()
    overprovisioning = _OVERPROVISIONING
    eds_service_name = ""
    if discovery == "EDS":
        eds_service_name = _eds(msg, ctx)
    elif discovery == "ORIGINAL_DST":
        if msg.HasField("load_assignment"):
            ctx.at("load_assignment").problem(
                "an ORIGINAL_DST cluster has no load assignment: its hosts are the connections' destinations"
            )
    else:
        # Only a STATIC cluster needs IP literals; STRICT_DNS resolves names (and an unsupported
        # type has been reported already).
        require_ip = _STATIC_NEEDS_IP if discovery == "STATIC" else None
        localities, overprovisioning = load_assignment(
            msg.load_assignment, ctx.at("load_assignment"), require_ip
        )
        if discovery == "LOGICAL_DNS" and sum(len(loc.endpoints) for loc in localities) != 1:
            ctx.at("load_assignment").problem(
                "a LOGICAL_DNS cluster needs exactly one locality with exactly one lb_endpoint"
            )
    breakers = thresholds(msg.circuit_breakers, ctx.at("circuit_breakers"))
    outliers = (
        outlier_detection(msg.outlier_detection, ctx.at("outlier_detection"))
        if msg.HasField("outlier_detection")
        else None
    )
    checks = [health_check(h, c) for h, c in ctx.each("health_checks", msg.health_checks)]
    idle_timeout, max_requests, max_response_headers_kb, max_headers = _http_protocol_options(msg, ctx, quic)
    http2, use_downstream = upstream_protocol(msg, ctx)
    http3, quic_h2, fallback = quic_cluster(msg, quic, ctx)
    if http3 is not None:
        http2 = quic_h2
    if discovery is None or not ctx.clean_since(mark):
        return None
    if overprovisioning != lb.overprovisioning_factor:
        lb = dataclasses.replace(lb, overprovisioning_factor=overprovisioning)
    return Cluster(
        name=msg.name,
        discovery=discovery,
        dns_lookup_family=_DNS_FAMILIES[msg.dns_lookup_family],
        localities=localities,
        connect_timeout=connect_timeout,
        lb=lb,
        dns_refresh_rate=dns_refresh_rate,
        idle_timeout=idle_timeout,
        max_requests_per_connection=max_requests,
        max_response_headers_bytes=max_response_headers_kb * 1024,
        max_headers_count=max_headers,
        # The DEFAULT max_connections also bounds the idle connections pooled per endpoint.
        max_idle_connections=max(1, breakers[0].max_connections),
        tls=tls,
        tls_files=tls_files,
        buffer_limit=wrapped(msg, "per_connection_buffer_limit_bytes", 1024 * 1024),
        thresholds=breakers,
        outlier_detection=outliers,
        health_checks=tuple(h for h in checks if h is not None),
        eds_service_name=eds_service_name,
        http2=http2,
        use_downstream_protocol=use_downstream,
        original_dst=original_dst,
        source_address=source_address,
        http3=http3,
        http3_fallback=fallback,
        tcp_keepalive=keepalive,
    )


def _tcp_keepalive(msg: cluster_pb2.Cluster, ctx: Ctx) -> TcpKeepalive | None:
    """upstream_connection_options.tcp_keepalive: each value ≥ 1 when given (0 means nothing
    to the kernel and Envoy refuses it)."""
    if not msg.upstream_connection_options.HasField("tcp_keepalive"):
        return None
    keepalive = msg.upstream_connection_options.tcp_keepalive
    kctx = ctx.at("upstream_connection_options").at("tcp_keepalive")
    values: list[int | None] = []
    for name in ("keepalive_probes", "keepalive_time", "keepalive_interval"):
        value = wrapped(keepalive, name, None)
        if value is not None and value < 1:
            kctx.at(name).problem("must be at least 1")
        values.append(value)
    return TcpKeepalive(*values)


def _original_dst(msg: cluster_pb2.Cluster, ctx: Ctx) -> OriginalDstConfig:
    """An ORIGINAL_DST cluster's lb_policy (Envoy allows only CLUSTER_PROVIDED, its own load
    balancer), original_dst_lb_config and cleanup_interval."""
    if msg.lb_policy != cluster_pb2.Cluster.CLUSTER_PROVIDED or msg.HasField("load_balancing_policy"):
        where = "load_balancing_policy" if msg.HasField("load_balancing_policy") else "lb_policy"
        what = enum_name(msg, "lb_policy") if where == "lb_policy" else "a load_balancing_policy"
        ctx.at(where).problem(f"{what} {_ONLY_CLUSTER_PROVIDED}")
    config = msg.original_dst_lb_config
    octx = ctx.at("original_dst_lb_config")
    if config.http_header_name not in ("", "x-envoy-original-dst-host"):
        octx.at("http_header_name").problem("is not supported; the header is x-envoy-original-dst-host")
    reject_fields(config, ("metadata_key",), octx, "is not supported; meshproxy reads no endpoint metadata")
    port = wrapped(config, "upstream_port_override", None)
    if port is not None:
        port_in_range(port, octx.at("upstream_port_override"))
    cleanup = duration(msg, "cleanup_interval", ctx, 5.0)
    if cleanup <= 0:
        ctx.at("cleanup_interval").problem("must be greater than 0")
    return OriginalDstConfig(config.use_http_header, port, cleanup)


def _bind(msg: cluster_pb2.Cluster, ctx: Ctx) -> SocketAddress | None:
    """upstream_bind_config.source_address: the address upstream sockets bind (port 0: any)."""
    bctx = ctx.at("upstream_bind_config")
    reject_fields(msg.upstream_bind_config, _BIND_FIELDS, bctx, "is not supported; give source_address")
    source, sctx = msg.upstream_bind_config.source_address, bctx.at("source_address")
    try:
        host = str(ip_address(source.address))
    except ValueError:
        sctx.at("address").problem(f'"{source.address}" is not an IP address')
        return None
    if source.WhichOneof("port_specifier") == "named_port":
        sctx.at("named_port").problem("named ports are not supported; use port_value")
    if not port_in_range(source.port_value, sctx.at("port_value"), allow_zero=True):
        return None
    return SocketAddress(host, source.port_value)


def _eds(msg: cluster_pb2.Cluster, ctx: Ctx) -> str:
    """The EDS resource name (``service_name``, else the cluster's name). Endpoints arrive over
    the ADS stream the proxy already has, so only the ``ads`` and ``self`` config sources are taken."""
    if not msg.HasField("eds_cluster_config"):
        ctx.at("eds_cluster_config").problem("is required for type EDS; give eds_config {ads: {}}")
        return ""
    ectx = ctx.at("eds_cluster_config").at("eds_config")
    source = msg.eds_cluster_config.eds_config.WhichOneof("config_source_specifier")
    if source is None:
        ectx.problem("needs ads or self (endpoints come over the ADS stream)")
    elif source not in ("ads", "self"):
        ectx.at(source).problem("is not supported; use ads or self (endpoints come over the ADS stream)")
    if msg.load_assignment.endpoints:
        ctx.at("load_assignment").at("endpoints").problem(
            "an EDS cluster's endpoints come from EDS; remove them or use type STATIC"
        )
    return msg.eds_cluster_config.service_name or msg.name


def load_assignment(
    msg: endpoint_pb2.ClusterLoadAssignment, ctx: Ctx, require_ip: str | None
) -> tuple[tuple[LocalityLbEndpoints, ...], int]:
    return finish(load_assignment_steps(msg, ctx, require_ip))


def load_assignment_steps(
    msg: endpoint_pb2.ClusterLoadAssignment, ctx: Ctx, require_ip: str | None
) -> Generator[None, None, tuple[tuple[LocalityLbEndpoints, ...], int]]:
    refuse_unsupported(msg, ctx)
    localities = []
    for e, c in ctx.each("endpoints", msg.endpoints):
        localities.append((yield from _locality_endpoints_steps(e, c, require_ip)))
    policy, pctx = msg.policy, ctx.at("policy")
    if policy.drop_overloads:
        pctx.at("drop_overloads").problem("is not supported; meshproxy does not drop requests by category")
    factor = wrapped(policy, "overprovisioning_factor", _OVERPROVISIONING)
    if factor < 1:
        pctx.at("overprovisioning_factor").problem("must be greater than 0")
    return tuple(localities), factor


def _locality_endpoints_steps(
    msg: ec.LocalityLbEndpoints, ctx: Ctx, require_ip: str | None
) -> Generator[None, None, LocalityLbEndpoints]:
    lb_config = msg.WhichOneof("lb_config")
    if lb_config:
        ctx.at(lb_config).problem("is not supported; list the endpoints in lb_endpoints")
    weight = wrapped(msg, "load_balancing_weight", 0)
    if msg.HasField("load_balancing_weight") and weight < 1:
        ctx.at("load_balancing_weight").problem("must be at least 1")
    if msg.priority > _MAX_PRIORITY:
        ctx.at("priority").problem(f"{msg.priority} is out of range; use 0..{_MAX_PRIORITY}")
    endpoints = []
    for e, c in ctx.each("lb_endpoints", msg.lb_endpoints):
        endpoints.append(_lb_endpoint(e, c, require_ip))
        yield
    locality = msg.locality
    return LocalityLbEndpoints(
        Locality(locality.region, locality.zone, locality.sub_zone),
        tuple(e for e in endpoints if e),
        weight,
        msg.priority,
    )


def _lb_endpoint(msg: ec.LbEndpoint, ctx: Ctx, require_ip: str | None) -> Endpoint | None:
    refuse_unsupported(msg, ctx)
    kind = msg.WhichOneof("host_identifier")
    if kind != "endpoint":
        (ctx.at(kind) if kind else ctx).problem(
            "needs an endpoint with an address (endpoint_name is not supported)"
        )
        return None
    weight = wrapped(msg, "load_balancing_weight", 1)
    if weight < 1:
        ctx.at("load_balancing_weight").problem("must be at least 1")
    address = socket_address(msg.endpoint.address, ctx.at("endpoint").at("address"), require_ip=require_ip)
    health = enum_name(msg, "health_status")
    if health not in get_args(HealthStatus):
        ctx.at("health_status").problem(f"{health} is not a HealthStatus")
        return None
    if address is None:
        return None
    if msg.endpoint.health_check_config.port_value not in (0, address.port):
        # Envoy's examples write the endpoint's own port here; another port is not probed.
        ctx.at("endpoint").at("health_check_config").at("port_value").problem(
            f"{msg.endpoint.health_check_config.port_value} is not supported: health checks probe the "
            f"endpoint's own port ({address.port}); leave it out or give that port"
        )
        return None
    return Endpoint(address, weight, health, msg.endpoint.hostname)  # type: ignore[arg-type]  # health: a proto enum name


def _http_protocol_options(msg: cluster_pb2.Cluster, ctx: Ctx, quic: bool) -> tuple[float, int, int, int]:
    """(idle_timeout, max_requests_per_connection, max_response_headers_kb, max_headers_count)
    from common_http_protocol_options, found on the cluster (deprecated) or in the typed
    HttpProtocolOptions extension (both is an error). ``quic``: the cluster's transport socket is
    a QuicUpstreamTransport, whose explicit_http_config.http3_protocol_options ``compile_quic`` reads."""
    reject_fields(msg, _UPSTREAM_H2_FIELDS, ctx, _UPSTREAM_H2_REASON)
    common: protocol_pb2.HttpProtocolOptions = msg.common_http_protocol_options
    common_ctx = ctx.at("common_http_protocol_options")
    if _HTTP_OPTIONS_KEY in msg.typed_extension_protocol_options:
        octx = ctx.at("typed_extension_protocol_options", _HTTP_OPTIONS_KEY)
        packed = msg.typed_extension_protocol_options[_HTTP_OPTIONS_KEY]
        if packed.type_url != type_url(hpo.HttpProtocolOptions):
            octx.problem(f'"{packed.type_url}" is not an {_HTTP_OPTIONS_KEY}')
            return 3600.0, 0, _MAX_RESPONSE_HEADERS_KB, _MAX_HEADERS_COUNT
        options = unpack(packed, hpo.HttpProtocolOptions)
        reject_fields(
            options, ("http3_protocol_options",) if quic else _UPSTREAM_H2_FIELDS, octx, _UPSTREAM_H2_REASON
        )
        reject_fields(
            options.explicit_http_config,
            _UPSTREAM_H2_FIELDS[1:] if quic else _UPSTREAM_H2_FIELDS,
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
    headers_kb = wrapped(common, "max_response_headers_kb", _MAX_RESPONSE_HEADERS_KB)
    if not 1 <= headers_kb <= 8192:  # Envoy's proto bounds
        common_ctx.at("max_response_headers_kb").problem(f"{headers_kb} is out of range; use 1..8192")
    max_headers = wrapped(common, "max_headers_count", _MAX_HEADERS_COUNT)
    if max_headers < 1:
        common_ctx.at("max_headers_count").problem("must be at least 1")
    return idle_timeout, max_requests, headers_kb, max_headers


# Envoy's defaults for a response head: 60 KiB and 100 headers (also per trailer block).
_MAX_RESPONSE_HEADERS_KB = 60
_MAX_HEADERS_COUNT = 100
