"""Counters, gauges and histograms owned by the proxy, declared once, and their exposition.

Owns every statistic the data plane keeps. Each stat object's class body *is* its table: one
line per stat, ``name: type = counter(help) | gauge(help) | histogram(help)``. The
``StatTable`` metaclass turns those lines into ``__slots__`` and initial values, the collector
exports them (name, type and help) through prometheus-client, ``/stats`` lists them, and
``python -m meshproxy.stats`` renders ``docs/stats.md`` from the same table (a unit test checks
the committed file). Per DESIGN decision 7 the request path only does attribute increments on
these slotted objects (no properties, no locks, no label lookups); labels are attached once, at
scrape time. Stat objects are keyed by name (stat prefix, cluster, listener) in a ``Store`` so
they survive a configuration swap. One module though long: most of it is the tables themselves,
and splitting them from their readers would bring back the declarations in several places.
Must not import asyncio or the data plane.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from meshproxy.overload.stats import doc_rows as overload_doc_rows
from meshproxy.tls.inventory import CryptoInventory
from meshproxy.tls.inventory import doc_rows as inventory_doc_rows

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily

# Envoy's default histogram buckets, in milliseconds.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
)  # fmt: skip

# The label of the response-code-class counters, kept as a list indexed by ``status // 100``.
CODE_CLASS = "code_class"

Kind = Literal["counter", "gauge", "histogram"]


class Histogram:
    """A fixed-bucket histogram; ``observe`` is one bisect and two additions (the total count
    is the sum of the buckets, computed at scrape time)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_MS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        acc = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append((repr(float(bound)), acc))
        out.append(("+Inf", acc + self.counts[-1]))
        return out


@dataclass(frozen=True, slots=True)
class Stat:
    """One line of a stat table. ``by`` names a second label: the value is then a dict from
    that label's value to a count (or, for ``CODE_CLASS``, a list indexed by status class).
    ``across_workers``: how ``--concurrency`` sums a gauge over the workers (``max`` where each
    worker holds its own copy of one thing, such as a cluster's membership)."""

    kind: Kind
    help: str
    by: str | None = None
    across_workers: Literal["sum", "max"] = "sum"

    def initial(self) -> int | list[int] | dict[str, int] | Histogram:
        if self.kind == "histogram":
            return Histogram()
        if self.by == CODE_CLASS:
            return [0, 0, 0, 0, 0, 0]
        if self.by is not None:
            return {}
        return 0

    def family_name(self, scope: str, name: str) -> str:
        """The name prometheus-client is given (it appends ``_total`` to counters)."""
        full = f"meshproxy_{scope}_{name}"
        if self.kind == "histogram":
            return full + "_ms"
        return full.removesuffix("_total") if self.kind == "counter" else full

    def exported_name(self, scope: str, name: str) -> str:
        """The name as it appears on the wire (and in docs/stats.md)."""
        family = self.family_name(scope, name)
        return family + "_total" if self.kind == "counter" else family


# The field specifiers of a stat table. Typed ``Any`` for the reason ``dataclasses.field`` is:
# the line ``x: int = counter(...)`` declares an ``int`` attribute; the metaclass takes the
# ``Stat`` away before the class exists, so no instance ever sees it.
def counter(help: str, *, by: str | None = None) -> Any:
    return Stat("counter", help, by)


def gauge(help: str, *, across_workers: Literal["sum", "max"] = "sum") -> Any:
    return Stat("gauge", help, across_workers=across_workers)


def histogram(help: str) -> Any:
    return Stat("histogram", help)


class StatTable(type):
    """Metaclass of the stat objects: every ``Stat`` in the class body becomes a slot (so an
    increment is a plain slot store) and an entry of the class's ``STATS``, in body order."""

    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> StatTable:
        stats = {key: value for key, value in ns.items() if isinstance(value, Stat)}
        for key in stats:
            del ns[key]  # a class attribute of a slot's name would shadow the slot
        ns["__slots__"] = tuple(stats)
        ns["STATS"] = MappingProxyType(stats)
        return super().__new__(mcs, name, bases, ns)


class StatSet(metaclass=StatTable):
    """Base of the stat objects: starts every stat of the table at its initial value."""

    STATS: ClassVar[Mapping[str, Stat]]

    def __init__(self) -> None:
        for name, stat in self.STATS.items():
            setattr(self, name, stat.initial())


