"""Compiles envoy.config.listener.v3.Listener into the runtime Listener.

Owns listener addresses, filter chain matching (and Envoy's rule that no two chains of a listener
share a match), listener filters, and the two terminal network filters meshproxy runs:
http_connection_manager (whose inline route_config goes to ``compile_route``) and tcp_proxy,
and the connection_limit and rbac network filters that may stand before either (``compile_rbac``).
Must not depend on the cluster compiler: cluster names are recorded in ``Ctx.cluster_refs``.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal, cast, get_args

from envoy.config.core.v3.address_pb2 import CidrRange
from envoy.config.listener.v3 import listener_components_pb2 as lc
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.connection_limit.v3 import connection_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from meshproxy.config.compile_common import (
    Ctx,
    access_logs,
    bind_address,
    duration,
    enum_name,
    port_in_range,
    reject_fields,
    type_url,
    unpack,
    wrapped,
)
from meshproxy.config.compile_filters import http_filters
from meshproxy.config.compile_http2 import http2_options
from meshproxy.config.compile_istio import ISTIO_STATS_NAME, is_istio_stats, istio_stats
from meshproxy.config.compile_local_reply import local_reply_config
from meshproxy.config.compile_quic import QUIC_DOWNSTREAM, check_chains, quic_options, quic_transport
from meshproxy.config.compile_rbac import NETWORK_RBAC_URL, network_filter
from meshproxy.config.compile_route import check_weights, route_configuration
from meshproxy.config.compile_tls import transport_tls
from meshproxy.config.compile_tracing import tracing
from meshproxy.config.compile_upgrade import upgrade_configs
from meshproxy.config.fidelity import refuse_unsupported
from meshproxy.config.model import (
    NO_PATH_POLICY,
    ConnectionLimit,
    EscapedSlashes,
    FilterChain,
    FilterChainMatch,
    HttpConnectionManager,
    IstioStats,
    Listener,
    PathPolicy,
    RouteConfiguration,
    SourceType,
    TcpProxy,
    TrafficDirection,
    WeightedCluster,
)
from meshproxy.rbac.model import RbacFilter

_HCM = type_url(hcm.HttpConnectionManager)
_TCP_PROXY = type_url(tcp_proxy_pb2.TcpProxy)
_CONNECTION_LIMIT = type_url(connection_limit_pb2.ConnectionLimit)
_TERMINALS = "envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy"
_BEFORE_TERMINAL = (_CONNECTION_LIMIT, NETWORK_RBAC_URL)

# Listener filters accepted, by name and by typed_config type URL.
_LISTENER_FILTERS = {
    "envoy.filters.listener.tls_inspector": type_url(tls_inspector_pb2.TlsInspector),
    "envoy.filters.listener.http_inspector": type_url(http_inspector_pb2.HttpInspector),
    "envoy.filters.listener.original_dst": type_url(original_dst_pb2.OriginalDst),
}

_UNSUPPORTED_CHAIN_MATCH_FIELDS = ("address_suffix", "suffix_len", "direct_source_prefix_ranges")
_SOURCE_TYPES: dict[int, SourceType] = {
    lc.FilterChainMatch.ANY: "ANY",
    lc.FilterChainMatch.SAME_IP_OR_LOOPBACK: "SAME_IP_OR_LOOPBACK",
    lc.FilterChainMatch.EXTERNAL: "EXTERNAL",
}
_TRANSPORT_PROTOCOLS = ("", "raw_buffer", "tls")
_CODECS = {
    hcm.HttpConnectionManager.AUTO: "AUTO",
    hcm.HttpConnectionManager.HTTP1: "HTTP1",
    hcm.HttpConnectionManager.HTTP2: "HTTP2",
    hcm.HttpConnectionManager.HTTP3: "HTTP3",  # on a QUIC listener only (compile_quic.check_chains)
}
_MAX_REQUEST_HEADERS_KB = 8192  # Envoy's upper bound for max_request_headers_kb


def compile_listener(msg: listener_pb2.Listener, path: str, problems: list[str]) -> Listener | None:
    """The runtime Listener, or None after appending each problem to ``problems``."""
    return listener(msg, Ctx(path, problems))


def listener(msg: listener_pb2.Listener, ctx: Ctx) -> Listener | None:
    mark = ctx.mark()
    refuse_unsupported(msg, ctx)
    if not msg.name:
        ctx.at("name").problem("is required")
    quic = quic_options(msg, ctx) if msg.HasField("udp_listener_config") else None
    if msg.HasField("address"):
        address = bind_address(msg, ctx, who="a listener", udp=msg.HasField("udp_listener_config"))
    else:
        address = None
        ctx.at("address").problem("is required")
    inspectors = set()
    for entry, c in ctx.each("listener_filters", msg.listener_filters):
        inspectors.add(_listener_filter(entry, c))
    filters_timeout = duration(msg, "listener_filters_timeout", ctx, 15.0)
    chains = [filter_chain(fc, c) for fc, c in ctx.each("filter_chains", msg.filter_chains)]
    default = None
    if msg.HasField("default_filter_chain"):
        default = filter_chain(msg.default_filter_chain, ctx.at("default_filter_chain"))
    elif not msg.filter_chains:
        ctx.at("filter_chains").problem(
            "a listener needs at least one filter chain or a default_filter_chain"
        )
    _check_distinct_matches(chains, ctx)
    check_chains(msg, msg.HasField("udp_listener_config"), ctx)
    if msg.additional_addresses:
        ctx.at("additional_addresses").problem(
            'is not supported; for dual-stack bind "::" with socket_address.ipv4_compat: true'
        )
    direction = enum_name(msg, "traffic_direction")
    if direction not in get_args(TrafficDirection):
        ctx.at("traffic_direction").problem(f"{direction} is not a TrafficDirection")
    if address is None or not ctx.clean_since(mark):
        return None
    return Listener(
        msg.name,
        address,
        tuple(c for c in chains if c),
        default,
        wrapped(msg, "per_connection_buffer_limit_bytes", 1024 * 1024),
        tls_inspector="envoy.filters.listener.tls_inspector" in inspectors,
        http_inspector="envoy.filters.listener.http_inspector" in inspectors,
        listener_filters_timeout=filters_timeout,
        original_dst="envoy.filters.listener.original_dst" in inspectors,
        use_original_dst=wrapped(msg, "use_original_dst", False),
        traffic_direction=cast(TrafficDirection, direction),
        ipv4_compat=msg.address.socket_address.ipv4_compat and ":" in address.host,
        quic=quic,
    )


def _listener_filter(msg: lc.ListenerFilter, ctx: Ctx) -> str:
    """The filter's canonical name (by type URL when given), or "" after a problem."""
    url = msg.typed_config.type_url
    name = next((n for n, u in _LISTENER_FILTERS.items() if u == url), "") if url else msg.name
    if name not in _LISTENER_FILTERS:
        ctx.problem(f'"{url or msg.name}" is not supported; meshproxy accepts {", ".join(_LISTENER_FILTERS)}')
        return ""
    return name


