"""hcm.Exchange's hardening policy without sockets (issue 12): path normalisation before
routing, ``request_timeout``, the breaker's fair share by source, the overload manager's hooks
(shedding, keep-alive, timer scaling), and no replay without a retry policy.

The contexts are compiled from bootstrap documents (``test_exchange.context``); ``now`` is a
number the test moves and the overload state is injected into the context.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from test_exchange import T0, Request, Stream, context, forwarded, route

from meshproxy.hcm.context import OVERLOADED, LocalReply
from meshproxy.hcm.exchange import Exchange
from meshproxy.hcm.headers import upstream_request
from meshproxy.overload.config import TimerMinimum
from meshproxy.overload.state import NORMAL, OverloadState
from meshproxy.upstream.cluster import ClusterRuntime

DENY_ADMIN = [
    {"match": {"prefix": "/admin"}, "direct_response": {"status": 403}},
    {"match": {"prefix": "/"}, "route": {"cluster": "backend"}},
]
NORMALIZE = {"normalize_path": True, "merge_slashes": True}


def routed(ctx: Any, url: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[Exchange, Any]:
    x = Exchange(ctx, T0)
    return x, route(x, url, headers or [])


# ---------------------------------------------------------------------------- path policy


@pytest.mark.parametrize(
    "url", [b"/x/../admin", b"//admin", b"/%61dmin", b"/admin/./", b"/./admin", b"/a/b/../../admin?q=/x"]
)
def test_a_denied_path_is_not_bypassed_by_another_spelling(url: bytes) -> None:
    ctx = context(routes=DENY_ADMIN, manager=NORMALIZE)
    _, reply = routed(ctx, url)
    assert isinstance(reply, LocalReply) and reply.status == 403


def test_without_a_path_policy_the_target_is_routed_as_sent() -> None:
    """Envoy's default (all off): what the deny test above relies on being configured."""
    ctx = context(routes=DENY_ADMIN)
    x, cluster = routed(ctx, b"/x/../admin")
    assert isinstance(cluster, ClusterRuntime) and x.target == b"/x/../admin"