class HttpStats(StatSet):
    """Per http_connection_manager stat prefix (Envoy's ``http.<stat_prefix>.*``)."""

    downstream_rq_total: int = counter(
        "Requests whose head was parsed (or that were refused while parsing it)."
    )
    downstream_rq_xx: list[int] = counter(
        "Finished requests by the class of the status sent downstream.", by=CODE_CLASS
    )
    downstream_rq_active: int = gauge("Requests in progress now.")
    downstream_rq_completed: int = counter(
        "Requests finished, whatever the outcome (answered, timed out, reset)."
    )
    downstream_rq_time: Histogram = histogram(
        "Time from the request's first byte to the end of its response."
    )
    downstream_rq_431: int = counter(
        "Requests refused with 431: a header block or trailer section over `max_request_headers_kb`"
        " or `max_headers_count`."
    )
    downstream_rq_header_timeout: int = counter(
        "Requests answered 408 and closed because their head did not arrive within `request_headers_timeout`."
    )
    downstream_cx_max_duration_reached: int = counter(
        "Connections drained by `max_connection_duration` (HTTP/1.1: `connection: close` on the response"
        " in progress; HTTP/2: GOAWAY, closed once its streams are done)."
    )
    requests_rejected_with_underscores_in_headers: int = counter(
        "Requests refused for a header name with `_` (`headers_with_underscores_action: REJECT_REQUEST`;"
        " HTTP/1.1: 400, HTTP/2: stream reset)."
    )
    dropped_headers_with_underscores: int = counter(
        "Request headers dropped for a name with `_` (`headers_with_underscores_action: DROP_HEADER`)."
    )
    local_rate_limit_ok: int = counter("Requests the local rate limit let through.")
    local_rate_limit_rate_limited: int = counter("Requests refused by the local rate limit (429 by default).")
    fault_delays_injected: int = counter("Requests the fault filter delayed (flag DI).")
    fault_aborts_injected: int = counter("Requests the fault filter answered itself (flag FI).")
    fault_active_faults: int = gauge("Requests in progress with an injected fault.")
    fault_faults_overflow: int = counter("Faults not injected because `max_active_faults` was reached.")
    rq_mirrored: int = counter("Request copies sent to a mirror cluster (`request_mirror_policies`).")
    rq_mirror_dropped: int = counter(
        "Request copies not sent: the mirror cluster unknown, HTTP/2, without a healthy host or at its"
        " breakers, or the body past the route's buffer limit."
    )
    cors_origin_valid: int = counter("Requests with an Origin the route's CORS policy allows.")
    cors_origin_invalid: int = counter("Requests with an Origin the route's CORS policy does not allow.")
    downstream_cx_protocol_error: int = counter(
        "Requests refused with 400 as malformed HTTP/1.1 (smuggling defences); the connection is closed."
    )
    # HTTP/2 (Envoy's http2.* names, kept per connection manager).
    downstream_cx_http2_total: int = counter(
        "Downstream connections that spoke HTTP/2 (ALPN h2 or prior-knowledge h2c)."
    )
    downstream_cx_http2_active: int = gauge("Downstream HTTP/2 connections open now.")
    downstream_cx_http3_total: int = counter(
        "Downstream QUIC connections that completed a handshake (HTTP/3)."
    )
    downstream_cx_http3_active: int = gauge("Downstream HTTP/3 connections open now.")
    http2_rx_reset: int = counter("RST_STREAM frames received from downstream clients.")
    http2_tx_reset: int = counter("RST_STREAM frames sent to downstream clients.")
    http2_goaway_sent: int = counter("GOAWAY frames sent downstream (drain, protocol errors, floods).")
    http2_header_overflow: int = counter(
        "Connections closed because a header block exceeded `max_request_headers_kb` or"
        " `max_headers_count` (ENHANCE_YOUR_CALM)."
    )
    http2_rx_messaging_error: int = counter(
        "Connections closed, or streams reset, for an HTTP/2 protocol error by the client"
        " (malformed frames or header blocks)."
    )
    http2_outbound_flood: int = counter(
        "Connections aborted because the client did not read what it made the proxy queue"
        " (`max_outbound_frames`)."
    )
    http2_flood: int = counter(
        "Connections closed with ENHANCE_YOUR_CALM for rapid reset (CVE-2023-44487) or a SETTINGS/PING flood."
    )
    downstream_rq_rx_reset: int = counter("Requests whose client went away before the response was complete.")
    downstream_rq_timeout: int = counter(
        "Requests answered 504 because the route timeout fired, or 408 because the whole request"
        " (on HTTP/1.1 also: its head) did not arrive within `request_timeout`."
    )
    downstream_rq_ws_on_non_ws_route: int = counter(
        "Upgrade requests refused 403 because `upgrade_configs` does not enable their type (hcm/upgrade.py)."
    )
    downstream_rq_overload_close: int = counter(
        "Requests shed with 503 (flag OL) by the overload manager's stop_accepting_requests action."
    )
    downstream_cx_overload_disable_keepalive: int = counter(
        "Responses that closed their connection because of the disable_http_keepalive overload action."
    )
    downstream_rq_failed_path_normalization: int = counter(
        "Requests refused with 400 because their path could not be normalised (or held an escaped slash"
        " with `path_with_escaped_slashes_action: REJECT_REQUEST`)."
    )
    downstream_rq_redirected_with_normalized_path: int = counter(
        "Requests redirected (307) to their normalised path (`UNESCAPE_AND_REDIRECT`)."
    )
    downstream_rq_too_many_premature_resets: int = counter(
        "HTTP/2 connections closed (ENHANCE_YOUR_CALM) because the client reset too many streams early:"
        " half of the first 500, or of all closed after that (rapid reset)."
    )
    downstream_rq_idle_timeout: int = counter(
        "Requests ended by `stream_idle_timeout` (no byte either way for that long)."
    )
    no_route: int = counter("Requests no route matched (404, flag NR).")
    no_cluster: int = counter("Requests routed to a cluster that does not exist (503, flag NC).")
    rq_direct_response: int = counter("Requests answered by a `direct_response` route.")
    rq_redirect: int = counter("Requests answered by a `redirect` route.")


