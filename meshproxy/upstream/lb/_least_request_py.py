"""Least-request picker in pure Python: the reference twin of ``_least_request_c.pyx``.

Owns the algorithm, its validation and how a host's load is read (the C twin calls
:func:`validated`). Depends only on the standard library and ``_common``. Each host object
carries ``rq_active``, its outstanding requests, kept current by the caller.

Envoy's LeastRequestLoadBalancer, in its two modes:

- **Equal weights**: power of ``choice_count`` choices. Draw ``choice_count`` hosts uniformly
  with replacement (``r % n`` per draw); the one with the fewest active requests wins, the
  earliest draw on a tie. O(choice_count) per pick.
- **Unequal weights**: an earliest-deadline-first schedule over effective weights
  ``weight / (rq_active + 1) ** active_request_bias`` (bias 1.0 divides without ``pow``, as
  Envoy does). Each entry is ``(deadline, seq, host)``; a pick takes the smallest, and puts the
  host back with deadline ``deadline + 1 / effective weight`` computed from its load *now*, so a
  host's share follows its load as it is picked (a host not picked keeps its last deadline, as in
  Envoy). ``seq`` (insertion order) makes the order total, so the C twin's heap and ``heapq``
  pop identical sequences. As Envoy's ``createWithPicks`` does, the schedule starts after
  ``seed``-drawn ``r % n`` picks so that proxies do not all start on the same host. O(log n) per
  pick.

Arithmetic is IEEE double in the same order in both twins (``float(w) / (float(a) + 1.0)``,
``pow`` of two doubles), so their schedules agree bit for bit. ``active_request_bias`` is capped at 16:
with ``rq_active`` below 2**63 the factor stays below 2**1008, so nothing overflows a double.
"""

from __future__ import annotations

import heapq
import math
import operator
from collections.abc import Sequence
from typing import Any

from meshproxy.upstream.lb._common import seed_state, splitmix64, weights_list

__all__ = ("INT64_MAX", "MAX_BIAS", "LeastRequest", "active_requests", "validated")

MAX_BIAS = 16.0
INT64_MAX = 2**63 - 1


def active_requests(hosts: Sequence[Any], i: int) -> int:
    """``hosts[i].rq_active`` as an int in [0, 2**63); the C twin raises the same errors."""
    a = hosts[i].rq_active
    if type(a) is not int:
        a = operator.index(a)
    if not -INT64_MAX - 1 <= a <= INT64_MAX:
        raise OverflowError(f"hosts[{i}].rq_active is {a}; it does not fit in 64 bits")
    if a < 0:
        raise ValueError(f"hosts[{i}].rq_active is {a}; active requests cannot be negative")
    return a


def validated(
    weights: Sequence[int], hosts: Sequence[Any], choice_count: int, active_request_bias: float, seed: int
) -> tuple[list[int], tuple[Any, ...], int, float, int]:
    """``(weights, hosts, choice_count, bias, state)`` checked; ValueError names the argument."""
    checked = weights_list(weights)
    hosts = tuple(hosts)
    if len(hosts) != len(checked):
        raise ValueError(f"hosts has {len(hosts)} entries but weights has {len(checked)}")
    choices = operator.index(choice_count)
    if not 2 <= choices <= 1024:
        raise ValueError(f"choice_count is {choices}; it must be between 2 and 1024 (Envoy's minimum is 2)")
    bias = float(active_request_bias)
    if not 0.0 <= bias <= MAX_BIAS:  # also rejects NaN
        raise ValueError(f"active_request_bias is {bias}; it must be between 0 and {MAX_BIAS:g}")
    for i in range(len(hosts)):
        active_requests(hosts, i)
    return checked, hosts, choices, bias, seed_state(seed)


class LeastRequest:
    """Envoy's least-request picker over ``hosts``; ``hash`` is accepted and ignored."""

    __slots__ = ("_bias", "_choices", "_heap", "_hosts", "_n", "_seq", "_state", "_weights")

    def __init__(
        self,
        weights: Sequence[int],
        hosts: Sequence[Any],
        choice_count: int = 2,
        active_request_bias: float = 1.0,
        seed: int = 0,
    ) -> None:
        checked, self._hosts, self._choices, self._bias, self._state = validated(
            weights, hosts, choice_count, active_request_bias, seed
        )
        self._n = n = len(checked)
        self._weights = checked
        self._heap: list[tuple[float, int, int]] = []
        self._seq = n
        if len(set(checked)) > 1:
            self._heap = [(1.0 / self._effective_weight(i), i, i) for i in range(n)]
            heapq.heapify(self._heap)
            self._state, r = splitmix64(self._state)
            for _ in range(r % n):
                self.pick()

    def __len__(self) -> int:
        return self._n

    def _effective_weight(self, i: int) -> float:
        load = float(active_requests(self._hosts, i)) + 1.0
        if self._bias == 1.0:
            return float(self._weights[i]) / load
        return float(self._weights[i]) / math.pow(load, self._bias)

    def pick(self, hash: int = 0) -> int:
        """Return the index of the chosen host."""
        heap = self._heap
        if heap:
            deadline, _, host = heap[0]
            heapq.heapreplace(heap, (deadline + 1.0 / self._effective_weight(host), self._seq, host))
            self._seq += 1
            return host
        n, hosts, state = self._n, self._hosts, self._state
        state, r = splitmix64(state)
        best = r % n
        best_active = active_requests(hosts, best)
        for _ in range(self._choices - 1):
            state, r = splitmix64(state)
            host = r % n
            active = active_requests(hosts, host)
            if active < best_active:
                best, best_active = host, active
        self._state = state
        return best
