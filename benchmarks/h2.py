"""Scenario 4: HTTP/2 and gRPC, meshproxy beside nginx (h2load) and the mesh path against direct (gRPC).

(a) h2load against an h2c (prior knowledge) reverse proxy: meshproxy (HCM codec AUTO, cluster with
``http2_protocol_options``) and nginx (``listen ... http2``, ``grpc_pass`` to a keep-alive
upstream: nginx's only HTTP/2 upstream module), both in front of the same h2c origin, an nginx
answering 64 bytes. The upstream leg is HTTP/2 for both because meshproxy does not translate
HTTP/2 to HTTP/1.1 yet. Two loads: saturating (``h2load -t1 -c10 -m10``) and serial (``-c1 -m1``);
latency percentiles come from h2load's per-request log.

(b) gRPC unary at a fixed rate: a grpc.aio client in its own process, open loop (each call is
started at its intended time, latency counted from that time, as openloop.py does for HTTP/1.1),
against a grpc.aio origin directly and through the two-sidecar mesh path (mesh_path.py's pair
with X25519MLKEM768, ALPN h2 on the mesh hop, h2 clusters on both sidecars).

Process layout: the origin runs pinned to the load core, one level below the group ``sh`` that
the runner measures (nginx's worker under its master; the gRPC server under a supervisor), so
the proxy CPU per request counts only the proxy (nginx runs ``master_process off`` for the same
reason). Each target serves one of the two jobs; a measurement on a path of the other job
records no metrics (the runner has no per-path measurements). One module because the targets,
the loads and the gRPC generator share the job registry; just under 500 lines.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path as FsPath
from typing import Any, cast

import yaml

from benchmarks import cli, targets
from benchmarks.histogram import PERCENTILES, Histogram, latency_metrics, percentile_key
from benchmarks.mesh_path import meshproxy_pair_bootstraps
from benchmarks.runner import Measurement, Path, RunFn, Scenario, Settings, Timing, pairwise
from benchmarks.tls_hop import write_certs

CLIENTS, STREAMS = 10, 10
GRPC_RATE = 100
GRPC_METHOD = "/bench.Echo/Unary"
PAYLOAD = b"x" * 64
EARLY_NS = 1_000_000
WARMUP_CALLS = 50
MAX_OUTSTANDING = 5000
BODY = "x" * 63

_JOB: dict[int, str] = {}
"""Entry port of a started target → its job, "h2c" or "grpc"; read by the measurements."""


def _load_core() -> int:
    """The load core: cli pins the orchestrating process to it before any target starts."""
    return min(os.sched_getaffinity(0))


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.h2", *args]


# -- configurations ------------------------------------------------------------------------------


def _nginx_common(prefix: FsPath) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    keepalive_requests 1000000;
    http2_max_concurrent_streams 256;
"""


def nginx_origin_config(port: int, prefix: FsPath) -> str:
    """An h2c (prior knowledge) origin answering every request with 64 bytes."""
    return (
        "worker_processes 1;\n"
        + _nginx_common(prefix)
        + f"""\
    default_type text/plain;
    server {{
        listen {targets.HOST}:{port} http2;
        location / {{ return 200 "{BODY}\\n"; }}
    }}
}}
"""
    )


def nginx_h2c_proxy_config(port: int, origin_port: int, prefix: FsPath) -> str:
    """nginx as an h2c reverse proxy to an h2c origin: one process, keep-alive upstream."""
    return (
        "master_process off;\n"
        + _nginx_common(prefix)
        + f"""\
    upstream origin {{
        server {targets.HOST}:{origin_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {targets.HOST}:{port} http2;
        location / {{ grpc_pass grpc://origin; }}
    }}
}}
"""
    )


def meshproxy_h2c_bootstrap(port: int, origin_port: int, admin_port: int) -> str:
    """targets.meshproxy_bootstrap with an HTTP/2 cluster (the listener's codec is AUTO)."""
    doc = yaml.safe_load(targets.meshproxy_bootstrap(port, origin_port, admin_port))
    doc["static_resources"]["clusters"][0]["http2_protocol_options"] = {}
    return yaml.safe_dump(doc, sort_keys=False)


