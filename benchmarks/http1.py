"""Scenario 1: HTTP/1.1, one hop, plaintext, against direct, meshproxy, haproxy and nginx.

Four measurements per path: saturating throughput (``wrk -t1 -c50``), serial round trip
(``wrk -t1 -c1``: its p50, and the p50 added over direct), and latency at 1,000 and 5,000
requests/s offered open loop over 50 connections (openloop.py). The upstream answers 64 bytes.
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks import cli, openloop, targets
from benchmarks.runner import (
    Measurement,
    Path,
    RunFn,
    Scenario,
    Settings,
    Timing,
    pairwise,
    saturating_and_serial,
)

CONNECTIONS = 50


def _open(rate: int) -> RunFn:
    def run(settings: Settings, port: int) -> dict[str, Any]:
        return openloop.measure(settings.cpu_load, port, rate, settings.duration_s, CONNECTIONS)

    return run


_PROXIES = ("meshproxy", "haproxy", "nginx") + (("meshproxy-base",) if targets.BASELINE else ())
_RATIO_ROWS = (
    ("saturating req/s", "saturate", "rps"),
    ("serial p50", "serial", "p50_ms"),
    ("1k req/s p50", "open1k", "p50_ms"),
    ("1k req/s p99", "open1k", "p99_ms"),
    ("5k req/s p50", "open5k", "p50_ms"),
    ("5k req/s p99", "open5k", "p99_ms"),
)
_ADDED_ROWS = (
    ("serial p50", "serial", "p50_ms"),
    ("1k req/s p50", "open1k", "p50_ms"),
    ("5k req/s p50", "open5k", "p50_ms"),
    ("5k req/s p99", "open5k", "p99_ms"),
)

SCENARIO = Scenario(
    name="http1",
    title="Scenario 1: HTTP/1.1, one hop, plaintext, 64-byte responses",
    paths=tuple(Path(t, t) for t in ("direct", *_PROXIES)),
    measurements=(
        *saturating_and_serial(CONNECTIONS),
        Measurement(
            "open1k", f"Open loop, 1,000 req/s over {CONNECTIONS} connections", "latency", _open(1000)
        ),
        Measurement(
            "open5k", f"Open loop, 5,000 req/s over {CONNECTIONS} connections", "latency", _open(5000)
        ),
    ),
    comparisons=pairwise(
        [
            ("meshproxy", "haproxy"),
            ("meshproxy", "nginx"),
            ("meshproxy", "direct"),
            ("haproxy", "direct"),
            ("nginx", "direct"),
            ("nginx", "haproxy"),
            *([("meshproxy", "meshproxy-base")] if targets.BASELINE else []),
        ],
        _RATIO_ROWS,
    )
    + pairwise([(p, "direct") for p in _PROXIES], _ADDED_ROWS, kind="diff"),
    quick=Timing(rounds=1, duration_s=2),
    full=Timing(rounds=5, duration_s=10),
    note=(
        "Ratios are per-round pairs (paths measured in the same round), so a slow round cancels out. "
        "Saturating and serial latencies come from wrk, whose percentiles include its own coordinated-"
        "omission correction; the 1k and 5k rows are open loop (latency from the intended send time)."
    ),
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], ["http1"]))
