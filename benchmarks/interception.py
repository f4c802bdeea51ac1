"""Scenario 9: the mesh path between two pods, through transparent interception vs addressed explicitly.

Two pods (controlplane/demo/pods.py: network namespaces on a bridge). Pod A runs wrk (the load)
and sidecar A; pod B runs sidecar B and the 64-byte upstream on 127.0.0.1:8080. Both sidecars
run ``meshproxy run`` as uid 1337 from static bootstraps (no controlplane: deterministic) and talk
mutual TLS 1.3 with ``ecdh_curves: [X25519MLKEM768]`` (mesh_path.py's pair, SPIFFE URI SAN
matched both ways). ``meshproxy iptables`` is installed in both pods (B captures inbound port
8080 only, ``-b 8080``). Each sidecar has both shapes, so the two paths differ only in how
traffic finds the sidecars:

- ``explicit``: wrk → 127.0.0.1:18080 (A's plaintext listener; loopback is not captured) → mTLS
  to B_IP:18443 (B's explicit mTLS listener; not captured) → upstream;
- ``intercepted``: wrk → http://VIP:8080/ (a service VIP nobody owns) → A's nat OUTPUT redirect
  to 15001 (``virtualOutbound``: ``use_original_dst``, the original_dst listener filter, a chain
  matching VIP/32 by ``prefix_ranges`` and port 8080) → mTLS to B_IP:8080 → B's nat PREROUTING
  redirect to 15006 (``virtualInbound``: original_dst filter, a chain on destination port 8080
  with the DownstreamTlsContext) → upstream.

Both sidecars run on the proxy core as children of one ``sh`` (targets.group_argv), so the proxy
CPU per request is the pair's; wrk and the upstream run on the load core (``taskset`` is
inherited through ``ip netns exec`` and ``setpriv``, which exec). Every path start builds fresh
pods and removes them after its measurements. Needs root (namespaces, netfilter): without it
both paths are skipped with that reason. Depends on the pods harness, not on the proxy's code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import yaml

from benchmarks import cli, targets
from benchmarks.runner import Measurement, Path, RunFn, Scenario, Settings, Timing, pairwise
from benchmarks.tls_hop import (
    CLIENT_ID,
    SERVER_ID,
    common_tls_context,
    downstream_tls,
    upstream_tls,
    write_certs,
    wrk_url,
)
from controlplane.demo.pods import SIDECAR_UID, Pod, Pods

CONNECTIONS = 50
CURVES = ["X25519MLKEM768"]
VIP = "10.213.0.200"  # the service's virtual IP: outside the pods' addresses, owned by nobody
SERVICE_PORT = 8080  # the upstream's port in B, and the service port on the VIP
EXPLICIT_PORT = 18080  # A's plaintext listener on 127.0.0.1
EXPLICIT_TLS_PORT = 18443  # B's explicit mTLS listener (not captured: B captures 8080 only)
OUTBOUND, INBOUND, ADMIN = 15001, 15006, 15000
ROOT_REASON = "the interception scenario needs root (network namespaces, iptables); run it as root"
TOOLS = ("ip", "setpriv", "iptables-restore", "curl", "wrk")
ORIGINAL_DST_FILTER = {
    "name": "envoy.filters.listener.original_dst",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
    },
}
URLS = {"explicit": f"http://127.0.0.1:{EXPLICIT_PORT}/", "intercepted": f"http://{VIP}:{SERVICE_PORT}/"}


# -- configurations (pure) ----------------------------------------------------------------------


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _http(stat_prefix: str, cluster: str) -> dict[str, Any]:
    """targets.meshproxy_bootstrap's HTTP connection manager (everything to one cluster)."""
    doc = yaml.safe_load(targets.meshproxy_bootstrap(0, 0, 0))
    hcm: dict[str, Any] = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm["typed_config"]["stat_prefix"] = stat_prefix
    hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] = cluster
    return hcm


def _chain(
    stat_prefix: str, cluster: str, match: dict[str, Any] | None = None, tls: dict[str, Any] | None = None
) -> dict[str, Any]:
    chain: dict[str, Any] = {"filters": [_http(stat_prefix, cluster)]}
    if match is not None:
        chain["filter_chain_match"] = match
    if tls is not None:
        chain["transport_socket"] = tls
    return chain


def _cluster(name: str, host: str, port: int, tls: dict[str, Any] | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
    }
    if tls is not None:
        cluster["transport_socket"] = tls
    return cluster


