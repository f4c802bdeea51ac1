"""Unit tests for build_picker: each LB policy maps onto its picker, bad input names the policy."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from meshproxy.config.policy import LbConfig
from meshproxy.upstream.lb import build_picker
from meshproxy.upstream.lb.least_request import LeastRequest
from meshproxy.upstream.lb.maglev import Maglev
from meshproxy.upstream.lb.random_lb import RandomLb
from meshproxy.upstream.lb.ring_hash import RingHash
from meshproxy.upstream.lb.round_robin import RoundRobin


@dataclass
class Host:
    key: str
    weight: int = 1
    rq_active: int = 0


HOSTS = [Host("a:80", 1), Host("b:80", 2), Host("c:80", 1)]


def test_round_robin_wraps_the_existing_picker() -> None:
    picker = build_picker(LbConfig(policy="ROUND_ROBIN"), HOSTS, seed=1)
    rr = RoundRobin([1, 2, 1], 1)
    assert [picker.pick(h) for h in range(12)] == [rr.pick() for _ in range(12)]


def test_least_request_uses_config_and_live_loads() -> None:
    hosts = [Host("a:80"), Host("b:80"), Host("c:80")]
    lb = LbConfig(policy="LEAST_REQUEST", choice_count=64)
    picker = build_picker(lb, hosts, seed=4)
    assert isinstance(picker, LeastRequest)
    hosts[0].rq_active = hosts[2].rq_active = 5
    assert {picker.pick(0) for _ in range(50)} == {1}


def test_random_is_weighted_and_seeded() -> None:
    picker = build_picker(LbConfig(policy="RANDOM"), HOSTS, seed=8)
    assert isinstance(picker, RandomLb)
    counts = Counter(picker.pick(0) for _ in range(8000))
    assert abs(counts[1] / 8000 - 0.5) < 0.03
    again, same = build_picker(LbConfig(policy="RANDOM"), HOSTS, seed=8), RandomLb([1, 2, 1], 8)
    assert [again.pick(0) for _ in range(100)] == [same.pick() for _ in range(100)]


def test_ring_hash_and_maglev_use_keys_and_sizes() -> None:
    ring = build_picker(LbConfig(policy="RING_HASH", minimum_ring_size=64, maximum_ring_size=64), HOSTS, 0)
    assert isinstance(ring, RingHash) and ring.ring_size == 64
    expected = RingHash(["a:80", "b:80", "c:80"], [1, 2, 1], 64, 64)
    assert [ring.pick(h * 2**54) for h in range(1024)] == [expected.pick(h * 2**54) for h in range(1024)]
    maglev = build_picker(LbConfig(policy="MAGLEV", maglev_table_size=251), HOSTS, 0)
    assert isinstance(maglev, Maglev) and maglev.table_size == 251
    same = Maglev(["a:80", "b:80", "c:80"], [1, 2, 1], 251)
    assert [maglev.pick(h) for h in range(251)] == [same.pick(h) for h in range(251)]


@pytest.mark.parametrize("policy", ["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"])
def test_empty_hosts(policy: str) -> None:
    with pytest.raises(ValueError, match=f"{policy} picker: hosts is empty"):
        build_picker(LbConfig(policy=policy), [], seed=0)  # type: ignore[arg-type]


def test_errors_name_the_policy() -> None:
    with pytest.raises(ValueError, match=r"MAGLEV picker over 3 hosts: table_size is 100"):
        build_picker(LbConfig(policy="MAGLEV", maglev_table_size=100), HOSTS, 0)
    with pytest.raises(ValueError, match=r"RANDOM picker over 1 hosts: weights\[0\] is 0"):
        build_picker(LbConfig(policy="RANDOM"), [Host("a", 0)], 0)


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match=r"lb\.policy is 'CLUSTER_PROVIDED'"):
        build_picker(LbConfig(policy="CLUSTER_PROVIDED"), HOSTS, 0)  # type: ignore[arg-type]
