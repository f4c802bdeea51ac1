"""Scenario 6: xDS: push fan-out to 1,000 ADS streams, push-to-effect in a proxy, config apply.

``python -m benchmarks.xds [--quick]``. Each measurement brings up its own processes:

- ``fanout``: our controlplane (``AdsServer`` over a ``SnapshotCache``) in a process on the proxy
  core; a client process on the load core opens ``STREAMS`` state-of-the-world ADS streams, each
  on its own gRPC channel and TCP connection, subscribed as a sidecar is (LDS and CDS wildcard,
  EDS and RDS by name) and ACKing every response. Each push flips the weighted split of the
  route configuration (an RDS change) with ``set_snapshot``; the figure is the time from just
  before ``set_snapshot`` until the last stream has read the new version (both processes read
  CLOCK_MONOTONIC, which Linux shares between processes). Goal (issue 4): under 500 ms.
- ``effect``: a meshproxy subprocess (proxy core) on ADS to the controlplane (load core); each
  push flips ``blue 100 / green 0`` to ``0 / 100`` (the two clusters add ``x-served-by``), and a
  poller requests through the proxy every ``POLL_INTERVAL_S`` until the new colour answers:
  the whole config path (push, decode, validate, warm, swap) plus at most one poll.
- ``apply``: benchmarks/xds_apply.py's measurement (1,000 clusters / 10,000 endpoints applied
  by an in-process proxy, longest event-loop stall; goal 50 ms), its scripted control plane
  pinned to the load core and the proxy to the proxy core.

Child modes ``--serve`` (controlplane), ``--clients`` (stream fan), ``--apply-port`` (xds_apply's
proxy side) speak a line per command on stdin/stdout; one module of nearly 500 lines, as each is
the other half of a measurement. Owns no product logic; depends on controlplane.xds.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any

import yaml

from benchmarks import cli, targets
from benchmarks.runner import Measurement, Path, Scenario, Settings, Timing
from benchmarks.system import loop_factory, process_cpu_seconds
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot

STREAMS = 1000
FILLER_SERVICES = 20  # clusters and routes besides blue/green, so the config is not trivially small
HEADER = "x-served-by"
ROUTES = "routes"
POLL_INTERVAL_S = 0.001
LINE_TIMEOUT_S = 120.0
EFFECT_TIMEOUT_S = 10.0
APPLY_CLUSTERS, APPLY_ENDPOINTS = 1000, 10_000
SETTLE_S = 0.3  # after a push, for the ACKs to drain before the next one is timed
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def _address(port: int, host: str = targets.HOST) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def colour(k: int) -> str:
    """The colour push ``k`` routes all traffic to: blue for even pushes, green for odd ones."""
    return "green" if k % 2 else "blue"


def resources(k: int, listener_port: int, upstream_port: int) -> dict[str, list[dict[str, Any]]]:
    """Push ``k`` as Envoy resources (JSON form) by type URL: everything stays the same from one
    push to the next but the weighted split of the catch-all route."""
    names = ["blue", "green", *(f"svc{i}" for i in range(FILLER_SERVICES))]
    clusters = [
        {"name": n, "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": {"eds_config": {"ads": {}}}}
        for n in names
    ]

    def lb_endpoint(name: str, i: int) -> dict[str, Any]:
        if name in ("blue", "green"):  # both colours are the runner's upstream
            return {"endpoint": {"address": _address(upstream_port)}}
        return {"endpoint": {"address": _address(8080, f"10.0.{i // 250}.{i % 250 + 1}")}}

    endpoints = [
        {"cluster_name": n, "endpoints": [{"lb_endpoints": [lb_endpoint(n, i)]}]} for i, n in enumerate(names)
    ]
    split = [
        {
            "name": c,
            "weight": 100 if c == colour(k) else 0,
            "response_headers_to_add": [{"header": {"key": HEADER, "value": c}}],
        }
        for c in ("blue", "green")
    ]
    routes = [{"match": {"prefix": f"/{n}/"}, "route": {"cluster": n}} for n in names[2:]]
    routes.append({"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": split}}})
    hcm = {
        "@type": HCM,
        "stat_prefix": "bench",
        "rds": {"config_source": {"ads": {}}, "route_config_name": ROUTES},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    listener = {
        "name": "bench",
        "address": _address(listener_port),
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
    }
    route_config = {"name": ROUTES, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]}
    return {CLUSTER: clusters, ENDPOINT: endpoints, LISTENER: [listener], ROUTE: [route_config]}


def push_figures(t0_ns: int, received_ns: list[int], streams: int) -> dict[str, Any]:
    """One push: how many of ``streams`` received it, and when, in ms after ``t0_ns``."""
    lat = sorted((t - t0_ns) / 1e6 for t in received_ns)
    if not lat:
        return {"received": 0, "all_ms": None, "p50_ms": None}
    return {
        "received": len(lat),
        "all_ms": round(lat[-1], 3) if len(lat) == streams else None,
        "p50_ms": round(statistics.median(lat), 3),
    }


# --------------------------------------------------------------------------- child processes


def _snapshot(k: int, listener_port: int, upstream_port: int) -> Snapshot:
    from google.protobuf import json_format

    import meshproxy.config.bootstrap  # noqa: F401  (registers the typed_config messages)
    from controlplane.xds.snapshot import MESSAGES, resource_name

    by_type: dict[str, dict[str, Any]] = {}
    for type_url, docs in resources(k, listener_port, upstream_port).items():
        messages = [json_format.ParseDict(d, MESSAGES[type_url]()) for d in docs]
        by_type[type_url] = {resource_name(m): m for m in messages}
    return Snapshot(f"v{k}", by_type)


async def _serve(listener_port: int, upstream_port: int) -> None:
    """The controlplane: prints its port, then for each ``set K`` line sets snapshot K and prints
    the monotonic time just before ``set_snapshot``."""
    import grpc
    from prometheus_client import CollectorRegistry

    from controlplane.xds import DEFAULT_GROUP, AdsServer, Ledger, SnapshotCache

    cache = SnapshotCache()
    server = grpc.aio.server()
    AdsServer(cache, Ledger(CollectorRegistry())).add_to_server(server)
    port = server.add_insecure_port(f"{targets.HOST}:0")
    await server.start()
    cache.set_snapshot(DEFAULT_GROUP, _snapshot(0, listener_port, upstream_port))
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        k = int(line.split()[1])
        snapshot = _snapshot(k, listener_port, upstream_port)
        t0 = time.monotonic_ns()
        cache.set_snapshot(DEFAULT_GROUP, snapshot)
        print(t0, flush=True)
    await server.stop(None)


async def _clients(port: int, streams: int) -> None:
    """The stream fan: ``ready <seconds>`` once every stream holds v0, then for each
    ``wait vK T0`` line, the push figures of vK as one JSON line."""
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.discovery.v3 import ads_pb2_grpc
    from envoy.service.discovery.v3 import discovery_pb2 as d

    names = ["blue", "green", *(f"svc{i}" for i in range(FILLER_SERVICES))]
    subscriptions = {LISTENER: [], CLUSTER: [], ENDPOINT: names, ROUTE: [ROUTES]}
    got: list[dict[str, int]] = [{} for _ in range(streams)]
    counts: dict[str, int] = {}
    complete: dict[str, asyncio.Event] = {}

    def event(version: str) -> asyncio.Event:
        return complete.setdefault(version, asyncio.Event())

    async def stream(i: int, channel: grpc.aio.Channel) -> None:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        node = base_pb2.Node(id=f"fan-{i}", cluster="bench", user_agent_name="benchmarks.xds")
        for j, (type_url, subscribed) in enumerate(subscriptions.items()):
            request = d.DiscoveryRequest(type_url=type_url, resource_names=subscribed)
            if j == 0:
                request.node.CopyFrom(node)
            await call.write(request)
        while (response := await call.read()) is not grpc.aio.EOF:
            now = time.monotonic_ns()
            if response.type_url == ROUTE:
                got[i][response.version_info] = now
                counts[response.version_info] = counts.get(response.version_info, 0) + 1
                if counts[response.version_info] == streams:
                    event(response.version_info).set()
            await call.write(
                d.DiscoveryRequest(
                    type_url=response.type_url,
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                    resource_names=subscriptions[response.type_url],
                )
            )

    started = time.monotonic()
    # A local subchannel pool: one TCP connection per stream, as 1,000 sidecars would have.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(f"{targets.HOST}:{port}", options=options) for _ in range(streams)]
    tasks = [asyncio.create_task(stream(i, c)) for i, c in enumerate(channels)]
    await asyncio.wait_for(event("v0").wait(), LINE_TIMEOUT_S)
    print(f"ready {time.monotonic() - started:.3f}", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        _, version, t0 = line.split()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event(version).wait(), EFFECT_TIMEOUT_S)
        received = [g[version] for g in got if version in g]
        print(json.dumps(push_figures(int(t0), received, streams)), flush=True)
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close()


def _apply_proxy(port: int) -> None:
    from benchmarks import xds_apply
    from meshproxy.cli import new_event_loop

    loop = new_event_loop()
    try:
        print(
            json.dumps(loop.run_until_complete(xds_apply.measure(port, timeout=LINE_TIMEOUT_S))), flush=True
        )
    finally:
        loop.close()


# --------------------------------------------------------------------------- the measurements


def _line(proc: subprocess.Popen[str], timeout: float = LINE_TIMEOUT_S) -> str:
    """The next line ``proc`` prints, or RuntimeError when it exits or stays silent too long."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        err = ""
        if proc.stderr is not None:  # a file (see _spawn), so a chatty child never blocks on it
            proc.stderr.seek(0)
            err = proc.stderr.read()[-2000:]
        raise RuntimeError(f"{proc.args[-4:]} gave no answer within {timeout:.0f} s: {err}")
    return line.strip()