class ClusterStats(StatSet):
    """Per cluster (Envoy's ``cluster.<name>.*``)."""

    upstream_rq_total: int = counter("Requests sent (or being sent) to the cluster.")
    upstream_rq_xx: list[int] = counter(
        "Upstream responses by status class (requests without an upstream response are not counted).",
        by=CODE_CLASS,
    )
    upstream_rq_active: int = gauge("Requests to the cluster in progress now.")
    upstream_rq_time: Histogram = histogram("Duration of requests that got an upstream response.")
    upstream_rq_timeout: int = counter("Requests that hit the route timeout while waiting on the cluster.")
    upstream_rq_retry_reused: int = counter(
        "Pooled connections passed over because the host had closed them before a request went out."
    )
    upstream_cx_http2_total: int = counter("HTTP/2 connections opened to the cluster's hosts.")
    upstream_cx_http3_total: int = counter("HTTP/3 (QUIC) connections whose handshake with a host completed.")
    upstream_http3_broken: int = counter(
        "Hosts found with QUIC blocked (UDP refused or no answer): with auto_config, HTTP/2 over TCP"
        " for them for a while (docs/quic.md)."
    )
    upstream_cx_protocol_error: int = counter(
        "Upstream connections closed for a protocol error by the host (HTTP/1.1 or HTTP/2)."
    )
    upstream_rq_rx_reset: int = counter(
        "Upstream HTTP/2 streams reset by the host (or lost with their connection)."
    )
    upstream_rq_tx_reset: int = counter(
        "Upstream HTTP/2 streams the proxy reset (client cancelled, timeout)."
    )
    upstream_rq_retry: int = counter("Retries sent (each retry attempt after the first try).")
    upstream_rq_retry_success: int = counter("Requests that succeeded after at least one retry.")
    upstream_rq_retry_overflow: int = counter(
        "Retries not sent because the retry circuit breaker (max_retries or retry_budget) was full."
    )
    upstream_rq_per_try_timeout: int = counter("Attempts that hit the route's per_try_timeout.")
    upstream_rq_pending_total: int = counter(
        "Requests that waited for a connection (max_connections reached)."
    )
    upstream_rq_pending_active: int = gauge("Requests waiting for a connection now.")
    upstream_rq_pending_overflow: int = counter(
        "Requests refused with 503 UO by the max_requests or max_pending_requests circuit breaker."
    )
    upstream_rq_fair_share_overflow: int = counter(
        "Requests refused with 503 UO because their source held its fair share of a max_requests"
        " circuit breaker that was at least half full."
    )
    upstream_cx_overflow: int = counter(
        "Times the max_connections circuit breaker was full when a connection was wanted."
    )
    cx_open: int = gauge(
        "1 while the max_connections circuit breaker is full (DEFAULT priority).", across_workers="max"
    )
    rq_pending_open: int = gauge(
        "1 while the max_pending_requests circuit breaker is full.", across_workers="max"
    )
    rq_open: int = gauge("1 while the max_requests circuit breaker is full.", across_workers="max")
    rq_retry_open: int = gauge("1 while the retry circuit breaker is full.", across_workers="max")
    remaining_cx: int = gauge("Connections left before max_connections.")
    remaining_pending: int = gauge("Pending requests left before max_pending_requests.")
    remaining_rq: int = gauge("Requests left before max_requests.")
    remaining_retries: int = gauge("Retries left before max_retries (or the retry budget).")
    outlier_detection_ejections_active: int = gauge(
        "Hosts ejected by outlier detection now.", across_workers="max"
    )
    outlier_detection_ejections_enforced_total: int = counter("Ejections enforced, of any kind.")
    outlier_detection_ejections_overflow: int = counter(
        "Ejections skipped because max_ejection_percent was reached."
    )
    outlier_detection_ejections_by_kind: dict[str, int] = counter(
        "Ejections enforced, by kind (`kind`: consecutive_5xx, consecutive_gateway_failure,"
        " consecutive_local_origin_failure, success_rate, failure_percentage, latency).",
        by="kind",
    )
    health_check_attempt: int = counter("Active health checks started.")
    health_check_success: int = counter("Active health checks that passed.")
    health_check_failure: int = counter("Active health checks that failed (including network failures).")
    health_check_network_failure: int = counter("Active health checks that failed to connect or timed out.")
    health_check_healthy: int = gauge("Hosts passing active health checks.", across_workers="max")
    upstream_cx_total: int = counter(
        "Connections attempted to the cluster's endpoints (HTTP pool and TCP proxy)."
    )
    upstream_cx_active: int = gauge("HTTP upstream connections open now (in use or idle in the pool).")
    upstream_cx_connect_fail: int = counter(
        "Connection attempts that failed (refused, unreachable, timed out)."
    )
    upstream_cx_connect_timeout: int = counter("Connection attempts that ran past `connect_timeout`.")
    upstream_cx_destroy_remote: int = counter("HTTP upstream connections the upstream closed.")
    upstream_cx_idle_timeout: int = counter(
        "Pooled connections closed for being idle past the cluster's idle timeout."
    )
    upstream_cx_none_healthy: int = counter("Picks that found no usable host (503, flag UH).")
    upstream_cx_close_notify: int = counter(
        "Upstream HTTP/2 connections the host announced it would close (GOAWAY)."
    )
    membership_total: int = gauge("Hosts in the cluster.", across_workers="max")
    membership_healthy: int = gauge("Hosts in the cluster that may be picked.", across_workers="max")
    ssl_handshake: int = counter("TLS handshakes completed with the cluster's hosts (an UpstreamTlsContext).")
    ssl_handshakes_by_group: dict[str, int] = counter(
        "Completed upstream handshakes by negotiated key-exchange group (`X25519MLKEM768`, `X25519`, …).",
        by="group",
    )
    ssl_handshakes_by_sigalg: dict[str, int] = counter(
        "Completed upstream handshakes by the signature algorithm the host signed with"
        " (`ecdsa_secp256r1_sha256`, `mldsa65`, …; a resumed session has none and is not counted here).",
        by="sigalg",
    )
    update_success: int = counter("STRICT_DNS re-resolutions that produced a host set.")
    update_failure: int = counter("STRICT_DNS re-resolutions that failed (the last good host set is kept).")


