"""Unit tests for XXH64 and the ring-hash picker, run against both the C and the Python twin."""

from __future__ import annotations

import bisect
from collections import Counter
from types import ModuleType

import pytest

from meshproxy.upstream.lb._ring_hash_py import ring_plan, xxhash64

# Published XXH64 values (xxHash's sanity checks and python-xxhash's README).
VECTORS = [
    (b"", 0, 0xEF46DB3751D8E999),
    (b"a", 0, 0xD24EC4F1A98C6E5B),
    (b"abc", 0, 0x44BC2CF5AD770999),
    (b"Nobody inspects the spammish repetition", 0, 0xFBCEA83C8A378BF1),
]

KEYS = [f"10.0.0.{i}:8080" for i in range(5)]


@pytest.mark.parametrize(("data", "seed", "expected"), VECTORS)
def test_xxhash64_vectors(ring_hash: ModuleType, data: bytes, seed: int, expected: int) -> None:
    assert ring_hash.xxhash64(data, seed) == expected


def test_xxhash64_every_length_and_seed_agree_with_the_reference(ring_hash: ModuleType) -> None:
    data = bytes(range(256)) * 2
    for n in range(0, 100):  # every tail shape: 32-byte stripes, 8-, 4- and 1-byte remainders
        for seed in (0, 1, 2**63, 2**64 - 1):
            assert ring_hash.xxhash64(data[:n], seed) == xxhash64(data[:n], seed)


def test_xxhash64_seed_is_taken_mod_2_64(ring_hash: ModuleType) -> None:
    assert ring_hash.xxhash64(b"key", -1) == ring_hash.xxhash64(b"key", 2**64 - 1)
    assert ring_hash.xxhash64(b"key", 1) != ring_hash.xxhash64(b"key", 0)


@pytest.mark.parametrize("data", ["text", bytearray(b"x"), None, 5])
def test_xxhash64_takes_bytes_only(ring_hash: ModuleType, data: object) -> None:
    with pytest.raises(TypeError, match="xxhash64 hashes bytes"):
        ring_hash.xxhash64(data)


def reference_ring(keys: list[str], entries: int) -> tuple[list[int], list[int]]:
    ring = sorted(
        (xxhash64(f"{k}_{i}".encode()), host) for host, k in enumerate(keys) for i in range(entries)
    )
    return [h for h, _ in ring], [host for _, host in ring]


def test_pick_is_first_entry_at_or_after_the_hash(ring_hash: ModuleType) -> None:
    # Equal weights and minimum_ring_size 10 over 5 hosts: 2 entries per host.
    ring = ring_hash.RingHash(KEYS, [1] * 5, minimum_ring_size=10)
    hashes, owners = reference_ring(KEYS, 2)
    assert ring.ring_size == 10
    probes = [0, 2**64 - 1] + hashes + [h + 1 for h in hashes] + [h - 1 for h in hashes]
    for probe in [p for p in probes if 0 <= p < 2**64]:
        i = bisect.bisect_left(hashes, probe)
        assert ring.pick(probe) == owners[i % len(owners)], probe


@pytest.mark.parametrize("entries", [1, 2, 3, 50, 1000])
def test_pick_at_every_entry_and_bucket_edge(ring_hash: ModuleType, entries: int) -> None:
    # The C twin narrows the search by the top bits of the hash (a table of 2**bits buckets,
    # 2**bits <= ring size): probe each entry, its neighbours, and the edges of every bucket size.
    ring = ring_hash.RingHash(KEYS, [1] * 5, 5 * entries, 5 * entries)
    hashes, owners = reference_ring(KEYS, entries)
    edges = [b << (64 - bits) for bits in range(1, 24) for b in (1, 2, (1 << bits) - 1)]
    probes = [0, 2**64 - 1, *hashes, *edges, *(h + d for h in hashes + edges for d in (-1, 1))]
    for probe in [p for p in probes if 0 <= p < 2**64]:
        i = bisect.bisect_left(hashes, probe)
        assert ring.pick(probe) == owners[i % len(owners)], probe


