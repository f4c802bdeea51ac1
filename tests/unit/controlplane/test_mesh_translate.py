"""The mesh translated into Envoy resources: what each group gets, and that meshproxy's own
compiler accepts every resource a sidecar is sent (with real certificate files where it reads them)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from certs import make_ca, make_leaf, write_leaf
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from controlplane.mesh import DEFAULT_GROUP, default_mesh_text, load_mesh, translate
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources, Snapshot
from meshproxy.config.compile_cluster import compile_cluster, compile_load_assignment
from meshproxy.config.compile_listener import compile_listener
from meshproxy.config.compile_route import compile_route_configuration

MESH = """
mesh: {trust_domain: mesh.local, pq: required}
sidecars: {cert_dir: "CERTS/{group}"}
services:
  - name: greeter
    port: 18080
    versions:
      v1:
        endpoints:
          - {address: 127.0.0.1:15106, locality: {region: r, zone: a}}
          - {address: 127.0.0.1:15107, locality: {zone: b}}
        sidecar: {inbound: 127.0.0.1:15106, app: 127.0.0.1:19001}
      v2: {endpoints: [127.0.0.1:19002]}
    routes:
      - match: {path: /pinned, headers: {x-canary: "1"}}
        to: v2
      - split: {v1: 90, v2: 10}
        retries: {attempts: 2, on: [5xx, reset], per_try_timeout: 1s}
        timeout: 5s
    policy:
      lb: least_request
      circuit_breakers: {max_requests: 100}
      outlier_detection: {consecutive_5xx: 5, interval: 10s}
    allow: [client]
  - name: client
    port: 18090
    sidecar: {}
    allow: []
  - name: db
    protocol: tcp
    port: 15432
    endpoints: [127.0.0.1:5432]
