"""Issue 13's "done means": a transparent mesh in pods, real processes, nothing mocked.

One mesh for the module (``controlplane.demo.pods_mesh``): the controlplane in its pod (TLS
15012), pod ``a`` running ``web``'s sidecar, pods ``b``/``c`` running ``hello`` v1/v2 (HTTP echo
on 8080, gRPC on 9090, TCP echo on 7000) behind theirs, and pod ``outside`` with no sidecar. Every
client is unmodified (curl, a grpcio client, a raw socket) and calls ``hello`` by the name its
pod's hosts file gives the VIP; ``meshproxy iptables`` sends the connection to the sidecar.

The tests run in file order on that one mesh, and two depend on it: the first HTTP call is the
first connection web's sidecar makes to hello v1, so its handshake is on the wire while the
capture runs; the last test terminates pod ``c``. Evidence of X25519MLKEM768: hello's sidecar
counts its inbound handshakes by group (``listener_ssl_handshakes_by_group_total``), web's
sidecar its upstream ones (``cluster_ssl_handshakes_by_group_total`` of ``hello|v1``), and the
ClientHello web's sidecar sent is seen on its pod's veth (``wire.py``), with hello's
ServerHello choosing the group.

``meshproxy iptables --cleanup`` restoring ``iptables-save`` exactly, and ``--dry-run`` matching
what is installed, are tests/e2e/test_iptables_netns.py's (not repeated here).
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tls_hello import X25519MLKEM768, Hello

from controlplane.demo.pods import COMMAND_TIMEOUT, Pods
from controlplane.demo.pods_mesh import (
    HELLO_VIP6,
    OUTSIDE_PORT,
    WORKLOAD,
    PodMesh,
    Workload,
    eventually,
    pod_mesh,
)
from controlplane.demo.workload import GRPC_PORT, HTTP_PORT, TCP_PORT

from .wire import capture, hellos

PQ = "X25519MLKEM768"
LOAD_CONNECTIONS = 4
WAIT = 30.0


@pytest.fixture(scope="module")
def mesh(module_pods: Pods) -> Iterator[PodMesh]:
    del module_pods  # the directory's root and tool checks; the mesh makes its own pods
    with pod_mesh() as built:
        yield built
    assert not built.pods.leftovers()


def handshakes(workload: Workload) -> float:
    return workload.stat("listener_ssl_handshakes_by_group_total", group=PQ, listener="virtualInbound")


def upstream_handshakes(workload: Workload) -> float:
    return workload.stat("cluster_ssl_handshakes_by_group_total", group=PQ, cluster_name="hello|v1")


def curl(mesh: PodMesh, *args: str) -> subprocess.CompletedProcess[str]:
    return mesh.web.pod.run("curl", "-s", "--max-time", "10", *args, check=False)


def hello_between(seen: list[Hello], client: str, server: str, port: int) -> tuple[Hello, Hello]:
    """The one ClientHello from ``client`` to ``server:port`` and the ServerHello answering it."""
    sent = [h for h in seen if h.kind == "client" and h.flow[0] == client and h.flow[2:] == (server, port)]
    assert len(sent) == 1, seen
    answer = [h for h in seen if h.kind == "server" and h.flow == (server, port, client, sent[0].flow[1])]
    assert len(answer) == 1, seen
    return sent[0], answer[0]


def assert_pq_on_the_wire(seen: list[Hello], client: str, server: str, port: int) -> None:
    offered, chosen = hello_between(seen, client, server, port)
    assert offered.key_shares == [X25519MLKEM768] and offered.groups == [X25519MLKEM768]
    assert chosen.selected == X25519MLKEM768 and not chosen.retry


def test_curl_by_name_reaches_hello_over_pq_mutual_tls_and_the_app_sees_plaintext_and_the_caller(
    mesh: PodMesh, tmp_path: Path
) -> None:
    a, b = mesh.web.pod, mesh.hello["v1"].pod
    marker = "probe-4f1c9a"  # in the request's header and echoed in the response body
    before = handshakes(mesh.hello["v1"])
    upstream_before = upstream_handshakes(mesh.web)
    pcap = tmp_path / "a.pcap"
    with capture(a, pcap):
        done = curl(mesh, "-H", f"x-probe: {marker}", f"http://hello:{HTTP_PORT}/by-name?x=1")
    assert done.returncode == 0, done.stderr
    seen: dict[str, Any] = json.loads(done.stdout)
    # B's application answered, saw plaintext HTTP (never a TLS record) and the path as sent.
    assert (seen["version"], seen["path"], seen["tls_connections"]) == ("v1", "/by-name?x=1", 0)
    assert seen["headers"]["x-probe"] == marker
    # Its sidecar vouched for the caller: XFCC names web's SPIFFE ID (URI) and hello's own (By).
    xfcc = dict(pair.split("=", 1) for pair in seen["headers"]["x-forwarded-client-cert"].split(";"))
    assert xfcc["URI"] == mesh.web.identity and xfcc["By"] == mesh.hello["v1"].identity
    # hello's sidecar: the handshake was X25519MLKEM768, the mesh's allowed callers (the HTTP
    # RBAC filter of virtualInbound's chain for the port) admitted web, and the request went to
    # the app port.
    assert handshakes(mesh.hello["v1"]) == before + 1
    assert mesh.hello["v1"].stat("rbac_allowed_total", prefix=f"http.inbound|{HTTP_PORT}||.rbac") >= 1
    assert mesh.hello["v1"].stat("cluster_upstream_rq_total", cluster_name="inbound|8080||") >= 1
    # web's sidecar: the request went to hello v1's cluster over a handshake that negotiated
    # X25519MLKEM768 (the same one hello's sidecar counted).
    assert mesh.web.stat("cluster_upstream_rq_total", cluster_name="hello|v1") >= 1
    assert mesh.web.stat("listener_downstream_cx_total", listener="virtualOutbound") >= 1
    assert upstream_handshakes(mesh.web) == upstream_before + 1
    # The wire: web's sidecar offered only X25519MLKEM768 to B's pod address, B chose it, and
    # neither the request nor the response crossed in the clear.
    captured = pcap.read_bytes()
    assert_pq_on_the_wire(hellos(captured), a.ipv4, b.ipv4, HTTP_PORT)
    assert marker.encode() not in captured and b"GET /by-name" not in captured


def istio_requests(workload: Workload) -> list[dict[str, str]]:
    """The label sets of the sidecar's ``istio_requests_total`` series (from 15090)."""
    return [
        sample.labels
        for family in text_string_to_metric_families(workload.prometheus())
        if family.name == "istio_requests"
        for sample in family.samples
    ]


