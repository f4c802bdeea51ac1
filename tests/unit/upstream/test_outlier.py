"""OutlierDetector with an injected clock and rng: every ejection kind with worked numbers,
ejection time growth and decay, the max_ejection_percent cap, latency ejection, and state kept
across set_hosts / configure."""

from __future__ import annotations

import dataclasses
import random

import pytest

from meshproxy.config.policy import LatencyEjection, OutlierDetection
from meshproxy.upstream.outlier import OutlierDetector

KEYS = [f"10.0.0.{i}:80" for i in range(1, 11)]


class FixedRoll(random.Random):
    """An rng whose percentage roll is fixed, to show both sides of ``enforcing_*``."""

    def __init__(self, roll: int) -> None:
        super().__init__(0)
        self.roll = roll

    def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        return self.roll


def detector(n: int = 10, **overrides: object) -> OutlierDetector:
    d = OutlierDetector(OutlierDetection(**overrides), random.Random(7))  # type: ignore[arg-type]
    d.set_hosts(KEYS[:n])
    return d


def times(d: OutlierDetector, key: str, status: int, n: int, now: float = 0.0) -> list[bool]:
    return [d.record(key, status, 0.001, now) for _ in range(n)]


# ---------------------------------------------------------------------- consecutive kinds


def test_consecutive_5xx_ejects_on_the_fifth_and_a_success_resets_the_run() -> None:
    d = detector()
    assert times(d, KEYS[0], 500, 4) == [False] * 4
    d.record(KEYS[0], 200, 0.001, 0.0)
    assert times(d, KEYS[0], 500, 4) == [False] * 4
    assert not d.is_ejected(KEYS[0])
    assert d.record(KEYS[0], 500, 0.001, 0.0) is True
    assert d.ejected_keys() == {KEYS[0]}
    s = d.stats
    assert (s.ejections_active, s.ejections_enforced_total) == (1, 1)
    assert s.detected["consecutive_5xx"] == s.enforced["consecutive_5xx"] == 1
    # Further errors while ejected change nothing and count nothing.
    assert times(d, KEYS[0], 500, 10) == [False] * 10
    assert s.detected["consecutive_5xx"] == 1


def test_gateway_failures_are_detected_but_not_enforced_by_default() -> None:
    d = detector(consecutive_5xx=10)
    assert times(d, KEYS[0], 503, 5) == [False] * 5  # enforcing_consecutive_gateway_failure = 0
    assert d.stats.detected["consecutive_gateway_failure"] == 1
    assert d.stats.enforced["consecutive_gateway_failure"] == 0
    # 5 more: gateway detected again (its counter was reset) and the 5xx run reaches 10.
    assert times(d, KEYS[0], 503, 5) == [False] * 4 + [True]
    assert d.stats.detected["consecutive_gateway_failure"] == 2
    assert d.stats.enforced["consecutive_5xx"] == 1


def test_gateway_ejection_when_enforced_and_a_plain_500_breaks_the_gateway_run() -> None:
    d = detector(consecutive_5xx=100, enforcing_consecutive_gateway_failure=100)
    assert times(d, KEYS[0], 502, 4) == [False] * 4
    d.record(KEYS[0], 500, 0.001, 0.0)  # a 5xx that is not a gateway failure
    assert times(d, KEYS[0], 504, 4) == [False] * 4
    assert d.record(KEYS[0], 503, 0.001, 0.0) is True
    assert d.stats.enforced["consecutive_gateway_failure"] == 1


def test_local_failures_count_as_503_without_the_split() -> None:
    d = detector()
    assert [d.record_local(KEYS[0], False, 0.0) for _ in range(5)] == [False] * 4 + [True]
    assert d.stats.enforced["consecutive_5xx"] == 1
    assert d.stats.detected["consecutive_gateway_failure"] == 1
    # A local success is not a response: it neither resets nor counts.
    d2 = detector()
    for _ in range(5):
        assert not d2.is_ejected(KEYS[1])
        d2.record_local(KEYS[1], False, 0.0)
        d2.record_local(KEYS[1], True, 0.0)
    assert d2.is_ejected(KEYS[1])


