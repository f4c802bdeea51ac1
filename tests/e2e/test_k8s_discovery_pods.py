"""Discovery from the cluster, end to end in pods: Services and EndpointSlices from an API server
carry pod-to-pod traffic over PQ mutual TLS, and endpoint churn loses no request.

The pods (network namespaces, `controlplane.demo.pods`): ``apiserver`` runs the tests' local API
server (``tests/integration/k8s_api.py`` as a process: list/watch over HTTPS, TokenReview);
``controlplane`` runs ``controlplane serve --kubernetes --kubeconfig ...`` (the mesh from the
cluster, CSRs authenticated by TokenReview: the harness's per-sidecar token file stands in for
the kubelet's projected token, see ``FakeKubeApi._file_accounts``); ``a`` is ``web``'s pod (the
caller), ``b`` and ``c`` run ``hello``'s application behind transparent sidecars in the group
``hello.pods`` (`annotations.sidecar_group` of the Pods the cluster lists).

``hello`` has ``REPLICAS`` Pods in the cluster, each with an address of its own, but only two
real servers: each Pod's address is a secondary address of ``b``'s or ``c``'s interface, so an
endpoint is really served (the capture takes any local address) and an address removed from
its interface really stops answering.
"""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from k8s_objects import NODES, PODS, SERVICES, SLICES, endpoint, endpoint_slice, node, pod, service

from controlplane.demo.pods import COMMAND_TIMEOUT, REPO, Pod, Pods
from controlplane.demo.pods_mesh import (
    CONTROLPLANE_NAME,
    Checkout,
    Workload,
    _start_apps,
    _start_sidecar,
    _wait_ready,
    eventually,
    start_controlplane,
)
from controlplane.demo.processes import Children
from controlplane.demo.workload import HTTP_PORT

from .test_mesh_pods import Load

NS = "pods"
HELLO_VIP, WEB_VIP = "10.96.0.10", "10.96.0.20"
HELLO_ID = f"spiffe://mesh.local/ns/{NS}/sa/hello"
WEB_ID = f"spiffe://mesh.local/ns/{NS}/sa/web"
REPLICAS = 10
WAIT = 30.0
# Pod addresses: 10.213.0.10 apiserver, .11 controlplane, .12 a, .13 b, .14 c (add order).
CONTROLPLANE_IP = "10.213.0.11"
OLD = [f"10.213.0.{100 + i}" for i in range(REPLICAS)]  # the first generation of hello's pods
NEW = [f"10.213.0.{120 + i}" for i in range(REPLICAS)]  # the second


class ApiServer:
    """The local API server in its pod; ``put``/``delete`` return the new resourceVersion."""

    def __init__(self, pod: Pod, work: Path) -> None:
        self.kubeconfig = work / "kubeconfig"
        python = ["env", f"PYTHONPATH={REPO}:{REPO / 'tests'}", sys.executable, "-m", "integration.k8s_api"]
        argv = pod.argv([*python, "serve", pod.ipv4, str(self.kubeconfig), str(work / "tokens")])
        self.log = work / "apiserver.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )
        assert self._answer() == "ready"

    def _answer(self) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], COMMAND_TIMEOUT)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line:
            raise AssertionError(f"the API server did not answer:\n{self.log.read_text()}")
        return line

    def _command(self, command: dict[str, Any]) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return int(self._answer())

    def put(self, path: str, obj: dict[str, Any]) -> int:
        return self._command({"op": "put", "path": path, "object": obj})

    def delete(self, path: str, name: str) -> int:
        return self._command({"op": "delete", "path": path, "namespace": NS, "name": name})

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def hello_slice(
    ready: Sequence[int], terminating: Sequence[int] = (), *, old: bool = False
) -> dict[str, Any]:
    """hello's slice: the old generation's Pods ``terminating`` (serving while they shut down),
    and the ``ready`` Pods of the old generation (``old``) or the new one."""
    endpoints = [
        endpoint(OLD[i], f"hello-old-{i}", ready=False, serving=True, terminating=True) for i in terminating
    ]
    prefix, addresses = ("old", OLD) if old else ("new", NEW)
    endpoints += [endpoint(addresses[i], f"hello-{prefix}-{i}") for i in ready]
    return endpoint_slice(NS, "hello-abc", "hello", endpoints, port=HTTP_PORT)


def hello_hosts(web: Workload) -> set[str]:
    """The hosts web's sidecar has for hello's cluster (its admin ``/clusters``)."""
    clusters = json.loads(web.admin("/clusters"))
    return {h["address"].rsplit(":", 1)[0] for c in clusters if c["name"] == "hello.pods" for h in c["hosts"]}