"""


@pytest.fixture
def groups(tmp_path: Path) -> dict[str, Resources]:
    ca = make_ca()
    for group, identity in (("greeter-v1", "greeter"), ("client", "client")):
        write_leaf(make_leaf(ca, f"spiffe://mesh.local/ns/default/sa/{identity}"), tmp_path / group)
    mesh, _ = load_mesh(textwrap.dedent(MESH).replace("CERTS", str(tmp_path)))
    return translate(mesh)


def compile_group(resources: Resources) -> list[str]:
    problems: list[str] = []
    for name, listener in resources[LISTENER].items():
        if not listener.HasField("api_listener"):
            compile_listener(listener, f"listener {name}", problems)
    for name, route in resources[ROUTE].items():
        compile_route_configuration(route, f"route {name}", problems)
    for name, cluster in resources[CLUSTER].items():
        compile_cluster(cluster, f"cluster {name}", problems)
    for name, cla in resources[ENDPOINT].items():
        compile_load_assignment(cla, f"endpoints {name}", problems)
    return problems


def names(resources: Resources) -> dict[str, list[str]]:
    return {t.rsplit(".", 1)[1]: sorted(r) for t, r in resources.items()}


def test_each_group_gets_its_listeners_routes_clusters_and_endpoints(groups: dict[str, Resources]) -> None:
    assert sorted(groups) == ["client", DEFAULT_GROUP, "greeter-v1"]
    assert names(groups["greeter-v1"]) == {
        "Listener": ["inbound", "outbound|db"],
        "RouteConfiguration": [],
        "Cluster": ["db", "local_app"],
        "ClusterLoadAssignment": ["db"],
    }
    assert names(groups["client"]) == {
        "Listener": ["outbound|db", "outbound|greeter"],
        "RouteConfiguration": ["greeter"],
        "Cluster": ["db", "greeter|v1", "greeter|v2"],
        "ClusterLoadAssignment": ["db", "greeter|v1", "greeter|v2"],
    }
    assert names(groups[DEFAULT_GROUP])["Listener"] == ["greeter", "greeter:18080"]
    for name, resources in groups.items():
        assert Snapshot("1", resources).check() == [], name


def test_every_sidecar_resource_compiles_in_meshproxy(groups: dict[str, Resources]) -> None:
    for group in ("client", "greeter-v1", DEFAULT_GROUP):
        assert compile_group(groups[group]) == [], group


def test_the_embedded_default_compiles_once_its_certificates_exist(tmp_path: Path) -> None:
    ca = make_ca()
    text = default_mesh_text().replace("/tmp/meshproxy-demo/certs", str(tmp_path))
    for group, identity in (("web", "web"), ("hello-v1", "hello"), ("hello-v2", "hello")):
        write_leaf(make_leaf(ca, f"spiffe://mesh.local/ns/demo/sa/{identity}"), tmp_path / group)
    mesh, _ = load_mesh(text)
    for group, resources in translate(mesh).items():
        assert compile_group(resources) == [], group


def test_callers_reach_a_sidecar_over_pq_mtls_checking_its_identity(groups: dict[str, Resources]) -> None:
    clusters = groups["client"][CLUSTER]
    tls = tls_pb2.UpstreamTlsContext()
    assert clusters["greeter|v1"].transport_socket.typed_config.Unpack(tls)
    common = tls.common_tls_context
    assert list(common.tls_params.ecdh_curves) == ["X25519MLKEM768"]
    assert common.tls_certificates[0].certificate_chain.filename.endswith("/client/cert.pem")
    assert [m.matcher.exact for m in common.validation_context.match_typed_subject_alt_names] == [
        "spiffe://mesh.local/ns/default/sa/greeter"
    ]
    assert not clusters["greeter|v2"].HasField("transport_socket")  # v2 has no sidecar
    cluster = clusters["greeter|v1"]
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.circuit_breakers.thresholds[0].max_requests.value == 100
    assert cluster.outlier_detection.interval.seconds == 10


def test_the_inbound_listener_admits_only_the_allowed_callers(groups: dict[str, Resources]) -> None:
    """TLS authenticates the trust domain; the HTTP RBAC filter before the router admits the callers."""
    inbound = groups["greeter-v1"][LISTENER]["inbound"]
    assert inbound.address.socket_address.port_value == 15106
    tls = tls_pb2.DownstreamTlsContext()
    assert inbound.filter_chains[0].transport_socket.typed_config.Unpack(tls)
    assert tls.require_client_certificate.value
    sans = tls.common_tls_context.validation_context.match_typed_subject_alt_names
    assert [m.matcher.prefix for m in sans] == ["spiffe://mesh.local/"]
    manager = hcm.HttpConnectionManager()
    assert inbound.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.rbac",
        "istio.stats",
        "envoy.filters.http.router",
    ]
    rbac = http_rbac.RBAC()
    assert manager.http_filters[0].typed_config.Unpack(rbac)
    callers = rbac.rules.policies["allowed-callers"].principals[0].or_ids.ids
    assert [c.authenticated.principal_name.exact for c in callers] == [
        "spiffe://mesh.local/ns/default/sa/client"
    ]
    local = groups["greeter-v1"][CLUSTER]["local_app"]
    assert (
        local.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value == 19001
    )


def test_routes_carry_the_split_retries_timeout_and_pinned_matches(groups: dict[str, Resources]) -> None:
    pinned, split = groups["client"][ROUTE]["greeter"].virtual_hosts[0].routes
    assert pinned.match.path == "/pinned" and pinned.route.cluster == "greeter|v2"
    assert pinned.match.headers[0].string_match.exact == "1"
    weighted = [(c.name, c.weight.value) for c in split.route.weighted_clusters.clusters]
    assert weighted == [("greeter|v1", 90), ("greeter|v2", 10)]
    assert (
        split.route.retry_policy.retry_on == "5xx,reset" and split.route.retry_policy.num_retries.value == 2
    )
    assert split.route.timeout.seconds == 5


def test_endpoints_are_grouped_by_locality_with_a_weight_grpc_keeps(groups: dict[str, Resources]) -> None:
    cla = groups["client"][ENDPOINT]["greeter|v1"]
    assert [(e.locality.region, e.locality.zone, e.load_balancing_weight.value) for e in cla.endpoints] == [
        ("r", "a", 1),
        ("", "b", 1),
    ]


def test_proxyless_clients_get_api_listeners_with_rds_over_ads(groups: dict[str, Resources]) -> None:
    default = groups[DEFAULT_GROUP]
    manager = hcm.HttpConnectionManager()
    assert default[LISTENER]["greeter:18080"].api_listener.api_listener.Unpack(manager)
    assert manager.rds.route_config_name == "greeter" and manager.rds.config_source.HasField("ads")
    assert manager.http_filters[-1].name == "envoy.filters.http.router"
    assert not default[CLUSTER]["greeter|v1"].HasField("transport_socket")
    assert "db" not in default[LISTENER]  # TCP: nothing a gRPC client can use


def test_sidecar_connection_managers_normalise_paths_and_bound_request_heads(
    groups: dict[str, Resources],
) -> None:
    """Istio's default path normalisation (BASE) and a 10 s request_headers_timeout on every
    sidecar HCM, as meshproxy compiles them; the proxyless api_listeners get neither."""
    seen = 0
    for group in ("greeter-v1", "client"):
        for name, listener in groups[group][LISTENER].items():
            compiled = compile_listener(listener, name, [])
            assert compiled is not None
            for chain in compiled.filter_chains:
                manager = chain.filter
                if not hasattr(manager, "path"):
                    continue  # tcp_proxy
                assert (manager.path.normalize, manager.path.merge_slashes) == (True, False), name
                assert manager.path.escaped_slashes == "KEEP_UNCHANGED"
                assert manager.request_headers_timeout == 10.0
                seen += 1
    assert seen == 2  # greeter-v1's inbound and client's outbound|greeter (db is tcp)
    for listener in groups[DEFAULT_GROUP][LISTENER].values():
        manager = hcm.HttpConnectionManager()
        listener.api_listener.api_listener.Unpack(manager)
        assert not manager.HasField("normalize_path") and not manager.HasField("request_headers_timeout")
