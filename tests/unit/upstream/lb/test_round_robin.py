"""Unit tests for smooth weighted round robin, run against both the C and the Python twin."""

from __future__ import annotations

from types import ModuleType

import pytest

from meshproxy.upstream.lb._round_robin_py import MAX_WEIGHT


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


def test_nginx_sequence(round_robin: ModuleType) -> None:
    # The example in nginx's ngx_http_upstream_round_robin.c: weights {5, 1, 1} give
    # { a, a, b, a, c, a, a }, and the cycle repeats.
    rr = round_robin.RoundRobin([5, 1, 1])
    assert picks(rr, 14) == [0, 0, 1, 0, 2, 0, 0] * 2


def test_offset_breaks_ties_among_heaviest(round_robin: ModuleType) -> None:
    assert picks(round_robin.RoundRobin([2, 2, 1]), 5) == [0, 1, 2, 0, 1]
    assert picks(round_robin.RoundRobin([2, 2, 1], offset=1), 5) == [1, 0, 2, 1, 0]
    assert picks(round_robin.RoundRobin([2, 2, 1], offset=2), 5) == [0, 1, 2, 0, 1]


def test_weights_are_copied(round_robin: ModuleType) -> None:
    weights = [1, 1]
    rr = round_robin.RoundRobin(weights)
    weights.append(1)
    assert len(rr) == 2
    assert picks(rr, 4) == [0, 1, 0, 1]


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


def test_rejects_non_integer_offset(round_robin: ModuleType) -> None:
    with pytest.raises(TypeError):
        round_robin.RoundRobin([1, 1], offset=0.5)


def test_max_weight_does_not_overflow(round_robin: ModuleType) -> None:
    rr = round_robin.RoundRobin([MAX_WEIGHT, MAX_WEIGHT - 1, 1])
    sequence = picks(rr, 2000)
    assert all(0 <= host < 3 for host in sequence)
    assert 2 not in sequence  # its turn comes once per ~2**33 picks


def test_reinit_resets_state(round_robin: ModuleType) -> None:
    rr = round_robin.RoundRobin([5, 1, 1])
    picks(rr, 3)
    rr.__init__([1, 2])
    assert len(rr) == 2
    assert picks(rr, 3) == [1, 0, 1]
