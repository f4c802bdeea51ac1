"""Unit tests for the Maglev picker, run against both the C and the Python twin."""

from __future__ import annotations

from collections import Counter
from types import ModuleType

import pytest

from meshproxy.upstream.lb._maglev_py import validated
from meshproxy.upstream.lb._ring_hash_py import xxhash64

KEYS = [f"backend-{i}.svc:80" for i in range(6)]


def table(picker: object, size: int) -> list[int]:
    return [picker.pick(slot) for slot in range(size)]  # type: ignore[attr-defined]


def test_offsets_and_skips_follow_the_paper() -> None:
    entries, m = validated(KEYS[:2], [1, 1], 13)
    assert m == 13
    for host, offset, skip, _ in entries:
        key = KEYS[host].encode()
        assert (offset, skip) == (xxhash64(key, 0) % 13, xxhash64(key, 1) % 12 + 1)


def test_first_slots_are_each_hosts_first_preference(maglev: ModuleType) -> None:
    entries, m = validated(KEYS[:3], [1, 1, 1], 101)
    t = table(maglev.Maglev(KEYS[:3], [1, 1, 1], 101), m)
    first = entries[0]  # population order: it always gets its first preference
    assert t[first[1]] == first[0]


def test_equal_weights_fill_evenly(maglev: ModuleType) -> None:
    counts = Counter(table(maglev.Maglev(KEYS, [2] * 6, 1021), 1021))
    assert max(counts.values()) - min(counts.values()) <= 1
    assert sum(counts.values()) == 1021


def test_weighted_slots_follow_weights(maglev: ModuleType) -> None:
    counts = Counter(table(maglev.Maglev(KEYS[:3], [1, 2, 4], 7919), 7919))
    assert [abs(counts[h] - 7919 * w / 7) <= 2 for h, w in enumerate((1, 2, 4))] == [True] * 3, counts


def test_pick_is_hash_mod_table_size(maglev: ModuleType) -> None:
    m = maglev.Maglev(KEYS, [1] * 6, 7)
    t = table(m, 7)
    assert m.table_size == 7
    assert [m.pick(h) for h in (7, 15, 2**64 - 1)] == [t[0], t[1], t[(2**64 - 1) % 7]]


def test_host_order_does_not_change_the_table(maglev: ModuleType) -> None:
    a = table(maglev.Maglev(KEYS, [1, 2, 3, 1, 2, 3], 1009), 1009)
    b = table(maglev.Maglev(KEYS[::-1], [3, 2, 1, 3, 2, 1], 1009), 1009)
    assert [KEYS[h] for h in a] == [KEYS[::-1][h] for h in b]


def test_default_table_size(maglev: ModuleType) -> None:
    m = maglev.Maglev(KEYS[:2], [1, 1])
    assert (m.table_size, len(m)) == (65537, 2)


@pytest.mark.parametrize(
    ("keys", "weights", "size", "message"),
    [
        ([], [], 65537, "weights is empty"),
        (["a", "b"], [1], 65537, "keys has 2 entries but weights has 1"),
        (["a"], [1], 65536, "table_size is 65536; it must be a prime"),
        (["a"], [1], 2, "table_size is 2"),
        (["a"], [1], 1, "table_size is 1"),
        (["a"], [1], 5000101, "table_size is 5000101"),
        (["a", ""], [1, 1], 7, r"keys\[1\] is ''"),
        (["a", "b"], [1, 0], 7, r"weights\[1\] is 0"),
    ],
)
def test_rejects_bad_input(
    maglev: ModuleType, keys: list[str], weights: list[int], size: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        maglev.Maglev(keys, weights, size)


@pytest.mark.parametrize(("probe", "error"), [(-1, OverflowError), (2**64, OverflowError), ("1", TypeError)])
def test_rejects_bad_hash(maglev: ModuleType, probe: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        maglev.Maglev(KEYS, [1] * 6, 7).pick(probe)
