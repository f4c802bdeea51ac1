"""Scenario: the CPU the compressor filter adds per request, paired against the same proxy without it.

Paths: ``meshproxy`` (targets.py's benchmark bootstrap: one listener, the router, one cluster)
and ``meshproxy-gzip``: the same bootstrap with ``envoy.filters.http.compressor`` (gzip, Envoy's
defaults) before the router. Two saturating wrk loads over 50 connections: requests without
``accept-encoding`` (the filter is configured but compresses nothing: its request hook's cost)
and requests with ``accept-encoding: gzip`` (the upstream's 64-byte text/plain body is
compressed: a zlib stream per response). The figure is the proxy's CPU per request, set
against each other round by round as a difference. Owns no product logic.
"""

from __future__ import annotations

import sys
from pathlib import Path as FsPath
from typing import Any

import yaml

from benchmarks import cli, targets
from benchmarks.runner import Measurement, Path, Scenario, Timing, closed_loop, pairwise

CONNECTIONS = 50
GZIP_FILTER = {
    "name": "envoy.filters.http.compressor",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
        "compressor_library": {
            "name": "text",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip"
            },
        },
    },
}


def gzip_bootstrap(port: int, upstream_port: int, admin_port: int) -> str:
    """targets.meshproxy_bootstrap with the compressor filter before the router."""
    doc = yaml.safe_load(targets.meshproxy_bootstrap(port, upstream_port, admin_port))
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, GZIP_FILTER)
    return yaml.safe_dump(doc, sort_keys=False)


def _meshproxy_gzip(upstream_port: int, workdir: FsPath) -> tuple[list[list[str]], int, Any]:
    port, admin = targets.free_port(), targets.free_port()
    conf = workdir / "bootstrap-gzip.yaml"
    conf.write_text(gzip_bootstrap(port, upstream_port, admin))
    argv = targets.meshproxy_argv("run", "-c", str(conf))
    return [argv], port, lambda: targets.http_ok(admin, "/ready") and targets.port_open(port)


targets.register("meshproxy-gzip", _meshproxy_gzip)

SCENARIO = Scenario(
    name="compressor_cost",
    title="HTTP filters: proxy CPU per request with the gzip compressor against without",
    paths=(Path("meshproxy", "meshproxy"), Path("meshproxy-gzip", "meshproxy-gzip")),
    measurements=(
        Measurement(
            "identity",
            f"Saturating, no accept-encoding (wrk -t1 -c{CONNECTIONS})",
            "throughput",
            closed_loop(CONNECTIONS),
        ),
        Measurement(
            "gzip",
            f"Saturating, accept-encoding: gzip (wrk -t1 -c{CONNECTIONS})",
            "throughput",
            closed_loop(CONNECTIONS, ("accept-encoding: gzip",)),
        ),
    ),
    comparisons=pairwise(
        [("meshproxy-gzip", "meshproxy")],
        (
            ("proxy CPU µs/req, not compressing", "identity", "proxy_cpu_us_per_req"),
            ("proxy CPU µs/req, compressing", "gzip", "proxy_cpu_us_per_req"),
        ),
        kind="diff",
    ),
    quick=Timing(rounds=1, duration_s=2),
    full=Timing(rounds=5, duration_s=10),
    note="Differences are per round (same round, same machine state).",
    filter_targets=False,
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], ["compressor_cost"]))