def _say(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _spawn(argv: list[str]) -> subprocess.Popen[str]:
    """``argv`` with pipes for its stdin and stdout, and its stderr in a temporary file."""
    err = tempfile.TemporaryFile("w+")  # noqa: SIM115  (lives as long as the child; _stop closes it)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        bufsize=1,
        cwd=targets.REPO_ROOT,
    )
    proc.stderr = err
    return proc


@contextlib.contextmanager
def _child(cpu: int, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = _spawn(targets.pinned(cpu, [sys.executable, "-m", "benchmarks.xds", *args]))
    try:
        yield proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Closing stdin ends a command loop; a child that does not end soon after is killed."""
    if proc.stdin:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def fanout(settings: Settings, upstream_port: int) -> dict[str, Any]:
    with (
        _child(settings.cpu_proxy, "--serve", "--upstream-port", str(upstream_port)) as server,
        _child(settings.cpu_load, "--clients", str(STREAMS), "--port", _line(server)) as clients,
    ):
        connect_s = float(_line(clients).split()[1])
        alls, p50s, cpu_ms = [], [], []
        for k in range(1, (4 if settings.quick else 10) + 1):
            time.sleep(SETTLE_S)
            cpu = process_cpu_seconds(server.pid)
            _say(server, f"set {k}")
            t0 = _line(server)
            _say(clients, f"wait v{k} {t0}")
            figures = json.loads(_line(clients))
            if figures["all_ms"] is None:
                raise RuntimeError(f"push {k}: {figures['received']} of {STREAMS} streams received it")
            time.sleep(SETTLE_S)  # the ACKs are part of the push's cost
            cpu_ms.append((process_cpu_seconds(server.pid) - cpu) * 1000)
            alls.append(figures["all_ms"])
            p50s.append(figures["p50_ms"])
    return {
        "streams": STREAMS,
        "pushes": len(alls),
        "connect_s": connect_s,
        "all_p50_ms": round(statistics.median(alls), 2),
        "all_max_ms": round(max(alls), 2),
        "stream_p50_ms": round(statistics.median(p50s), 2),
        "server_cpu_ms_per_push": round(statistics.median(cpu_ms), 1),
    }


def effect_bootstrap(xds_port: int, admin_port: int) -> dict[str, Any]:
    """A sidecar bootstrap with everything but its ADS server coming over ADS."""
    xds_cluster = {
        "name": "xds",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "xds",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(xds_port)}}]}],
        },
    }
    return {
        "node": {"id": "effect", "cluster": "bench"},
        "admin": {"address": _address(admin_port)},
        "static_resources": {"clusters": [xds_cluster]},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
            "lds_config": {"ads": {}},
            "cds_config": {"ads": {}},
        },
    }


def _served_by(conn: http.client.HTTPConnection) -> str | None:
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.getheader(HEADER)
    except (OSError, http.client.HTTPException):
        conn.close()  # a drained listener closes keep-alive connections; the next request reconnects
        return None


def effect(settings: Settings, upstream_port: int) -> dict[str, Any]:
    listener_port, admin_port = targets.free_port(), targets.free_port()
    serve_args = ("--serve", "--listener-port", str(listener_port), "--upstream-port", str(upstream_port))
    with (
        tempfile.TemporaryDirectory(prefix="bench-xds-") as tmp,
        _child(settings.cpu_load, *serve_args) as cp,
    ):
        conf = FsPath(tmp) / "bootstrap.yaml"
        conf.write_text(yaml.safe_dump(effect_bootstrap(int(_line(cp)), admin_port)))
        argv = targets.pinned(settings.cpu_proxy, [sys.executable, "-m", "meshproxy", "run", "-c", str(conf)])
        with (FsPath(tmp) / "proxy.log").open("wb") as log:
            proxy = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=targets.REPO_ROOT)
        try:
            conn = http.client.HTTPConnection(targets.HOST, listener_port, timeout=2)
            deadline = time.monotonic() + targets.READY_TIMEOUT_S
            while _served_by(conn) != colour(0):
                if proxy.poll() is not None or time.monotonic() > deadline:
                    tail = (FsPath(tmp) / "proxy.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the proxy did not serve the first config: {tail}")
                time.sleep(0.05)
            effects, polls = [], []
            for k in range(1, (4 if settings.quick else 10) + 1):
                time.sleep(SETTLE_S)
                _say(cp, f"set {k}")
                t0, n = int(_line(cp)), 0
                while (seen := _served_by(conn)) != colour(k):
                    n += 1
                    if (time.monotonic_ns() - t0) / 1e9 > EFFECT_TIMEOUT_S:
                        raise RuntimeError(f"push {k}: still {seen!r} after {EFFECT_TIMEOUT_S:.0f} s")
                    time.sleep(POLL_INTERVAL_S)
                effects.append((time.monotonic_ns() - t0) / 1e6)
                polls.append(n)
            conn.close()
        finally:
            proxy.terminate()
            try:
                proxy.wait(targets.STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
    return {
        "pushes": len(effects),
        "effect_p50_ms": round(statistics.median(effects), 2),
        "effect_max_ms": round(max(effects), 2),
        "polls_p50": statistics.median(polls),
    }


def apply(settings: Settings, upstream_port: int) -> dict[str, Any]:
    del upstream_port  # the applied endpoints are addresses nobody connects to
    argv = [sys.executable, "-m", "benchmarks.xds_apply", "--serve"]
    argv += [f"--clusters={APPLY_CLUSTERS}", f"--endpoints={APPLY_ENDPOINTS}"]
    cp = _spawn(targets.pinned(settings.cpu_load, argv))
    try:
        port = _line(cp)
        with _child(settings.cpu_proxy, "--apply-port", port) as proxy:
            figures = json.loads(_line(proxy))
    finally:
        cp.terminate()  # xds_apply's control plane serves until stopped
        _stop(cp)
    return {"clusters": APPLY_CLUSTERS, "endpoints": APPLY_ENDPOINTS, **figures}


SCENARIO = Scenario(
    name="xds",
    title="Scenario 6: xDS push fan-out, push-to-effect, and config apply",
    paths=(Path("controlplane + meshproxy", "direct"),),
    measurements=(
        Measurement(
            "fanout",
            f"Push fan-out: one RDS change to {STREAMS:,} SotW ADS streams (goal: all within 500 ms)",
            "xds",
            fanout,
        ),
        Measurement(
            "effect",
            f"Push-to-effect: weighted split flipped, first request served by the new cluster "
            f"(polled every {POLL_INTERVAL_S * 1000:g} ms)",
            "xds",
            effect,
        ),
        Measurement(
            "apply",
            f"Config apply: {APPLY_CLUSTERS:,} clusters / {APPLY_ENDPOINTS:,} endpoints in the proxy "
            "(goal: no event-loop stall over 50 ms)",
            "xds",
            apply,
        ),
    ),
    comparisons=(),
    quick=Timing(rounds=1, duration_s=1),
    full=Timing(rounds=3, duration_s=1),
    note=(
        "Each measurement starts its own processes: controlplane and client fan on separate cores "
        "(fanout: server on the proxy core); effect: meshproxy on the proxy core, controlplane and "
        "poller on the load core. Times run from just before `set_snapshot` (CLOCK_MONOTONIC, shared "
        "by all processes). `duration` is not used; rounds repeat the whole measurement."
    ),
    filter_targets=False,
    columns=(
        *("streams", "connect_s", "all_p50_ms", "all_max_ms", "stream_p50_ms", "server_cpu_ms_per_push"),
        *("effect_p50_ms", "effect_max_ms", "polls_p50"),
        *(
            "first_config_s",
            "first_max_stall_ms",
            "move_max_stall_ms",
            "first_max_slice_ms",
            "move_max_slice_ms",
        ),
    ),
)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        opts = dict(zip(argv[1::2], argv[2::2], strict=True))
        coro = _serve(int(opts.get("--listener-port", "0")), int(opts["--upstream-port"]))
    elif argv[:1] == ["--clients"]:
        coro = _clients(int(argv[3]), int(argv[1]))
    elif argv[:1] == ["--apply-port"]:
        _apply_proxy(int(argv[1]))
        return 0
    else:
        return cli.main(argv, ["xds"])
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
