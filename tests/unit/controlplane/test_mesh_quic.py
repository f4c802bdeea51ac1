"""``transport: quic`` in the mesh config: an HTTP/3 inbound beside the TCP one, callers that try
QUIC first with HTTP/2 over TCP as fallback, and meshproxy's compiler accepting all of it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from certs import make_ca, make_leaf, write_leaf
from envoy.extensions.transport_sockets.quic.v3 import quic_transport_pb2
from unit.controlplane.test_mesh_translate import compile_group, names

from controlplane.mesh import load_mesh, translate
from controlplane.xds import CLUSTER, LISTENER, Resources
from meshproxy.config.compile_cluster import compile_cluster
from meshproxy.config.compile_listener import compile_listener
from meshproxy.errors import ConfigError

MESH = """
mesh: {trust_domain: mesh.local, pq: required}
sidecars: {cert_dir: "CERTS/{group}"}
services:
  - name: greeter
    port: 18080
    transport: quic
    endpoints: [127.0.0.1:15106]
    sidecar: {inbound: 127.0.0.1:15106, app: 127.0.0.1:19001}
    allow: [client]
  - name: client
    port: 18090
    sidecar: {}
    allow: []
"""


@pytest.fixture
def groups(tmp_path: Path) -> dict[str, Resources]:
    ca = make_ca()
    for group, identity in (("greeter", "greeter"), ("client", "client")):
        write_leaf(make_leaf(ca, f"spiffe://mesh.local/ns/default/sa/{identity}"), tmp_path / group)
    mesh, _ = load_mesh(textwrap.dedent(MESH).replace("CERTS", str(tmp_path)))
    return translate(mesh)


def test_a_quic_service_gets_an_http3_inbound_beside_the_tcp_one(groups: dict[str, Resources]) -> None:
    assert names(groups["greeter"])["Listener"] == ["inbound", "inbound-quic"]
    problems: list[str] = []
    tcp = compile_listener(groups["greeter"][LISTENER]["inbound"], "inbound", problems)  # type: ignore[arg-type]
    quic = compile_listener(groups["greeter"][LISTENER]["inbound-quic"], "inbound-quic", problems)  # type: ignore[arg-type]
    assert not problems and tcp is not None and quic is not None
    assert (quic.address.host, quic.address.port, quic.address.protocol) == ("127.0.0.1", 15106, "UDP")
    assert quic.quic is not None and quic.filter_chains[0].filter.codec_type == "HTTP3"  # type: ignore[union-attr]
    assert quic.filter_chains[0].tls == tcp.filter_chains[0].tls  # the same PQ mTLS and allowed callers


def test_callers_try_quic_first_with_tcp_as_fallback(groups: dict[str, Resources]) -> None:
    message = (
        groups["client"][CLUSTER]["outbound|greeter|"]
        if "outbound|greeter|" in groups["client"][CLUSTER]
        else next(iter(groups["client"][CLUSTER].values()))
    )
    assert message.transport_socket.typed_config.Is(quic_transport_pb2.QuicUpstreamTransport.DESCRIPTOR)  # type: ignore[attr-defined]
    problems: list[str] = []
    cluster = compile_cluster(message, "c", problems)  # type: ignore[arg-type]
    assert not problems and cluster is not None
    assert cluster.http3 is not None and cluster.http3_fallback
    assert cluster.tls is not None
    assert [(m.san_type, m.source) for m in cluster.tls.match_sans] == [
        ("URI", "exact spiffe://mesh.local/ns/default/sa/greeter")
    ]
    assert cluster.tls.pq_policy.mode == "required"


def test_every_resource_of_a_quic_mesh_compiles_in_meshproxy(groups: dict[str, Resources]) -> None:
    for group in ("greeter", "client"):
        assert compile_group(groups[group]) == []


def test_transport_quic_is_refused_for_a_tcp_service() -> None:
    text = MESH.replace(
        "    port: 18080\n    transport: quic\n", "    port: 18080\n    protocol: tcp\n    transport: quic\n"
    )
    with pytest.raises(ConfigError, match=r"services\[0\]\.transport: quic carries HTTP and gRPC"):
        load_mesh(textwrap.dedent(text).replace("CERTS", "/tmp"))
    with pytest.raises(ConfigError, match=r"services\[0\]\.transport"):
        load_mesh(
            textwrap.dedent(MESH.replace("transport: quic", "transport: sctp")).replace("CERTS", "/tmp")
        )