def test_split_local_origin_run_is_separate_from_5xx() -> None:
    d = detector(split_external_local_origin_errors=True)
    for _ in range(4):
        d.record_local(KEYS[0], False, 0.0)
        d.record(KEYS[0], 500, 0.001, 0.0)  # external errors do not touch the local run
    assert not d.is_ejected(KEYS[0])
    assert d.record_local(KEYS[0], False, 0.0) is True
    assert d.stats.enforced["consecutive_local_origin_failure"] == 1
    assert d.stats.detected["consecutive_5xx"] == 0
    d.record_local(KEYS[1], False, 0.0)
    d.record_local(KEYS[1], True, 0.0)  # a connect success resets the local run
    assert [d.record_local(KEYS[1], False, 0.0) for _ in range(4)] == [False] * 4


@pytest.mark.parametrize(("roll", "ejected"), [(49, True), (50, False)])
def test_enforcing_percentage_is_a_roll_on_the_injected_rng(roll: int, ejected: bool) -> None:
    d = OutlierDetector(OutlierDetection(enforcing_consecutive_5xx=50), FixedRoll(roll))
    d.set_hosts(KEYS)
    times(d, KEYS[0], 500, 5)
    assert d.is_ejected(KEYS[0]) is ejected
    assert d.stats.detected["consecutive_5xx"] == 1
    assert d.stats.enforced["consecutive_5xx"] == int(ejected)


# ---------------------------------------------------------------------- interval kinds


def load(d: OutlierDetector, key: str, ok: int, failed: int) -> None:
    """Interleave so no consecutive run forms: ok first, then alternate."""
    for i in range(ok + failed):
        status = 500 if i % 2 and failed > 0 else 200
        if status == 500:
            failed -= 1
        d.record(key, status, 0.001, 0.0)


def test_success_rate_envoys_worked_example() -> None:
    # Rates {50, 100, 100, 100, 100}: mean 90, stdev 20, threshold 90 - 1.9 * 20 = 52.
    d = detector(5, max_ejection_percent=20)
    load(d, KEYS[0], 50, 50)
    for k in KEYS[1:5]:
        load(d, k, 100, 0)
    assert d.tick(10.0) == [(KEYS[0], True)]
    assert d.success_rate_average == pytest.approx(90.0)
    assert d.success_rate_ejection_threshold == pytest.approx(52.0)
    assert d.stats.enforced["success_rate"] == 1
    # The next interval carries no requests: nothing is judged, nothing more ejected.
    assert d.tick(20.0) == []
    assert d.success_rate_average is None


def test_success_rate_spares_a_host_inside_the_band_and_needs_volume() -> None:
    # Same data with factor 2.1: threshold 90 - 42 = 48 < 50, so nobody is an outlier.
    d = detector(5, max_ejection_percent=20, success_rate_stdev_factor=2100)
    load(d, KEYS[0], 50, 50)
    for k in KEYS[1:5]:
        load(d, k, 100, 0)
    assert d.tick(10.0) == []
    # 99 requests on one of the five: only four hosts qualify, below the minimum of five.
    d = detector(5, max_ejection_percent=20)
    load(d, KEYS[0], 49, 50)
    for k in KEYS[1:5]:
        load(d, k, 100, 0)
    assert d.tick(10.0) == []
    assert d.stats.detected["success_rate"] == 0


