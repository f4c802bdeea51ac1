"""Weighted random picker in pure Python: the reference twin of ``_random_lb_c.pyx``.

Owns the algorithm and its validation (the C twin calls :func:`validated`). Depends only on the
standard library and ``_common``.

Each pick draws one 64-bit number ``r`` from splitmix64 seeded with ``seed``. With equal weights
the host is ``r % n`` (Envoy's RandomLoadBalancer); otherwise it is the first host whose
cumulative weight exceeds ``r % total``, found by binary search. The modulo bias is at most
``total / 2**64`` (below 2**-22 for a million hosts of the largest weight), far under any
measurable share. Envoy's random balancer ignores weights; ours honours them, as the cluster's
other policies do.

Cost: O(1) per pick with equal weights, O(log n) otherwise; memory O(n).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from meshproxy.upstream.lb._common import seed_state, splitmix64, weights_list

__all__ = ("RandomLb", "validated")


def validated(weights: Sequence[int], seed: int) -> tuple[list[int], int, int]:
    """The cumulative weights (empty when all weights are equal), the host count and the
    generator's initial state."""
    checked = weights_list(weights)
    cumulative = [] if len(set(checked)) == 1 else list(itertools.accumulate(checked))
    return cumulative, len(checked), seed_state(seed)


class RandomLb:
    """Weighted random choice over ``len(weights)`` hosts; ``hash`` is accepted and ignored."""

    __slots__ = ("_cumulative", "_n", "_state", "_total")

    def __init__(self, weights: Sequence[int], seed: int = 0) -> None:
        self._cumulative, self._n, self._state = validated(weights, seed)
        self._total = self._cumulative[-1] if self._cumulative else self._n

    def __len__(self) -> int:
        return self._n

    def pick(self, hash: int = 0) -> int:
        """Return the index of a host drawn in proportion to its weight."""
        self._state, r = splitmix64(self._state)
        if not self._cumulative:
            return r % self._n
        return bisect.bisect_right(self._cumulative, r % self._total)
