"""hcm.Exchange without sockets: rate limit, routing, breaker admission (both priorities),
retries and retry budgets, timeouts, grpc-timeout, stream idle, response stats.

Configurations are compiled from bootstrap documents as the proxy compiles them; ``now`` is a
number the test moves, and randomness a seeded ``random.Random``.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.config.model import HttpConnectionManager
from meshproxy.hcm.context import OVERLOADED, HttpContext, LocalReply
from meshproxy.hcm.exchange import Exchange
from meshproxy.router.table import RouteTable
from meshproxy.stats import Store
from meshproxy.upstream.cluster import ClusterRuntime, endpoint_hosts
from meshproxy.upstream.manager import ClusterManager

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
T0 = 1000.0


class Listener:
    """The little the context keeps of its listener (nothing here reads it)."""

    config: Any = None
    draining = False
    graceful = False
    deadlines: set[Any] = set()

    def connection_opened(self, conn: Any) -> None: ...

    def connection_closed(self, conn: Any) -> None: ...


class Stream:
    """A carrier as the codecs' streams are: it records what the exchange told it."""

    def __init__(self) -> None:
        self.finished = self.response_started = self.request_complete = self.client_gone = False
        self.status = self.rx_bytes = self.tx_bytes = 0
        self.retries: list[float] = []
        self.replies: list[LocalReply] = []

    def local_reply(self, reply: LocalReply) -> None:
        self.replies.append(reply)

    def retry_after(self, delay: float) -> None:
        self.retries.append(delay)

    def resend(self) -> None:
        pass


def response(
    x: Exchange, status: int, grpc_status: bytes | None = None, *, gone: bool = False
) -> float | None:
    """The back-off the exchange asked for after these response headers, None when relayed."""
    carrier = Stream()
    carrier.client_gone = gone
    return carrier.retries[0] if x.response(carrier, status, grpc_status, T0) else None


class Request:
    """A finished request as a stream reports it (the ``RequestView`` of the exchange)."""

    def __init__(self, status: int = 200, flags: str = "-") -> None:
        self.method = b"GET"
        self.url = b"/"
        self.authority: bytes | None = b"svc"
        self.headers: list[tuple[bytes, bytes]] = []
        self.request_id: bytes | None = None
        self.status = status
        self.flags = flags
        self.rx_bytes = 0
        self.tx_bytes = 0


def context(
    action: dict[str, Any] | None = None,
    *,
    cluster: dict[str, Any] | None = None,
    filters: list[dict[str, Any]] | None = None,
    routes: list[dict[str, Any]] | None = None,
    manager: dict[str, Any] | None = None,
) -> HttpContext:
    route = {"match": {"prefix": "/"}, "route": {"cluster": "backend", **(action or {})}}
    hcm = {
        "@type": HCM,
        "stat_prefix": "http",
        "route_config": {
            "name": "rc",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes or [route]}],
        },
        "http_filters": [*(filters or []), {"name": "router", "typed_config": {"@type": ROUTER}}],
        **(manager or {}),
    }
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in (9001, 9002)
    ]
    doc = {
        "static_resources": {
            "listeners": [
                {
                    "name": "http",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "backend",
                        "endpoints": [{"lb_endpoints": endpoints}],
                    },
                    **(cluster or {}),
                }
            ],
        }
    }
    config = parse_bootstrap(json.dumps(doc))
    store = Store()
    rng = random.Random(7)
    manager = ClusterManager(store, rng)
    for c in config.clusters:
        rt = ClusterRuntime(c, store.cluster_stats(c.name), rng)
        rt.set_hosts(list(endpoint_hosts(c)))
        manager.clusters[c.name] = rt
    f = config.listeners[0].filter_chains[0].filter
    assert isinstance(f, HttpConnectionManager)
    return HttpContext(
        f, RouteTable(f.route_config), manager, store.http_stats("http"), Listener(), None, rng, T0
    )


def route(x: Exchange, url: bytes, headers: list[tuple[bytes, bytes]]) -> LocalReply | ClusterRuntime:
    """The HCM's routing as the streams run it with no filter: match, then the router's action."""
    return x.match(b"svc", url, headers) or x.route(b"svc")


