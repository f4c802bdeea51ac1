"""Counters, gauges and histograms owned by the proxy, and their Prometheus exposition.

Owns every statistic the data plane keeps. Per DESIGN decision 7 the request path only does
attribute increments on small slotted objects (no locks, no label lookups); labels are attached
once, at scrape time, by ``StatsCollector``. Stat objects are keyed by name (stat prefix,
cluster, listener) in a ``Store`` so they survive a configuration swap.
Must not import asyncio or the data plane.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

# Envoy's default histogram buckets, in milliseconds.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
)  # fmt: skip


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


class HttpStats:
    """Per http_connection_manager stat prefix (Envoy's ``http.<stat_prefix>.*``)."""

    __slots__ = (
        "downstream_rq_431",
        "local_rate_limit_ok",
        "local_rate_limit_rate_limited",
        "downstream_rq_active",
        "downstream_rq_completed",
        "downstream_rq_idle_timeout",
        "downstream_rq_rx_reset",
        "downstream_rq_time",
        "downstream_rq_timeout",
        "downstream_rq_too_large",
        "downstream_rq_total",
        "downstream_rq_xx",
        "no_cluster",
        "no_route",
        "rq_direct_response",
        "rq_redirect",
        "downstream_cx_protocol_error",
        "downstream_cx_http2_total",
        "downstream_cx_http2_active",
        "http2_rx_reset",
        "http2_tx_reset",
        "http2_goaway_sent",
        "http2_header_overflow",
        "http2_rx_messaging_error",
        "http2_outbound_flood",
        "http2_flood",
    )

    def __init__(self) -> None:
        self.downstream_rq_total = 0
        self.downstream_rq_active = 0
        self.downstream_rq_completed = 0
        self.downstream_rq_xx = [0, 0, 0, 0, 0, 0]  # index = status // 100
        self.downstream_rq_time = Histogram()
        self.downstream_rq_rx_reset = 0
        self.downstream_rq_timeout = 0
        self.downstream_rq_idle_timeout = 0
        self.downstream_rq_too_large = 0
        self.downstream_rq_431 = 0
        self.local_rate_limit_ok = 0
        self.local_rate_limit_rate_limited = 0
        self.downstream_cx_protocol_error = 0
        self.no_route = 0
        self.no_cluster = 0
        self.rq_direct_response = 0
        self.rq_redirect = 0
        # HTTP/2 (Envoy's http2.* names, kept per connection manager).
        self.downstream_cx_http2_total = 0
        self.downstream_cx_http2_active = 0
        self.http2_rx_reset = 0
        self.http2_tx_reset = 0
        self.http2_goaway_sent = 0
        self.http2_header_overflow = 0
        self.http2_rx_messaging_error = 0
        self.http2_outbound_flood = 0
        self.http2_flood = 0


class ClusterStats:
    """Per cluster (Envoy's ``cluster.<name>.*``)."""

    __slots__ = (
        "membership_healthy",
        "membership_total",
        "upstream_cx_active",
        "upstream_cx_close_notify",
        "upstream_cx_connect_fail",
        "upstream_cx_connect_timeout",
        "upstream_cx_destroy_remote",
        "upstream_cx_idle_timeout",
        "upstream_cx_rx_bytes_total",
        "upstream_cx_total",
        "upstream_cx_tx_bytes_total",
        "upstream_rq_active",
        "upstream_rq_timeout",
        "upstream_rq_total",
        "upstream_rq_time",
        "upstream_rq_xx",
        "upstream_cx_none_healthy",
        "upstream_rq_retry_reused",
        "upstream_cx_http2_total",
        "upstream_cx_protocol_error",
        "upstream_rq_rx_reset",
        "upstream_rq_tx_reset",
        "upstream_rq_retry",
        "upstream_rq_retry_success",
        "upstream_rq_retry_overflow",
        "upstream_rq_per_try_timeout",
        "upstream_rq_pending_total",
        "upstream_rq_pending_active",
        "upstream_rq_pending_overflow",
        "upstream_cx_overflow",
        "cx_open",
        "rq_pending_open",
        "rq_open",
        "rq_retry_open",
        "remaining_cx",
        "remaining_pending",
        "remaining_rq",
        "remaining_retries",
        "outlier_detection_ejections_active",
        "outlier_detection_ejections_enforced_total",
        "outlier_detection_ejections_overflow",
        "outlier_detection_ejections_by_kind",
        "health_check_attempt",
        "health_check_success",
        "health_check_failure",
        "health_check_network_failure",
        "health_check_healthy",
        "update_success",
        "update_failure",
    )

    def __init__(self) -> None:
        self.upstream_cx_total = 0
        self.upstream_cx_active = 0
        self.upstream_cx_connect_fail = 0
        self.upstream_cx_connect_timeout = 0
        self.upstream_cx_destroy_remote = 0
        self.upstream_cx_idle_timeout = 0
        self.upstream_cx_close_notify = 0
        self.upstream_cx_rx_bytes_total = 0
        self.upstream_cx_tx_bytes_total = 0
        self.upstream_cx_none_healthy = 0
        self.upstream_rq_total = 0
        self.upstream_rq_active = 0
        self.upstream_rq_timeout = 0
        self.upstream_rq_retry_reused = 0
        self.upstream_cx_http2_total = 0
        self.upstream_cx_protocol_error = 0
        self.upstream_rq_rx_reset = 0
        self.upstream_rq_tx_reset = 0
        self.upstream_rq_retry = 0
        self.upstream_rq_retry_success = 0
        self.upstream_rq_retry_overflow = 0
        self.upstream_rq_per_try_timeout = 0
        self.upstream_rq_pending_total = 0
        self.upstream_rq_pending_active = 0
        self.upstream_rq_pending_overflow = 0
        self.upstream_cx_overflow = 0
        self.cx_open = 0
        self.rq_pending_open = 0
        self.rq_open = 0
        self.rq_retry_open = 0
        self.remaining_cx = 0
        self.remaining_pending = 0
        self.remaining_rq = 0
        self.remaining_retries = 0
        self.outlier_detection_ejections_active = 0
        self.outlier_detection_ejections_enforced_total = 0
        self.outlier_detection_ejections_overflow = 0
        self.outlier_detection_ejections_by_kind: dict[str, int] = {}
        self.health_check_attempt = 0
        self.health_check_success = 0
        self.health_check_failure = 0
        self.health_check_network_failure = 0
        self.health_check_healthy = 0
        self.upstream_rq_xx = [0, 0, 0, 0, 0, 0]
        self.upstream_rq_time = Histogram()
        self.membership_total = 0
        self.membership_healthy = 0
        self.update_success = 0
        self.update_failure = 0


class ListenerStats:
    """Per listener (Envoy's ``listener.<address>.*``)."""

    __slots__ = (
        "ssl_connection_error",
        "ssl_errors_by_reason",
        "ssl_handshake",
        "ssl_handshakes_by_group",
        "downstream_cx_active",
        "downstream_cx_destroy",
        "downstream_cx_total",
        "no_filter_chain_match",
        "downstream_listener_filter_timeout",
        "downstream_cx_rx_bytes_total",
        "downstream_cx_tx_bytes_total",
    )

    def __init__(self) -> None:
        self.downstream_cx_total = 0
        self.downstream_cx_active = 0
        self.downstream_cx_destroy = 0
        self.no_filter_chain_match = 0
        self.downstream_listener_filter_timeout = 0
        self.downstream_cx_rx_bytes_total = 0
        self.downstream_cx_tx_bytes_total = 0
        self.ssl_handshake = 0
        self.ssl_connection_error = 0
        # Labelled counters: negotiated group -> handshakes; refusal code (TlsError.code) -> count.
        self.ssl_handshakes_by_group: dict[str, int] = {}
        self.ssl_errors_by_reason: dict[str, int] = {}


class TcpStats:
    """Per tcp_proxy stat prefix (Envoy's ``tcp.<stat_prefix>.*``)."""

    __slots__ = (
        "downstream_cx_rx_bytes_total",
        "downstream_cx_total",
        "downstream_cx_tx_bytes_total",
        "idle_timeout",
        "upstream_flush_active",
        "downstream_cx_no_route",
    )

    def __init__(self) -> None:
        self.downstream_cx_total = 0
        self.downstream_cx_rx_bytes_total = 0
        self.downstream_cx_tx_bytes_total = 0
        self.idle_timeout = 0
        self.upstream_flush_active = 0
        self.downstream_cx_no_route = 0


# Everything else that is an int is a monotonically increasing counter.
GAUGES = frozenset(
    {
        "downstream_rq_active",
        "downstream_cx_active",
        "downstream_cx_http2_active",
        "upstream_cx_active",
        "upstream_rq_active",
        "membership_total",
        "membership_healthy",
        "upstream_rq_pending_active",
        "cx_open",
        "rq_pending_open",
        "rq_open",
        "rq_retry_open",
        "remaining_cx",
        "remaining_pending",
        "remaining_rq",
        "remaining_retries",
        "outlier_detection_ejections_active",
        "health_check_healthy",
        "upstream_flush_active",
    }
)


class Store:
    """All stat objects by scope and name; entries persist across config swaps."""

    def __init__(self) -> None:
        self.http: dict[str, HttpStats] = {}
        self.cluster: dict[str, ClusterStats] = {}
        self.listener: dict[str, ListenerStats] = {}
        self.tcp: dict[str, TcpStats] = {}
        self.server: dict[str, float] = {"live": 0, "draining": 0, "uptime_start": 0.0}

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


class StatsCollector(Collector):
    """Exposes a ``Store`` through prometheus-client; labels are built here, at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        scopes: list[tuple[str, str, dict[str, object]]] = [
            ("http", "stat_prefix", dict(self.store.http)),
            ("cluster", "cluster_name", dict(self.store.cluster)),
            ("listener", "listener", dict(self.store.listener)),
            ("tcp", "stat_prefix", dict(self.store.tcp)),
        ]
        for scope, label, entries in scopes:
            if not entries:
                continue
            sample = next(iter(entries.values()))
            for attr in type(sample).__slots__:  # type: ignore[attr-defined]
                yield from self._family(scope, label, attr, entries)
        yield GaugeMetricFamily(
            "meshproxy_server_live", "1 when serving traffic", value=self.store.server["live"]
        )
        yield GaugeMetricFamily(
            "meshproxy_server_draining", "1 while listeners drain", value=self.store.server["draining"]
        )

    def _family(
        self, scope: str, label: str, attr: str, entries: dict[str, object]
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        name = f"meshproxy_{scope}_{attr}"
        first = getattr(next(iter(entries.values())), attr)
        if isinstance(first, Histogram):
            fam = HistogramMetricFamily(name + "_ms", f"{scope} {attr} in milliseconds", labels=[label])
            for key, obj in entries.items():
                h: Histogram = getattr(obj, attr)
                fam.add_metric([key], h.cumulative(), sum_value=h.sum)
            yield fam
        elif isinstance(first, dict):
            # "<name>_by_<label>": one sample per key, the key as that label.
            label2 = attr.rsplit("_by_", 1)[1]
            fam_d = CounterMetricFamily(name, f"{scope} {attr.replace('_', ' ')}", labels=[label, label2])
            for key, obj in entries.items():
                for k, n in getattr(obj, attr).items():
                    fam_d.add_metric([key, k], n)
            yield fam_d
        elif isinstance(first, list):
            # Kept as "<name>_xx": stripping it would collide with the "<name>_total" family.
            base = name
            fam_c = CounterMetricFamily(
                base, f"{scope} {attr} by response code class", labels=[label, "code_class"]
            )
            for key, obj in entries.items():
                for cls, n in enumerate(getattr(obj, attr)):
                    if cls:
                        fam_c.add_metric([key, f"{cls}xx"], n)
            yield fam_c
        elif attr not in GAUGES:
            fam_c = CounterMetricFamily(name.removesuffix("_total"), f"{scope} {attr}", labels=[label])
            for key, obj in entries.items():
                fam_c.add_metric([key], getattr(obj, attr))
            yield fam_c
        else:
            fam_g = GaugeMetricFamily(name, f"{scope} {attr}", labels=[label])
            for key, obj in entries.items():
                fam_g.add_metric([key], getattr(obj, attr))
            yield fam_g
