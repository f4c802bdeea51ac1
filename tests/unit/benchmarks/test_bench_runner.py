"""benchmarks.runner: order rotation, summaries, and comparisons paired by round.

(File named ``test_bench_*`` so it cannot clash with a meshproxy test module of the same name.)
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from benchmarks.runner import Comparison, Ref, compare, invalid_reason, pairwise, rotate, summarize


def run(rnd: int, path: str, rps: float, **extra: Any) -> dict[str, Any]:
    return {
        "round": rnd,
        "path": path,
        "measurement": "saturate",
        "metrics": {"rps": rps, "requests": 1000, "errors": 0, **extra},
    }


RATIO = Comparison("req/s", "a / b", Ref("a", "saturate", "rps"), Ref("b", "saturate", "rps"))


def test_rotate_moves_the_first_to_the_end_each_round() -> None:
    assert rotate(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotate(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert rotate(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert rotate([], 3) == []


def test_ratios_pair_runs_of_the_same_round() -> None:
    # Round-by-round ratios are 2, 3, 4; the ratio of the medians would be 100/30 = 3.33.
    runs = [run(0, "a", 100), run(0, "b", 50), run(1, "a", 90), run(1, "b", 30)]
    runs += [run(2, "a", 120), run(2, "b", 30)]
    (result,) = compare(runs, [RATIO])
    assert result["per_round"] == [2.0, 3.0, 4.0]
    assert (result["median"], result["min"], result["max"], result["n"]) == (3.0, 2.0, 4.0, 3)


def test_a_round_missing_either_side_is_left_out() -> None:
    runs = [run(0, "a", 100), run(0, "b", 50), run(1, "b", 30), run(2, "a", 90), run(2, "b", 30)]
    runs.append({"round": 1, "path": "a", "measurement": "saturate", "error": "wrk failed"})
    (result,) = compare(runs, [RATIO])
    assert result["per_round"] == [2.0, 3.0]
    assert compare([run(0, "a", 1)], [RATIO]) == []


def test_invalid_runs_are_left_out() -> None:
    erroring = run(1, "a", 500, errors=20)  # 2 % of 1000 requests failed
    slow = run(2, "a", 800, target_rps=1000, sustained=False)
    runs = [run(0, "a", 100), run(0, "b", 50), erroring, run(1, "b", 50), slow, run(2, "b", 50)]
    assert invalid_reason(erroring) == "20 errors in 1000 requests"
    assert invalid_reason(slow) == "offered 1000 req/s, achieved 800"
    assert invalid_reason(run(0, "a", 1, errors=10)) is None
    (result,) = compare(runs, [RATIO])
    assert result["per_round"] == [2.0]


def test_differences_and_comparisons_read_back_from_json() -> None:
    (added,) = pairwise([("a", "b")], [("p50", "saturate", "p50_ms")], kind="diff")
    assert added.column == "a - b"
    runs = [run(0, "a", 1, p50_ms=0.09), run(0, "b", 1, p50_ms=0.05)]
    runs += [run(1, "a", 1, p50_ms=0.07), run(1, "b", 1, p50_ms=0.06)]
    (result,) = compare(runs, [asdict(added)])  # as stored in a result file
    assert result["kind"] == "diff"
    assert [round(v, 6) for v in result["per_round"]] == [0.04, 0.01]
    assert round(result["median"], 6) == 0.025


def test_summary_is_median_and_range_of_numeric_metrics() -> None:
    runs = [run(0, "a", 10, sustained=True), run(1, "a", 30), run(2, "a", 20)]
    rows = {(r["path"], r["metric"]): r for r in summarize(runs)}
    assert rows[("a", "rps")] == {
        "path": "a",
        "measurement": "saturate",
        "metric": "rps",
        "median": 20,
        "min": 10,
        "max": 30,
        "n": 3,
    }
    assert ("a", "sustained") not in rows