class ListenerStats(StatSet):
    """Per listener (Envoy's ``listener.<address>.*``)."""

    downstream_cx_total: int = counter("Connections accepted and handed to a filter chain.")
    downstream_cx_active: int = gauge("Connections open now.")
    downstream_cx_destroy: int = counter("Connections closed.")
    no_filter_chain_match: int = counter("Connections closed because no filter chain matched.")
    downstream_listener_filter_timeout: int = counter(
        "Connections closed because tls_inspector/http_inspector saw too little within"
        " `listener_filters_timeout`."
    )
    downstream_pre_cx_total: int = counter(
        "Connections accepted past the admission limits (before listener filters, TLS and the codec choice)."
    )
    downstream_pre_cx_active: int = gauge(
        "Accepted connections not yet handed to a codec: listener filters waiting, TLS handshake in"
        " progress, codec choice."
    )
    downstream_pre_cx_abandoned: int = counter(
        "Accepted connections that closed before reaching a codec (handshake failed or timed out,"
        " no filter chain, inspector or codec-choice timeout, peer gone)."
    )
    downstream_pre_cx_overflow: int = counter(
        "Connections closed at accept: the listener already had its maximum of connections pending"
        " (1024: TLS handshakes in progress, listener filters waiting)."
    )
    downstream_global_cx_overflow: int = counter(
        "Connections closed at accept: `global_downstream_max_connections` reached (overload manager)."
    )
    downstream_cx_overload_reject: int = counter(
        "Connections closed at accept by the overload action `reject_incoming_connections`."
    )
    downstream_cx_fd_reserve_reject: int = counter(
        "Connections closed at accept: fewer than a tenth of the file-descriptor limit would stay free"
        " (the reserve kept for upstream connections and the admin port)."
    )
    downstream_cx_accept_error: int = counter(
        "`accept()` failures for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM; asyncio"
        " loop: retried after 1 s; uvloop's libuv closes such connections itself, uncounted)."
    )
    quic_retry_sent: int = counter(
        "QUIC Retry packets sent: new clients asked to prove their address while handshakes in progress"
        " were over the threshold (RFC 9000 §8.1.2)."
    )
    ssl_handshake: int = counter("TLS handshakes completed on a filter chain with a DownstreamTlsContext.")
    ssl_connection_error: int = counter("TLS handshakes refused (either side); the log line says why.")
    ssl_handshakes_by_group: dict[str, int] = counter(
        "Completed handshakes by negotiated key-exchange group (`X25519MLKEM768`, `X25519`, …).",
        by="group",
    )
    ssl_handshakes_by_sigalg: dict[str, int] = counter(
        "Completed handshakes by the signature algorithm of the client's certificate verify"
        " (`ecdsa_secp256r1_sha256`, `mldsa65`, …; none without a client certificate or on resumption).",
        by="sigalg",
    )
    ssl_errors_by_reason: dict[str, int] = counter(
        "Refused handshakes by code (`no_pq_group`, `identity_not_allowed`, `expired_certificate`, …:"
        " a fixed vocabulary; the log line gives the full reason).",
        by="reason",
    )


