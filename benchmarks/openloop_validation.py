"""Validation of openloop.py: an upstream that stalls 100 ms every second, seen three ways.

The same direct path, healthy and stalled, measured by: our generator in closed-loop mode
(latency from the real send, what a naive closed-loop tool reports), wrk (closed loop, which
corrects its histogram afterwards with ``stats_correct``, synthesising the requests a connection
would have sent during a stall at its average rate), and our generator open loop at 1,000 req/s
(latency from the intended send time). A 100 ms stall every second delays 10 % of intended sends
by a uniform 0-100 ms, so an honest p99 is about 90 ms and p99.9 about 99 ms; a p99 near the
healthy one means the tool hid the stall.
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks import cli, openloop, wrk
from benchmarks.runner import DEFAULT_COLUMNS, Comparison, Measurement, Path, Ref, Scenario, Settings, Timing

CONNECTIONS = 10
RATE = 1000
STALL_MS = 100
STALL_EVERY_MS = 1000


def _wrk(settings: Settings, port: int) -> dict[str, Any]:
    return wrk.run(port, CONNECTIONS, settings.duration_s, settings.cpu_load)


def _closed(settings: Settings, port: int) -> dict[str, Any]:
    return openloop.measure(settings.cpu_load, port, 0, settings.duration_s, CONNECTIONS)


def _open(settings: Settings, port: int) -> dict[str, Any]:
    return openloop.measure(settings.cpu_load, port, RATE, settings.duration_s, CONNECTIONS)


_MEASUREMENTS = (
    Measurement("closed", f"Closed loop, uncorrected ({CONNECTIONS} connections)", "latency", _closed),
    Measurement("wrk", f"wrk -t1 -c{CONNECTIONS} (closed loop + its CO correction)", "latency", _wrk),
    Measurement("open", f"Open loop, {RATE:,} req/s over {CONNECTIONS} connections", "latency", _open),
)


def _comparisons() -> tuple[Comparison, ...]:
    out = []
    for metric, label in (("p99_ms", "p99"), ("p999_ms", "p99.9")):
        for m in _MEASUREMENTS:
            num, den = Ref("stalled", m.name, metric), Ref("healthy", m.name, metric)
            out.append(Comparison(f"{label} stalled / healthy", m.name, num, den))
        for m in ("closed", "wrk"):
            num, den = Ref("stalled", m, metric), Ref("stalled", "open", metric)
            out.append(Comparison(f"{label} stalled, tool / open loop", m, num, den))
    return tuple(out)


SCENARIO = Scenario(
    name="openloop_validation",
    title=f"Open-loop validation: an upstream stalling {STALL_MS} ms every {STALL_EVERY_MS} ms",
    paths=(
        Path("healthy", "direct"),
        Path("stalled", "direct", stall_ms=STALL_MS, stall_every_ms=STALL_EVERY_MS),
    ),
    measurements=_MEASUREMENTS,
    comparisons=_comparisons(),
    quick=Timing(rounds=2, duration_s=2),
    full=Timing(rounds=3, duration_s=10),
    note=(
        f"Expected for a {STALL_MS} ms stall every {STALL_EVERY_MS} ms: p99 ≈ 90 ms, p99.9 ≈ 99 ms. "
        "A closed-loop tool that measures from the real send reports the healthy p99 (it hides the "
        "stall); the open-loop generator reports the stall. wrk 4.x corrects its histogram after the run "
        "(stats_correct), which approximates the open-loop answer when it saturates."
    ),
    filter_targets=False,
    columns=(*DEFAULT_COLUMNS, "lag_p99_ms"),
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], ["openloop_validation"]))
