"""The pure parts of benchmarks.xds: the pushed resources, their snapshot, the sidecar bootstrap,
and the arithmetic of one push. Nothing is started."""

from __future__ import annotations

import json

from benchmarks import xds
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshproxy.config.bootstrap import parse_bootstrap


def _split(k: int) -> dict[str, int]:
    routes = xds.resources(k, 1000, 2000)[ROUTE][0]["virtual_hosts"][0]["routes"]
    assert routes[-1]["match"] == {"prefix": "/"}  # the catch-all comes last
    return {c["name"]: c["weight"] for c in routes[-1]["route"]["weighted_clusters"]["clusters"]}


def test_pushes_alternate_the_whole_split_between_blue_and_green() -> None:
    assert [xds.colour(k) for k in range(4)] == ["blue", "green", "blue", "green"]
    assert _split(0) == {"blue": 100, "green": 0}
    assert _split(1) == {"blue": 0, "green": 100}


def test_only_the_route_configuration_changes_between_pushes() -> None:
    a, b = xds.resources(0, 1000, 2000), xds.resources(1, 1000, 2000)
    assert [t for t in a if a[t] != b[t]] == [ROUTE]


def test_both_colours_are_the_upstream_and_the_listener_its_port() -> None:
    res = xds.resources(0, 1000, 2000)
    by_name = {e["cluster_name"]: e for e in res[ENDPOINT]}
    for name in ("blue", "green"):
        address = by_name[name]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        assert address["socket_address"] == {"address": "127.0.0.1", "port_value": 2000}
    assert res[LISTENER][0]["address"]["socket_address"]["port_value"] == 1000
    assert len(res[CLUSTER]) == len(res[ENDPOINT]) == 2 + xds.FILLER_SERVICES


def test_snapshot_passes_the_controlplane_consistency_check() -> None:
    snapshot = xds._snapshot(3, 1000, 2000)
    assert snapshot.version == "v3"
    assert snapshot.check() == []
    assert sorted(snapshot.names(ROUTE)) == [xds.ROUTES]
    assert len(list(snapshot.names(CLUSTER))) == 2 + xds.FILLER_SERVICES


def test_effect_bootstrap_compiles_in_the_proxy() -> None:
    config = parse_bootstrap(json.dumps(xds.effect_bootstrap(15010, 15000)), source="bench")
    assert "xds" in {c.name for c in config.clusters}


def test_push_figures() -> None:
    t0 = 1_000_000_000
    received = [t0 + ms * 1_000_000 for ms in (3, 1, 2)]
    assert xds.push_figures(t0, received, 3) == {"received": 3, "all_ms": 3.0, "p50_ms": 2.0}
    # a stream missing: the push did not reach all of them, so there is no "all received" time
    assert xds.push_figures(t0, received, 4) == {"received": 3, "all_ms": None, "p50_ms": 2.0}
    assert xds.push_figures(t0, [], 4) == {"received": 0, "all_ms": None, "p50_ms": None}
