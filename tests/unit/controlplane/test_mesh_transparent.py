"""Transparent sidecars (Istio's virtualOutbound / virtualInbound): the mesh YAML's VIPs, ports,
modes and outbound traffic policy with every mistake named by path, and the resources a
transparent group is served, read back from the translated protos."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from certs import make_ca, make_leaf, write_leaf
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo

from controlplane.mesh import load_mesh, translate
from controlplane.mesh.model import ServicePort, Sidecar
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources, Snapshot
from meshproxy.config.compile_cluster import compile_cluster, compile_load_assignment
from meshproxy.config.compile_listener import compile_listener
from meshproxy.config.compile_route import compile_route_configuration
from meshproxy.errors import ConfigError
from meshproxy.listener.chain_match import select_chain

MESH = """
mesh: {trust_domain: mesh.local, pq: required}
sidecars: {cert_dir: "CERTS/{group}"}
services:
  - name: hello
    vip: [10.96.0.10, "fd00:96::a"]
    ports: [{port: 8080, protocol: http}, {port: 9090, protocol: grpc}, 7000]
    versions:
      v1: {endpoints: ["10.1.0.2:8080"]}
      v2: {endpoints: ["10.1.0.3:8080"]}
    routes: [{split: {v1: 90, v2: 10}}]
    sidecar: {mode: transparent}
    allow: [web]
  - name: db
    vip: fd00::5
    port: 5432
    protocol: tcp
    endpoints: ["10.1.0.9:5432"]
    sidecar: {mode: transparent, mtls: PERMISSIVE}
    allow: [web]
  - name: web
    vip: 10.96.0.20
    port: 8000
    endpoints: ["10.1.0.4:8000"]
    sidecar: {mode: transparent, outbound_traffic_policy: REGISTRY_ONLY}
    allow: []
  - name: legacy
    port: 18000
    endpoints: ["10.1.0.7:18000"]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_mesh(textwrap.dedent(text))
    return info.value.problems


def translated(tmp_path: Path, text: str = MESH) -> dict[str, Resources]:
    ca = make_ca()
    for group in ("hello", "db", "web"):
        write_leaf(make_leaf(ca, f"spiffe://mesh.local/ns/default/sa/{group}"), tmp_path / group)
    mesh, _ = load_mesh(textwrap.dedent(text).replace("CERTS", str(tmp_path)))
    return translate(mesh)


@pytest.fixture
def groups(tmp_path: Path) -> dict[str, Resources]:
    return translated(tmp_path)


def chain_filter(chain: object, cls: type) -> object:
    message = cls()
    assert chain.filters[-1].typed_config.Unpack(message)  # type: ignore[attr-defined]
    return message


# ----------------------------------------------------------------------------- the YAML


def test_vips_ports_modes_and_the_policy_are_read() -> None:
    mesh, _ = load_mesh(textwrap.dedent(MESH))
    hello, db, web, legacy = mesh.services
    assert hello.vips == ("10.96.0.10", "fd00:96::a") and hello.port == 8080 and hello.protocol == "http"
    assert hello.ports == (ServicePort(8080, "http"), ServicePort(9090, "grpc"), ServicePort(7000, None))
    assert db.vips == ("fd00::5",) and db.ports == (ServicePort(5432, "tcp"),)
    assert web.ports == (ServicePort(8000, None),) and web.protocol == "http"  # explicit mode: as before
    assert hello.sidecar == Sidecar("hello", mode="transparent")
    assert db.sidecar is not None and db.sidecar.mtls == "PERMISSIVE"
    assert web.sidecar is not None and web.sidecar.outbound_traffic_policy == "REGISTRY_ONLY"
    assert legacy.vips == () and legacy.sidecar is None
    assert mesh.outbound_traffic_policy == "ALLOW_ANY"
    assert mesh.sidecars.virtual_outbound == ("::", 15001)  # dual-stack by default
    assert mesh.sidecars.virtual_inbound == ("::", 15006)