def _check_distinct_matches(chains: list[FilterChain | None], ctx: Ctx) -> None:
    """Envoy refuses a listener where two filter chains match the same connection: it expands
    each match into (port, destination range, server name, transport protocol, ALPN, source
    type, source range, source port) leaves and rejects a repeat."""
    owner: dict[tuple[object, ...], int] = {}
    for index, chain in enumerate(chains):
        if chain is None:
            continue
        m = chain.match
        leaves = [
            (m.destination_port, prefix, name, m.transport_protocol, alpn, m.source_type, source, port)
            for prefix in m.prefix_ranges or (None,)
            for name in m.server_names or ("",)
            for alpn in m.application_protocols or ("",)
            for source in m.source_prefix_ranges or (None,)
            for port in m.source_ports or (None,)
        ]
        clashes = sorted({first for leaf in leaves if (first := owner.setdefault(leaf, index)) != index})
        if clashes:
            ctx.at("filter_chains", index).at("filter_chain_match").problem(
                f"matches the same connections as filter_chains[{clashes[0]}]; "
                "Envoy rejects filter chains with identical matching rules"
            )


# --------------------------------------------------------------------------- filter chains


def filter_chain(msg: lc.FilterChain, ctx: Ctx) -> FilterChain | None:
    mark = ctx.mark()
    match = _filter_chain_match(msg.filter_chain_match, ctx.at("filter_chain_match"))
    tls = tls_files = None
    if msg.transport_socket.typed_config.type_url == QUIC_DOWNSTREAM:
        tls, tls_files = quic_transport(msg.transport_socket, ctx.at("transport_socket"))
    elif msg.HasField("transport_socket"):
        tls, tls_files = transport_tls(msg.transport_socket, ctx.at("transport_socket"), server_side=True)
    terminal: HttpConnectionManager | TcpProxy | None = None
    terminals = 0
    limit: ConnectionLimit | None = None
    limits = 0
    stats: IstioStats | None = None
    rbac: RbacFilter | None = None
    rbacs = 0
    for entry, c in ctx.each("filters", msg.filters):
        url = entry.typed_config.type_url
        if is_istio_stats(entry.name, entry.typed_config):
            if terminals or stats is not None:
                c.problem(f"one {ISTIO_STATS_NAME} network filter may come before the tcp_proxy")
            stats = istio_stats(entry.typed_config, c)
        elif url == NETWORK_RBAC_URL:
            if terminals:
                c.problem("envoy.filters.network.rbac must come before the terminal filter")
            elif (rbacs := rbacs + 1) > 1:
                c.problem("a filter chain takes at most one envoy.filters.network.rbac; this is a second")
            else:
                rbac = network_filter(unpack(entry.typed_config, network_rbac.RBAC), c.at("typed_config"))
        elif url == _CONNECTION_LIMIT:
            if terminals:
                c.problem("connection_limit must come before the terminal filter")
            elif rbacs:
                # The listener counts a connection in its chain's limit before RBAC decides.
                c.problem("connection_limit must come before envoy.filters.network.rbac")
            elif (limits := limits + 1) > 1:
                c.problem("a filter chain takes at most one connection_limit, and this is a second one")
            else:
                limit = connection_limit(
                    unpack(entry.typed_config, connection_limit_pb2.ConnectionLimit), c.at("typed_config")
                )
        elif url not in (_HCM, _TCP_PROXY):
            what = f'"{entry.name}" ({url})' if url else f'"{entry.name}" without a typed_config'
            c.problem(f"network filter {what} is not supported; meshproxy runs {_TERMINALS}")
        elif (terminals := terminals + 1) > 1:
            c.problem("a filter chain has exactly one terminal filter, and this is a second one")
        elif url == _HCM:
            terminal = http_connection_manager(
                unpack(entry.typed_config, hcm.HttpConnectionManager), c.at("typed_config")
            )
        else:
            terminal = tcp_proxy(unpack(entry.typed_config, tcp_proxy_pb2.TcpProxy), c.at("typed_config"))
    if not terminals and all(f.typed_config.type_url in _BEFORE_TERMINAL for f in msg.filters):
        ctx.at("filters").problem(f"needs one terminal filter: {_TERMINALS}")
    if stats is not None and isinstance(terminal, HttpConnectionManager):
        ctx.at("filters").problem(
            f"the {ISTIO_STATS_NAME} network filter goes before a tcp_proxy; "
            f"for HTTP, give the connection manager an {ISTIO_STATS_NAME} http filter"
        )
    connect_timeout = duration(msg, "transport_socket_connect_timeout", ctx, 10.0)
    if terminal is None or not ctx.clean_since(mark):
        return None
    return FilterChain(msg.name, match, terminal, tls, tls_files, connect_timeout, limit, stats, rbac)


