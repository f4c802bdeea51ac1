"""Scenario: the cost of one load-balancing decision, compiled picker against its Python twin.

For every policy (round robin with equal and with mixed weights, least request in its
power-of-two-choices and its weighted EDF mode, weighted random, ring hash, Maglev) over 10, 100
and 1,000 endpoints (weights 1-4 where mixed, ``rq_active`` 0-7), each measurement times
the compiled twin and the Python twin side by side: samples of 64 consecutive picks timed with
``time.perf_counter_ns`` (one pick is below the clock's useful resolution), the two twins
alternating sample by sample so a noisy neighbour slows both alike. A figure is the per-pick
time of a sample: its p50 and p99 over the samples, in ns, including the call from a Python
``for`` loop, as the proxy calls it. Ring hash and Maglev pick for precomputed 64-bit hashes.

Goals reported against: compiled pick <= 1 µs at p99 for 1,000 endpoints; compiled >= 5x the
twin (p99 against p99) for least request and ring hash. Run as ``python -m benchmarks.lb``, it
prints after the usual tables one more, :func:`goals_table`: every policy and size with PASS or
FAIL per goal, from the medians over rounds. In-process: the runner's path is ``direct`` (an idle
upstream it starts and warms), which these measurements do not touch. Owns no product logic.
"""

from __future__ import annotations

import importlib
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from benchmarks import cli, runner
from benchmarks.runner import Comparison, Measurement, Path, Ref, Scenario, Settings, Timing

PATH = "pickers"
BATCH = 64
ENDPOINTS = (10, 100, 1000)
SAMPLES = {True: 1000, False: 3000}  # per twin, by settings.quick: p99 is the 10th or 30th worst
POLICIES = (
    "round_robin",
    "round_robin_weighted",
    "least_request",
    "least_request_weighted",
    "random",
    "ring_hash",
    "maglev",
)
COLUMNS = ("c_p50_ns", "c_p99_ns", "py_p50_ns", "py_p99_ns", "speedup_p99")
GOAL_P99_NS = 1000.0  # compiled pick, p99, at GOAL_ENDPOINTS
GOAL_ENDPOINTS = 1000
GOAL_SPEEDUP = 5.0  # twin p99 / compiled p99, for the policies below
SPEEDUP_POLICIES = ("least_request", "least_request_weighted", "ring_hash")


@dataclass
class Endpoint:
    rq_active: int


def _twin(base: str, kind: str) -> ModuleType:
    return importlib.import_module(f"meshproxy.upstream.lb._{base}_{kind}")


def build(policy: str, n: int, kind: str) -> Callable[[int], int] | Callable[[], int]:
    """The bound ``pick`` of ``policy`` over ``n`` endpoints, from twin ``kind`` ("c" or "py")."""
    rng = random.Random(n)  # the same endpoints for both twins
    mixed = [rng.randint(1, 4) for _ in range(n)]
    keys = [f"10.{i // 250}.{i % 250}.7:8080" for i in range(n)]
    hosts = [Endpoint(rng.randint(0, 7)) for _ in range(n)]
    weights = mixed if policy.endswith("weighted") else [1] * n
    if policy.startswith("round_robin"):
        return _twin("round_robin", kind).RoundRobin(weights, 1).pick
    if policy.startswith("least_request"):
        return _twin("least_request", kind).LeastRequest(weights, hosts, 2, 1.0, 7).pick
    if policy == "random":
        return _twin("random_lb", kind).RandomLb(mixed, 7).pick
    if policy == "ring_hash":
        return _twin("ring_hash", kind).RingHash(keys, mixed).pick
    return _twin("maglev", kind).Maglev(keys, mixed).pick


def _sample(pick: Any, hashes: list[int], hashed: bool) -> int:
    """Nanoseconds for one batch of BATCH picks."""
    if hashed:
        start = time.perf_counter_ns()
        for h in hashes:
            pick(h)
        return time.perf_counter_ns() - start
    start = time.perf_counter_ns()
    for _ in hashes:
        pick()
    return time.perf_counter_ns() - start


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def measure(policy: str, n: int, samples: int) -> dict[str, Any]:
    """Per-pick p50/p99 of both twins, sampled alternately, and the twin/compiled ratio."""
    hashed = policy in ("ring_hash", "maglev")
    rng = random.Random(1)
    hashes = [rng.getrandbits(64) for _ in range(BATCH)]
    try:
        picks = {"c": build(policy, n, "c"), "py": build(policy, n, "py")}
    except ImportError as exc:
        raise RuntimeError(f"compiled picker not built: {exc}") from exc
    times: dict[str, list[float]] = {"c": [], "py": []}
    for pick in picks.values():  # warm-up: caches, branch predictors
        _sample(pick, hashes, hashed)
    for i in range(samples):
        order = ("c", "py") if i % 2 == 0 else ("py", "c")
        for kind in order:
            times[kind].append(_sample(picks[kind], hashes, hashed) / BATCH)
    metrics: dict[str, Any] = {"samples": samples, "batch": BATCH}
    for kind, values in times.items():
        values.sort()
        metrics[f"{kind}_p50_ns"] = round(_percentile(values, 0.50), 1)
        metrics[f"{kind}_p99_ns"] = round(_percentile(values, 0.99), 1)
    metrics["speedup_p50"] = round(metrics["py_p50_ns"] / metrics["c_p50_ns"], 2)
    metrics["speedup_p99"] = round(metrics["py_p99_ns"] / metrics["c_p99_ns"], 2)
    return metrics


