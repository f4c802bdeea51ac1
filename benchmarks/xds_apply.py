"""How long the proxy's event loop stalls while it applies a big xDS update (issue 4).

``python -m benchmarks.xds_apply [--quick] [--clusters N] [--endpoints E]`` starts a scripted
state-of-the-world control plane in a child process (so its serialisation does not run on the
measured loop), and an in-process proxy with ``dynamic_resources`` pointing at it. The control
plane sends N EDS clusters, their ClusterLoadAssignments (E endpoints in all), one listener
with RDS and its routes; once the proxy ACKs, it moves every endpoint (a second EDS update).

A monitor task on the proxy's loop wakes every millisecond; the longest gap between two
wake-ups, less the millisecond, is the longest stall. Reported per phase: the first complete
config (decode, compile, warm, apply) and the endpoint move, with the ADS client's own
longest uninterrupted slice. On a shared machine a stall also holds time the OS gave other
processes, so each phase also reports the CPU time the loop's thread spent inside its longest
stall (``..._stall_cpu_ms``: what the proxy's own work cost) and its longest garbage
collection (``..._gc_ms``). Goal (issue 4): 1,000 clusters / 10,000 endpoints without a
stall over 50 ms. Owns no product logic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import platform
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3 import discovery_pb2 as dpb
from google.protobuf import any_pb2, json_format

from meshproxy import _ext
from meshproxy.cli import GC_GEN0_THRESHOLD, new_event_loop

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


# --------------------------------------------------------------------------- the control plane (child)


def _pack(messages: list[Any]) -> list[any_pb2.Any]:
    out = []
    for m in messages:
        packed = any_pb2.Any()
        packed.Pack(m)
        out.append(packed)
    return out


def _resources(clusters: int, endpoints: int, shift: int) -> dict[str, list[Any]]:
    import meshproxy.config.bootstrap  # noqa: F401  (registers the HCM and router messages)

    per = max(1, endpoints // clusters)
    cds = [
        json_format.ParseDict(
            {
                "name": f"c{i}",
                "type": "EDS",
                "connect_timeout": "1s",
                "eds_cluster_config": {"eds_config": {"ads": {}}},
            },
            cluster_pb2.Cluster(),
        )
        for i in range(clusters)
    ]
    eds = [
        endpoint_pb2.ClusterLoadAssignment(
            cluster_name=f"c{i}",
            endpoints=[
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": f"10.{i // 250}.{i % 250}.{(j + shift) % 250 + 1}",
                                        "port_value": 8080,
                                    }
                                }
                            }
                        }
                        for j in range(per)
                    ]
                }
            ],
        )
        for i in range(clusters)
    ]
    hcm = {
        "@type": HCM,
        "stat_prefix": "bench",
        "rds": {"config_source": {"ads": {}}, "route_config_name": "main"},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    lds = [
        json_format.ParseDict(
            {
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
            },
            listener_pb2.Listener(),
        )
    ]
    routes = [{"match": {"prefix": f"/c{i}/"}, "route": {"cluster": f"c{i}"}} for i in range(clusters)]
    rds = [
        json_format.ParseDict(
            {"name": "main", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
            route_pb2.RouteConfiguration(),
        )
    ]
    return {CDS: cds, EDS: eds, LDS: lds, RDS: rds}


class _Scripted(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, clusters: int, endpoints: int) -> None:
        self.first = _resources(clusters, endpoints, 0)
        self.moved = _resources(clusters, endpoints, 1)[EDS]

    def StreamAggregatedResources(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        out: queue.Queue[Any] = queue.Queue()
        sent: set[str] = set()

        def read() -> None:
            with contextlib.suppress(grpc.RpcError):  # the proxy went away
                self._read(request_iterator, out, sent)

        threading.Thread(target=read, daemon=True).start()
        while True:
            yield out.get()

    def _read(self, request_iterator: Any, out: queue.Queue[Any], sent: set[str]) -> None:
        for req in request_iterator:
            if req.type_url not in sent and (req.type_url in (CDS, LDS) or req.resource_names):
                sent.add(req.type_url)
                out.put(
                    dpb.DiscoveryResponse(
                        version_info="1",
                        type_url=req.type_url,
                        nonce=f"{req.type_url}1",
                        resources=_pack(self.first[req.type_url]),
                    )
                )
            elif req.type_url == EDS and req.version_info == "1" and EDS + "2" not in sent:
                sent.add(EDS + "2")
                time.sleep(1.0)
                out.put(
                    dpb.DiscoveryResponse(
                        version_info="2", type_url=EDS, nonce="e2", resources=_pack(self.moved)
                    )
                )


def serve(clusters: int, endpoints: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_send_message_length", 1 << 28)])
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(_Scripted(clusters, endpoints), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


# --------------------------------------------------------------------------- the proxy (this process)


async def measure(port: int, timeout: float) -> dict[str, Any]:
    from meshproxy.config.bootstrap import parse_bootstrap
    from meshproxy.server import Server

    doc = {
        "node": {"id": "bench"},
        "static_resources": {
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {"address": "127.0.0.1", "port_value": port}
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
            "lds_config": {"ads": {}},
            "cds_config": {"ads": {}},
        },
    }
    server = Server(parse_bootstrap(json.dumps(doc)))
    # Per phase: [longest stall, thread CPU inside it, longest collection] (seconds).
    stalls: list[list[float]] = [[0.0, 0.0, 0.0]]

    async def monitor() -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while True:
            await asyncio.sleep(0.001)
            now, cpu = time.perf_counter(), time.thread_time()
            if now - last - 0.001 > stalls[-1][0]:
                stalls[-1][:2] = [now - last - 0.001, cpu - last_cpu]
            last, last_cpu = now, cpu

    collecting = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            stalls[-1][2] = max(stalls[-1][2], time.perf_counter() - collecting[0])

    watcher = asyncio.get_running_loop().create_task(monitor())
    started = time.perf_counter()
    await server.start()
    # The collector settings ``meshproxy run`` uses once started (cli._run).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 50, 100)
    gc.callbacks.append(on_gc)
    stalls[0] = [0.0, 0.0, 0.0]  # that collection is startup's, before any config arrived
    assert server.xds is not None
    try:
        while not server.ready:
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"no complete config within {timeout}s: {server.xds.status()}")
            await asyncio.sleep(0.01)
        first = time.perf_counter() - started
        first_slice = server.xds.stats.max_slice
        stalls.append([0.0, 0.0, 0.0])
        server.xds.stats.max_slice = 0.0
        moved_at = time.perf_counter()
        while server.xds.state.types[EDS].version_info != "2":
            if time.perf_counter() - moved_at > timeout:
                raise SystemExit("the endpoint move was not applied")
            await asyncio.sleep(0.01)
        (first_stall, first_cpu, first_gc), (move_stall, move_cpu, move_gc) = stalls
        return {
            "first_config_s": round(first, 3),
            "first_max_stall_ms": round(first_stall * 1000, 1),
            "first_max_stall_cpu_ms": round(first_cpu * 1000, 1),
            "first_max_slice_ms": round(first_slice * 1000, 1),
            "first_max_gc_ms": round(first_gc * 1000, 1),
            "move_max_stall_ms": round(move_stall * 1000, 1),
            "move_max_stall_cpu_ms": round(move_cpu * 1000, 1),
            "move_max_slice_ms": round(server.xds.stats.max_slice * 1000, 1),
            "move_max_gc_ms": round(move_gc * 1000, 1),
            "clusters_active": len(server.clusters.clusters) - 1,
            "hosts_active": sum(
                len(rt.hosts) for name, rt in server.clusters.clusters.items() if name != "xds"
            ),
        }
    finally:
        watcher.cancel()
        gc.callbacks.remove(on_gc)
        await server.close()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.xds_apply")
    p.add_argument("--quick", action="store_true", help="200 clusters / 2,000 endpoints")
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=10_000)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.clusters, args.endpoints = 200, 2000
    if args.serve:
        serve(args.clusters, args.endpoints)
        return 0
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.xds_apply",
            "--serve",
            f"--clusters={args.clusters}",
            f"--endpoints={args.endpoints}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        loop = new_event_loop()
        try:
            result = loop.run_until_complete(measure(port, timeout=120.0))
        finally:
            loop.close()
    finally:
        child.terminate()
        child.wait(timeout=10)
    facts = {
        "python": platform.python_version(),
        "loop": type(new_event_loop()).__module__.split(".")[0],
        "extensions": not _ext.NO_EXTENSIONS,
        "clusters": args.clusters,
        "endpoints": args.endpoints,
    }
    print(json.dumps({**facts, **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