def _bootstrap(node: str, listeners: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "node": {"id": node, "cluster": node},
        "admin": {"address": _address("127.0.0.1", ADMIN)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def sidecar_a(b_ip: str, certs: dict[str, FsPath]) -> dict[str, Any]:
    """Pod A's sidecar: the explicit listener and ``virtualOutbound``, each to B over PQ mTLS."""
    tls = upstream_tls(
        common_tls_context(certs["client_cert"], certs["client_key"], CURVES, certs["ca"], SERVER_ID)
    )
    explicit = {
        "name": "explicit",
        "address": _address("127.0.0.1", EXPLICIT_PORT),
        "filter_chains": [_chain("explicit", "hello-explicit")],
    }
    service = {
        "destination_port": SERVICE_PORT,
        "prefix_ranges": [{"address_prefix": VIP, "prefix_len": 32}],
    }
    outbound = {
        "name": "virtualOutbound",
        "address": _address("0.0.0.0", OUTBOUND),
        "use_original_dst": True,
        "listener_filters": [ORIGINAL_DST_FILTER],
        "filter_chains": [_chain("outbound_hello", "hello", service)],
    }
    clusters = [
        _cluster("hello-explicit", b_ip, EXPLICIT_TLS_PORT, tls),
        _cluster("hello", b_ip, SERVICE_PORT, tls),
    ]
    return _bootstrap("pod-a", [explicit, outbound], clusters)


def sidecar_b(certs: dict[str, FsPath]) -> dict[str, Any]:
    """Pod B's sidecar: an explicit mTLS listener and ``virtualInbound``, each to the upstream."""
    tls = downstream_tls(
        common_tls_context(certs["server_cert"], certs["server_key"], CURVES, certs["ca"], CLIENT_ID),
        require_client_certificate=True,
    )
    explicit = {
        "name": "explicit",
        "address": _address("0.0.0.0", EXPLICIT_TLS_PORT),
        "filter_chains": [_chain("explicit", "app", tls=tls)],
    }
    inbound = {
        "name": "virtualInbound",
        "address": _address("0.0.0.0", INBOUND),
        "listener_filters": [ORIGINAL_DST_FILTER],
        "filter_chains": [_chain("inbound_8080", "app", {"destination_port": SERVICE_PORT}, tls)],
    }
    return _bootstrap("pod-b", [explicit, inbound], [_cluster("app", "127.0.0.1", SERVICE_PORT)])


# -- the pods -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Live:
    """A started path: its pods and the URL wrk calls from pod A."""

    a: Pod
    b: Pod
    url: str


def _answers(pod: Pod, url: str) -> bool:
    """A request from ``pod`` (as root, so captured like an application's) gets a 200."""
    argv = ["curl", "-sf", "-o", "/dev/null", "--max-time", "1", url]
    return pod.run(*argv, check=False).returncode == 0


def _write(directory: FsPath, name: str, doc: dict[str, Any]) -> FsPath:
    path = directory / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o644)
    return path


class PodPaths:
    """Starts a path in fresh pods (``start``, the scenario's Start) and loads it (``load``)."""

    def __init__(self) -> None:
        self.live: Live | None = None

    @contextlib.contextmanager
    def start(self, path: Path, settings: Settings) -> Iterator[targets.Running]:
        if os.geteuid() != 0:
            raise targets.TargetStartError(ROOT_REASON)
        if missing := [t for t in TOOLS if shutil.which(t) is None]:
            raise targets.TargetStartError(f"the interception scenario needs {', '.join(missing)}")
        workdir = FsPath(tempfile.mkdtemp(prefix="bench-pods-"))
        workdir.chmod(0o755)  # uid 1337 reads the bootstraps and certificates
        with contextlib.ExitStack() as stack:  # unwinds: processes, then pods, then the folder
            stack.callback(shutil.rmtree, workdir, True)
            try:
                running = self._up(stack.enter_context(Pods()), path, settings, workdir, stack)
            except (OSError, subprocess.SubprocessError) as exc:
                raise targets.TargetStartError(f"pods for {path.label}: {exc}") from exc
            try:
                yield running
            finally:
                self.live = None

    def _up(
        self,
        pods: Pods,
        path: Path,
        settings: Settings,
        workdir: FsPath,
        stack: contextlib.ExitStack,
    ) -> targets.Running:
        a, b = pods.add("a", hosts={"hello": VIP}), pods.add("b")
        for pod, flags in ((a, ()), (b, ("-b", str(SERVICE_PORT)))):
            done = pod.meshproxy("iptables", *flags)
            if done.returncode != 0:
                raise targets.TargetStartError(f"meshproxy iptables in pod {pod.name}: {done.stderr.strip()}")
        certs = write_certs(workdir)
        for pem in certs.values():
            pem.chmod(0o644)
        log = workdir / "upstream.log"
        argv = [sys.executable, "-m", "benchmarks.upstream", "--port", str(SERVICE_PORT)]
        upstream = targets._spawn(targets.pinned(settings.cpu_load, b.argv(argv)), log)
        stack.callback(targets._stop, upstream)
        targets._wait(lambda: _answers(b, f"http://127.0.0.1:{SERVICE_PORT}/"), upstream, "upstream", log)
        sidecars = [
            pod.argv(
                [sys.executable, "-m", "meshproxy", "run", "-c", str(_write(workdir, name, doc))], SIDECAR_UID
            )
            for pod, name, doc in ((a, "a.yaml", sidecar_a(b.ipv4, certs)), (b, "b.yaml", sidecar_b(certs)))
        ]
        log = workdir / "sidecars.log"
        pair = targets._spawn(targets.pinned(settings.cpu_proxy, targets.group_argv(sidecars)), log)
        stack.callback(targets._stop, pair)
        targets._wait(lambda: all(_answers(a, u) for u in URLS.values()), pair, "sidecars", log)
        self.live = Live(a, b, URLS[path.target])
        if settings.warmup_s:
            self._wrk(CONNECTIONS, settings.warmup_s, settings.cpu_load)
        port = EXPLICIT_PORT if path.target == "explicit" else SERVICE_PORT
        return targets.Running(path.target, port, pair.pid)

    def _wrk(self, connections: int, duration_s: float, cpu: int) -> dict[str, Any]:
        assert self.live is not None, "load before start"
        within = ("ip", "netns", "exec", self.live.a.netns)
        return wrk_url(self.live.url, connections, duration_s, cpu, within=within)

    def load(self, connections: int) -> RunFn:
        """wrk in pod A over ``connections`` keep-alive connections to the started path's URL."""

        def run(settings: Settings, port: int) -> dict[str, Any]:
            del port  # the URL is the path's: a VIP in the pod, or the pod's loopback
            return self._wrk(connections, settings.duration_s, settings.cpu_load)

        return run


PODS = PodPaths()
_PAIR = [("intercepted", "explicit")]

SCENARIO = Scenario(
    name="interception",
    title="Scenario 9: pod A → pod B over PQ mTLS, through iptables interception vs addressed explicitly",
    paths=(Path("explicit", "explicit"), Path("intercepted", "intercepted")),
    measurements=(
        Measurement(
            "saturate",
            f"Saturating throughput (wrk -t1 -c{CONNECTIONS}, in pod A)",
            "throughput",
            PODS.load(50),
        ),
        Measurement("serial", "Serial round trip (wrk -t1 -c1, in pod A)", "latency", PODS.load(1)),
    ),
    comparisons=pairwise(
        _PAIR,
        (
            ("saturating req/s", "saturate", "rps"),
            ("serial p50", "serial", "p50_ms"),
            ("pair CPU µs/req (saturating)", "saturate", "proxy_cpu_us_per_req"),
        ),
    )
    + pairwise(
        _PAIR,
        (
            ("serial p50, ms", "serial", "p50_ms"),
            ("serial p99, ms", "serial", "p99_ms"),
            ("pair CPU, µs/req (saturating)", "saturate", "proxy_cpu_us_per_req"),
            ("pair CPU, µs/req (serial)", "serial", "proxy_cpu_us_per_req"),
        ),
        kind="diff",
    ),
    quick=Timing(rounds=2, duration_s=2),
    full=Timing(rounds=5, duration_s=10),
    note=(
        "Proxy CPU is both sidecars together (children of one sh on the proxy core); wrk runs in pod A "
        "and the upstream in pod B, both on the load core. The interception overhead is the "
        "intercepted path minus the explicit one, per round: CPU in µs per request (the pair's: "
        "SO_ORIGINAL_DST on both sides, the hand-off and chain match, the NAT in the kernel is "
        "charged to softirq, not to the proxies) and added serial latency (ms; row titles carry the "
        "unit). Pods are built afresh for each path start; needs root."
    ),
    filter_targets=False,
    start=PODS.start,
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], ["interception"]))
