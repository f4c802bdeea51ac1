"""Ring-hash picker and XXH64 in pure Python: the reference twin of ``_ring_hash_c.pyx``.

Owns Envoy's ketama-style ring (``ring_hash_lb.cc``, xxHash64 only), XXH64 itself, and the
validation and sizing of a ring (the C twin calls :func:`ring_plan`, so both build the same
ring). Depends only on the standard library and ``_common``.

Sizing, as Envoy but in exact integer arithmetic instead of doubles: with total weight ``W`` and
smallest weight ``m``, ``scale = min(ceil(m * minimum_ring_size / W) * W / m,
maximum_ring_size)`` ring entries per unit of normalised weight, so the lightest host gets a whole
number of entries. Hosts are then visited in key order (ties by index; Envoy visits them in
EDS order, which would let two proxies given the same endpoints in another order build different
rings) keeping running sums: host ``k`` gets ``ceil(T_k) - ceil(T_(k-1))`` entries, where
``T_k`` is ``scale`` times the normalised weight of hosts up to ``k``. Entry ``i`` of a host with
key ``K`` hashes ``f"{K}_{i}"``. Entries are sorted by ``(hash, host)``; a pick is the first
entry whose hash is >= the request hash, wrapping to the first.

Cost: building O(R log R) for R entries (R <= maximum_ring_size, at most 8,388,608 as Envoy
allows); a pick is one binary search, O(log R). Memory O(R).
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence

from meshproxy.upstream.lb._common import MASK64, check_hash, keys_bytes, weights_list

__all__ = ("MAX_RING_SIZE", "RingHash", "ring_plan", "xxhash64")

MAX_RING_SIZE = 8 * 1024 * 1024  # Envoy's bound on minimum_ring_size and maximum_ring_size

_P1 = 11400714785074694791
_P2 = 14029467366897019727
_P3 = 1609587929392839161
_P4 = 9650029242287828579
_P5 = 2870177450012600261


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & MASK64


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & MASK64, 31) * _P1) & MASK64


def _merge(acc: int, v: int) -> int:
    return ((acc ^ _round(0, v)) * _P1 + _P4) & MASK64


def xxhash64(data: bytes, seed: int = 0) -> int:
    """XXH64 of ``data`` with ``seed`` (the reference algorithm; xxHash spec section 2)."""
    if not isinstance(data, bytes):
        raise TypeError(f"xxhash64 hashes bytes, not {type(data).__name__}")
    seed = operator.index(seed) & MASK64
    n = len(data)
    p = 0
    if n >= 32:
        v1 = (seed + _P1 + _P2) & MASK64
        v2 = (seed + _P2) & MASK64
        v3 = seed
        v4 = (seed - _P1) & MASK64
        while p + 32 <= n:
            v1 = _round(v1, int.from_bytes(data[p : p + 8], "little"))
            v2 = _round(v2, int.from_bytes(data[p + 8 : p + 16], "little"))
            v3 = _round(v3, int.from_bytes(data[p + 16 : p + 24], "little"))
            v4 = _round(v4, int.from_bytes(data[p + 24 : p + 32], "little"))
            p += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & MASK64
        for v in (v1, v2, v3, v4):
            h = _merge(h, v)
    else:
        h = (seed + _P5) & MASK64
    h = (h + n) & MASK64
    while p + 8 <= n:
        h ^= _round(0, int.from_bytes(data[p : p + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & MASK64
        p += 8
    if p + 4 <= n:
        h ^= (int.from_bytes(data[p : p + 4], "little") * _P1) & MASK64
        h = (_rotl(h, 23) * _P2 + _P3) & MASK64
        p += 4
    while p < n:
        h ^= (data[p] * _P5) & MASK64
        h = (_rotl(h, 11) * _P1) & MASK64
        p += 1
    h ^= h >> 33
    h = (h * _P2) & MASK64
    h ^= h >> 29
    h = (h * _P3) & MASK64
    return h ^ (h >> 32)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def ring_plan(
    keys: Sequence[str], weights: Sequence[int], minimum_ring_size: int, maximum_ring_size: int
) -> list[tuple[int, bytes, int]]:
    """``(host, key as UTF-8, entries)`` for each host in the order the ring is filled."""
    checked = weights_list(weights)
    encoded = keys_bytes(keys, len(checked))
    low, high = operator.index(minimum_ring_size), operator.index(maximum_ring_size)
    for name, size in (("minimum_ring_size", low), ("maximum_ring_size", high)):
        if not 1 <= size <= MAX_RING_SIZE:
            raise ValueError(f"{name} is {size}; it must be between 1 and {MAX_RING_SIZE}")
    if low > high:
        raise ValueError(f"minimum_ring_size ({low}) is above maximum_ring_size ({high})")
    total, lightest = sum(checked), min(checked)
    # scale = min(units * total / lightest, high) as the fraction scale_num / scale_den.
    units = _ceil_div(lightest * low, total)
    scale_num, scale_den = (units * total, lightest) if units * total <= high * lightest else (high, 1)
    order = sorted(range(len(checked)), key=lambda i: (encoded[i], i))
    plan, running, placed = [], 0, 0
    for host in order:
        running += checked[host]
        target = _ceil_div(scale_num * running, scale_den * total)
        plan.append((host, encoded[host], target - placed))
        placed = target
    return plan


class RingHash:
    """Envoy's ring hash over hosts with hash keys ``keys`` and weights ``weights``."""

    __slots__ = ("_hashes", "_hosts", "_n")

    def __init__(
        self,
        keys: Sequence[str],
        weights: Sequence[int],
        minimum_ring_size: int = 1024,
        maximum_ring_size: int = MAX_RING_SIZE,
    ) -> None:
        plan = ring_plan(keys, weights, minimum_ring_size, maximum_ring_size)
        ring = sorted(
            (xxhash64(key + b"_" + str(i).encode()), host) for host, key, count in plan for i in range(count)
        )
        self._n = len(plan)
        self._hashes = [h for h, _ in ring]
        self._hosts = [host for _, host in ring]

    def __len__(self) -> int:
        return self._n

    @property
    def ring_size(self) -> int:
        """Entries on the ring (Envoy's ``size`` gauge)."""
        return len(self._hashes)

    def pick(self, hash: int) -> int:
        """The host of the first ring entry whose hash is >= ``hash`` (an int in [0, 2**64))."""
        i = bisect.bisect_left(self._hashes, check_hash(hash))
        return self._hosts[i] if i < len(self._hosts) else self._hosts[0]