def _run(policy: str, n: int) -> Callable[[Settings, int], dict[str, Any]]:
    def run(settings: Settings, port: int) -> dict[str, Any]:
        return measure(policy, n, SAMPLES[settings.quick])

    return run


def _name(policy: str, n: int) -> str:
    return f"{policy}-{n}"


def _comparisons() -> tuple[Comparison, ...]:
    out = []
    for stat in ("p50", "p99"):
        for policy in POLICIES:
            for n in ENDPOINTS:
                m = _name(policy, n)
                out.append(
                    Comparison(
                        f"{policy}, Python / Cython {stat}",
                        f"{n:,} endpoints",
                        Ref(PATH, m, f"py_{stat}_ns"),
                        Ref(PATH, m, f"c_{stat}_ns"),
                    )
                )
    return tuple(out)


SCENARIO = Scenario(
    name="lb",
    title="LB pickers: per-decision time, Cython against the pure-Python twin",
    paths=(Path(PATH, "direct"),),
    measurements=tuple(
        Measurement(_name(p, n), f"{p}, {n:,} endpoints (ns per pick)", "latency", _run(p, n))
        for p in POLICIES
        for n in ENDPOINTS
    ),
    comparisons=_comparisons(),
    quick=Timing(rounds=1, duration_s=1),
    full=Timing(rounds=3, duration_s=1),
    note=(
        f"In-process, {BATCH} picks per timed sample, twins alternating; ns per pick including the "
        "call from a Python loop. Goals: Cython p99 <= 1,000 ns at 1,000 endpoints; Python / Cython "
        ">= 5 for least request and ring hash. Mixed weights are 1-4; round robin with mixed "
        "weights is Envoy's EDF schedule (O(log n) per pick), with equal weights a rotation."
    ),
    filter_targets=False,
    columns=COLUMNS,
)


def goals_table(result: dict[str, Any]) -> str:
    """Markdown: per policy and size, the compiled p99 and the speedup, with PASS or FAIL for each
    goal (``-`` where a goal does not apply); figures are medians over the rounds."""
    summary = runner.summarize(result["runs"])
    at = {(s["measurement"], s["metric"]): s["median"] for s in summary if s["path"] == PATH}
    goals = f"p99 <= {GOAL_P99_NS:,.0f} ns | >= {GOAL_SPEEDUP:g}x twin"
    lines = ["### Goals", "", f"| policy | endpoints | c_p99_ns | speedup_p99 | {goals} |", "|" + "---|" * 6]
    failed = []
    for policy in POLICIES:
        for n in ENDPOINTS:
            p99, speedup = at.get((_name(policy, n), "c_p99_ns")), at.get((_name(policy, n), "speedup_p99"))
            if p99 is None or speedup is None:
                lines.append(f"| {policy} | {n:,} | - | - | not measured | not measured |")
                failed.append(f"{policy}-{n}")
                continue
            verdicts = ["-", "-"]
            if n == GOAL_ENDPOINTS:
                verdicts[0] = "PASS" if p99 <= GOAL_P99_NS else "FAIL"
            if policy in SPEEDUP_POLICIES:
                verdicts[1] = "PASS" if speedup >= GOAL_SPEEDUP else "FAIL"
            failed += [f"{policy}-{n}" for v in verdicts if v == "FAIL"]
            lines.append(f"| {policy} | {n:,} | {p99:.1f} | {speedup:.2f} | {verdicts[0]} | {verdicts[1]} |")
    lines += ["", f"Goals: {'all PASS' if not failed else 'FAIL at ' + ', '.join(dict.fromkeys(failed))}", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """The shared benchmark CLI for this scenario, then :func:`goals_table` of each result it wrote."""
    before = set(runner.RUNS_DIR.glob("*/*-lb.json"))
    code = cli.main(argv, ["lb"])
    for written in sorted(set(runner.RUNS_DIR.glob("*/*-lb.json")) - before):
        print(goals_table(json.loads(written.read_text())))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
