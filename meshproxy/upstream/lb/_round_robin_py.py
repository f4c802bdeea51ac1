"""Weighted round robin in pure Python: the reference twin of ``_round_robin_c.pyx``.

Owns the algorithm's definition, its starting state and the validation of its inputs (the C twin
calls :func:`validated` and :func:`start_turns`, so both reject the same inputs with the same
messages and start from the same state). Depends on nothing outside the standard library.

The algorithm is Envoy's earliest-deadline-first schedule (``edf_scheduler.h``) in exact
arithmetic. Host ``i`` of weight ``w_i`` has its turns at the times ``1/w_i, 2/w_i, 3/w_i, …``;
picks take the turns in time order, a tie going to the lower host index. Envoy keeps each
deadline as a double (``current + 1/w``) and breaks ties by insertion order; here a deadline is
an exact fraction, so the two twins agree on every tie and no rounding error accumulates.

What it guarantees, with ``W = sum(weights)`` and ``n`` hosts:

- Period: the sequence repeats every ``W`` picks, so any ``W`` consecutive picks hold host ``i``
  exactly ``w_i`` times (every host's turns up to time 1 come first; then it starts over).
- Window: any ``L`` consecutive picks hold host ``i`` within ``1 + (n - 2) * w_i / W`` of
  ``L * w_i / W`` (a window spans some time ``D``; each host has ``D * w_i`` turns in it, give or
  take one). It is nearly reached: hosts of equal weight share their deadlines, so weights
  ``[k, 1, …, 1]`` (k ones) pick the heavy host k times in a row, ``k / 2`` above its share, then
  every light host (the bound is ``(k + 1) / 2``). Envoy's EDF has the same bursts.
- Start: ``offset`` places the first pick at position ``offset mod W`` of the schedule from time 0
  (Envoy's ``EdfScheduler::createWithPicks``, so proxies sharing a host set do not start in
  step). That state is reached without making the picks: host ``i`` has had
  ``floor(P * w_i / W)`` turns (the turns at times up to ``P / W``: there are at most ``P`` of
  them, so they all come first), and the fewer than ``n`` picks left are made through the heap.
  With equal weights this is the plain rotation from host ``offset mod n``, which the fast path
  computes directly.

Representation: a binary min-heap with one entry per host, keyed by its next deadline. Here the
key of a host that has had ``m`` turns is ``floor((m + 1) * 2**64 / w)``: weights are below
2**32, so two different fractions ``a/w`` and ``b/v`` differ by at least ``1 / (w * v)`` > 2**-64
and the floor keeps both their order and their ties; ``heapq`` orders ``(key, host, m)`` tuples,
whose host makes the order total. The C twin keeps ``deadline = epoch + k / w`` with ``0 <= k <
w`` and compares fractions by cross-multiplying (``k * v`` < 2**64).

Cost: ``pick`` is O(log n) (O(1) when all weights are equal); building is O(n log n); memory O(n).
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Sequence

__all__ = ("MAX_WEIGHT", "RoundRobin", "start_turns", "validated")

# Envoy's endpoint weights are uint32; the deadline arithmetic above relies on w < 2**32.
MAX_WEIGHT = 2**32 - 1


def validated(weights: Sequence[int], offset: int) -> tuple[list[int], int]:
    """Return the weights as a list of ints and ``offset % len(weights)`` (0 with no weights)."""
    checked: list[int] = []
    for i, weight in enumerate(weights):
        w = operator.index(weight)
        if not 1 <= w <= MAX_WEIGHT:
            raise ValueError(f"weights[{i}] is {w}; a host's weight must be between 1 and {MAX_WEIGHT}")
        checked.append(w)
    start = operator.index(offset) % len(checked) if checked else 0
    return checked, start


def start_turns(weights: Sequence[int], offset: int) -> tuple[list[int], int]:
    """The turns each host has had before pick ``P = offset mod sum(weights)`` (validated
    ``weights``, not empty), and how many picks (fewer than ``len(weights)``) are left to make."""
    total = sum(weights)
    position = operator.index(offset) % total
    turns = [position * w // total for w in weights]
    return turns, position - sum(turns)


class RoundRobin:
    """Earliest-deadline-first weighted round robin over ``len(weights)`` hosts."""

    __slots__ = ("_heap", "_n", "_next", "_weights")

    def __init__(self, weights: Sequence[int], offset: int = 0) -> None:
        checked, start = validated(weights, offset)
        self._n = len(checked)
        self._next = start  # the fast path's next host
        self._weights = checked
        self._heap: list[tuple[int, int, int]] = []
        if len(set(checked)) > 1:
            turns, left = start_turns(checked, offset)
            self._heap = [(((m + 1) << 64) // checked[host], host, m) for host, m in enumerate(turns)]
            heapq.heapify(self._heap)
            for _ in range(left):
                self.pick()

    def __len__(self) -> int:
        return self._n

    def pick(self) -> int:
        """Return the index of the next host; raise IndexError if there are no hosts."""
        heap = self._heap
        if heap:
            _, host, m = heap[0]
            m += 1
            heapq.heapreplace(heap, (((m + 1) << 64) // self._weights[host], host, m))
            return host
        n = self._n
        if not n:
            raise IndexError("pick from a RoundRobin with no hosts")
        host = self._next
        self._next = host + 1 if host + 1 < n else 0
        return host