def test_failure_percentage_threshold_is_inclusive() -> None:
    d = detector(
        5,
        max_ejection_percent=40,
        consecutive_5xx=0,
        consecutive_gateway_failure=0,
        enforcing_success_rate=0,
        enforcing_failure_percentage=100,
    )
    for _ in range(15):
        d.record(KEYS[0], 200, 0.001, 0.0)
    for _ in range(85):
        d.record(KEYS[0], 500, 0.001, 0.0)  # 85 % failures: ejected (>= 85)
    for _ in range(16):
        d.record(KEYS[1], 200, 0.001, 0.0)
    for _ in range(84):
        d.record(KEYS[1], 500, 0.001, 0.0)  # 84 %: kept
    for k in KEYS[2:5]:
        load(d, k, 60, 0)
    assert d.tick(10.0) == [(KEYS[0], True)]
    assert d.stats.enforced["failure_percentage"] == 1
    assert d.stats.enforced["success_rate"] == 0  # success rate detects, but is not enforced


def test_split_judges_local_origin_success_rate_on_its_own() -> None:
    d = detector(5, max_ejection_percent=20, split_external_local_origin_errors=True)
    for i in range(100):
        d.record_local(KEYS[0], i % 2 == 0, 0.0)  # 50 % local success, never 5 in a row
    for k in KEYS[1:5]:
        for _ in range(100):
            d.record_local(k, True, 0.0)
    assert d.tick(10.0) == [(KEYS[0], True)]
    assert d.stats.enforced["local_origin_success_rate"] == 1
    assert d.success_rate_average is None  # no external traffic was judged


# ---------------------------------------------------------------------- ejection time, cap


def test_ejection_time_grows_caps_and_decays() -> None:
    # base 10, max 25: backoff 1, 2, 3 -> times 10, 20, 25 (capped).
    d = detector(base_ejection_time=10.0, max_ejection_time=25.0, interval=1.0)
    key = KEYS[0]

    def eject(now: float) -> None:
        assert times(d, key, 500, 5, now)[-1] is True

    eject(0.0)
    assert d.tick(9.0) == []
    assert d.tick(10.0) == [(key, False)]
    eject(10.0)
    assert d.tick(29.0) == []
    assert d.tick(30.0) == [(key, False)]
    eject(30.0)
    assert d.tick(54.0) == []
    assert d.tick(55.0) == [(key, False)]
    assert d.num_ejections(key) == 3
    # Two clean ticks lower the backoff from 3 to 1; the next ejection lasts 2 x 10 s.
    d.tick(56.0)
    d.tick(57.0)
    eject(57.0)
    assert d.tick(76.0) == []
    assert d.tick(77.0) == [(key, False)]
    # A long healthy spell brings it back to one base time.
    for t in range(78, 90):
        d.tick(float(t))
    eject(90.0)
    assert d.tick(99.0) == []
    assert d.tick(100.0) == [(key, False)]


def test_unejection_resets_consecutive_counters() -> None:
    d = detector(base_ejection_time=1.0)
    times(d, KEYS[0], 500, 5)
    times(d, KEYS[0], 500, 3)  # while ejected
    d.tick(1.0)
    assert times(d, KEYS[0], 500, 4) == [False] * 4  # a fresh run of five is needed
    assert d.record(KEYS[0], 500, 0.001, 1.0) is True


def test_max_ejection_percent_bounds_active_ejections() -> None:
    d = detector(10, max_ejection_percent=20)
    for k in KEYS[:3]:
        times(d, k, 500, 5)
    assert d.ejected_keys() == set(KEYS[:2])
    assert d.stats.ejections_overflow == 1
    assert d.stats.detected["consecutive_5xx"] == 3
    assert d.stats.ejections_active == 2


def test_default_ten_percent_ejects_nothing_below_ten_hosts() -> None:
    d = detector(9)
    times(d, KEYS[0], 500, 5)
    assert d.ejected_keys() == frozenset()
    assert d.stats.ejections_overflow == 1


def test_always_eject_one_host_lifts_the_cap_for_the_first_ejection_only() -> None:
    d = detector(3, always_eject_one_host=True)
    times(d, KEYS[0], 500, 5)
    times(d, KEYS[1], 500, 5)
    assert d.ejected_keys() == {KEYS[0]}
    assert d.stats.ejections_overflow == 1


