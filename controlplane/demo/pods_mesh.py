"""A transparent mesh in pods: the controlplane, sidecars and unmodified applications, as processes.

Owns building (and tearing down) the mesh that issue 13's end-to-end tests, the demo's
``--pods`` mode and the interception benchmark run on, with ``pods.Pods`` (network namespaces
on one bridge):

- pod ``controlplane``: ``controlplane serve`` on a transparent mesh YAML (written here), its
  gRPC (xDS and the CA) over TLS on 15012 for the other pods, the plaintext 15010 on its own
  loopback only (``meshctl`` runs inside this pod);
- pod ``a``: the caller, service ``web`` (transparent sidecar, nobody may call it);
- pods ``b`` and ``c``: service ``hello`` versions ``v1`` and ``v2``, VIPs ``10.96.0.10`` and
  ``fd00:96::10`` (named ``hello6``) with ports 8080 (http), 9090 (grpc), 7000 (tcp), each pod
  running ``workload.py serve`` (HTTP echo, gRPC, TCP echo) behind its own transparent sidecar;
  the declared split sends every request to ``v1`` until ``meshctl split`` says otherwise;
- pod ``outside``: no sidecar, no capture: an ``endpoints.py`` reporter on ``OUTSIDE_PORT``,
  a destination outside the mesh (and a client from outside it).

Each workload pod is started in Kubernetes' order: ``meshproxy iptables`` (the init container,
as root), then the sidecar as uid 1337 (``meshproxy run --sidecar`` with an ADS bootstrap whose
``node.cluster`` is its group, reaching the controlplane's TLS port verified against the CA's
bundle, and the identity agent getting its SVID with a bootstrap token), then ``meshproxy
wait-ready`` in the pod, then the application. Every pod's hosts file names the services' VIPs
and the controlplane. ``pod_mesh`` is the context manager: it yields a ``PodMesh`` and stops
every process, removes every namespace and file it made, whatever happened.

Must not depend on: the proxy's or the controlplane's internals (they run as programs; the mesh
model is read only for the services' identities), pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from controlplane.demo.layout import OPERATOR, write_token
from controlplane.demo.pods import COMMAND_TIMEOUT, REPO, SIDECAR_UID, Pod, Pods
from controlplane.demo.processes import Child, Children
from controlplane.demo.workload import GRPC_PORT, HTTP_PORT, TCP_PORT
from controlplane.mesh import load_mesh

WORKLOAD = Path(__file__).with_name("workload.py")
HELLO_VIP = "10.96.0.10"
HELLO_VIP6 = "fd00:96::10"  # hello is dual-stack; the hosts files name this one hello6
WEB_VIP = "10.96.0.20"
HELLO_VERSIONS = {"v1": "b", "v2": "c"}  # version -> the pod it runs in
OUTSIDE_PORT = 8000
XDS_TLS_PORT, XDS_PORT = 15012, 15010
ADMIN_PORT, READY_PORT, PROMETHEUS_PORT = 15000, 15021, 15090
CONTROLPLANE_NAME = "controlplane"  # its hosts-file name, and the SAN of its TLS certificate
START_TIMEOUT = 60.0  # imports, the CA's first key and the SVIDs, on a loaded 2-core machine
POLL = 0.05
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def mesh_yaml(cert_dir: str, endpoints: dict[str, str], policy: str = "ALLOW_ANY") -> str:
    """The mesh: ``endpoints`` maps each hello version to its pod's IPv4; ``policy`` is web's
    outbound traffic policy (ALLOW_ANY or REGISTRY_ONLY)."""
    versions = "\n".join(
        f'      {v}: {{endpoints: ["{ip}:{HTTP_PORT}"], sidecar: {{mode: transparent}}}}'
        for v, ip in endpoints.items()
    )
    return f"""\
mesh: {{trust_domain: mesh.local, pq: required, namespace: pods}}
sidecars:
  cert_dir: "{cert_dir}/{{group}}"
services:
  - name: hello
    vip: [{HELLO_VIP}, "{HELLO_VIP6}"]
    ports:
      - {{port: {HTTP_PORT}, protocol: http}}
      - {{port: {GRPC_PORT}, protocol: grpc}}
      - {{port: {TCP_PORT}, protocol: tcp}}
    versions:
{versions}
    routes:
      - match: {{prefix: /}}
        split: {{v1: 100}}
        retries: {{attempts: 2, on: [reset, connect-failure], per_try_timeout: 2s}}
        timeout: 5s
    allow: [web]
  - name: web
    vip: {WEB_VIP}
    port: 8000
    endpoints: []
    sidecar: {{mode: transparent, outbound_traffic_policy: {policy}}}
    allow: []
"""


def bootstrap(node: str, group: str, controlplane_ip: str, trust: Path) -> dict[str, object]:
    """A sidecar's bootstrap: its admin on loopback, ADS over TLS to the controlplane pod."""
    endpoint = {"endpoint": {"address": _address(controlplane_ip, XDS_TLS_PORT)}}
    tls = {
        "@type": UPSTREAM_TLS,
        "sni": CONTROLPLANE_NAME,
        "common_tls_context": {"validation_context": {"trusted_ca": {"filename": str(trust)}}},
    }
    xds = {
        "name": "xds",
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [endpoint]}]},
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    return {
        "node": {"id": node, "cluster": group},
        "admin": {"address": _address("127.0.0.1", ADMIN_PORT)},
        "static_resources": {"clusters": [xds]},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            },
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
    }