def test_every_transparent_mistake_is_named_by_path() -> None:
    found = problems("""
        mesh: {trust_domain: mesh.local, outbound_traffic_policy: DENY}
        sidecars: {virtual_outbound: "localhost:15001"}
        services:
          - {name: a, vip: 10.96.0.1, port: 80, ports: [81]}
          - {name: b, vip: 10.96.0.1, ports: [82, 82, {port: 83, protocol: udp}]}
          - name: c
            vip: "not-an-ip"
            port: 84
            sidecar: {mode: transparent, inbound: "127.0.0.1:1", app: "127.0.0.1:2"}
          - {name: d, vip: 0.0.0.0, port: 85, sidecar: {mtls: PERMISSIVE, outbound_traffic_policy: ALLOW_ANY}}
          - {name: e, ports: [], sidecar: {mode: sideways}}
          - {name: f}
          - {name: g, vip: [10.96.0.7, 10.96.0.8], port: 86}
          - {name: h, vip: [], port: 87}
          - {name: i, vip: ["fd00::7", 10.96.0.7], port: 88}
    """)
    assert found == [
        "mesh: mesh.outbound_traffic_policy: 'DENY' is not one of: ALLOW_ANY, REGISTRY_ONLY",
        "mesh: sidecars.virtual_outbound: 'localhost' is not an IP address (a listener binds an IP address)",
        "mesh: services[0]: give either 'port' (and 'protocol') or 'ports', not both",
        "mesh: services[1].ports[2].protocol: 'udp' is not one of: http, grpc, tcp",
        "mesh: services[1].ports: port 82 appears more than once",
        "mesh: services[2].sidecar: a transparent sidecar takes neither 'inbound' nor 'app': "
        "its traffic is captured",
        "mesh: services[2].vip: 'not-an-ip' is not an IPv4 or IPv6 address",
        "mesh: services[3].sidecar.mtls: applies to 'mode: transparent' sidecars only",
        "mesh: services[3].sidecar.outbound_traffic_policy: applies to 'mode: transparent' sidecars only",
        "mesh: services[3].vip: 0.0.0.0 cannot be a virtual IP (it is unspecified, multicast or loopback)",
        "mesh: services[4].ports: must name at least one port",
        "mesh: services[4].sidecar.mode: 'sideways' is not one of: explicit, transparent",
        "mesh: services[5]: 'port' (or 'ports') is required",
        "mesh: services[6].vip: a list of VIPs holds one IPv4 and/or one IPv6 address",
        "mesh: services[7].vip: a list of VIPs holds one IPv4 and/or one IPv6 address",
        "mesh: services: vip '10.96.0.1' appears more than once",
        "mesh: services: vip '10.96.0.7' appears more than once",
    ]


def test_a_vip_is_compared_in_its_canonical_form() -> None:
    found = problems("""
        mesh: {trust_domain: mesh.local}
        services:
          - {name: a, vip: "fd00::a", port: 80}
          - {name: b, vip: "fd00:0::0a", port: 81}
    """)
    assert found == ["mesh: services: vip 'fd00::a' appears more than once"]


# ----------------------------------------------------------------------------- virtualOutbound


def test_a_transparent_group_gets_the_virtual_listeners_and_no_explicit_ones(
    groups: dict[str, Resources],
) -> None:
    web = groups["web"]
    assert sorted(web[LISTENER]) == ["virtualOutbound"]  # allow: [] -> nobody calls web
    assert sorted(web[CLUSTER]) == [
        "BlackHoleCluster",
        "db",
        "hello|v1",
        "hello|v2",
        "outbound|7000|v1|hello",
        "outbound|7000|v2|hello",
        "outbound|9090|v1|hello",
        "outbound|9090|v2|hello",
    ]
    assert sorted(web[ROUTE]) == ["hello", "hello:7000", "hello:9090"]
    assert sorted(groups["hello"][LISTENER]) == ["virtualInbound", "virtualOutbound"]
    for name, resources in groups.items():
        assert Snapshot("1", resources).check() == [], name