class TcpStats(StatSet):
    """Per tcp_proxy stat prefix (Envoy's ``tcp.<stat_prefix>.*``)."""

    downstream_cx_total: int = counter("Client connections the filter took.")
    downstream_cx_rx_bytes_total: int = counter("Bytes received from clients, counted when a session ends.")
    downstream_cx_tx_bytes_total: int = counter("Bytes sent to clients, counted when a session ends.")
    downstream_cx_no_route: int = counter(
        "Sessions closed at once: the cluster is unknown or has no usable host."
    )
    idle_timeout: int = counter("Sessions closed by `idle_timeout` (no byte either way for that long).")


class ConnectionLimitStats(StatSet):
    """Per connection_limit stat prefix (Envoy's ``connection_limit.<stat_prefix>.*``)."""

    active_connections: int = gauge("Connections the filter chain holds now (admitted, not yet closed).")
    limited_connections: int = counter("Connections refused over `max_connections` (closed after `delay`).")


class TracingStats(StatSet):
    """Per OTLP collector cluster (``tracing.provider`` envoy.tracers.opentelemetry)."""

    otel_spans_sent: int = counter("Spans the collector accepted.")
    otel_spans_dropped: int = counter("Spans dropped: the export queue was full, or their export failed.")
    otel_export_failures: int = counter("Export calls that failed (collector unreachable, error, timeout).")


class RbacStats(StatSet):
    """Per RBAC filter namespace (Envoy's ``http.<stat_prefix>.rbac.<rules_stat_prefix>*`` and
    ``<stat_prefix>.rbac.<shadow_rules_stat_prefix>*``; docs/authorization.md)."""

    allowed: int = counter("Requests (connections, for the network filter) the enforced rules let through.")
    denied: int = counter("Requests refused with 403 (connections closed) by the enforced rules.")
    shadow_allowed: int = counter("Requests (connections) the shadow rules would let through.")
    shadow_denied: int = counter("Requests (connections) the shadow rules would refuse; nothing is refused.")


