"""Scenario: the CPU an HTTP filter adds per request, paired against the same proxy without it.

Paths: ``meshproxy`` (targets.py's benchmark bootstrap: one listener, the router, one cluster)
and ``meshproxy-rbac``: the same bootstrap with ``envoy.filters.http.rbac`` before the router,
five ALLOW policies shaped like Istio's (four with path-prefix and ``:method`` permissions that
this load's path misses, the fifth admitting the loopback peer), so every request evaluates all
five and is allowed. Both run on the proxy core; wrk saturates them over 50 connections, and the
figure is the proxy's CPU per request (utime + stime over the run / requests answered), set
against each other round by round as a difference: what RBAC costs a request. Issue 15's target
is at most 3 µs. ``python -m benchmarks.rbac_micro`` measures the same filter in-process.
Owns no product logic.
"""

from __future__ import annotations

import sys
from pathlib import Path as FsPath
from typing import Any

import yaml

from benchmarks import cli, targets
from benchmarks.runner import Path, Scenario, Timing, pairwise, saturating_and_serial

CONNECTIONS = 50
RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def _missed(prefix: str, principal: dict[str, Any]) -> dict[str, Any]:
    """A policy whose permission the benchmark's requests miss at its path prefix."""
    permission = {
        "and_rules": {
            "rules": [
                {"url_path": {"path": {"prefix": prefix}}},
                {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
            ]
        }
    }
    return {"permissions": [permission], "principals": [principal]}


def _spiffe(name: str) -> dict[str, Any]:
    return {"authenticated": {"principal_name": {"exact": f"spiffe://mesh.local/ns/default/sa/{name}"}}}


RBAC_FILTER = {
    "name": "envoy.filters.http.rbac",
    "typed_config": {
        "@type": RBAC,
        "rules": {
            "action": "ALLOW",
            "policies": {
                "1-web": _missed("/api/", _spiffe("web")),
                "2-batch": _missed("/jobs/", _spiffe("batch")),
                "3-ops": _missed(
                    "/admin/", {"direct_remote_ip": {"address_prefix": "10.20.0.0", "prefix_len": 16}}
                ),
                "4-metrics": _missed("/metrics", _spiffe("prometheus")),
                "5-local": {
                    "permissions": [{"any": True}],
                    "principals": [{"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}],
                },
            },
        },
    },
}


def rbac_bootstrap(port: int, upstream_port: int, admin_port: int) -> str:
    """targets.meshproxy_bootstrap with the RBAC filter before the router."""
    doc = yaml.safe_load(targets.meshproxy_bootstrap(port, upstream_port, admin_port))
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, RBAC_FILTER)
    return yaml.safe_dump(doc, sort_keys=False)


def _meshproxy_rbac(upstream_port: int, workdir: FsPath) -> tuple[list[list[str]], int, Any]:
    port, admin = targets.free_port(), targets.free_port()
    conf = workdir / "bootstrap-rbac.yaml"
    conf.write_text(rbac_bootstrap(port, upstream_port, admin))
    argv = targets.meshproxy_argv("run", "-c", str(conf))
    return [argv], port, lambda: targets.http_ok(admin, "/ready") and targets.port_open(port)


targets.register("meshproxy-rbac", _meshproxy_rbac)

SCENARIO = Scenario(
    name="filters_cost",
    title="HTTP filters: proxy CPU per request with RBAC (5 policies) against without",
    paths=(Path("meshproxy", "meshproxy"), Path("meshproxy-rbac", "meshproxy-rbac")),
    measurements=saturating_and_serial(CONNECTIONS),
    comparisons=pairwise(
        [("meshproxy-rbac", "meshproxy")],
        (
            ("proxy CPU µs/req (saturating)", "saturate", "proxy_cpu_us_per_req"),
            ("serial p50", "serial", "p50_ms"),
        ),
        kind="diff",
    ),
    quick=Timing(rounds=1, duration_s=2),
    full=Timing(rounds=5, duration_s=10),
    note=(
        "Differences are per round (same round, same machine state). Every request evaluates all "
        "five RBAC policies and is allowed by the last; the issue's target is <= 3 µs per request."
    ),
    filter_targets=False,
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], ["filters_cost"]))