def test_virtual_outbound_matches_each_vip_port_and_recovers_the_original_destination(
    groups: dict[str, Resources],
) -> None:
    listener = groups["web"][LISTENER]["virtualOutbound"]
    assert listener.use_original_dst.value and listener.traffic_direction == base_pb2.OUTBOUND
    assert listener.address.socket_address.address == "::"
    assert listener.address.socket_address.ipv4_compat
    assert listener.address.socket_address.port_value == 15001
    assert [f.name for f in listener.listener_filters] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
        "envoy.filters.listener.http_inspector",
    ]
    matches = [
        (
            c.name,
            [(r.address_prefix, r.prefix_len.value) for r in c.filter_chain_match.prefix_ranges],
            c.filter_chain_match.destination_port.value,
            c.filter_chain_match.transport_protocol,
            list(c.filter_chain_match.application_protocols),
            c.filters[-1].name.rsplit(".", 1)[1],
        )
        for c in listener.filter_chains
    ]
    hello = [("10.96.0.10", 32), ("fd00:96::a", 128)]  # a dual-stack service: both VIPs
    assert matches == [
        ("outbound|8080||hello", hello, 8080, "", [], "http_connection_manager"),
        ("outbound|9090||hello", hello, 9090, "", [], "http_connection_manager"),
        ("outbound|7000||hello", hello, 7000, "raw_buffer", ["http/1.1", "h2c"], "http_connection_manager"),
        ("outbound|7000||hello|tcp", hello, 7000, "", [], "tcp_proxy"),
        ("outbound|5432||db", [("fd00::5", 128)], 5432, "", [], "tcp_proxy"),
    ]


def test_vip_chains_route_to_the_services_mtls_clusters(groups: dict[str, Resources]) -> None:
    web = groups["web"]
    chains = {c.name: c for c in web[LISTENER]["virtualOutbound"].filter_chains}
    manager = chain_filter(chains["outbound|9090||hello"], hcm.HttpConnectionManager)
    assert manager.rds.route_config_name == "hello:9090" and manager.rds.config_source.HasField("ads")
    assert manager.normalize_path.value and manager.request_headers_timeout.seconds == 10
    split = web[ROUTE]["hello:9090"].virtual_hosts[0].routes[0].route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in split] == [
        ("outbound|9090|v1|hello", 90),
        ("outbound|9090|v2|hello", 10),
    ]
    first = web[ROUTE]["hello"].virtual_hosts[0].routes[0].route.weighted_clusters.clusters
    assert [c.name for c in first] == ["hello|v1", "hello|v2"]  # the first port: the usual clusters
    tcp = chain_filter(chains["outbound|5432||db"], tcp_proxy_pb2.TcpProxy)
    assert tcp.cluster == "db"
    # Opaque TCP rides PQ mTLS to db's sidecar, like HTTP does to hello's.
    for name in ("db", "hello|v1", "outbound|9090|v1|hello", "outbound|7000|v2|hello"):
        tls = tls_pb2.UpstreamTlsContext()
        assert web[CLUSTER][name].transport_socket.typed_config.Unpack(tls), name
        assert list(tls.common_tls_context.tls_params.ecdh_curves) == ["X25519MLKEM768"]
    sans = tls.common_tls_context.validation_context.match_typed_subject_alt_names
    assert [m.matcher.exact for m in sans] == ["spiffe://mesh.local/ns/default/sa/hello"]
    # A further port reaches the same instances at that port.
    cla = web[ENDPOINT]["outbound|9090|v2|hello"]
    address = cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("10.1.0.3", 9090)
    assert (
        web[ENDPOINT]["hello|v2"].endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value
        == 8080
    )


