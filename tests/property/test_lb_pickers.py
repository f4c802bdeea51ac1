"""Hypothesis properties of the random and least-request pickers, for both twins.

Each picker is checked against a plain reference written here from the algorithm's description
(splitmix64 draws, Envoy's power-of-choices and its EDF schedule as a linear scan), so the C and
the Python twin are held to the same sequence; a separate property compares the two directly,
errors included.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.upstream.lb import _least_request_py, _random_lb_py
from meshproxy.upstream.lb._common import MASK64, MAX_WEIGHT, splitmix64


@dataclass
class Host:
    rq_active: int


def picks(picker: object, count: int) -> list[int]:
    return [picker.pick() for _ in range(count)]  # type: ignore[attr-defined]


def reference_least_request(
    weights: Sequence[int], loads: Sequence[int], choices: int, bias: float, seed: int, count: int
) -> list[int]:
    state, n, out = seed & MASK64, len(weights), []
    if len(set(weights)) == 1:
        for _ in range(count):
            best = -1
            for _ in range(choices):
                state, r = splitmix64(state)
                if best < 0 or loads[r % n] < loads[best]:
                    best = r % n
            out.append(best)
        return out

    def step_of(host: int) -> float:
        factor = float(loads[host]) + 1.0
        return 1.0 / (weights[host] / (factor if bias == 1.0 else math.pow(factor, bias)))

    entries = [[step_of(i), i, i] for i in range(n)]  # [deadline, seq, host]
    seq = n

    def pick() -> int:
        nonlocal seq
        entry = min(entries, key=lambda e: (e[0], e[1]))
        entry[0] += step_of(entry[2])
        entry[1] = seq
        seq += 1
        return int(entry[2])

    state, r = splitmix64(state)
    for _ in range(r % n):
        pick()
    return [pick() for _ in range(count)]


seeds = st.integers(-(2**70), 2**70)
weight_lists = st.lists(st.integers(1, 6) | st.integers(1, MAX_WEIGHT), min_size=1, max_size=24)
biases = st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0])


@st.composite
def pools(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    weights = draw(weight_lists)
    loads = draw(st.lists(st.integers(0, 50), min_size=len(weights), max_size=len(weights)))
    return weights, loads


@settings(deadline=None)  # a shared 2-core machine: no timing assertions
@given(pool=pools(), choices=st.integers(2, 6), bias=biases, seed=seeds)
def test_least_request_matches_reference(
    least_request: ModuleType, pool: tuple[list[int], list[int]], choices: int, bias: float, seed: int
) -> None:
    weights, loads = pool
    lr = least_request.LeastRequest(weights, [Host(a) for a in loads], choices, bias, seed)
    assert picks(lr, 120) == reference_least_request(weights, loads, choices, bias, seed, 120)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 20), seed=seeds)
def test_least_request_prefers_less_loaded_hosts(least_request: ModuleType, n: int, seed: int) -> None:
    loads = list(range(n))  # distinct: host 0 idle, host n-1 busiest
    counts = Counter(picks(least_request.LeastRequest([1] * n, [Host(a) for a in loads], 2, 1.0, seed), 3000))
    # P2C picks the k-th least loaded with probability (2(n-k)-1)/n**2: 3x to 39x more for host 0.
    assert counts[0] > counts[n - 1]
    weighted = least_request.LeastRequest([2] + [1] * (n - 1), [Host(a) for a in loads], 2, 1.0, seed)
    counts = Counter(picks(weighted, 3000))
    assert counts[0] == max(counts.values())  # effective weight 2 against at most 1/2


@settings(deadline=None)  # a shared 2-core machine: no timing assertions
@given(weights=weight_lists, seed=seeds)
def test_random_matches_reference(random_lb: ModuleType, weights: list[int], seed: int) -> None:
    state, total, expected = seed & MASK64, sum(weights), []
    for _ in range(200):
        state, r = splitmix64(state)
        x, host = r % total, 0
        if len(set(weights)) == 1:
            host = r % len(weights)
        else:
            while x >= weights[host]:
                x -= weights[host]
                host += 1
        expected.append(host)
    assert picks(random_lb.RandomLb(weights, seed), 200) == expected


@settings(max_examples=30, deadline=None)
@given(weights=st.lists(st.integers(1, 10), min_size=1, max_size=8), seed=st.integers(0, 2**64 - 1))
def test_random_weighted_frequencies(random_lb: ModuleType, weights: list[int], seed: int) -> None:
    count, total = 20000, sum(weights)
    counts = Counter(picks(random_lb.RandomLb(weights, seed), count))
    for host, w in enumerate(weights):
        p = w / total
        assert abs(counts[host] - count * p) <= 6 * math.sqrt(count * p * (1 - p)) + 1, (counts, weights)


@settings(max_examples=30, deadline=None)
@given(weights=st.lists(st.integers(1, 10), min_size=2, max_size=8))
def test_least_request_idle_shares_follow_weights(least_request: ModuleType, weights: list[int]) -> None:
    lr = least_request.LeastRequest(weights, [Host(0) for _ in weights])
    rounds = 50
    counts = Counter(picks(lr, rounds * sum(weights)))
    if len(set(weights)) > 1:  # EDF over fixed weights: within n of the exact share
        assert all(abs(counts[h] - rounds * w) <= len(weights) for h, w in enumerate(weights)), counts


@settings(deadline=None)  # a shared 2-core machine: no timing assertions
@given(pool=pools(), choices=st.integers(2, 4), bias=biases, seed=seeds)
def test_picks_are_valid_indices(
    least_request: ModuleType,
    random_lb: ModuleType,
    pool: tuple[list[int], list[int]],
    choices: int,
    bias: float,
    seed: int,
) -> None:
    weights, loads = pool
    lr = least_request.LeastRequest(weights, [Host(a) for a in loads], choices, bias, seed)
    rnd = random_lb.RandomLb(weights, seed)
    assert all(0 <= h < len(weights) for h in picks(lr, 100) + picks(rnd, 100))


@settings(deadline=None)  # a shared 2-core machine: no timing assertions
@given(pool=pools(), choices=st.integers(2, 4), bias=biases, seed=seeds)
def test_compiled_and_python_sequences_identical(
    least_request_c: ModuleType,
    random_lb_c: ModuleType,
    pool: tuple[list[int], list[int]],
    choices: int,
    bias: float,
    seed: int,
) -> None:
    weights, loads = pool
    hosts = [Host(a) for a in loads]
    c = least_request_c.LeastRequest(weights, hosts, choices, bias, seed)
    py = _least_request_py.LeastRequest(weights, hosts, choices, bias, seed)
    assert picks(c, 300) == picks(py, 300)
    hosts[0].rq_active += 7  # loads change between picks: both read them live
    assert picks(c, 300) == picks(py, 300)
    assert picks(random_lb_c.RandomLb(weights, seed), 300) == picks(
        _random_lb_py.RandomLb(weights, seed), 300
    )


bad_values = st.sampled_from([0, -1, 1, 2, 1.5, None, "2", 2**64, 17.0, float("nan"), 1025])


@settings(deadline=None)  # a shared 2-core machine: no timing assertions
@given(weights=st.lists(bad_values, max_size=3), choices=bad_values, bias=bad_values, seed=bad_values)
def test_compiled_and_python_reject_alike(
    least_request_c: ModuleType,
    random_lb_c: ModuleType,
    weights: list[object],
    choices: object,
    bias: object,
    seed: object,
) -> None:
    hosts = [Host(0) for _ in weights]
    for make_c, make_py in (
        (
            lambda: least_request_c.LeastRequest(weights, hosts, choices, bias, seed),
            lambda: _least_request_py.LeastRequest(weights, hosts, choices, bias, seed),
        ),
        (lambda: random_lb_c.RandomLb(weights, seed), lambda: _random_lb_py.RandomLb(weights, seed)),
    ):
        outcome = []
        for make in (make_c, make_py):
            try:
                make()
                outcome.append(None)
            except (TypeError, ValueError, OverflowError) as exc:
                outcome.append((type(exc), str(exc)))
        assert outcome[0] == outcome[1]


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, None])
def test_compiled_and_python_reject_bad_loads_alike(least_request_c: ModuleType, bad: object) -> None:
    for weights in ([1, 1], [1, 2]):
        kinds = set()
        for module in (least_request_c, _least_request_py):
            hosts = [Host(0), Host(0)]
            lr = module.LeastRequest(weights, hosts, 4)
            hosts[0].rq_active = hosts[1].rq_active = bad  # type: ignore[assignment]
            with pytest.raises((TypeError, ValueError, OverflowError)) as info:
                lr.pick()
            kinds.add(info.type)
        assert len(kinds) == 1