def test_both_sidecars_report_istios_metrics_and_keep_each_other_in_their_crypto_inventory(
    mesh: PodMesh,
) -> None:
    """After a request: Istio's series on 15090 name both workloads by their SPIFFE IDs and the
    link's group; each sidecar's inventory holds the other's identity; the controlplane's
    ``meshctl inventory`` merges what the sidecars reported over ADS (TLS)."""
    web, hello = mesh.web, mesh.hello["v1"]
    done = curl(mesh, f"http://hello:{HTTP_PORT}/for-metrics")
    assert done.returncode == 0, done.stderr
    common = {
        "source_principal": web.identity,
        "destination_principal": hello.identity,
        "request_protocol": "http",
        "response_code": "200",
        "tls_group": PQ,
    }
    inbound = [s for s in istio_requests(hello) if s["reporter"] == "destination"]
    assert any(
        common.items() <= s.items() and s["connection_security_policy"] == "mutual_tls" for s in inbound
    )
    outbound = [s for s in istio_requests(web) if s["reporter"] == "source"]
    assert any(common.items() <= s.items() for s in outbound), outbound
    seen_by_hello = {p["peer"]: p for p in json.loads(hello.admin("/crypto_inventory"))["peers"]}
    assert seen_by_hello[web.identity]["groups"] == [PQ]
    seen_by_web = {p["peer"]: p for p in json.loads(web.admin("/crypto_inventory"))["peers"]}
    assert seen_by_web[hello.identity]["groups"] == [PQ]

    def merged() -> dict[str, Any]:
        done = mesh.meshctl("-o", "json", "inventory")
        return (
            {p["peer"]: p for p in json.loads(done.stdout).get("peers", [])} if done.returncode == 0 else {}
        )

    eventually(lambda: web.identity in merged() and hello.identity in merged(), "meshctl inventory", WAIT)
    assert f"{hello.group}-{hello.pod.name}" in merged()[web.identity]["reporters"]
    assert f"{web.group}-{web.pod.name}" in merged()[hello.identity]["reporters"]