def h2_mesh_pair(docs: tuple[str, str]) -> tuple[str, str]:
    """mesh_path's sidecar pair with ALPN h2 on the mesh hop and HTTP/2 clusters on both sides."""
    a, b = (yaml.safe_load(d) for d in docs)
    for doc in (a, b):
        doc["static_resources"]["clusters"][0]["http2_protocol_options"] = {}
    a_tls = a["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    a_tls["common_tls_context"]["alpn_protocols"] = ["h2"]
    b_tls = b["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    b_tls["common_tls_context"]["alpn_protocols"] = ["h2", "http/1.1"]
    return yaml.safe_dump(a, sort_keys=False), yaml.safe_dump(b, sort_keys=False)


# -- targets -------------------------------------------------------------------------------------


def _nginx_argv(conf: FsPath, prefix: FsPath) -> list[str]:
    return ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf), "-g", "daemon off;"]


def _h2c_origin(workdir: FsPath) -> tuple[list[str], int]:
    """The nginx origin pinned to the load core; its worker is a grandchild of the group sh."""
    port = targets.free_port()
    prefix = workdir / "origin"
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_origin_config(port, prefix))
    return ["taskset", "-c", str(_load_core()), *_nginx_argv(conf, prefix)], port


def _grpc_origin() -> tuple[list[str], int]:
    """The gRPC origin's supervisor pinned to the load core; the server is its child."""
    port = targets.free_port()
    return ["taskset", "-c", str(_load_core()), *_py("grpc-origin", "--port", str(port))], port


def _meshproxy_h2c(
    _upstream_port: int, workdir: FsPath, baseline: bool = False
) -> tuple[list[list[str]], int, Any]:
    origin, origin_port = _h2c_origin(workdir)
    port, admin = targets.free_port(), targets.free_port()
    conf = workdir / "bootstrap.yaml"
    conf.write_text(meshproxy_h2c_bootstrap(port, origin_port, admin))
    _JOB[port] = "h2c"
    argv = targets.meshproxy_argv("run", "-c", str(conf), baseline=baseline)

    def ready() -> bool:
        return targets.port_open(origin_port) and targets.http_ok(admin, "/ready") and targets.port_open(port)

    return [origin, argv], port, ready


def _nginx_h2c(_upstream_port: int, workdir: FsPath) -> tuple[list[list[str]], int, Any]:
    origin, origin_port = _h2c_origin(workdir)
    port = targets.free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_h2c_proxy_config(port, origin_port, workdir))
    _JOB[port] = "h2c"
    argv = _nginx_argv(conf, workdir)
    return [origin, argv], port, lambda: all(map(targets.port_open, (origin_port, port)))


def _grpc_direct(_upstream_port: int, workdir: FsPath) -> tuple[list[list[str]], int, Any]:
    origin, port = _grpc_origin()
    _JOB[port] = "grpc"
    # Grouped on its own so that the measured process is the sh and the server a grandchild.
    return [targets.group_argv([origin])], port, lambda: targets.port_open(port)


def _grpc_mesh_pair(
    _upstream_port: int, workdir: FsPath, baseline: bool = False
) -> tuple[list[list[str]], int, Any]:
    origin, origin_port = _grpc_origin()
    certs = write_certs(workdir)
    port_a, port_b = targets.free_port(), targets.free_port()
    admins = (targets.free_port(), targets.free_port())
    docs = meshproxy_pair_bootstraps(port_a, port_b, origin_port, admins, certs, "X25519MLKEM768")
    argvs = [origin]
    for name, doc in zip("ab", h2_mesh_pair(docs), strict=True):
        conf = workdir / f"sidecar-{name}.yaml"
        conf.write_text(doc)
        argvs.append(targets.meshproxy_argv("run", "-c", str(conf), baseline=baseline))
    _JOB[port_a] = "grpc"

    def ready() -> bool:
        return targets.port_open(origin_port) and all(targets.http_ok(p, "/ready") for p in admins)

    return argvs, port_a, ready


