"""The mesh's allowed callers and ``hybrid_callers`` compile to RBAC (the HTTP filter for an HTTP
service, the network filter for a TCP one), and meshproxy's own compiler reads the result back
into the rules the sidecar will enforce."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from certs import make_ca, make_leaf, write_leaf

from controlplane.mesh import load_mesh, translate
from controlplane.xds import LISTENER
from meshproxy.config.compile_listener import compile_listener
from meshproxy.config.model import HttpConnectionManager, StringMatch
from meshproxy.errors import ConfigError
from meshproxy.rbac.model import AllOf, AnyOf, Authenticated, RbacFilter, Rules, TlsPrincipal
from meshproxy.tls.policy import PQ_GROUPS

MESH = """
mesh: {trust_domain: mesh.local, pq: preferred, hybrid_callers: HYBRID}
sidecars: {cert_dir: "CERTS/{group}"}
services:
  - name: api
    port: 18080
    sidecar: {inbound: 127.0.0.1:15106, app: 127.0.0.1:19001}
    endpoints: [127.0.0.1:15106]
    allow: [web, "spiffe://mesh.local/ns/ops/"]
  - name: db
    protocol: tcp
    port: 15432
    sidecar: {inbound: 127.0.0.1:15107, app: 127.0.0.1:5432}
    endpoints: [127.0.0.1:15107]
    allow: [web, "spiffe://mesh.local/ns/ops/"]
  - name: web
    port: 18090
    sidecar: {}
    allow: []
"""
WEB = "spiffe://mesh.local/ns/default/sa/web"
CALLERS = AnyOf(
    (
        Authenticated(StringMatch("exact", WEB)),
        Authenticated(StringMatch("prefix", "spiffe://mesh.local/ns/ops/")),
    )
)
HYBRID = TlsPrincipal(PQ_GROUPS, frozenset())


def inbound_rbac(tmp_path: Path, hybrid: str, service: str = "api") -> RbacFilter:
    """The RBAC of ``service``'s inbound chain, as meshproxy compiles it: the HTTP filter of
    the connection manager for api (HTTP), the network filter for db (TCP)."""
    for name in ("api", "db"):
        write_leaf(make_leaf(make_ca(), f"spiffe://mesh.local/ns/default/sa/{name}"), tmp_path / name)
    text = textwrap.dedent(MESH).replace("CERTS", str(tmp_path)).replace("HYBRID", hybrid)
    mesh, _ = load_mesh(text)
    problems: list[str] = []
    listener = compile_listener(translate(mesh)[service][LISTENER]["inbound"], "inbound", problems)
    assert problems == [] and listener is not None
    chain = listener.filter_chains[0]
    if service == "db":
        assert chain.rbac is not None
        return chain.rbac
    assert chain.rbac is None and isinstance(chain.filter, HttpConnectionManager)
    [http] = [f.config for f in chain.filter.http_filters if isinstance(f.config, RbacFilter)]
    return http


def test_allowed_callers_are_an_allow_policy(tmp_path: Path) -> None:
    rbac = inbound_rbac(tmp_path, "any")
    assert rbac.rules is not None and rbac.shadow_rules is None
    assert rbac.rules.action == "ALLOW"
    [policy] = rbac.rules.policies
    assert policy.name == "allowed-callers" and policy.principals == (CALLERS,)
    assert rbac.stat_prefix == "rbac"  # under the connection manager's: http.inbound.rbac


def test_a_tcp_service_gets_the_network_filter(tmp_path: Path) -> None:
    rbac = inbound_rbac(tmp_path, "any", "db")
    assert rbac.rules is not None and rbac.rules.policies[0].principals == (CALLERS,)
    assert rbac.stat_prefix == "inbound.rbac"


def test_required_hybrid_callers_and_the_group_into_the_policy(tmp_path: Path) -> None:
    rbac = inbound_rbac(tmp_path, "required")
    assert rbac.rules is not None
    assert rbac.rules.policies[0].principals == (AllOf((CALLERS, HYBRID)),)
    assert rbac.shadow_rules is None


def test_dry_run_hybrid_callers_are_shadow_rules(tmp_path: Path) -> None:
    rbac = inbound_rbac(tmp_path, "dry_run")
    assert rbac.rules is not None and rbac.shadow_rules is not None
    assert rbac.rules.policies[0].principals == (CALLERS,)  # enforced: the callers only
    assert rbac.shadow_rules == Rules("ALLOW", (rbac.shadow_rules.policies[0],))
    assert rbac.shadow_rules.policies[0].principals == (HYBRID,)
    assert rbac.shadow_stat_prefix == "rbac.hybrid_"


def test_an_unknown_hybrid_callers_value_names_its_path(tmp_path: Path) -> None:
    text = textwrap.dedent(MESH).replace("CERTS", str(tmp_path)).replace("HYBRID", "always")
    with pytest.raises(ConfigError) as raised:
        load_mesh(text)
    assert any(p.startswith("mesh: mesh.hybrid_callers:") for p in raised.value.problems), (
        raised.value.problems
    )
