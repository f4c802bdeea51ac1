"""Hypothesis properties of ``HostSelector`` over random host sets, health and LB settings:
an unavailable host is never selected outside panic, loads always add up to 100, and a host is
found whenever Envoy's rules say one exists."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.config.model import Locality
from meshproxy.config.policy import LbConfig
from meshproxy.upstream.selection import HostSelector

LOCALITIES = (Locality("r", "a"), Locality("r", "b"), Locality("r", "c"))


@dataclass(eq=False)
class Host:
    key: str
    priority: int
    available: bool
    locality: Locality
    locality_weight: int
    weight: int
    rq_active: int = 0


@st.composite
def host_sets(draw: st.DrawFn) -> list[Host]:
    # Hosts of one locality share its weight, as they come from one LocalityLbEndpoints.
    locality_weights = draw(st.tuples(*(st.integers(0, 3) for _ in LOCALITIES)))
    n = draw(st.integers(0, 14))
    hosts = []
    for i in range(n):
        loc = draw(st.integers(0, len(LOCALITIES) - 1))
        hosts.append(
            Host(
                key=f"h{i}",
                priority=draw(st.integers(0, 3)),
                available=draw(st.booleans()),
                locality=LOCALITIES[loc],
                locality_weight=locality_weights[loc],
                weight=draw(st.integers(1, 5)),
            )
        )
    return hosts


lb_configs = st.builds(
    LbConfig,
    policy=st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"]),
    overprovisioning_factor=st.sampled_from([100, 140, 200]),
    panic_threshold=st.sampled_from([0.0, 25.0, 50.0, 100.0]),
    locality_weighted=st.booleans(),
    # Small rings and tables keep each example fast; the selection rules do not depend on size.
    minimum_ring_size=st.just(64),
    maglev_table_size=st.just(251),
)


weighted_configs = st.builds(
    LbConfig,
    policy=st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"]),
    overprovisioning_factor=st.sampled_from([100, 140, 200]),
    panic_threshold=st.sampled_from([0.0, 25.0, 50.0, 100.0]),
    locality_weighted=st.just(True),
)
round_robin_configs = st.builds(
    LbConfig,
    overprovisioning_factor=st.sampled_from([100, 140, 200]),
    panic_threshold=st.sampled_from([0.0, 25.0, 50.0, 100.0]),
)


def build(hosts: list[Host], lb: LbConfig, seed: int) -> HostSelector[Host]:
    return HostSelector(hosts, lb, random.Random(seed))  # the real pickers (build_picker)


@settings(max_examples=300, deadline=None)
@given(
    hosts=host_sets(), lb=lb_configs, seed=st.integers(0, 2**32), hashes=st.lists(st.integers(0, 2**64 - 1))
)
def test_unavailable_never_selected_outside_panic(
    hosts: list[Host], lb: LbConfig, seed: int, hashes: list[int]
) -> None:
    sel = build(hosts, lb, seed)
    for h in [*hashes, *range(60)]:
        host = sel.select(h)
        if host is None:
            continue
        assert sel.priority_load[host.priority] > 0
        if not host.available:
            assert sel.panic[host.priority]


@settings(max_examples=300, deadline=None)
@given(hosts=host_sets(), lb=lb_configs, seed=st.integers(0, 2**32))
def test_loads_and_panic_follow_envoy(hosts: list[Host], lb: LbConfig, seed: int) -> None:
    sel = build(hosts, lb, seed)
    assert sum(sel.priority_load) == 100
    assert all(0 <= load <= 100 for load in sel.priority_load)
    assert all(0 <= health <= 100 for health in sel.health)
    if min(100, sum(sel.health)) == 100 or lb.panic_threshold == 0:
        assert not any(sel.panic)
    if sum(sel.health) == 0 and not any(sel.panic):
        assert sel.priority_load[0] == 100  # panic disabled, nothing up: P0 takes it, finds no host
        return
    for p, load in enumerate(sel.priority_load):
        if load and not sel.panic[p]:
            assert sel.health[p] > 0  # outside panic only healthy levels take load


@settings(max_examples=300, deadline=None)
@given(hosts=host_sets(), lb=lb_configs, seed=st.integers(0, 2**32))
def test_a_host_is_found_when_one_may_be(hosts: list[Host], lb: LbConfig, seed: int) -> None:
    sel = build(hosts, lb, seed)
    expect_none = not hosts or (lb.panic_threshold == 0 and not any(h.available for h in hosts))
    for h in range(50):
        assert (sel.select(h) is None) == expect_none


@settings(max_examples=200, deadline=None)
@given(hosts=host_sets(), lb=weighted_configs, seed=st.integers(0, 2**32))
def test_weighted_localities_outside_panic(hosts: list[Host], lb: LbConfig, seed: int) -> None:
    """With locality weighting (non-hash policies), a pick outside panic lands in a locality
    with a positive weight, unless no locality of that level has one (Envoy's fallback)."""
    sel = build(hosts, lb, seed)
    for _ in range(40):
        host = sel.select()
        if host is None or sel.panic[host.priority]:
            continue
        shares = dict(sel.locality_weights[host.priority])
        if any(weight > 0 for weight in shares.values()):
            assert shares[host.locality] > 0
            assert host.locality_weight > 0


@settings(max_examples=200, deadline=None)
@given(
    hosts=host_sets(), lb=round_robin_configs, seed=st.integers(0, 2**32), tried=st.sets(st.integers(0, 13))
)
def test_exclude_only_repeats_when_it_must(
    hosts: list[Host], lb: LbConfig, seed: int, tried: set[int]
) -> None:
    """Given enough re-picks, a round-robin selector over one level avoids the tried hosts
    whenever that level has an untried candidate."""
    hosts = [h for h in hosts if h.priority == 0]
    sel = build(hosts, lb, seed)
    exclude = {hosts[i] for i in tried if i < len(hosts)}
    candidates = [h for h in hosts if h.available or sel.panic[0]]
    # One round-robin period (the sum of the weights) visits every host of the pool.
    host = sel.select(exclude=exclude, reselect_attempts=sum(h.weight for h in hosts))
    if any(h not in exclude for h in candidates):
        assert host is not None and host not in exclude