def connection_limit(msg: connection_limit_pb2.ConnectionLimit, ctx: Ctx) -> ConnectionLimit | None:
    """envoy.filters.network.connection_limit; ``runtime_enabled`` is refused: there is no
    runtime layer to read it from, and ignoring it could leave on a limit meant to be off."""
    mark = ctx.mark()
    if not msg.stat_prefix:
        ctx.at("stat_prefix").problem("is required")
    if not msg.HasField("max_connections"):
        ctx.at("max_connections").problem("is required")
    elif msg.max_connections.value < 1:
        ctx.at("max_connections").problem("must be at least 1")
    if msg.HasField("runtime_enabled"):
        ctx.at("runtime_enabled").problem(
            "is not supported (meshproxy has no runtime layer); leave it out: the limit is always on"
        )
    delay = duration(msg, "delay", ctx, 0.0)
    if not ctx.clean_since(mark):
        return None
    return ConnectionLimit(msg.stat_prefix, msg.max_connections.value, delay)


def _filter_chain_match(msg: lc.FilterChainMatch, ctx: Ctx) -> FilterChainMatch:
    reject_fields(msg, _UNSUPPORTED_CHAIN_MATCH_FIELDS, ctx, "is not supported in a filter_chain_match")
    port = wrapped(msg, "destination_port", None)
    if port is not None:
        port_in_range(port, ctx.at("destination_port"))
    for name, c in ctx.each("server_names", msg.server_names):
        if "*" in name and not (name.startswith("*.") and name.count("*") == 1):
            c.problem(f'"{name}": only a leading "*." wildcard is supported ("*.example.com")')
    if msg.transport_protocol not in _TRANSPORT_PROTOCOLS:
        ctx.at("transport_protocol").problem(
            f'"{msg.transport_protocol}" is not supported; use "raw_buffer" or "tls"'
        )
    for source_port, c in ctx.each("source_ports", msg.source_ports):
        port_in_range(source_port, c)
    return FilterChainMatch(
        port,
        tuple(n.lower() for n in msg.server_names),
        msg.transport_protocol,
        tuple(msg.application_protocols),
        _cidrs(ctx, "prefix_ranges", msg.prefix_ranges),
        _SOURCE_TYPES[msg.source_type],
        _cidrs(ctx, "source_prefix_ranges", msg.source_prefix_ranges),
        tuple(msg.source_ports),
    )


