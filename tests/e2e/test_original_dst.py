"""A real ``meshproxy run`` behind ``meshproxy iptables``: Istio's virtualOutbound shape works.

Pod A has the capture installed and runs the proxy as uid 1337 from a static bootstrap: a
listener on 15001 (IPv4 and IPv6) with the original_dst listener filter and
``use_original_dst``, a filter chain for a service VIP:80 (a /32 and a /128 nobody owns) whose
tcp_proxy goes to pod B's application on 8080, a default chain to ``PassthroughCluster``
(ORIGINAL_DST), and a listener bound to the wildcard address on 9090 that redirected
connections to any :9090 are handed to (its tcp_proxy also goes to B:8080). A second proxy
configuration has the default chain on ``BlackHoleCluster`` (Istio's REGISTRY_ONLY). Pod B
runs a reporter on 8080 and 9090 that answers with the address it was reached on. Clients are
unmodified (``endpoints.py dial``), as root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .pods import SIDECAR_UID, Pod, Pods

VIP4, VIP6 = "10.213.0.200", "fd00:213::c8"
ADMIN = 15000
READY_TIMEOUT = 20.0
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ORIGINAL_DST_FILTER = {
    "name": "envoy.filters.listener.original_dst",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
    },
}


def addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def tcp_chain(prefix: str, cluster: str, match: dict[str, Any] | None = None) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "filters": [
            {
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {"@type": TCP, "stat_prefix": prefix, "cluster": cluster},
            }
        ]
    }
    if match is not None:
        chain["filter_chain_match"] = match
    return chain


def bootstrap(b: Pod, default_cluster: str) -> dict[str, Any]:
    vip = tcp_chain(
        "vip",
        "hello",
        {
            "destination_port": 80,
            "prefix_ranges": [
                {"address_prefix": VIP4, "prefix_len": 32},
                {"address_prefix": VIP6, "prefix_len": 128},
            ],
        },
    )

    def virtual_outbound(name: str, host: str) -> dict[str, Any]:
        return {
            "name": name,
            "address": addr(host, 15001),
            "use_original_dst": True,
            "listener_filters": [ORIGINAL_DST_FILTER],
            "filter_chains": [vip],
            "default_filter_chain": tcp_chain("default", default_cluster),
        }

    def port_9090(name: str, host: str) -> dict[str, Any]:
        return {"name": name, "address": addr(host, 9090), "filter_chains": [tcp_chain("handed", "hello")]}

    hello = {
        "name": "hello",
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": "hello",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(b.ipv4, 8080)}}]}],
        },
    }
    return {
        "node": {"id": "pod-a"},
        "admin": {"address": addr("127.0.0.1", ADMIN)},
        "static_resources": {
            "listeners": [
                virtual_outbound("virtualOutbound", "0.0.0.0"),
                virtual_outbound("virtualOutbound6", "::"),
                port_9090("0.0.0.0_9090", "0.0.0.0"),
                port_9090("[::]_9090", "::"),
            ],
            "clusters": [
                hello,
                {
                    "name": "PassthroughCluster",
                    "type": "ORIGINAL_DST",
                    "lb_policy": "CLUSTER_PROVIDED",
                    "connect_timeout": "2s",
                },
                {"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "2s"},
            ],
        },
    }


class Sidecar:
    """``meshproxy run`` in a pod as uid 1337, from a bootstrap file that uid can read."""

    def __init__(self, pod: Pod, doc: dict[str, Any]) -> None:
        self.pod = pod
        self.dir = tempfile.mkdtemp(prefix="mp-odst-")
        os.chmod(self.dir, 0o755)
        config = Path(self.dir) / "bootstrap.json"
        config.write_text(json.dumps(doc))
        config.chmod(0o644)
        argv = [sys.executable, "-m", "meshproxy", "run", "-c", str(config), "--log-level", "info"]
        self.proc = subprocess.Popen(
            pod.argv(argv, SIDECAR_UID),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        pod.processes.append(self.proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while self.admin("/ready") != "LIVE":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                _, err = self.proc.communicate(timeout=10)
                shutil.rmtree(self.dir)
                raise RuntimeError(f"meshproxy in pod {pod.name} did not become ready: {err[-2000:]}")
            time.sleep(0.1)  # polling a process in another namespace: there is no event to await

    def admin(self, path: str) -> str:
        script = (
            "import urllib.request,sys\n"
            "try:\n"
            f" print(urllib.request.urlopen('http://127.0.0.1:{ADMIN}{path}', timeout=5).read().decode())\n"
            "except Exception: print('')\n"
        )
        return self.pod.run(sys.executable, "-c", script).stdout.strip()

    def stat(self, name: str, **labels: str) -> float:
        text = self.admin("/stats/prometheus")
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        found = re.search(rf"(?m)^meshproxy_{name}\{{{re.escape(wanted)}\}} (\S+)$", text)
        assert found, f"{name}{{{wanted}}} not in {text[-3000:]}"
        return float(found.group(1))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)
        self.pod.processes.remove(self.proc)
        shutil.rmtree(self.dir)


@pytest.fixture(scope="module")
def mesh(module_pods: Pods) -> tuple[Pod, Pod]:
    a = module_pods.add("a", hosts={"hello": VIP4, "hello6": VIP6})
    b = module_pods.add("b")
    installed = a.meshproxy("iptables")
    assert installed.returncode == 0, installed.stderr
    b.serve("app-b", 8080, 9090)
    return a, b


@pytest.fixture
def allow_any(mesh: tuple[Pod, Pod]) -> Iterator[Sidecar]:
    a, b = mesh
    sidecar = Sidecar(a, bootstrap(b, "PassthroughCluster"))
    yield sidecar
    sidecar.stop()


@pytest.fixture(params=["ipv4", "ipv6"])
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def test_the_vip_chain_takes_a_captured_connection_to_the_service(
    mesh: tuple[Pod, Pod], allow_any: Sidecar, family: str
) -> None:
    a, b = mesh
    before = allow_any.stat("tcp_downstream_cx_total", stat_prefix="vip")
    # By name, as an application would: the pod's hosts file gives the VIP; nobody owns it.
    answer = a.dial("hello" if family == "ipv4" else "hello6", 80)
    assert answer == f"app-b local={where(b.ipv4, 8080)} original=none"  # the proxy dialled B itself
    assert allow_any.stat("tcp_downstream_cx_total", stat_prefix="vip") == before + 1


def test_an_address_outside_the_mesh_goes_through_the_passthrough(
    mesh: tuple[Pod, Pod], allow_any: Sidecar, family: str
) -> None:
    a, b = mesh
    target = b.ipv4 if family == "ipv4" else b.ipv6
    before = allow_any.stat("cluster_upstream_cx_total", cluster_name="PassthroughCluster")
    # The same app port as the VIP chain's endpoint, but not the VIP: the default chain serves
    # it and the ORIGINAL_DST cluster connects where the client was going (as uid 1337: uncaptured).
    assert a.dial(target, 8080) == f"app-b local={where(target, 8080)} original=none"
    assert allow_any.stat("cluster_upstream_cx_total", cluster_name="PassthroughCluster") == before + 1
    listener = "virtualOutbound" if family == "ipv4" else "virtualOutbound6"
    assert allow_any.stat("listener_downstream_cx_total", listener=listener) >= 1


def test_use_original_dst_hands_the_connection_to_the_listener_on_that_port(
    mesh: tuple[Pod, Pod], allow_any: Sidecar, family: str
) -> None:
    a, b = mesh
    target = b.ipv4 if family == "ipv4" else b.ipv6
    listener = "0.0.0.0_9090" if family == "ipv4" else "[::]_9090"
    before = allow_any.stat("listener_downstream_cx_total", listener=listener)
    # B:9090 would answer from 9090; the 9090 listener's own chain sends it to B:8080 instead.
    assert a.dial(target, 9090) == f"app-b local={where(b.ipv4, 8080)} original=none"
    assert allow_any.stat("listener_downstream_cx_total", listener=listener) == before + 1
    assert allow_any.stat("tcp_downstream_cx_total", stat_prefix="handed") >= 1


def test_registry_only_refuses_and_counts_what_is_outside(mesh: tuple[Pod, Pod]) -> None:
    a, b = mesh
    blocked = Sidecar(a, bootstrap(b, "BlackHoleCluster"))
    try:
        for target in (b.ipv4, b.ipv6):
            assert a.dial(target, 8080) == ""  # accepted by the sidecar, then closed unanswered
        assert blocked.stat("tcp_downstream_cx_no_route_total", stat_prefix="default") == 2
        assert blocked.stat("cluster_upstream_cx_none_healthy_total", cluster_name="BlackHoleCluster") == 2
        assert (
            a.dial("hello", 80) == f"app-b local={where(b.ipv4, 8080)} original=none"
        )  # the VIP still works
    finally:
        blocked.stop()