targets.register("meshproxy-h2c", _meshproxy_h2c)
targets.register("meshproxy-h2c-base", functools.partial(_meshproxy_h2c, baseline=True))
targets.register("nginx-h2c", _nginx_h2c)
targets.register("grpc-direct", _grpc_direct)
targets.register("grpc-mesh-pair", _grpc_mesh_pair)
targets.register("grpc-mesh-pair-base", functools.partial(_grpc_mesh_pair, baseline=True))


# -- h2load --------------------------------------------------------------------------------------

_FINISHED = re.compile(r"finished in ([\d.]+)s, ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed")
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


def parse_h2load(stdout: str, log_lines: list[str]) -> dict[str, Any]:
    """Metrics from h2load's summary and its ``--log-file`` (start µs, status, duration µs per row)."""
    finished, requests, status = (p.search(stdout) for p in (_FINISHED, _REQUESTS, _STATUS))
    if not (finished and requests and status):
        raise RuntimeError(f"h2load printed no summary:\n{stdout[-2000:]}")
    hist = Histogram()
    for line in log_lines:
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1].strip() != "-1":
            hist.record(int(fields[2]) * 1000)
    spectrum = {percentile_key(q): round(hist.percentile(q) / 1e6, 4) for q in PERCENTILES}
    done, succeeded, failed = (int(requests.group(i)) for i in (2, 3, 4))
    non_2xx = sum(int(status.group(i)) for i in (2, 3, 4))
    return {
        "rps": float(finished.group(2)),
        "requests": done,
        # "succeeded" counts 2xx only; failed streams and non-2xx may overlap with done - succeeded.
        "errors": max(done - succeeded, failed + non_2xx),
        **latency_metrics(spectrum, round(hist.max / 1e6, 4)),
    }


def h2load(port: int, clients: int, streams: int, duration_s: float, cpu: int) -> dict[str, Any]:
    """One h2load run (h2c prior knowledge, one thread) pinned to ``cpu``; its metrics."""
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        log = FsPath(tmp) / "requests.tsv"
        argv = ["taskset", "-c", str(cpu), "h2load", "-t1", f"-c{clients}", f"-m{streams}"]
        argv += [f"-D{max(1, round(duration_s))}", f"--log-file={log}"]
        argv.append(f"http://{targets.HOST}:{port}/")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
        if done.returncode != 0:
            why = done.stderr.strip() or done.stdout[-2000:]
            raise RuntimeError(f"h2load failed ({done.returncode}): {why}")
        lines = log.read_text().splitlines() if log.exists() else []
    return parse_h2load(done.stdout, lines)


def _h2load(clients: int, streams: int) -> RunFn:
    def run(settings: Settings, port: int) -> dict[str, Any]:
        if _JOB.get(port) != "h2c":
            return {}
        return h2load(port, clients, streams, settings.duration_s, settings.cpu_load)

    return run


# -- the gRPC origin and the open-loop gRPC generator --------------------------------------------


