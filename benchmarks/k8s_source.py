"""The Kubernetes source at scale: controlplane memory, time to first push, push latency.

``python -m benchmarks.k8s_source [--services 1000] [--per-service 10] [--injected 0]
[--pushes 30] [--json]``. No API server can run here, so the cluster is the tests' local API
server (``tests/integration/k8s_api.py``, HTTPS, list/watch), in this process, holding
``--services`` Services over 10 namespaces, each with ``--per-service`` ready endpoints in one
EndpointSlice and as many Pods over 3 zones' Nodes (the first ``--injected`` services' pods
injected: each is a sidecar group, whose ``virtualOutbound`` holds every service). A
``controlplane serve --kubernetes`` process reads it; an ADS client in this process (a
proxyless gRPC client's node, the ``default`` group) subscribes to one service's endpoints:

- ``first_push_s``: from the process's start to the first snapshot published (``/ready``
  answers 200, polled every 10 ms; interpreter start and imports included), and
  ``first_push_after_listening_s``: from the "serving xDS" line (gRPC is up, the reflectors
  are listing) to it: list, translate, publish;
- memory: VmRSS and VmHWM (peak), PSS and USS of the controlplane after the first push, and the
  same for an empty cluster (the baseline), in MiB;
- ``push_latency_ms``: ``--pushes`` times, one endpoint added to or removed from the watched
  service's EndpointSlice; from the API server's write (the watch event leaving) to the ADS
  response carrying the new endpoint count (watch, batch window, translate with the Memo,
  Envoy resources for every group, snapshot, ADS). Median, p90, max.

Owns no product logic.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from benchmarks.idle_rss import _ready, memory
from benchmarks.system import loop_factory, machine_facts

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the local API server and its object builders

from integration.k8s_api import FakeKubeApi  # noqa: E402
from k8s_objects import NODES, PODS, SERVICES, SLICES, endpoint, endpoint_slice, node, pod, service  # noqa: E402

CLA = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
NAMESPACES = 10
ZONES = ("eu-1a", "eu-1b", "eu-1c")
START_TIMEOUT_S = 120.0
PUSH_TIMEOUT_S = 60.0
READY_POLL_S = 0.01


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def populate(fake: FakeKubeApi, services: int, per_service: int, injected: int) -> None:
    """The cluster, written straight into the store (no watch is open yet)."""
    for zone in ZONES:
        fake.put(NODES, node(f"node-{zone}", region="eu", zone=zone))
    for i in range(services):
        namespace, name = f"ns{i % NAMESPACES}", f"svc{i}"
        fake.put(SERVICES, service(namespace, name, f"10.96.{i // 256}.{i % 256}"))
        pods = [f"{name}-{j}" for j in range(per_service)]
        for j, pod_name in enumerate(pods):
            fake.put(
                PODS,
                pod(
                    namespace,
                    pod_name,
                    service_account=name,
                    labels={"app": name},
                    injected=i < injected,
                    node=f"node-{ZONES[j % len(ZONES)]}",
                ),
            )
        fake.put(SLICES, web_slice(i, per_service))


def web_slice(i: int, count: int) -> dict[str, Any]:
    endpoints = [
        endpoint(_ip(i, j), f"svc{i}-{j}", zone=ZONES[j % len(ZONES)], node=f"node-{ZONES[j % len(ZONES)]}")
        for j in range(count)
    ]
    return endpoint_slice(f"ns{i % NAMESPACES}", f"svc{i}-abc", f"svc{i}", endpoints)


def _ip(i: int, j: int) -> str:
    n = i * 64 + j
    return f"10.{128 + n // 65536}.{(n // 256) % 256}.{n % 256}"


class EdsWatch:
    """One ADS stream subscribed to one ClusterLoadAssignment, ACKing every response."""

    def __init__(self, target: str, name: str) -> None:
        self.name = name
        self.channel = grpc.aio.insecure_channel(target)
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        self.node = base_pb2.Node(id="bench~k8s", cluster="default")

    async def _outgoing(self) -> Any:
        while True:
            yield await self.requests.get()

    async def responses(self) -> Any:
        """(arrival time, endpoint count) for every response."""
        self.requests.put_nowait(
            discovery_pb2.DiscoveryRequest(node=self.node, type_url=CLA, resource_names=[self.name])
        )
        stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).StreamAggregatedResources(
            self._outgoing()
        )
        async for response in stream:
            arrived = time.perf_counter()
            self.requests.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    node=self.node,
                    type_url=CLA,
                    resource_names=[self.name],
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                )
            )
            for resource in response.resources:
                cla = endpoint_pb2.ClusterLoadAssignment()
                resource.Unpack(cla)
                if cla.cluster_name == self.name:
                    yield arrived, sum(len(group.lb_endpoints) for group in cla.endpoints)


async def run_case(services: int, per_service: int, injected: int, pushes: int) -> dict[str, Any]:
    async with FakeKubeApi() as fake:
        populate(fake, services, per_service, injected)
        work = Path(tempfile.mkdtemp(prefix="bench-k8s-"))
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *(
                sys.executable,
                "-m",
                "controlplane",
                "serve",
                "--kubernetes",
                "--kubeconfig",
                str(fake.kubeconfig()),
            ),
            *("--state-dir", str(work), "--xds-address", "127.0.0.1:0", "--xds-tls-address", "off"),
            *("--log-level", "warning", "--admin-address", "127.0.0.1:0"),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=(work / "controlplane.log").open("wb"),
        )
        assert proc.stdout is not None
        try:
            line = ""
            async with asyncio.timeout(START_TIMEOUT_S):
                while "serving xDS (ADS) on" not in line:
                    line = (await proc.stdout.readline()).decode()
                    if not line:
                        raise RuntimeError((work / "controlplane.log").read_text())
            listening = time.perf_counter()
            target = line.rsplit(" ", 1)[1].strip()
            while "serving /metrics and /ready on" not in line:
                line = (await proc.stdout.readline()).decode()
            admin = int(line.rsplit(":", 1)[1])
            async with asyncio.timeout(START_TIMEOUT_S):
                while not await asyncio.to_thread(_ready, admin):
                    await asyncio.sleep(READY_POLL_S)
            first = time.perf_counter()
            peak = _peak_rss_mib(proc.pid)
            result: dict[str, Any] = {
                "services": services,
                "endpoints": services * per_service,
                "injected_services": injected,
                "first_push_s": round(first - started, 3),
                "first_push_after_listening_s": round(first - listening, 3),
                "memory": memory(proc.pid) | {"peak_rss_mib": peak},
            }
            if not pushes:
                return result
            watch = EdsWatch(target, "svc0.ns0")
            responses = watch.responses().__aiter__()
            async with asyncio.timeout(PUSH_TIMEOUT_S):
                _, count = await anext(responses)
            latencies = []
            for k in range(pushes):
                wanted = per_service - 1 if k % 2 == 0 else per_service
                written = time.perf_counter()
                fake.put(SLICES, web_slice(0, wanted))
                async with asyncio.timeout(PUSH_TIMEOUT_S):
                    while count != wanted:
                        arrived, count = await anext(responses)
                latencies.append((arrived - written) * 1000)
            ordered = sorted(latencies)
            result["push_latency_ms"] = {
                "median": round(statistics.median(ordered), 1),
                "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
                "max": round(ordered[-1], 1),
                "n": len(ordered),
            }
            await watch.channel.close()
            return result
        finally:
            proc.terminate()
            await proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.k8s_source", description=__doc__.splitlines()[0])
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--per-service", type=int, default=10)
    p.add_argument("--injected", type=int, default=0, help="services whose pods run sidecars")
    p.add_argument("--pushes", type=int, default=30)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    loop = loop_factory()()
    try:
        baseline = loop.run_until_complete(run_case(0, 0, 0, 0))
        result = loop.run_until_complete(
            run_case(args.services, args.per_service, args.injected, args.pushes)
        )
    finally:
        loop.close()
    if args.json:
        print(json.dumps({"machine": machine_facts(), "baseline": baseline, "result": result}, indent=2))
        return 0
    for name, r in (("empty cluster", baseline), ("cluster", result)):
        m = r["memory"]
        print(
            f"{name}: {r['services']} services / {r['endpoints']} endpoints ({r['injected_services']} "
            f"injected): first push {r['first_push_s']} s after start, {r['first_push_after_listening_s']} "
            f"s after listening; RSS {m['rss_mib']} MiB (peak {m['peak_rss_mib']}), USS {m['uss_mib']} MiB"
        )
    if "push_latency_ms" in result:
        lat = result["push_latency_ms"]
        print(
            f"push latency after an EndpointSlice change: median {lat['median']} ms, p90 {lat['p90']} ms, "
            f"max {lat['max']} ms (n={lat['n']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
