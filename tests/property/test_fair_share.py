"""Hypothesis over the max_requests breaker's fair share by source (``ClusterRuntime.admit_request``
with ``upstream/breaker.FairShare``): requests arrive from a few sources and end in any order.

Properties: the breaker never exceeds max_requests; an admission under contention (the breaker
at least half full) never leaves its source above ``max(1, (max_requests - max_requests // 4)
// active sources)``; a refusal for fair share happens only under contention and while another
source holds some; a lone source can use three quarters of the breaker (all of one under 4),
and then a newcomer is still admitted; the per-source counts always add up to the breaker's
count and hold no idle source.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.config.model import Cluster
from meshproxy.config.policy import Thresholds
from meshproxy.stats import ClusterStats
from meshproxy.upstream.cluster import ClusterRuntime

# An operation: ("in", source) admits one request from it; ("out", n) ends the n-th live one.
ops = st.lists(
    st.one_of(
        st.tuples(st.just("in"), st.sampled_from([b"a", b"b", b"c", b"d"])),
        st.tuples(st.just("out"), st.integers(0, 1000)),
    ),
    max_size=120,
)


def cluster(max_requests: int) -> ClusterRuntime:
    config = Cluster("c", "STATIC", (), thresholds=(Thresholds(max_requests=max_requests),))
    return ClusterRuntime(config, ClusterStats(), random.Random(1))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 24), ops)
def test_no_source_exceeds_its_share_under_contention(maximum: int, steps: list[tuple[str, object]]) -> None:
    c = cluster(maximum)
    rm = c.breakers.default
    live: list[bytes] = []
    for op, arg in steps:
        if op == "out":
            if live:
                c.request_done(rm, False, live.pop(arg % len(live)))  # type: ignore[operator]
        else:
            source: bytes = arg  # type: ignore[assignment]
            before = rm.requests.count
            contended = before * 2 >= maximum
            result = c.admit_request(rm, source)
            if result:
                live.append(source)
                held = rm.share.held[source]
                if contended:
                    assert held <= max(1, (maximum - maximum // 4) // len(rm.share.held))
            elif result is None:
                assert contended and before < maximum
            else:
                assert before == maximum
        assert rm.requests.count == len(live) <= maximum
        assert sum(rm.share.held.values()) == len(live)
        assert all(n > 0 for n in rm.share.held.values())


@given(st.integers(1, 64))
def test_a_lone_source_uses_three_quarters_and_a_newcomer_still_gets_in(maximum: int) -> None:
    c = cluster(maximum)
    rm = c.breakers.default
    alone = maximum - maximum // 4 if maximum >= 4 else maximum
    assert all(c.admit_request(rm, b"first") for _ in range(alone))
    if alone < maximum:
        assert c.admit_request(rm, b"first") is None
        assert c.admit_request(rm, b"newcomer") is True
    else:
        assert c.admit_request(rm, b"first") is False
