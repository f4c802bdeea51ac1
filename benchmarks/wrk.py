"""Closed-loop load with wrk: saturating throughput and serial round trips, as numbers.

Owns running ``wrk`` pinned to the load core with a Lua ``done()`` hook that prints one JSON line
(requests, errors, the latency spectrum of histogram.PERCENTILES in microseconds), and turning it
into the metrics every measurement reports (``rps``, ``p50_ms`` … ``max_ms``, ``percentiles_ms``).
wrk is closed loop: a stalled response also stalls the next request on that connection, so its
percentiles hide stalls (openloop.py does not); use it for throughput and serial latency.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.histogram import PERCENTILES, latency_metrics, percentile_key

_MARK = "WRK_JSON "
_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  local parts = {}
  for _, q in ipairs({%(percentiles)s}) do
    table.insert(parts, string.format('"%%s":%%d', tostring(q), latency:percentile(q)))
  end
  io.write(string.format(
    '%(mark)s{"duration_us":%%d,"requests":%%d,"bytes":%%d,"errors":%%d,"timeouts":%%d,'
      .. '"min_us":%%d,"max_us":%%d,"mean_us":%%.1f,"percentiles_us":{%%s}}\\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect + e.read + e.write + e.status, e.timeout,
    latency.min, latency.max, latency.mean, table.concat(parts, ",")))
end
"""


def parse(output: str) -> dict[str, Any]:
    """Metrics from wrk's output carrying the hook's JSON line."""
    for line in output.splitlines():
        if line.startswith(_MARK):
            raw = json.loads(line[len(_MARK) :])
            break
    else:
        raise RuntimeError(f"wrk printed no result line:\n{output[-2000:]}")
    duration_s = raw["duration_us"] / 1e6
    spectrum = {percentile_key(q): raw["percentiles_us"][percentile_key(q)] / 1000 for q in PERCENTILES}
    return {
        "rps": raw["requests"] / duration_s if duration_s else 0.0,
        "requests": raw["requests"],
        "errors": raw["errors"] + raw["timeouts"],
        **latency_metrics(spectrum, raw["max_us"] / 1000),
    }


def run(
    port: int, connections: int, duration_s: float, cpu: int, threads: int = 1, headers: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run wrk for ``duration_s`` against 127.0.0.1:port, each request with ``headers``
    ("name: value"), and return its metrics."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "report.lua"
        lua_list = ", ".join(percentile_key(q) for q in PERCENTILES)
        script.write_text(_LUA % {"percentiles": lua_list, "mark": _MARK})
        argv = ["taskset", "-c", str(cpu), "wrk", f"-t{threads}", f"-c{connections}"]
        argv += [f"-d{max(1, round(duration_s))}s", "--timeout", "5s", "-s", str(script)]
        for header in headers:
            argv += ["-H", header]
        argv.append(f"http://127.0.0.1:{port}/")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout[-2000:]}")
    return parse(done.stdout)
