"""Integration-test harness: Envoy bootstraps built as dicts, a proxy started in-process.

Owns the small vocabulary the integration tests share: builders for listeners, routes and
clusters in Envoy's v3 JSON shape (so every test exercises the real config compiler), and
``running_proxy``, which starts a ``Server`` on loopback port 0 and yields its addresses;
``proxy_process``, the same proxy as a child process (when the test measures the process);
``eventually`` (bounded polling instead of sleeps) and ``read_access_log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import random
import re
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from controlplane.demo.layout import free_port as free_port  # re-exported to the tests
from meshproxy.config.bootstrap import parse_bootstrap
from meshproxy.server import Server

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"


def addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def http_listener(
    routes: list[dict[str, Any]] | None = None,
    *,
    name: str = "http",
    virtual_hosts: list[dict[str, Any]] | None = None,
    access_log: str | None = None,
    **hcm: Any,
) -> dict[str, Any]:
    if virtual_hosts is None:
        virtual_hosts = [{"name": "all", "domains": ["*"], "routes": routes or []}]
    cfg: dict[str, Any] = {
        "@type": HCM,
        "stat_prefix": name,
        "route_config": {"name": f"{name}_routes", "virtual_hosts": virtual_hosts},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        **hcm,
    }
    if access_log:
        cfg["access_log"] = [
            {"name": "envoy.access_loggers.file", "typed_config": {"@type": FILE_LOG, "path": access_log}}
        ]
    return {
        "name": name,
        "address": addr("127.0.0.1", 0),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": cfg}]}
        ],
    }


def tcp_listener(cluster: str | None, *, name: str = "tcp", **extra: Any) -> dict[str, Any]:
    """A tcp_proxy listener; pass ``cluster=None`` with ``weighted_clusters=...`` in ``extra``."""
    if cluster is not None:
        extra = {"cluster": cluster, **extra}
    return {
        "name": name,
        "address": addr("127.0.0.1", 0),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {"@type": TCP, "stat_prefix": name, **extra},
                    }
                ]
            }
        ],
    }


def route(prefix: str = "/", cluster: str = "backend", **action: Any) -> dict[str, Any]:
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster, **action}}


def cluster(
    name: str, *ports: int, host: str = "127.0.0.1", kind: str = "STATIC", **extra: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(host, p)}} for p in ports]}],
        },
        **extra,
    }


def bootstrap(
    listeners: list[dict[str, Any]], clusters: list[dict[str, Any]], admin: bool = True
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "node": {"id": "test"},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    if admin:
        doc["admin"] = {"address": addr("127.0.0.1", 0)}
    return doc


@contextlib.asynccontextmanager
async def running_proxy(doc: dict[str, Any], *, rng: random.Random | None = None) -> AsyncIterator[Proxy]:
    import json

    server = Server(parse_bootstrap(json.dumps(doc), source="test"), rng=rng)
    await server.start()
    try:
        yield Proxy(server)
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def proxy_to(
    *ports: int,
    access_log: str | None = None,
    cluster_extra: dict[str, Any] | None = None,
    **hcm: Any,
) -> AsyncIterator[Proxy]:
    """The common case: every path on listener "http" to cluster "backend" at ``ports``."""
    doc = bootstrap(
        [http_listener([route()], access_log=access_log, **hcm)],
        [cluster("backend", *ports, **(cluster_extra or {}))],
    )
    async with running_proxy(doc) as proxy:
        yield proxy


class Proxy:
    def __init__(self, server: Server) -> None:
        self.server = server

    def port(self, listener: str = "http") -> int:
        return self.server.listener_address(listener)[1]

    def url(self, path: str = "/", listener: str = "http") -> str:
        return f"http://127.0.0.1:{self.port(listener)}{path}"

    @property
    def admin_url(self) -> str:
        a = self.server.admin.address()
        assert a is not None
        return f"http://127.0.0.1:{a[1]}"

    def http_stats(self, prefix: str = "http") -> Any:
        return self.server.store.http_stats(prefix)

    def cluster_stats(self, name: str = "backend") -> Any:
        return self.server.store.cluster_stats(name)

    def listener_stats(self, name: str = "http") -> Any:
        return self.server.store.listener_stats(name)


async def eventually(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (never a bare sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        await asyncio.sleep(0.02)


async def run_process(*argv: str, timeout: float = 30.0) -> tuple[int, bytes, bytes]:
    """Run a command (e.g. curl) without blocking the loop the in-process proxy runs on."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