def test_upstream_protocols_follow_the_port(groups: dict[str, Resources]) -> None:
    clusters = groups["web"][CLUSTER]

    def options(name: str) -> hpo.HttpProtocolOptions | None:
        typed = clusters[name].typed_extension_protocol_options
        key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        if key not in typed:
            return None
        out = hpo.HttpProtocolOptions()
        assert typed[key].Unpack(out)
        return out

    assert options("hello|v1") is None  # http: HTTP/1.1
    grpc = options("outbound|9090|v1|hello")
    assert grpc is not None and grpc.explicit_http_config.HasField("http2_protocol_options")
    detected = options("outbound|7000|v1|hello")
    assert detected is not None and detected.HasField("use_downstream_protocol_config")


def test_the_outbound_traffic_policy_picks_the_fallback_and_a_group_overrides_it(
    groups: dict[str, Resources],
) -> None:
    passthrough = groups["hello"][CLUSTER]["PassthroughCluster"]
    assert passthrough.type == cluster_pb2.Cluster.ORIGINAL_DST
    assert passthrough.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
    assert "BlackHoleCluster" not in groups["hello"][CLUSTER]
    default = chain_filter(
        groups["hello"][LISTENER]["virtualOutbound"].default_filter_chain, tcp_proxy_pb2.TcpProxy
    )
    assert default.cluster == "PassthroughCluster"
    blackhole = groups["web"][CLUSTER]["BlackHoleCluster"]  # web's sidecar says REGISTRY_ONLY
    assert blackhole.type == cluster_pb2.Cluster.STATIC and not blackhole.load_assignment.endpoints
    default = chain_filter(
        groups["web"][LISTENER]["virtualOutbound"].default_filter_chain, tcp_proxy_pb2.TcpProxy
    )
    assert default.cluster == "BlackHoleCluster"
    assert "PassthroughCluster" not in groups["web"][CLUSTER]


def test_a_mesh_wide_registry_only_applies_to_every_transparent_group_that_does_not_override_it() -> None:
    text = textwrap.dedent(MESH)
    text = text.replace("outbound_traffic_policy: REGISTRY_ONLY}", "outbound_traffic_policy: ALLOW_ANY}")
    text = text.replace("pq: required}", "pq: required, outbound_traffic_policy: REGISTRY_ONLY}")
    mesh, _ = load_mesh(text)
    assert mesh.outbound_traffic_policy == "REGISTRY_ONLY"
    groups = translate(mesh)
    assert "BlackHoleCluster" in groups["hello"][CLUSTER] and "BlackHoleCluster" in groups["db"][CLUSTER]
    assert "PassthroughCluster" in groups["web"][CLUSTER]  # web's sidecar now says ALLOW_ANY


# ----------------------------------------------------------------------------- virtualInbound


def test_virtual_inbound_requires_mtls_per_application_port(groups: dict[str, Resources]) -> None:
    hello = groups["hello"]
    listener = hello[LISTENER]["virtualInbound"]
    assert not listener.HasField("use_original_dst") and listener.traffic_direction == base_pb2.INBOUND
    assert listener.address.socket_address.port_value == 15006
    assert [f.name for f in listener.listener_filters] == [
        "envoy.filters.listener.original_dst",
        "envoy.filters.listener.tls_inspector",
    ]
    assert not listener.HasField("default_filter_chain")  # STRICT: plaintext matches nothing
    got = [
        (
            c.filter_chain_match.destination_port.value,
            c.filter_chain_match.transport_protocol,
            [f.name for f in c.filters],
        )
        for c in listener.filter_chains
    ]
    # The allowed callers (test_mesh_authz.py): the HTTP filter of the HCM, or the network one.
    assert got == [
        (8080, "tls", ["envoy.filters.network.http_connection_manager"]),
        (9090, "tls", ["envoy.filters.network.http_connection_manager"]),
        (7000, "tls", ["envoy.filters.network.rbac", "istio.stats", "envoy.filters.network.tcp_proxy"]),
    ]
    for chain in listener.filter_chains:
        tls = tls_pb2.DownstreamTlsContext()
        assert chain.transport_socket.typed_config.Unpack(tls)
        assert tls.require_client_certificate.value
        assert list(tls.common_tls_context.tls_params.ecdh_curves) == ["X25519MLKEM768"]
        sans = tls.common_tls_context.validation_context.match_typed_subject_alt_names
        assert [m.matcher.prefix for m in sans] == ["spiffe://mesh.local/"]
    manager = chain_filter(listener.filter_chains[0], hcm.HttpConnectionManager)
    assert manager.route_config.virtual_hosts[0].routes[0].route.cluster == "inbound|8080||"
    assert manager.http_filters[0].name == "envoy.filters.http.rbac"
    for port in (8080, 9090, 7000):
        cluster = hello[CLUSTER][f"inbound|{port}||"]
        address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
        assert (cluster.type, address.address, address.port_value) == (
            cluster_pb2.Cluster.STATIC,
            "127.0.0.1",
            port,
        )


