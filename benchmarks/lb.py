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
twin for least request and ring hash. In-process: the runner's path is ``direct`` (an idle
upstream it starts and warms), which these measurements do not touch. Owns no product logic.
"""

from __future__ import annotations

import importlib
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from benchmarks import cli
from benchmarks.runner import Comparison, Measurement, Path, Ref, Scenario, Settings, Timing

PATH = "pickers"
BATCH = 64
ENDPOINTS = (10, 100, 1000)
SAMPLES = {True: 300, False: 3000}  # per twin, by settings.quick
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
        "weights is O(n) per pick by design (nginx's smooth weighted round robin)."
    ),
    filter_targets=False,
    columns=COLUMNS,
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], ["lb"]))
