"""The systems under test: an upstream and, in front of it, nothing, meshproxy, haproxy or nginx.

Owns starting and stopping them as subprocesses pinned with ``taskset``, the configuration each
proxy gets for the same job (HTTP/1.1 keep-alive on both sides, one worker, no logging), and the
bounded readiness waits. Knows nothing of measurements. Every address is on 127.0.0.1.

The proxies are configured to be compared fairly: one thread/worker each, keep-alive towards the
upstream (haproxy ``http-reuse always``; nginx ``keepalive 64`` with HTTP/1.1 and an empty
``Connection`` header), no access log, and no per-connection request limit (nginx's default
``keepalive_requests 1000`` would make it reconnect where the others do not).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from controlplane.demo.layout import free_port

BASELINE = os.environ.get("MESHPROXY_BENCH_BASELINE", "")
"""A source tree of another meshproxy revision (e.g. a ``git worktree`` of the previous main, with
its extensions built in place): when set, scenarios 1 to 4 also run it (``meshproxy-base``,
``meshproxy-tls-base``, ``meshproxy-pair-base``, ``meshproxy-h2c-base``, ``grpc-mesh-pair-base``),
so a change is measured against its parent side by side in one run."""

TARGETS = ("direct", "meshproxy", "haproxy", "nginx") + (("meshproxy-base",) if BASELINE else ())


def meshproxy_argv(*args: str, baseline: bool = False) -> list[str]:
    """``python -m meshproxy ARGS`` from this checkout, or from the ``BASELINE`` tree (``env``
    execs, so the measured process is still the proxy itself)."""
    if not baseline:
        return [sys.executable, "-m", "meshproxy", *args]
    # -P: targets start in REPO_ROOT, and "-m" would put that first on sys.path, ahead of BASELINE
    return ["env", f"PYTHONPATH={BASELINE}", sys.executable, "-P", "-m", "meshproxy", *args]


REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


class TargetStartError(Exception):
    """A target did not become ready; the message says which and carries its stderr tail."""


@dataclass(frozen=True, slots=True)
class Running:
    """A started path: where to send traffic, and which process (if any) is the proxy."""

    target: str
    port: int
    proxy_pid: int | None


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv]




def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Poll ``check()`` every 20 ms until it is true, the process exits, or READY_TIMEOUT_S passes."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TargetStartError(f"{what} exited with {proc.returncode}:\n{_log_tail(log)}")
        if check():
            return
        time.sleep(0.02)
    raise TargetStartError(f"{what} not ready after {READY_TIMEOUT_S:.0f} s:\n{_log_tail(log)}")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


def _http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=0.5) as resp:
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def haproxy_config(port: int, upstream_port: int) -> str:
    return f"""\
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind {HOST}:{port}
    default_backend upstream
backend upstream
    server s1 {HOST}:{upstream_port}
"""


def nginx_config(port: int, upstream_port: int, prefix: Path) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    keepalive_requests 1000000;
    upstream upstream {{
        server {HOST}:{upstream_port};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {HOST}:{port};
        location / {{
            proxy_pass http://upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def meshproxy_bootstrap(port: int, upstream_port: int, admin_port: int) -> str:
    """An Envoy v3 Bootstrap: one HTTP listener routing everything to one STATIC cluster."""

    def address(p: int) -> dict[str, object]:
        return {"socket_address": {"address": HOST, "port_value": p}}

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {
            "name": "bench",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    bootstrap = {
        "node": {"id": "bench", "cluster": "bench"},
        "admin": {"address": address(admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": address(port),
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address(upstream_port)}}]}],
                    },
                }
            ],
        },
    }
    return yaml.safe_dump(bootstrap, sort_keys=False)


ExtraTarget = Callable[[int, Path], tuple[list[list[str]], int, Callable[[], bool]]]
"""Given the upstream's port and a scratch directory: the command line(s) of the proxy (or of a
pair of sidecars), the port traffic goes to, and the readiness check."""

EXTRA_TARGETS: dict[str, ExtraTarget] = {}
"""Targets a scenario module defines (TLS listeners, sidecar pairs) by name; see ``register``."""


def register(name: str, command: ExtraTarget) -> None:
    """Make ``name`` a target ``running`` can start. A scenario with such paths sets
    ``filter_targets=False`` (``--targets`` knows only ``TARGETS``)."""
    EXTRA_TARGETS[name] = command


def group_argv(argvs: list[list[str]]) -> list[str]:
    """One ``sh`` whose direct children are the given commands (e.g. both sidecars of a pair), so
    the proxy CPU the runner reads (a process and its direct children) covers all of them, pinning
    is inherited, and SIGTERM to it stops them all."""
    starts = " ".join(f"{shlex.join(argv)} & p{i}=$!;" for i, argv in enumerate(argvs))
    pids = " ".join(f"$p{i}" for i in range(len(argvs)))
    return ["sh", "-c", f"trap 'kill {pids} 2>/dev/null; wait; exit 0' TERM INT; {starts} wait"]


def http_ok(port: int, path: str) -> bool:
    return _http_ok(port, path)


def port_open(port: int) -> bool:
    return _port_open(port)


def _proxy_command(
    target: str, upstream_port: int, workdir: Path
) -> tuple[list[str], int, Callable[[], bool]]:
    """The command line of ``target``, its listening port, and its readiness check."""
    port = free_port()
    if target in EXTRA_TARGETS:
        argvs, port, ready = EXTRA_TARGETS[target](upstream_port, workdir)
        return (argvs[0] if len(argvs) == 1 else group_argv(argvs)), port, ready
    if target == "haproxy":
        conf = workdir / "haproxy.cfg"
        conf.write_text(haproxy_config(port, upstream_port))
        return ["haproxy", "-db", "-f", str(conf)], port, lambda: _port_open(port)
    if target == "nginx":
        conf = workdir / "nginx.conf"
        conf.write_text(nginx_config(port, upstream_port, workdir))
        argv = ["nginx", "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
        return [*argv, "-g", "daemon off;"], port, lambda: _port_open(port)
    if target in ("meshproxy", "meshproxy-base"):
        admin_port = free_port()
        conf = workdir / "bootstrap.yaml"
        conf.write_text(meshproxy_bootstrap(port, upstream_port, admin_port))
        argv = meshproxy_argv("run", "-c", str(conf), baseline=target == "meshproxy-base")
        return argv, port, lambda: _http_ok(admin_port, "/ready") and _port_open(port)
    raise ValueError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")


@contextlib.contextmanager
def running(
    target: str, cpu_proxy: int, cpu_load: int, stall_ms: int = 0, stall_every_ms: int = 0
) -> Iterator[Running]:
    """Start an upstream (on ``cpu_load``) and ``target`` in front of it (on ``cpu_proxy``); stop both.

    Raises TargetStartError when either is not ready in time; nothing is left running then.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{target}-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream_port = free_port()
        argv = [sys.executable, "-m", "benchmarks.upstream", "--port", str(upstream_port)]
        argv += ["--stall-ms", str(stall_ms), "--stall-every-ms", str(stall_every_ms)]
        log = workdir / "upstream.log"
        upstream = _spawn(pinned(cpu_load, argv), log)
        procs.append(upstream)
        _wait(lambda: _port_open(upstream_port), upstream, "upstream", log)
        if target == "direct":
            yield Running(target, upstream_port, None)
            return
        argv, port, ready = _proxy_command(target, upstream_port, workdir)
        log = workdir / f"{target}.log"
        proxy = _spawn(pinned(cpu_proxy, argv), log)
        procs.append(proxy)
        _wait(ready, proxy, target, log)
        yield Running(target, port, proxy.pid)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