def forwarded(
    ctx: HttpContext, now: float = T0, headers: list[tuple[bytes, bytes]] | None = None
) -> Exchange:
    """An exchange started at T0, routed and admitted, its first attempt started at ``now``."""
    x = Exchange(ctx, T0)
    routed = route(x, b"/", headers or [])
    assert isinstance(routed, ClusterRuntime)
    assert x.forward(routed, b"svc", b"/", headers or [], b"10.0.0.1") is None
    x.attempt_started(now)
    return x


# ---------------------------------------------------------------------------- rate limit


def test_local_rate_limit_refuses_past_the_bucket_and_refills_on_the_interval() -> None:
    limit = {
        "stat_prefix": "rl",
        "token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "1s"},
        "filter_enabled": {"default_value": {"numerator": 100}},
        "filter_enforced": {"default_value": {"numerator": 100}},
    }
    ctx = context(filters=[{"name": "rl", "typed_config": {"@type": RATELIMIT, **limit}}])
    assert ctx.filters is not None

    def run(now: float) -> list[LocalReply]:
        stream = Stream()
        x = Exchange(ctx, T0)
        assert x.match(b"svc", b"/", []) is None
        passed = x.request_filters(stream, now)  # type: ignore[arg-type]  # the little a rate limit reads
        assert passed == (not stream.replies)
        return stream.replies

    assert run(T0) == []
    (refused,) = run(T0 + 0.5)
    assert (refused.status, refused.flags) == (429, "RL")
    assert run(T0 + 1.0) == []
    assert (ctx.stats.local_rate_limit_ok, ctx.stats.local_rate_limit_rate_limited) == (2, 1)


def test_a_rate_limit_enabled_for_no_request_is_left_out_of_the_chain() -> None:
    limit = {"stat_prefix": "rl", "token_bucket": {"max_tokens": 1, "fill_interval": "1s"}}
    ctx = context(filters=[{"name": "rl", "typed_config": {"@type": RATELIMIT, **limit}}])
    assert ctx.filters is None


# ---------------------------------------------------------------------------- routing


def test_no_route_direct_response_and_unknown_cluster() -> None:
    ctx = context(
        routes=[
            {"match": {"path": "/direct"}, "direct_response": {"status": 418}},
            {"match": {"path": "/gone"}, "route": {"cluster": "backend"}},
        ]
    )
    assert isinstance(route(Exchange(ctx, T0), b"/nothing", []), LocalReply)
    assert route(Exchange(ctx, T0), b"/nothing", []).flags == "NR"  # type: ignore[union-attr]
    direct = route(Exchange(ctx, T0), b"/direct", [])
    assert isinstance(direct, LocalReply) and direct.status == 418
    assert ctx.stats.no_route == 2 and ctx.stats.rq_direct_response == 1
    del ctx.clusters.clusters["backend"]
    missing = route(Exchange(ctx, T0), b"/gone", [])
    assert isinstance(missing, LocalReply) and (missing.status, missing.flags) == (503, "NC")


# ---------------------------------------------------------------------------- breakers


def thresholds(default: int, high: int) -> dict[str, Any]:
    return {
        "circuit_breakers": {
            "thresholds": [
                {"priority": "DEFAULT", "max_requests": default},
                {"priority": "HIGH", "max_requests": high},
            ]
        }
    }


def test_max_requests_admission_and_release() -> None:
    ctx = context(cluster=thresholds(1, 100))
    first = forwarded(ctx)
    second = Exchange(ctx, T0)
    cluster = route(second, b"/", [])
    assert isinstance(cluster, ClusterRuntime)
    refused = second.forward(cluster, b"svc", b"/", [], b"10.0.0.1")
    assert refused is not None and (refused.status, refused.flags) == (503, "UO")
    assert OVERLOADED in refused.extra
    first.finish(T0 + 0.01, Request(), "HTTP/1.1", None)
    third = Exchange(ctx, T0)
    assert route(third, b"/", []) is cluster
    assert third.forward(cluster, b"svc", b"/", [], b"10.0.0.1") is None


@pytest.mark.parametrize(("priority", "admitted"), [("HIGH", False), ("DEFAULT", True)])
def test_route_priority_selects_the_clusters_thresholds(priority: str, admitted: bool) -> None:
    ctx = context({"priority": priority}, cluster=thresholds(100, 1))
    forwarded(ctx)
    second = Exchange(ctx, T0)
    cluster = route(second, b"/", [])
    assert isinstance(cluster, ClusterRuntime)
    assert (second.forward(cluster, b"svc", b"/", [], b"10.0.0.1") is None) is admitted
    rm = cluster.breakers.high if priority == "HIGH" else cluster.breakers.default
    assert rm.requests.count == (2 if admitted else 1)


