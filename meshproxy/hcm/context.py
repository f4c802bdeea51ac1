"""What every request of one http_connection_manager filter chain shares, and what it precomputes.

Owns ``HttpContext`` (one per filter chain and configuration snapshot: the route table, the
clusters, the stats, the HTTP filters' hooks (``hcm/chain.py``), the request-id source, and
the overload manager's current ``OverloadState`` in ``overload``, ``NORMAL`` unless the
server installs another), ``RoutePlan`` (a routed request's needs from its route, built once per route
decision and cached in the context), ``RequestIds`` (cheap UUID4-shaped request ids) and
the common ``LocalReply`` values (the class is ``reply.py``'s). Shared by both codecs; must
not import asyncio, sockets, or either codec package.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from meshproxy.config.model import HttpConnectionManager, RouteAction
from meshproxy.hcm.chain import build_chain
from meshproxy.hcm.reply import LocalReply
from meshproxy.overload.state import NORMAL, OverloadState
from meshproxy.router.retry import RetryRules
from meshproxy.stats import Store

if TYPE_CHECKING:
    from meshproxy.access_log import AccessLogger
    from meshproxy.config.model import Listener
    from meshproxy.connection_limit import ChainLimit
    from meshproxy.hcm.filters import FilterChain
    from meshproxy.identity.spiffe import SpiffeId
    from meshproxy.router.table import RouteDecision, RouteTable
    from meshproxy.stats import HttpStats
    from meshproxy.telemetry.istio import HttpReporter
    from meshproxy.tracing.tracer import Tracer
    from meshproxy.upstream.cluster import ClusterRuntime, Host
    from meshproxy.upstream.manager import ClusterManager

# Route timeouts of at least this many seconds are kept by the listener's deadline tick (to within
# its DEADLINE_TICK) rather than by an event-loop timer each: a set insertion per request.
COARSE_TIMEOUT = 1.0

# Envoy marks local replies caused by a circuit breaker.
OVERLOADED = (b"x-envoy-overloaded", b"true")


class ListenerView(Protocol):
    """What the codecs need of the listener that accepted their connection."""

    config: Listener
    draining: bool  # exchanges end their connection (connection: close, GOAWAY)
    graceful: bool  # ... while it still accepts (a graceful drain's first phase)
    health_failed: bool  # the admin's /healthcheck/fail (the health_check filter answers 503)
    deadlines: set[Any]  # streams whose coarse route deadline the listener's tick keeps

    def connection_opened(self, conn: Any) -> None: ...

    def connection_closed(self, conn: Any) -> None: ...


NO_ROUTE = LocalReply(404, b"", "NR")
NO_HEALTHY_UPSTREAM = LocalReply(503, b"no healthy upstream", "UH")
OVERFLOW_REQUESTS = LocalReply(503, b"upstream overflow: max_requests", "UO", (OVERLOADED,))
OVERFLOW_PENDING = LocalReply(503, b"upstream overflow: max_pending_requests", "UO", (OVERLOADED,))
OVERFLOW_FAIR_SHARE = LocalReply(503, b"upstream overflow: fair share of max_requests", "UO", (OVERLOADED,))
OVERLOAD_SHED = LocalReply(503, b"envoy overloaded", "OL", (OVERLOADED,))
REQUEST_TIMEOUT = LocalReply(408, b"request timeout", "-")
PATH_REJECTED = LocalReply(400, b"invalid path", "-")
UPSTREAM_TIMEOUT = LocalReply(504, b"upstream request timeout", "UT")
STREAM_IDLE_RESPONSE = LocalReply(504, b"stream timeout", "SI")
STREAM_IDLE_REQUEST = LocalReply(408, b"stream timeout", "SI")
CONNECT_REFUSED = LocalReply(405, b"CONNECT is not supported", "-")
UPSTREAM_RESET = LocalReply(503, b"upstream connect error or disconnect/reset before headers", "UC")
UPSTREAM_GOING_AWAY = LocalReply(503, b"upstream connection going away", "UC")


class RequestIds:
    """``x-request-id`` values in UUID4 form: 74 random bits fixed per process, then a counter.

    ``uuid.uuid4`` costs a syscall and formatting 128 fresh random bits costs about a tenth of
    the proxy's per-request work; a random prefix plus a sequence number is just as unique
    (the prefix is drawn when the process starts, the counter never repeats within it).
    """

    __slots__ = ("_next", "_prefix")

    def __init__(self, rng: random.Random) -> None:
        r = rng.getrandbits(74)
        # 8-4-4-4-12 hex digits; version nibble 4, variant bits 10; the last 12 digits count.
        self._prefix = b"%08x-%04x-4%03x-%x%03x-" % (
            r >> 42,
            (r >> 26) & 0xFFFF,
            (r >> 14) & 0xFFF,
            0x8 | ((r >> 12) & 0x3),
            r & 0xFFF,
        )
        self._next = rng.getrandbits(20)  # do not start every process at 0

    def next(self) -> bytes:
        n = self._next
        self._next = n + 1
        return b"%b%012x" % (self._prefix, n & 0xFFFFFFFFFFFF)


class RoutePlan:
    """What a routed request needs from its route, precomputed once per route decision."""

    __slots__ = (
        "cluster",
        "grpc_timeout_max",
        "hash_policy",
        "high_priority",
        "host",
        "max_stream_duration",
        "mirrors",
        "per_try_timeout",
        "request_levels",
        "response_levels",
        "retry",
        "retry_buffer_limit",
        "rewrites",
        "timeout",
    )

    def __init__(self, decision: RouteDecision) -> None:
        route = decision.route
        assert route is not None
        action = route.action
        assert isinstance(action, RouteAction)
        self.cluster = action.cluster  # None: a weighted pick per request
        self.host = action.host_rewrite_literal.encode() if action.host_rewrite_literal else None
        self.rewrites = bool(action.prefix_rewrite) or action.regex_rewrite is not None
        self.timeout = action.timeout
        self.request_levels = decision.request_mutations_for(None)
        self.response_levels = decision.response_mutations_for(None)
        policy = action.retry_policy
        self.retry = RetryRules(policy) if policy is not None and policy.num_retries > 0 else None
        self.per_try_timeout = policy.per_try_timeout if policy is not None else 0.0
        self.retry_buffer_limit = action.retry_buffer_limit
        self.hash_policy = action.hash_policy
        self.max_stream_duration = action.max_stream_duration
        self.grpc_timeout_max = action.grpc_timeout_header_max
        self.high_priority = action.priority == "HIGH"  # the cluster's HIGH circuit breakers
        self.mirrors = action.mirrors  # request_mirror_policies (hcm/mirror.py)


class HttpContext:
    """What every connection of one http_connection_manager filter chain shares (per snapshot)."""

    __slots__ = (
        "access_log",
        "clusters",
        "config",
        "connection_limit",
        "istio",
        "listener",
        "local_identity",
        "overload",
        "filters",
        "plans",
        "request_ids",
        "rng",
        "routes",
        "scheme",
        "stats",
        "store",
        "to_http1",
        "to_http2",
        "tracer",
    )

    def __init__(
        self,
        config: HttpConnectionManager,
        routes: RouteTable,
        clusters: ClusterManager,
        stats: HttpStats,
        listener: ListenerView,
        access_log: AccessLogger | None,
        rng: random.Random,
        now: float,
        scheme: bytes = b"http",
        local_identity: SpiffeId | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.routes = routes
        self.clusters = clusters
        self.stats = stats
        # Every scope's stats, for filters that keep their own (RBAC's, by namespace).
        self.store = store if store is not None else Store()
        self.listener = listener
        # The overload manager's state, read once per decision; the listener swaps it whole
        # (``set_overload``) when the server's overload runtime changes it.
        self.overload: OverloadState = NORMAL
        self.access_log = access_log
        self.rng = rng
        self.scheme = scheme
        # RoutePlan per route decision, built on first use; bounded by the routes configured.
        self.plans: dict[RouteDecision, RoutePlan] = {}
        self.request_ids = RequestIds(rng)
        self.local_identity = local_identity  # our SVID's SPIFFE ID: XFCC's By=
        # The 1.1<->2 translators, installed by the listener (the layer above both codecs), so
        # neither codec package imports the other: ``to_http2(stream, cluster, authority)``
        # carries an HTTP/1.1 request on to an HTTP/2 cluster; ``to_http1(cluster, host)`` is
        # the upstream of an HTTP/2 stream routed to an HTTP/1.1 cluster.
        self.to_http2: Callable[[Any, ClusterRuntime, bytes], None] = _no_translator
        self.to_http1: Callable[[ClusterRuntime, Host], Any] = _no_translator
        # The chain's connection_limit counter, installed by the listener (it admits and
        # releases; carried across snapshots); None: no limit on this chain.
        self.connection_limit: ChainLimit | None = None
        # The chain's tracer (config.tracing), installed by the listener; None: not traced.
        self.tracer: Tracer | None = None
        # Istio's request metrics (config.istio_stats), installed by the listener; None: off.
        self.istio: HttpReporter | None = None
        # The http_filters' hooks (hcm/filters.py), built once per filter chain and snapshot;
        # None when none has anything to do: each hook site then costs one falsy check.
        self.filters: FilterChain | None = build_chain(config.http_filters, self, now)


def _no_translator(*args: Any) -> Any:
    raise RuntimeError("the listener did not install the HTTP/1.1<->HTTP/2 translators")