class CompressorStats(StatSet):
    """Per compressor filter and library (Envoy's ``http.<stat_prefix>.compressor.<library
    name>.<gzip|brotli|zstd>``; docs/compression.md)."""

    compressed: int = counter("Responses compressed.")
    not_compressed: int = counter("Responses the client accepted compressed but were sent as they were.")
    no_accept_header: int = counter("Requests without accept-encoding.")
    header_identity: int = counter("Requests whose accept-encoding refuses the library's encoding.")
    header_compressor_used: int = counter("Requests whose accept-encoding names the library's encoding.")
    header_wildcard: int = counter("Requests whose accept-encoding accepts it through `*`.")
    header_not_valid: int = counter("Requests with a malformed accept-encoding.")
    content_length_too_small: int = counter("Responses under `min_content_length`.")
    not_compressed_etag: int = counter("Responses not compressed for their etag (`disable_on_etag_header`).")
    total_uncompressed_bytes: int = counter("Body bytes before compression.")
    total_compressed_bytes: int = counter("Body bytes after compression.")


class XdsStats(StatSet):
    """The ADS client's (``meshproxy/xds/client.py``; one per process, with ``dynamic_resources``)."""

    streams: int = counter("ADS streams opened to the control plane.")
    stream_failures: int = counter("ADS streams that ended (an error, or closed by the control plane).")
    responses: int = counter("Discovery responses received (with `path_config_source`: files read).")
    acks: int = counter("Responses accepted (ACK sent).")
    nacks: int = counter("Responses refused (NACK sent; the last good configuration stays).")
    applied: int = counter("Configurations swapped in.")
    max_slice: float = gauge(
        "The longest stretch, in seconds, the client ran without yielding while handling a response"
        " (`Server.apply` excluded: it slices its own work)."
    )


# The process's own gauges, kept in ``Store.server`` (a dict: they change twice in a lifetime).
SERVER_STATS: Mapping[str, Stat] = MappingProxyType(
    {
        "live": gauge("1 while the proxy serves traffic, 0 once it shuts down."),
        "draining": gauge("1 once a drain began (SIGTERM, `/drain_listeners`, `/quitquitquit`)."),
        "worker_restarts": counter("Worker processes restarted after they ended unasked (`--concurrency`)."),
    }
)


@dataclass(frozen=True, slots=True)
class Scope:
    """What a family of stats is kept for: its name (``meshproxy_<name>_*``, the ``/stats``
    key), the label naming an instance, its table, and how docs/stats.md introduces it."""

    name: str
    label: str | None
    stats: Mapping[str, Stat]
    title: str
    kept_per: str


SCOPES: tuple[Scope, ...] = (
    Scope("http", "stat_prefix", HttpStats.STATS, "HTTP connection manager",
          "`http_connection_manager` stat prefix"),
    Scope("cluster", "cluster_name", ClusterStats.STATS, "Clusters", "cluster"),
    Scope("listener", "listener", ListenerStats.STATS, "Listeners", "listener (by name)"),
    Scope("tcp", "stat_prefix", TcpStats.STATS, "TCP proxy", "`tcp_proxy` stat prefix"),
    Scope("connection_limit", "stat_prefix", ConnectionLimitStats.STATS, "Connection limit",
          "`connection_limit` stat prefix"),
    Scope("tracing", "collector", TracingStats.STATS, "Tracing", "OTLP collector cluster"),
    Scope("rbac", "prefix", RbacStats.STATS, "RBAC", "RBAC filter namespace (`http.ingress.rbac`)"),
    Scope("compressor", "prefix", CompressorStats.STATS, "Compressor",
          "compressor filter and library (`http.ingress.compressor.text.gzip`)"),
    Scope("xds", None, XdsStats.STATS, "xDS client", "the process, with `dynamic_resources`"),
    Scope("server", None, SERVER_STATS, "Process", "the process"),
)  # fmt: skip