def read_access_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The JSON lines of an access log (read it after ``running_proxy`` exits: it flushes at close)."""
    import json

    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class ProxyProcess:
    """A meshproxy started as ``python -m meshproxy run`` (for measuring the process itself)."""

    def __init__(
        self,
        proc: subprocess.Popen[str],
        ports: dict[str, int],
        admin_port: int,
        log: list[str],
        status: dict[str, int],
    ) -> None:
        self.proc = proc
        self.ports = ports
        self.status = status  # status port by path (/healthz/ready, /stats/prometheus)
        self.admin_port = admin_port
        self.log = log  # stderr lines so far (the first LOG_LINES)

    def admin(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` on the admin port: (status, body)."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def stats(self) -> dict[str, Any]:
        import json

        status, body = self.admin("/stats?format=flat")
        assert status == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    @property
    def pid(self) -> int:
        return self.proc.pid

    def port(self, listener: str = "http") -> int:
        return self.ports[listener]

    def rss_bytes(self) -> int:
        """Resident set size now, from /proc/<pid>/status (VmRSS)."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for pid {self.pid}")


_LISTENER_LINE = re.compile(r"listener (\S+) ready on [^ ]+:(\d+)")
_ADMIN_LINE = re.compile(r"admin on http://[^ ]+:(\d+)")
_STATUS_LINE = re.compile(r"status (\S+) on port (\d+)")
LOG_LINES = 10_000


@contextlib.contextmanager
def proxy_process(
    doc: dict[str, Any],
    workdir: pathlib.Path,
    timeout: float = 20.0,
    *,
    nofile: int | None = None,
    args: tuple[str, ...] = (),
    ready: bool = True,
) -> Iterator[ProxyProcess]:
    """Run the proxy in a child process on ``doc`` (``args``: more ``run`` flags); yields once
    ``/ready`` answers 200 (``ready=False``: once the admin port is up, ready or not).

    Listener and admin ports are bound as 0 and read back from the startup log lines; stderr
    keeps being drained by a thread so the child can never block on a full pipe (its first
    ``LOG_LINES`` lines are kept). ``nofile``: the child's RLIMIT_NOFILE, soft and hard (the
    test runner's own limit is left alone).
    """
    import json
    import sys
    import threading
    import urllib.request

    path = workdir / "bootstrap.json"
    path.write_text(json.dumps(doc))

    def limit_descriptors() -> None:
        import resource

        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [sys.executable, "-m", "meshproxy", "run", "-c", str(path), *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        # Only when needed: Python code between fork and exec can abort the child when the test
        # process runs gRPC threads (a fake control plane); without it the child is spawned.
        preexec_fn=limit_descriptors if nofile is not None else None,
    )
    ports: dict[str, int] = {}
    status: dict[str, int] = {}
    admin: list[int] = []
    lines: list[str] = []
    started = threading.Event()

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if len(lines) < LOG_LINES:
                lines.append(line)
            if m := _LISTENER_LINE.search(line):
                ports[m.group(1)] = int(m.group(2))
            elif m := _STATUS_LINE.search(line):
                status[m.group(1)] = int(m.group(2))
            elif m := _ADMIN_LINE.search(line):
                admin.append(int(m.group(1)))
                started.set()
        started.set()  # EOF: the child exited

    reader = threading.Thread(target=drain_stderr, daemon=True)
    reader.start()
    try:
        if not started.wait(timeout) or not admin:
            raise AssertionError(f"meshproxy did not start (exit code {proc.poll()})")
        deadline = time.monotonic() + timeout
        while ready:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin[0]}/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("meshproxy /ready never answered 200")
            time.sleep(0.05)
        yield ProxyProcess(proc, ports, admin[0], lines, status)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=5)


