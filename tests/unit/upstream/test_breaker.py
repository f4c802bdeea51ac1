"""Circuit breakers as admission counters: limits, the retry budget, gauges and config swaps."""

from __future__ import annotations

import pytest

from meshproxy.config.policy import RetryBudget, Thresholds
from meshproxy.upstream.breaker import Breakers, Resource, ResourceManager


def fill(resource: Resource, n: int) -> None:
    for _ in range(n):
        resource.inc()


def test_envoy_defaults() -> None:
    breakers = Breakers()
    for manager in (breakers.default, breakers.high, breakers["DEFAULT"], breakers["HIGH"]):
        assert manager.connections.max == 1024
        assert manager.pending_requests.max == 1024
        assert manager.requests.max == 1024
        assert manager.retries.max == 3


def test_can_create_up_to_the_limit() -> None:
    manager = ResourceManager(Thresholds(max_requests=2))
    rq = manager.requests
    assert rq.can_create() and not rq.open and rq.remaining == 2
    rq.inc()
    assert rq.can_create() and rq.remaining == 1
    rq.inc()
    assert not rq.can_create() and rq.open and rq.remaining == 0
    rq.dec()
    assert rq.can_create() and rq.count == 1


def test_inc_is_not_refused_and_remaining_never_negative() -> None:
    conn = ResourceManager(Thresholds(max_connections=1)).connections
    fill(conn, 3)  # Envoy lets a caller overshoot; admission is can_create's job
    assert conn.count == 3 and conn.remaining == 0 and conn.open


def test_zero_limit_admits_nothing() -> None:
    assert not ResourceManager(Thresholds(max_pending_requests=0)).pending_requests.can_create()


def test_dec_at_zero_stays_zero_and_is_counted() -> None:
    rq = ResourceManager(Thresholds()).requests
    rq.dec()
    assert rq.count == 0 and rq.underflows == 1
    rq.inc()
    rq.dec()
    assert rq.count == 0 and rq.underflows == 1


def test_max_retries_without_budget() -> None:
    retries = ResourceManager(Thresholds(max_retries=1)).retries
    assert retries.can_create()
    retries.inc()
    assert not retries.can_create() and retries.open


def test_retry_budget_floor_and_share() -> None:
    manager = ResourceManager(
        Thresholds(max_retries=1000, retry_budget=RetryBudget(budget_percent=20.0, min_retry_concurrency=3))
    )
    assert manager.retries.max == 3  # nothing active: the floor, not max_retries
    fill(manager.requests, 100)
    fill(manager.pending_requests, 50)
    assert manager.retries.max == 30  # 20% of 150 active + pending
    for _ in range(76):
        manager.requests.dec()
    for _ in range(50):
        manager.pending_requests.dec()
    assert manager.retries.max == 4  # 20% of 24 = 4.8, truncated as Envoy does
    fill(manager.retries, 4)
    assert not manager.retries.can_create() and manager.retries.remaining == 0
    fill(manager.requests, 1)  # 25 active: 5 retries
    assert manager.retries.can_create() and manager.retries.remaining == 1


def test_gauges_follow_envoy_names() -> None:
    breakers = Breakers([Thresholds(max_connections=1, track_remaining=True), Thresholds(priority="HIGH")])
    breakers.default.connections.inc()
    gauges = breakers.gauges()
    assert gauges["circuit_breakers.default.cx_open"] == 1
    assert gauges["circuit_breakers.default.rq_open"] == 0
    assert gauges["circuit_breakers.default.remaining_cx"] == 0
    assert gauges["circuit_breakers.default.remaining_retries"] == 3
    assert gauges["circuit_breakers.high.rq_pending_open"] == 0
    assert "circuit_breakers.high.remaining_cx" not in gauges  # track_remaining is off for HIGH


# ---------------------------------------------------------------------------- config swap


def test_swap_keeps_counts_and_applies_new_limits() -> None:
    breakers = Breakers([Thresholds(max_requests=10)])
    fill(breakers.default.requests, 6)
    breakers.update([Thresholds(max_requests=4)])
    rq = breakers.default.requests
    assert rq.count == 6 and rq.max == 4 and rq.open and rq.remaining == 0
    for _ in range(6):  # the in-flight requests finish on the old admission
        rq.dec()
    assert rq.count == 0 and rq.underflows == 0 and rq.remaining == 4


def test_swap_dropping_a_priority_keeps_its_counts_under_defaults() -> None:
    breakers = Breakers([Thresholds(), Thresholds(priority="HIGH", max_connections=5)])
    fill(breakers.high.connections, 5)
    assert not breakers.high.connections.can_create()
    breakers.update([Thresholds()])
    assert breakers.high.connections.count == 5
    assert breakers.high.connections.max == 1024
    assert breakers.high.connections.can_create()


def test_swap_to_a_retry_budget_uses_live_counts() -> None:
    breakers = Breakers()
    fill(breakers.default.requests, 40)
    fill(breakers.default.retries, 3)
    assert not breakers.default.retries.can_create()
    breakers.update([Thresholds(retry_budget=RetryBudget(budget_percent=10.0, min_retry_concurrency=1))])
    assert breakers.default.retries.max == 4 and breakers.default.retries.can_create()


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ([Thresholds(), Thresholds()], r"thresholds\[1\]\.priority: DEFAULT is given twice"),
        ([Thresholds(priority="LOW")], r"thresholds\[0\]\.priority: 'LOW' is not one of DEFAULT, HIGH"),  # type: ignore[arg-type]
        ([Thresholds(max_requests=-1)], r"thresholds\[0\]\.max_requests: -1"),
        (
            [Thresholds(retry_budget=RetryBudget(budget_percent=120.0))],
            r"thresholds\[0\]\.retry_budget\.budget_percent: 120.0 must be 0-100",
        ),
        (
            [Thresholds(retry_budget=RetryBudget(min_retry_concurrency=-2))],
            r"thresholds\[0\]\.retry_budget\.min_retry_concurrency: -2",
        ),
    ],
)
def test_bad_thresholds_name_the_field(thresholds: list[Thresholds], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Breakers(thresholds)


def test_rejected_update_changes_nothing() -> None:
    breakers = Breakers([Thresholds(max_requests=7), Thresholds(priority="HIGH", max_requests=8)])
    fill(breakers.high.requests, 2)
    with pytest.raises(ValueError):
        breakers.update([Thresholds(max_requests=1), Thresholds(priority="HIGH", max_requests=-1)])
    assert breakers.default.requests.max == 7
    assert breakers.high.requests.max == 8 and breakers.high.requests.count == 2