def apply(api: ApiServer, web: Workload, slice_: dict[str, Any], hosts: list[str]) -> None:
    """Write hello's slice and wait until web's sidecar has exactly ``hosts``."""
    api.put(SLICES, slice_)
    eventually(lambda: hello_hosts(web) == set(hosts), f"web's sidecar having {len(hosts)} hello hosts", WAIT)


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mp-k8s-pods-"))
    path.chmod(0o755)  # the sidecars (uid 1337) read their bootstraps and the trust bundle here
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_endpoint_churn_from_the_cluster_moves_pod_to_pod_traffic_with_zero_failed_requests(
    pods: Pods, work: Path
) -> None:
    hosts = {"hello": HELLO_VIP, "web": WEB_VIP, CONTROLPLANE_NAME: CONTROLPLANE_IP}
    api_pod = pods.add("apiserver", hosts)
    cp = pods.add("controlplane", hosts)
    assert cp.ipv4 == CONTROLPLANE_IP
    a, b, c = (pods.add(name, hosts) for name in "abc")
    servers = {ip: (b if i % 2 == 0 else c) for i, ip in enumerate(OLD + NEW)}
    for ip, server in servers.items():
        server.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")
    children = Children(work)
    runner = Checkout(work)
    api = ApiServer(api_pod, work)
    try:
        # The cluster: two Services, their injected Pods, the first generation of hello ready.
        api.put(NODES, node("node-1", region="eu", zone="eu-1a"))
        api.put(
            SERVICES,
            service(NS, "hello", HELLO_VIP, [{"name": "http", "port": HTTP_PORT, "protocol": "TCP"}]),
        )
        api.put(SERVICES, service(NS, "web", WEB_VIP, [{"name": "http", "port": 8000, "protocol": "TCP"}]))
        api.put(PODS, pod(NS, "web-0", service_account="web", labels={"app": "web"}, node="node-1"))
        for prefix in ("old", "new"):
            for i in range(REPLICAS):
                labels = {"app": "hello"}
                api.put(
                    PODS,
                    pod(NS, f"hello-{prefix}-{i}", service_account="hello", labels=labels, node="node-1"),
                )
        api.put(SLICES, endpoint_slice(NS, "web-abc", "web", [endpoint(a.ipv4, "web-0")], port=8000))
        api.put(SLICES, hello_slice(range(REPLICAS), old=True))

        source = ["--kubernetes", "--kubeconfig", str(api.kubeconfig)]
        source += ["--sidecar-cert-dir", f"{runner.cert_root}/{{group}}"]  # pods here share one filesystem
        trust = start_controlplane(cp, work, runner, children, source)
        web = _start_sidecar(a, "web.pods", WEB_ID, CONTROLPLANE_IP, trust, work, runner, children)
        hello = {
            p.name: _start_sidecar(p, "hello.pods", HELLO_ID, CONTROLPLANE_IP, trust, work, runner, children)
            for p in (b, c)
        }
        for workload in (web, *hello.values()):
            _wait_ready(workload, runner)
        _start_apps(hello, children)
        eventually(lambda: hello_hosts(web) == set(OLD), "web's sidecar having hello's endpoints", WAIT)

        load = Load(SimpleNamespace(web=web))  # GETs to hello by name from pod a, until stopped
        # Scale down: hello's pods terminate one by one (serving while they drain) ...
        for down in range(1, REPLICAS + 1):
            ready = list(range(down, REPLICAS))
            terminating = list(range(down))
            # ... the ready ones take the traffic; at 0 ready, the terminating ones still do
            apply(api, web, hello_slice(ready, terminating, old=True), [OLD[i] for i in ready] or OLD)
        # ... and up again: the second generation becomes ready one by one, the old pods go.
        for up in range(1, REPLICAS + 1):
            apply(api, web, hello_slice(range(up), range(REPLICAS)), NEW[:up])
        apply(api, web, hello_slice(range(REPLICAS)), NEW)
        for ip in OLD:  # the old pods are gone: their addresses answer no more
            servers[ip].run("ip", "addr", "del", f"{ip}/24", "dev", "eth0")
        before = {
            name: w.stat("cluster_upstream_rq_total", cluster_name="inbound|8080||")
            for name, w in hello.items()
        }
        eventually(
            lambda: all(
                w.stat("cluster_upstream_rq_total", cluster_name="inbound|8080||") > before[name] + 20
                for name, w in hello.items()
            ),
            "both servers answering through the new generation's addresses",
            WAIT,
        )
        tally = load.stop()
        assert tally["failed"] == 0, tally
        assert tally["versions"].get("b", 0) > 0 and tally["versions"].get("c", 0) > 0, tally
        # every sidecar got its SVID through TokenReview, for its own service account
        log = (work / "controlplane.log").read_text()
        assert log.count(f"issued {HELLO_ID} to node") >= 2 and f"issued {WEB_ID} to node" in log
    finally:
        children.stop_all()
        api.close()
