"""Priority load, panic mode and locality weighting of ``HostSelector``, with the worked numbers
of Envoy's docs ("Priority levels", "Panic threshold", "Locality weighted load balancing").

Where a docs table was rounded by hand and Envoy's code (``distributeLoad``) gives another
integer, the test follows the code and says so.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from meshproxy.config.model import Locality
from meshproxy.config.policy import LbConfig
from meshproxy.upstream.lb import Picker, build_picker
from meshproxy.upstream.selection import HostSelector, priority_health, priority_loads

X = Locality("r", "x")
Y = Locality("r", "y")
Z = Locality("r", "z")


@dataclass(eq=False)
class Host:
    key: str
    priority: int = 0
    available: bool = True
    locality: Locality = field(default_factory=Locality)
    locality_weight: int = 0
    weight: int = 1
    rq_active: int = 0


class SweepRng(random.Random):
    """``random()`` sweeps evenly: the n-th draw is the middle of the n-th of ``period`` equal
    slices of [0, 1). Over 100 picks every priority percent is drawn exactly once."""

    def __init__(self, period: int = 100) -> None:
        super().__init__(0)
        self.draws = 0
        self.period = period

    def random(self) -> float:
        self.draws += 1
        return ((self.draws - 1) % self.period + 0.5) / self.period


def level(priority: int, total: int, available: int, **kw: object) -> list[Host]:
    return [
        Host(f"p{priority}-{i}", priority, i < available, **kw)  # type: ignore[arg-type]
        for i in range(total)
    ]


def selector(hosts: Sequence[Host], rng: random.Random | None = None, **lb: object) -> HostSelector[Host]:
    """A selector with the real pickers (``build_picker``)."""
    return HostSelector(hosts, LbConfig(**lb), rng or random.Random(7))  # type: ignore[arg-type]


def priority_counts(sel: HostSelector[Host], picks: int = 100) -> Counter[int]:
    counts: Counter[int] = Counter()
    for _ in range(picks):
        host = sel.select()
        assert host is not None
        counts[host.priority] += 1
    return counts


# ---------------------------------------------------------------------------- priority load


def test_brief_example_two_of_five_at_factor_1_4() -> None:
    assert priority_health(2, 5, 140) == 56
    sel = selector(level(0, 5, 2) + level(1, 5, 5))
    assert sel.health == (56, 100)
    assert sel.priority_load == (56, 44)
    assert sel.panic == (False, False)  # normalized total health is 100
    assert priority_counts(selector(level(0, 5, 2) + level(1, 5, 5), SweepRng())) == {0: 56, 1: 44}


@pytest.mark.parametrize(
    ("p0_healthy", "expected"),
    [(100, (100, 0)), (72, (100, 0)), (71, (99, 1)), (50, (70, 30)), (25, (35, 65)), (0, (0, 100))],
)
def test_priority_levels_table(p0_healthy: int, expected: tuple[int, int]) -> None:
    sel = selector(level(0, 100, p0_healthy) + level(1, 100, 100))
    assert sel.priority_load == expected
    assert not sel.in_panic


@pytest.mark.parametrize(
    ("healthy", "expected"),
    [
        ((100, 100), (100, 0)),
        ((72, 72), (100, 0)),
        ((71, 71), (99, 1)),
        ((50, 50), (70, 30)),
        ((25, 100), (35, 65)),
        ((25, 25), (50, 50)),
        ((25, 25, 100), (35, 35, 30)),
        # The docs print 36/36/28; the code gives 35/35/28 and the 2 left over go to P0.
        ((25, 25, 20), (37, 35, 28)),
    ],
)
def test_normalized_total_health_table(healthy: tuple[int, ...], expected: tuple[int, ...]) -> None:
    hosts = [h for p, up in enumerate(healthy) for h in level(p, 100, up)]
    assert selector(hosts, panic_threshold=0).priority_load == expected


def test_loads_normalised_below_100() -> None:
    assert priority_loads([20, 30]) == [40, 60]  # the docs' example
    assert priority_loads([0, 0]) == [0, 0]
    assert sum(priority_loads([33, 33, 33])) == 100


def test_overprovisioning_factor_changes_health() -> None:
    sel = selector(level(0, 10, 5) + level(1, 10, 10), overprovisioning_factor=100)
    assert sel.priority_load == (50, 50)
    sel = selector(level(0, 10, 5) + level(1, 10, 10), overprovisioning_factor=200)
    assert sel.priority_load == (100, 0)


def test_empty_level_between_two_takes_nothing() -> None:
    sel = selector(level(0, 4, 1) + level(2, 4, 4))
    assert sel.health == (35, 0, 100)
    assert sel.priority_load == (35, 0, 65)


def test_failover_and_return() -> None:
    p0_up, p1 = level(0, 3, 3), level(1, 3, 3)
    assert priority_counts(selector(p0_up + p1)) == {0: 100}
    p0_down = level(0, 3, 0)
    assert priority_counts(selector(p0_down + p1)) == {1: 100}
    # The caller rebuilds when health comes back; traffic returns to P0.
    assert priority_counts(selector(p0_up + p1)) == {0: 100}


def test_unavailable_hosts_not_picked_outside_panic() -> None:
    hosts = level(0, 5, 4)
    sel = selector(hosts)
    picked = {sel.select() for _ in range(50)}
    assert picked == set(hosts[:4])


def test_no_hosts() -> None:
    sel = selector([])
    assert sel.priority_load == (100,)
    assert sel.select() is None


def test_negative_priority_rejected() -> None:
    with pytest.raises(ValueError, match="host a: priority -1"):
        selector([Host("a", -1)])


# ---------------------------------------------------------------------------- panic


def test_panic_picks_unhealthy_hosts() -> None:
    hosts = level(0, 5, 2)  # 40% available < 50% threshold
    sel = selector(hosts)
    assert sel.panic == (True,)
    assert sel.total_panic and sel.in_panic
    assert {sel.select() for _ in range(50)} == set(hosts)


def test_panic_threshold_disables_panic() -> None:
    hosts = level(0, 5, 2)
    sel = selector(hosts, panic_threshold=0)
    assert sel.panic == (False,)
    assert {sel.select() for _ in range(50)} == set(hosts[:2])


def test_all_down_without_panic_selects_nothing() -> None:
    sel = selector(level(0, 3, 0) + level(1, 3, 0), panic_threshold=0)
    assert sel.priority_load == (100, 0)
    assert sel.select() is None


def test_all_down_with_panic_spreads_by_host_count() -> None:
    hosts = level(0, 1, 0) + level(1, 3, 0)
    sel = selector(hosts, SweepRng())
    assert sel.total_panic
    assert sel.priority_load == (25, 75)
    assert priority_counts(sel) == {0: 25, 1: 75}


def test_both_levels_in_panic_docs_row() -> None:
    # Panic docs: P0 25% and P1 25% healthy -> 50/50, both in panic, normalized health 70.
    sel = selector(level(0, 100, 25) + level(1, 100, 25))
    assert sum(sel.health) == 70
    assert sel.panic == (True, True)
    assert sel.priority_load == (50, 50)


def test_one_level_in_panic_the_other_not() -> None:
    # P0 5% healthy (panics), P1 65% (does not); normalized health 98. The docs print 7/93;
    # the code gives 7/92 and the 1 left over to P0.
    p0, p1 = level(0, 20, 1), level(1, 20, 13)
    sel = selector(p0 + p1)
    assert sel.health == (7, 91)
    assert sel.panic == (True, False)
    assert not sel.total_panic
    assert sel.priority_load == (8, 92)
    picked = {sel.select() for _ in range(3000)}
    assert set(p0) <= picked  # P0 ignores health
    assert {h for h in picked if h.priority == 1} == set(p1[:13])  # P1 keeps to available hosts


def test_no_panic_when_total_health_is_full() -> None:
    sel = selector(level(0, 10, 1) + level(1, 10, 10))  # P0 10% healthy, but P1 covers everything
    assert sel.panic == (False, False)
    picked = {sel.select() for _ in range(2000)}
    assert all(h.available for h in picked)


# ---------------------------------------------------------------------------- localities


def test_locality_weights_split_traffic() -> None:
    hosts = level(0, 2, 2, locality=X, locality_weight=1) + level(0, 2, 2, locality=Y, locality_weight=2)
    for i, h in enumerate(hosts):
        h.key = f"h{i}"
    sel = selector(hosts, SweepRng(300), locality_weighted=True)
    counts = Counter(h.locality for h in (sel.select() for _ in range(300)) if h is not None)
    assert counts == {X: 100, Y: 200}


def test_partly_available_locality_draws_its_effective_weight() -> None:
    # X: weight 1, 5 of 10 available -> effective 0.7; Y: weight 2, all available -> 2.0.
    x = level(0, 10, 5, locality=X, locality_weight=1)
    y = level(0, 10, 10, locality=Y, locality_weight=2)
    sel = selector(x + y, SweepRng(270), locality_weighted=True)
    picked = [sel.select() for _ in range(270)]
    assert Counter(h.locality for h in picked if h is not None) == {X: 70, Y: 200}
    assert all(h is not None and h.available for h in picked)


@pytest.mark.parametrize(
    ("x_healthy", "x_share"), [(100, 33), (70, 33), (69, 32), (50, 26), (25, 15), (0, 0)]
)
def test_locality_docs_table(x_healthy: int, x_share: int) -> None:
    hosts = level(0, 100, x_healthy, locality=X, locality_weight=1) + level(
        0, 100, 100, locality=Y, locality_weight=2
    )
    sel = selector(hosts, panic_threshold=0, locality_weighted=True)
    weights = dict(sel.locality_weights[0])
    assert weights == {X: pytest.approx(min(1.0, 1.4 * x_healthy / 100)), Y: 2.0}
    share = 100 * weights[X] / (weights[X] + weights[Y])
    # The docs table rounds some rows (70%: 32.9 -> 33) and truncates others (69%: 32.6 -> 32).
    assert x_share in (int(share), round(share))


def test_locality_picks_only_its_available_hosts() -> None:
    x = level(0, 4, 3, locality=X, locality_weight=1)
    y = level(0, 4, 4, locality=Y, locality_weight=1)
    for i, h in enumerate(x + y):
        h.key = f"h{i}"
    sel = selector(x + y, locality_weighted=True)
    picked = {sel.select() for _ in range(400)}
    assert picked == set(x[:3] + y)


def test_unweighted_locality_gets_nothing() -> None:
    x = level(0, 2, 2, locality=X, locality_weight=3)
    z = level(0, 2, 2, locality=Z, locality_weight=0)
    sel = selector(x + z, locality_weighted=True)
    assert {sel.select() for _ in range(100)} == set(x)


def test_no_locality_weights_falls_back_to_whole_priority() -> None:
    x, y = level(0, 2, 2, locality=X), level(0, 2, 2, locality=Y)
    sel = selector(x + y, locality_weighted=True)
    assert {sel.select() for _ in range(100)} == set(x + y)


def test_locality_weights_off_ignores_localities() -> None:
    x = level(0, 1, 1, locality=X, locality_weight=100)
    y = level(0, 1, 1, locality=Y, locality_weight=1)
    sel = selector(x + y)
    counts = Counter(h.locality for h in (sel.select() for _ in range(100)) if h is not None)
    assert counts == {X: 50, Y: 50}


def test_panic_ignores_localities() -> None:
    x = level(0, 4, 1, locality=X, locality_weight=1)
    z = level(0, 4, 0, locality=Z, locality_weight=0)
    sel = selector(x + z, locality_weighted=True)
    assert sel.panic == (True,)
    assert {sel.select() for _ in range(200)} == set(x + z)


# ---------------------------------------------------------------------------- retries, hashing


def test_exclude_avoids_tried_hosts() -> None:
    hosts = level(0, 3, 3)
    sel = selector(hosts)
    for _ in range(30):
        assert sel.select(exclude={hosts[0]}) is not hosts[0]


def test_exclude_everything_returns_last_pick() -> None:
    hosts = level(0, 2, 2)
    sel = selector(hosts)
    assert sel.select(exclude=set(hosts), reselect_attempts=3) in hosts


def test_no_reselect_attempts_may_repeat() -> None:
    hosts = level(0, 1, 1) + level(1, 1, 1)
    sel = selector(hosts)
    assert sel.select(exclude={hosts[0]}, reselect_attempts=0) is hosts[0]


def test_hash_policy_draws_priority_from_hash() -> None:
    rng = random.Random(3)
    sel = selector(level(0, 5, 2) + level(1, 5, 5), rng, policy="RING_HASH")
    state = rng.getstate()
    for h in range(300):
        host = sel.select(h)
        assert host is not None
        assert host.priority == (0 if h % 100 < 56 else 1)
        assert sel.select(h) is host  # one key, one host
    assert rng.getstate() == state  # no random draws on the hash path


def test_hash_policy_reselect_moves_off_excluded_host() -> None:
    hosts = level(0, 4, 4)
    sel = selector(hosts, policy="MAGLEV")
    first = sel.select(12345)
    assert first is not None
    assert sel.select(12345, exclude={first}, reselect_attempts=4) is not first


def test_pickers_get_the_lb_config_and_seeds() -> None:
    def build(rng: random.Random) -> list[tuple[LbConfig, int, int]]:
        seen: list[tuple[LbConfig, int, int]] = []

        def factory(lb: LbConfig, hosts: Sequence[Host], seed: int) -> Picker:
            seen.append((lb, len(hosts), seed))
            return build_picker(lb, hosts, seed)

        HostSelector(hosts, lb, rng, factory)
        return seen

    lb = LbConfig(policy="LEAST_REQUEST", locality_weighted=True)
    hosts = level(0, 2, 2, locality=X, locality_weight=1) + level(0, 3, 3, locality=Y, locality_weight=1)
    first = build(random.Random(1))
    assert [(cfg, n) for cfg, n, _ in first] == [(lb, 2), (lb, 3)]  # one picker per locality
    assert build(random.Random(1)) == first  # same rng, same seeds
