"""TokenBucket: Envoy's local rate limit bucket, driven by an injected clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshproxy.config.policy import LocalRateLimit
from meshproxy.router.ratelimit import TokenBucket


def bucket(
    max_tokens: int = 3, tokens_per_fill: int = 1, fill_interval: float = 1.0, now: float = 100.0
) -> TokenBucket:
    return TokenBucket(LocalRateLimit("rl", max_tokens, tokens_per_fill, fill_interval), now)


def take(b: TokenBucket, now: float, count: int) -> list[bool]:
    return [b.allow(now) for _ in range(count)]


def test_starts_full_then_refuses() -> None:
    b = bucket()
    assert take(b, 100.0, 4) == [True, True, True, False]


def test_refills_only_by_whole_intervals() -> None:
    b = bucket(tokens_per_fill=2)
    assert take(b, 100.0, 3) == [True] * 3
    assert not b.allow(100.999)  # a partial interval adds nothing
    assert take(b, 101.0, 3) == [True, True, False]  # one fill: two tokens
    # The fill schedule stays on the original grid: 101.5 is half-way, 102.0 is the next fill.
    assert not b.allow(101.5)
    assert take(b, 102.0, 3) == [True, True, False]


def test_many_missed_intervals_fill_up_to_max_tokens() -> None:
    b = bucket(max_tokens=5, tokens_per_fill=1, fill_interval=0.25)  # binary fractions: exact clocks
    assert take(b, 100.0, 5) == [True] * 5
    assert take(b, 100.5, 3) == [True, True, False]  # two intervals passed
    assert take(b, 1000.0, 6) == [True] * 5 + [False]  # capped at max_tokens


def test_a_clock_stepping_back_adds_nothing() -> None:
    b = bucket(max_tokens=1)
    assert b.allow(100.0)
    assert not b.allow(50.0)
    assert not b.allow(100.5)
    assert b.allow(101.0)


@given(
    max_tokens=st.integers(1, 20),
    tokens_per_fill=st.integers(1, 5),
    steps=st.lists(st.floats(0.0, 3.0, allow_nan=False), max_size=60),
)
def test_never_allows_more_than_burst_plus_fills(
    max_tokens: int, tokens_per_fill: int, steps: list[float]
) -> None:
    """Over any run, allowed requests <= max_tokens + tokens_per_fill x whole intervals elapsed."""
    now = start = 10.0
    b = bucket(max_tokens, tokens_per_fill, 0.5, now)
    allowed = 0
    for step in steps:
        now += step
        allowed += sum(take(b, now, 3))
    intervals = int((now - start) // 0.5)
    assert allowed <= max_tokens + tokens_per_fill * intervals
