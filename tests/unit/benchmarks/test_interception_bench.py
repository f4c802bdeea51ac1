"""The pure parts of benchmarks.interception: both sidecars' bootstraps compile in the proxy with
the shapes the scenario promises, and the scenario pairs the two paths. Nothing is started (the
round in pods is tests/e2e/test_bench_interception.py)."""

from __future__ import annotations

import json
from ipaddress import ip_network
from pathlib import Path

import pytest

from benchmarks import interception, mesh_path, runner, tls_hop
from benchmarks.__main__ import SCENARIOS
from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.config.model import Config, Listener

B_IP = "10.213.0.11"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tls_hop.write_certs(tmp_path_factory.mktemp("certs"))


def _compiled(doc: dict) -> Config:
    return parse_bootstrap(json.dumps(doc), source="bench")


def _listener(config: Config, name: str) -> Listener:
    return next(lst for lst in config.listeners if lst.name == name)


def test_sidecar_a_captures_the_vip_and_sends_both_paths_to_b_over_pq_mtls(certs: dict[str, Path]) -> None:
    config = _compiled(interception.sidecar_a(B_IP, certs))
    outbound = _listener(config, "virtualOutbound")
    assert (outbound.address.host, outbound.address.port) == ("0.0.0.0", interception.OUTBOUND)
    assert outbound.use_original_dst and outbound.original_dst
    (chain,) = outbound.filter_chains
    assert chain.match.destination_port == interception.SERVICE_PORT
    assert chain.match.prefix_ranges == (ip_network(f"{interception.VIP}/32"),)
    assert outbound.default_filter_chain is None  # anything else captured is closed, not proxied
    explicit = _listener(config, "explicit")
    assert (explicit.address.host, explicit.address.port) == ("127.0.0.1", interception.EXPLICIT_PORT)
    assert not explicit.use_original_dst and not explicit.original_dst
    clusters = {c.name: c for c in config.clusters}
    ports = {"hello": interception.SERVICE_PORT, "hello-explicit": interception.EXPLICIT_TLS_PORT}
    for name, port in ports.items():
        (endpoint,) = clusters[name].localities[0].endpoints
        assert (endpoint.address.host, endpoint.address.port) == (B_IP, port)
    doc = interception.sidecar_a(B_IP, certs)
    for cluster in doc["static_resources"]["clusters"]:
        tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        assert tls["tls_params"]["ecdh_curves"] == ["X25519MLKEM768"]
        assert tls["validation_context"]["match_typed_subject_alt_names"][0]["matcher"] == {
            "exact": tls_hop.SERVER_ID
        }


def test_sidecar_b_requires_the_callers_certificate_on_both_listeners(certs: dict[str, Path]) -> None:
    config = _compiled(interception.sidecar_b(certs))
    inbound = _listener(config, "virtualInbound")
    assert (inbound.address.host, inbound.address.port) == ("0.0.0.0", interception.INBOUND)
    assert inbound.original_dst and not inbound.use_original_dst
    (chain,) = inbound.filter_chains
    assert chain.match.destination_port == interception.SERVICE_PORT
    explicit = _listener(config, "explicit")
    assert explicit.address.port == interception.EXPLICIT_TLS_PORT
    for listener in (inbound, explicit):
        assert listener.filter_chains[0].tls is not None
    doc = interception.sidecar_b(certs)
    for listener in doc["static_resources"]["listeners"]:
        typed = listener["filter_chains"][0]["transport_socket"]["typed_config"]
        assert typed["require_client_certificate"] is True
        assert typed["common_tls_context"]["tls_params"]["ecdh_curves"] == ["X25519MLKEM768"]
    (app,) = config.clusters
    (endpoint,) = app.localities[0].endpoints
    assert (endpoint.address.host, endpoint.address.port) == ("127.0.0.1", interception.SERVICE_PORT)


def test_the_scenario_is_in_the_suite_and_pairs_intercepted_with_explicit() -> None:
    assert "interception" in SCENARIOS
    scenario = interception.SCENARIO
    assert [p.target for p in scenario.paths] == ["explicit", "intercepted"]
    assert scenario.start == interception.PODS.start and not scenario.filter_targets
    diffs = {(c.row, c.num.metric) for c in scenario.comparisons if c.kind == "diff"}
    assert ("pair CPU, µs/req (saturating)", "proxy_cpu_us_per_req") in diffs
    assert ("serial p50, ms", "p50_ms") in diffs
    assert {(c.num.path, c.den.path) for c in scenario.comparisons} == {("intercepted", "explicit")}


def test_other_scenarios_keep_the_loopback_start() -> None:
    assert mesh_path.SCENARIO.start is runner.on_loopback