def _cidrs(ctx: Ctx, name: str, ranges: Iterable[CidrRange]) -> tuple[IPv4Network | IPv6Network, ...]:
    """CidrRanges as networks; host bits are cleared, as Envoy's ``CidrRange`` does."""
    networks = []
    for cidr, c in ctx.each(name, ranges):
        length = wrapped(cidr, "prefix_len", 0)
        try:
            networks.append(ip_network(f"{cidr.address_prefix}/{length}", strict=False))
        except ValueError:
            c.problem(f'"{cidr.address_prefix}/{length}" is not an IP network')
    return tuple(networks)


# --------------------------------------------------------------------------- terminal filters


def http_connection_manager(msg: hcm.HttpConnectionManager, ctx: Ctx) -> HttpConnectionManager | None:
    mark = ctx.mark()
    if not msg.stat_prefix:
        ctx.at("stat_prefix").problem("is required")
    codec = _CODECS.get(msg.codec_type)
    if codec is None:
        ctx.at("codec_type").problem(
            f"{enum_name(msg, 'codec_type')} is not supported; use AUTO, HTTP1, HTTP2 or HTTP3"
        )
    h2 = http2_options(msg, "http2_protocol_options", ctx)
    route_kind = msg.WhichOneof("route_specifier")
    routes = None
    if route_kind == "route_config":
        routes = route_configuration(msg.route_config, ctx.at("route_config"))
    elif route_kind == "rds":
        routes = _rds(msg.rds, ctx.at("rds"))
    elif route_kind is None:
        ctx.problem("needs an inline route_config or rds")
    else:
        ctx.at(route_kind).problem(f"{route_kind} is not supported; use route_config or rds over ADS")
    filters = http_filters(msg, ctx)
    stats = _istio_http_stats(msg, ctx)
    max_headers_kb = wrapped(msg, "max_request_headers_kb", 60)
    if not 0 < max_headers_kb <= _MAX_REQUEST_HEADERS_KB:
        ctx.at("max_request_headers_kb").problem(
            f"{max_headers_kb} is out of range; use 1..{_MAX_REQUEST_HEADERS_KB}"
        )
    logs = access_logs(msg.access_log, ctx)
    protocol = msg.common_http_protocol_options
    idle_timeout = duration(protocol, "idle_timeout", ctx.at("common_http_protocol_options"), 3600.0)
    stream_idle_timeout = duration(msg, "stream_idle_timeout", ctx, 300.0)
    request_timeout = duration(msg, "request_timeout", ctx, 0.0)
    drain_timeout = duration(msg, "drain_timeout", ctx, 5.0)
    path = _path_policy(msg, ctx)
    common = ctx.at("common_http_protocol_options")
    headers_timeout = duration(msg, "request_headers_timeout", ctx, 0.0)
    connection_duration = duration(protocol, "max_connection_duration", common, 0.0)
    max_headers = wrapped(protocol, "max_headers_count", 100)
    if not 1 <= max_headers <= _MAX_HEADERS_COUNT:
        common.at("max_headers_count").problem(f"{max_headers} is out of range; use 1..{_MAX_HEADERS_COUNT}")
    underscores = enum_name(protocol, "headers_with_underscores_action")
    if protocol.HasField("max_stream_duration"):
        common.at("max_stream_duration").problem(
            "is not supported; use the route's max_stream_duration.max_stream_duration"
        )
    if protocol.HasField("max_requests_per_connection"):
        common.at("max_requests_per_connection").problem("is not supported")
    upgrades = upgrade_configs(msg.upgrade_configs, ctx, route=False)
    traced = tracing(msg.tracing, ctx.at("tracing")) if msg.HasField("tracing") else None
    local_reply = None
    if msg.HasField("local_reply_config"):
        local_reply = local_reply_config(msg.local_reply_config, ctx.at("local_reply_config"))
    if routes is None or not ctx.clean_since(mark):
        return None
    return HttpConnectionManager(
        stat_prefix=msg.stat_prefix,
        route_config=routes,
        access_logs=logs,
        max_request_headers_bytes=max_headers_kb * 1024,
        idle_timeout=idle_timeout,
        stream_idle_timeout=stream_idle_timeout,
        request_timeout=request_timeout,
        generate_request_id=wrapped(msg, "generate_request_id", True),
        # Envoy's default is false: the proxy trusts x-forwarded-for unless told it is the edge.
        use_remote_address=wrapped(msg, "use_remote_address", False),
        server_name=msg.server_name or "meshproxy",
        drain_timeout=drain_timeout,
        http_filters=filters,
        codec_type=codec or "AUTO",  # type: ignore[arg-type]  # _CODECS maps onto the Literal
        http2=h2,
        rds=msg.rds.route_config_name if route_kind == "rds" else "",
        path=path,
        request_headers_timeout=headers_timeout,
        max_connection_duration=connection_duration,
        max_headers_count=max_headers,
        headers_with_underscores=cast(Underscores, underscores),
        upgrades=upgrades,
        tracing=traced,
        istio_stats=stats,
        local_reply=local_reply,
    )


