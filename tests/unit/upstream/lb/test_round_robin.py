"""Unit tests for EDF weighted round robin, run against both the C and the Python twin."""

from __future__ import annotations

from collections import Counter
from types import ModuleType

import pytest

from meshproxy.upstream.lb._round_robin_py import MAX_WEIGHT, start_turns


def picks(rr: object, count: int) -> list[int]:
    return [rr.pick() for _ in range(count)]  # type: ignore[attr-defined]


def test_no_hosts(round_robin: ModuleType) -> None:
    rr = round_robin.RoundRobin([], offset=7)
    assert len(rr) == 0
    with pytest.raises(IndexError, match="no hosts"):
        rr.pick()


def test_len(round_robin: ModuleType) -> None:
    assert len(round_robin.RoundRobin([1, 2, 3])) == 3


def test_single_host(round_robin: ModuleType) -> None:
    assert picks(round_robin.RoundRobin([4], offset=3), 5) == [0] * 5


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(0, [0, 1, 2, 0, 1, 2, 0]), (1, [1, 2, 0, 1, 2, 0, 1]), (5, [2, 0, 1, 2, 0, 1, 2]), (-1, [2, 0, 1, 2])],
)
def test_equal_weights_rotate_from_offset(round_robin: ModuleType, offset: int, expected: list[int]) -> None:
    assert picks(round_robin.RoundRobin([3, 3, 3], offset=offset), len(expected)) == expected


@pytest.mark.parametrize(
    ("weights", "period"),
    [
        # Turns at 1/5, 2/5, 3/5, 4/5, 1 for host 0 and at 1 for hosts 1 and 2; a tie goes to the
        # lower index.
        ([5, 1, 1], [0, 0, 0, 0, 0, 1, 2]),
        ([1, 2], [1, 0, 1]),  # 1/2, then 1 twice
        ([2, 3], [1, 0, 1, 0, 1]),  # 1/3, 1/2, 2/3, then 1 twice
        ([3, 1, 2], [0, 2, 0, 0, 1, 2]),  # 1/3, 1/2, 2/3, 1, 1, 1
    ],
)
def test_edf_sequence_repeats_every_total_weight(
    round_robin: ModuleType, weights: list[int], period: list[int]
) -> None:
    assert picks(round_robin.RoundRobin(weights), 3 * len(period)) == period * 3


@pytest.mark.parametrize(("offset", "first"), [(5, [1, 2, 0, 0]), (12, [1, 2, 0, 0]), (-1, [2, 0, 0, 0])])
def test_offset_starts_inside_the_period(round_robin: ModuleType, offset: int, first: list[int]) -> None:
    # [5, 1, 1] runs 0 0 0 0 0 1 2: the offset is a position in that period, modulo 7.
    assert picks(round_robin.RoundRobin([5, 1, 1], offset=offset), 4) == first


def test_start_turns_is_envoys_create_with_picks() -> None:
    # Position 5 of [5, 1, 1]: host 0 has had floor(5 * 5 / 7) = 3 turns; two picks are left.
    assert start_turns([5, 1, 1], 5) == ([3, 0, 0], 2)
    assert start_turns([5, 1, 1], 7 * 10**30 + 5) == ([3, 0, 0], 2)
    assert start_turns([2, 2], 3) == ([1, 1], 1)


def test_heavy_host_bursts_as_in_envoy(round_robin: ModuleType) -> None:
    # Light hosts of equal weight share their deadlines, so the heavy host's turns come first.
    assert picks(round_robin.RoundRobin([4, 1, 1, 1, 1]), 16) == [0, 0, 0, 0, 1, 2, 3, 4] * 2


def test_weights_are_copied(round_robin: ModuleType) -> None:
    weights = [1, 2]
    rr = round_robin.RoundRobin(weights)
    weights.append(1)
    assert len(rr) == 2
    assert picks(rr, 6) == [1, 0, 1] * 2


def test_accepts_any_sequence_of_ints(round_robin: ModuleType) -> None:
    assert picks(round_robin.RoundRobin((2, 1), offset=True), 3) == [0, 1, 0]


@pytest.mark.parametrize("weight", [0, -1, MAX_WEIGHT + 1])
def test_rejects_out_of_range_weight(round_robin: ModuleType, weight: int) -> None:
    with pytest.raises(ValueError, match=r"weights\[1\] is"):
        round_robin.RoundRobin([1, weight])


@pytest.mark.parametrize("weight", [1.0, "1", None])
def test_rejects_non_integer_weight(round_robin: ModuleType, weight: object) -> None:
    with pytest.raises(TypeError):
        round_robin.RoundRobin([weight])


@pytest.mark.parametrize("weights", [[1, 1], [1, 2]])
def test_rejects_non_integer_offset(round_robin: ModuleType, weights: list[int]) -> None:
    with pytest.raises(TypeError):
        round_robin.RoundRobin(weights, offset=0.5)


def test_max_weight_does_not_overflow(round_robin: ModuleType) -> None:
    weights = [MAX_WEIGHT, MAX_WEIGHT - 1, 1]
    sequence = picks(round_robin.RoundRobin(weights), 2000)
    assert sequence == [0, 1] * 1000  # 1/M < 1/(M-1) < 2/M < ...; host 2's turn is at time 1
    # The last pick of a period (time 1: a three-way tie), then the next period begins.
    last = round_robin.RoundRobin(weights, offset=sum(weights) - 1)
    assert picks(last, 5) == [2, 0, 1, 0, 1]
    # Just before time 1: (M-2)/(M-1) < (M-1)/M, then the tie at 1.
    near_end = round_robin.RoundRobin(weights, offset=sum(weights) - 5)
    assert picks(near_end, 5) == [1, 0, 0, 1, 2]


def test_large_weights_keep_their_shares(round_robin: ModuleType) -> None:
    weights = [3 * 10**9, 10**9, 2 * 10**9]
    counts = Counter(picks(round_robin.RoundRobin(weights, offset=123_456_789_012), 6000))
    # Within the window bound 1 + (n - 2) * w / W of the shares 3000, 1000 and 2000.
    assert all(abs(counts[host] - 1000 * w // 10**9) <= 1 for host, w in enumerate(weights)), counts


def test_reinit_resets_state(round_robin: ModuleType) -> None:
    rr = round_robin.RoundRobin([5, 1, 1])
    picks(rr, 3)
    rr.__init__([1, 2])
    assert len(rr) == 2
    assert picks(rr, 3) == [1, 0, 1]
    rr.__init__([7, 7], offset=1)  # back to the rotation: the schedule is gone
    assert picks(rr, 3) == [1, 0, 1]
