"""The capture works: connections land on 15001/15006 and the original destination is recovered.

Pod A has ``meshproxy iptables -o 9090`` installed and a reporter listening on 15001 and 15006
(standing in for the sidecar, on uvloop: it answers with ``original_dst``'s result), plus an application
on 8080 and 15021. Pod B, without rules, runs an application on 8080 and 9090. Unmodified
clients (``endpoints.py dial``) connect from either pod; the answer says who accepted the
connection and what destination it recovered. Both address families.
"""

from __future__ import annotations

import pytest

from controlplane.demo.pods import SIDECAR_UID, Pod, Pods

OUTBOUND, INBOUND = 15001, 15006


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@pytest.fixture(scope="module")
def mesh(module_pods: Pods) -> tuple[Pod, Pod]:
    a = module_pods.add("a", hosts={"hello": "10.213.0.11", "hello6": "fd00:213::b"})
    b = module_pods.add("b")
    assert b.ipv4 == "10.213.0.11" and b.ipv6 == "fd00:213::b"
    installed = a.meshproxy("iptables", "-o", "9090")
    assert installed.returncode == 0, installed.stderr
    a.serve("sidecar", OUTBOUND, INBOUND, loop="uvloop")  # the proxy's loop
    a.serve("app-a", 8080, 15021)
    b.serve("app-b", 8080, 9090)
    return a, b


@pytest.fixture(params=["ipv4", "ipv6"])
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def ip(pod: Pod, family: str) -> str:
    return pod.ipv4 if family == "ipv4" else pod.ipv6


def test_outbound_connection_lands_on_15001_with_its_original_destination(
    mesh: tuple[Pod, Pod], family: str
) -> None:
    a, b = mesh
    answer = a.dial(ip(b, family), 8080).split()
    assert answer[0] == "sidecar"
    assert answer[1].endswith(f":{OUTBOUND}")
    assert answer[2] == f"original={address(ip(b, family), 8080)}"


def test_a_service_name_from_the_pod_hosts_file_is_captured_too(mesh: tuple[Pod, Pod], family: str) -> None:
    a, b = mesh
    answer = a.dial("hello" if family == "ipv4" else "hello6", 8080).split()
    assert answer[0] == "sidecar" and answer[2] == f"original={address(ip(b, family), 8080)}"


def test_the_sidecar_users_traffic_is_not_captured(mesh: tuple[Pod, Pod], family: str) -> None:
    a, b = mesh
    answer = a.dial(ip(b, family), 8080, user=SIDECAR_UID)
    assert answer == f"app-b local={address(ip(b, family), 8080)} original=none"


def test_an_excluded_outbound_port_bypasses_the_sidecar(mesh: tuple[Pod, Pod], family: str) -> None:
    a, b = mesh
    assert a.dial(ip(b, family), 9090) == f"app-b local={address(ip(b, family), 9090)} original=none"


def test_inbound_connection_lands_on_15006_with_its_original_destination(
    mesh: tuple[Pod, Pod], family: str
) -> None:
    a, b = mesh
    answer = b.dial(ip(a, family), 8080).split()
    assert answer[0] == "sidecar"
    assert answer[1] == f"local={address(ip(a, family), INBOUND)}"
    assert answer[2] == f"original={address(ip(a, family), 8080)}"


def test_the_health_port_is_excluded_from_inbound_capture(mesh: tuple[Pod, Pod], family: str) -> None:
    a, b = mesh
    assert b.dial(ip(a, family), 15021) == f"app-a local={address(ip(a, family), 15021)} original=none"


def test_loopback_traffic_is_not_captured(mesh: tuple[Pod, Pod], family: str) -> None:
    a, _ = mesh
    loopback = "127.0.0.1" if family == "ipv4" else "::1"
    assert a.dial(loopback, 8080) == f"app-a local={address(loopback, 8080)} original=none"


def test_the_sidecar_reaching_its_own_pod_address_goes_to_inbound(mesh: tuple[Pod, Pod], family: str) -> None:
    # Istio's rule: the proxy's connection to its own pod's address over lo is inbound traffic.
    a, _ = mesh
    answer = a.dial(ip(a, family), 8080, user=SIDECAR_UID).split()
    assert answer[0] == "sidecar" and answer[1].endswith(f":{INBOUND}")
    assert answer[2] == f"original={address(ip(a, family), 8080)}"
