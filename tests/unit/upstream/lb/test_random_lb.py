"""Unit tests for the weighted random picker, run against both the C and the Python twin."""

from __future__ import annotations

from collections import Counter
from types import ModuleType

import pytest

from meshproxy.upstream.lb._common import MAX_WEIGHT, splitmix64


def picks(picker: object, count: int) -> list[int]:
    return [picker.pick() for _ in range(count)]  # type: ignore[attr-defined]


def test_equal_weights_are_r_mod_n(random_lb: ModuleType) -> None:
    state, expected = 42, []
    for _ in range(50):
        state, r = splitmix64(state)
        expected.append(r % 7)
    assert picks(random_lb.RandomLb([3] * 7, seed=42), 50) == expected


def test_weighted_frequencies(random_lb: ModuleType) -> None:
    counts = Counter(picks(random_lb.RandomLb([1, 3, 6], seed=1), 20000))
    for host, share in enumerate((0.1, 0.3, 0.6)):
        assert abs(counts[host] / 20000 - share) < 0.015, counts


def test_extreme_weights(random_lb: ModuleType) -> None:
    counts = Counter(picks(random_lb.RandomLb([1, MAX_WEIGHT], seed=5), 2000))
    assert counts[1] == 2000


def test_seed_and_hash(random_lb: ModuleType) -> None:
    a = random_lb.RandomLb([1, 2, 3], seed=-1)
    b = random_lb.RandomLb([1, 2, 3], seed=2**64 - 1)  # the same state: seeds are taken mod 2**64
    assert [a.pick(hash=h) for h in range(100)] == picks(b, 100)
    assert picks(random_lb.RandomLb([1, 2, 3], seed=0), 100) != picks(
        random_lb.RandomLb([1, 2, 3], seed=1), 100
    )


def test_len(random_lb: ModuleType) -> None:
    assert len(random_lb.RandomLb([1, 1, 2])) == 3


@pytest.mark.parametrize(
    ("weights", "seed", "error", "message"),
    [
        ([], 0, ValueError, "weights is empty"),
        ([1, -1], 0, ValueError, r"weights\[1\] is -1"),
        ([1, 1.5], 0, TypeError, "integer"),
        ([1], 0.5, TypeError, "integer"),
    ],
)
def test_rejects_bad_input(
    random_lb: ModuleType, weights: list[object], seed: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        random_lb.RandomLb(weights, seed)