class Store:
    """All stat objects by scope and name; entries persist across config swaps."""

    def __init__(self) -> None:
        self.http: dict[str, HttpStats] = {}
        self.cluster: dict[str, ClusterStats] = {}
        self.listener: dict[str, ListenerStats] = {}
        self.tcp: dict[str, TcpStats] = {}
        self.connection_limit: dict[str, ConnectionLimitStats] = {}
        self.tracing: dict[str, TracingStats] = {}
        # Per peer identity, what its TLS handshakes negotiated (meshproxy/tls/inventory.py).
        self.inventory = CryptoInventory()
        self.rbac: dict[str, RbacStats] = {}
        self.compressor: dict[str, CompressorStats] = {}
        self.server: dict[str, float] = dict.fromkeys(SERVER_STATS, 0)
        self.xds: XdsStats | None = None  # the ADS client's, once it runs

    def http_stats(self, prefix: str) -> HttpStats:
        s = self.http.get(prefix)
        if s is None:
            s = self.http[prefix] = HttpStats()
        return s

    def cluster_stats(self, name: str) -> ClusterStats:
        s = self.cluster.get(name)
        if s is None:
            s = self.cluster[name] = ClusterStats()
        return s

    def listener_stats(self, name: str) -> ListenerStats:
        s = self.listener.get(name)
        if s is None:
            s = self.listener[name] = ListenerStats()
        return s

    def tcp_stats(self, prefix: str) -> TcpStats:
        s = self.tcp.get(prefix)
        if s is None:
            s = self.tcp[prefix] = TcpStats()
        return s

    def connection_limit_stats(self, prefix: str) -> ConnectionLimitStats:
        s = self.connection_limit.get(prefix)
        if s is None:
            s = self.connection_limit[prefix] = ConnectionLimitStats()
        return s

    def tracing_stats(self, collector: str) -> TracingStats:
        return self.tracing.setdefault(collector, TracingStats())

    def rbac_stats(self, prefix: str) -> RbacStats:
        s = self.rbac.get(prefix)
        if s is None:
            s = self.rbac[prefix] = RbacStats()
        return s

    def compressor_stats(self, prefix: str) -> CompressorStats:
        s = self.compressor.get(prefix)
        if s is None:
            s = self.compressor[prefix] = CompressorStats()
        return s

    def labelled(self) -> Iterator[tuple[Scope, dict[str, StatSet]]]:
        """Each labelled scope with a snapshot of its entries (by instance name)."""
        entries: dict[str, dict[str, Any]] = {
            "http": self.http, "cluster": self.cluster, "listener": self.listener, "tcp": self.tcp,
            "connection_limit": self.connection_limit, "tracing": self.tracing, "rbac": self.rbac,
            "compressor": self.compressor,
        }  # fmt: skip
        for scope in SCOPES:
            if scope.label is not None:
                yield scope, dict(entries[scope.name])


class StatsCollector:
    """Exposes a ``Store`` through prometheus-client (loaded by the first scrape, see
    ``admin/prometheus.py``); labels are built here, at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Family]:

        for scope, entries in self.store.labelled():
            if entries:  # a scope appears once something of its kind is configured
                for name, stat in scope.stats.items():
                    yield _family(scope, name, stat, entries)
        xds = self.store.xds
        if xds is not None:
            for name, stat in XdsStats.STATS.items():
                yield _single("xds", name, stat, getattr(xds, name))
        for name, stat in SERVER_STATS.items():
            yield _single("server", name, stat, self.store.server[name])


def _single(scope: str, name: str, stat: Stat, value: float) -> Family:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # admin/prometheus.py

    kind = CounterMetricFamily if stat.kind == "counter" else GaugeMetricFamily
    return kind(stat.family_name(scope, name), stat.help, value=value)


def _family(scope: Scope, name: str, stat: Stat, entries: dict[str, StatSet]) -> Family:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    assert scope.label is not None
    family = stat.family_name(scope.name, name)
    if stat.kind == "histogram":
        fam_h = HistogramMetricFamily(family, stat.help, labels=[scope.label])
        for key, obj in entries.items():
            h: Histogram = getattr(obj, name)
            fam_h.add_metric([key], h.cumulative(), sum_value=h.sum)
        return fam_h
    if stat.kind == "gauge":
        fam_g = GaugeMetricFamily(family, stat.help, labels=[scope.label])
        for key, obj in entries.items():
            fam_g.add_metric([key], getattr(obj, name))
        return fam_g
    labels = [scope.label] if stat.by is None else [scope.label, stat.by]
    fam_c = CounterMetricFamily(family, stat.help, labels=labels)
    for key, obj in entries.items():
        value = getattr(obj, name)
        if stat.by is None:
            fam_c.add_metric([key], value)
        elif stat.by == CODE_CLASS:
            for cls, n in enumerate(value):
                if cls:
                    fam_c.add_metric([key, f"{cls}xx"], n)
        else:
            for k, n in value.items():
                fam_c.add_metric([key, k], n)
    return fam_c


def stats_json(store: Store) -> dict[str, Any]:
    """``GET /stats``: ``<scope>.<instance>.<stat>``, histograms as ``{count, sum, buckets}``."""
    out: dict[str, Any] = {}
    for scope, entries in store.labelled():
        for key, obj in entries.items():
            for name in scope.stats:
                value = getattr(obj, name)
                if isinstance(value, Histogram):
                    value = {"count": value.count, "sum": value.sum, "buckets": value.cumulative()}
                out[f"{scope.name}.{key}.{name}"] = value
    return out


_DOC_HEAD = """\
# Statistics