def test_the_normalised_target_is_routed_and_forwarded() -> None:
    ctx = context(
        routes=[
            {"match": {"prefix": "/internal/"}, "route": {"cluster": "backend"}},
            {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
        ],
        manager=NORMALIZE,
    )
    x, cluster = routed(ctx, b"/a/../internal/%78?y=/../z")
    assert isinstance(cluster, ClusterRuntime)
    assert x.target == b"/internal/x?y=/../z"  # the query is never touched
    assert x.forward(cluster, b"svc", x.target, [], b"10.0.0.1") is None
    _, target, *_ = upstream_request(x, b"svc", x.target, [], None, None, b"10.0.0.1", None)
    assert target == b"/internal/x?y=/../z"


def test_a_path_that_cannot_be_normalised_is_refused_with_400() -> None:
    ctx = context(manager=NORMALIZE)
    _, reply = routed(ctx, b"/a%zz")
    assert isinstance(reply, LocalReply) and reply.status == 400
    assert ctx.stats.downstream_rq_failed_path_normalization == 1


@pytest.mark.parametrize(
    ("action", "status", "location"),
    [
        ("UNESCAPE_AND_REDIRECT", 307, b"/a/b?q"),
        ("REJECT_REQUEST", 400, None),
        ("UNESCAPE_AND_FORWARD", 0, None),
    ],
)
def test_escaped_slashes(action: str, status: int, location: bytes | None) -> None:
    ctx = context(manager={"path_with_escaped_slashes_action": action})
    x, reply = routed(ctx, b"/a%2Fb?q")
    if status == 0:
        assert isinstance(reply, ClusterRuntime) and x.target == b"/a/b?q"
        return
    assert isinstance(reply, LocalReply) and reply.status == status
    assert dict(reply.extra).get(b"location") == location


def test_a_grpc_request_is_refused_instead_of_redirected() -> None:
    ctx = context(manager={"path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT"})
    _, reply = routed(ctx, b"/pkg.Svc%2FMethod", [(b"content-type", b"application/grpc+proto")])
    assert isinstance(reply, LocalReply) and reply.status == 400
    assert ctx.stats.downstream_rq_failed_path_normalization == 1
    assert ctx.stats.downstream_rq_redirected_with_normalized_path == 0


def test_path_parameters_are_kept_as_envoy_keeps_them_and_a_prefix_deny_still_holds() -> None:
    """``/admin;x``: Envoy does not strip path parameters, nor does meshproxy (the application
    receives what it was sent). A deny by ``prefix`` covers them; an exact ``path`` deny does
    not, which is why docs/configuration.md says to deny with a prefix or a ``safe_regex``."""
    ctx = context(routes=DENY_ADMIN, manager=NORMALIZE)
    _, reply = routed(ctx, b"/admin;x")
    assert isinstance(reply, LocalReply) and reply.status == 403
    exact = context(
        routes=[
            {"match": {"safe_regex": {"regex": "/admin(;[^/]*)?(/.*)?"}}, "direct_response": {"status": 403}},
            {"match": {"prefix": "/"}, "route": {"cluster": "backend"}},
        ],
        manager=NORMALIZE,
    )
    for url in (b"/admin;x", b"/admin;x/y", b"/x/../admin"):
        _, reply = routed(exact, url)
        assert isinstance(reply, LocalReply) and reply.status == 403, url


# ---------------------------------------------------------------------------- request_timeout


def test_request_timeout_runs_from_the_stream_start_while_the_request_arrives() -> None:
    ctx = context(manager={"request_timeout": "5s"})
    x = forwarded(ctx)
    assert x.stream_deadline == T0 + 5
    carrier = Stream()
    x.deadline_fired(carrier)
    assert [(r.status, r.body) for r in carrier.replies] == [(408, b"request timeout")]
    assert ctx.stats.downstream_rq_timeout == 1 and x.cluster.stats.upstream_rq_timeout == 0  # type: ignore[union-attr]


def test_a_complete_request_leaves_request_timeout_for_the_route_timeout() -> None:
    ctx = context({"timeout": "2s"}, manager={"request_timeout": "5s"})
    x = forwarded(ctx)
    assert x.route_deadline(T0 + 4) == T0 + 6  # replaces the request deadline, even a later one
    unbounded = context({"timeout": "0s"}, manager={"request_timeout": "5s"})
    assert forwarded(unbounded).route_deadline(T0 + 1) == 0.0  # disarmed: nothing replaces it
    carrier = Stream()
    carrier.request_complete = True
    x.deadline_fired(carrier)
    assert [(r.status, r.flags) for r in carrier.replies] == [(504, "UT")]


def test_an_earlier_stream_limit_answers_504_not_408() -> None:
    ctx = context({"max_stream_duration": {"max_stream_duration": "1s"}}, manager={"request_timeout": "5s"})
    x = forwarded(ctx)
    assert x.stream_deadline == T0 + 1
    carrier = Stream()
    x.deadline_fired(carrier)
    assert [r.status for r in carrier.replies] == [504]


def test_a_response_that_began_disarms_request_timeout() -> None:
    """As in Envoy: an upgrade's 101 (or an early response) ends what request_timeout bounds."""
    x = forwarded(context(manager={"request_timeout": "5s"}))
    carrier = Stream()
    carrier.response_started = True
    x.deadline_fired(carrier)
    assert carrier.replies == []


# ---------------------------------------------------------------------------- fair share


def admit(ctx: Any, source: bytes) -> tuple[Exchange, LocalReply | None]:
    x = Exchange(ctx, T0)
    cluster = route(x, b"/", [])
    assert isinstance(cluster, ClusterRuntime)
    return x, x.forward(cluster, b"svc", b"/", [], source)


def test_a_lone_source_keeps_a_quarter_of_the_breaker_free_for_others() -> None:
    ctx = context(cluster={"circuit_breakers": {"thresholds": [{"max_requests": 8}]}})
    results = [admit(ctx, b"10.0.0.1")[1] for _ in range(7)]
    assert results[:6] == [None] * 6  # 8 - 8 // 4
    assert results[6] is not None and results[6].body == b"upstream overflow: fair share of max_requests"
    assert [admit(ctx, b"10.0.0.2")[1] for _ in range(2)] == [None, None]  # the kept quarter
    _, full = admit(ctx, b"10.0.0.3")
    assert full is not None and full.body == b"upstream overflow: max_requests"


def test_a_small_breaker_is_envoys_for_a_lone_source() -> None:
    ctx = context(cluster={"circuit_breakers": {"thresholds": [{"max_requests": 3}]}})
    assert [admit(ctx, b"10.0.0.1")[1] for _ in range(3)] == [None] * 3


def test_a_source_over_its_share_of_a_contended_breaker_is_refused_and_others_are_not() -> None:
    ctx = context(cluster={"circuit_breakers": {"thresholds": [{"max_requests": 16}]}})
    hog = [admit(ctx, b"10.0.0.1") for _ in range(8)]  # half full: contention starts
    assert all(reply is None for _, reply in hog)
    _, first = admit(ctx, b"10.0.0.2")
    assert first is None  # the newcomer's share is (16 - 4) // 2 = 6
    _, over = admit(ctx, b"10.0.0.1")  # the hog holds 8 >= 6
    assert over is not None and (over.status, over.flags) == (503, "UO") and OVERLOADED in over.extra
    assert over.body == b"upstream overflow: fair share of max_requests"
    cluster = ctx.clusters.clusters["backend"]
    assert cluster.stats.upstream_rq_fair_share_overflow == 1
    assert [admit(ctx, b"10.0.0.2")[1] for _ in range(6)] == [None] * 5 + [over]  # 6 of 6
    for x, _ in hog[:3]:
        x.finish(T0 + 1, Request(), "HTTP/1.1", None)
    assert cluster.breakers.default.share.held == {b"10.0.0.1": 5, b"10.0.0.2": 6}
    assert admit(ctx, b"10.0.0.1")[1] is None  # back under its share


def test_a_refused_request_holds_nothing() -> None:
    ctx = context(cluster={"circuit_breakers": {"thresholds": [{"max_requests": 2}]}})
    first, _ = admit(ctx, b"a")
    second, _ = admit(ctx, b"b")
    refused, reply = admit(ctx, b"c")
    assert reply is not None
    for x in (first, second, refused):
        x.finish(T0 + 1, Request(503), "HTTP/1.1", None)
    rm = ctx.clusters.clusters["backend"].breakers.default
    assert rm.requests.count == 0 and rm.share.held == {}


# ---------------------------------------------------------------------------- overload hooks


def test_stop_accepting_requests_sheds_before_routing_with_ol() -> None:
    ctx = context(routes=DENY_ADMIN)
    ctx.overload = OverloadState(shed_fraction=1.0)
    _, reply = routed(ctx, b"/")
    assert isinstance(reply, LocalReply) and (reply.status, reply.flags) == (503, "OL")
    assert OVERLOADED in reply.extra and ctx.stats.downstream_rq_overload_close == 1
    ctx.overload = NORMAL
    assert isinstance(routed(ctx, b"/")[1], ClusterRuntime)


def test_a_fractional_shed_draws_per_request() -> None:
    ctx = context()
    ctx.overload = OverloadState(shed_fraction=0.5)
    shed = sum(isinstance(routed(ctx, b"/")[1], LocalReply) for _ in range(400))
    assert 120 < shed < 280 and ctx.stats.downstream_rq_overload_close == shed


def test_disable_keepalive_closes_and_counts() -> None:
    ctx = context()
    x = Exchange(ctx, T0)
    assert not x.keepalive_closes()
    ctx.overload = OverloadState(keepalive_close_fraction=1.0)
    assert x.keepalive_closes() and ctx.stats.downstream_cx_overload_disable_keepalive == 1


def test_reduce_timeouts_scales_stream_idle() -> None:
    ctx = context()
    x = forwarded(ctx)
    carrier = Stream()
    carrier.request_complete = True
    x.sweep(carrier, T0, 300.0)
    x.sweep(carrier, T0 + 2, 300.0)
    assert carrier.replies == []  # 2 s idle of a 300 s limit
    ctx.overload = OverloadState(
        timer_scale=1.0,
        timer_minimums=MappingProxyType(
            {"HTTP_DOWNSTREAM_STREAM_IDLE": TimerMinimum("HTTP_DOWNSTREAM_STREAM_IDLE", min_timeout=1.0)}
        ),
    )
    x.sweep(carrier, T0 + 2.5, 300.0)
    assert [(r.status, r.flags) for r in carrier.replies] == [(504, "SI")]


# ---------------------------------------------------------------------------- no replay without a policy


@pytest.mark.parametrize(
    ("retry_on", "kind", "retried"),
    [
        (None, "reset", False),
        (None, "connect-failure", False),
        (None, "per-try-timeout", False),
        ("connect-failure", "reset", False),
        ("retriable-status-codes", "reset", False),
        ("refused-stream", "reset", False),
        ("reset", "reset", True),
        ("5xx", "reset", True),
        ("connect-failure", "connect-failure", True),
    ],
)
def test_a_failed_attempt_is_replayed_only_when_the_route_policy_covers_it(
    retry_on: str | None, kind: Any, retried: bool
) -> None:
    action = {} if retry_on is None else {"retry_policy": {"retry_on": retry_on, "num_retries": 3}}
    x = forwarded(context(action))
    carrier = Stream()
    x.upstream_failed(carrier, kind, LocalReply(503, b"reset", "UC"))
    assert (len(carrier.retries), len(carrier.replies)) == ((1, 0) if retried else (0, 1))