# ---------------------------------------------------------------------------- retries


RETRY_5XX = {
    "retry_policy": {"retry_on": "5xx", "num_retries": 2, "retry_back_off": {"base_interval": "0.1s"}}
}


def test_retriable_statuses_retry_within_num_retries_then_relay() -> None:
    ctx = context(RETRY_5XX)
    x = forwarded(ctx)
    first = response(x, 503)
    assert first is not None and 0.0 <= first <= 0.1  # full jitter of (2**1 - 1) * base
    assert x.next_attempt() is not None and x.attempt == 2
    second = response(x, 503)
    assert second is not None and 0.0 <= second <= 0.3
    x.next_attempt()
    assert response(x, 503) is None  # attempts exhausted: relay the 503
    stats = x.cluster.stats  # type: ignore[union-attr]
    assert stats.upstream_rq_retry == 2 and stats.upstream_rq_retry_success == 1


def test_a_response_after_a_retry_counts_retry_success() -> None:
    ctx = context(RETRY_5XX)
    x = forwarded(ctx)
    assert x.failed("reset", True) is not None
    x.next_attempt()
    assert response(x, 200) is None
    assert x.cluster.stats.upstream_rq_retry_success == 1  # type: ignore[union-attr]


def test_no_retry_once_the_response_began_or_the_body_outgrew_its_copy() -> None:
    ctx = context({**RETRY_5XX})
    x = forwarded(ctx)
    assert x.failed("reset", retry_possible=False) is None
    y = forwarded(ctx)
    y.keep_body(b"x" * (y.plan.retry_buffer_limit + 1))  # type: ignore[union-attr]
    assert y.body_copy is None
    assert y.failed("reset", True) is None


def test_max_retries_breaker_refuses_a_retry() -> None:
    ctx = context(RETRY_5XX, cluster={"circuit_breakers": {"thresholds": [{"max_retries": 0}]}})
    x = forwarded(ctx)
    assert response(x, 503) is None
    assert x.cluster.stats.upstream_rq_retry_overflow == 1  # type: ignore[union-attr]


def test_retry_budget_scales_with_active_requests() -> None:
    budget = {"budget_percent": {"value": 50.0}, "min_retry_concurrency": 1}
    ctx = context(RETRY_5XX, cluster={"circuit_breakers": {"thresholds": [{"retry_budget": budget}]}})
    active = [forwarded(ctx) for _ in range(4)]  # budget: max(1, 50 % of 4) = 2 retries at once
    assert active[0].failed("reset", True) is not None
    assert active[1].failed("reset", True) is not None
    assert active[2].failed("reset", True) is None
    assert active[0].cluster.stats.upstream_rq_retry_overflow == 1  # type: ignore[union-attr]
    for done in active[:2]:  # each gives its retry back; 2 requests left: max(1, 50 % of 2) = 1
        done.finish(T0 + 1, Request(503, "UC"), "HTTP/1.1", None)
    assert active[3].failed("reset", True) is not None


def test_grpc_status_in_trailers_only_response_is_retried() -> None:
    ctx = context({"retry_policy": {"retry_on": "unavailable", "num_retries": 1}})
    x = forwarded(ctx)
    assert response(x, 200, b"14") is not None
    x.next_attempt()
    assert response(x, 200, b"0") is None


# ---------------------------------------------------------------------------- timeouts


def test_route_timeout_runs_from_the_request_end_and_max_stream_duration_from_the_start() -> None:
    ctx = context({"timeout": "2s", "max_stream_duration": {"max_stream_duration": "3s"}})
    x = forwarded(ctx)
    assert x.stream_deadline == T0 + 3
    assert x.route_deadline(T0 + 0.5) == T0 + 2.5
    assert x.route_deadline(T0 + 0.9) == T0 + 2.5  # fixed when first asked: a retry keeps it
    assert forwarded(ctx).route_deadline(T0 + 1.5) == T0 + 3  # the stream limit comes first
    reply = x.timed_out()
    assert (reply.status, reply.flags) == (504, "UT")
    assert ctx.stats.downstream_rq_timeout == 1 and x.cluster.stats.upstream_rq_timeout == 1  # type: ignore[union-attr]