def test_permissive_inbound_also_takes_plaintext(groups: dict[str, Resources]) -> None:
    listener = groups["db"][LISTENER]["virtualInbound"]
    got = [
        (
            c.filter_chain_match.destination_port.value,
            c.filter_chain_match.transport_protocol,
            c.HasField("transport_socket"),
        )
        for c in listener.filter_chains
    ]
    assert got == [(5432, "tls", True), (5432, "raw_buffer", False)]
    assert chain_filter(listener.filter_chains[1], tcp_proxy_pb2.TcpProxy).cluster == "inbound|5432||"


# ----------------------------------------------------------------------------- meshproxy today


def test_what_meshproxy_compiles_today_and_what_waits_for_the_original_dst_work(
    groups: dict[str, Resources],
) -> None:
    """Routes, EDS clusters, endpoints, the inbound clusters and the whole virtualInbound
    compile in meshproxy now; the fields only virtualOutbound and PassthroughCluster use
    (prefix_ranges, use_original_dst, ORIGINAL_DST) are the proxy side being built alongside."""
    hello = groups["hello"]
    problems: list[str] = []
    assert compile_listener(hello[LISTENER]["virtualInbound"], "virtualInbound", problems) is not None
    for name, route in hello[ROUTE].items():
        compile_route_configuration(route, f"route {name}", problems)
    for name, cluster in hello[CLUSTER].items():
        if name != "PassthroughCluster":
            compile_cluster(cluster, f"cluster {name}", problems)
    for name, cla in hello[ENDPOINT].items():
        compile_load_assignment(cla, f"endpoints {name}", problems)
    assert problems == []


def test_the_virtual_listeners_are_dual_stack_and_match_vips_of_both_families(
    groups: dict[str, Resources],
) -> None:
    """meshproxy compiles the generated ``[::]`` listeners with ``ipv4_compat``; an IPv4
    connection on that socket (``::ffff:…``) still takes its IPv4 VIP's chain."""
    problems: list[str] = []
    outbound = compile_listener(groups["web"][LISTENER]["virtualOutbound"], "virtualOutbound", problems)
    inbound = compile_listener(groups["hello"][LISTENER]["virtualInbound"], "virtualInbound", problems)
    assert problems == [] and outbound is not None and inbound is not None
    assert outbound.ipv4_compat and inbound.ipv4_compat
    assert (outbound.address.host, inbound.address.host) == ("::", "::")
    for destination, expected in [
        (("::ffff:10.96.0.10", 8080), "outbound|8080||hello"),
        (("10.96.0.10", 8080), "outbound|8080||hello"),
        (("fd00:96::a", 8080), "outbound|8080||hello"),
        (("fd00::5", 5432), "outbound|5432||db"),
        (("::ffff:10.96.0.11", 8080), "BlackHoleCluster"),
    ]:
        found = select_chain(outbound, destination)
        assert found is not None and found.name == expected, destination


def test_an_ipv4_capture_address_stays_ipv4_only(tmp_path: Path) -> None:
    text = MESH.replace("sidecars: {", 'sidecars: {virtual_outbound: "0.0.0.0:15001", ')
    bound = translated(tmp_path, text)["web"][LISTENER]["virtualOutbound"].address.socket_address
    assert (bound.address, bound.ipv4_compat) == ("0.0.0.0", False)
