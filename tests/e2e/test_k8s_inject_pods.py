"""Issue 16's "done means": Deployments injected by ``meshctl inject`` validate, and running their
containers' commands in pods gives a working post-quantum mesh link.

Two Deployments as a user writes them (``web`` calling ``hello``, each with its own service
account, namespace ``pods``) go through ``meshctl inject`` (the real program) with the trust
bundle of the controlplane running in its pod; the output validates against the Kubernetes
schemas; then ``kubelet.run_injected`` runs each Deployment's injected containers in a pod of the
harness (``meshproxy iptables`` from the init container's arguments, then the native sidecar with
the sidecar's own arguments, its startup probe) and the application starts once the sidecar
is ready. curl in web's pod calls ``hello`` by name: the request is captured, crosses to hello's
pod over mutual TLS that negotiated X25519MLKEM768 (hello's sidecar counts the handshake by
group), and hello's application sees plaintext and web's SPIFFE ID in XFCC. The sidecar groups
and identities are the injector's (``web.pods``, ``spiffe://mesh.local/ns/pods/sa/web``): the mesh
file names the same groups, as the Kubernetes source will from the pods' labels.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.demo.pods import REPO, Pods
from controlplane.demo.pods_mesh import (
    CONTROLPLANE_NAME,
    START_TIMEOUT,
    WORKLOAD,
    Checkout,
    Workload,
    start_controlplane,
)
from controlplane.demo.processes import Children
from controlplane.demo.workload import HTTP_PORT
from controlplane.k8s import validate

from .kubelet import run_injected

PQ = "X25519MLKEM768"
Mesh = tuple[Workload, Workload, list[dict[str, Any]]]  # hello, web, the injected manifests
HELLO_VIP, WEB_VIP = "10.96.0.10", "10.96.0.20"
MANIFESTS = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: pods}
spec:
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      serviceAccountName: hello
      containers: [{name: hello, image: registry.example/hello:1, ports: [{containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: pods}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers: [{name: web, image: registry.example/web:1}]
"""


def mesh_yaml(cert_root: str, hello_ip: str) -> str:
    return f"""\
mesh: {{trust_domain: mesh.local, pq: required, namespace: pods}}
sidecars: {{cert_dir: "{cert_root}/{{group}}"}}
services:
  - name: hello
    vip: {HELLO_VIP}
    ports: [{{port: {HTTP_PORT}, protocol: http}}]
    endpoints: ["{hello_ip}:{HTTP_PORT}"]
    sidecar: {{mode: transparent, group: hello.pods}}
    allow: [web]
  - name: web
    vip: {WEB_VIP}
    port: 8000
    endpoints: []
    sidecar: {{mode: transparent, group: web.pods}}
    allow: []
"""


def meshctl_inject(trust: Path, work: Path) -> list[dict[str, Any]]:
    meshctl = [sys.executable, "-m", "controlplane.meshctl", "--state-dir", str(work / "meshctl")]
    done = subprocess.run(
        [*meshctl, "inject", "-f", "-", "--trust-bundle", str(trust), "--controlplane", CONTROLPLANE_NAME],
        input=MANIFESTS,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert done.stderr == ""
    return list(yaml.safe_load_all(done.stdout))


@pytest.fixture(scope="module")
def injected_mesh(module_pods: Pods) -> Iterator[Mesh]:
    del module_pods  # the directory's root and tool checks
    work = Path(tempfile.mkdtemp(prefix="mp-k8s-"))
    work.chmod(0o755)
    children = Children(work)
    runner = Checkout(work)
    try:
        with Pods() as pods:
            hosts = {"hello": HELLO_VIP, "web": WEB_VIP}
            hosts[CONTROLPLANE_NAME] = f"10.213.0.{10 + len(pods.pods)}"
            cp = pods.add("controlplane", hosts)
            a, b = pods.add("a", hosts), pods.add("b", hosts)
            (work / "mesh.yaml").write_text(mesh_yaml(runner.cert_root, b.ipv4))
            trust = start_controlplane(cp, work, runner, children)
            docs = meshctl_inject(trust, work)
            templates = {d["metadata"]["name"]: d["spec"]["template"] for d in docs}
            tokens = work / "tokens"
            hello = run_injected(b, templates["hello"], work, runner, children, tokens)
            web = run_injected(a, templates["web"], work, runner, children, tokens)
            app = children.start(
                "hello's app", b.argv([sys.executable, str(WORKLOAD), "serve", "v1"]), "app.log"
            )
            asyncio.run(children.wait_for_line(app, r"(?m)^ready$", START_TIMEOUT))
            yield hello, web, docs
    finally:
        children.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def test_the_injected_deployments_validate(
    injected_mesh: Mesh,
) -> None:
    _, _, docs = injected_mesh
    assert validate.problems(docs) == []
    spec = docs[0]["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["meshproxy-init", "meshproxy"]


def test_curl_by_name_crosses_the_injected_sidecars_over_pq_mutual_tls(
    injected_mesh: Mesh,
) -> None:
    hello, web, _ = injected_mesh
    assert (hello.group, web.group) == ("hello.pods", "web.pods")
    assert web.identity == "spiffe://mesh.local/ns/pods/sa/web"

    def handshakes() -> float:
        return hello.stat("listener_ssl_handshakes_by_group_total", group=PQ, listener="virtualInbound")

    before = handshakes()
    done = web.pod.run("curl", "-s", "--max-time", "10", f"http://hello:{HTTP_PORT}/injected", check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert (seen["version"], seen["path"], seen["tls_connections"]) == ("v1", "/injected", 0)
    xfcc = dict(pair.split("=", 1) for pair in seen["headers"]["x-forwarded-client-cert"].split(";"))
    assert xfcc["URI"] == web.identity and xfcc["By"] == hello.identity
    assert (
        hello.stat("listener_ssl_handshakes_by_group_total", group=PQ, listener="virtualInbound")
        == before + 1
    )
    assert web.stat("cluster_upstream_rq_total", cluster_name="hello") >= 1
