"""Hypothesis properties of OutlierDetector over random sequences of results, ticks and
membership changes: the bookkeeping stays consistent, reported changes are exactly the state
changes, and the max_ejection_percent cap holds; peers drawn from
one latency band are never latency-ejected."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.config.policy import LatencyEjection, OutlierDetection
from meshproxy.upstream.outlier import OutlierDetector

KEYS = [f"10.0.0.{i}:80" for i in range(12)]

record_op = st.tuples(
    st.just("record"), st.sampled_from(KEYS), st.sampled_from([200, 204, 404, 500, 502, 503, 504])
)
local_op = st.tuples(st.just("local"), st.sampled_from(KEYS), st.booleans())
tick_op = st.tuples(st.just("tick"), st.floats(0.1, 40.0), st.none())
hosts_op = st.tuples(st.just("hosts"), st.lists(st.sampled_from(KEYS), min_size=1, unique=True), st.none())

configs = st.builds(
    OutlierDetection,
    consecutive_5xx=st.integers(0, 4),
    consecutive_gateway_failure=st.integers(0, 4),
    consecutive_local_origin_failure=st.integers(0, 4),
    split_external_local_origin_errors=st.booleans(),
    interval=st.just(10.0),
    base_ejection_time=st.floats(1.0, 20.0),
    max_ejection_time=st.floats(1.0, 60.0),
    max_ejection_percent=st.integers(0, 100),
    enforcing_consecutive_5xx=st.sampled_from([0, 50, 100]),
    enforcing_consecutive_gateway_failure=st.sampled_from([0, 50, 100]),
    success_rate_minimum_hosts=st.integers(1, 5),
    success_rate_request_volume=st.integers(1, 10),
    enforcing_failure_percentage=st.sampled_from([0, 100]),
    failure_percentage_minimum_hosts=st.integers(1, 5),
    failure_percentage_request_volume=st.integers(1, 10),
    failure_percentage_threshold=st.integers(0, 100),
    latency=st.none()
    | st.builds(LatencyEjection, minimum_hosts=st.integers(1, 4), request_volume=st.integers(1, 5)),
)


@settings(max_examples=200, deadline=None)
@given(
    config=configs,
    seed=st.integers(0, 2**16),
    ops=st.lists(st.one_of(record_op, local_op, tick_op, hosts_op), max_size=300),
    grow_only=st.booleans(),
)
def test_bookkeeping_changes_and_cap(
    config: OutlierDetection, seed: int, ops: list[tuple[str, object, object]], grow_only: bool
) -> None:
    d = OutlierDetector(config, random.Random(seed))
    members = set(KEYS[:6])
    d.set_hosts(members)
    now = 0.0
    for kind, a, b in ops:
        before = d.ejected_keys()
        if kind == "record":
            assert isinstance(a, str) and isinstance(b, int)
            changed = d.record(a, b, 0.001 * (1 + KEYS.index(a)) ** 2, now)
            assert changed == (a not in before and d.is_ejected(a))
            assert d.ejected_keys() - before <= {a}
        elif kind == "local":
            assert isinstance(a, str) and isinstance(b, bool)
            changed = d.record_local(a, b, now)
            assert changed == (a not in before and d.is_ejected(a))
        elif kind == "tick":
            assert isinstance(a, float)
            now += a
            changes = d.tick(now)
            after = d.ejected_keys()
            assert {k for k, e in changes if e} == after - before
            assert {k for k, e in changes if not e} == before - after
            assert len(changes) == len({k for k, _ in changes})
        else:
            assert isinstance(a, list)
            members = members | set(a) if grow_only else set(a)
            d.set_hosts(members)
        ejected = d.ejected_keys()
        assert ejected <= members
        assert d.stats.ejections_active == len(ejected)
        assert d.stats.ejections_enforced_total == sum(d.stats.enforced.values())
        for k, v in d.stats.enforced.items():
            assert v <= d.stats.detected[k]
        if grow_only:
            # The cap holds at every ejection; growing the host set only loosens it.
            assert 100 * len(ejected) <= config.max_ejection_percent * len(members)


@settings(max_examples=100, deadline=None)
@given(
    base=st.floats(0.0005, 2.0),
    spread=st.floats(1.0, 2.8),
    hosts=st.integers(3, 10),
    samples=st.integers(20, 60),
    seed=st.integers(0, 2**16),
)
def test_peers_within_one_band_are_never_latency_ejected(
    base: float, spread: float, hosts: int, samples: int, seed: int
) -> None:
    # Every latency lies in [base, base * spread] with spread < 3 / 1.05 (the histogram's error
    # margin), so no median can exceed 3 x the median of medians.
    rng = random.Random(seed)
    d = OutlierDetector(
        OutlierDetection(max_ejection_percent=100, latency=LatencyEjection(minimum_excess=0.0)), rng
    )
    keys = KEYS[:hosts]
    d.set_hosts(keys)
    for k in keys:
        for _ in range(samples):
            d.record(k, 200, base * rng.uniform(1.0, spread), 0.0)
    assert d.tick(10.0) == []
    assert d.stats.detected["latency"] == 0


@settings(max_examples=100, deadline=None)
@given(
    fast=st.floats(0.001, 0.1),
    factor=st.floats(3.3, 50.0),
    hosts=st.integers(3, 10),
    seed=st.integers(0, 2**16),
)
def test_one_host_far_beyond_the_band_is_latency_ejected(
    fast: float, factor: float, hosts: int, seed: int
) -> None:
    rng = random.Random(seed)
    d = OutlierDetector(OutlierDetection(max_ejection_percent=100, latency=LatencyEjection()), rng)
    keys = KEYS[:hosts]
    d.set_hosts(keys)
    for k in keys[:-1]:
        for _ in range(20):
            d.record(k, 200, fast * rng.uniform(1.0, 1.02), 0.0)
    slow = fast * factor
    for _ in range(20):
        d.record(keys[-1], 200, slow, 0.0)
    expected = [(keys[-1], True)] if slow - fast * 1.05 >= 0.010 else []
    if slow - fast * 0.95 < 0.010 and expected:
        return  # inside the histogram's margin of minimum_excess: either outcome is right
    assert d.tick(10.0) == expected
