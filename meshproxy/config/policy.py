"""Upstream and route policy as configured: load balancing, circuit breakers, outlier detection,
health checks, retries, hash policies and local rate limits.

Owns the frozen shape of the policy parts of Envoy's Cluster, ClusterLoadAssignment, Route and
the LocalRateLimit filter, apart from ``model.py`` because these objects are many and read by the
policy cores (``meshproxy.upstream``), not by the codecs. Defaults are Envoy's. Times are seconds.
Must not import asyncio, sockets or generated protobuf code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LbPolicy = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"]


@dataclass(frozen=True, slots=True)
class LbConfig:
    """Cluster.lb_policy (or the typed load_balancing_policy) and common_lb_config."""

    policy: LbPolicy = "ROUND_ROBIN"
    # least_request_lb_config
    choice_count: int = 2
    active_request_bias: float = 1.0
    # ring_hash_lb_config (xxHash64 only)
    minimum_ring_size: int = 1024
    maximum_ring_size: int = 8 * 1024 * 1024
    # maglev_lb_config
    maglev_table_size: int = 65537
    # ClusterLoadAssignment.policy.overprovisioning_factor, in percent (Envoy's 140 = 1.4).
    overprovisioning_factor: int = 140
    # common_lb_config.healthy_panic_threshold, percent; 0 disables panic mode.
    panic_threshold: float = 50.0
    # common_lb_config.locality_weighted_lb_config present.
    locality_weighted: bool = False


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """circuit_breakers.thresholds.retry_budget: active retries bounded by a share of requests."""

    budget_percent: float = 20.0
    min_retry_concurrency: int = 3


@dataclass(frozen=True, slots=True)
class Thresholds:
    """circuit_breakers.thresholds for one routing priority (DEFAULT or HIGH)."""

    priority: Literal["DEFAULT", "HIGH"] = "DEFAULT"
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    # When set, max_retries is ignored and the budget applies (Envoy's semantics).
    retry_budget: RetryBudget | None = None
    track_remaining: bool = False


DEFAULT_THRESHOLDS = Thresholds()
DEFAULT_LB = LbConfig()


@dataclass(frozen=True, slots=True)
class LatencyEjection:
    """Our typed extension to outlier detection (``meshproxy.outlier.v1.LatencyEjection``): eject
    an endpoint whose latency over an interval stays far above its peers'."""

    # Eject when the host's median latency exceeds factor x the median of the hosts' medians.
    threshold_factor: float = 3.0
    # ... and exceeds the peers' median by at least this much (ignores noise on fast services).
    minimum_excess: float = 0.010
    minimum_hosts: int = 3
    request_volume: int = 20  # samples per host per interval to be judged
    enforcing: int = 100  # percent


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    """Cluster.outlier_detection with Envoy's defaults."""

    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    consecutive_local_origin_failure: int = 5
    split_external_local_origin_errors: bool = False
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10
    # Envoy's always_eject_one_host: the first ejection ignores max_ejection_percent.
    always_eject_one_host: bool = False
    enforcing_consecutive_5xx: int = 100
    enforcing_consecutive_gateway_failure: int = 0
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_success_rate: int = 100
    enforcing_local_origin_success_rate: int = 100
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900  # thousandths: 1.9 standard deviations
    enforcing_failure_percentage: int = 0
    enforcing_failure_percentage_local_origin: int = 0
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    failure_percentage_threshold: int = 85
    latency: LatencyEjection | None = None


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One Cluster.health_checks entry: HTTP, TCP or gRPC health v1."""

    kind: Literal["http", "tcp", "grpc"]
    timeout: float
    interval: float
    unhealthy_threshold: int
    healthy_threshold: int
    interval_jitter: float = 0.0
    interval_jitter_percent: int = 0
    no_traffic_interval: float = 60.0
    # http_health_check
    http_path: str = "/"
    http_host: str = ""
    # Half-open ranges [start, end) as in Envoy's expected_statuses; default 200 only.
    expected_statuses: tuple[tuple[int, int], ...] = ((200, 201),)
    # tcp_health_check: payloads (empty send: connect-only check)
    tcp_send: bytes = b""
    tcp_receive: tuple[bytes, ...] = ()
    # grpc_health_check
    grpc_service_name: str = ""
    grpc_authority: str = ""


# --------------------------------------------------------------------------- routes

RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Route (or virtual host) retry_policy."""

    retry_on: frozenset[str]
    num_retries: int = 1
    per_try_timeout: float = 0.0  # 0: the route timeout bounds each try
    per_try_idle_timeout: float = 0.0
    retriable_status_codes: frozenset[int] = frozenset()
    # retry_back_off: exponential with full jitter; max defaults to 10 x base.
    base_interval: float = 0.025
    max_interval: float = 0.25
    # retry_host_predicate envoy.retry_host_predicates.previous_hosts: try another host.
    retry_other_hosts: bool = True
    host_selection_retry_max_attempts: int = 1


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """RouteAction.hash_policy entry: what a ring-hash or maglev pick hashes on."""

    kind: Literal["header", "cookie", "source_ip", "query_parameter"]
    name: str = ""  # header name (lower-case), cookie name or query parameter name
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class LocalRateLimit:
    """envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit: a token bucket per
    listener filter chain (or per route when configured there)."""

    stat_prefix: str
    max_tokens: int
    tokens_per_fill: int
    fill_interval: float
    status: int = 429
    # filter_enabled / filter_enforced runtime fractions, percent of requests.
    enabled_percent: float = 100.0
    enforced_percent: float = 100.0
    response_headers: tuple[tuple[str, str], ...] = ()
