"""The mesh config's ``sidecars.istio_metrics``: every sidecar listener gets Istio's istio.stats
filters (http before the router, network before a tcp_proxy), which meshproxy compiles; the
explicit sidecar's listeners say their direction (the metrics' ``reporter``)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from certs import make_ca, make_leaf, write_leaf
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

from controlplane.mesh import load_mesh, translate
from controlplane.xds import LISTENER
from meshproxy.config.compile_listener import compile_listener
from meshproxy.config.model import HttpConnectionManager, IstioStats, TcpProxy
from meshproxy.errors import ConfigError

MESH = """
mesh: {trust_domain: mesh.local, pq: required}
sidecars: {cert_dir: "CERTS/{group}"SWITCH}
services:
  - name: greeter
    port: 18080
    endpoints: [127.0.0.1:15106]
    sidecar: {inbound: 127.0.0.1:15106, app: 127.0.0.1:19001}
    allow: [client]
  - name: client
    port: 18090
    sidecar: {}
    allow: []
  - name: db
    protocol: tcp
    port: 15432
    endpoints: [127.0.0.1:5432]
    allow: [client]
"""


def _listeners(tmp_path: Path, switch: str = "") -> dict[str, dict[str, object]]:
    ca = make_ca()
    for group in ("greeter", "client"):
        write_leaf(make_leaf(ca, f"spiffe://mesh.local/ns/default/sa/{group}"), tmp_path / group)
    text = textwrap.dedent(MESH).replace("CERTS", str(tmp_path)).replace("SWITCH", switch)
    mesh, _ = load_mesh(text)
    groups = translate(mesh)
    return {group: dict(groups[group][LISTENER]) for group in ("greeter", "client")}


def test_sidecar_listeners_carry_istio_stats_and_meshproxy_compiles_them(tmp_path: Path) -> None:
    listeners = _listeners(tmp_path)
    inbound = listeners["greeter"]["inbound"]
    assert inbound.traffic_direction == base_pb2.INBOUND  # type: ignore[attr-defined]
    manager = hcm.HttpConnectionManager()
    inbound.filter_chains[0].filters[0].typed_config.Unpack(manager)  # type: ignore[attr-defined]
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.rbac",
        "istio.stats",
        "envoy.filters.http.router",
    ]
    for group_listeners in listeners.values():
        for name, message in group_listeners.items():
            problems: list[str] = []
            compiled = compile_listener(message, name, problems)  # type: ignore[arg-type]
            assert problems == [] and compiled is not None
            (chain,) = compiled.filter_chains
            terminal = chain.filter
            if isinstance(terminal, HttpConnectionManager):
                assert terminal.istio_stats == IstioStats(), name
            else:
                assert isinstance(terminal, TcpProxy) and chain.istio_stats == IstioStats(), name
    assert listeners["client"]["outbound|db"].traffic_direction == base_pb2.OUTBOUND  # type: ignore[attr-defined]


def test_istio_metrics_off_leaves_the_filters_out(tmp_path: Path) -> None:
    for group_listeners in _listeners(tmp_path, ", istio_metrics: false").values():
        for name, message in group_listeners.items():
            compiled = compile_listener(message, name, [])  # type: ignore[arg-type]
            assert compiled is not None
            (chain,) = compiled.filter_chains
            assert chain.istio_stats is None
            assert getattr(chain.filter, "istio_stats", None) is None


def test_istio_metrics_must_be_a_boolean() -> None:
    text = "mesh: {trust_domain: t}\nsidecars: {istio_metrics: yes please}\nservices: []\n"
    with pytest.raises(ConfigError, match=r"sidecars\.istio_metrics: must be true or false, not str"):
        load_mesh(text)
