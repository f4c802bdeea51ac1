"""A log-bucketed latency histogram in the manner of HdrHistogram, small enough to read at once.

Owns the recording of integer values (nanoseconds here) into buckets of bounded relative width,
their merging across generator processes, and percentile queries. Depends on nothing.

Layout: values below ``2**SUB_BITS`` get a bucket each (exact); above, every power of two is split
into ``2**(SUB_BITS-1)`` equal buckets, so a bucket is at most ``2**-(SUB_BITS-1)`` of its value
wide (0.8 % with 8 bits) and a reported value, the bucket's midpoint, is within 0.4 % of the truth.
Memory is one dict entry per bucket in use; 60 s in nanoseconds needs fewer than 4,200 buckets.
"""

from __future__ import annotations

import math
from typing import Any

SUB_BITS = 8
_SUB = 1 << SUB_BITS
_HALF = _SUB >> 1

PERCENTILES: tuple[float, ...] = (50.0, 75.0, 90.0, 99.0, 99.9, 99.99)
"""The percentile spectrum every latency measurement reports (also wrk's, see wrk.py)."""


def percentile_key(p: float) -> str:
    """How a percentile is spelled as a key in results: ``50``, ``99.9`` (Lua's tostring agrees)."""
    return f"{p:g}"


def bucket_index(value: int) -> int:
    """The bucket holding ``value`` (a non-negative integer)."""
    if value < _SUB:
        return value
    shift = value.bit_length() - SUB_BITS
    return _SUB + (shift - 1) * _HALF + ((value >> shift) - _HALF)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The half-open value range ``[low, high)`` of bucket ``index``."""
    if index < _SUB:
        return index, index + 1
    shift = (index - _SUB) // _HALF + 1
    mantissa = (index - _SUB) % _HALF + _HALF
    low = mantissa << shift
    return low, low + (1 << shift)


def latency_metrics(percentiles_ms: dict[str, float], max_ms: float) -> dict[str, Any]:
    """The latency fields every measurement reports, from a spectrum keyed by ``percentile_key``."""
    return {
        "p50_ms": percentiles_ms["50"],
        "p90_ms": percentiles_ms["90"],
        "p99_ms": percentiles_ms["99"],
        "p999_ms": percentiles_ms["99.9"],
        "max_ms": max_ms,
        "percentiles_ms": percentiles_ms,
    }


class Histogram:
    """Counts of recorded values by bucket, with the exact minimum and maximum."""

    __slots__ = ("count", "counts", "max", "min")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.min = 0
        self.max = 0

    def record(self, value: int) -> None:
        value = max(value, 0)
        index = bucket_index(value)
        self.counts[index] = self.counts.get(index, 0) + 1
        if self.count == 0 or value < self.min:
            self.min = value
        self.max = max(self.max, value)
        self.count += 1

    def merge(self, other: Histogram) -> None:
        for index, n in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + n
        if other.count:
            self.min = other.min if self.count == 0 else min(self.min, other.min)
            self.max = max(self.max, other.max)
            self.count += other.count

    def percentile(self, p: float) -> float:
        """The value at percentile ``p`` (0-100): the smallest value with at least p % at or below it.

        Reported as its bucket's midpoint, clamped to the exact min and max; 0 when empty.
        """
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100.0))
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                low, high = bucket_bounds(index)
                return float(min(max((low + high - 1) / 2, self.min), self.max))
        return float(self.max)

    def to_dict(self) -> dict[str, object]:
        return {"counts": {str(k): v for k, v in self.counts.items()}, "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Histogram:
        hist = cls()
        counts = data["counts"]
        assert isinstance(counts, dict)
        hist.counts = {int(k): int(v) for k, v in counts.items()}
        hist.count = sum(hist.counts.values())
        hist.min = int(data["min"])  # type: ignore[call-overload]
        hist.max = int(data["max"])  # type: ignore[call-overload]
        return hist