# Envoy caps max_headers_count at the uint32 range; beyond a few thousand a head is an attack.
_MAX_HEADERS_COUNT = 10_000
Underscores = Literal["ALLOW", "REJECT_REQUEST", "DROP_HEADER"]


def _path_policy(msg: hcm.HttpConnectionManager, ctx: Ctx) -> PathPolicy:
    """normalize_path, merge_slashes and path_with_escaped_slashes_action (router/path.py).
    Envoy's IMPLEMENTATION_SPECIFIC_DEFAULT is KEEP_UNCHANGED there, and here."""
    action = enum_name(msg, "path_with_escaped_slashes_action")
    if action == "IMPLEMENTATION_SPECIFIC_DEFAULT":
        action = "KEEP_UNCHANGED"
    if action not in get_args(EscapedSlashes):
        ctx.at("path_with_escaped_slashes_action").problem(f"{action} is not a known action")
        action = "KEEP_UNCHANGED"
    if msg.HasField("path_normalization_options"):
        ctx.at("path_normalization_options").problem("is not supported; use normalize_path and merge_slashes")
    policy = PathPolicy(
        normalize=wrapped(msg, "normalize_path", False),
        merge_slashes=msg.merge_slashes,
        escaped_slashes=cast(EscapedSlashes, action),
    )
    return policy if policy.active else NO_PATH_POLICY


