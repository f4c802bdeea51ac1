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

Which ``meshproxy`` and ``controlplane`` run is a ``Runner``'s choice, made for the work
directory (where the harness writes the bootstraps, tokens, mesh file and trust bundle): the
default ``Checkout`` runs this checkout's code with ``python -m``; the image tests pass one that
runs them from the container image (tests/e2e/image.py), which sees the work directory as its
read-only ``/etc/meshproxy`` and keeps the certificates in its own volumes. The applications,
``meshctl`` and the clients always run from the checkout: they are not what the image ships.

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
from typing import Protocol

from controlplane.demo.layout import OPERATOR, write_token
from controlplane.demo.pods import COMMAND_TIMEOUT, REPO, SIDECAR_UID, Pod, Pods
from controlplane.demo.processes import Child, Children
from controlplane.demo.workload import GRPC_PORT, HTTP_PORT, TCP_PORT
from controlplane.mesh import load_mesh
from controlplane.mesh.bootstrap import sidecar_bootstrap

WORKLOAD = Path(__file__).with_name("workload.py")
HELLO_VIP = "10.96.0.10"
HELLO_VIP6 = "fd00:96::10"  # hello is dual-stack; the hosts files name this one hello6
WEB_VIP = "10.96.0.20"
HELLO_VERSIONS = {"v1": "b", "v2": "c"}  # version -> the pod it runs in
OUTSIDE_PORT = 8000
XDS_TLS_PORT, XDS_PORT = 15012, 15010
ADMIN_PORT, READY_PORT, PROMETHEUS_PORT = 15000, 15021, 15090
CONTROLPLANE_NAME = "controlplane"  # its hosts-file name, and the SAN of its TLS certificate
CONTROLPLANE_STATE = "controlplane-state"  # in the work directory: the controlplane's CA
START_TIMEOUT = 60.0  # imports, the CA's first key and the SVIDs, on a loaded 2-core machine
POLL = 0.05


