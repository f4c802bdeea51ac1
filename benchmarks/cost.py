"""Scenario 7: cost: resident memory of an idle sidecar and per 1,000 clusters, CPU per 1,000 req/s.

``python -m benchmarks.cost [--quick]``, for meshproxy, haproxy and nginx (targets.py configures
them for the same job: one worker, keep-alive both sides, no access log). Three measurements:

- ``memory``: RSS (``VmRSS`` from /proc, the process and its direct children, so nginx's master
  and worker) of the running proxy after its warm-up; then of a fresh one of the same kind with
  the benchmark config and no traffic (``idle``), and of a fresh one with ``CLUSTERS`` more
  clusters of ``ENDPOINTS_PER_CLUSTER`` endpoints each and a route to each (a haproxy backend and
  ``use_backend`` rule, an nginx ``upstream`` and ``location``); the difference is the memory
  per 1,000 clusters. The fresh proxies run on the proxy core while the measured one idles.
- ``rate1k``, ``rate2k``: the open-loop generator (openloop.py) offers 1,000 and 2,000 req/s over
  50 connections; the proxy's CPU time (utime + stime from /proc/<pid>/stat, with children) over
  the run, divided by the requests answered, gives vCPU per 1,000 req/s: the unit Istio publishes
  for Envoy. That figure is shown as a reference row (``REFERENCES``), not measured here.

The proxy is found from the port it listens on (/proc/net/tcp, then the process holding that
socket), because a measurement is given a port. Owns no product logic.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path as FsPath
from typing import Any

import yaml

from benchmarks import cli, openloop, targets
from benchmarks.runner import Measurement, Path, RunFn, Scenario, Settings, Timing, pairwise
from benchmarks.system import process_cpu_seconds

CLUSTERS = 1000
ENDPOINTS_PER_CLUSTER = 10
CONNECTIONS = 50
SETTLE_S = 0.5  # after readiness, before reading a fresh proxy's RSS
ISTIO_SOURCE = "https://istio.io/v1.15/docs/ops/deployment/performance-and-scalability/"
REFERENCES = tuple(
    {
        "path": "Envoy (Istio 1.12-1.15)",
        "measurement": m,
        "metric": "vcpu_per_krps",
        "value": 0.35,
        "source": ISTIO_SOURCE,
    }
    for m in ("rate1k", "rate2k")
)
"""Published figures shown beside the measured rows (report.py renders them, marked as such)."""

_LISTEN = "0A"


# --------------------------------------------------------------------------- /proc


def listening_inodes(proc_net_tcp: str, port: int) -> set[int]:
    """Inodes of the sockets listening on ``port`` in a /proc/net/tcp text (proc(5))."""
    inodes = set()
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(int(fields[9]))
    return inodes


def vm_rss_bytes(status: str) -> int:
    """``VmRSS`` of a /proc/<pid>/status text, in bytes (0 when absent: a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", f"VmRSS in {unit}"
            return int(value) * 1024
    return 0


def vcpu_per_krps(cpu_s: float, requests: int) -> float:
    """vCPU per 1,000 req/s: CPU seconds per request times 1,000 (the rate cancels out)."""
    return cpu_s * 1000 / requests if requests else float("nan")


def _ppid(pid: int) -> int:
    stat = FsPath(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def listener_pid(port: int) -> int:
    """The process listening on 127.0.0.1:``port``: of several holding the socket (nginx's master
    and worker), the one whose parent does not hold it."""
    inodes = listening_inodes(FsPath("/proc/net/tcp").read_text(), port)
    holders = set()
    for entry in FsPath("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                    holders.add(int(entry.name))
                    break
    roots = [pid for pid in holders if _ppid(pid) not in holders]
    if len(roots) != 1:
        raise RuntimeError(f"expected one process listening on port {port}, found {sorted(holders)}")
    return roots[0]


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its direct children (nginx's worker), in MiB."""
    total = 0
    for entry in FsPath("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if entry.name.isdigit() and (int(entry.name) == pid or _ppid(int(entry.name)) == pid):
                total += vm_rss_bytes((entry / "status").read_text())
    return round(total / 2**20, 1)


# --------------------------------------------------------------------------- configs with N clusters


def _endpoint(i: int, j: int) -> tuple[str, int]:
    return f"10.{i // 250}.{i % 250}.{j + 1}", 8080


def meshproxy_config(port: int, upstream_port: int, admin_port: int, clusters: int) -> str:
    doc = yaml.safe_load(targets.meshproxy_bootstrap(port, upstream_port, admin_port))
    static = doc["static_resources"]
    for i in range(clusters):
        hosts = [_endpoint(i, j) for j in range(ENDPOINTS_PER_CLUSTER)]
        static["clusters"].append(
            {
                "name": f"c{i}",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": f"c{i}",
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {"endpoint": {"address": {"socket_address": {"address": a, "port_value": p}}}}
                                for a, p in hosts
                            ]
                        }
                    ],
                },
            }
        )
    hcm = static["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    routes[:0] = [{"match": {"prefix": f"/c{i}/"}, "route": {"cluster": f"c{i}"}} for i in range(clusters)]
    # JSON: the proxy reads it with json; its YAML reader (pure-Python PyYAML) takes 15 s here.
    return json.dumps(doc)


def haproxy_config(port: int, upstream_port: int, clusters: int) -> str:
    base = targets.haproxy_config(port, upstream_port)
    rules = "".join(f"    use_backend c{i} if {{ path_beg /c{i}/ }}\n" for i in range(clusters))
    base = base.replace("    default_backend upstream\n", rules + "    default_backend upstream\n")
    backends = []
    for i in range(clusters):
        servers = "".join(
            f"    server s{j} {a}:{p}\n"
            for j, (a, p) in enumerate(_endpoint(i, j) for j in range(ENDPOINTS_PER_CLUSTER))
        )
        backends.append(f"backend c{i}\n{servers}")
    return base + "".join(backends)


def nginx_config(port: int, upstream_port: int, prefix: FsPath, clusters: int) -> str:
    base = targets.nginx_config(port, upstream_port, prefix)
    upstreams = "".join(
        f"    upstream c{i} {{\n"
        + "".join(
            f"        server {a}:{p};\n" for a, p in (_endpoint(i, j) for j in range(ENDPOINTS_PER_CLUSTER))
        )
        + "    }\n"
        for i in range(clusters)
    )
    locations = "".join(f"        location /c{i}/ {{ proxy_pass http://c{i}; }}\n" for i in range(clusters))
    base = base.replace("    server {\n", upstreams + "    server {\n", 1)
    return base.replace("        location / {\n", locations + "        location / {\n", 1)


def _kind(pid: int) -> str:
    cmdline = FsPath(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    for kind in ("meshproxy", "haproxy", "nginx"):
        if kind in cmdline:
            return kind
    raise RuntimeError(f"process {pid} is none of meshproxy, haproxy, nginx: {cmdline[:200]}")


@contextlib.contextmanager
def _fresh(kind: str, clusters: int, upstream_port: int, cpu: int) -> Iterator[int]:
    """A proxy of ``kind`` with ``clusters`` extra clusters, started on ``cpu``; yields its pid once ready."""
    with tempfile.TemporaryDirectory(prefix=f"bench-cost-{kind}-") as tmp:
        work, port = FsPath(tmp), targets.free_port()
        ready: Callable[[], bool] = lambda: targets.port_open(port)  # noqa: E731
        if kind == "meshproxy":
            admin = targets.free_port()
            conf = work / "bootstrap.json"
            conf.write_text(meshproxy_config(port, upstream_port, admin, clusters))
            argv = [sys.executable, "-m", "meshproxy", "run", "-c", str(conf)]
            ready = lambda: targets.http_ok(admin, "/ready")  # noqa: E731
        elif kind == "haproxy":
            conf = work / "haproxy.cfg"
            conf.write_text(haproxy_config(port, upstream_port, clusters))
            argv = ["haproxy", "-db", "-f", str(conf)]
        else:
            conf = work / "nginx.conf"
            conf.write_text(nginx_config(port, upstream_port, work, clusters))
            argv = [
                "nginx",
                "-p",
                str(work),
                "-e",
                str(work / "error.log"),
                "-c",
                str(conf),
                "-g",
                "daemon off;",
            ]
        with (work / "out.log").open("wb") as log:
            proc = subprocess.Popen(
                targets.pinned(cpu, argv), stdout=log, stderr=subprocess.STDOUT, cwd=targets.REPO_ROOT
            )
        try:
            deadline = time.monotonic() + targets.READY_TIMEOUT_S
            while not ready():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (work / "out.log").read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{kind} with {clusters} clusters did not start: {tail}")
                time.sleep(0.05)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(targets.STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def memory(settings: Settings, port: int) -> dict[str, Any]:
    pid = listener_pid(port)
    kind, upstream_port = _kind(pid), port  # the fresh proxies' upstream is never called
    figures = {"rss_mb": tree_rss_mb(pid)}
    for name, clusters in (("idle_mb", 0), ("clusters_1k_mb", CLUSTERS)):
        with _fresh(kind, clusters, upstream_port, settings.cpu_proxy) as fresh:
            time.sleep(SETTLE_S)
            figures[name] = tree_rss_mb(fresh)
    figures["per_1k_clusters_mb"] = round(
        (figures["clusters_1k_mb"] - figures["idle_mb"]) * 1000 / CLUSTERS, 1
    )
    return figures


def at_rate(rate: int) -> RunFn:
    def run(settings: Settings, port: int) -> dict[str, Any]:
        pid = listener_pid(port)
        before = process_cpu_seconds(pid)
        metrics = openloop.measure(settings.cpu_load, port, rate, settings.duration_s, CONNECTIONS)
        cpu_s = process_cpu_seconds(pid) - before
        metrics["vcpu_per_krps"] = round(vcpu_per_krps(cpu_s, metrics["requests"]), 3)
        metrics["rss_mb"] = tree_rss_mb(pid)
        return metrics

    return run


_PROXIES = ("meshproxy", "haproxy", "nginx")

SCENARIO = Scenario(
    name="cost",
    title="Scenario 7: cost: memory of an idle sidecar and per 1,000 clusters, vCPU per 1,000 req/s",
    paths=tuple(Path(t, t) for t in _PROXIES),
    measurements=(
        Measurement(
            "memory",
            f"Resident memory, MiB: running, fresh idle, fresh with {CLUSTERS:,} more clusters "
            f"of {ENDPOINTS_PER_CLUSTER} endpoints",
            "memory",
            memory,
        ),
        Measurement(
            "rate1k", f"Open loop, 1,000 req/s over {CONNECTIONS} connections", "latency", at_rate(1000)
        ),
        Measurement(
            "rate2k", f"Open loop, 2,000 req/s over {CONNECTIONS} connections", "latency", at_rate(2000)
        ),
    ),
    comparisons=pairwise(
        [("meshproxy", "haproxy"), ("meshproxy", "nginx")],
        (
            ("idle RSS", "memory", "idle_mb"),
            ("RSS per 1,000 clusters", "memory", "per_1k_clusters_mb"),
            ("vCPU per 1k req/s at 1k req/s", "rate1k", "vcpu_per_krps"),
            ("vCPU per 1k req/s at 2k req/s", "rate2k", "vcpu_per_krps"),
        ),
    ),
    quick=Timing(rounds=1, duration_s=2),
    full=Timing(rounds=3, duration_s=10),
    note=(
        "vCPU per 1,000 req/s = the proxy's CPU seconds over the run x 1,000 / requests answered "
        "(utime + stime of the proxy and its direct children). The Envoy row is Istio's published "
        f"figure ({ISTIO_SOURCE}: 1,000 services, 2,000 sidecars, 70,000 req/s mesh-wide), not "
        "measured here. RSS per 1,000 clusters is fresh-with-clusters minus fresh-idle."
    ),
    columns=(
        "rps",
        "p50_ms",
        "p99_ms",
        "vcpu_per_krps",
        "proxy_cpu_us_per_req",
        "rss_mb",
        "idle_mb",
        "clusters_1k_mb",
        "per_1k_clusters_mb",
        "errors",
    ),
)

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], ["cost"]))
