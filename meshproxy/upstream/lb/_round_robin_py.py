"""Smooth weighted round robin in pure Python: the reference twin of ``_round_robin_c.pyx``.

Owns the algorithm's definition and the validation of its inputs (the C twin calls
:func:`validated`, so both reject the same inputs with the same messages). Depends on nothing
outside the standard library.

The algorithm is nginx's smooth weighted round robin: on each pick every host's current weight
grows by its weight, the host with the largest current weight wins (the first one in scan order
on a tie) and its current weight drops by the total. Over every cycle of ``sum(weights)`` picks
each host is chosen exactly ``weight`` times, spread out rather than in bursts.

``offset`` rotates the scan order: host ``offset % n`` is scanned first. With equal weights that
makes it the first host picked, then ``offset + 1`` and so on, which is what the O(1) fast path
computes directly. With unequal weights the heaviest host still comes first (that is the
algorithm); the offset only changes which of equally heavy hosts wins a tie.

Cost: ``pick`` is O(1) when all weights are equal, otherwise O(n) (three C-level passes over
the list here; one C loop in the compiled twin).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

__all__ = ("MAX_WEIGHT", "RoundRobin", "validated")

# Envoy's endpoint weights are uint32; with fewer than 2**30 hosts the total fits in an int64.
MAX_WEIGHT = 2**32 - 1


def validated(weights: Sequence[int], offset: int) -> tuple[list[int], int]:
    """Return the weights as a list of ints and the scan start ``offset % len(weights)``."""
    checked: list[int] = []
    for i, weight in enumerate(weights):
        w = operator.index(weight)
        if not 1 <= w <= MAX_WEIGHT:
            raise ValueError(f"weights[{i}] is {w}; a host's weight must be between 1 and {MAX_WEIGHT}")
        checked.append(w)
    start = operator.index(offset) % len(checked) if checked else 0
    return checked, start


class RoundRobin:
    """Smooth weighted round-robin picker over ``len(weights)`` hosts."""

    __slots__ = ("_current", "_equal", "_n", "_next", "_start", "_total", "_weights")

    def __init__(self, weights: Sequence[int], offset: int = 0) -> None:
        checked, start = validated(weights, offset)
        self._n = len(checked)
        self._start = start
        self._equal = len(set(checked)) <= 1
        self._next = start  # the fast path's next host
        # The general path keeps the weights in scan order (rotated by ``start``) so a pick is a
        # straight scan; the winner's position is mapped back to a host index.
        self._weights = checked[start:] + checked[:start]
        self._current = [0] * self._n
        self._total = sum(checked)

    def __len__(self) -> int:
        return self._n

    def pick(self) -> int:
        """Return the index of the next host; raise IndexError if there are no hosts."""
        n = self._n
        if self._equal:
            if not n:
                raise IndexError("pick from a RoundRobin with no hosts")
            host = self._next
            self._next = host + 1 if host + 1 < n else 0
            return host
        current = list(map(operator.add, self._current, self._weights))
        best = current.index(max(current))  # the first maximum, as the scan in the C twin
        current[best] -= self._total
        self._current = current
        host = best + self._start
        return host - n if host >= n else host
