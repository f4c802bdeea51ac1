"""Unit tests for the least-request picker, run against both the C and the Python twin."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from types import ModuleType

import pytest


@dataclass
class Host:
    rq_active: object = 0


def hosts(*loads: object) -> list[Host]:
    return [Host(a) for a in loads]


def picks(picker: object, count: int) -> list[int]:
    return [picker.pick() for _ in range(count)]  # type: ignore[attr-defined]


def test_single_host(least_request: ModuleType) -> None:
    lr = least_request.LeastRequest([3], hosts(7))
    assert len(lr) == 1
    assert picks(lr, 5) == [0] * 5


def test_equal_weights_many_choices_find_the_idle_host(least_request: ModuleType) -> None:
    # 64 draws over 4 hosts miss host 2 with probability (3/4)**64 ~ 1e-8 per pick; the seed fixes it.
    lr = least_request.LeastRequest([1] * 4, hosts(5, 3, 0, 9), choice_count=64, seed=11)
    assert picks(lr, 200) == [2] * 200


def test_equal_weights_equal_loads_spread_evenly(least_request: ModuleType) -> None:
    counts = Counter(picks(least_request.LeastRequest([5] * 4, hosts(1, 1, 1, 1), seed=3), 8000))
    assert all(1800 <= counts[h] <= 2200 for h in range(4)), counts


def test_equal_weights_two_choices_favour_the_less_loaded(least_request: ModuleType) -> None:
    # P2C with distinct loads: the k-th least loaded of n wins with probability (2(n-k)-1)/n**2.
    counts = Counter(picks(least_request.LeastRequest([1] * 4, hosts(0, 1, 2, 3), seed=5), 16000))
    expected = [7 / 16, 5 / 16, 3 / 16, 1 / 16]
    for host, share in enumerate(expected):
        assert abs(counts[host] / 16000 - share) < 0.02, counts


def test_weighted_shares_follow_weights_when_idle(least_request: ModuleType) -> None:
    counts = Counter(picks(least_request.LeastRequest([1, 2, 3, 4], hosts(0, 0, 0, 0)), 10000))
    assert [abs(counts[h] - 1000 * (h + 1)) <= 4 for h in range(4)] == [True] * 4, counts


def test_weighted_shares_divide_by_active_requests(least_request: ModuleType) -> None:
    # Effective weights 2/(1+1) = 1 and 1/(0+1) = 1: equal shares despite the 2:1 weights.
    counts = Counter(picks(least_request.LeastRequest([2, 1], hosts(1, 0)), 6000))
    assert abs(counts[0] - counts[1]) <= 2, counts


def test_bias_scales_the_load_penalty(least_request: ModuleType) -> None:
    # bias 2: 4/(1+1)**2 = 1 against 1: equal; bias 0 ignores load: 4:1.
    even = Counter(picks(least_request.LeastRequest([4, 1], hosts(1, 0), active_request_bias=2.0), 5000))
    assert abs(even[0] - even[1]) <= 2, even
    weighted = Counter(picks(least_request.LeastRequest([4, 1], hosts(1, 0), active_request_bias=0.0), 5000))
    assert abs(weighted[0] - 4000) <= 2, weighted


def test_loads_are_read_live(least_request: ModuleType) -> None:
    pool = hosts(0, 0, 0)
    lr = least_request.LeastRequest([1, 1, 1], pool, seed=2)
    pool[0].rq_active = 100
    pool[1].rq_active = 100
    assert set(picks(lr, 300)) <= {0, 1, 2}
    counts = Counter(picks(lr, 3000))
    assert counts[2] > counts[0] + counts[1]


def test_weighted_schedule_reacts_to_load(least_request: ModuleType) -> None:
    pool = hosts(0, 0)
    lr = least_request.LeastRequest([2, 1], pool)
    picks(lr, 30)
    pool[0].rq_active = 9  # effective weight 0.2 against 1
    counts = Counter(picks(lr, 1200))
    assert abs(counts[0] - 200) <= 3, counts


def test_hash_is_ignored_and_seed_decides(least_request: ModuleType) -> None:
    a = least_request.LeastRequest([1] * 5, hosts(0, 1, 2, 3, 4), seed=9)
    b = least_request.LeastRequest([1] * 5, hosts(0, 1, 2, 3, 4), seed=9)
    c = least_request.LeastRequest([1] * 5, hosts(0, 1, 2, 3, 4), seed=10)
    seq_a = [a.pick(hash=h) for h in range(100)]
    assert seq_a == picks(b, 100)
    assert seq_a != picks(c, 100)


def test_seed_spreads_weighted_start(least_request: ModuleType) -> None:
    firsts = {
        least_request.LeastRequest([1, 2, 3, 4, 5], hosts(0, 0, 0, 0, 0), seed=s).pick() for s in range(40)
    }
    assert len(firsts) >= 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": [], "hosts": []}, "weights is empty"),
        ({"weights": [1, 1], "hosts": hosts(0)}, "hosts has 1 entries but weights has 2"),
        ({"weights": [1, 0], "hosts": hosts(0, 0)}, r"weights\[1\] is 0"),
        ({"choice_count": 1}, "choice_count is 1"),
        ({"choice_count": 1025}, "choice_count is 1025"),
        ({"active_request_bias": -0.5}, "active_request_bias is -0.5"),
        ({"active_request_bias": float("nan")}, "active_request_bias is nan"),
        ({"active_request_bias": 16.5}, "active_request_bias is 16.5"),
        ({"hosts": hosts(0, -1)}, r"hosts\[1\].rq_active is -1"),
    ],
)
def test_rejects_bad_input(least_request: ModuleType, kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"weights": [1, 2], "hosts": hosts(0, 0), **kwargs}
    with pytest.raises(ValueError, match=message):
        least_request.LeastRequest(**args)


@pytest.mark.parametrize("weights", [[1, 1], [1, 2]])
@pytest.mark.parametrize(
    ("load", "error"), [(-3, ValueError), (1.5, TypeError), (None, TypeError), (2**64, OverflowError)]
)
def test_bad_load_at_pick_time_raises(
    least_request: ModuleType, weights: list[int], load: object, error: type[Exception]
) -> None:
    pool = hosts(0, 0)
    lr = least_request.LeastRequest(weights, pool, choice_count=8)
    pool[0].rq_active = pool[1].rq_active = load
    with pytest.raises(error):
        lr.pick()
    pool[0].rq_active = pool[1].rq_active = 0
    assert lr.pick() in (0, 1)  # a failed pick leaves the picker usable