# ---------------------------------------------------------------------- latency


def latencies(d: OutlierDetector, key: str, value: float, n: int = 20) -> None:
    for i in range(n):
        d.record(key, 200, value * (1 + 0.01 * (i % 3)), 0.0)


def latency_detector(n: int = 5, **lat: object) -> OutlierDetector:
    return detector(n, max_ejection_percent=50, latency=LatencyEjection(**lat))  # type: ignore[arg-type]


def test_latency_ejects_a_slow_host_among_fast_peers() -> None:
    d = latency_detector()
    for k in KEYS[:4]:
        latencies(d, k, 0.010)
    latencies(d, KEYS[4], 0.100)
    assert d.tick(10.0) == [(KEYS[4], True)]
    assert d.stats.enforced["latency"] == 1


def test_latency_spares_uniformly_slow_peers_and_small_excess() -> None:
    d = latency_detector()
    for k in KEYS[:5]:
        latencies(d, k, 0.500)
    assert d.tick(10.0) == []
    # 5x slower, but only 4 ms above the peers: under minimum_excess (10 ms).
    for k in KEYS[:4]:
        latencies(d, k, 0.001)
    latencies(d, KEYS[4], 0.005)
    assert d.tick(20.0) == []
    assert d.stats.detected["latency"] == 0


def test_latency_needs_volume_and_hosts() -> None:
    d = latency_detector()
    for k in KEYS[:4]:
        latencies(d, k, 0.010)
    latencies(d, KEYS[4], 0.100, n=19)  # below request_volume
    assert d.tick(10.0) == []
    d = latency_detector(minimum_hosts=6)
    for k in KEYS[:4]:
        latencies(d, k, 0.010)
    latencies(d, KEYS[4], 0.100)
    assert d.tick(10.0) == []


def test_latency_ignores_5xx_response_times() -> None:
    d = latency_detector(request_volume=5)
    for k in KEYS[:4]:
        latencies(d, k, 0.010, n=5)
    for _ in range(4):
        d.record(KEYS[4], 500, 5.0, 0.0)
        d.record(KEYS[4], 200, 0.010, 0.0)
    d.record(KEYS[4], 200, 0.010, 0.0)
    assert d.tick(10.0) == []


# ---------------------------------------------------------------------- membership and config


def test_state_survives_set_hosts_and_configure() -> None:
    d = detector(max_ejection_percent=100)
    times(d, KEYS[0], 500, 5)
    times(d, KEYS[1], 500, 4)
    d.set_hosts([KEYS[0], KEYS[1], "10.0.0.99:80"])
    d.configure(dataclasses.replace(d.config, base_ejection_time=5.0))
    assert d.is_ejected(KEYS[0])
    assert d.record(KEYS[1], 500, 0.001, 0.0) is True  # the fifth of the retained run
    assert d.stats.ejections_active == 2
    d.set_hosts(["10.0.0.99:80", KEYS[1]])  # an ejected host leaves
    assert d.stats.ejections_active == 1
    assert d.ejected_keys() == {KEYS[1]}
    assert d.record(KEYS[0], 500, 0.001, 0.0) is False  # unknown hosts are ignored
    # Re-added, it starts afresh (Envoy: num_ejections resets when a host is removed).
    d.set_hosts(["10.0.0.99:80", KEYS[1], KEYS[0]])
    assert d.num_ejections(KEYS[0]) == 0 and not d.is_ejected(KEYS[0])


def test_stats_items_use_envoy_names() -> None:
    d = detector()
    times(d, KEYS[0], 500, 5)
    items = dict(d.stats.items())
    assert items["ejections_enforced_consecutive_5xx"] == 1
    assert items["ejections_detected_consecutive_5xx"] == 1
    assert items["ejections_active"] == 1
    assert items["ejections_enforced_total"] == 1
    assert "ejections_detected_failure_percentage_local_origin" in items
