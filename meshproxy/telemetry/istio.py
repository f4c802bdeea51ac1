"""Istio's standard metrics: the series Grafana's Istio dashboards and Kiali read.

Owns ``IstioMetrics`` (the process's series by label set, and their Prometheus exposition),
``HttpReporter`` (one per http_connection_manager chain with the ``istio.stats`` http filter:
the labels of each finished request) and ``TcpReporter`` (one per tcp_proxy chain with the
``istio.stats`` network filter: each session's open, close and bytes).

Labels, as Istio's: ``reporter`` is ``source`` on an OUTBOUND listener and ``destination``
otherwise (the listener's ``traffic_direction``). Workloads come from SPIFFE IDs
(``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``): the namespace, and the
service account as the workload's name (Istio's peer metadata exchange tells the deployment's
name; meshproxy has no such exchange, so a workload is named by its identity). On the
destination side the source is the downstream peer's verified certificate and the destination
is our own SVID (the chain's certificate); on the source side the source is our SVID as the
upstream cluster presents it and the destination is the identity the chosen host showed in its
latest handshake. ``tls_group`` (beyond Istio) is the key-exchange group of that same
connection: which links are post-quantum. ``connection_security_policy``: ``mutual_tls`` or
``none`` on the destination side, ``unknown`` on the source side (as Istio reports).
``grpc_response_status`` is left empty (meshproxy does not keep a request's gRPC status).

Bounded: at most ``MAX_LABEL_SETS`` label sets per kind (requests, TCP); past that every new
one is counted into the series whose labels are all ``other``. Per request: one tuple built,
one dict lookup, three histogram observations. Must not import asyncio, sockets or a codec.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from meshproxy.identity.spiffe import leaf_spiffe_id
from meshproxy.stats import Histogram

if TYPE_CHECKING:
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    from meshproxy.config.model import IstioStats
    from meshproxy.hcm.exchange import Exchange, RequestView
    from meshproxy.identity.spiffe import SpiffeId
    from meshproxy.tls.engine import Negotiated
    from meshproxy.upstream.cluster import ClusterRuntime

MAX_LABEL_SETS = 2000
# Istio's buckets: request duration in ms, sizes in bytes.
DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)  # fmt: skip
SIZE_BUCKETS: tuple[float, ...] = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000)

PEER_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_service",
)
REQUEST_LABELS = (
    *PEER_LABELS,
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
    "tls_group",
)
TCP_LABELS = (*PEER_LABELS, "request_protocol", "response_flags", "connection_security_policy", "tls_group")
UNKNOWN = ("unknown", "unknown", "unknown")
PEER_CACHE = 4096  # connection label parts and Host headers each reporter remembers
_STATUS = [str(code) for code in range(600)]
_CONTENT_TYPE = b"content-type"


@lru_cache(maxsize=4096)
def workload(principal: str | None) -> tuple[str, str, str]:
    """(workload, namespace, principal) of a SPIFFE ID (Istio's form), or unknowns."""
    if principal is None:
        return UNKNOWN
    parts = principal.removeprefix("spiffe://").split("/")
    if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa":
        return parts[4], parts[2], principal
    return "unknown", "unknown", principal


def _principal(tls: Negotiated | None) -> str | None:
    if tls is None:
        return None
    uris = tls.peer_uris
    if uris and uris[0].startswith("spiffe://"):  # an SVID's one URI SAN
        return uris[0]
    return next((u for u in uris if u.startswith("spiffe://")), None)


class RequestSeries:
    __slots__ = ("count", "duration", "request_bytes", "response_bytes")

    def __init__(self) -> None:
        self.count = 0
        self.duration = Histogram(DURATION_BUCKETS_MS)
        self.request_bytes = Histogram(SIZE_BUCKETS)
        self.response_bytes = Histogram(SIZE_BUCKETS)


class TcpSeries:
    __slots__ = ("closed", "opened", "received", "sent")

    def __init__(self) -> None:
        self.opened = self.closed = self.sent = self.received = 0


class IstioMetrics:
    """Every label set's series in this process, bounded."""

    def __init__(self, limit: int = MAX_LABEL_SETS) -> None:
        self.limit = limit
        self.requests: dict[tuple[str, ...], RequestSeries] = {}
        self.tcp: dict[tuple[str, ...], TcpSeries] = {}

    def request_series(self, key: tuple[str, ...]) -> RequestSeries:
        series = self.requests.get(key)
        if series is None:
            if len(self.requests) >= self.limit:
                key = ("other",) * len(REQUEST_LABELS)
                series = self.requests.get(key)
            if series is None:
                series = self.requests[key] = RequestSeries()
        return series

    def tcp_series(self, key: tuple[str, ...]) -> TcpSeries:
        series = self.tcp.get(key)
        if series is None:
            if len(self.tcp) >= self.limit:
                key = ("other",) * len(TCP_LABELS)
                series = self.tcp.get(key)
            if series is None:
                series = self.tcp[key] = TcpSeries()
        return series


class _Reporter:
    """What both reporters share: the side, our own identity, the Host-header rule, and the
    label parts that depend only on the connection, cached by what decides them (identities,
    group, cluster: bounded by ``PEER_CACHE``)."""

    __slots__ = ("config", "inbound", "local", "metrics", "peers", "reporter", "services")

    def __init__(
        self, config: IstioStats, metrics: IstioMetrics, inbound: bool, local: SpiffeId | None
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.inbound = inbound
        self.reporter = "destination" if inbound else "source"
        self.local = workload(str(local)) if local is not None else UNKNOWN
        # (reporter, source's three, destination's three) and (policy, group), by what decides them.
        self.peers: dict[tuple[Any, ...], tuple[tuple[str, ...], tuple[str, str]]] = {}
        self.services: dict[bytes | None, str] = {}

    def sides(
        self, downstream: Negotiated | None, cluster: ClusterRuntime | None, upstream: Negotiated | None
    ) -> tuple[tuple[str, ...], tuple[str, str]]:
        """The connection's labels: (reporter, source, destination) and (policy, tls_group)."""
        if self.inbound:
            tls = downstream
            key: tuple[Any, ...] = (_principal(tls), tls.group, bool(tls.peer_chain)) if tls else (None,)
        else:
            key = (
                cluster.config.name if cluster else None,
                _principal(upstream),
                upstream and upstream.group,
            )
        found = self.peers.get(key)
        if found is None:
            found = self._sides(downstream, cluster, upstream)
            if len(self.peers) < PEER_CACHE:
                self.peers[key] = found
        return found

    def _sides(
        self, downstream: Negotiated | None, cluster: ClusterRuntime | None, upstream: Negotiated | None
    ) -> tuple[tuple[str, ...], tuple[str, str]]:
        if self.inbound:
            mtls = downstream is not None and bool(downstream.peer_chain)
            group = downstream.group if downstream is not None else "none"
            source, destination = workload(_principal(downstream)), self.local
            policy = "mutual_tls" if mtls else "none"
        else:
            # Our identity is the certificate the upstream cluster presents.
            source = self.local
            if cluster is not None and cluster.config.tls is not None:
                ours = leaf_spiffe_id(cluster.config.tls.certificate_chain)
                source = workload(str(ours)) if ours is not None else UNKNOWN
            destination = workload(_principal(upstream))
            policy, group = "unknown", upstream.group if upstream is not None else "none"
        return (self.reporter, *source, *destination), (policy, group)

    def service(self, authority: bytes | None) -> str:
        """destination_service: the Host header without its port (cached, bounded)."""
        found = self.services.get(authority)
        if found is not None:
            return found
        if self.config.disable_host_header_fallback or not authority:
            found = "unknown"
        elif authority.startswith(b"["):
            found = authority[: authority.find(b"]") + 1].decode("latin-1")
        else:
            found = authority.partition(b":")[0].decode("latin-1")
        if len(self.services) < PEER_CACHE:
            self.services[authority] = found
        return found


class HttpReporter(_Reporter):
    __slots__ = ()

    def request(self, x: Exchange, stream: RequestView, peer: Any, now: float) -> None:
        """A finished request: its series counts it, its duration and sizes."""
        host = x.host
        people, tail = self.sides(peer.tls, x.cluster, host.tls if host is not None else None)
        protocol = "http"
        for name, value in stream.headers:
            if name == _CONTENT_TYPE:
                if value.startswith(b"application/grpc"):
                    protocol = "grpc"
                break
        status = stream.status
        key = (
            *people,
            self.service(stream.authority),
            protocol,
            _STATUS[status] if 0 <= status < 600 else str(status),
            "",
            stream.flags,
            *tail,
        )
        series = self.metrics.request_series(key)
        series.count += 1
        ms = (now - x.start) * 1000.0
        h = series.duration
        h.counts[bisect_left(h.bounds, ms)] += 1
        h.sum += ms
        size = stream.rx_bytes
        h = series.request_bytes
        h.counts[bisect_left(h.bounds, size)] += 1
        h.sum += size
        size = stream.tx_bytes
        h = series.response_bytes
        h.counts[bisect_left(h.bounds, size)] += 1
        h.sum += size


class TcpReporter(_Reporter):
    __slots__ = ()

    def series(
        self, downstream: Negotiated | None, cluster: ClusterRuntime, upstream: Negotiated | None, flags: str
    ) -> TcpSeries:
        people, tail = self.sides(downstream, cluster, upstream)
        return self.metrics.tcp_series((*people, cluster.config.name, "tcp", flags, *tail))


class IstioCollector:
    """The series as Istio names them (no ``meshproxy_`` prefix: the dashboards query these)."""

    def __init__(self, metrics: IstioMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily  # admin/prometheus.py

        requests = list(self.metrics.requests.items())
        tcp = list(self.metrics.tcp.items())
        if requests:
            total = CounterMetricFamily(
                "istio_requests", "Requests, by Istio's labels.", labels=REQUEST_LABELS
            )
            families = [
                HistogramMetricFamily(f"istio_{name}", text, labels=REQUEST_LABELS)
                for name, text in (
                    ("request_duration_milliseconds", "Request duration in milliseconds."),
                    ("request_bytes", "Request sizes in bytes."),
                    ("response_bytes", "Response sizes in bytes."),
                )
            ]
            for key, s in requests:
                total.add_metric(key, s.count)
                for family, h in zip(families, (s.duration, s.request_bytes, s.response_bytes), strict=True):
                    family.add_metric(key, h.cumulative(), sum_value=h.sum)
            yield total
            yield from families
        if tcp:
            counters = {
                attr: CounterMetricFamily(f"istio_tcp_{name}", text, labels=TCP_LABELS)
                for attr, name, text in (
                    ("opened", "connections_opened", "TCP connections opened."),
                    ("closed", "connections_closed", "TCP connections closed."),
                    ("sent", "sent_bytes", "Bytes sent towards the client, counted when it closes."),
                    ("received", "received_bytes", "Bytes received from the client, counted when it closes."),
                )
            }
            for key, session in tcp:
                for attr, counter in counters.items():
                    counter.add_metric(key, getattr(session, attr))
            yield from counters.values()