def test_curl_reaches_hello_by_its_ipv6_vip_through_the_dual_stack_capture_listeners(mesh: PodMesh) -> None:
    """``hello6`` is hello's IPv6 VIP: the capture redirects the IPv6 connection to web's
    ``[::]:15001`` (one dual-stack socket, which the IPv4 tests use too), the original
    destination is read the IPv6 way and matches the VIP's chain, and the request crosses to
    hello v1 over mutual TLS like the IPv4 one."""
    before = mesh.web.stat("cluster_upstream_rq_total", cluster_name="hello|v1")
    done = curl(mesh, "-w", "\n%{remote_ip}", f"http://hello6:{HTTP_PORT}/by-ipv6")
    assert done.returncode == 0, done.stderr
    body, _, remote = done.stdout.rpartition("\n")
    assert remote == HELLO_VIP6  # the client spoke IPv6, to the VIP
    seen: dict[str, Any] = json.loads(body)
    assert (seen["version"], seen["path"], seen["tls_connections"]) == ("v1", "/by-ipv6", 0)
    xfcc = dict(pair.split("=", 1) for pair in seen["headers"]["x-forwarded-client-cert"].split(";"))
    assert xfcc["URI"] == mesh.web.identity and xfcc["By"] == mesh.hello["v1"].identity
    assert mesh.web.stat("cluster_upstream_rq_total", cluster_name="hello|v1") == before + 1