def test_ring_size_follows_envoy(ring_hash: ModuleType) -> None:
    # Envoy: scale = ceil(min_weight_share * minimum) / min_weight_share, capped at the maximum.
    assert ring_hash.RingHash(KEYS[:3], [1, 1, 1]).ring_size == 1026  # 342 entries each
    assert ring_hash.RingHash(KEYS[:2], [1, 3], 1024).ring_size == 1024
    assert ring_hash.RingHash(KEYS[:3], [1, 1, 1], 100, 100).ring_size == 100  # 102 capped


def test_entries_are_proportional_to_weight() -> None:
    plan = ring_plan(KEYS[:3], [1, 2, 5], 1024, 8388608)
    counts = {host: n for host, _, n in plan}
    assert counts == {0: 128, 1: 256, 2: 640}  # ceil(1024 / 8) = 128 entries per unit


def test_capped_ring_keeps_running_sums() -> None:
    # Envoy's example: 4 equal hosts on a ring of 6 get 2, 1, 2, 1 entries in fill order.
    plan = ring_plan(KEYS[:4], [1] * 4, 6, 6)
    assert [n for _, _, n in plan] == [2, 1, 2, 1]


def test_fill_order_is_by_key_not_by_position(ring_hash: ModuleType) -> None:
    a = ring_hash.RingHash(KEYS, [1, 2, 3, 4, 5], 1000, 1000)
    b = ring_hash.RingHash(KEYS[::-1], [5, 4, 3, 2, 1], 1000, 1000)
    probes = [xxhash64(str(i).encode()) for i in range(2000)]
    assert [4 - b.pick(p) for p in probes] == [a.pick(p) for p in probes]


def test_weighted_shares_of_the_hash_space(ring_hash: ModuleType) -> None:
    ring = ring_hash.RingHash(KEYS[:2], [1, 3], minimum_ring_size=4096)
    counts = Counter(ring.pick(xxhash64(str(i).encode())) for i in range(20000))
    assert 0.2 < counts[0] / 20000 < 0.3, counts


def test_len_and_single_host(ring_hash: ModuleType) -> None:
    ring = ring_hash.RingHash(["only"], [1], minimum_ring_size=1)
    assert (len(ring), ring.ring_size) == (1, 1)
    assert {ring.pick(h) for h in (0, 1, 2**63, 2**64 - 1)} == {0}


@pytest.mark.parametrize(
    ("keys", "weights", "sizes", "message"),
    [
        ([], [], (1024, 8388608), "weights is empty"),
        (["a"], [1, 1], (1024, 8388608), "keys has 1 entries but weights has 2"),
        (["a", ""], [1, 1], (1024, 8388608), r"keys\[1\] is ''"),
        (["a", 7], [1, 1], (1024, 8388608), r"keys\[1\] is 7"),
        (["a", "\ud800"], [1, 1], (1024, 8388608), r"keys\[1\] is not encodable"),
        (["a"], [1], (0, 8388608), "minimum_ring_size is 0"),
        (["a"], [1], (1024, 8388609), "maximum_ring_size is 8388609"),
        (["a"], [1], (2048, 1024), r"minimum_ring_size \(2048\) is above maximum_ring_size \(1024\)"),
    ],
)
def test_rejects_bad_input(
    ring_hash: ModuleType, keys: list[object], weights: list[int], sizes: tuple[int, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ring_hash.RingHash(keys, weights, *sizes)


@pytest.mark.parametrize(("probe", "error"), [(-1, OverflowError), (2**64, OverflowError), (1.5, TypeError)])
def test_rejects_bad_hash(ring_hash: ModuleType, probe: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        ring_hash.RingHash(KEYS, [1] * 5).pick(probe)