GRPC = (b"content-type", b"application/grpc")


@pytest.mark.parametrize(
    ("cap", "asked", "deadline", "sent"),
    [
        ("1s", b"100m", 0.1, b"100m"),  # within the cap: as asked
        ("0.05s", b"100m", 0.05, b"50m"),  # capped; the upstream hears the cap
        ("0s", b"20S", 20.0, b"20000m"),  # 0: no cap
        ("1s", b"bogus", 0.0, None),  # malformed: ignored, and removed (no effective limit)
    ],
)
def test_grpc_timeout_replaces_the_route_timeout_and_is_rewritten(
    cap: str, asked: bytes, deadline: float, sent: bytes | None
) -> None:
    ctx = context({"timeout": "30s", "max_stream_duration": {"grpc_timeout_header_max": cap}})
    headers = [GRPC, (b"grpc-timeout", asked)]
    x = forwarded(ctx, headers=headers)
    assert x.stream_deadline == (pytest.approx(T0 + deadline) if deadline else 0.0)
    assert dict(headers).get(b"grpc-timeout") == sent
    expected = T0 + deadline if deadline else T0 + 1 + 30
    assert x.route_deadline(T0 + 1) == pytest.approx(expected)


def test_grpc_timeout_is_left_alone_without_the_cap_or_on_plain_http() -> None:
    plain = [(b"content-type", b"text/plain"), (b"grpc-timeout", b"100m")]
    x = forwarded(context({"max_stream_duration": {"grpc_timeout_header_max": "1s"}}), headers=plain)
    assert x.stream_deadline == 0.0 and dict(plain)[b"grpc-timeout"] == b"100m"
    grpc = [GRPC, (b"grpc-timeout", b"100m")]
    y = forwarded(context({"timeout": "5s"}), headers=grpc)
    assert y.stream_deadline == 0.0 and dict(grpc)[b"grpc-timeout"] == b"100m"


def test_stream_idle_timeout_reads_progress() -> None:
    x = forwarded(context())
    assert x.idle(T0, 1.0, 10, False) is None
    assert x.idle(T0 + 0.9, 1.0, 10, False) is None
    assert x.idle(T0 + 1.5, 1.0, 11, False) is None  # progress: the clock restarts
    reply = x.idle(T0 + 2.6, 1.0, 11, False)
    assert reply is not None and (reply.status, reply.flags) == (408, "SI")
    done = x.idle(T0 + 4.0, 1.0, 11, True)
    assert done is not None and done.status == 504


# ---------------------------------------------------------------------------- stats


def test_upstream_time_runs_from_the_attempt_to_the_last_upstream_byte() -> None:
    ctx = context()
    x = forwarded(ctx, now=T0 + 1.0)  # routing took a second: not upstream time
    x.upstream_done(T0 + 1.25)
    x.finish(T0 + 3.0, Request(200), "HTTP/2", None)
    cs = x.cluster.stats  # type: ignore[union-attr]
    assert cs.upstream_rq_time.sum == pytest.approx(250.0)
    assert ctx.stats.downstream_rq_time.sum == pytest.approx(3000.0)
    assert cs.upstream_rq_xx[2] == 1


def test_upstream_status_counts_only_when_an_attempt_started() -> None:
    ctx = context(cluster=thresholds(1, 1))
    x = forwarded(ctx)
    x.finish(T0 + 0.1, Request(504, "UT"), "HTTP/1.1", None)  # the router's answer: counted
    refused = Exchange(ctx, T0)
    cluster = route(refused, b"/", [])
    blocked = forwarded(ctx)
    assert refused.forward(cluster, b"svc", b"/", [], b"1.1.1.1") is not None  # type: ignore[arg-type]
    refused.finish(T0 + 0.1, Request(503, "UO"), "HTTP/1.1", None)
    blocked.finish(T0 + 0.2, Request(0, "DC"), "HTTP/1.1", None)  # no status: not counted
    cs = x.cluster.stats  # type: ignore[union-attr]
    assert cs.upstream_rq_xx[5] == 1 and sum(cs.upstream_rq_xx) == 1
    assert cs.upstream_rq_time.sum == 0.0  # no upstream response completed