class Runner(Protocol):
    """How the mesh runs ``meshproxy`` and ``controlplane``, made for one work directory."""

    cert_root: str  # the sidecars' certificate directories, one per group below it, as they see it

    def path(self, host: Path) -> str:
        """The name a process started here gives ``host``, a file in the work directory."""
        ...

    def controlplane(self, pod: Pod, args: list[str]) -> list[str]:
        """The argv of ``controlplane ARGS`` in ``pod`` (its CA in ``CONTROLPLANE_STATE``)."""
        ...

    def sidecar(self, pod: Pod, group: str, args: list[str]) -> list[str]:
        """The argv of ``meshproxy ARGS`` in ``pod`` as the sidecar (uid 1337), with its
        certificate directory ``cert_root/group`` writable to it."""
        ...

    def meshproxy(self, pod: Pod, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """``meshproxy ARGS`` in ``pod`` as root, to completion (the init container, wait-ready)."""
        ...


class Checkout:
    """This checkout's code, with ``python -m``; the processes see the work directory as it is."""

    def __init__(self, work: Path) -> None:
        self.cert_root = str(work / "certs")

    def path(self, host: Path) -> str:
        return str(host)

    def controlplane(self, pod: Pod, args: list[str]) -> list[str]:
        return _in_repo(pod.argv([sys.executable, "-m", "controlplane", *args]))

    def sidecar(self, pod: Pod, group: str, args: list[str]) -> list[str]:
        certs = Path(self.cert_root) / group
        certs.mkdir(parents=True, exist_ok=True)
        _readable_by_mesh_user(certs, mode=0o755)
        return _in_repo(pod.argv([sys.executable, "-m", "meshproxy", *args], SIDECAR_UID))

    def meshproxy(self, pod: Pod, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return pod.meshproxy(*args, timeout=timeout)


def mesh_yaml(cert_dir: str, endpoints: dict[str, str], policy: str = "ALLOW_ANY") -> str:
    """The mesh: ``endpoints`` maps each hello version to its pod's IPv4; ``policy`` is web's
    outbound traffic policy (ALLOW_ANY or REGISTRY_ONLY); ``cert_dir`` is the sidecars'
    ``Runner.cert_root``."""
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


def bootstrap(node: str, group: str, controlplane_ip: str, trust: str) -> dict[str, object]:
    """A sidecar's bootstrap: its admin on loopback, ADS over TLS to the controlplane pod,
    verified against ``trust`` (the bundle's name as the sidecar sees it)."""
    return sidecar_bootstrap(node, group, (controlplane_ip, XDS_TLS_PORT), trust, CONTROLPLANE_NAME)


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
    runner: Runner
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
            old.pod,
            old.group,
            old.identity,
            self.controlplane_ip,
            self.trust,
            self.work,
            self.runner,
            self.children,
        )
        _wait_ready(new, self.runner)
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
        _write_atomically(self.mesh_file, mesh_yaml(self.runner.cert_root, endpoints, policy))
        fallback = "BlackHoleCluster" if policy == "REGISTRY_ONLY" else "PassthroughCluster"
        eventually(
            lambda: f'"name": "{fallback}"' in self.web.admin("/config_dump?format=compiled"),
            f"web's sidecar receiving {fallback}",
        )


def _write_atomically(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def _readable_by_mesh_user(path: Path, mode: int = 0o644) -> Path:
    """``path`` owned by uid 1337: the sidecars', and the image's controlplane's."""
    os.chown(path, SIDECAR_UID, SIDECAR_UID)
    path.chmod(mode)
    return path


@contextlib.contextmanager
def pod_mesh(policy: str = "ALLOW_ANY", runner: Callable[[Path], Runner] = Checkout) -> Iterator[PodMesh]:
    """The mesh above, up and ready (every sidecar has its SVID and configuration, every app
    listens), its meshproxy and controlplane run by ``runner(work directory)``; everything
    stopped and removed when the block ends. Needs root."""
    work = Path(tempfile.mkdtemp(prefix="mp-pods-"))
    work.chmod(0o755)  # the sidecars (uid 1337) read their bootstraps and the trust bundle here
    children = Children(work)
    try:
        with Pods() as pods:
            yield _build(pods, work, children, policy, runner(work))
    finally:
        children.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def _build(pods: Pods, work: Path, children: Children, policy: str, runner: Runner) -> PodMesh:
    hosts = {"hello": HELLO_VIP, "hello6": HELLO_VIP6, "web": WEB_VIP}
    # Pod addresses are given in add order; the controlplane's must be in every hosts file.
    cp_ip = f"10.213.0.{10 + len(pods.pods)}"
    hosts[CONTROLPLANE_NAME] = cp_ip
    cp = pods.add("controlplane", hosts)
    assert cp.ipv4 == cp_ip, (cp.ipv4, cp_ip)
    a = pods.add("a", hosts)
    versions = {v: pods.add(name, hosts) for v, name in HELLO_VERSIONS.items()}
    outside = pods.add("outside", hosts)
    mesh_file = work / "mesh.yaml"
    mesh_file.write_text(mesh_yaml(runner.cert_root, {v: p.ipv4 for v, p in versions.items()}, policy))
    mesh, _ = load_mesh(mesh_file.read_text(), source=str(mesh_file))
    trust = start_controlplane(cp, work, runner, children)
    identities = {s.name: s.identity for s in mesh.services}
    outside.serve("outside", OUTSIDE_PORT)
    web = _start_sidecar(a, "web", identities["web"], cp_ip, trust, work, runner, children)
    hello = {
        v: _start_sidecar(pod, f"hello-{v}", identities["hello"], cp_ip, trust, work, runner, children)
        for v, pod in versions.items()
    }
    for workload in (web, *hello.values()):
        _wait_ready(workload, runner)
    _start_apps(hello, children)
    return PodMesh(pods, work, children, cp, web, hello, outside, mesh_file, runner, cp_ip, trust)


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


def start_controlplane(
    cp: Pod, work: Path, runner: Runner, children: Children, source: list[str] | None = None
) -> Path:
    """``controlplane serve`` in its pod, the mesh from ``source`` (its flags; default the work
    directory's ``mesh.yaml``); returns the CA's trust bundle, readable by sidecars."""
    (work / "tokens").touch()
    management = work / "management-tokens"
    write_token(management, OPERATOR, work / "meshctl.token")
    _readable_by_mesh_user(management, mode=0o600)  # the image runs the controlplane as 1337
    state = work / CONTROLPLANE_STATE
    state.mkdir()
    _readable_by_mesh_user(state, mode=0o700)
    ca = state / "ca"
    argv = ["serve", "--ca-dir", runner.path(ca), "--tokens", runner.path(work / "tokens")]
    argv += ["--management-tokens", runner.path(management)]
    argv += source or ["--mesh", runner.path(work / "mesh.yaml")]
    argv += ["--xds-address", f"127.0.0.1:{XDS_PORT}"]
    argv += ["--xds-tls-address", f"0.0.0.0:{XDS_TLS_PORT}", "--xds-tls-san", CONTROLPLANE_NAME]
    child = children.start("the controlplane", runner.controlplane(cp, argv), "controlplane.log")
    asyncio.run(children.wait_for_line(child, r" over TLS on ", START_TIMEOUT))
    trust = work / "trust.pem"
    shutil.copyfile(ca / "ca.crt", trust)
    return _readable_by_mesh_user(trust)


def _start_sidecar(
    pod: Pod,
    group: str,
    identity: str,
    cp_ip: str,
    trust: Path,
    work: Path,
    runner: Runner,
    children: Children,
) -> Workload:
    """The init container's capture, then the sidecar as uid 1337 (not waited for here)."""
    installed = runner.meshproxy(pod, ["iptables"], COMMAND_TIMEOUT)
    if installed.returncode != 0:
        raise RuntimeError(f"meshproxy iptables in pod {pod.name}: {installed.stderr.strip()}")
    config = work / f"{pod.name}.bootstrap.json"
    config.write_text(json.dumps(bootstrap(f"{group}-{pod.name}", group, cp_ip, runner.path(trust))))
    _readable_by_mesh_user(config)
    token = _readable_by_mesh_user(
        write_token(work / "tokens", identity, work / f"{pod.name}.token"), mode=0o600
    )
    argv = ["run", "-c", runner.path(config), "--sidecar"]
    argv += ["--ca-address", f"{CONTROLPLANE_NAME}:{XDS_TLS_PORT}", "--ca-trust", runner.path(trust)]
    argv += ["--identity", identity, "--token-file", runner.path(token)]
    argv += ["--cert-dir", f"{runner.cert_root}/{group}"]
    child = children.start(
        f"{group}'s sidecar in pod {pod.name}", runner.sidecar(pod, group, argv), f"{pod.name}.sidecar.log"
    )
    return Workload(pod, group, identity, child)


def _wait_ready(workload: Workload, runner: Runner) -> None:
    """``meshproxy wait-ready`` in the pod: the sidecar has its SVID and first complete config."""
    waited = runner.meshproxy(
        workload.pod, ["wait-ready", "--timeout", str(START_TIMEOUT)], START_TIMEOUT + COMMAND_TIMEOUT
    )
    if waited.returncode != 0:
        raise workload.sidecar.failure(f"was not ready: {waited.stderr.strip()}")


def _in_repo(argv: list[str]) -> list[str]:
    """``argv`` with this checkout on PYTHONPATH (``ip netns exec`` keeps the environment)."""
    return ["env", f"PYTHONPATH={REPO}", *argv]