def _rds(msg: hcm.Rds, ctx: Ctx) -> RouteConfiguration | None:
    """RDS over ADS: an empty placeholder named after the RouteConfiguration; the xDS client
    subscribes to it and binds the real one before the listener takes traffic."""
    mark = ctx.mark()
    if not msg.route_config_name:
        ctx.at("route_config_name").problem("is required")
    if msg.config_source.WhichOneof("config_source_specifier") != "ads":
        ctx.at("config_source").problem("only ads: {} is supported (routes over the ADS stream)")
    if not ctx.clean_since(mark):
        return None
    return RouteConfiguration(msg.route_config_name, ())


def _istio_http_stats(msg: hcm.HttpConnectionManager, ctx: Ctx) -> IstioStats | None:
    """The istio.stats http filter, at most once (it reports each request at its end; the
    http_filters registry passes it over)."""
    stats = None
    for entry, c in ctx.each("http_filters", msg.http_filters):
        if not entry.disabled and is_istio_stats(entry.name, entry.typed_config):
            if stats is not None:
                c.problem(f"a second {ISTIO_STATS_NAME} is not supported; give one filter")
            stats = istio_stats(entry.typed_config, c)
    return stats


def tcp_proxy(msg: tcp_proxy_pb2.TcpProxy, ctx: Ctx) -> TcpProxy | None:
    mark = ctx.mark()
    if not msg.stat_prefix:
        ctx.at("stat_prefix").problem("is required")
    kind = msg.WhichOneof("cluster_specifier")
    weighted: list[WeightedCluster] = []
    if kind == "cluster" and msg.cluster:
        ctx.at("cluster").refer_cluster(msg.cluster)
    elif kind == "weighted_clusters":
        wctx = ctx.at("weighted_clusters")
        for entry, c in wctx.each("clusters", msg.weighted_clusters.clusters):
            if entry.name:
                c.at("name").refer_cluster(entry.name)
            else:
                c.at("name").problem("is required")
            if entry.weight < 1:
                c.at("weight").problem("must be at least 1")
            weighted.append(WeightedCluster(entry.name, entry.weight))
        check_weights(weighted, wctx)
    else:
        ctx.problem("a tcp_proxy needs cluster or weighted_clusters")
    idle_timeout = duration(msg, "idle_timeout", ctx, 3600.0)
    logs = access_logs(msg.access_log, ctx)
    attempts = wrapped(msg, "max_connect_attempts", 1)
    if attempts < 1:
        ctx.at("max_connect_attempts").problem("must be at least 1")
    if not ctx.clean_since(mark):
        return None
    return TcpProxy(
        msg.stat_prefix,
        msg.cluster or None,
        tuple(weighted),
        sum(w.weight for w in weighted),
        idle_timeout,
        logs,
        attempts,
    )
