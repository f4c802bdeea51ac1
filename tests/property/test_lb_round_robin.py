"""Hypothesis properties of EDF weighted round robin, for both the C and the Python twin.

Asserted are the guarantees ``_round_robin_py`` documents: the sequence is the exact
earliest-deadline-first order of the turns ``m / w_i`` (ties to the lower index), started
``offset mod W`` picks in; it repeats every ``W = sum(weights)`` picks, so every ``W``
consecutive picks hold host ``i`` exactly ``w_i`` times; and any ``L`` consecutive picks hold it
within ``1 + (n - 2) * w_i / W`` of ``L * w_i / W``. Not claimed: smoothness within a period
(hosts of equal weight share deadlines, so a heavy host's turns can come in a burst, as in Envoy).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.upstream.lb import _round_robin_py
from meshproxy.upstream.lb._round_robin_py import MAX_WEIGHT


def reference(weights: Sequence[int], offset: int, count: int) -> list[int]:
    """The definition, written plainly: one period's turns sorted by (exact time, host)."""
    period = [
        host
        for _, host in sorted(
            (Fraction(m, w), host) for host, w in enumerate(weights) for m in range(1, w + 1)
        )
    ]
    start = offset % len(period)
    return [period[(start + i) % len(period)] for i in range(count)]


def picks(rr: object, count: int) -> list[int]:
    return [rr.pick() for _ in range(count)]  # type: ignore[attr-defined]


small_weights = st.lists(st.integers(1, 12), min_size=1, max_size=16)
offsets = st.integers(-(2**70), 2**70)


@given(weights=st.lists(st.integers(1, MAX_WEIGHT), min_size=1, max_size=40), offset=offsets)
def test_picks_in_range(round_robin: ModuleType, weights: list[int], offset: int) -> None:
    rr = round_robin.RoundRobin(weights, offset)
    assert all(0 <= host < len(weights) for host in picks(rr, 100))


@given(weights=small_weights, offset=offsets)
def test_matches_reference(round_robin: ModuleType, weights: list[int], offset: int) -> None:
    count = 2 * sum(weights) + 3
    assert picks(round_robin.RoundRobin(weights, offset), count) == reference(weights, offset, count)


@given(weights=small_weights, offset=offsets, start=st.integers(0, 200))
def test_every_period_holds_each_host_weight_times(
    round_robin: ModuleType, weights: list[int], offset: int, start: int
) -> None:
    total = sum(weights)
    start %= total
    sequence = picks(round_robin.RoundRobin(weights, offset), start + 2 * total)
    window = sequence[start : start + total]
    assert Counter(window) == {host: w for host, w in enumerate(weights)}
    assert sequence[start + total :] == window  # and it repeats


@settings(deadline=None)
@given(weights=st.lists(st.integers(1, 8), min_size=2, max_size=8), offset=offsets)
def test_every_window_is_within_the_bound(round_robin: ModuleType, weights: list[int], offset: int) -> None:
    n, total = len(weights), sum(weights)
    sequence = picks(round_robin.RoundRobin(weights, offset), 2 * total)
    prefix = [[0] * n]  # prefix[k][i]: host i's picks among the first k
    for host in sequence:
        row = prefix[-1][:]
        row[host] += 1
        prefix.append(row)
    for a in range(total):  # the sequence is periodic, so these are all the windows there are
        for length in range(1, total + 1):
            for i, w in enumerate(weights):
                count = prefix[a + length][i] - prefix[a][i]
                # |count - length * w / total| <= 1 + (n - 2) * w / total, times total
                assert abs(count * total - length * w) <= total + (n - 2) * w, (a, length, i)


@given(n=st.integers(1, 50), weight=st.integers(1, MAX_WEIGHT), offset=offsets)
def test_equal_weights_rotate(round_robin: ModuleType, n: int, weight: int, offset: int) -> None:
    rr = round_robin.RoundRobin([weight] * n, offset)
    assert picks(rr, 2 * n + 1) == [(offset + i) % n for i in range(2 * n + 1)]


@given(weights=small_weights, offset=offsets)
def test_start_is_where_the_picks_from_zero_lead(
    round_robin: ModuleType, weights: list[int], offset: int
) -> None:
    # createWithPicks: starting at position P is the same as making P picks from position 0.
    position = offset % sum(weights)
    from_zero = round_robin.RoundRobin(weights)
    picks(from_zero, position)
    assert picks(round_robin.RoundRobin(weights, offset), 50) == picks(from_zero, 50)


@given(
    weights=st.lists(st.integers(1, MAX_WEIGHT) | st.integers(1, 4), min_size=0, max_size=60),
    offset=offsets,
)
def test_compiled_and_python_sequences_identical(
    round_robin_c: ModuleType, weights: list[int], offset: int
) -> None:
    c = round_robin_c.RoundRobin(weights, offset)
    py = _round_robin_py.RoundRobin(weights, offset)
    assert len(c) == len(py)
    if not weights:
        with pytest.raises(IndexError):
            c.pick()
        return
    assert picks(c, 300) == picks(py, 300)
