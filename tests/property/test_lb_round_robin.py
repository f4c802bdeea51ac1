"""Hypothesis properties of smooth weighted round robin, for both the C and the Python twin.

Only properties that hold for nginx's algorithm are asserted (each was first checked
exhaustively for up to five hosts with weights 1-5). Notably it does NOT keep every host within
one pick of its fair share at every prefix (weights [100, 100, 50, 3, 1, 100, 1, 50] lag by 1.4),
and a light host can repeat when it is the heaviest, so neither is claimed.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshproxy.upstream.lb import _round_robin_py
from meshproxy.upstream.lb._round_robin_py import MAX_WEIGHT


def reference(weights: Sequence[int], offset: int, count: int) -> list[int]:
    """nginx's loop, written plainly: scan from host ``offset % n``, strict ``>`` keeps the first max."""
    n = len(weights)
    current = [0] * n
    total = sum(weights)
    order = [(offset + i) % n for i in range(n)]
    sequence = []
    for _ in range(count):
        best = None
        for host in order:
            current[host] += weights[host]
            if best is None or current[host] > current[best]:
                best = host
        assert best is not None
        current[best] -= total
        sequence.append(best)
    return sequence


def picks(rr: object, count: int) -> list[int]:
    return [rr.pick() for _ in range(count)]  # type: ignore[attr-defined]


small_weights = st.lists(st.integers(1, 12), min_size=1, max_size=16)
offsets = st.integers(-(2**70), 2**70)


@given(weights=st.lists(st.integers(1, MAX_WEIGHT), min_size=1, max_size=40), offset=offsets)
def test_picks_in_range(round_robin: ModuleType, weights: list[int], offset: int) -> None:
    rr = round_robin.RoundRobin(weights, offset)
    assert all(0 <= host < len(weights) for host in picks(rr, 100))


@given(weights=small_weights, offset=offsets)
def test_each_cycle_picks_every_host_weight_times(
    round_robin: ModuleType, weights: list[int], offset: int
) -> None:
    total = sum(weights)
    sequence = picks(round_robin.RoundRobin(weights, offset), 2 * total)
    assert Counter(sequence[:total]) == {host: w for host, w in enumerate(weights)}
    assert sequence[total:] == sequence[:total]  # the state returns to zero after a cycle


@given(weights=small_weights, offset=offsets)
def test_matches_reference(round_robin: ModuleType, weights: list[int], offset: int) -> None:
    count = 2 * sum(weights)
    assert picks(round_robin.RoundRobin(weights, offset), count) == reference(weights, offset, count)


@given(n=st.integers(1, 50), weight=st.integers(1, MAX_WEIGHT), offset=offsets)
def test_equal_weights_rotate(round_robin: ModuleType, n: int, weight: int, offset: int) -> None:
    rr = round_robin.RoundRobin([weight] * n, offset)
    assert picks(rr, 2 * n + 1) == [(offset + i) % n for i in range(2 * n + 1)]


@given(weights=small_weights, offset=offsets)
def test_no_repeat_while_another_host_is_as_heavy(
    round_robin: ModuleType, weights: list[int], offset: int
) -> None:
    sequence = picks(round_robin.RoundRobin(weights, offset), sum(weights) + 1)  # includes the wrap
    for previous, host in itertools.pairwise(sequence):
        if previous == host:
            assert all(w < weights[host] for other, w in enumerate(weights) if other != host)


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