def test_a_grpc_client_calls_the_grpc_port_by_name(mesh: PodMesh) -> None:
    before = mesh.hello["v1"].stat("cluster_upstream_rq_total", cluster_name=f"inbound|{GRPC_PORT}||")
    done = mesh.web.pod.run(sys.executable, str(WORKLOAD), "grpc", "hello", str(GRPC_PORT), "hi", check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "v1:hi"
    after = mesh.hello["v1"].stat("cluster_upstream_rq_total", cluster_name=f"inbound|{GRPC_PORT}||")
    assert after == before + 1  # through hello's sidecar (HTTP/2 to the app), not around it


def test_raw_tcp_reaches_the_echo_carried_over_pq_mutual_tls(mesh: PodMesh, tmp_path: Path) -> None:
    a, b = mesh.web.pod, mesh.hello["v1"].pod
    message = "opaque-bytes-7d3e"
    before = handshakes(mesh.hello["v1"])
    pcap = tmp_path / "tcp.pcap"
    with capture(a, pcap):
        done = a.run(sys.executable, str(WORKLOAD), "tcp", "hello", str(TCP_PORT), message, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == message
    # tcp_proxy opens one upstream connection per client connection: a fresh handshake.
    assert handshakes(mesh.hello["v1"]) == before + 1
    assert mesh.web.stat("tcp_downstream_cx_total", stat_prefix=f"outbound|{TCP_PORT}||hello") >= 1
    captured = pcap.read_bytes()
    assert_pq_on_the_wire(hellos(captured), a.ipv4, b.ipv4, TCP_PORT)
    assert message.encode() not in captured


def test_outside_the_mesh_allow_any_goes_through_registry_only_is_refused_and_counted(
    mesh: PodMesh,
) -> None:
    a, outside = mesh.web.pod, mesh.outside
    passthrough = {"cluster_name": "PassthroughCluster"}
    before = mesh.web.stat("cluster_upstream_cx_total", **passthrough)
    expected = f"outside local={outside.ipv4}:{OUTSIDE_PORT} original=none"
    assert a.dial(outside.ipv4, OUTSIDE_PORT) == expected
    assert mesh.web.stat("cluster_upstream_cx_total", **passthrough) == before + 1
    mesh.set_outbound_policy("REGISTRY_ONLY")
    try:
        assert a.dial(outside.ipv4, OUTSIDE_PORT) == ""  # accepted by the sidecar, closed unanswered
        refused = mesh.web.stat("tcp_downstream_cx_no_route_total", stat_prefix="BlackHoleCluster")
        assert refused == 1
        assert mesh.web.stat("cluster_upstream_cx_none_healthy_total", cluster_name="BlackHoleCluster") == 1
        # An excluded port bypasses the sidecar: the same destination answers, nothing is counted.
        assert a.meshproxy("iptables", "-o", str(OUTSIDE_PORT)).returncode == 0
        captured = mesh.web.stat("listener_downstream_cx_total", listener="virtualOutbound")
        assert a.dial(outside.ipv4, OUTSIDE_PORT) == expected
        assert mesh.web.stat("listener_downstream_cx_total", listener="virtualOutbound") == captured
        assert mesh.web.stat("tcp_downstream_cx_no_route_total", stat_prefix="BlackHoleCluster") == 1
    finally:
        assert a.meshproxy("iptables").returncode == 0
        mesh.set_outbound_policy("ALLOW_ANY")
    assert a.dial(outside.ipv4, OUTSIDE_PORT) == expected


def test_the_sidecars_own_connections_are_not_looped(mesh: PodMesh) -> None:
    # hello's applications call nothing: every connection their sidecars open (ADS and the CA
    # over TLS to the controlplane pod, the app on loopback) is the sidecar's own, and none
    # came back through its outbound capture.
    for workload in mesh.hello.values():
        assert workload.stat("listener_downstream_cx_total", listener="virtualOutbound") == 0
    proxies = json.loads(mesh.meshctl("-o", "json", "proxies").stdout)["proxies"]
    groups = {p["group"]: p for p in proxies}
    assert set(groups) == {"web", "hello-v1", "hello-v2"}
    for proxy in proxies:
        assert not proxy["nacking"]
        assert all(r["version_acked"] == r["version_sent"] for r in proxy["resources"])


def test_plaintext_from_a_pod_without_a_sidecar_to_a_strict_port_is_refused_and_counted(
    mesh: PodMesh,
) -> None:
    hello = mesh.hello["v1"]
    before = hello.stat("listener_no_filter_chain_match_total", listener="virtualInbound")
    url = f"http://{hello.pod.ipv4}:{HTTP_PORT}/"
    done = mesh.outside.run("curl", "-s", "--max-time", "10", url, check=False)
    assert done.returncode != 0 and done.stdout == ""  # closed without an answer
    assert hello.stat("listener_no_filter_chain_match_total", listener="virtualInbound") == before + 1


class Load:
    """``workload.py load`` in pod a: GETs to hello by name until told to stop, then its tally."""

    def __init__(self, mesh: PodMesh) -> None:
        argv = [sys.executable, str(WORKLOAD), "load", "hello", str(HTTP_PORT), str(LOAD_CONNECTIONS)]
        self.proc = subprocess.Popen(
            mesh.web.pod.argv(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT)
        line = self.proc.stdout.readline().strip() if ready else "(nothing)"
        if line != "started":
            self.proc.kill()
            raise AssertionError(f"the load did not start: {line}")

    def stop(self) -> dict[str, Any]:
        out, _ = self.proc.communicate("stop\n", timeout=COMMAND_TIMEOUT)
        return dict(json.loads(out.strip().splitlines()[-1]))


def answered_by(mesh: PodMesh, version: str) -> bool:
    done = curl(mesh, f"http://hello:{HTTP_PORT}/")
    return done.returncode == 0 and json.loads(done.stdout)["version"] == version


def test_meshctl_split_moves_pod_to_pod_traffic_with_zero_failed_requests(mesh: PodMesh) -> None:
    load = Load(mesh)
    shifted = mesh.meshctl("split", "hello", "v1=0", "v2=100")
    assert shifted.returncode == 0, shifted.stdout + shifted.stderr
    eventually(lambda: answered_by(mesh, "v2"), "web's sidecar routing hello to v2", WAIT)
    served = mesh.hello["v2"].stat("cluster_upstream_rq_total", cluster_name="inbound|8080||")
    eventually(
        lambda: (
            mesh.hello["v2"].stat("cluster_upstream_rq_total", cluster_name="inbound|8080||") > served + 50
        ),
        "the load reaching v2",
        WAIT,
    )
    tally = load.stop()
    assert tally["failed"] == 0, tally
    assert tally["versions"].get("v1", 0) > 0 and tally["versions"].get("v2", 0) > 50, tally


def terminate_under_load(mesh: PodMesh, native_order: bool) -> dict[str, Any]:
    """Pod c (v2, serving every request) terminated under load from pod a, as Kubernetes does:
    its traffic moves away (here ``meshctl split``, there the endpoints update) while its
    containers get SIGTERM. ``native_order``: the application first and the sidecar once the
    application has exited (native sidecars); otherwise both at once. Returns the load's tally."""
    c = mesh.hello["v2"]
    assert c.app is not None
    load = Load(mesh)
    c.app.proc.send_signal(signal.SIGTERM)
    if not native_order:
        c.sidecar.proc.send_signal(signal.SIGTERM)
    shifted = mesh.meshctl("split", "hello", "v1=100", "v2=0")
    assert shifted.returncode == 0, shifted.stdout + shifted.stderr
    assert c.app.proc.wait(WAIT) == 0, c.app.tail()  # it served until its requests stopped
    if native_order:
        c.sidecar.proc.send_signal(signal.SIGTERM)
    assert c.sidecar.proc.wait(WAIT) == 0, c.sidecar.tail()
    eventually(lambda: answered_by(mesh, "v1"), "web's sidecar routing hello back to v1", WAIT)
    tally = load.stop()
    assert tally["versions"].get("v2", 0) > 0 and tally["versions"].get("v1", 0) > 0, tally
    return tally


def serve_from_v2(mesh: PodMesh) -> None:
    """hello v2 running (started again if an earlier test stopped it) and serving every request."""
    v2 = mesh.hello["v2"]
    if any(child is not None and child.proc.poll() is not None for child in (v2.app, v2.sidecar)):
        mesh.restart("v2")
    shifted = mesh.meshctl("split", "hello", "v1=0", "v2=100")
    assert shifted.returncode == 0, shifted.stdout + shifted.stderr
    eventually(lambda: answered_by(mesh, "v2"), "web's sidecar routing hello to v2", WAIT)


def test_sigterm_to_a_pod_with_native_sidecar_order_under_load_loses_no_request(mesh: PodMesh) -> None:
    serve_from_v2(mesh)
    tally = terminate_under_load(mesh, native_order=True)
    assert tally["failed"] == 0, tally


def test_sigterm_to_a_pod_and_its_sidecar_at_once_under_load_loses_no_request(mesh: PodMesh) -> None:
    serve_from_v2(mesh)
    tally = terminate_under_load(mesh, native_order=False)
    refused = mesh.web.stat("cluster_upstream_cx_connect_fail_total", cluster_name="hello|v2")
    assert tally["failed"] == 0, (tally, f"web's connections to v2 refused: {refused:.0f}")
