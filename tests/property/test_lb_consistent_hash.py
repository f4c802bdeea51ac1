"""Hypothesis properties of XXH64, the ring hash and Maglev, for both twins.

The disruption bounds are the algorithms' own. On a ring where every host keeps its entries, a
new host takes about 1/(n+1) of the keys and every key that moves, moves to it. With Envoy's
sizing (a fixed minimum ring) the other hosts' entry counts shrink a little too, and keys on the
dropped entries move as well: 1/(n+1) plus the dropped share plus noise. Maglev moves the removed
host's slots plus a few more (the paper's "minimal disruption" is approximate): over 300 random
key sets at M = 4099, n <= 25, the extra was under 2.1 % except one set at 6.9 % (n = 17);
asserted: at most one more host's share, 1/n, plus 2 %.
"""

from __future__ import annotations

import math
from types import ModuleType

from hypothesis import given, settings
from hypothesis import strategies as st

from meshproxy.upstream.lb import _maglev_py, _ring_hash_py

PROBES = [_ring_hash_py.xxhash64(i.to_bytes(4, "little")) for i in range(4000)]
NO_DEADLINE = settings(deadline=None)  # a shared 2-core machine: no timing assertions

host_keys = st.lists(
    st.from_regex(r"[a-z0-9.-]{1,20}:[0-9]{2,5}", fullmatch=True), min_size=2, max_size=25, unique=True
)


@NO_DEADLINE
@given(data=st.binary(max_size=200), seed=st.integers(-(2**70), 2**70))
def test_xxhash64_twins_identical(ring_hash_c: ModuleType, data: bytes, seed: int) -> None:
    assert ring_hash_c.xxhash64(data, seed) == _ring_hash_py.xxhash64(data, seed)


@NO_DEADLINE
@given(
    names=host_keys, weights=st.data(), sizes=st.sampled_from([(1, 64), (64, 64), (256, 1024), (1024, 8192)])
)
def test_ring_hash_twins_identical(
    ring_hash_c: ModuleType, names: list[str], weights: st.DataObject, sizes: tuple[int, int]
) -> None:
    w = weights.draw(
        st.lists(st.integers(1, 5) | st.integers(1, 2**32 - 1), min_size=len(names), max_size=len(names))
    )
    c, py = ring_hash_c.RingHash(names, w, *sizes), _ring_hash_py.RingHash(names, w, *sizes)
    assert c.ring_size == py.ring_size <= sizes[1]
    assert [c.pick(p) for p in PROBES] == [py.pick(p) for p in PROBES]
    assert all(0 <= c.pick(p) < len(names) for p in PROBES[:200])


@NO_DEADLINE
@given(names=host_keys, weights=st.data(), size=st.sampled_from([3, 7, 251, 1021]))
def test_maglev_twins_identical(
    maglev_c: ModuleType, names: list[str], weights: st.DataObject, size: int
) -> None:
    w = weights.draw(
        st.lists(st.integers(1, 5) | st.integers(1, 2**32 - 1), min_size=len(names), max_size=len(names))
    )
    c, py = maglev_c.Maglev(names, w, size), _maglev_py.Maglev(names, w, size)
    table = [c.pick(slot) for slot in range(size)]
    assert table == [py.pick(slot) for slot in range(size)]
    assert all(0 <= h < len(names) for h in table)


@settings(max_examples=40, deadline=None)
@given(names=host_keys, entries=st.integers(20, 80))
def test_ring_hash_adding_a_host_moves_keys_only_to_it(
    ring_hash: ModuleType, names: list[str], entries: int
) -> None:
    n = len(names) - 1
    before = ring_hash.RingHash(names[:n], [1] * n, entries * n, entries * n)
    after = ring_hash.RingHash(names, [1] * (n + 1), entries * (n + 1), entries * (n + 1))
    moved = [(b, a) for b, a in ((before.pick(p), after.pick(p)) for p in PROBES) if b != a]
    assert all(a == n for _, a in moved)  # every moved key went to the new host
    assert len(moved) / len(PROBES) <= 1 / (n + 1) + 3.5 / entries**0.5 / (n + 1) ** 0.5 + 0.02


@settings(max_examples=40, deadline=None)
@given(names=host_keys)
def test_ring_hash_envoy_sizing_moves_about_one_nth(ring_hash: ModuleType, names: list[str]) -> None:
    n = len(names) - 1
    before, after = ring_hash.RingHash(names[:n], [1] * n), ring_hash.RingHash(names, [1] * (n + 1))
    # With the default minimum of 1024, each of the n old hosts goes from ceil(1024 / n) entries to
    # ceil(1024 / (n + 1)): keys on the dropped entries move too, besides the new host's 1/(n+1).
    dropped = 1 - math.ceil(1024 / (n + 1)) / math.ceil(1024 / n)
    # The slack covers the ring's sampling noise: with about 1024 entries the new host's share
    # varies by a few percent with the names hashed (hypothesis found 0.5 points over 0.03).
    bound = 1 / (n + 1) + dropped + 0.06
    moved = sum(before.pick(p) != after.pick(p) for p in PROBES) / len(PROBES)
    assert moved <= bound
    removed = ring_hash.RingHash(names[1:], [1] * n)  # and removing a host, from the larger ring
    moved = sum(after.pick(p) != removed.pick(p) + 1 for p in PROBES) / len(PROBES)
    assert moved <= bound


@settings(max_examples=40, deadline=None)
@given(names=host_keys)
def test_maglev_disruption_on_removal(maglev: ModuleType, names: list[str]) -> None:
    m, n = 4099, len(names)
    before, after = maglev.Maglev(names, [1] * n, m), maglev.Maglev(names[1:], [1] * (n - 1), m)
    full = [before.pick(s) for s in range(m)]
    less = [after.pick(s) + 1 for s in range(m)]
    removed_share = full.count(0) / m
    changed = sum(a != b for a, b in zip(full, less, strict=True)) / m
    assert all(b != 0 for b in less)
    assert changed - removed_share <= 1 / n + 0.02


@settings(max_examples=25, deadline=None)
@given(names=host_keys, weights=st.data())
def test_maglev_slots_follow_weights(maglev: ModuleType, names: list[str], weights: st.DataObject) -> None:
    w = weights.draw(st.lists(st.integers(1, 8), min_size=len(names), max_size=len(names)))
    m = 4099
    picker = maglev.Maglev(names, w, m)
    table = [picker.pick(s) for s in range(m)]
    # A host of weight v takes its turns at iterations 1 and ceil(j * max / v): 1 + floor(T * v /
    # max) slots after T iterations, give or take the last iteration, cut off when the table fills.
    # The iteration count T is estimated from the table size; each other host's floor() may give
    # back up to one slot, which moves T by up to (n - 1) / share and a host's count by that times
    # its own share (found by Hypothesis: weights [1]*7 + [2, 8] put the heaviest 2.3 slots off).
    heaviest = max(w)
    share = sum(v / heaviest for v in w)
    iterations = (m - len(w)) / share
    for host, v in enumerate(w):
        slack = 2 + (len(w) - 1) / share * v / heaviest
        assert abs(table.count(host) - (1 + iterations * v / heaviest)) <= slack, (host, v)
