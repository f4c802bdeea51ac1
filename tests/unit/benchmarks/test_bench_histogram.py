"""benchmarks.histogram: bucket layout, percentile accuracy, merging.

(File named ``test_bench_*`` so it cannot clash with a meshproxy test module of the same name.)
"""

from __future__ import annotations

import math
import random

from benchmarks.histogram import SUB_BITS, Histogram, bucket_bounds, bucket_index


def exact_percentile(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


def test_small_values_are_exact() -> None:
    hist = Histogram()
    for v in range(1, 101):
        hist.record(v)
    assert hist.percentile(50) == 50
    assert hist.percentile(99) == 99
    assert hist.percentile(100) == 100
    assert (hist.min, hist.max, hist.count) == (1, 100, 100)


def test_every_value_lies_in_its_bucket_and_buckets_are_contiguous() -> None:
    values = [0, 1, 255, 256, 257, 511, 512, 1023, 1024, 10**6, 10**9, 60 * 10**9]
    values += [(1 << k) + d for k in range(8, 40) for d in (-1, 0, 1)]
    for v in values:
        low, high = bucket_bounds(bucket_index(v))
        assert low <= v < high
        assert (high - low) <= max(1, v >> (SUB_BITS - 1))
    for index in range(0, 5000):
        assert bucket_bounds(index)[1] == bucket_bounds(index + 1)[0]


def test_percentiles_within_half_a_percent_of_exact() -> None:
    rng = random.Random(7)
    values = [int(10 ** rng.uniform(3, 9)) for _ in range(20_000)]  # 1 µs .. 1 s in ns
    hist = Histogram()
    for v in values:
        hist.record(v)
    for p in (50, 75, 90, 99, 99.9, 99.99):
        exact = exact_percentile(values, p)
        assert abs(hist.percentile(p) - exact) <= 0.005 * exact, p
    assert hist.percentile(100) == max(values)


def test_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(3)
    values = [rng.randrange(1, 10**8) for _ in range(5000)]
    whole, left, right = Histogram(), Histogram(), Histogram()
    for i, v in enumerate(values):
        whole.record(v)
        (left if i % 2 else right).record(v)
    left.merge(Histogram.from_dict(right.to_dict()))
    assert left.counts == whole.counts
    assert (left.count, left.min, left.max) == (whole.count, whole.min, whole.max)
    assert left.percentile(99) == whole.percentile(99)


def test_empty_histogram_reports_zero() -> None:
    assert Histogram().percentile(99) == 0.0
