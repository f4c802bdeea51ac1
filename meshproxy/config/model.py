"""The runtime configuration model: frozen objects compiled from Envoy's v3 protos.

Owns the shape of configuration as the data plane sees it. Everything here is immutable,
hashable where useful, and free of protobuf: the compiler (``compile.py``) is the only place
that reads protos and builds these objects, and the request path reads only these.
Must not import asyncio, sockets or generated protobuf code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Any, Literal

from meshproxy.config.policy import (
    DEFAULT_LB,
    DEFAULT_THRESHOLDS,
    HashPolicy,
    HealthCheck,
    LbConfig,
    OutlierDetection,
    RetryPolicy,
    Thresholds,
)
from meshproxy.config.regex import Regex, Rewrite

if TYPE_CHECKING:
    from meshproxy.config.filter_config import Percent
    from meshproxy.config.local_reply import LocalReplyConfig
    from meshproxy.overload.config import OverloadConfig
    from meshproxy.rbac.model import RbacFilter
    from meshproxy.tls.config import TlsConfig

# --------------------------------------------------------------------------- common


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    """envoy.config.core.v3.TcpKeepalive: SO_KEEPALIVE with its three knobs (None: the kernel's)."""

    probes: int | None = None  # TCP_KEEPCNT
    time: int | None = None  # TCP_KEEPIDLE, seconds
    interval: int | None = None  # TCP_KEEPINTVL, seconds


@dataclass(frozen=True, slots=True)
class SocketAddress:
    host: str
    port: int
    # socket_address.protocol: UDP only for a QUIC listener (udp_listener_config.quic_options).
    protocol: Literal["TCP", "UDP"] = "TCP"


@dataclass(frozen=True, slots=True)
class StringMatch:
    """envoy.type.matcher.v3.StringMatcher: exact, prefix, suffix, contains or safe_regex."""

    kind: Literal["exact", "prefix", "suffix", "contains", "regex"]
    value: str
    ignore_case: bool = False
    # Compiled once, with RE2, for kind == "regex".
    pattern: Regex | None = None


# envoy.config.core.v3.HeaderValueOption.HeaderAppendAction, lower-cased.
AppendAction = Literal[
    "append_if_exists_or_add", "add_if_absent", "overwrite_if_exists_or_add", "overwrite_if_exists"
]


@dataclass(frozen=True, slots=True)
class HeaderValueOption:
    """A header to add; names are lower-case."""

    name: str
    value: str
    action: AppendAction = "append_if_exists_or_add"


@dataclass(frozen=True, slots=True)
class HeaderMutations:
    """Headers to add and remove, for one direction (request or response), at one level."""

    to_add: tuple[HeaderValueOption, ...] = ()
    to_remove: tuple[str, ...] = ()  # lower-case names

    @property
    def empty(self) -> bool:
        return not self.to_add and not self.to_remove


NO_MUTATIONS = HeaderMutations()


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where a TLS context's certificate material came from, when it came from files: the proxy
    watches them and rotates (new handshakes use the new material; open connections carry on)."""

    certificate_chain: str
    private_key: str
    trusted_ca: str


@dataclass(frozen=True, slots=True)
class AccessLog:
    """An access log sink: a file path, or "/dev/stdout" for the stdout logger."""

    path: str


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """envoy.config.route.v3.HeaderMatcher (string_match, present_match, legacy exact/prefix/...)."""

    name: str  # lower-case
    match: StringMatch | None  # None means present_match
    present: bool = True  # for present_match: whether the header must be present
    invert: bool = False
    # treat_missing_header_as_empty
    missing_as_empty: bool = False


@dataclass(frozen=True, slots=True)
class QueryParameterMatcher:
    name: str
    match: StringMatch | None  # None means present_match
    present: bool = True


@dataclass(frozen=True, slots=True)
class RouteMatch:
    path_kind: Literal["prefix", "path", "regex", "separated_prefix"]
    path: str  # the prefix / exact path / separated prefix; the regex source for "regex"
    case_sensitive: bool = True
    pattern: Regex | None = None  # for "regex"
    headers: tuple[HeaderMatcher, ...] = ()
    query_parameters: tuple[QueryParameterMatcher, ...] = ()


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    name: str
    weight: int
    request_headers: HeaderMutations = NO_MUTATIONS
    response_headers: HeaderMutations = NO_MUTATIONS


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    pattern: Regex
    substitution: str  # as configured, in RE2's rewrite syntax
    rewrite: Rewrite = field(compare=False)  # ``substitution`` parsed


@dataclass(frozen=True, slots=True)
class RouteAction:
    """Forward to a cluster (or a weighted set of clusters)."""

    cluster: str | None = None
    weighted_clusters: tuple[WeightedCluster, ...] = ()
    total_weight: int = 0  # sum of weighted_clusters weights
    prefix_rewrite: str | None = None
    regex_rewrite: RegexRewrite | None = None
    host_rewrite_literal: str | None = None
    # Seconds; Envoy's default is 15 s; 0 disables the route timeout.
    timeout: float = 15.0
    # The route's retry_policy, or the virtual host's when the route has none.
    retry_policy: RetryPolicy | None = None
    hash_policy: tuple[HashPolicy, ...] = ()
    # max_stream_duration.max_stream_duration (0: none) and grpc_timeout_header_max
    # (None: grpc-timeout ignored; 0: honoured without a cap).
    max_stream_duration: float = 0.0
    grpc_timeout_header_max: float | None = None
    # Route.per_request_buffer_limit_bytes: the most of a request body kept for a retry.
    retry_buffer_limit: int = 64 * 1024
    # RoutingPriority: which of the cluster's circuit-breaker thresholds the request uses.
    priority: str = "DEFAULT"
    # upgrade_configs: (lower-case upgrade type, enabled) overriding the HCM's (hcm/upgrade.py).
    upgrades: tuple[tuple[str, bool], ...] = ()
    # request_mirror_policies: copies of the request, fire-and-forget (hcm/mirror.py).
    mirrors: tuple[MirrorPolicy, ...] = ()


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    """A RequestMirrorPolicy: ``percent`` of requests are copied to ``cluster`` (or, when it is
    empty, to the cluster each request's ``cluster_header`` names), whose host header gains
    ``-shadow`` unless ``shadow_suffix`` is off (disable_shadow_host_suffix_append)."""

    cluster: str
    percent: Percent
    shadow_suffix: bool = True
    cluster_header: bytes = b""  # lower-case


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Redirect:
    """envoy.config.route.v3.RedirectAction; None fields keep the request's value."""

    scheme: str | None = None  # "https" for https_redirect
    host: str | None = None
    port: int | None = None
    path: str | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: RegexRewrite | None = None
    response_code: int = 301
    strip_query: bool = False


# typed_per_filter_config compiled: (the filter's configured name, its per-route config).
FilterConfigs = tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Route:
    match: RouteMatch
    action: RouteAction | DirectResponse | Redirect
    name: str = ""
    request_headers: HeaderMutations = NO_MUTATIONS
    response_headers: HeaderMutations = NO_MUTATIONS
    # typed_per_filter_config: (filter name, compiled per-route config), compile_filters.py.
    filter_configs: FilterConfigs = ()


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]  # lower-case, as configured
    routes: tuple[Route, ...]
    request_headers: HeaderMutations = NO_MUTATIONS
    response_headers: HeaderMutations = NO_MUTATIONS
    # typed_per_filter_config: (filter name, compiled per-route config), compile_filters.py.
    filter_configs: FilterConfigs = ()


@dataclass(frozen=True, slots=True)
class RouteConfiguration:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    request_headers: HeaderMutations = NO_MUTATIONS
    response_headers: HeaderMutations = NO_MUTATIONS
    # typed_per_filter_config: (filter name, compiled per-route config), compile_filters.py.
    filter_configs: FilterConfigs = ()


# --------------------------------------------------------------------------- HTTP/2


@dataclass(frozen=True, slots=True)
class Http2Options:
    """envoy.config.core.v3.Http2ProtocolOptions, for either side of the proxy.

    Windows default to 1 MiB (Envoy: 256 MiB) so that one connection's buffering stays within
    about one ``per_connection_buffer_limit_bytes`` per stream: the proxy acknowledges DATA only
    as the other side drains it. ``max_concurrent_streams`` defaults to 1024 (Envoy: 2^31-1).
    """

    max_concurrent_streams: int = 1024
    initial_stream_window_size: int = 1024 * 1024
    initial_connection_window_size: int = 4 * 1024 * 1024
    # Frames queued towards a peer that does not read, before the connection is closed.
    max_outbound_frames: int = 10000
    hpack_table_size: int = 4096


DEFAULT_HTTP2 = Http2Options()


# --------------------------------------------------------------------------- listeners


EscapedSlashes = Literal["KEEP_UNCHANGED", "REJECT_REQUEST", "UNESCAPE_AND_REDIRECT", "UNESCAPE_AND_FORWARD"]


@dataclass(frozen=True, slots=True)
class PathPolicy:
    """The HCM's path options (``router/path.py`` applies them); all off is Envoy's default."""

    normalize: bool = False  # normalize_path
    merge_slashes: bool = False
    escaped_slashes: EscapedSlashes = "KEEP_UNCHANGED"  # path_with_escaped_slashes_action

    @property
    def active(self) -> bool:
        return self.normalize or self.merge_slashes or self.escaped_slashes != "KEEP_UNCHANGED"


NO_PATH_POLICY = PathPolicy()


@dataclass(frozen=True, slots=True)
class HttpFilter:
    """One entry of http_filters: its configured name (typed_per_filter_config's key) and its
    compiled typed_config (``compile_filters.py`` says which type each filter compiles to)."""

    name: str
    config: Any


@dataclass(frozen=True, slots=True)
class HttpConnectionManager:
    stat_prefix: str
    route_config: RouteConfiguration
    access_logs: tuple[AccessLog, ...] = ()
    # Request header block limit (Envoy: max_request_headers_kb, default 60 KiB).
    max_request_headers_bytes: int = 60 * 1024
    # Idle timeout of a downstream keep-alive connection (common_http_protocol_options.idle_timeout),
    # seconds; Envoy's default is 1 h. 0 disables.
    idle_timeout: float = 3600.0
    # stream_idle_timeout: no bytes either way on one request for this long ends it (default 5 min).
    stream_idle_timeout: float = 300.0
    # request_timeout: the whole request must arrive within this long; 0 disables (Envoy's default).
    request_timeout: float = 0.0
    generate_request_id: bool = True
    # use_remote_address: the proxy is the edge and appends the peer address to x-forwarded-for.
    use_remote_address: bool = True
    server_name: str = "meshproxy"
    # Drain timeout used when this listener is drained (drain_timeout, default 5 s).
    drain_timeout: float = 5.0
    # http_filters meshproxy runs, in order, the router (always last) left out.
    http_filters: tuple[HttpFilter, ...] = ()
    # codec_type: "AUTO" (HTTP/2 by ALPN or preface, else HTTP/1.1), "HTTP1" or "HTTP2";
    # "HTTP3" only on a QUIC listener (docs/quic.md).
    codec_type: Literal["AUTO", "HTTP1", "HTTP2", "HTTP3"] = "AUTO"
    http2: Http2Options = DEFAULT_HTTP2
    # rds.route_config_name when routes come over RDS (ADS): route_config is an empty placeholder
    # named after it until the xDS client binds the RouteConfiguration that arrived.
    rds: str = ""
    # Path normalisation before routing (normalize_path, merge_slashes, escaped slashes).
    path: PathPolicy = NO_PATH_POLICY
    # request_headers_timeout: the request head must complete within this long from the first
    # byte; 0 disables (Envoy's default; the mesh config sets 10 s).
    request_headers_timeout: float = 0.0
    # common_http_protocol_options.max_connection_duration: a downstream connection is drained
    # (Connection: close / GOAWAY) after this long; 0 disables (Envoy's default).
    max_connection_duration: float = 0.0
    # common_http_protocol_options.max_headers_count: headers per request, response or trailer
    # block (Envoy's default 100).
    max_headers_count: int = 100
    # common_http_protocol_options.headers_with_underscores_action.
    headers_with_underscores: Literal["ALLOW", "REJECT_REQUEST", "DROP_HEADER"] = "ALLOW"
    # upgrade_configs: (lower-case upgrade type, enabled); an upgrade not listed is refused 403.
    upgrades: tuple[tuple[str, bool], ...] = ()
    # tracing.provider envoy.tracers.opentelemetry: a span per request (None: not traced).
    tracing: Tracing | None = None
    # The istio.stats http filter: Istio's request metrics (None: not kept).
    istio_stats: IstioStats | None = None
    # local_reply_config: how local replies are rewritten (hcm/local_reply.py); None: as made.
    local_reply: LocalReplyConfig | None = None


@dataclass(frozen=True, slots=True)
class IstioStats:
    """The ``istio.stats`` filter (http, or network before a tcp_proxy): Istio's standard metrics
    for the chain's traffic (docs/observability.md#istio-metrics)."""

    # disable_host_header_fallback: destination_service is "unknown" instead of the Host header.
    disable_host_header_fallback: bool = False


@dataclass(frozen=True, slots=True)
class Tracing:
    """The connection manager's ``tracing`` with the envoy.tracers.opentelemetry provider:
    spans exported over OTLP/gRPC to a cluster (docs/observability.md). Sampling in percent."""

    collector: str  # grpc_service.envoy_grpc.cluster_name: where the TraceService listens
    authority: str = ""  # grpc_service.envoy_grpc.authority (default: the cluster name)
    service_name: str = ""  # the spans' resource service.name (Envoy's default: unknown_service:envoy)
    timeout: float = 0.0  # grpc_service.timeout of one export call (0: the exporter's own bound)
    max_cache_size: int = 1024  # spans held for export; past it a span is dropped and counted
    random_sampling: float = 100.0
    client_sampling: float = 100.0
    overall_sampling: float = 100.0
    max_path_tag_length: int = 256


@dataclass(frozen=True, slots=True)
class TcpProxy:
    stat_prefix: str
    cluster: str | None = None
    weighted_clusters: tuple[WeightedCluster, ...] = ()
    total_weight: int = 0
    idle_timeout: float = 3600.0  # seconds; Envoy's default is 1 h; 0 disables
    access_logs: tuple[AccessLog, ...] = ()
    # max_connect_attempts: upstream connects tried per session, each to a host picked afresh.
    max_connect_attempts: int = 1


@dataclass(frozen=True, slots=True)
class FilterChainMatch:
    destination_port: int | None = None
    server_names: tuple[str, ...] = ()  # lower-case; "*.example.com" wildcards allowed
    transport_protocol: str = ""  # "", "raw_buffer" or "tls"
    application_protocols: tuple[str, ...] = ()
    # Destination IP networks (the connection's local address, restored by original_dst).
    prefix_ranges: tuple[IPv4Network | IPv6Network, ...] = ()
    source_type: SourceType = "ANY"
    source_prefix_ranges: tuple[IPv4Network | IPv6Network, ...] = ()
    source_ports: tuple[int, ...] = ()


# FilterChainMatch.ConnectionSourceType: SAME_IP_OR_LOOPBACK is Envoy's LOCAL.
SourceType = Literal["ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL"]


@dataclass(frozen=True, slots=True)
class ConnectionLimit:
    """envoy.filters.network.connection_limit: at most ``max_connections`` connections at once
    on one filter chain (counted across every connection that chain serves)."""

    stat_prefix: str
    max_connections: int  # >= 1
    # Seconds a refused connection is held, unread, before it is closed (0: closed at once).
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class FilterChain:
    name: str
    match: FilterChainMatch
    filter: HttpConnectionManager | TcpProxy
    # transport_socket with a DownstreamTlsContext; None: plaintext.
    tls: TlsConfig | None = None
    tls_files: TlsFiles | None = None
    # transport_socket_connect_timeout: the bound on the TLS handshake (s; 0: none). Envoy has
    # no default; meshproxy bounds every downstream handshake, 10 s unless configured.
    transport_socket_connect_timeout: float = 10.0
    # A connection_limit network filter before the terminal one; None: no per-chain limit.
    connection_limit: ConnectionLimit | None = None
    # The istio.stats network filter before a tcp_proxy: Istio's TCP metrics (None: not kept).
    istio_stats: IstioStats | None = None
    # An envoy.filters.network.rbac before the terminal filter (meshproxy/rbac/); None: none.
    rbac: RbacFilter | None = None


TrafficDirection = Literal["UNSPECIFIED", "INBOUND", "OUTBOUND"]


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    address: SocketAddress
    filter_chains: tuple[FilterChain, ...]
    default_filter_chain: FilterChain | None = None
    # per_connection_buffer_limit_bytes: the bound on what one connection may buffer (1 MiB).
    buffer_limit: int = 1024 * 1024
    # listener_filters: tls_inspector / http_inspector (protocol detection before chain
    # selection), bounded by listener_filters_timeout (Envoy's default 15 s; 0: none).
    tls_inspector: bool = False
    http_inspector: bool = False
    listener_filters_timeout: float = 15.0
    # envoy.filters.listener.original_dst: the connection's local address is the one the client
    # dialled before a REDIRECT (filter-chain match, ORIGINAL_DST clusters, the access log).
    original_dst: bool = False
    # use_original_dst: a connection whose restored destination another listener is bound to
    # is handed to that listener (exact address first, then the wildcard one on that port).
    use_original_dst: bool = False
    # traffic_direction: at shutdown, INBOUND (and UNSPECIFIED) listeners drain first while
    # OUTBOUND ones keep serving the application until it has exited (docs/sidecar.md).
    traffic_direction: TrafficDirection = "UNSPECIFIED"
    # address.socket_address.ipv4_compat on an IPv6 address: one dual-stack socket (IPv4
    # clients arrive as ::ffff:a.b.c.d); otherwise an IPv6 listener is IPv6 only (Envoy's).
    ipv4_compat: bool = False
    # udp_listener_config.quic_options: a QUIC listener serving HTTP/3 (meshproxy/quic/).
    quic: QuicOptions | None = None


@dataclass(frozen=True, slots=True)
class QuicOptions:
    """A QUIC listener's transport settings (Envoy's QuicProtocolOptions; docs/quic.md)."""

    idle_timeout: float = 300.0  # quic_options.idle_timeout
    handshake_timeout: float = 20.0  # quic_options.crypto_handshake_timeout
    max_concurrent_streams: int = 100  # quic_protocol_options.max_concurrent_streams
    initial_stream_window_size: int = 16 * 1024 * 1024
    initial_connection_window_size: int = 24 * 1024 * 1024
    max_packet_length: int = 1350  # quic_protocol_options.max_packet_length (0 in Envoy: its default)


# --------------------------------------------------------------------------- clusters

HealthStatus = Literal["UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint as configured: a literal address (STATIC) or a host name (STRICT_DNS)."""

    address: SocketAddress
    weight: int = 1  # load_balancing_weight
    health_status: HealthStatus = "UNKNOWN"
    # LbEndpoint.endpoint.hostname: the key ring hash and maglev hash on (else "host:port").
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""


@dataclass(frozen=True, slots=True)
class LocalityLbEndpoints:
    locality: Locality
    endpoints: tuple[Endpoint, ...]
    weight: int = 0  # 0: unset
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    discovery: Literal["STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST"]
    localities: tuple[LocalityLbEndpoints, ...]
    connect_timeout: float = 5.0  # seconds (Envoy's default)
    lb: LbConfig = DEFAULT_LB
    dns_refresh_rate: float = 5.0  # seconds (Envoy's default)
    # dns_lookup_family: which of a name's addresses STRICT_DNS and LOGICAL_DNS use (Envoy's
    # AUTO: the IPv6 ones when there are any, else the IPv4 ones).
    dns_lookup_family: Literal["AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL"] = "AUTO"
    # Upstream keep-alive: idle pooled connections close after this long
    # (common_http_protocol_options.idle_timeout, default 1 h).
    idle_timeout: float = 3600.0
    # common_http_protocol_options.max_requests_per_connection; 0 = unlimited.
    max_requests_per_connection: int = 0
    # common_http_protocol_options.max_response_headers_kb (Envoy's default 60 KiB) and
    # max_headers_count (default 100): bounds of a response head and of its trailers.
    max_response_headers_bytes: int = 60 * 1024
    max_headers_count: int = 100
    # Bound on idle pooled connections kept per endpoint: circuit_breakers' DEFAULT
    # max_connections (Envoy's default 1024).
    max_idle_connections: int = 1024
    buffer_limit: int = 1024 * 1024
    # transport_socket with an UpstreamTlsContext; None: plaintext.
    tls: TlsConfig | None = None
    tls_files: TlsFiles | None = None
    # circuit_breakers.thresholds by routing priority ("DEFAULT", "HIGH").
    thresholds: tuple[Thresholds, ...] = (DEFAULT_THRESHOLDS,)
    outlier_detection: OutlierDetection | None = None
    health_checks: tuple[HealthCheck, ...] = ()
    # "EDS": endpoints arrive over xDS (ClusterLoadAssignment), localities start empty.
    eds_service_name: str = ""
    # Upstream HTTP/2 (http2_protocol_options, legacy or in HttpProtocolOptions'
    # explicit_http_config); None: HTTP/1.1. use_downstream_protocol: the downstream's protocol.
    http2: Http2Options | None = None
    use_downstream_protocol: bool = False
    # type ORIGINAL_DST: hosts are made on demand from each connection's original destination.
    original_dst: OriginalDstConfig | None = None
    # upstream_bind_config.source_address: the local address upstream sockets bind (port 0: any).
    source_address: SocketAddress | None = None
    # explicit_http_config.http3_protocol_options with a QuicUpstreamTransport: HTTP/3 over QUIC
    # (meshproxy/quic/upstream.py). ``http2`` then holds the same stream limit: an HTTP/3 cluster
    # takes the multiplexed path every HTTP/2 cluster takes, with a QUIC pool under it.
    http3: QuicOptions | None = None
    # auto_config with http3_protocol_options: QUIC first, and HTTP/2 over TCP and the same TLS
    # for a host whose QUIC is blocked (UDP refused or timing out); counted upstream_http3_broken.
    http3_fallback: bool = False
    # upstream_connection_options.tcp_keepalive; None: no keepalive (the socket's default).
    tcp_keepalive: TcpKeepalive | None = None


@dataclass(frozen=True, slots=True)
class OriginalDstConfig:
    """An ORIGINAL_DST cluster's original_dst_lb_config and cleanup_interval."""

    use_http_header: bool = False  # the host comes from x-envoy-original-dst-host when present
    upstream_port_override: int | None = None
    cleanup_interval: float = 5.0  # seconds a host may stay unused before it is removed


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True, slots=True)
class Node:
    id: str = ""
    cluster: str = ""


@dataclass(frozen=True, slots=True)
class Admin:
    address: SocketAddress | None = None  # None: no admin listener
    access_log_path: str | None = None


@dataclass(frozen=True, slots=True)
class DynamicResources:
    """Bootstrap dynamic_resources: ADS over gRPC to a static cluster, LDS and CDS through it; or
    LDS and CDS from files (``path_config_source``), ``ads_cluster`` then empty."""

    ads_cluster: str  # ads_config.grpc_services[0].envoy_grpc.cluster_name (a static cluster)
    delta: bool = False  # ads_config.api_type DELTA_GRPC (else GRPC: state of the world)
    lds: bool = True  # lds_config: {ads: {}}
    cds: bool = True  # cds_config: {ads: {}}
    # initial_fetch_timeout of the LDS/CDS config sources (Envoy's default 15 s; 0: wait forever):
    # how long a warming listener or cluster waits for its routes or endpoints.
    initial_fetch_timeout: float = 15.0
    # lds_config / cds_config: {path_config_source: {path: …}}: the file holding a
    # DiscoveryResponse of listeners / clusters ("" when it comes over ADS).
    lds_path: str = ""
    cds_path: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    """A whole compiled configuration: one immutable snapshot the proxy swaps atomically."""

    node: Node = field(default_factory=Node)
    admin: Admin = field(default_factory=Admin)
    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    version: str = "static"
    dynamic: DynamicResources | None = None
    # The bootstrap's overload_manager (docs/overload.md); None: no monitor, no action.
    overload: OverloadConfig | None = None
    # The envoy.config.bootstrap.v3.Bootstrap message this was compiled from (the admin's
    # /config_dump shows it, as Envoy does); not part of what the configuration is.
    bootstrap: Any = field(default=None, compare=False, repr=False)

    def cluster(self, name: str) -> Cluster | None:
        for c in self.clusters:
            if c.name == name:
                return c
        return None