def _address(host: str, port: int) -> dict[str, object]:
    return {"socket_address": {"address": host, "port_value": port}}


def eventually(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    """Poll ``condition`` (state in another process: no event crosses) until it holds, or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(POLL)


@dataclass
class Workload:
    """A pod with a sidecar: its group, identity, and the sidecar and application processes."""

    pod: Pod
    group: str
    identity: str
    sidecar: Child
    app: Child | None = None

    def prometheus(self) -> str:
        """The sidecar's ``/stats/prometheus`` on 15090, fetched inside its pod."""
        url = f"http://127.0.0.1:{PROMETHEUS_PORT}/stats/prometheus"
        return self.pod.run("curl", "-sf", "--max-time", "5", url).stdout

    def stat(self, name: str, **labels: str) -> float:
        """``meshproxy_<name>`` with exactly ``labels`` (in any order), 0 when there is no such series."""
        for line in self.prometheus().splitlines():
            series, _, value = line.rpartition(" ")
            found, _, rest = series.partition("{")
            pairs = (p.partition("=") for p in rest.rstrip("}").split(",") if p)
            if found == f"meshproxy_{name}" and {k: v.strip('"') for k, _, v in pairs} == labels:
                return float(value)
        return 0.0

    def admin(self, path: str) -> str:
        return self.pod.run("curl", "-sf", "--max-time", "5", f"http://127.0.0.1:{ADMIN_PORT}{path}").stdout


@dataclass
class PodMesh:
    """The running mesh: pods by role, and what the tests and the demo drive it with."""

    pods: Pods
    work: Path
    children: Children
    controlplane: Pod
    web: Workload  # pod a: the caller
    hello: dict[str, Workload]  # per version: pods b and c
    outside: Pod  # no sidecar: a destination outside the mesh, and a client from outside
    mesh_file: Path
    cert_dir: Path
    controlplane_ip: str
    trust: Path  # the CA's bundle the sidecars verify the controlplane with

    def restart(self, version: str) -> Workload:
        """Start hello ``version``'s pod again after it was stopped, as at first: the capture
        (installed again: a no-op), the sidecar, its readiness, the application."""
        old = self.hello[version]
        for child in (old.app, old.sidecar):
            if child is not None and child.proc.poll() is None:
                raise RuntimeError(f"{child.name} is still running (pid {child.proc.pid})")
        new = _start_sidecar(
            old.pod, old.group, old.identity, self.controlplane_ip, self.trust, self.work, self.children
        )
        _wait_ready(new)
        _start_apps({version: new}, self.children)
        self.hello[version] = new
        return new

    def meshctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``meshctl ARGS`` in the controlplane's pod, over its loopback plaintext port."""
        token = self.work / "meshctl.token"
        prog = [sys.executable, "-m", "controlplane.meshctl", "--server", f"127.0.0.1:{XDS_PORT}"]
        return self.controlplane.run(*prog, "--token-file", str(token), *args, check=False)

    def set_outbound_policy(self, policy: str) -> None:
        """Rewrite the mesh with web's ``policy`` and return once web's sidecar has applied it."""
        endpoints = {v: self.hello[v].pod.ipv4 for v in HELLO_VERSIONS}
        _write_atomically(self.mesh_file, mesh_yaml(str(self.cert_dir), endpoints, policy))
        fallback = "BlackHoleCluster" if policy == "REGISTRY_ONLY" else "PassthroughCluster"
        eventually(
            lambda: f'"name": "{fallback}"' in self.web.admin("/config_dump"),
            f"web's sidecar receiving {fallback}",
        )


def _write_atomically(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def _readable_by_sidecar(path: Path, mode: int = 0o644) -> Path:
    os.chown(path, SIDECAR_UID, SIDECAR_UID)
    path.chmod(mode)
    return path


@contextlib.contextmanager
def pod_mesh(policy: str = "ALLOW_ANY") -> Iterator[PodMesh]:
    """The mesh above, up and ready (every sidecar has its SVID and configuration, every app
    listens); everything stopped and removed when the block ends. Needs root."""
    work = Path(tempfile.mkdtemp(prefix="mp-pods-"))
    work.chmod(0o755)  # the sidecars (uid 1337) read their bootstraps and the trust bundle here
    children = Children(work)
    try:
        with Pods() as pods:
            yield _build(pods, work, children, policy)
    finally:
        children.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def _build(pods: Pods, work: Path, children: Children, policy: str) -> PodMesh:
    hosts = {"hello": HELLO_VIP, "hello6": HELLO_VIP6, "web": WEB_VIP}
    # Pod addresses are given in add order; the controlplane's must be in every hosts file.
    cp_ip = f"10.213.0.{10 + len(pods.pods)}"
    hosts[CONTROLPLANE_NAME] = cp_ip
    cp = pods.add("controlplane", hosts)
    assert cp.ipv4 == cp_ip, (cp.ipv4, cp_ip)
    a = pods.add("a", hosts)
    versions = {v: pods.add(name, hosts) for v, name in HELLO_VERSIONS.items()}
    outside = pods.add("outside", hosts)
    cert_dir = work / "certs"
    cert_dir.mkdir()
    mesh_file = work / "mesh.yaml"
    mesh_file.write_text(mesh_yaml(str(cert_dir), {v: p.ipv4 for v, p in versions.items()}, policy))
    mesh, _ = load_mesh(mesh_file.read_text(), source=str(mesh_file))
    trust = _start_controlplane(cp, work, children)
    identities = {s.name: s.identity for s in mesh.services}
    outside.serve("outside", OUTSIDE_PORT)
    web = _start_sidecar(a, "web", identities["web"], cp_ip, trust, work, children)
    hello = {
        v: _start_sidecar(pod, f"hello-{v}", identities["hello"], cp_ip, trust, work, children)
        for v, pod in versions.items()
    }
    for workload in (web, *hello.values()):
        _wait_ready(workload)
    _start_apps(hello, children)
    return PodMesh(pods, work, children, cp, web, hello, outside, mesh_file, cert_dir, cp_ip, trust)


def _start_apps(hello: dict[str, Workload], children: Children) -> None:
    """Each version's application (its sidecar is ready), returning once all listen."""
    for version, workload in hello.items():
        workload.app = children.start(
            f"hello {version}'s app",
            workload.pod.argv([sys.executable, str(WORKLOAD), "serve", version]),
            f"{workload.group}.app.log",
        )
    for workload in hello.values():
        assert workload.app is not None
        asyncio.run(children.wait_for_line(workload.app, r"(?m)^ready$", START_TIMEOUT))


def _start_controlplane(cp: Pod, work: Path, children: Children) -> Path:
    """``controlplane serve`` in its pod; returns the CA's trust bundle, readable by sidecars."""
    (work / "tokens").touch()
    write_token(work / "management-tokens", OPERATOR, work / "meshctl.token")
    argv = [sys.executable, "-m", "controlplane", "serve", "--ca-dir", str(work / "ca")]
    argv += ["--tokens", str(work / "tokens"), "--management-tokens", str(work / "management-tokens")]
    argv += ["--mesh", str(work / "mesh.yaml"), "--xds-address", f"127.0.0.1:{XDS_PORT}"]
    argv += ["--xds-tls-address", f"0.0.0.0:{XDS_TLS_PORT}", "--xds-tls-san", CONTROLPLANE_NAME]
    child = children.start("the controlplane", _in_repo(cp.argv(argv)), "controlplane.log")
    asyncio.run(children.wait_for_line(child, r" over TLS on ", START_TIMEOUT))
    trust = work / "trust.pem"
    shutil.copyfile(work / "ca" / "ca.crt", trust)
    return _readable_by_sidecar(trust)


def _start_sidecar(
    pod: Pod, group: str, identity: str, cp_ip: str, trust: Path, work: Path, children: Children
) -> Workload:
    """The init container's capture, then the sidecar as uid 1337 (not waited for here)."""
    installed = pod.meshproxy("iptables")
    if installed.returncode != 0:
        raise RuntimeError(f"meshproxy iptables in pod {pod.name}: {installed.stderr.strip()}")
    config = work / f"{pod.name}.bootstrap.json"
    config.write_text(json.dumps(bootstrap(f"{group}-{pod.name}", group, cp_ip, trust)))
    _readable_by_sidecar(config)
    token = _readable_by_sidecar(
        write_token(work / "tokens", identity, work / f"{pod.name}.token"), mode=0o600
    )
    certs = work / "certs" / group
    certs.mkdir(exist_ok=True)
    _readable_by_sidecar(certs, mode=0o755)
    argv = [sys.executable, "-m", "meshproxy", "run", "-c", str(config), "--sidecar"]
    argv += ["--ca-address", f"{CONTROLPLANE_NAME}:{XDS_TLS_PORT}", "--ca-trust", str(trust)]
    argv += ["--identity", identity, "--token-file", str(token), "--cert-dir", str(certs)]
    child = children.start(
        f"{group}'s sidecar in pod {pod.name}",
        _in_repo(pod.argv(argv, SIDECAR_UID)),
        f"{pod.name}.sidecar.log",
    )
    return Workload(pod, group, identity, child)


def _wait_ready(workload: Workload) -> None:
    """``meshproxy wait-ready`` in the pod: the sidecar has its SVID and first complete config."""
    waited = workload.pod.meshproxy(
        "wait-ready", "--timeout", str(START_TIMEOUT), timeout=START_TIMEOUT + COMMAND_TIMEOUT
    )
    if waited.returncode != 0:
        raise workload.sidecar.failure(f"was not ready: {waited.stderr.strip()}")


def _in_repo(argv: list[str]) -> list[str]:
    """``argv`` with this checkout on PYTHONPATH (``ip netns exec`` keeps the environment)."""
    return ["env", f"PYTHONPATH={REPO}", *argv]