async def _serve_grpc(port: int) -> None:
    from grpc import aio, method_handlers_generic_handler, unary_unary_rpc_method_handler

    async def echo(request: bytes, _context: aio.ServicerContext) -> bytes:
        return request

    server = aio.server()
    handler = method_handlers_generic_handler("bench.Echo", {"Unary": unary_unary_rpc_method_handler(echo)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{targets.HOST}:{port}")
    await server.start()
    parent = os.getppid()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The supervisor forwards SIGTERM; if it died without doing so, stop anyway.
    while not stop.is_set() and os.getppid() == parent:
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass
    await server.stop(0)


def _supervise(port: int) -> int:
    """Run the gRPC origin as a child (so the group sh sees it as a grandchild) until SIGTERM."""
    child = subprocess.Popen(_py("grpc-serve", "--port", str(port)), cwd=targets.REPO_ROOT)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    signal.signal(signal.SIGINT, lambda *_: child.terminate())
    return child.wait()


async def grpc_open_loop(port: int, rate: float, duration_s: float, drain_s: float = 2.0) -> dict[str, Any]:
    """Unary calls on one channel at ``rate``/s for ``duration_s``, latency from intended times.

    Call k is due at ``t0 + k/rate`` and is started then (or as soon as the generator gets the
    CPU); latency is ``end - min(intended, started)``, so a stall counts against every call it
    delayed; ``service`` is from the real start (what a closed loop would see); ``lag`` is how
    late the generator started calls. More than MAX_OUTSTANDING calls in flight count as errors.
    """
    from grpc import aio

    latency, service, lag = Histogram(), Histogram(), Histogram()
    errors = 0
    async with aio.insecure_channel(f"{targets.HOST}:{port}") as channel:
        call = channel.unary_unary(GRPC_METHOD)
        await asyncio.wait_for(channel.channel_ready(), 10)
        for _ in range(WARMUP_CALLS):
            await call(PAYLOAD, timeout=5)

        async def one(intended: int, started: int) -> None:
            nonlocal errors
            try:
                reply = await call(PAYLOAD, timeout=drain_s + duration_s)
            except aio.AioRpcError:
                errors += 1
                return
            end = time.monotonic_ns()
            if reply != PAYLOAD:
                errors += 1
            latency.record(end - min(intended, started))
            service.record(end - started)

        interval = 1e9 / rate
        total = int(rate * duration_s)
        pending: set[asyncio.Task[None]] = set()
        t0 = time.monotonic_ns() + 20_000_000
        for k in range(total):
            intended = t0 + round(k * interval)
            wait = intended - time.monotonic_ns() - EARLY_NS
            if wait > 0:
                await asyncio.sleep(wait / 1e9)
            now = time.monotonic_ns()
            lag.record(now - intended)
            if len(pending) >= MAX_OUTSTANDING:
                errors += 1
                continue
            task = asyncio.create_task(one(intended, now))
            pending.add(task)
            task.add_done_callback(pending.discard)
        incomplete = 0
        if pending:
            _done, late = await asyncio.wait(set(pending), timeout=drain_s)
            incomplete = len(late)
            for task in late:
                task.cancel()

    def ms(ns: float) -> float:
        return round(ns / 1e6, 4)

    spectrum = {percentile_key(q): ms(latency.percentile(q)) for q in PERCENTILES}
    return {
        "rps": round(latency.count / duration_s, 1),
        "target_rps": rate,
        "sustained": latency.count >= 0.95 * total,
        "calls": latency.count,
        # Every call the path served while measured (the runner divides proxy CPU by this).
        "requests": latency.count + WARMUP_CALLS,
        "errors": errors + incomplete,
        "incomplete": incomplete,
        **latency_metrics(spectrum, ms(latency.max)),
        "service_p50_ms": ms(service.percentile(50)),
        "service_p99_ms": ms(service.percentile(99)),
        "lag_p99_ms": ms(lag.percentile(99)),
        "lag_max_ms": ms(lag.max),
    }


def grpc_measure(cpu: int, port: int, rate: float, duration_s: float) -> dict[str, Any]:
    """``grpc_open_loop`` in a fresh process pinned to ``cpu``."""
    argv = ["taskset", "-c", str(cpu), *_py("grpc-load", "--port", str(port))]
    argv += ["--rate", str(rate), "--duration", str(duration_s)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False, cwd=targets.REPO_ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"gRPC generator failed ({done.returncode}): {done.stderr[-2000:]}")
    return cast(dict[str, Any], json.loads(done.stdout.splitlines()[-1]))


def _grpc(rate: int) -> RunFn:
    def run(settings: Settings, port: int) -> dict[str, Any]:
        if _JOB.get(port) != "grpc":
            return {}
        return grpc_measure(settings.cpu_load, port, rate, settings.duration_s)

    return run


# -- the scenario --------------------------------------------------------------------------------

_H2C = ("meshproxy-h2c", "nginx-h2c") + (("meshproxy-h2c-base",) if targets.BASELINE else ())
_GRPC = ("grpc-direct", "grpc-mesh-pair") + (("grpc-mesh-pair-base",) if targets.BASELINE else ())

SCENARIO = Scenario(
    name="h2",
    title="Scenario 4: HTTP/2 (h2load, h2c proxy to an h2c origin) and gRPC unary through the PQ mesh path",
    paths=tuple(Path(t, t) for t in (*_H2C, *_GRPC)),
    measurements=(
        Measurement(
            "saturate",
            f"h2load saturating (-t1 -c{CLIENTS} -m{STREAMS})",
            "throughput",
            _h2load(CLIENTS, STREAMS),
        ),
        Measurement("serial", "h2load serial (-t1 -c1 -m1)", "latency", _h2load(1, 1)),
        Measurement(
            "grpc",
            f"gRPC unary, open loop at {GRPC_RATE} calls/s on one channel (grpc.aio)",
            "latency",
            _grpc(GRPC_RATE),
        ),
    ),
    comparisons=pairwise(
        [
            ("meshproxy-h2c", "nginx-h2c"),
            *([("meshproxy-h2c", "meshproxy-h2c-base")] if targets.BASELINE else []),
        ],
        (
            ("saturating req/s", "saturate", "rps"),
            ("saturating p50", "saturate", "p50_ms"),
            ("saturating p99", "saturate", "p99_ms"),
            ("serial p50", "serial", "p50_ms"),
            ("proxy CPU µs/req (saturating)", "saturate", "proxy_cpu_us_per_req"),
        ),
    )
    + pairwise(
        [("grpc-mesh-pair", "grpc-direct")],
        (("gRPC p50", "grpc", "p50_ms"), ("gRPC p99", "grpc", "p99_ms")),
    )
    + pairwise(
        [(p, "grpc-direct") for p in _GRPC[1:]],
        (("gRPC p50", "grpc", "p50_ms"), ("gRPC p99", "grpc", "p99_ms"), ("gRPC p99.9", "grpc", "p999_ms")),
        kind="diff",
    ),
    quick=Timing(rounds=1, duration_s=2),
    full=Timing(rounds=5, duration_s=10),
    note=(
        "h2c paths: h2load (prior knowledge) → proxy → h2c nginx origin (64 B); meshproxy multiplexes "
        "the upstream leg, nginx's grpc_pass opens one upstream connection per concurrent stream "
        "(kept alive). gRPC paths: an open-loop grpc.aio client (latency from intended send times) "
        "→ direct, or → sidecar A → mTLS X25519MLKEM768, ALPN h2 → sidecar B → grpc.aio origin; "
        "client and origin are Python and share the load core, so the direct figures are the "
        "floor set by grpcio. The runner's 1 s HTTP/1.1 wrk warm-up does not warm the HTTP/2 code. "
        "Ratios are per-round pairs; the gRPC difference table is per-round mesh minus direct."
    ),
    filter_targets=False,
)


def main(argv: list[str] | None = None) -> int:
    """The scenario (``python -m benchmarks.h2 [--quick ...]``), or one of its helper processes."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("grpc-origin", "grpc-serve", "grpc-load"):
        parser = argparse.ArgumentParser(prog=f"benchmarks.h2 {args[0]}")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--rate", type=float, default=GRPC_RATE)
        parser.add_argument("--duration", type=float, default=10.0)
        helper = parser.parse_args(args[1:])
        if args[0] == "grpc-origin":
            return _supervise(helper.port)
        if args[0] == "grpc-serve":
            asyncio.run(_serve_grpc(helper.port))
            return 0
        result = asyncio.run(grpc_open_loop(helper.port, helper.rate, helper.duration))
        print(json.dumps(result))
        return 0
    return cli.main(args, ["h2"])


if __name__ == "__main__":
    sys.exit(main())
