"""Maglev picker in pure Python: the reference twin of ``_maglev_c.pyx``.

Owns the lookup-table population (Maglev, NSDI 2016, section 3.4, with Envoy's weighting from
``maglev_lb.cc``) and the validation of its inputs (the C twin calls :func:`validated`).
Depends only on the standard library, ``_common`` and the XXH64 of ``_ring_hash_py``.

Each host with hash key ``K`` has ``offset = xxhash64(K, 0) % M`` and ``skip = xxhash64(K, 1)
% (M - 1) + 1``; its preference list is ``(offset + skip * next) % M`` for next = 0, 1, ...
(a permutation of the table because M is prime). Population runs iterations 1, 2, ...; in each,
every host whose turn it is claims the next free slot of its preference list, until all ``M``
slots are taken. Envoy's weighting decides the turns: a host of weight ``w`` takes a turn in
iteration ``t`` when ``t * w >= target``, and each turn adds the largest weight to its
``target`` (Envoy does this with normalised doubles; the integers here give the same turns
exactly). So the heaviest host claims a slot every iteration and a host of half its weight
every other one. Hosts are visited in key order (ties by index) rather than in EDS order, so two
proxies given the same endpoints in another order build the same table. A pick is
``table[hash % M]``.

Cost: building O(M log M) probes plus O(n) per iteration (worst case O(M * n) when one host
is much heavier than the rest); a pick is O(1). Memory: the table, M entries.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from meshproxy.upstream.lb._common import check_hash, keys_bytes, weights_list
from meshproxy.upstream.lb._ring_hash_py import xxhash64

__all__ = ("MAX_TABLE_SIZE", "Maglev", "validated")

MAX_TABLE_SIZE = 5000011  # Envoy's bound on maglev_lb_config.table_size


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:  # at most ~1,100 divisions for MAX_TABLE_SIZE
        if n % f == 0:
            return False
        f += 2
    return True


def validated(
    keys: Sequence[str], weights: Sequence[int], table_size: int
) -> tuple[list[tuple[int, int, int, int]], int]:
    """``(host, offset, skip, weight)`` in population order, and the table size M."""
    checked = weights_list(weights)
    encoded = keys_bytes(keys, len(checked))
    m = operator.index(table_size)
    if not 2 < m <= MAX_TABLE_SIZE or not _is_prime(m):
        raise ValueError(f"table_size is {m}; it must be a prime between 3 and {MAX_TABLE_SIZE} (e.g. 65537)")
    order = sorted(range(len(checked)), key=lambda i: (encoded[i], i))
    entries = [
        (i, xxhash64(encoded[i], 0) % m, xxhash64(encoded[i], 1) % (m - 1) + 1, checked[i]) for i in order
    ]
    return entries, m


def populate(entries: list[tuple[int, int, int, int]], m: int) -> list[int]:
    """The lookup table: ``m`` host indices, filled as the module docstring describes."""
    table = [-1] * m
    heaviest = max(w for _, _, _, w in entries)
    nexts = [0] * len(entries)
    targets = [0] * len(entries)
    filled, iteration = 0, 0
    while filled < m:
        iteration += 1
        for k, (host, offset, skip, weight) in enumerate(entries):
            if iteration * weight < targets[k]:
                continue
            targets[k] += heaviest
            slot = (offset + skip * nexts[k]) % m
            while table[slot] >= 0:
                nexts[k] += 1
                slot = (offset + skip * nexts[k]) % m
            table[slot] = host
            nexts[k] += 1
            filled += 1
            if filled == m:
                break
    return table


class Maglev:
    """A Maglev lookup table of ``table_size`` slots over hosts with keys ``keys``."""

    __slots__ = ("_m", "_n", "_table")

    def __init__(self, keys: Sequence[str], weights: Sequence[int], table_size: int = 65537) -> None:
        entries, self._m = validated(keys, weights, table_size)
        self._n = len(entries)
        self._table = populate(entries, self._m)

    def __len__(self) -> int:
        return self._n

    @property
    def table_size(self) -> int:
        return self._m

    def pick(self, hash: int) -> int:
        """The host in slot ``hash % table_size`` (``hash`` an int in [0, 2**64))."""
        return self._table[check_hash(hash) % self._m]