<!-- Generated from the stat tables in meshproxy/stats.py by `make stats-doc`
     (`python -m meshproxy.stats > docs/stats.md`); do not edit by hand. -->

Every statistic the proxy keeps, as `GET /stats/prometheus` on the admin address exports it.
`GET /stats` lists the same values in Envoy's text format and `?format=json` in Envoy's JSON
(docs/admin.md); `?format=flat` is a JSON map keyed `<scope>.<name>.<stat>` (for example
`http.ingress.downstream_rq_total`), with histograms as `{{count, sum, buckets}}`.

## Naming

- Names are `meshproxy_<scope>_<stat>`. The scope says what the stat is kept for, and which
  label names the instance:

  | Scope | Kept per | Label |
  |---|---|---|
{scopes}

- Counters only grow and end in `_total` on the wire. Gauges go up and down.
- The response-code-class counters (`downstream_rq_xx`, `upstream_rq_xx` inside the proxy)
  are families of their own, `…_rq_xx_total`, with a `code_class` label (`1xx` … `5xx`); they
  cannot share the `…_rq_total` name, which the plain request counters already use.
- Latency histograms end in `_ms` (milliseconds) and come as `_bucket` (label `le`, Envoy's
  default bounds 0.5 ms … 300 s), `_sum` and `_count`.
- A scope appears once something of that kind is configured (a cluster, a listener, a filter).
- The meaning column is also each metric's `# HELP` line in the exposition.

`tests/unit/test_stats.py` checks that this file is what the tables render, and
`tests/integration/test_admin.py` checks it against a live scrape in both directions.
"""


def _labels_cell(labels: list[str]) -> str:
    return ", ".join(f"`{label}`" for label in labels) or "—"


def render_docs() -> str:
    """docs/stats.md, rendered from ``SCOPES``."""
    scope_rows = "\n".join(
        f"  | `{s.name}` | {s.kept_per} | {f'`{s.label}`' if s.label else 'none'} |" for s in SCOPES
    )
    parts = [_DOC_HEAD.format(scopes=scope_rows)]
    for s in SCOPES:
        where = f"label `{s.label}`" if s.label else "no labels"
        parts.append(f"\n## {s.title} (`meshproxy_{s.name}_*`, {where})\n")
        parts.append("| Metric | Type | Labels | Meaning |\n|---|---|---|---|")
        for name, stat in s.stats.items():
            labels = _labels_cell([label for label in (s.label, stat.by) if label])
            parts.append(f"| `{stat.exported_name(s.name, name)}` | {stat.kind} | {labels} | {stat.help} |")
    parts.append("\n## Overload manager (`meshproxy_overload_*`, label `action` or `resource`)\n")
    parts.append("| Metric | Type | Labels | Meaning |\n|---|---|---|---|")
    for family, kind, label, text in overload_doc_rows():
        name = family + "_total" if kind == "counter" else family
        parts.append(f"| `{name}` | {kind} | `{label}` | {text.capitalize()}; see docs/overload.md. |")
    parts.append("\n## Crypto inventory (`meshproxy_peer_tls_*`, by peer identity)\n")
    parts.append("| Metric | Type | Labels | Meaning |\n|---|---|---|---|")
    for name, kind, names, text in inventory_doc_rows():
        parts.append(
            f"| `{name}` | {kind} | {_labels_cell(list(names))} | {text} See docs/observability.md. |"
        )
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_docs())
